"""The privileged state baseline: ground-truth object states as the observation."""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from . import envs_package


class ObjectStateObservation(gym.Wrapper[np.ndarray, Any, Any, Any], gym.utils.RecordConstructorArgs):
    """Replace the observation by ``info["object_states"]`` ``[M, S]``: flattened, or as a set of rows.

    Observation space, ``flatten=True``: ``Box(-inf, inf, (M * S,), float32)`` with ``M = 1 + num_objects[1]``
    rows (agent first, zero rows for absent objects), for a flat MLP. ``flatten=False``: ``Box(-inf, inf, (R, S),
    float32)`` with ``R = 1 + env.max_objects`` rows (the same, padded with zero rows to the most objects the env
    class can hold), for a set policy such as ``agents.extractor.SlotSetExtractor``: every scene of the env,
    whatever its ``num_objects``, has this space, so a policy trained on 3 objects can be evaluated with 6. ``S``
    columns are ``object_state_names``; for the Shapes envs they include ``is_target``, so this baseline is told
    which object matters. A ``gym.Wrapper`` rather than an ``ObservationWrapper``: the states are in ``info``,
    which ``ObservationWrapper.observation`` never sees.

    Raises:
        TypeError: the env is not one of ours (an ``envs.ObjectCentricEnv``), which alone give ``object_states``.
    """

    def __init__(self, env: gym.Env, flatten: bool = True) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, flatten=flatten)
        super().__init__(env)
        base = env.unwrapped
        if not isinstance(base, envs_package.ObjectCentricEnv):
            raise TypeError(f"ObjectStateObservation needs one of the envs in `envs`, got {type(base).__name__}")
        self.flatten = flatten
        columns = len(base.object_state_names)
        self._rows = base.num_objects[1] + 1 if flatten else base.max_objects + 1
        shape = (self._rows * columns,) if flatten else (self._rows, columns)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape, np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        _, info = self.env.reset(seed=seed, options=options)
        return self._state(info), info

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        _, reward, terminated, truncated, info = self.env.step(action)
        return self._state(info), reward, terminated, truncated, info

    def _state(self, info: dict[str, Any]) -> np.ndarray:
        states = np.asarray(info["object_states"], dtype=np.float32)  # [1 + num_objects[1], S]
        if self.flatten:
            return states.reshape(-1)
        return np.pad(states, ((0, self._rows - len(states)), (0, 0)))
