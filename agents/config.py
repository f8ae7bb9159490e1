"""Agent configs: YAML -> dataclasses, with the schema checks and overrides of ``oc_perception.config``.

    cfg = load_agent_config("configs/agents/oddoneout_slots.yml", ["ppo.lr=1e-4", "total_timesteps=20000"])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from oc_perception.config import POSITIVE, ConfigError, load_config
from oc_perception.engine import MaskSource

from . import envs_package

ObsType = Literal["slots", "pixels", "state"]
"""slots: SlotContrast slots (the perception checkpoint); pixels: raw 64 x 64 frames (CnnPolicy); state:
ground-truth object states (privileged; ``state_policy`` says which policy)."""
OBS_TYPES: tuple[str, ...] = get_args(ObsType)
StatePolicy = Literal["mlp", "set"]
"""mlp: the flattened states through SB3's MlpPolicy; set: the object rows through the slots' SlotSetExtractor."""
VecEnvKind = Literal["dummy", "subproc"]
"""dummy: the envs step in this process; subproc: one process per env."""


@dataclass
class PPOConfig:
    """Stable-Baselines3 ``PPO`` arguments (``lr`` is ``learning_rate``)."""

    # steps per env per rollout; a rollout is n_steps * n_envs transitions
    n_steps: int = field(default=128, metadata=POSITIVE)
    batch_size: int = field(default=256, metadata=POSITIVE)
    n_epochs: int = field(default=4, metadata=POSITIVE)
    lr: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    ent_coef: float = 0.0
    clip_range: float = 0.2


@dataclass
class ExtractorConfig:
    """``agents.extractor.SlotSetExtractor`` arguments (slots, and state rows with ``state_policy: set``)."""

    embed_dim: int = field(default=64, metadata=POSITIVE)
    num_layers: int = field(default=2, metadata=POSITIVE)
    num_heads: int = field(default=4, metadata=POSITIVE)
    use_masks: bool = False  # also feed each slot's mask: where it is in the image (slots only)
    # Which masks: "attention" (slot attention's, which every step computes anyway) or "decoder" (the decoder
    # then runs every step: the wrapper steps ~3x slower with the Shapes model, docs/wrappers.md).
    mask_source: MaskSource = "attention"
    # One extractor for the policy and the value function (SB3's default), or one each.
    share: bool = True


@dataclass
class AgentConfig:
    """One PPO run: env, observations, budget, evaluation, PPO and extractor settings."""

    env_id: str = ""  # one of envs.ENV_IDS
    # Constructor arguments of the env, passed to gym.make (e.g. {colors: [red, green], num_objects: 4}).
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    obs: ObsType = "slots"  # --obs overrides
    n_envs: int = field(default=16, metadata=POSITIVE)
    vec_env: VecEnvKind = "dummy"  # "subproc": one process per env (worth it when env steps cost more than the model)
    total_timesteps: int = field(default=100_000, metadata=POSITIVE)  # env steps, all envs together
    seed: int = 0
    eval_freq: int = field(default=20_000, metadata=POSITIVE)  # env steps (all envs together) between evaluations
    eval_episodes: int = field(default=50, metadata=POSITIVE)
    # Sampled actions, as in training: argmax policies of these tasks often stall against a wall or an object.
    eval_deterministic: bool = False
    # The state baseline's policy: "set" reads the object rows with the slot agents' extractor, so slots and
    # states differ only in what describes each object; "mlp" (SB3's MlpPolicy on the flattened rows) is weak
    # here (below a random policy on ShapesOddOneOut at 100k steps, docs/agents.md).
    state_policy: StatePolicy = "set"
    # The perception model's arithmetic (slot observations): "bf16" is bfloat16 autocast, which pays on GPUs and
    # on CPUs with AMX/AVX512-BF16 and is emulated (slower) elsewhere (benchmarks/train_speed.py prints which).
    precision: Literal["fp32", "bf16"] = "fp32"
    # Passes over an episode's first frame (SlotObservation's first_frame_passes): None keeps the perception
    # checkpoint's setting; 3 keeps more objects in the slot of their first frame (docs/wrappers.md#identity).
    first_frame_passes: int | None = field(default=None, metadata=POSITIVE)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    extractor: ExtractorConfig = field(default_factory=ExtractorConfig)


def load_agent_config(path: str | Path | None = None, overrides: list[str] | None = None) -> AgentConfig:
    """Read an agent YAML config (or the defaults when ``path`` is None), apply dotted overrides, check values.

    Raises:
        ConfigError: a missing file, an unknown key, a value of the wrong type or out of range.
    """
    cfg = load_config(path, overrides, AgentConfig, group="agents")
    check_agent_config(cfg)
    return cfg


def check_agent_config(cfg: AgentConfig) -> None:
    """Raise a ``ConfigError`` naming the first value that cannot work together with the others (the loader
    has checked each value's type, choices and range)."""
    if cfg.env_id not in envs_package.ENV_IDS:
        raise ConfigError(f"env_id must be one of {', '.join(envs_package.ENV_IDS)}, got '{cfg.env_id}'")
    check_env_kwargs(cfg.env_id, cfg.env_kwargs, "env_kwargs")
    # SB3 would only warn, then train on a truncated last minibatch every epoch.
    if (cfg.ppo.n_steps * cfg.n_envs) % cfg.ppo.batch_size:
        raise ConfigError(f"ppo.batch_size ({cfg.ppo.batch_size}) must divide the rollout size ppo.n_steps * "
                          f"n_envs ({cfg.ppo.n_steps * cfg.n_envs})")
    if cfg.extractor.embed_dim % cfg.extractor.num_heads:
        raise ConfigError(f"extractor.num_heads ({cfg.extractor.num_heads}) must divide extractor.embed_dim "
                          f"({cfg.extractor.embed_dim})")


def check_env_kwargs(env_id: str, env_kwargs: dict[str, Any], where: str) -> None:
    """Build the env once with ``env_kwargs``: a wrong name or value stops here, before any training."""
    if not env_kwargs:
        return
    import gymnasium as gym

    try:
        gym.make(env_id, **env_kwargs).close()
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}={env_kwargs!r} does not make {env_id}: {e}") from None
