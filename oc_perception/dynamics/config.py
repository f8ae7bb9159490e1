"""Dynamics training configs: YAML -> dataclasses, with the schema checks and overrides of ``oc_perception.config``.

    cfg = load_dynamics_config("configs/dynamics/shapes_push.yml", ["trainer.max_steps=100"])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from oc_perception.config import NON_NEGATIVE, POSITIVE, ConfigError, OptimConfig, load_config


@dataclass
class DynamicsModelConfig:
    """``SlotDynamics`` hyperparameters; the slot and action sizes come from the data."""

    # D; None takes it from the data, a number is checked against it
    slot_dim: int | None = field(default=None, metadata={**POSITIVE, "max": 8192})
    num_layers: int = field(default=4, metadata=POSITIVE)
    num_heads: int = field(default=4, metadata=POSITIVE)
    hidden_dim: int = field(default=128, metadata=POSITIVE)
    ffn_mult: int = field(default=4, metadata=POSITIVE)
    history: int = field(default=6, metadata=POSITIVE)  # frames the model looks back at
    dropout: float = field(default=0.0, metadata={**NON_NEGATIVE, "max": 1})
    actions: bool = False  # condition on the recorded actions (the data must hold them)


@dataclass
class DynamicsDataConfig:
    dir: str | None = None  # extracted trajectories (python -m oc_perception.dynamics.extract); --data overrides
    burn_in: int = 6  # true frames a training clip starts with
    rollout: int = 10  # frames predicted autoregressively after them
    batch_size: int = field(default=64, metadata=POSITIVE)
    # cap validation cost; None = every validation trajectory
    val_max_episodes: int | None = field(default=None, metadata=POSITIVE)


@dataclass
class DynamicsLossConfig:
    rollout_weight: float = field(default=1.0, metadata=NON_NEGATIVE)  # MSE of the autoregressive rollout over the ``rollout`` frames (SlotFormer)
    teacher_forcing_weight: float = field(default=1.0, metadata=NON_NEGATIVE)  # MSE of one-step predictions from every true window of a clip


@dataclass
class DynamicsTrainerConfig:
    max_steps: int = field(default=20_000, metadata=POSITIVE)
    seed: int = 42
    device: str = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"  # "bf16": bfloat16 autocast (oc_perception.devices)
    log_every: int = field(default=50, metadata=POSITIVE)
    val_every: int = field(default=1000, metadata=POSITIVE)
    ckpt_every: int = field(default=1000, metadata=POSITIVE)
    keep_last: int = field(default=3, metadata=POSITIVE)


@dataclass
class DynamicsConfig:
    model: DynamicsModelConfig = field(default_factory=DynamicsModelConfig)
    data: DynamicsDataConfig = field(default_factory=DynamicsDataConfig)
    loss: DynamicsLossConfig = field(default_factory=DynamicsLossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)  # the pretraining schema; our configs set every key
    trainer: DynamicsTrainerConfig = field(default_factory=DynamicsTrainerConfig)


def load_dynamics_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DynamicsConfig:
    """Read a dynamics YAML config (or the defaults when ``path`` is None) and apply dotted overrides."""
    cfg = load_config(path, overrides, DynamicsConfig, group="dynamics")
    d = cfg.data
    if cfg.loss.rollout_weight <= 0 and cfg.loss.teacher_forcing_weight <= 0:
        raise ConfigError("loss.rollout_weight and loss.teacher_forcing_weight are both 0: nothing to train")
    if d.burn_in < 1 or d.rollout < 1 or d.burn_in + d.rollout <= cfg.model.history:
        raise ConfigError(f"need data.burn_in >= 1, data.rollout >= 1 and a clip (burn_in + rollout = "
                          f"{d.burn_in + d.rollout}) longer than model.history={cfg.model.history}")
    return cfg
