"""Checkpoints, one module per job:

- :mod:`~oc_perception.checkpoint.format`: the safetensors format every model file of ours shares (kind tag,
  weights digest, finiteness check, atomic write), and ``CheckpointError``.
- :mod:`~oc_perception.checkpoint.model_file`: perception model files (``save_checkpoint``, ``load_checkpoint``).
- :mod:`~oc_perception.checkpoint.official`: the official SlotContrast Lightning checkpoints.
- :mod:`~oc_perception.checkpoint.bundled`: the checkpoints shipped for our envs.
- :mod:`~oc_perception.checkpoint.training`: training state, to resume a run.
- :mod:`~oc_perception.checkpoint.loader`: ``load_model``, the one loader.

Every name is importable from ``oc_perception.checkpoint`` as well; each is imported from its module on first
use, so importing one part (the format, say) does not import the others.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULE_OF = {
    **dict.fromkeys(("CheckpointError", "TensorFormat", "check_weights", "checkpoint_kind", "stored_digest",
                     "weights_digest"), "format"),
    **dict.fromkeys(("FORMAT", "MODEL_FILE", "load_checkpoint", "load_into", "load_weights", "read_checkpoint",
                     "save_checkpoint"), "model_file"),
    **dict.fromkeys(("OFFICIAL_PREFIXES", "OFFICIAL_SHAPES", "detect_official_config", "load_official",
                     "map_official_keys", "official_state_dict"), "official"),
    **dict.fromkeys(("CHECKPOINT_DIR", "DEFAULT_CHECKPOINTS", "LABEL_FREE_CHECKPOINTS", "RECIPES", "Recipe",
                     "SUPERVISED_CHECKPOINTS", "check_env_of_checkpoint", "default_checkpoint"),
                    "bundled"),
    **dict.fromkeys(("TRAINING_STATE_KEYS", "is_training_state", "load_training_state", "remove_partial_writes",
                     "save_step_checkpoint", "save_training_state", "training_state_kind"), "training"),
    "load_model": "loader",
}
# Config finding lives with the configs; these names stay importable from here for code written before.
_FROM_CONFIG = ("CONFIG_DIR", "REPO_ROOT", "config_path")

__all__ = sorted([*_MODULE_OF, *_FROM_CONFIG])


def __getattr__(name: str) -> Any:
    if name in _MODULE_OF:
        value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    elif name in _FROM_CONFIG:
        value = getattr(importlib.import_module("oc_perception.config"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
