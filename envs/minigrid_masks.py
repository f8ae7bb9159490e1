"""Ground-truth object masks for MiniGrid envs (the ``minigrid`` package), for evaluation only.

MiniGrid gives no segmentation. ``MiniGridSegmentation`` draws one from the grid state and the rendered frame,
so that the scores our own envs get (video FG-ARI, mBO, the first-frame-slot share of
``benchmarks/slot_consistency.py``) can be measured on MiniGrid too::

    import gymnasium as gym
    from envs.minigrid_masks import MiniGridSegmentation

    env = MiniGridSegmentation(gym.make("minigrid:MiniGrid-Dynamic-Obstacles-6x6-v0", render_mode="rgb_array",
                                        highlight=False))
    obs, info = env.reset(seed=0)  # info["segmentation"]: int32 [H, W] at render() resolution

A label-free recipe must not train on these masks; they score what it learned.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

AGENT_ID = 1
# Walls and the floor are background, as the floor of our own envs is.
BACKGROUND_TYPES = frozenset({"wall", "floor"})
# MiniGrid draws the empty floor black with grey grid lines (and walls in the same grey).
_FLOOR_COLOURS = np.array([[0, 0, 0], [100, 100, 100]], dtype=np.int16)
_COLOUR_TOLERANCE = 48


def unwrap_minigrid(env: gym.Env, user: str) -> Any:
    """``env.unwrapped`` if it is a MiniGrid env, else a TypeError that names ``user`` and the fix (duck-typed, so
    that nothing here imports ``minigrid``)."""
    base = env.unwrapped
    # front_pos is a property that fails before the first reset, so look it up on the class.
    if not (hasattr(type(base), "front_pos") and hasattr(base, "grid") and hasattr(base, "actions")):
        raise TypeError(f"{user} needs a MiniGrid env (pip install minigrid), got {type(base).__name__}")
    return base


class MiniGridSegmentation(gym.Wrapper):
    """Add ``info["segmentation"]`` (int32 ``[H, W]`` at ``render()``'s resolution) and ``info["segmentation_kinds"]``
    (``{id: MiniGrid type}``, e.g. ``{1: "agent", 2: "ball", 5: "goal"}``) to a MiniGrid env.

    0 is the background (floor, walls, grid lines), 1 the agent, 2.. the other objects (balls, boxes, keys,
    doors, goals, lava), each with the same id for the whole episode (in the order they lie on the grid at
    reset; one that appears later gets the next free id). A pixel of an object's tile belongs to the object where
    its colour is not the floor's or the grid lines'. The env must render ``rgb_array`` frames.

    Raises:
        TypeError: the env is not a MiniGrid env.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        unwrap_minigrid(env, "MiniGridSegmentation")
        self._ids: dict[int, int] = {}
        self._kinds: dict[int, str] = {}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._ids, self._kinds = {}, {AGENT_ID: "agent"}
        return obs, self._with_masks(info)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._with_masks(info)

    def _with_masks(self, info: dict[str, Any]) -> dict[str, Any]:
        segmentation = self.segmentation()
        return {**info, "segmentation": segmentation, "segmentation_kinds": dict(self._kinds)}

    def segmentation(self) -> np.ndarray:
        """The current state's masks: int32 ``[H, W]``, 0 background, 1 agent, 2.. objects."""
        base = self.env.unwrapped
        frame = self.env.render()
        if not (isinstance(frame, np.ndarray) and frame.ndim == 3):
            raise ValueError("MiniGridSegmentation needs render_mode='rgb_array'")
        grid = base.grid
        tile_h, tile_w = frame.shape[0] // grid.height, frame.shape[1] // grid.width
        # drawn: [H, W] pixels whose colour is neither the floor's nor the grid lines'
        diff = np.abs(frame[:, :, None, :].astype(np.int16) - _FLOOR_COLOURS).max(axis=-1)
        drawn = (diff > _COLOUR_TOLERANCE).all(axis=-1)
        labels = np.zeros(frame.shape[:2], dtype=np.int32)
        cells = [(x, y, obj) for y in range(grid.height) for x in range(grid.width)
                 if (obj := grid.get(x, y)) is not None and obj.type not in BACKGROUND_TYPES]
        for x, y, obj in cells:
            label = self._ids.setdefault(id(obj), len(self._ids) + AGENT_ID + 1)
            self._kinds[label] = obj.type
            self._paint(labels, drawn, x, y, tile_h, tile_w, label)
        # the agent is drawn over whatever lies in its cell (an open door, say)
        self._paint(labels, drawn, *base.agent_pos, tile_h, tile_w, AGENT_ID)
        return labels

    @staticmethod
    def _paint(labels: np.ndarray, drawn: np.ndarray, x: int, y: int, tile_h: int, tile_w: int, label: int) -> None:
        rows, cols = slice(y * tile_h, (y + 1) * tile_h), slice(x * tile_w, (x + 1) * tile_w)
        labels[rows, cols] = np.where(drawn[rows, cols], label, labels[rows, cols])
