"""Gymnasium registration: one generic entry-point factory that applies user wrappers.

``gym.make("oc/ShapesPush-v0", wrappers=[A, b])`` builds the raw env, then ``A(env)``, then ``b(A(env))``.
Gymnasium adds its own wrappers (``PassiveEnvChecker``, ``OrderEnforcing``, ``TimeLimit``) *outside* what the
entry point returns, so the listed wrappers wrap the raw env and sit inside ``TimeLimit``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym

from .panda import PandaPushEnv
from .shapes import ShapesOddOneOutEnv, ShapesPushEnv, ShapesReachEnv

EnvWrapper = Callable[[gym.Env], gym.Env]
"""A wrapper class (called with the env) or any callable ``env -> env``."""

MAX_EPISODE_STEPS = 100
ENV_CLASSES: dict[str, type[gym.Env]] = {
    "oc/ShapesReach-v0": ShapesReachEnv,
    "oc/ShapesPush-v0": ShapesPushEnv,
    "oc/ShapesOddOneOut-v0": ShapesOddOneOutEnv,
    "oc/PandaPush-v0": PandaPushEnv,
}
ENV_IDS: tuple[str, ...] = tuple(ENV_CLASSES)


def _make(env_cls: type[gym.Env], wrappers: Sequence[EnvWrapper] = (), **kwargs: Any) -> gym.Env:
    env = env_cls(**kwargs)
    for wrapper in wrappers:
        env = wrapper(env)
        if not isinstance(env, gym.Env):
            raise TypeError(f"wrapper {wrapper!r} returned {type(env).__name__}, not a gymnasium.Env")
    return env


def make_with_wrappers(env_cls: type[gym.Env]) -> Callable[..., gym.Env]:
    """Entry point that builds ``env_cls(**kwargs)`` and applies ``wrappers=[...]`` in order.

    A ``functools.partial`` of a module-level function, so it pickles (subprocess vector envs).
    """
    return functools.partial(_make, env_cls)


def register_envs() -> None:
    """Register every id in ``ENV_IDS`` with a ``TimeLimit`` of 100 steps (idempotent)."""
    for env_id, env_cls in ENV_CLASSES.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=make_with_wrappers(env_cls), max_episode_steps=MAX_EPISODE_STEPS)
