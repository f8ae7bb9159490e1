"""A built wheel works outside the repository: configs and bundled checkpoints ship inside it, and
``import oc_perception`` loads only what the wrappers need (no FFmpeg, webdataset, timm, scipy or SB3)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO

PROBE = """
import sys
import oc_perception
assert not any(m.startswith("stable_baselines3") for m in sys.modules), "import oc_perception imported SB3"
from oc_perception.checkpoint import default_checkpoint
from oc_perception.config import load_config
print(oc_perception.__file__)
print(load_config("movi_c").model.num_slots)
print(default_checkpoint("oc/ShapesPush-v0").is_file())
from oc_perception import VecSlotObservation
print(VecSlotObservation.__module__)
"""


HEAVY = ("av", "webdataset", "timm", "torchvision", "scipy", "stable_baselines3")


@pytest.mark.parametrize("module", ["oc_perception", "oc_perception.wrappers"])
def test_import_loads_only_what_it_needs(module):
    probe = (f"import sys, {module}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & "
             f"set({HEAVY!r}))))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [], f"import {module} imported {out.stdout.strip()}"


def test_wheel_works_outside_the_repository(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(REPO),
                    "-w", str(tmp_path / "wheel")], check=True, capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("oc_perception-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp_path / "site"),
                    str(wheel)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    location, slots, bundled, module = out.stdout.split()
    assert location.startswith(str(tmp_path / "site")), location
    assert (slots, bundled, module) == ("11", "True", "oc_perception.sb3")
