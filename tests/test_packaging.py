"""A built wheel works outside the repository: configs and bundled checkpoints ship inside it, and
``import oc_perception`` loads only what the wrappers need (no FFmpeg, webdataset, timm, scipy or SB3)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

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
import gymnasium as gym
from oc_perception_agents.config import load_agent_config
print(load_agent_config("push_slots").env_id == gym.make("oc/ShapesPush-v0").spec.id)
assert "envs" not in sys.modules and "agents" not in sys.modules
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
    # built from a copy without what a working tree accumulates: setuptools would pack a stale build/ folder
    source = tmp_path / "source"
    local = {".git", ".venv", "build", "runs", "data", "logs", ".pytest_cache", "oc_perception.egg-info"}
    shutil.copytree(REPO, source, ignore=lambda folder, names: [
        n for n in names if n == "__pycache__" or (folder == str(REPO) and n in local)])
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source),
                    "-w", str(tmp_path / "wheel")], check=True, capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("oc_perception-*.whl")
    with zipfile.ZipFile(wheel) as z:  # no top-level name another distribution may also install
        assert {n.split("/")[0] for n in z.namelist()} == {
            "oc_perception", "oc_perception_envs", "oc_perception_agents", "oc_perception-0.1.0.dist-info"}
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp_path / "site"),
                    str(wheel)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    location, slots, bundled, module, agents_envs = out.stdout.split()
    assert location.startswith(str(tmp_path / "site")), location
    assert (slots, bundled, module, agents_envs) == ("11", "True", "oc_perception.sb3", "True")
    # recording one of our envs with its default policy needs only the installed wheel
    out = subprocess.run([sys.executable, "-m", "oc_perception.data.generate", "--env", "oc/ShapesReach-v0",
                          "--episodes", "1", "--steps", "2", "--out", str(tmp_path / "data")], cwd=tmp_path,
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert list((tmp_path / "data").glob("shapes_reach-train-*.tar"))


def test_example_envs_import_as_the_repository_or_the_wheel_names_them(tmp_path):
    from oc_perception.data.generate import OUR_POLICY, example_envs_package

    assert OUR_POLICY == "envs.policies:ExplorationPolicy"  # this checkout
    assert example_envs_package(tmp_path) == "oc_perception_envs"
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "policies.py").touch()
    assert example_envs_package(tmp_path) == "envs"


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "benchmarks").glob("*.py")))
def test_benchmark_scripts_start_as_the_docs_run_them(script):
    """``python benchmarks/X.py`` from the checkout, with nothing on PYTHONPATH: the scripts that use the
    example envs and agents find them beside benchmarks/ (the editable install names them oc_perception_*)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, f"benchmarks/{script}", "--help"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
