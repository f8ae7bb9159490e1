"""Training state: what a run writes to resume (model, optimizer, scheduler, step, RNG states, config), read
with ``weights_only=True`` so a file never runs code."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from oc_perception.checkpoint.format import CheckpointError
from oc_perception.io import atomic_write

TRAINING_STATE_KEYS = ("model", "optimizer", "config")  # what tells a training state from other torch files


def save_training_state(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write a training checkpoint (model, optimizer, scheduler, step, RNG states) atomically with torch.save."""
    return atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))


def save_step_checkpoint(log_dir: str | Path, step: int, payload: dict[str, Any], keep_last: int) -> Path:
    """``<log_dir>/checkpoints/step_XXXXXXXX.pt`` (atomic), keeping only the newest ``keep_last`` of them."""
    directory = Path(log_dir) / "checkpoints"
    path = save_training_state(directory / f"step_{step:08d}.pt", payload)
    for old in sorted(directory.glob("step_*.pt"))[:-keep_last]:
        old.unlink()
    return path


def remove_partial_writes(directory: str | Path) -> list[Path]:
    """Delete the temporary files of atomic writes that a crash interrupted (``.<name>.*.tmp``) in ``directory``.

    Only call it on a directory that no other process writes to (a log dir whose lock this process holds)."""
    removed = [p for p in Path(directory).glob(".*.tmp") if p.is_file()]
    for p in removed:
        p.unlink()
    return removed


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint written by ``save_training_state`` (``weights_only=True``)."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        # torch's message suggests weights_only=False, which would run whatever the file holds: never pass it on.
        raise CheckpointError(f"{path} is not a readable training checkpoint ({type(e).__name__}); it is "
                              "truncated, corrupt or not a training checkpoint of ours: resume from an earlier "
                              "checkpoints/step_*.pt or start a fresh run") from e


def training_state_kind(payload: Any) -> str | None:
    """"pretraining" or "dynamics" for a training state that ``load_training_state`` read, else None. Only the
    dynamics config has a top-level ``loss`` section."""
    if not isinstance(payload, Mapping) or not all(k in payload for k in TRAINING_STATE_KEYS):
        return None
    try:
        config = json.loads(payload["config"])
    except (TypeError, json.JSONDecodeError):
        return None
    if not isinstance(config, dict):
        return None
    return "dynamics" if "loss" in config else "pretraining"


def is_training_state(path: Path) -> bool:
    """A checkpoint written by a trainer to resume training (not a model file)."""
    try:
        return training_state_kind(load_training_state(path)) is not None
    except CheckpointError:
        return False
