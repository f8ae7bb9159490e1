"""The env an agent sees, per observation type: Monitor-ed envs in an SB3 ``VecEnv``, slots encoded batched.

- ``slots``: ``VecSlotObservation`` over the raw envs (one batched perception forward per step);
  observations ``Box(-inf, inf, (K, D))``, or ``Dict(slots, masks)`` with ``extractor.use_masks``.
- ``pixels``: the raw frames, channels first for SB3's CNN (``VecTransposeImage``, which SB3 would add to the
  training env only: the evaluation env must be wrapped alike).
- ``state``: ``ObjectStateObservation``, ground-truth object states: flattened (``state_policy: mlp``) or a set
  of rows (``set``).
"""

from __future__ import annotations

import functools

import gymnasium as gym
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecTransposeImage

from oc_perception.model.slotcontrast import SlotContrast
from oc_perception.sb3 import VecSlotObservation
from oc_perception.wrappers import SlotObservation

# registers the oc/ ids, also in SubprocVecEnv workers that import this module
from . import envs_package  # noqa: F401
from .config import AgentConfig
from .state import ObjectStateObservation


def make_env(env_id: str, obs: str, env_kwargs: dict | None = None, flatten_state: bool = True) -> gym.Env:
    """One env as the agent sees it, except slots, which the vector wrapper adds (see ``make_single_env``).

    Monitor goes right on the made env, so episode returns and lengths are the env's own whatever wraps it.
    """
    env = Monitor(gym.make(env_id, **(env_kwargs or {})))
    return ObjectStateObservation(env, flatten=flatten_state) if obs == "state" else env


def make_vec_env(cfg: AgentConfig, obs: str, n_envs: int, perception: SlotContrast | None = None) -> VecEnv:
    """``n_envs`` envs of ``cfg.env_id`` for observation type ``obs`` (``perception``: the slot model, for slots)."""
    factories = [functools.partial(make_env, cfg.env_id, obs, cfg.env_kwargs, cfg.state_policy == "mlp")
                 for _ in range(n_envs)]
    venv = SubprocVecEnv(factories) if cfg.vec_env == "subproc" else DummyVecEnv(factories)
    if obs == "slots":
        return VecSlotObservation(venv, checkpoint=perception, include_masks=cfg.extractor.use_masks,
                                  mask_source=cfg.extractor.mask_source, precision=cfg.precision,
                                  first_frame_passes=cfg.first_frame_passes)
    return VecTransposeImage(venv) if obs == "pixels" else venv


def make_single_env(cfg: AgentConfig, obs: str, perception: SlotContrast | None = None) -> gym.Env:
    """One env with the observations of ``make_vec_env`` (for recording an episode)."""
    env = make_env(cfg.env_id, obs, cfg.env_kwargs, cfg.state_policy == "mlp")
    if obs == "slots":
        env = SlotObservation(env, checkpoint=perception, include_masks=cfg.extractor.use_masks,
                              mask_source=cfg.extractor.mask_source, precision=cfg.precision,
                              first_frame_passes=cfg.first_frame_passes)
    return env
