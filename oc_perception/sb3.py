"""Stable-Baselines3 side of the slot observations: :class:`VecSlotObservation` for SB3 vector envs, and
:func:`make_slot_vec_env`, which builds one from an env id for any env:

    venv = make_slot_vec_env("minigrid:MiniGrid-Dynamic-Obstacles-8x8-v0", n_envs=8, checkpoint="model.safetensors")

Kept apart so ``import oc_perception`` does not import Stable-Baselines3; ``from oc_perception import
VecSlotObservation`` imports it on first use.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv
from gymnasium.wrappers import AddRenderObservation
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from oc_perception.devices import Precision
from oc_perception.engine import (Checkpoint, MaskSource, SlotEncoder, SlotObs, check_frames, frames_from_observations,
                                  is_rgb_space, select_obs)
from oc_perception.wrappers import make


class VecSlotObservation(VecEnvWrapper):
    """Slot observations for a Stable-Baselines3 ``VecEnv``: one batched model forward per step for all envs.

    SB3 resets a finished env inside ``step``: the observation it returns is the reset frame (a new state) and
    ``infos[i]["terminal_observation"]`` holds the final observation, which becomes the slots of the final frame
    encoded with the episode's state, as extra rows of the same forward. Frames come from the observations when
    they are RGB images (wrap before ``VecTransposeImage``), else from ``venv.get_images()``; the final frame is
    then gone after the auto-reset, and ``terminal_observation`` is None (SB3 algorithms then skip bootstrapping
    from it; a warning says so); wrap the envs in ``gymnasium.wrappers.AddRenderObservation(render_only=True)``
    to keep it.

    Arguments as :class:`SlotObservation`; ``checkpoint=None`` uses the first env's spec id.
    """

    def __init__(self, venv: VecEnv, checkpoint: Checkpoint = None, device: str | torch.device | None = None,
                 include_masks: bool = False, precision: Precision = "fp32", compile: bool = False,
                 mask_source: MaskSource = "decoder", first_frame_passes: int | None = None) -> None:
        if isinstance(venv, VectorEnv):
            raise TypeError("VecSlotObservation wraps a Stable-Baselines3 VecEnv; this is a gymnasium.vector env: "
                            "use VectorSlotObservation")
        if not isinstance(venv, VecEnv):
            raise TypeError(f"VecSlotObservation wraps a Stable-Baselines3 VecEnv, got {type(venv).__name__}; "
                            "for a single env use SlotObservation")
        self._frames_from_obs = frames_from_observations(venv.observation_space, venv.render_mode)
        if not self._frames_from_obs:
            warnings.warn("frames come from get_images(), which shows the reset frame after SB3's auto-reset: "
                          'infos[i]["terminal_observation"] will be None', stacklevel=2)
        spec = venv.get_attr("spec", indices=[0])[0]
        self.encoder = SlotEncoder(checkpoint, device, include_masks, precision, compile,
                                   env_id=spec.id if spec is not None else None, mask_source=mask_source,
                                   first_frame_passes=first_frame_passes)
        super().__init__(venv, observation_space=self.encoder.observation_space)

    def _frames(self, observations: VecEnvObs) -> np.ndarray:
        if self._frames_from_obs:
            return check_frames(observations, "the observations")
        return check_frames(self.venv.get_images(), "venv.get_images()")

    def reset(self) -> SlotObs:
        observations = self.venv.reset()
        self.encoder.reset(self.num_envs)
        obs, _ = self.encoder.encode(self._frames(observations))
        return obs

    def step_wait(self) -> VecEnvStepReturn:
        observations, rewards, dones, infos = self.venv.step_wait()
        frames = self._frames(observations)
        rows = np.flatnonzero(dones)
        if self._frames_from_obs and rows.size:
            final_frames = check_frames([infos[i]["terminal_observation"] for i in rows], "terminal_observation")
            obs, final = self.encoder.encode(frames, starts=dones, final_rows=rows, final_frames=final_frames)
        else:
            obs, final = self.encoder.encode(frames, starts=dones)
        for j, i in enumerate(rows):
            infos[i]["terminal_observation"] = None if final is None else select_obs(final, j)
        return obs, rewards, dones, infos


def frames_as_observations(env: gym.Env) -> gym.Env:
    """``env`` with its RGB frames as observations: as it is when they already are, else
    ``AddRenderObservation(env, render_only=True)`` (the env must render ``rgb_array``)."""
    return env if is_rgb_space(env.observation_space) else AddRenderObservation(env, render_only=True)


def make_slot_vec_env(env_id: str, n_envs: int = 1, checkpoint: Checkpoint = None, *, seed: int | None = None,
                      env_kwargs: dict[str, Any] | None = None, vec_env_cls: type[VecEnv] | None = None,
                      **slot_kwargs: Any) -> VecSlotObservation:
    """An SB3 vector env of ``n_envs`` copies of ``env_id`` with slot observations ``[n_envs, K, D]``.

    Stable-Baselines3's ``make_vec_env`` (a ``Monitor`` per sub-env, seeds ``seed + i``, ``DummyVecEnv`` unless
    ``vec_env_cls``) on :func:`oc_perception.make` ``(env_id, **env_kwargs)``, whose sub-envs observe their RGB
    frames (:func:`frames_as_observations`), then :class:`VecSlotObservation` with ``checkpoint`` and
    ``slot_kwargs``. The slots need only the frames, and the env's own observation is dropped: SB3 cannot
    buffer every observation (MiniGrid's has a text ``mission``, which stops ``DummyVecEnv``), and frames as
    observations keep ``terminal_observation``.
    """
    venv = make_vec_env(functools.partial(make, env_id), n_envs, seed=seed, env_kwargs=env_kwargs,
                        wrapper_class=frames_as_observations, vec_env_cls=vec_env_cls)
    return VecSlotObservation(venv, checkpoint, **slot_kwargs)
