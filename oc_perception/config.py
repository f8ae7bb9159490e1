"""Configuration as data: YAML files -> typed dataclasses, dotted overrides from the command line.

    cfg = load_config("movi_c", ["trainer.max_steps=10", "model.num_slots=7"])  # a shipped name, or a YAML path
    cfg.model.num_slots  # 7

Unknown keys are errors that name the key and the keys allowed there, so a typo never silently trains
the wrong model; values are checked on load (types, ``Literal`` choices, ranges), so a bad value stops a
command before it makes anything.

Why not OmegaConf structured configs (what the official code uses): released OmegaConf refuses ``Literal``
annotations, and every string option here is a ``Literal`` checked on load; its errors are also multi-line
tracebacks naming internal nodes, and interpolation (``${...}``) is a feature our configs avoid on purpose (each
file reads on its own). This module is plain code with one-line errors; the YAML files stay valid OmegaConf
input.

Ranges are declared on the fields themselves, as ``field(metadata=...)`` with ``min`` (``min_exclusive`` for a
strict bound) and ``max``, and checked on load for every schema (pretraining, dynamics, agents).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

POSITIVE: dict[str, Any] = {"min": 0, "min_exclusive": True}
"""Field metadata: the value must be > 0 (and finite, for floats)."""
NON_NEGATIVE: dict[str, Any] = {"min": 0}
"""Field metadata: the value must be >= 0 (and finite, for floats)."""

PositionEmbedding = Literal["learned", "soft"]
"""The decoder's position code: ``"learned"`` (a free parameter per cell, the official model) or ``"soft"`` (a
linear map of the cell coordinates)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class EncoderConfig:
    """Feature extractor. ``backbone`` is a timm model name (frozen DINOv2 ViT) or ``"cnn"``."""

    backbone: str = "vit_small_patch14_dinov2"
    pretrained: bool = True
    # Local weights file (safetensors or torch state dict) for the backbone; used instead of the timm hub.
    weights: str | None = None
    input_size: int = field(default=336, metadata={**POSITIVE, "max": 8192})  # H' = W' of the model input, in pixels
    # pixels per feature-grid cell (ViT patch, or the CNN's total stride)
    patch_size: int = field(default=14, metadata=POSITIVE)
    feature_dim: int = field(default=384, metadata=POSITIVE)  # F
    # Reconstruction target: "features" (frozen backbone output, the paper) or "pixels" (RGB patches;
    # needed when the encoder is trained, else reconstructing its own features collapses).
    target: Literal["features", "pixels"] = "features"
    cnn_channels: list[int] = field(default_factory=lambda: [32, 64, 64])  # CNN encoder widths
    # CNN: add an absolute position embedding to the features. Invariant Slot Attention gets positions from
    # the slots instead (keys in slot-relative coordinates), so it runs without one.
    position_embedding: bool = True


@dataclass
class SlotAttentionConfig:
    # iterations on the first frame, from the learned initial slots
    iters_first: int = field(default=3, metadata=POSITIVE)
    iters: int = field(default=2, metadata=POSITIVE)  # iterations on later frames, from the predicted slots
    # Passes over an episode's first frame: each pass after the first starts from the predictor's output of the
    # previous one and runs ``iters`` iterations, as if the frame were seen again. The slots then settle before
    # the first real hand-over to the predictor, where most objects that change slot did (docs/checkpoints.md).
    # 1 = the paper.
    first_frame_passes: int = field(default=1, metadata=POSITIVE)
    # A slot whose attention covers fewer than this many input patches in a frame (its object is hidden or has
    # left the view) goes dormant: it keeps the state it started the frame with instead of the predictor's
    # output, so it is not pulled onto another object and can take its own back when it reappears. Works on any
    # trained model (docs/checkpoints.md). 0 = off, the paper.
    dormant_below: float = field(default=0.0, metadata=NON_NEGATIVE)
    mlp_hidden_mult: int = 4
    eps: float = 1e-8
    # Invariant Slot Attention (Biza et al., 2023): slots carry a position and scale, keys/values and the
    # decoder see the grid in each slot's own frame. For pixels from scratch; off in the paper's model.
    relative: bool = False


@dataclass
class PredictorConfig:
    num_heads: int = field(default=4, metadata=POSITIVE)
    ffn_mult: int = 4
    # The official predictor multiplies attention logits by sqrt(head_dim) instead of dividing. On for
    # official parity and checkpoints; off gives the textbook transformer.
    official_logit_scale: bool = True


@dataclass
class DecoderConfig:
    # "mlp" (the paper: every slot decodes every patch) or "broadcast" (spatial broadcast: each slot tiled on
    # a small grid -> transposed convolutions -> RGB + alpha; masks then have the decoder's resolution).
    kind: Literal["mlp", "broadcast"] = "mlp"
    hidden_dims: list[int] = field(default_factory=lambda: [1024, 1024, 1024])
    pos_emb: PositionEmbedding = "learned"  # "learned" (official) or "soft" (coordinates -> linear; fast from scratch)
    # broadcast decoder: start grid (side), channels of each stride-2 transposed conv (the output side is
    # broadcast_size * 2 ** len(conv_channels), a divisor of the input size).
    broadcast_size: int = field(default=8, metadata=POSITIVE)
    conv_channels: list[int] = field(default_factory=lambda: [32, 32, 32])


@dataclass
class LossConfig:
    featrec_weight: float = field(default=1.0, metadata=NON_NEGATIVE)
    ss_weight: float = field(default=0.5, metadata=NON_NEGATIVE)
    temperature: float = field(default=0.1, metadata=POSITIVE)
    batch_contrast: bool = True
    # Pixels whose colour differs from the frame's median colour (objects, on our envs' plain floors) weigh
    # this much more in the reconstruction loss; 1 = plain MSE (the paper). Pixel targets only.
    foreground_weight: float = field(default=1.0, metadata=POSITIVE)
    # Weight of a label-free term that gives the background (pixels of the frame's median colour) to one slot,
    # so object masks fit their objects (model.losses.background_ownership_loss). Pixel targets only.
    background_weight: float = field(default=0.0, metadata=NON_NEGATIVE)
    # Weight of a label-free term against slot boundaries inside a uniformly coloured region (an object cut in
    # two by two slots): model.losses.colour_smoothness_loss. Pixel targets only.
    smoothness_weight: float = field(default=0.0, metadata=NON_NEGATIVE)
    # ... and, relative to it, against slot boundaries across the floor (object masks spreading onto it).
    smoothness_floor_weight: float = field(default=0.0, metadata=NON_NEGATIVE)
    # Weight of a label-free term against a slot change from one frame to the next on foreground cells that
    # keep their colour (slots trading objects, an object's pixels going over to a touching object's slot):
    # model.losses.temporal_consistency_loss. Pixel targets only.
    temporal_weight: float = field(default=0.0, metadata=NON_NEGATIVE)
    # Supervision for users whose simulator gives masks: weight of a loss matching the decoder masks to the
    # training videos' ground-truth segments (background included), Hungarian-matched once per clip. 0 = the
    # unsupervised model of the paper. A model trained with it is not unsupervised: say so where it is used.
    segmentation_weight: float = field(default=0.0, metadata=NON_NEGATIVE)
    # How that loss's cross-entropy weighs pixels: 0 = every pixel alike, 1 = every segment alike (an object
    # pixel then weighs ~50x a floor pixel and masks grow past the objects); see segmentation_matching_loss.
    segmentation_area_exponent: float = field(default=0.0, metadata=NON_NEGATIVE)


@dataclass
class ModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    num_slots: int = field(default=11, metadata={**POSITIVE, "max": 1024})  # K
    # First-frame slots: "fixed" (K learned vectors, the paper) or "random" (a learned Gaussian shared by the
    # slots, Locatello et al. 2020: slots are exchangeable, which training from pixels needs).
    initializer: Literal["fixed", "random"] = "fixed"
    slot_dim: int = field(default=64, metadata={**POSITIVE, "max": 8192})  # D
    input_mlp_hidden: int | None = None  # hidden width of the feature MLP; None = 2F as in the paper
    slot_attention: SlotAttentionConfig = field(default_factory=SlotAttentionConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))


@dataclass
class DataConfig:
    dataset: str = "movi_c"  # a name for logs; the shards say what the data is
    train_shards: str = "movi_c/movi_c-train-*.tar"  # glob, relative to --data-dir
    val_shards: str = "movi_c/movi_c-validation-*.tar"
    chunk_size: int = field(default=4, metadata=POSITIVE)  # frames per training clip
    batch_size: int = field(default=64, metadata=POSITIVE)
    val_batch_size: int = field(default=16, metadata=POSITIVE)
    # "resize": square resize to the input size (MOVi, our envs);
    # "short_side_crop": short side to the input size, then a random (train) / centre (val) square crop (YT-VIS).
    transform: Literal["resize", "short_side_crop"] = "resize"
    flip: bool = True  # horizontal flip, p=0.5 per clip
    # Validation segmentations: None keeps their native resolution (after the same crop); N resizes them
    # nearest-exact to N x N (the official code uses the model input size).
    segmentation_size: int | None = None
    cache_features: bool = False  # compute frozen-backbone features once (fp16 on disk) and train from them
    cache_dir: str | None = None  # default: <log dir>/feature_cache
    num_workers: int = field(default=2, metadata=NON_NEGATIVE)
    # Label 0 in validation segmentations: "background" (MOVi, our envs: a class, left out of FG metrics) or
    # "unlabelled" (YT-VIS: pixels without an annotation, left out of every metric).
    label_zero: Literal["background", "unlabelled"] = "background"
    val_max_videos: int | None = None  # cap validation cost; None = every validation video


@dataclass
class OptimConfig:
    lr: float = field(default=4e-4, metadata=POSITIVE)
    warmup_steps: int = field(default=2500, metadata=NON_NEGATIVE)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = field(default=1e-8, metadata=NON_NEGATIVE)
    weight_decay: float = field(default=0.0, metadata=NON_NEGATIVE)
    grad_clip: float = field(default=0.05, metadata=POSITIVE)  # global grad-norm clip


@dataclass
class TrainerConfig:
    max_steps: int = field(default=100_000, metadata=POSITIVE)
    # End the run at this step, keeping the schedule of max_steps (a run cut short by a time budget, reproduced
    # by one command); None = run to max_steps. --continue with a larger value goes on where it stopped.
    stop_at: int | None = field(default=None, metadata=POSITIVE)
    seed: int = 42
    precision: Literal["fp32", "bf16"] = "fp32"  # "bf16": bfloat16 autocast, on CUDA or CPU (devices.autocast)
    device: str = "auto"
    log_every: int = field(default=50, metadata=POSITIVE)
    val_every: int = field(default=5000, metadata=POSITIVE)
    ckpt_every: int = field(default=5000, metadata=POSITIVE)
    keep_last: int = field(default=3, metadata=POSITIVE)
    overlay_videos: int = 2  # validation clips rendered as mask overlays in TensorBoard


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


# A value in a message is shown cut short: a long list (or an alias-built tree) must not flood the terminal.
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict = 2, 6, 6, 6
_SHORT.maxstring = _SHORT.maxother = 60


def show(value: Any) -> str:
    """``repr(value)``, cut to a few dozen characters however large the value."""
    return _SHORT.repr(value)


# Values a YAML document may hold once its aliases are expanded: configs hold a few hundred; a nested-alias
# "bomb" of a few hundred bytes holds billions, and printing one exhausts memory.
MAX_YAML_VALUES = 10_000


class _Refused(yaml.MarkedYAMLError):
    """Valid YAML that we do not read: a key given twice in one mapping, or aliases that expand too far."""


def _expanded_size(root: yaml.Node) -> int:
    """Number of nodes of ``root`` with every alias expanded, counted in time linear in the distinct nodes.

    Raises:
        _Refused: more than ``MAX_YAML_VALUES``, or an alias inside itself (an endless value).
    """
    sizes: dict[int, int | None] = {}  # id(node) -> expanded size; None while it is being counted

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node), 0)
        if known is None:
            raise _Refused(None, None, "an alias refers to a value that contains it (an endless value)",
                           node.start_mark)
        if known:
            return known
        sizes[id(node)] = None
        if isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(v) for v in node.value)
        else:
            total = 1
        if total > MAX_YAML_VALUES:
            raise _Refused(None, None, f"its aliases expand to more than {MAX_YAML_VALUES:,} values; write the "
                           "values out instead of nesting aliases", node.start_mark)
        sizes[id(node)] = total
        return total

    return size(root)


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (at any depth) and aliases that expand
    past ``MAX_YAML_VALUES`` values."""

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is not None:
            _expanded_size(node)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *base": keys it brings in may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                seen = first.get(key)
            except TypeError:  # an unhashable key: the base class says so
                break
            if seen is not None:
                raise _Refused(None, None, f"key {show(key)} is given twice in one mapping (first at line "
                               f"{seen.line + 1}; YAML would keep only the last): merge the two into one",
                               key_node.start_mark)
            first[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, source: str) -> Any:
    """The one YAML reader (config files, overrides, YAML arguments): safe tags only, no key given twice in a
    mapping, aliases expanding to at most ``MAX_YAML_VALUES`` values.

    Raises:
        ConfigError: one line naming ``source``, the line and column, and the problem (never the whole value).
    """
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        if isinstance(e, _Refused):
            raise ConfigError(f"{source}{where}: {problem}") from None
        raise ConfigError(f"{source}: not valid YAML{where} ({problem})") from None


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (after YAML parsing) and convert ints to floats."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}={show(value)}: must be one of {', '.join(map(str, allowed))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {show(value)}")
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {show(value)}")
        return from_dict(tp, value, where)
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{where}: expected a mapping of names to values, got {show(value)}")
        return dict(value)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {show(value)}")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-3" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {show(value)}")


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a (possibly partial) mapping; missing keys keep their defaults."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in hints:
            raise ConfigError(f"unknown config key '{path}'; allowed here: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{k}' is not a section")
    node[keys[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings; values are parsed as YAML (``1e-3``, ``true``, ``[1, 2]``)."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key.subkey=value")
        key, raw = item.split("=", 1)
        _set_dotted(data, key.strip(), load_yaml(raw, f"override '{key.strip()}'"))
    return data


SchemaT = typing.TypeVar("SchemaT")

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
"""The shipped configs: ``pretrain/``, ``dynamics/`` and ``agents/`` hold one YAML file per name."""


def config_names(group: str = "pretrain") -> list[str]:
    """Names of the shipped configs of ``group`` (``"pretrain"``, ``"dynamics"`` or ``"agents"``)."""
    return sorted(q.stem for q in (CONFIG_DIR / group).glob("*.yml"))


def config_path(name: str | Path, group: str = "pretrain") -> Path:
    """``"movi_c"`` -> ``configs/<group>/movi_c.yml`` of this repository (or the installed copy); an existing
    path is returned as is.

    Raises:
        FileNotFoundError: neither a file nor a shipped config of ``group``; the message lists the names.
    """
    p = Path(name)
    if p.is_file():
        return p
    candidate = CONFIG_DIR / group / f"{name}.yml"
    if not candidate.is_file():
        raise FileNotFoundError(f"no {group} config '{name}'; known: {', '.join(config_names(group))} "
                                "(or pass a YAML path)")
    return candidate


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                schema: type[SchemaT] = Config, group: str = "pretrain") -> SchemaT:
    """Read a YAML config (or the defaults when ``path`` is None) and apply dotted overrides.

    ``path`` is a YAML file or the name of a shipped config of ``group`` (``load_config("movi_c")``).
    ``schema`` is the top-level dataclass (pretraining ``Config`` by default; the dynamics and agent
    configs pass their own, and their ``group``).

    Raises:
        ConfigError: no such file or name, bad YAML, an unknown key, or a value of the wrong type or range.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            path = config_path(path, group)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}; pass a YAML path or the name of a shipped "
                              f"{group} config ({', '.join(config_names(group))})") from None
        loaded = load_yaml(path.read_text(), str(path))
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = loaded or {}
    data = apply_overrides(data, overrides)
    cfg = from_dict(schema, data)
    check_values(cfg)
    return cfg


def _range_error(where: str, value: Any, meta: dict[str, Any]) -> str | None:
    """What is wrong with ``value`` under the range of a field's ``meta`` (None when it fits)."""
    low, high, strict = meta.get("min"), meta.get("max"), meta.get("min_exclusive", False)
    if low is None and high is None:
        return None
    kind = "number" if isinstance(value, float) else "integer"
    if low == 0:
        need = f"must be a {'positive' if strict else 'non-negative'} {kind}"
    else:
        need = f"must be {'>' if strict else '>='} {low}" if low is not None else f"must be a {kind}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where}={value!r}: {need}"
    if low is not None and (value <= low if strict else value < low):
        return f"{where}={value!r}: {need}"
    if high is not None and value > high:
        return f"{where}={value!r}: must be at most {high}"
    return None


def check_values(cfg: Any, where: str = "") -> None:
    """Raise a ConfigError naming the first field whose value is outside the range its metadata declares
    (``min``, ``min_exclusive``, ``max``), in ``cfg`` and the dataclasses it holds."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        path = f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(value):
            check_values(value, path)
        elif value is not None and not isinstance(value, bool) and isinstance(value, (int, float)):
            problem = _range_error(path, value, dict(f.metadata))
            if problem:
                raise ConfigError(problem)
    if isinstance(cfg, Config):
        _check_channels(cfg.model)


def _check_channels(model: ModelConfig) -> None:
    """The per-channel normalisation: 3 finite numbers, and a positive std."""
    for name in ("mean", "std"):
        value = getattr(model, name)
        if len(value) != 3 or not all(math.isfinite(v) for v in value):
            raise ConfigError(f"model.{name}={show(value)}: must be 3 finite numbers, one per RGB channel")
        if name == "std" and min(value) <= 0:
            raise ConfigError(f"model.{name}={show(value)}: must be positive (frames are divided by it)")


# Options that were tried and removed (docs/checkpoints.md has what they measured), with the value that
# behaves as today's code: a stored config holding that value still loads; any other is refused by name.
RETIRED = {
    "slot_attention.bilevel": False,
    "decoder.mix": "alpha",
    "loss.mask_weight": 1.0,
}


def upgrade_model_dict(data: dict[str, Any]) -> dict[str, Any]:
    """A stored model config (checkpoint metadata, training state) as today's schema reads it: retired keys
    at their neutral value are dropped (keys added since take their defaults when the dict is read)."""
    data = copy.deepcopy(data)
    for dotted, neutral in RETIRED.items():
        *path, key = dotted.split(".")
        node = data
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or key not in node:
            continue
        if node[key] != neutral:
            raise ConfigError(f"model.{dotted}={node[key]!r} was used to train this model; that option has been "
                              "removed (docs/checkpoints.md keeps what it measured): retrain without it")
        del node[key]
    return data


def canonical_config(data: dict[str, Any], schema: type = None) -> dict[str, Any]:
    """A stored full config in today's schema (retired keys dropped, new keys at their defaults), for
    comparing a resumed run's config with the command's."""
    data = {**data, "model": upgrade_model_dict(data.get("model", {}))}
    return to_dict(from_dict(schema or Config, data))


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """A stored model config (checkpoint metadata, training state) -> ``ModelConfig``, values checked as on load."""
    if not isinstance(data, dict):
        raise ConfigError(f"a model config must be a mapping of names to values, got {show(data)}")
    cfg = from_dict(ModelConfig, upgrade_model_dict(data), "model")
    check_values(Config(model=cfg))
    return cfg
