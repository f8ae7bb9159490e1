"""The checkpoints shipped inside the package for our environments, and the warning when one of them is used
on another env."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

from oc_perception.checkpoint.format import stored_digest

CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "checkpoints"

# Bundled checkpoints for our environments (trained by the commands in docs/checkpoints.md).
DEFAULT_CHECKPOINTS = {
    "oc/ShapesReach-v0": "shapes.safetensors",
    "oc/ShapesPush-v0": "shapes.safetensors",
    "oc/ShapesOddOneOut-v0": "shapes.safetensors",
    "oc/PandaPush-v0": "panda.safetensors",
}
# Bundled checkpoints trained without labels: no loss read the simulator's masks (configs/pretrain/unsupervised.yml;
# model card: docs/models.md). Not the defaults until they reach the targets of docs/models.md.
LABEL_FREE_CHECKPOINTS = {
    "oc/ShapesReach-v0": "shapes_label_free.safetensors",
    "oc/ShapesPush-v0": "shapes_label_free.safetensors",
    "oc/ShapesOddOneOut-v0": "shapes_label_free.safetensors",
    "oc/PandaPush-v0": "panda_label_free.safetensors",
}


def default_checkpoint(env_id: str, label_free: bool = False) -> Path:
    """Path of the bundled checkpoint for one of our env ids (e.g. ``"oc/ShapesPush-v0"``); with ``label_free``
    the one trained without the simulator's masks (``LABEL_FREE_CHECKPOINTS``)."""
    table = LABEL_FREE_CHECKPOINTS if label_free else DEFAULT_CHECKPOINTS
    if env_id not in table:
        kind = "label-free checkpoint" if label_free else "checkpoint"
        raise KeyError(f"no bundled {kind} for '{env_id}'; bundled: {', '.join(table)}. "
                       "Pass checkpoint=PATH (train one with python -m oc_perception.train).")
    path = CHECKPOINT_DIR / table[env_id]
    if not path.is_file():
        raise FileNotFoundError(f"bundled checkpoint {path} is missing from this install; see docs/checkpoints.md")
    return path


@functools.cache
def _bundled_digests() -> dict[str, tuple[str, ...]]:
    """Weights digest of each bundled checkpoint -> the env ids it was trained for."""
    envs: dict[str, list[str]] = {}
    for env_id, name in [*DEFAULT_CHECKPOINTS.items(), *LABEL_FREE_CHECKPOINTS.items()]:
        envs.setdefault(name, []).append(env_id)
    digests = {}
    for name, ids in envs.items():
        digest = stored_digest(CHECKPOINT_DIR / name)
        if digest is not None:
            digests[digest] = tuple(ids)
    return digests


def check_env_of_checkpoint(path: str | Path, env_id: str) -> None:
    """Warn when ``path`` is (a copy of) a bundled checkpoint of other envs than ``env_id``: its slots were not
    trained on frames of this env. The warning names both."""
    digest = stored_digest(Path(path))
    envs = _bundled_digests().get(digest) if digest is not None else None
    if envs is not None and env_id not in envs:
        ours = (f" (the bundled one: {CHECKPOINT_DIR / DEFAULT_CHECKPOINTS[env_id]})"
                if env_id in DEFAULT_CHECKPOINTS else "")
        warnings.warn(f"checkpoint {path} is the bundled model of {', '.join(envs)}, but the env is {env_id}: its "
                      f"slots were not trained on this env's frames; pass a model trained on {env_id}{ours}",
                      stacklevel=3)
