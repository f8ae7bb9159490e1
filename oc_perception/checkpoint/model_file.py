"""Our perception model files: safetensors with the model config as metadata, so ``load_checkpoint(path)``
needs nothing else."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from oc_perception.checkpoint.format import CheckpointError, TensorFormat, checkpoint_kind
from oc_perception.checkpoint.training import load_training_state, training_state_kind
from oc_perception.config import ConfigError, ModelConfig, model_config_from_dict, to_dict
from oc_perception.model.slotcontrast import SlotContrast

MODEL_FILE = TensorFormat("oc-perception/slotcontrast-v1", "an oc-perception checkpoint",
                          "official SlotContrast .ckpt files load with load_official()")
FORMAT = MODEL_FILE.tag


def save_checkpoint(model: SlotContrast, path: str | Path, include_backbone: bool = True,
                    metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``model`` as safetensors with its config as metadata, atomically.

    ``include_backbone=False`` leaves out a frozen ViT backbone (it is rebuilt from timm on load), which
    makes a checkpoint of a ViT-B model ~340 MB smaller.
    """
    state = model.state_dict()
    if not include_backbone and model.cfg.encoder.backbone != "cnn":
        state = {k: v for k, v in state.items() if not k.startswith("encoder.")}
    return MODEL_FILE.write(path, state, {"config": json.dumps(to_dict(model.cfg)), **(metadata or {})})


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of one of our model files, with errors that name the problem."""
    return MODEL_FILE.read(path)


def load_into(model: SlotContrast, state: Mapping[str, torch.Tensor], source: str,
              allow_missing_backbone: bool) -> None:
    """Copy ``state`` into ``model`` strictly, with one error listing every missing, unexpected and mis-shaped
    key; ``allow_missing_backbone`` accepts a state without any backbone key (a warning says so)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    backbone_missing = [k for k in missing if k.startswith("encoder.backbone.")]
    if allow_missing_backbone and len(backbone_missing) == len([k for k in own if k.startswith("encoder.backbone.")]):
        missing = [k for k in missing if not k.startswith("encoder.backbone.")]
        if backbone_missing:
            warnings.warn(f"{source} has no backbone weights: the backbone keeps the weights it was built with "
                          f"({model.cfg.encoder.backbone}, pretrained={model.cfg.encoder.pretrained})", stacklevel=3)
    unexpected = [k for k in state if k not in own]
    misshaped = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                 for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or misshaped:
        parts = []
        for name, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                shown = ", ".join(items[:10]) + (f" (+{len(items) - 10} more)" if len(items) > 10 else "")
                parts.append(f"{name} keys: {shown}")
        raise CheckpointError(f"{source} does not fit this model config: " + "; ".join(parts))
    model.load_state_dict({k: state[k] for k in own if k in state}, strict=False)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def read_pretraining_state(path: Path) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """A pretraining checkpoint (``checkpoints/step_*.pt``) -> its model weights and the model config it was
    trained with."""
    payload = load_training_state(path)
    kind = training_state_kind(payload)
    if kind != "pretraining":
        what = "a slot dynamics training checkpoint" if kind == "dynamics" else "not a checkpoint of ours"
        raise CheckpointError(f"{path} is {what}: pass a perception model (model.safetensors) or a pretraining "
                              "checkpoint (checkpoints/step_*.pt)")
    try:
        stored = model_config_from_dict(json.loads(payload["config"])["model"])
    except (KeyError, TypeError, ConfigError) as e:
        raise CheckpointError(f"{path}: the stored model config is unreadable ({e})") from e
    return payload["model"], stored


def load_weights(model: SlotContrast, path: str | Path) -> None:
    """Copy the weights of ``path``, our model file (``.safetensors``) or a pretraining checkpoint (``step_*.pt``,
    its model weights), into ``model`` (same shapes; one error lists what does not fit). The model keeps its own
    config: fine-tuning with other losses or schedules."""
    path = Path(path)
    if path.is_file() and checkpoint_kind(path) == "torch":
        state, _ = read_pretraining_state(path)
    else:
        state, _ = read_checkpoint(path)
    load_into(model, {k: v.to(next(iter(model.state_dict().values())).device) for k, v in state.items()},
              str(path), allow_missing_backbone=True)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    cfg: ModelConfig | None = None) -> SlotContrast:
    """Our checkpoint -> ``SlotContrast`` in eval mode, built from the config stored inside.

    Passing ``cfg`` checks the checkpoint against that config instead (an error lists what does not fit).
    """
    state, meta = read_checkpoint(path)
    try:
        stored = model_config_from_dict(json.loads(meta["config"]))
    except (KeyError, json.JSONDecodeError, ConfigError) as e:
        raise CheckpointError(f"{path}: the stored model config is unreadable ({e})") from e
    return build_model(state, stored, path, device, cfg)


def build_model(state: Mapping[str, torch.Tensor], stored: ModelConfig, path: str | Path,
                device: str | torch.device = "cpu", cfg: ModelConfig | None = None) -> SlotContrast:
    """``SlotContrast`` of the config ``stored`` with a checkpoint's weights ``state``, in eval mode; ``cfg``
    checks that config against another (an error lists what does not fit)."""
    if cfg is None:
        cfg = stored
    else:  # before building anything (a ViT config would fetch pretrained weights first)
        shape_keys = ("encoder.backbone", "encoder.input_size", "encoder.patch_size", "encoder.feature_dim",
                      "num_slots", "slot_dim", "initializer", "decoder.kind", "slot_attention.relative")
        flat_cfg, flat_stored = _flatten(to_dict(cfg)), _flatten(to_dict(stored))
        differ = [f"{k}: checkpoint {flat_stored[k]!r} vs config {flat_cfg[k]!r}" for k in shape_keys
                  if flat_cfg[k] != flat_stored[k]]
        if differ:
            raise CheckpointError(f"{path} was trained with another model config ({'; '.join(differ)}); our "
                                  "checkpoints hold their config: leave out --config")
    has_backbone = any(k.startswith("encoder.backbone.") for k in state)
    if has_backbone and cfg.encoder.pretrained:
        # The weights come from the file: do not fetch (possibly unreachable) pretrained ones first.
        cfg = model_config_from_dict({**to_dict(cfg), "encoder": {**to_dict(cfg.encoder), "pretrained": False,
                                                                  "weights": None}})
    try:
        model = SlotContrast(cfg)
    except ValueError as e:  # a stored config that builds no model (e.g. a backbone this timm does not know)
        raise CheckpointError(f"{path}: its stored model config cannot be built ({e})") from e
    load_into(model, state, str(path), allow_missing_backbone=True)
    return model.to(device).eval()
