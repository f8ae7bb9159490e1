"""Scripted policies: an exploration policy for data generation and per-task solvers.

Every policy is built from an env (wrapped or not) and called like a learned policy, ``policy(obs, info) ->
action``, with an action from the env's own action space (discrete or continuous). The policies are
privileged: they read the simulator state through ``env.unwrapped.planar_state()`` rather than the pixels,
so ``obs`` and ``info`` are only there for a uniform interface (both may be ``None``).

- ``ExplorationPolicy``: makes objects move and collide, for video datasets.
- ``ReachSolver``: heads straight for the target (``oc/ShapesReach-v0``, ``oc/ShapesOddOneOut-v0``).
- ``PushSolver``: gets behind the target and pushes it into the goal (``oc/ShapesPush-v0``,
  ``oc/PandaPush-v0``).
- ``scripted_solver(env)``: the solver that fits the env's task.
- ``MiniGridWalk``: a random walk for MiniGrid envs (the ``minigrid`` package) that never ends an episode, for
  recording videos of an env that is not ours.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from .base import DIRECTIONS, ObjectCentricEnv, PlanarState
from .minigrid_masks import unwrap_minigrid


def _unwrap(env: gym.Env) -> ObjectCentricEnv:
    base = env.unwrapped
    if not isinstance(base, ObjectCentricEnv):
        raise TypeError(f"scripted policies need one of the envs in `envs`, got {type(base).__name__}")
    return base


def _segment_distance(point: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Distance from ``point`` to the segment from ``a`` to ``b``."""
    ab = b - a
    t = float(np.clip((point - a) @ ab / max(float(ab @ ab), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(a + t * ab - point))


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 1e-9 else np.zeros_like(v)


class ReachSolver:
    """Moves straight at the target; objects in the way are pushed aside."""

    def __init__(self, env: gym.Env) -> None:
        self.env = _unwrap(env)

    def reset(self) -> None:
        """Nothing to forget: the solver is stateless (kept for a uniform interface)."""

    def __call__(self, obs: Any = None, info: dict[str, Any] | None = None) -> np.ndarray | int:
        state = self.env.planar_state()
        return self.env.direction_to_action(state.objects[state.target] - state.agent)


class PushSolver:
    """Pushes the target into the goal zone.

    Push direction: straight at the goal for continuous actions, else along one axis at a time (discrete
    actions, or when the agent cannot get behind the target for a straight push, e.g. by a wall); the axis
    with the larger remaining error is kept until that error is under half the goal radius, so the agent does
    not keep walking round the target. A continuous agent goes straight to the point behind the target when
    that way is clear of it; otherwise getting behind uses moves along and across the push line only (step
    aside, back down past it, slide onto the line), which a discrete agent makes exactly. When the agent is
    wedged (no motion for 3 steps) it makes 4 random moves.

    Args:
        env: the env to act in (wrapped or not).
        seed: seed of the generator for the random moves.
    """

    def __init__(self, env: gym.Env, *, seed: int | None = 0) -> None:
        self.env = _unwrap(env)
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        """Forget the previous episode (call after ``env.reset``)."""
        self._axis = 0
        self._last_agent = np.full(2, np.nan)
        self._still = 0
        self._escape = 0

    def _push_direction(self, state: PlanarState) -> np.ndarray:
        target = state.objects[state.target]
        to_goal = state.goal - target
        reach = state.radii[state.target] + state.agent_radius

        def reachable(direction: np.ndarray) -> bool:
            behind = target - direction * reach
            return bool(np.all(behind >= state.bounds[0]) and np.all(behind <= state.bounds[1]))

        if self.env.continuous and reachable(_unit(to_goal)):
            return _unit(to_goal)
        if abs(to_goal[self._axis]) < 0.5 * state.goal_radius:
            self._axis = int(np.argmax(np.abs(to_goal)))
        for axis in (self._axis, 1 - self._axis):
            direction = np.zeros(2)
            direction[axis] = np.sign(to_goal[axis])
            if abs(to_goal[axis]) >= 0.25 * state.goal_radius and reachable(direction):
                self._axis = axis
                return direction
        return _unit(to_goal)

    def __call__(self, obs: Any = None, info: dict[str, Any] | None = None) -> np.ndarray | int:
        state = self.env.planar_state()
        moved = np.linalg.norm(state.agent - self._last_agent) if np.isfinite(self._last_agent).all() else np.inf
        self._last_agent = state.agent
        self._still = self._still + 1 if moved < 0.1 * state.step_size else 0
        if self._still >= 3:
            self._still, self._escape = 0, 4
        if self._escape > 0:
            self._escape -= 1
            return self.env.direction_to_action(self.rng.normal(size=2) * state.step_size)

        target, radius = state.objects[state.target], state.radii[state.target]
        d = self._push_direction(state)
        n = np.array([-d[1], d[0]])
        contact = radius + state.agent_radius  # closer than this along the line, sideways moves may hit it
        rel = state.agent - target
        along, lateral = float(rel @ d), float(rel @ n)
        if along < 0.0 and abs(lateral) <= 0.5 * radius:
            return self.env.direction_to_action(target - state.agent)  # behind it: push through its centre
        behind = target - d * (contact + 0.25 * state.agent_radius)
        if self.env.continuous and _segment_distance(target, state.agent, behind) >= contact:
            return self.env.direction_to_action(behind - state.agent)  # a straight way clear of the target
        if along <= -contact:
            return self.env.direction_to_action(-n * lateral)  # well behind: slide onto the push line
        if abs(lateral) >= contact + 0.25 * state.agent_radius:
            return self.env.direction_to_action(-d * state.step_size)  # beside it: back down past it
        side = 1.0 if lateral >= 0.0 else -1.0
        return self.env.direction_to_action(n * side * state.step_size)  # in the way: step aside


class ExplorationPolicy:
    """Random but purposeful play that makes objects move and interact, for data generation.

    Picks a random object, heads for it and pushes through it for a few steps (driving it into others and into
    the walls), then picks again; gives up on an object after ``patience`` steps. With probability ``noise``
    per step it takes a uniformly random action instead. In touch tasks (Reach, OddOneOut), where touching the
    target ends the episode, it never picks the target and turns moves that would touch it into moves away
    from it, so most episodes run to the time limit (other objects may still be pushed into the target).

    Args:
        env: the env to act in (wrapped or not).
        noise: probability of a random action per step.
        push_steps: inclusive range of steps to keep pushing once in contact.
        patience: steps before abandoning an object that could not be reached.
        seed: seed of the policy's own random generator (independent of the env's).
    """

    def __init__(self, env: gym.Env, *, noise: float = 0.2, push_steps: tuple[int, int] = (3, 10),
                 patience: int = 30, seed: int | None = None) -> None:
        self.env = _unwrap(env)
        self.noise, self.push_steps, self.patience = noise, push_steps, patience
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        """Forget the current object (call after ``env.reset``; a new one is picked on the next call)."""
        self._object = -1
        self._age = 0
        self._push_left = 0
        self._push_direction = np.zeros(2)

    def __call__(self, obs: Any = None, info: dict[str, Any] | None = None) -> np.ndarray | int:
        state = self.env.planar_state()
        avoid_target = self.env.success_rule == "touch" and len(state.objects) > 1
        if self._object >= len(state.objects) or self._object < 0 or self._age >= self.patience:
            candidates = [i for i in range(len(state.objects)) if not (avoid_target and i == state.target)]
            self._object, self._age, self._push_left = int(self.rng.choice(candidates)), 0, 0
        self._age += 1
        if self.rng.random() < self.noise:
            delta = self._random_move() * state.step_size
        elif self._push_left > 0:
            self._push_left -= 1
            if self._push_left == 0:
                self._object = -1
            delta = self._push_direction * state.step_size
        else:
            delta = state.objects[self._object] - state.agent
            if np.linalg.norm(delta) <= state.radii[self._object] + state.agent_radius + state.step_size:
                self._push_left = int(self.rng.integers(self.push_steps[0], self.push_steps[1] + 1))
                self._push_direction = _unit(delta)
        if avoid_target:
            # A move that would touch the target turns into a move straight away from it.
            away = state.agent - state.objects[state.target]
            step = _unit(delta) * min(float(np.linalg.norm(delta)), state.step_size)
            if np.linalg.norm(away + step) < state.radii[state.target] + state.agent_radius + 0.5 * state.step_size:
                delta = _unit(away) * state.step_size
        return self.env.direction_to_action(delta)

    def _random_move(self) -> np.ndarray:
        """A uniformly random action, as a move in the plane (fraction of the top speed per axis)."""
        if self.env.continuous:
            return self.rng.uniform(-1.0, 1.0, size=2)
        return DIRECTIONS[int(self.rng.integers(len(DIRECTIONS)))].astype(np.float64)


def scripted_solver(env: gym.Env) -> ReachSolver | PushSolver:
    """The solver for the env's task: ``ReachSolver`` for touch tasks, ``PushSolver`` for goal-zone tasks."""
    return ReachSolver(env) if _unwrap(env).success_rule == "touch" else PushSolver(env)


class MiniGridWalk:
    """A random walk for MiniGrid envs (the ``minigrid`` package) that never ends the episode, for data generation.

    Under uniformly random actions most MiniGrid Dynamic-Obstacles episodes end within a few frames (stepping into
    a ball or a wall ends them), too short for training clips. This walk steps forward, with probability
    ``forward``, only when the cell in front is empty, and otherwise turns left or right at random; it never
    picks up, drops or toggles. It reads the grid through ``env.unwrapped`` (privileged, like the policies above).

    Args:
        env: a MiniGrid env (wrapped or not).
        forward: probability of trying a step forward.
        seed: seed of the policy's own random generator.
    """

    def __init__(self, env: gym.Env, *, forward: float = 0.6, seed: int | None = None) -> None:
        self.env, self.forward = unwrap_minigrid(env, "MiniGridWalk"), forward
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: Any = None, info: dict[str, Any] | None = None) -> int:
        actions = self.env.actions
        if self.rng.random() < self.forward and self.env.grid.get(*self.env.front_pos) is None:
            return int(actions.forward)
        return int(actions.left if self.rng.random() < 0.5 else actions.right)
