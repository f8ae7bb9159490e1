"""Checkpoints: our format (safetensors + config metadata), training state, and the official SlotContrast
Lightning checkpoints.

Our model files hold the weights and the model config, so ``load_checkpoint(path)`` needs nothing else.
Every write goes through ``io.atomic_write`` (a temporary file renamed into place): a crash never leaves half a file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from oc_perception.config import Config, ConfigError, ModelConfig, load_config, model_config_from_dict, to_dict
from oc_perception.devices import resolve_device
from oc_perception.io import atomic_write
from oc_perception.model.slotcontrast import SlotContrast

FORMAT = "oc-perception/slotcontrast-v1"
REPO_ROOT = Path(__file__).resolve().parents[1]


def _config_dir() -> Path:
    """configs/ of this checkout, else the copy an installed wheel ships as ``oc_perception._configs``."""
    if (REPO_ROOT / "configs" / "pretrain").is_dir():
        return REPO_ROOT / "configs"
    import importlib.util

    spec = importlib.util.find_spec("oc_perception._configs")  # a data-only (namespace) package
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]) if locations else REPO_ROOT / "configs"


CONFIG_DIR = _config_dir()
CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"

# Bundled checkpoints for our environments (trained by the commands in docs/checkpoints.md).
DEFAULT_CHECKPOINTS = {
    "oc/ShapesReach-v0": "shapes.safetensors",
    "oc/ShapesPush-v0": "shapes.safetensors",
    "oc/ShapesOddOneOut-v0": "shapes.safetensors",
    "oc/PandaPush-v0": "panda.safetensors",
}

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


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model it is loaded into."""


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes (in key order): damage anywhere changes it."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().contiguous().cpu().reshape(-1)
        h.update(f"{key}|{t.dtype}|{tuple(state[key].shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_weights(state: Mapping[str, torch.Tensor], meta: Mapping[str, str], source: str) -> None:
    """A damaged file whose header survived loads without complaint: compare the stored digest (files written
    since it was added) and refuse NaN/inf weights."""
    stored = meta.get("weights_sha256")
    if stored is not None and stored != weights_digest(state):
        raise CheckpointError(f"{source}: the weights do not match the digest stored when it was written; the "
                              "file is damaged: re-download, re-copy or re-train it")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{source}: non-finite (NaN/inf) weights in {', '.join(bad[:5])}"
                              + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
                              + "; the file is damaged or was saved from a diverged run")


def save_checkpoint(model: SlotContrast, path: str | Path, include_backbone: bool = True,
                    metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``model`` as safetensors with its config as metadata, atomically.

    ``include_backbone=False`` leaves out a frozen ViT backbone (it is rebuilt from timm on load), which
    makes a checkpoint of a ViT-B model ~340 MB smaller.
    """
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if not include_backbone and model.cfg.encoder.backbone != "cnn":
        state = {k: v for k, v in state.items() if not k.startswith("encoder.")}
    meta = {"format": FORMAT, "config": json.dumps(to_dict(model.cfg)), "weights_sha256": weights_digest(state),
            **(metadata or {})}
    return atomic_write(Path(path), lambda tmp: save_file(state, tmp, metadata=meta))


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of one of our safetensors files, with errors that name the problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path} is not a readable safetensors checkpoint ({e}); it may be truncated or corrupt: "
            "re-download or re-train it. Official SlotContrast .ckpt files load with load_official()."
        ) from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not an oc-perception checkpoint "
                              f"(metadata format={meta.get('format')!r}, expected {FORMAT!r})")
    check_weights(tensors, meta, str(path))
    return tensors, meta


def _load_into(model: SlotContrast, state: Mapping[str, torch.Tensor], source: str,
               allow_missing_backbone: bool) -> None:
    """Strict load with one error listing every missing, unexpected and mis-shaped key."""
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


def load_weights(model: SlotContrast, path: str | Path) -> None:
    """Copy the weights of ``path``, our model file (``.safetensors``) or a pretraining checkpoint (``step_*.pt``,
    its model weights), into ``model`` (same shapes; one error lists what does not fit). The model keeps its own
    config: fine-tuning with other losses or schedules."""
    path = Path(path)
    if path.is_file() and checkpoint_kind(path) == "torch":
        payload = load_training_state(path)
        kind = training_state_kind(payload)
        if kind != "pretraining":
            what = "a slot dynamics training checkpoint" if kind == "dynamics" else "not a checkpoint of ours"
            raise CheckpointError(f"{path} is {what}: pass a perception model (model.safetensors) or a pretraining "
                                  "checkpoint (checkpoints/step_*.pt)")
        state = payload["model"]
    else:
        state, _ = read_checkpoint(path)
    _load_into(model, {k: v.to(next(iter(model.state_dict().values())).device) for k, v in state.items()},
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
    _load_into(model, state, str(path), allow_missing_backbone=True)
    return model.to(device).eval()


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
        _load_into(model, state, source, allow_missing_backbone=True)
    except CheckpointError as e:
        try:
            hint = f" (its shapes are those of the '{detect_official_config(official_state_dict(path_or_state_dict))}' config)"
        except CheckpointError:
            hint = ""
        raise CheckpointError(f"{e}{hint}") from None
    return model.to(device).eval()


def default_checkpoint(env_id: str) -> Path:
    """Path of the bundled checkpoint for one of our env ids (e.g. ``"oc/ShapesPush-v0"``)."""
    if env_id not in DEFAULT_CHECKPOINTS:
        raise KeyError(f"no bundled checkpoint for '{env_id}'; bundled: {', '.join(DEFAULT_CHECKPOINTS)}. "
                       "Pass checkpoint=PATH (train one with python -m oc_perception.train).")
    path = CHECKPOINT_DIR / DEFAULT_CHECKPOINTS[env_id]
    if not path.is_file():
        raise FileNotFoundError(f"bundled checkpoint {path} is missing from this install; see docs/checkpoints.md")
    return path


@functools.cache
def _bundled_digests() -> dict[str, tuple[str, ...]]:
    """Weights digest of each bundled checkpoint -> the env ids it was trained for."""
    envs: dict[str, list[str]] = {}
    for env_id, name in DEFAULT_CHECKPOINTS.items():
        envs.setdefault(name, []).append(env_id)
    digests = {}
    for name, ids in envs.items():
        digest = _weights_digest_of(CHECKPOINT_DIR / name)
        if digest is not None:
            digests[digest] = tuple(ids)
    return digests


def _weights_digest_of(path: Path) -> str | None:
    """The weights digest stored in one of our model files (None for other files or older ones of ours)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("weights_sha256")
    except (SafetensorError, OSError, ValueError):
        return None


def check_env_of_checkpoint(path: str | Path, env_id: str) -> None:
    """Warn when ``path`` is (a copy of) a bundled checkpoint of other envs than ``env_id``: its slots were not
    trained on frames of this env. The warning names both."""
    digest = _weights_digest_of(Path(path))
    envs = _bundled_digests().get(digest) if digest is not None else None
    if envs is not None and env_id not in envs:
        ours = (f" (the bundled one: {CHECKPOINT_DIR / DEFAULT_CHECKPOINTS[env_id]})"
                if env_id in DEFAULT_CHECKPOINTS else "")
        warnings.warn(f"checkpoint {path} is the bundled model of {', '.join(envs)}, but the env is {env_id}: its "
                      f"slots were not trained on this env's frames; pass a model trained on {env_id}{ours}",
                      stacklevel=3)


def config_path(name: str | Path, group: str = "pretrain") -> Path:
    """``"movi_c"`` -> configs/<group>/movi_c.yml of this repository; an existing path is returned as is."""
    p = Path(name)
    if p.is_file():
        return p
    candidate = CONFIG_DIR / group / f"{name}.yml"
    if not candidate.is_file():
        known = sorted(q.stem for q in (CONFIG_DIR / group).glob("*.yml"))
        raise FileNotFoundError(f"no {group} config '{name}'; known: {', '.join(known)} (or pass a YAML path)")
    return candidate


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


TRAINING_STATE_KEYS = ("model", "optimizer", "config")  # what tells a training state from other torch files


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


# ---------------------------------------------------------------------------------------------- one loader
def checkpoint_kind(path: Path) -> str | None:
    """"safetensors", "torch" (zip or pickle, as ``torch.save`` writes) or None, from the first bytes."""
    with path.open("rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return "safetensors"  # 8-byte little-endian header length, then the JSON header
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    return None


def load_model(checkpoint: "str | os.PathLike | SlotContrast | None", device: str | torch.device | None = None, *,
               config: str | None = None, env_id: str | None = None) -> SlotContrast:
    """The one loader: a perception model from whatever names it, in eval mode.

    ``checkpoint``: our ``.safetensors``, an official SlotContrast ``.ckpt`` (sniffed from the first bytes), a
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


def _is_training_state(path: Path) -> bool:
    """A checkpoint written by ``oc_perception.train`` to resume training (not a model file)."""
    try:
        return training_state_kind(load_training_state(path)) is not None
    except CheckpointError:
        return False


def _load_official(path: Path, config: str | None, device: str | torch.device) -> SlotContrast:
    try:
        state_dict = official_state_dict(path)
    except CheckpointError:
        if _is_training_state(path):
            raise CheckpointError(f"{path} is a training checkpoint (to resume training); run inference on the "
                                  "model.safetensors that training writes to its log directory") from None
        raise
    cfg = load_config(config_path(config or detect_official_config(state_dict)))
    try:
        return load_official(state_dict, cfg, device)
    except RuntimeError as e:
        if any(k.startswith("encoder.module.backbone.") for k in state_dict):
            raise
        raise CheckpointError(f"{path} holds no backbone weights, so the pretrained {cfg.model.encoder.backbone} "
                              f"is needed and could not be loaded ({e})") from e
