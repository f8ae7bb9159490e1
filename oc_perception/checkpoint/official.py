"""The official SlotContrast Lightning checkpoints: their keys renamed to ours, their config told from their
shapes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from oc_perception.checkpoint.format import CheckpointError
from oc_perception.checkpoint.model_file import load_into
from oc_perception.config import Config, ModelConfig, model_config_from_dict, to_dict
from oc_perception.model.slotcontrast import SlotContrast

# Official Lightning key prefixes -> ours; the first match wins, so longer prefixes come first.
OFFICIAL_PREFIXES = [
    ("initializer.slots", "initial_slots"),
    ("encoder.module.backbone.model.", "encoder.backbone."),
    ("encoder.module.output_transform.layers.0.", "feature_mlp.norm."),
    ("encoder.module.output_transform.layers.1.", "feature_mlp.fc1."),
    ("encoder.module.output_transform.layers.3.", "feature_mlp.fc2."),
    ("processor.module.corrector.mlp.layers.", "slot_attention.mlp."),
    ("processor.module.corrector.", "slot_attention."),
    ("processor.module.predictor.blocks.0.self_attn.qkv.", "predictor.qkv."),
    ("processor.module.predictor.blocks.0.self_attn.out_proj.", "predictor.proj."),
    ("processor.module.predictor.blocks.0.linear1.", "predictor.fc1."),
    ("processor.module.predictor.blocks.0.linear2.", "predictor.fc2."),
    ("processor.module.predictor.blocks.0.", "predictor."),
    ("decoder.module.mlp.layers.", "decoder.mlp."),
    ("decoder.module.", "decoder."),
]

# (K slots, D slot dim, P patches) of the released models -> their config name.
OFFICIAL_SHAPES = {(11, 64, 576): "movi_c", (15, 128, 576): "movi_e", (7, 64, 1369): "ytvis2021"}


def official_state_dict(path_or_state_dict: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of an official Lightning ``.ckpt`` (loaded with ``weights_only=True``), or a dict as is."""
    if isinstance(path_or_state_dict, Mapping):
        sd = path_or_state_dict
    else:
        path = Path(path_or_state_dict)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for truncated or foreign files
            # Not torch's own text: it suggests weights_only=False, which would run whatever the file holds.
            raise CheckpointError(f"{path} could not be read as a PyTorch checkpoint ({type(e).__name__}); "
                                  "it may be truncated, corrupt or hold more than tensors") from e
        if isinstance(sd, Mapping) and "state_dict" in sd:
            sd = sd["state_dict"]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError("expected an official SlotContrast checkpoint (a Lightning .ckpt with a state_dict)")
    return dict(sd)


def map_official_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename official keys to ours; a key no rule knows is kept as is (and reported as unexpected on load)."""
    out = {}
    for key, value in state_dict.items():
        for old, new in OFFICIAL_PREFIXES:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def detect_official_config(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Name of the official config (movi_c, movi_e, ytvis2021) an official state dict was trained with."""
    try:
        _, k, d = state_dict["initializer.slots"].shape
        p = state_dict["decoder.module.pos_emb"].shape[2]
    except KeyError as e:
        raise CheckpointError(f"not an official SlotContrast checkpoint: no key {e}") from e
    if (k, d, p) not in OFFICIAL_SHAPES:
        raise CheckpointError(f"unknown official model shape (K={k}, D={d}, P={p}); known: "
                              + ", ".join(f"{n} (K={s[0]}, D={s[1]}, P={s[2]})" for s, n in OFFICIAL_SHAPES.items()))
    return OFFICIAL_SHAPES[(k, d, p)]


def load_official(path_or_state_dict: str | Path | Mapping[str, torch.Tensor], cfg: Config | ModelConfig,
                  device: str | torch.device = "cpu") -> SlotContrast:
    """An official SlotContrast checkpoint -> our model with the same numbers, in eval mode.

    ``cfg`` is the matching config (``load_config("configs/pretrain/movi_c.yml")``). A state dict without
    backbone keys is accepted (the backbone keeps the weights it was built with; a warning says so); any
    other missing, unexpected or mis-shaped key raises a ``CheckpointError`` that lists them.
    """
    model_cfg = cfg.model if isinstance(cfg, Config) else cfg
    if not model_cfg.predictor.official_logit_scale:
        raise CheckpointError("official checkpoints need model.predictor.official_logit_scale=true")
    state = map_official_keys(official_state_dict(path_or_state_dict))
    if any(k.startswith("encoder.backbone.") for k in state) and model_cfg.encoder.pretrained:
        model_cfg = model_config_from_dict({**to_dict(model_cfg), "encoder": {
            **to_dict(model_cfg.encoder), "pretrained": False, "weights": None}})
    model = SlotContrast(model_cfg)
    source = "official checkpoint" if isinstance(path_or_state_dict, Mapping) else str(path_or_state_dict)
    try:
        load_into(model, state, source, allow_missing_backbone=True)
    except CheckpointError as e:
        try:
            hint = f" (its shapes are those of the '{detect_official_config(official_state_dict(path_or_state_dict))}' config)"
        except CheckpointError:
            hint = ""
        raise CheckpointError(f"{e}{hint}") from None
    return model.to(device).eval()
