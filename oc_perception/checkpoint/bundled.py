"""The checkpoints shipped inside the package for our environments, and the warning when one of them is used
on another env."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Literal

from oc_perception.checkpoint.format import stored_digest

CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "checkpoints"

# Bundled checkpoints for our environments, by the recipe that trained them (docs/checkpoints.md; model cards:
# docs/models.md). Supervised: the simulator's masks trained the slots (model.loss.segmentation_weight > 0).
SUPERVISED_CHECKPOINTS = {
    "oc/ShapesReach-v0": "shapes.safetensors",
    "oc/ShapesPush-v0": "shapes.safetensors",
    "oc/ShapesOddOneOut-v0": "shapes.safetensors",
    "oc/PandaPush-v0": "panda.safetensors",
}
# Label-free: no loss read the simulator's masks (configs/pretrain/shapes_label_free.yml, panda_label_free.yml).
LABEL_FREE_CHECKPOINTS = {
    "oc/ShapesReach-v0": "shapes_label_free.safetensors",
    "oc/ShapesPush-v0": "shapes_label_free.safetensors",
    "oc/ShapesOddOneOut-v0": "shapes_label_free.safetensors",
    "oc/PandaPush-v0": "panda_label_free.safetensors",
}
# The default of each env: its label-free model where that meets the targets of docs/models.md#targets on
# held-out episodes, else its supervised one.
DEFAULT_CHECKPOINTS = {
    "oc/ShapesReach-v0": LABEL_FREE_CHECKPOINTS["oc/ShapesReach-v0"],
    "oc/ShapesPush-v0": LABEL_FREE_CHECKPOINTS["oc/ShapesPush-v0"],
    "oc/ShapesOddOneOut-v0": LABEL_FREE_CHECKPOINTS["oc/ShapesOddOneOut-v0"],
    "oc/PandaPush-v0": LABEL_FREE_CHECKPOINTS["oc/PandaPush-v0"],
}
Recipe = Literal["default", "label_free", "supervised"]
RECIPES: dict[str, dict[str, str]] = {"default": DEFAULT_CHECKPOINTS, "label_free": LABEL_FREE_CHECKPOINTS,
                                      "supervised": SUPERVISED_CHECKPOINTS}


def default_checkpoint(env_id: str, recipe: Recipe = "default") -> Path:
    """Path of the bundled checkpoint for one of our env ids (e.g. ``"oc/ShapesPush-v0"``).

    ``recipe``: ``"default"`` (``DEFAULT_CHECKPOINTS``: the env's label-free model where it meets the targets,
    else its supervised one), ``"label_free"`` (no loss read the simulator's masks) or ``"supervised"``.
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    table = RECIPES[recipe]
    if env_id not in table:
        kind = "checkpoint" if recipe == "default" else f"{recipe.replace('_', '-')} checkpoint"
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
    for env_id, name in [*SUPERVISED_CHECKPOINTS.items(), *LABEL_FREE_CHECKPOINTS.items()]:
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
