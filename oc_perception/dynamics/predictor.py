"""Run-time slot prediction for one stream (an env): a rolling history in, the next H frames' slots out.

    predictor = DynamicsPredictor("runs/dynamics_shapes_push/model.safetensors", horizon=10)
    predictor.reset()                                   # at every episode start
    predicted = predictor.update(slots)                 # first frame: slots [K, D] -> [H, K, D]
    predicted = predictor.update(slots, action)         # later frames, with the action that led to them

The actions after the current frame are not known yet (the policy picks them from the prediction, if at all), so
by default the rollout assumes the last action taken is repeated; pass ``future_actions`` to plan with others.
"""

from __future__ import annotations

import warnings
from collections import deque
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from oc_perception.dynamics.model import SlotDynamics, load_dynamics, read_dynamics_metadata


class DynamicsPredictor:
    """Keeps the last ``history`` frames' slots and actions of one stream and rolls the dynamics model out.

    Args:
        dynamics: a ``SlotDynamics`` (used as it is) or the path of one (``save_dynamics``).
        horizon: H, the frames predicted by each ``update``.
        device: where a loaded model runs (default: CPU; a given model stays where it is).
    """

    def __init__(self, dynamics: SlotDynamics | str | Path, horizon: int = 10,
                 device: str | torch.device | None = None) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.model = dynamics if isinstance(dynamics, SlotDynamics) else load_dynamics(dynamics, device or "cpu")
        self.horizon = horizon
        self.device = next(self.model.parameters()).device
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next ``update`` is an episode's first frame."""
        self._slots: deque[torch.Tensor] = deque(maxlen=self.model.history)
        self._actions: deque[torch.Tensor] = deque(maxlen=self.model.history)  # the action after each frame

    def _action(self, action: Any) -> torch.Tensor:
        """An env action -> float [A] (discrete actions one-hot); None -> zeros, the "unknown action"."""
        a = self.model.action_dim
        if action is None:
            return torch.zeros(a, device=self.device)
        action = torch.as_tensor(np.asarray(action), device=self.device)
        if action.dtype.is_floating_point:
            return self.model.encode_actions(action.reshape(1, 1, -1).float(), 1, 1)[0, 0]
        return self.model.encode_actions(action.reshape(1, 1), 1, 1)[0, 0]

    @torch.inference_mode()
    def update(self, slots: np.ndarray | torch.Tensor | dict[str, np.ndarray], action: Any = None,
               future_actions: Any = None) -> np.ndarray:
        """Add the newest frame's slots and predict the next ``horizon`` frames.

        Args:
            slots: [K, D], the slots of the frame just observed, or a slot observation ``{"slots": [K, D], ...}``.
            action: the action taken before this frame (the one that led to it); None at an episode's first frame.
                Ignored by a model without actions.
            future_actions: H actions, the one after this frame and after each predicted frame but the last
                (a sequence, or an array [H] / [H, A]); default: ``action`` repeated (at an episode's first frame,
                "unknown").

        Returns:
            float32 [H, K, D] numpy array, the predicted slots of the next H frames.
        """
        slots = slots["slots"] if isinstance(slots, dict) else slots
        slots = torch.as_tensor(np.asarray(slots), dtype=torch.float32, device=self.device)
        if slots.ndim != 2 or slots.shape[-1] != self.model.slot_dim:
            raise ValueError(f"slots: expected one frame [K, D] with D={self.model.slot_dim}, got {tuple(slots.shape)}")
        actions = None
        if self.model.action_dim:
            current = self._action(action)
            if self._actions:
                self._actions[-1] = current  # the action after the previous frame is now known
            if future_actions is None:
                future = [current] * self.horizon
            else:
                future = [self._action(a) for a in future_actions]
                if len(future) != self.horizon:
                    raise ValueError(f"future_actions: expected {self.horizon} actions, got {len(future)}")
            self._actions.append(future[0])
            actions = torch.stack([*self._actions, *future[1:]])[None]  # [1, T + H - 1, A]
        self._slots.append(slots)
        history = torch.stack(list(self._slots))[None]  # [1, T, K, D]
        return self.model.rollout(history, actions, self.horizon)[0].float().cpu().numpy()


def check_env_fits(model: SlotDynamics, env: gym.Env, meta: dict[str, str], name: str | None) -> None:
    """Refuse an env whose slots or actions the dynamics model cannot take, and warn when the model was trained on
    another env (``meta``: its file's metadata; ``name``: its file, None for a model given as an object). Messages
    name both.

    Raises:
        ValueError: the slot size differs from the model's, or the env's actions cannot be the model's (a
            continuous action of another size, more discrete actions than the model knows, or the other kind).
    """
    trained = f" (trained on {meta['env']})" if "env" in meta else ""
    name = f" {name}" if name else ""
    env_id = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
    space = env.observation_space
    slots = space["slots"] if isinstance(space, gym.spaces.Dict) and "slots" in space.spaces else space
    if not isinstance(slots, gym.spaces.Box) or len(slots.shape) != 2 or slots.shape[-1] != model.slot_dim:
        raise ValueError(f"the dynamics model{name}{trained} predicts slots [K, {model.slot_dim}], but {env_id} "
                         f"observes {slots}: wrap the env in SlotObservation with the perception model the dynamics "
                         "model was trained on")
    actions = env.action_space
    fits = (not model.action_dim  # (fewer discrete actions than the model's one-hot: they still encode)
            or (isinstance(actions, gym.spaces.Discrete) and actions.n <= model.action_dim)
            or (isinstance(actions, gym.spaces.Box) and actions.shape == (model.action_dim,)))
    if not fits:
        raise ValueError(f"the dynamics model{name}{trained} takes actions of size {model.action_dim}, but "
                         f"{env_id} acts with {actions}: pass a dynamics model trained on {env_id}")
    if "env" in meta and env.spec is not None and meta["env"] != env.spec.id:
        warnings.warn(f"the dynamics model{name} was trained on {meta['env']}, but the env is {env.spec.id}: its "
                      f"predictions may mean little here; pass one trained on {env.spec.id}", stacklevel=3)


class SlotPrediction(gym.Wrapper[Any, Any, Any, Any], gym.utils.RecordConstructorArgs):
    """Add ``info["predicted_slots"]`` [horizon, K, D] to every reset and step: the slots of the next ``horizon``
    frames, rolled out by a slot dynamics model from the slots seen so far (the last action assumed repeated).

    Apply it outside ``SlotObservation``: ``SlotPrediction(SlotObservation(env), "dynamics.safetensors")``.

    Args:
        env: an env whose observations are slots ``[K, D]`` (or a dict with ``"slots"``).
        dynamics: a ``SlotDynamics`` or its file.
        horizon: frames predicted.
        device: where a loaded dynamics model runs (default CPU; a given model stays where it is).

    Raises:
        ValueError: the env's slots or actions do not fit the model (a warning, when they fit but the model's file
            says it was trained on another env).
    """

    def __init__(self, env: gym.Env, dynamics: SlotDynamics | str | Path, horizon: int = 10,
                 device: str | torch.device | None = None) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, dynamics=dynamics, horizon=horizon, device=device)
        gym.Wrapper.__init__(self, env)
        self.predictor = DynamicsPredictor(dynamics, horizon, device)
        loaded = not isinstance(dynamics, SlotDynamics)
        check_env_fits(self.predictor.model, env, read_dynamics_metadata(dynamics) if loaded else {},
                       str(dynamics) if loaded else None)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        self.predictor.reset()
        return obs, {**info, "predicted_slots": self.predictor.update(obs)}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, {**info, "predicted_slots": self.predictor.update(obs, action)}
