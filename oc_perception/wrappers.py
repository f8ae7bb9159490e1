"""Slot observations: a SlotContrast model in the env loop, with one recurrent slot state per (sub-)env.

Two Gymnasium wrappers on one engine (:class:`oc_perception.engine.SlotEncoder`, which owns the model, the
recurrent state, batching and the observation space):

- :class:`SlotObservation`: a Gymnasium wrapper for one env.
- :class:`VectorSlotObservation`: a ``gymnasium.vector`` wrapper (``SyncVectorEnv``/``AsyncVectorEnv``, autoreset
  modes ``NEXT_STEP`` and ``SAME_STEP``).

The Stable-Baselines3 ``VecEnvWrapper`` on the same engine is :class:`oc_perception.sb3.VecSlotObservation`.

Every step runs the model once, on a batch of all sub-envs' frames (plus the final frames of episodes that ended
in that step, for the terminal observations). The first frame of an episode starts from the learned initial slots
(3 slot-attention iterations), later frames from the slots the model predicted at the previous frame (2
iterations); the model's ``step`` picks per row from ``SlotState.is_first``.

Observation space: that of the engine (:mod:`oc_perception.engine`).

Frames: the observation when it is an RGB image (``Box`` of uint8 ``[H, W, 3]``), else ``render()``, which needs
the env made with ``render_mode="rgb_array"``. Any size works: ``model.preprocess`` resizes to the model's input.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper
from gymnasium.vector.utils import batch_space

from oc_perception.checkpoint import DEFAULT_CHECKPOINTS
from oc_perception.devices import Precision
from oc_perception.engine import (Checkpoint, MaskSource, SlotEncoder, SlotObs, check_frames, frames_from_observations,
                                  is_rgb_space, select_obs)
from oc_perception.model.slotcontrast import SlotContrast

__all__ = ["SlotObservation", "VectorSlotObservation", "make"]


# ---------------------------------------------------------------------------------------------------- model
def _registered_id(env: gym.Env) -> str | None:
    """The id of one of our envs with a bundled checkpoint, from ``env.spec`` or the registry.

    ``gym.make`` sets ``env.spec`` only after the entry point returns, so a wrapper listed in
    ``gym.make(id, wrappers=[...])`` sees no spec: then the env class is matched against our ids' entry points
    (``envs.registration`` registers ``functools.partial(_make, EnvClass)``). Ids sharing a class share a checkpoint.
    """
    if env.spec is not None:
        return env.spec.id
    cls = type(env.unwrapped)
    for env_id in DEFAULT_CHECKPOINTS:
        entry = gym.registry[env_id].entry_point if env_id in gym.registry else None
        if entry is cls or (isinstance(entry, functools.partial) and cls in entry.args):
            return env_id
    return None


def _is_sb3_vec_env(env: Any) -> bool:
    # Without importing SB3 (the library does not need it): an SB3 VecEnv exists only once SB3 is imported.
    vec_env = sys.modules.get("stable_baselines3.common.vec_env")
    return vec_env is not None and isinstance(env, vec_env.VecEnv)


def _record_args(wrapper: gym.utils.RecordConstructorArgs, checkpoint: Checkpoint, **kwargs: Any) -> None:
    # A loaded model is recorded by reference (no deepcopy of its weights): gym.make(env.spec) then shares it.
    gym.utils.RecordConstructorArgs.__init__(wrapper, checkpoint=checkpoint, **kwargs,
                                             _disable_deepcopy=isinstance(checkpoint, SlotContrast))


# ---------------------------------------------------------------------------------------------------- wrappers
class SlotObservation(gym.ObservationWrapper[SlotObs, Any, Any], gym.utils.RecordConstructorArgs):
    """Replace an env's observations by SlotContrast slots, keeping the slots' recurrent state across steps.

    Observation space: ``Box(-inf, inf, (K, D), float32)``; with ``include_masks=True``
    ``Dict(slots=Box(-inf, inf, (K, D), float32), masks=Box(0, 1, (K, g, g), float32))``. ``reset()`` restarts the
    state; each step feeds the frame (the observation if it is a uint8 RGB ``[H, W, 3]`` image, else
    ``env.render()``) to the model. A model with random initial slots (``model.initializer: random``) starts
    every episode from the same fixed draw of its slot distribution (``SlotContrast.first_slots``), so the slots
    are a function of the frames alone: reproducible for any reset seed, and equal for equal episodes.

    Args:
        env: the env; image observations, or ``render_mode="rgb_array"``.
        checkpoint: path to one of our checkpoints, a loaded ``SlotContrast``, or None for the bundled checkpoint
            of our env ids (``default_checkpoint(env.spec.id)``). A model is recorded by reference in the env
            spec, so ``gym.make(env.spec)`` shares it, but the spec is then not JSON-serialisable: pass a path
            for that.
        device: model and state device; default CUDA when available, else CPU (a given model: its device).
        include_masks: add the masks: the decoder's (it then runs every step, which costs more than a small
            backbone on CPU), or with ``mask_source="attention"`` slot attention's (no extra cost).
        mask_source: ``"decoder"`` or ``"attention"`` (see the module docstring).
        precision: ``"fp32"`` or ``"bf16"`` (bfloat16 autocast, on GPU or CPU: ``oc_perception.devices``).
        compile: ``torch.compile`` the model's step.
        first_frame_passes: passes over an episode's first frame before the slots go on to the next one (an int
            >= 1; None: the checkpoint's setting, 1 in the bundled models). 3 or more keep more objects in the
            slot of their first frame (docs/wrappers.md#identity); the weights do not depend on it.

    Raises:
        ValueError: the env gives no RGB frames, or a bad option (the message names the fix).
    """

    def __init__(self, env: gym.Env, checkpoint: Checkpoint = None, device: str | torch.device | None = None,
                 include_masks: bool = False, precision: Precision = "fp32", compile: bool = False,
                 mask_source: MaskSource = "decoder", first_frame_passes: int | None = None) -> None:
        _record_args(self, checkpoint, device=device, include_masks=include_masks, precision=precision, compile=compile,
                     mask_source=mask_source, first_frame_passes=first_frame_passes)
        gym.ObservationWrapper.__init__(self, env)
        self._frames_from_obs = frames_from_observations(env.observation_space, env.render_mode)
        self.encoder = SlotEncoder(checkpoint, device, include_masks, precision, compile, env_id=_registered_id(env),
                                   mask_source=mask_source, first_frame_passes=first_frame_passes)
        self.observation_space = self.encoder.observation_space

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[SlotObs, dict]:
        self.encoder.reset(1)
        return super().reset(seed=seed, options=options)

    def observation(self, observation: Any) -> SlotObs:
        frame = observation if self._frames_from_obs else self.env.render()
        source = "the observation" if self._frames_from_obs else "env.render()"
        obs, _ = self.encoder.encode(check_frames(frame[None] if isinstance(frame, np.ndarray) else [frame], source))
        return select_obs(obs, 0)


class VectorSlotObservation(VectorWrapper):
    """Slot observations for a ``gymnasium.vector`` env: one batched model forward per step for all sub-envs.

    ``single_observation_space`` is the space of :class:`SlotObservation`; ``observation_space`` batches it. A
    sub-env's state restarts with its episode, under the vector env's ``metadata["autoreset_mode"]``:

    - ``NEXT_STEP``: the step after an episode's end returns the reset frame, which starts a new state.
    - ``SAME_STEP``: the step that ends an episode returns the reset frame (new state) and puts the final
      observation in ``infos["final_obs"][i]``; that one becomes the slots of the final frame, encoded with the
      episode's state, as extra rows of the same forward. With frames from ``render()`` (image-less
      observations) the final frame is gone after the auto-reset: ``final_obs[i]`` is then None (a warning
      says so); wrap the sub-envs in ``gymnasium.wrappers.AddRenderObservation(render_only=True)`` to keep it.

    Frames: the batched observation if the sub-envs' observations are RGB images, else ``env.call("render")``.
    Arguments as :class:`SlotObservation`; ``checkpoint=None`` uses the vector env's spec id.

    Raises:
        ValueError: no RGB frames, or ``AutoresetMode.DISABLED`` / partial resets (``options["reset_mask"]``),
            which are not supported.
    """

    def __init__(self, env: VectorEnv, checkpoint: Checkpoint = None, device: str | torch.device | None = None,
                 include_masks: bool = False, precision: Precision = "fp32", compile: bool = False,
                 mask_source: MaskSource = "decoder", first_frame_passes: int | None = None) -> None:
        if _is_sb3_vec_env(env):
            raise TypeError("VectorSlotObservation wraps a gymnasium.vector env; this is a Stable-Baselines3 VecEnv: "
                            "use VecSlotObservation")
        if not isinstance(env, VectorEnv):
            raise TypeError(f"VectorSlotObservation wraps a gymnasium.vector env, got {type(env).__name__}; "
                            "for a single env use SlotObservation")
        super().__init__(env)
        self.autoreset_mode = AutoresetMode(env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP))
        if self.autoreset_mode == AutoresetMode.DISABLED:
            raise ValueError("VectorSlotObservation supports AutoresetMode.NEXT_STEP and SAME_STEP, not DISABLED")
        self._frames_from_obs = frames_from_observations(env.single_observation_space, env.render_mode)
        if not self._frames_from_obs and self.autoreset_mode == AutoresetMode.SAME_STEP:
            warnings.warn("frames come from render(), which shows the reset frame after a same-step auto-reset: "
                          'infos["final_obs"] will hold None', stacklevel=2)
        spec = env.spec or env.get_attr("spec")[0]
        self.encoder = SlotEncoder(checkpoint, device, include_masks, precision, compile,
                                   env_id=spec.id if spec is not None else None, mask_source=mask_source,
                                   first_frame_passes=first_frame_passes)
        self.single_observation_space = self.encoder.observation_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)  # NEXT_STEP: sub-envs the next step resets

    def _frames(self, observations: Any) -> np.ndarray:
        if self._frames_from_obs:
            return check_frames(observations, "the observations")
        return check_frames(self.env.call("render"), 'env.call("render")')

    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[SlotObs, dict[str, Any]]:
        if options and "reset_mask" in options:
            raise ValueError("VectorSlotObservation does not support partial resets (options['reset_mask'])")
        observations, infos = self.env.reset(seed=seed, options=options)
        self.encoder.reset(self.num_envs)
        self._autoreset[:] = False
        obs, _ = self.encoder.encode(self._frames(observations))
        return obs, infos

    def step(self, actions: Any) -> tuple[SlotObs, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if len(actions) != self.num_envs:
            raise ValueError(f"got {len(actions)} actions for {self.num_envs} sub-envs; pass one action per "
                             "sub-env (batched as env.action_space.sample() gives them)")
        observations, rewards, terminations, truncations, infos = self.env.step(actions)
        frames = self._frames(observations)
        ended = np.logical_or(terminations, truncations)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            obs, _ = self.encoder.encode(frames, starts=self._autoreset)
            self._autoreset = ended
            return obs, rewards, terminations, truncations, infos
        rows = np.flatnonzero(ended)
        if not self._frames_from_obs:
            obs, final = self.encoder.encode(frames, starts=ended)
        else:
            final_frames = check_frames(list(infos["final_obs"][rows]), 'infos["final_obs"]') if rows.size else None
            obs, final = self.encoder.encode(frames, starts=ended, final_rows=rows, final_frames=final_frames)
        if rows.size:
            final_obs = np.full(self.num_envs, None, dtype=object)
            for j, i in enumerate(rows):
                final_obs[i] = None if final is None else select_obs(final, j)
            infos = {**infos, "final_obs": final_obs}
        return obs, rewards, terminations, truncations, infos


# ---------------------------------------------------------------------------------------------------- make
EnvWrapper = Callable[[gym.Env], gym.Env]
"""A wrapper class (called with the env) or any callable ``env -> env``."""


def make(env_id: str, wrappers: Sequence[EnvWrapper] = (), **kwargs: Any) -> gym.Env:
    """``gym.make(env_id, **kwargs)`` with RGB frames for slot observations, then ``wrappers`` in order.

    When the env's observations are not RGB images and no ``render_mode`` is given, the env is made with
    ``render_mode="rgb_array"`` (so :class:`SlotObservation` can render frames). The wrappers go outside
    Gymnasium's own (``TimeLimit`` included, so wrappers see truncations), unlike
    ``gym.make("oc/...", wrappers=[...])``, whose entry point applies them inside.

    Example::

        env = oc_perception.make("CartPole-v1", wrappers=[partial(SlotObservation, checkpoint="model.safetensors")])
    """
    env = gym.make(env_id, **kwargs)
    if "render_mode" not in kwargs and env.render_mode is None and not is_rgb_space(env.observation_space):
        env.close()
        env = gym.make(env_id, render_mode="rgb_array", **kwargs)
    for wrapper in wrappers:
        env = wrapper(env)
        if not isinstance(env, gym.Env):
            raise TypeError(f"wrapper {wrapper!r} returned {type(env).__name__}, not a gymnasium.Env")
    return env
