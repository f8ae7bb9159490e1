"""Evaluating agents: success rate over seeded episodes, a random-policy reference, one episode as a video."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.type_aliases import PolicyPredictor
from stable_baselines3.common.vec_env import VecEnv

from oc_perception import io
from oc_perception.inference import render_panels, run_inference
from oc_perception.model.slotcontrast import SlotContrast


class RandomAgent:
    """Uniformly random actions, with the ``predict`` interface of SB3 policies (for ``evaluate_policy``)."""

    def __init__(self, action_space: gym.Space, num_envs: int, seed: int | None = None) -> None:
        self.action_space = copy.deepcopy(action_space)  # seeding must not touch the env's own space
        self.action_space.seed(seed)
        self.num_envs = num_envs

    def predict(self, observation: Any, state: Any = None, episode_start: np.ndarray | None = None,
                deterministic: bool = False) -> tuple[np.ndarray, None]:
        """Actions ``[num_envs, ...]``; the observation is ignored."""
        return np.stack([self.action_space.sample() for _ in range(self.num_envs)]), None


def success_rate(agent: PolicyPredictor, venv: VecEnv, episodes: int, seed: int, deterministic: bool = True) -> float:
    """Fraction of ``episodes`` episodes ending with ``info["is_success"]``, the envs seeded ``seed + i``.

    The scenes depend only on the seeds (the envs draw randomness at reset only), so agents evaluated with the
    same ``venv`` configuration and ``seed`` face the same episodes.
    """
    successes: list[bool] = []

    def record(local_vars: dict[str, Any], _: dict[str, Any]) -> None:
        if local_vars["done"]:
            successes.append(bool(local_vars["info"].get("is_success", False)))

    venv.seed(seed)
    evaluate_policy(agent, venv, n_eval_episodes=episodes, deterministic=deterministic, callback=record)
    return float(np.mean(successes))


def record_episode(agent: PolicyPredictor, env: gym.Env, path: str | Path, seed: int, deterministic: bool = True,
                   perception: SlotContrast | None = None) -> Path:
    """Run one episode and write it as a video; returns its path.

    The video shows [frame | slot-colour overlay | per-slot panels] when a ``perception`` model is given (it runs
    again over the episode's frames: same slots as in the env loop), else the frames alone.
    """
    obs, _ = env.reset(seed=seed)
    frames = [env.render()]
    done = False
    while not done:
        action, _ = agent.predict(obs, deterministic=deterministic)
        obs, _, terminated, truncated, _ = env.step(action)
        frames.append(env.render())
        done = terminated or truncated
    video = np.stack(frames)  # uint8 [T, H, W, 3]
    if perception is not None:
        masks = torch.cat([chunk.masks for chunk in run_inference(perception, frames)])  # [T, K, P]
        video = render_panels(video, masks, video.shape[1:3])
    fps = env.metadata.get("render_fps", 10)
    return io.write_video(path, video, fps=fps)
