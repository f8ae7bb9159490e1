"""What every environment shares: spaces, action handling, reward/termination, the ``info`` dict.

Subclasses build and simulate a scene through five hooks (``_reset_scene``, ``_simulate``, ``_draw``,
``_object_states``, ``_is_success``) and describe it to scripted policies through ``planar_state``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np

ACTION_MEANINGS: tuple[str, ...] = ("noop", "up", "down", "left", "right")
DIRECTIONS = np.array([[0, 0], [0, -1], [0, 1], [-1, 0], [1, 0]], dtype=np.float32)
"""Unit move of each discrete action in the action plane (first axis: image right, second: image down)."""


@dataclass(frozen=True)
class PlanarState:
    """Privileged scene state in the action plane, for scripted policies.

    Plane coordinates are in the env's length unit (2D: world units, 1 unit = 1 pixel at 64 px; Panda: metres),
    first axis pointing right in the image and second axis down, like the actions.
    """

    agent: np.ndarray
    """[2] position of the agent (2D disc or the robot's end effector)."""
    agent_radius: float
    objects: np.ndarray
    """[N, 2] positions of the objects (agent excluded), in ``object_states`` row order (rows 1..N)."""
    radii: np.ndarray
    """[N] radius of each object's bounding circle."""
    target: int
    """Index into ``objects`` of the object the task is about."""
    goal: np.ndarray | None
    """[2] centre of the goal zone, ``None`` for tasks without one."""
    goal_radius: float
    step_size: float
    """Distance the agent moves in one step under a full action on one axis."""
    bounds: np.ndarray
    """[2, 2] lowest and highest agent position the walls or the workspace allow."""


def resolve_count(num_objects: int | Sequence[int], low: int, high: int) -> tuple[int, int]:
    """``(min, max)`` inclusive object count from an int or a ``(min, max)`` pair, checked against ``[low, high]``.

    Raises:
        ValueError: when the count (or range) is not within ``[low, high]``; the message gives the allowed range.
    """
    pair = (num_objects, num_objects) if isinstance(num_objects, (int, np.integer)) else tuple(num_objects)
    if len(pair) != 2 or not all(isinstance(n, (int, np.integer)) for n in pair):
        raise ValueError(f"num_objects must be an int or a (min, max) pair of ints, got {num_objects!r}")
    lo, hi = int(pair[0]), int(pair[1])
    if not low <= lo <= hi <= high:
        raise ValueError(f"num_objects={num_objects!r} is out of range; allowed values: {low} to {high} (min <= max)")
    return lo, hi


SCENE_ATTEMPTS = 20
"""Scenes ``reset`` draws before giving up when objects cannot be placed without overlap."""


class PlacementError(RuntimeError):
    """No free position for one more object: the layout drawn so far left no room for it."""


def sample_free_position(rng: np.random.Generator, low: np.ndarray | float, high: np.ndarray | float, radius: float,
                         placed: list[tuple[np.ndarray, float]], gap: float) -> np.ndarray:
    """Uniform position [2] in ``[low, high]`` whose disc of ``radius`` keeps ``gap`` from every placed disc
    ``(centre, radius)``, by rejection sampling; ``PlacementError`` when no free position turns up."""
    for _ in range(10_000):
        p = rng.uniform(low, high, size=2)
        if all(np.linalg.norm(p - q) > radius + r + gap for q, r in placed):
            return p
    raise PlacementError(f"no free position for an object of radius {radius:g} beside {len(placed)} placed ones")


class ObjectCentricEnv(gym.Env[np.ndarray, Any]):
    """Base environment: RGB observation, ground-truth segmentation and per-object state in ``info``.

    Observation: ``Box(0, 255, (H, W, 3), uint8)``, the rendered frame (``render()`` returns the same frame).
    Actions: ``Discrete(5)`` (noop, up, down, left, right, in image directions) or, with ``continuous=True``,
    ``Box(-1, 1, (2,), float32)`` (image right, image down; a fraction of the top speed per axis). Continuous
    actions outside the box are clipped; malformed actions (wrong shape, NaN, discrete ids outside 0..4, floats
    for a discrete space) raise ``ValueError``.
    Reward: 1.0 on the step the task succeeds, else 0.0; the episode terminates on success. With
    ``reward_shaping=True`` each step also gets ``phi(s') - phi(s)``, potential-based shaping (Ng et al., 1999: the
    optimal policies stay the same) with ``phi = -(|agent - target| + |target - goal|) / arena side`` (the goal
    term for tasks with a goal zone): a dense signal for sparse tasks such as Push. ``info["is_success"]`` is
    unchanged.
    ``info`` after ``reset`` and every ``step``:

    - ``"segmentation"``: int32 [H, W], 0 = background, the agent/robot is id 1, objects 2..N+1.
    - ``"object_states"``: float32 [M, S] with ``M = 1 + num_objects[1]`` (the most objects a scene can have):
      row ``i`` describes id ``object_ids[i]`` (agent first); columns are named in ``object_state_names``.
      Rows past the scene's N + 1 bodies are zeros with id 0: the shapes stay fixed, so vector envs can stack
      the infos of scenes with different object counts.
    - ``"object_ids"``: int32 [M], ``1..N+1`` then zeros, constant over the episode (an id may be missing from
      the segmentation when the object is hidden or out of view, in 3D scenes).
    - ``"is_success"``: bool.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 10}
    success_rule: ClassVar[Literal["touch", "in_goal"]]
    """``"touch"``: the agent touches the target; ``"in_goal"``: the target's centre is inside the goal zone."""
    object_state_names: ClassVar[tuple[str, ...]]
    max_objects: ClassVar[int]
    """The most objects (agent excluded) any scene of this env class can hold, whatever ``num_objects``."""
    num_objects: tuple[int, int]
    """Inclusive range of the number of objects per scene (agent excluded), set by subclasses."""
    step_size: float
    """Distance moved in one step under a full action on one axis, in the env's length unit."""

    def __init__(self, *, image_size: int, continuous: bool, max_episode_steps: int | None,
                 render_mode: str | None, reward_shaping: bool = False) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"unknown render_mode {render_mode!r}; allowed values: ['rgb_array']")
        if not isinstance(image_size, (int, np.integer)) or image_size < 16:
            raise ValueError(f"image_size must be an int >= 16 (allowed values: 16, 17, ...), got {image_size!r}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be None or >= 1, got {max_episode_steps!r}")
        self.render_mode = "rgb_array"
        self.image_size = int(image_size)
        self.continuous = bool(continuous)
        self.max_episode_steps = max_episode_steps
        self.reward_shaping = bool(reward_shaping)
        self._potential = 0.0
        self.observation_space = gym.spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8)
        self.action_space = (gym.spaces.Box(-1.0, 1.0, (2,), np.float32) if self.continuous
                             else gym.spaces.Discrete(len(ACTION_MEANINGS)))
        self._frame = np.zeros(self.observation_space.shape, np.uint8)
        self._elapsed = 0
        self._object_ids = np.zeros(0, np.int32)

    # --- hooks ---------------------------------------------------------------------------------------------------
    def _reset_scene(self) -> int:
        """Sample a new scene with ``self.np_random``; return the number of objects (agent excluded). Must start
        from scratch: ``reset`` calls it again when it raises ``PlacementError``."""
        raise NotImplementedError

    def _simulate(self, move: np.ndarray) -> None:
        """Advance one step with the agent commanded to ``move`` [2] in ``[-1, 1]`` (fraction of top speed)."""
        raise NotImplementedError

    def _draw(self) -> tuple[np.ndarray, np.ndarray]:
        """Current frame uint8 [H, W, 3] and segmentation int32 [H, W]."""
        raise NotImplementedError

    def _object_states(self) -> np.ndarray:
        """float32 [N+1, len(object_state_names)], agent first."""
        raise NotImplementedError

    def _is_success(self) -> bool:
        raise NotImplementedError

    def planar_state(self) -> PlanarState:
        """Privileged state for scripted policies (see ``envs.policies``)."""
        raise NotImplementedError

    # --- gymnasium API -------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        # Objects are placed one after another, and an unlucky layout can leave no room for the last ones (about
        # one ShapesPush reset in 45,000): draw the scene again. The generator has moved on, so a seed still
        # fixes the scene, and every scene that placed at the first attempt is as before.
        for _ in range(SCENE_ATTEMPTS):
            try:
                num_objects = self._reset_scene()
                break
            except PlacementError:
                continue
        else:
            raise RuntimeError(f"could not place {self.num_objects[1]} objects without overlap in {SCENE_ATTEMPTS} "
                               "scenes; use fewer objects (num_objects=...)")
        self._object_ids = np.zeros(self.num_objects[1] + 1, np.int32)
        self._object_ids[:num_objects + 1] = np.arange(1, num_objects + 2)
        self._elapsed = 0
        self._potential = self._shaping_potential() if self.reward_shaping else 0.0
        return self._observe(success=False)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._simulate(self._action_to_move(action))
        self._elapsed += 1
        success = self._is_success()
        obs, info = self._observe(success)
        truncated = self.max_episode_steps is not None and self._elapsed >= self.max_episode_steps
        reward = float(success)
        if self.reward_shaping:
            potential = self._shaping_potential()
            reward += potential - self._potential
            self._potential = potential
        return obs, reward, success, truncated, info

    def render(self) -> np.ndarray:
        """The current frame, uint8 [H, W, 3] (a copy of the last observation)."""
        return self._frame.copy()

    # --- helpers -------------------------------------------------------------------------------------------------
    def _shaping_potential(self) -> float:
        """``phi`` of the reward shaping (class docstring): minus the agent-target and target-goal distances."""
        state = self.planar_state()
        target = state.objects[state.target]
        distance = np.linalg.norm(state.agent - target)
        if state.goal is not None:
            distance += np.linalg.norm(target - state.goal)
        return -float(distance / (state.bounds[1] - state.bounds[0]).max())

    def _observe(self, success: bool) -> tuple[np.ndarray, dict[str, Any]]:
        frame, segmentation = self._draw()
        self._frame = frame
        states = np.zeros((len(self._object_ids), len(self.object_state_names)), np.float32)
        bodies = self._object_states()
        states[:len(bodies)] = bodies
        info = {"segmentation": segmentation, "object_states": states, "object_ids": self._object_ids.copy(),
                "is_success": success}
        return frame, info

    def _action_to_move(self, action: Any) -> np.ndarray:
        """Validated action -> commanded move [2] in ``[-1, 1]`` (continuous actions are clipped)."""
        a = np.asarray(action)
        if self.continuous:
            if a.shape != (2,) or not np.issubdtype(a.dtype, np.number) or not np.all(np.isfinite(a)):
                raise ValueError(f"continuous action must be 2 finite numbers, got {action!r}")
            return np.clip(a.astype(np.float32), -1.0, 1.0)
        if a.size != 1 or not np.issubdtype(a.dtype, np.integer) or not 0 <= int(a.reshape(())) < len(DIRECTIONS):
            raise ValueError(f"discrete action must be an integer in 0..{len(DIRECTIONS) - 1} "
                             f"({', '.join(ACTION_MEANINGS)}), got {action!r}")
        return DIRECTIONS[int(a.reshape(()))]

    def direction_to_action(self, delta: np.ndarray) -> np.ndarray | int:
        """Action that best moves the agent by ``delta`` [2] (plane units) this step.

        Continuous: ``delta / step_size``, scaled down uniformly when it exceeds the box so the direction is
        kept. Discrete: the axis move along the larger component of ``delta`` (noop when ``delta`` is zero).
        """
        delta = np.asarray(delta, dtype=np.float64)
        if self.continuous:
            a = delta / self.step_size
            return (a / max(1.0, float(np.abs(a).max()))).astype(np.float32)
        axis = int(np.argmax(np.abs(delta)))
        if abs(delta[axis]) < 1e-9:
            return 0
        if axis == 0:
            return 4 if delta[0] > 0 else 3
        return 2 if delta[1] > 0 else 1
