"""The one loader: a perception model from whatever names it (our file, an official checkpoint, a loaded
model, or an env id's bundled checkpoint)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from oc_perception.checkpoint.bundled import DEFAULT_CHECKPOINTS, check_env_of_checkpoint, default_checkpoint
from oc_perception.checkpoint.format import CheckpointError, checkpoint_kind
from oc_perception.checkpoint.model_file import build_model, load_checkpoint, read_pretraining_state
from oc_perception.checkpoint.official import detect_official_config, load_official, official_state_dict
from oc_perception.checkpoint.training import is_training_state
from oc_perception.config import config_path, load_config
from oc_perception.devices import resolve_device
from oc_perception.model.slotcontrast import SlotContrast


def load_model(checkpoint: "str | os.PathLike | SlotContrast | None", device: str | torch.device | None = None, *,
               config: str | None = None, env_id: str | None = None) -> SlotContrast:
    """The one loader: a perception model from whatever names it, in eval mode.

    ``checkpoint``: our ``.safetensors``, one of our pretraining checkpoints (``checkpoints/step_*.pt``, built
    from the config it holds), an official SlotContrast ``.ckpt`` (sniffed from the first bytes), a
    loaded ``SlotContrast`` (used as it is, moved only when ``device`` is given), or None for the bundled
    checkpoint of ``env_id`` (a bundled checkpoint of other envs than ``env_id`` loads with a warning).
    ``device``: default ``resolve_device("auto")``. ``config`` (a name in configs/pretrain such as ``movi_c``, or
    a YAML path) is the config of an official checkpoint; by default it is detected from the weights' shapes.
    Ours hold their config; a ``config`` given with one of ours must fit it (an error names what differs).

    Raises:
        FileNotFoundError: no such checkpoint or config.
        CheckpointError: not a checkpoint we know, or weights that do not fit the config.
    """
    if isinstance(checkpoint, SlotContrast):
        return checkpoint if device is None else checkpoint.to(device)
    device = resolve_device(device)
    if checkpoint is None:
        if env_id is None:
            raise ValueError("checkpoint=None loads the bundled checkpoint of one of our env ids "
                             f"({', '.join(DEFAULT_CHECKPOINTS)}), but none was given; pass a checkpoint path")
        checkpoint = default_checkpoint(env_id)
    path = Path(checkpoint)
    if path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} is a directory; pass the model file (a training log dir "
                                "holds model.safetensors)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    kind = checkpoint_kind(path)
    if kind is None:
        raise CheckpointError(f"{path}: unknown checkpoint type; expected an oc-perception .safetensors "
                              "checkpoint or an official SlotContrast Lightning .ckpt")
    if env_id is not None and kind == "safetensors":
        check_env_of_checkpoint(path, env_id)
    try:
        if kind == "safetensors":
            return load_checkpoint(path, device, load_config(config_path(config)).model if config else None)
        return _load_official(path, config, device)
    except RuntimeError as e:  # pretrained backbone weights that cannot be fetched, a device that cannot take it
        raise CheckpointError(f"{path}: could not load the model ({e})") from e


def _load_pretraining_state(path: Path, config: str | None, device: str | torch.device) -> SlotContrast:
    """A pretraining checkpoint's model, built from the config it was trained with (``config`` must fit it)."""
    state, stored = read_pretraining_state(path)
    return build_model(state, stored, path, device, load_config(config_path(config)).model if config else None)


def _load_official(path: Path, config: str | None, device: str | torch.device) -> SlotContrast:
    try:
        state_dict = official_state_dict(path)
    except CheckpointError:
        if is_training_state(path):
            return _load_pretraining_state(path, config, device)
        raise
    cfg = load_config(config_path(config or detect_official_config(state_dict)))
    try:
        return load_official(state_dict, cfg, device)
    except RuntimeError as e:
        if any(k.startswith("encoder.module.backbone.") for k in state_dict):
            raise
        raise CheckpointError(f"{path} holds no backbone weights, so the pretrained {cfg.model.encoder.backbone} "
                              f"is needed and could not be loaded ({e})") from e
