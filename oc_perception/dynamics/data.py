"""Slot trajectory files, as ``python -m oc_perception.dynamics.extract`` writes them.

A data directory holds one compressed ``.npz`` per split, ``train.npz`` and ``val.npz``, with arrays stacked over
the N episodes (videos) of the split, all T frames long:

- ``slots``: float32 [N, T, K, D], the perception model's slots, streamed frame by frame (``model.step``).
- ``actions`` (env data only): int64 [N, T] (discrete) or float32 [N, T, A] (continuous); ``actions[:, t]`` is
  the action chosen at frame t, which leads to frame t + 1 (the last one was chosen but not taken).
- ``segmentations``: uint8 [N, T, H, W] ground-truth ids, 0 = background.
- ``frames`` (optional, by default in ``val.npz`` only): uint8 [N, T, H, W, 3] RGB frames.

and ``meta.json``: where the slots came from (``checkpoint``: the perception model, ``env`` or ``shards``), K, D,
T, ``action_space`` ("discrete", "continuous" or null), ``action_dim`` (number of discrete actions or A; 0 without
actions) and the episode counts.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from oc_perception.io import atomic_write

SPLITS = ("train", "val")


class DataError(ValueError):
    """A slot trajectory file that cannot be read."""

EXTRACT_HINT = ("create it with: python -m oc_perception.dynamics.extract --env oc/ShapesPush-v0 --episodes 300 "
                "--steps 24 --out DIR (see docs/dynamics.md)")


def load_meta(data_dir: str | Path) -> dict[str, Any]:
    """The ``meta.json`` of a data directory; FileNotFoundError saying how to create one."""
    path = Path(data_dir) / "meta.json"
    if not Path(data_dir).is_dir():
        raise FileNotFoundError(f"dynamics data directory {data_dir} does not exist; {EXTRACT_HINT}")
    if not path.is_file():
        raise FileNotFoundError(f"{data_dir} has no meta.json, so it is not a slot trajectory directory; {EXTRACT_HINT}")
    return json.loads(path.read_text())


def load_split(data_dir: str | Path, split: str, frames: bool = False) -> dict[str, np.ndarray]:
    """The arrays of ``DIR/<split>.npz`` (see the module docstring); ``frames`` only when asked for.

    Raises:
        DataError: the file is truncated or corrupt, or its slots hold NaN or inf.
    """
    path = Path(data_dir) / f"{split}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"no {split} split at {path}; {EXTRACT_HINT}")
    try:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files if k != "frames" or frames}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{path} is truncated or corrupt ({type(e).__name__}: {e}); re-create it with "
                        f"python -m oc_perception.dynamics.extract") from e
    if "slots" in arrays:
        finite = np.isfinite(arrays["slots"]).reshape(len(arrays["slots"]), -1).all(axis=1)  # per trajectory
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise DataError(f"{path}: the slots of {len(bad)} of {len(finite)} trajectories hold NaN or inf (first: "
                            f"trajectory {bad[0]}); the perception model diverged or the file was edited: re-create "
                            "it with python -m oc_perception.dynamics.extract")
    return arrays


def save_split(data_dir: str | Path, split: str, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``DIR/<split>.npz`` (compressed) atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to the temporary name
            np.savez_compressed(f, **arrays)

    return atomic_write(Path(data_dir) / f"{split}.npz", write)


def save_meta(data_dir: str | Path, meta: dict[str, Any]) -> Path:
    return atomic_write(Path(data_dir) / "meta.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
