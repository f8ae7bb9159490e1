"""2D tabletop family: a white agent disc pushes coloured squares, circles and triangles, seen from above.

Physics is pymunk (rigid bodies, zero gravity). Floor friction is modelled the pymunk way, with a velocity-only
pivot and gear joint per object to a static body, so pushed objects slide about 2 units and stop. The agent
starts each step at the commanded velocity and a force-limited pivot joint to a kinematic control body keeps
it there, so it stops at walls and cannot crush objects through them.

World: a ``64 x 64`` unit square (1 unit = 1 pixel at ``image_size=64``), walls 2 units thick, objects about
10 units across, agent radius 4, top speed 3.5 units per step (the arena is crossed in about 17 steps).

How the task is visible in the pixels:

- Reach and Push: the arena border is drawn in the *target's colour*, and no other object has that colour.
- Push: the goal zone is a grey disc on the (black) floor.
- OddOneOut: the border is grey; the target is the one object whose colour (or shape) no other object shares,
  while every other colour and shape value appears at least twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import pymunk

from .base import ObjectCentricEnv, PlanarState, resolve_count, sample_free_position
from .palette import (AGENT_COLOR, AGENT_COLOR_ID, COLOR_NAMES, COLORS, SHAPES, resolve_names,
                          sample_unique_target_colors)
from .render import polygon_halfplanes, rasterize

WORLD = 64.0
WALL = 2.0
AGENT_RADIUS = 4.0
OBJECT_SIZE = 10.0
AGENT_SPEED = 35.0  # units per second
DT = 0.1  # seconds per env step
SUBSTEPS = 4  # 0.9 units per substep: nothing tunnels, and objects pressed into walls overlap them < 1.3 units
GOAL_RADIUS = 8.0
TOUCH_MARGIN = 1.0
MAX_OBJECTS = 8
FLOOR_COLOR = (0, 0, 0)
WALL_COLOR = (128, 128, 128)
GOAL_COLOR = (80, 80, 80)
# Floor friction decelerates objects (mass 1) at 300 units/s²: one pushed at top speed slides ~2 units.
FLOOR_FRICTION_FORCE = 300.0
FLOOR_FRICTION_TORQUE = 100.0
AGENT_MAX_FORCE = 3000.0


def shape_vertices(shape: str) -> np.ndarray | None:
    """Local vertices [K, 2] of a polygon shape in order of increasing angle, ``None`` for the circle.

    Sizes are chosen so the three shapes cover similar areas: square side ``0.9 OBJECT_SIZE``, circle diameter
    ``OBJECT_SIZE``, equilateral triangle with circumradius ``0.65 OBJECT_SIZE``.
    """
    if shape == "circle":
        return None
    if shape == "square":
        angles, radius = np.deg2rad([-135.0, -45.0, 45.0, 135.0]), 0.45 * OBJECT_SIZE * np.sqrt(2.0)
    else:
        angles, radius = np.deg2rad([-90.0, 30.0, 150.0]), 0.65 * OBJECT_SIZE
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


class ShapesEnv(ObjectCentricEnv):
    """Shared 2D tabletop; the tasks below differ only in their scene sampling and success rule.

    Args:
        image_size: side of the square RGB observation in pixels (>= 16).
        num_objects: number of objects besides the agent, an int or an inclusive ``(min, max)`` range,
            within ``[min_objects, 8]`` (``min_objects`` is 1, 3 for OddOneOut).
        colors: allowed object colours, a subset of ``envs.palette.COLOR_NAMES`` (default: all eight), e.g. to
            hold some out for generalisation tests.
        shapes: allowed shapes, a subset of ``("square", "circle", "triangle")`` (default: all).
        continuous: ``Box(-1, 1, (2,))`` velocity actions instead of ``Discrete(5)``.
        max_episode_steps: truncate after this many steps; ``None`` (default) leaves it to the ``TimeLimit``
            added by ``gym.make`` (100 steps for the registered ids).
        reward_shaping: add potential-based shaping to the sparse success reward (``envs.base.ObjectCentricEnv``).
        render_mode: only ``"rgb_array"``.

    ``object_states`` columns (``object_state_names``): ``u, v`` centre in image coordinates divided by the
    image size (``col = u * W``, ``row = v * H``); ``vel_u, vel_v`` their change over the last step (0 after
    ``reset``); ``angle`` (rad, in ``[-pi, pi)``) and ``angular_velocity`` (rad over the last step);
    ``color_id`` (index into ``COLOR_NAMES``, -1 for the agent); ``shape_id`` (index into ``SHAPES``, the
    agent is a circle); ``size`` (nominal diameter / arena side); ``is_agent``; ``is_target``. Row 0 is the
    agent (segmentation id 1), row ``i`` is object id ``i + 1``.
    """

    max_objects: ClassVar[int] = MAX_OBJECTS
    object_state_names: ClassVar[tuple[str, ...]] = (
        "u", "v", "vel_u", "vel_v", "angle", "angular_velocity", "color_id", "shape_id", "size", "is_agent",
        "is_target")
    min_objects: ClassVar[int] = 1
    border_shows_target: ClassVar[bool] = True

    def __init__(self, *, image_size: int = 64, num_objects: int | Sequence[int] = (3, 6),
                 colors: Sequence[str] | None = None, shapes: Sequence[str] | None = None,
                 continuous: bool = False, max_episode_steps: int | None = None,
                 render_mode: str | None = "rgb_array", reward_shaping: bool = False) -> None:
        super().__init__(image_size=image_size, continuous=continuous, max_episode_steps=max_episode_steps,
                         render_mode=render_mode, reward_shaping=reward_shaping)
        self.num_objects = resolve_count(num_objects, self.min_objects, self.max_objects)
        self.colors = resolve_names("color", colors, COLOR_NAMES, minimum=self._min_colors())
        self.shapes = resolve_names("shape", shapes, SHAPES)
        self.step_size = AGENT_SPEED * DT
        self._scale = self.image_size / WORLD
        # Window side that covers any shape's bounding circle with a pixel to spare.
        self._window = min(int(np.ceil(2 * max(_bounding_radius(s) for s in SHAPES) * self._scale)) + 2,
                           self.image_size)
        self._space = pymunk.Space()
        self._control = pymunk.Body(body_type=pymunk.Body.KINEMATIC)
        self._bodies: list[pymunk.Body] = []  # agent first, then objects: row order of object_states
        self._shapes: list[pymunk.Shape] = []
        self._target = 0
        self._goal: np.ndarray | None = None
        self._pose = np.zeros((0, 3))  # x, y, angle per body
        self._motion = np.zeros((0, 3))  # change of the pose over the last step
        self._static_states = np.zeros((0, 5), np.float32)
        self._radii = np.zeros(0)
        self._paint: tuple[np.ndarray, ...] = ()
        self._palette = np.zeros((0, 3), np.uint8)
        self._background = np.zeros((self.image_size, self.image_size), np.uint8)

    # --- task hooks ----------------------------------------------------------------------------------------------
    def _min_colors(self) -> int:
        # The target's colour must be unique, so any distractor needs a second colour.
        return 2 if self.num_objects[1] > 1 else 1

    def _sample_appearance(self, n: int) -> tuple[list[int], list[int], int]:
        """Palette colour ids, shape ids and target index of ``n`` objects: the target's colour is unique."""
        colors, target = sample_unique_target_colors(self.np_random, self.colors, n)
        return colors, [int(s) for s in self.np_random.choice(self.shapes, n)], target

    # --- scene ---------------------------------------------------------------------------------------------------
    def _reset_scene(self) -> int:
        rng = self.np_random
        n = int(rng.integers(self.num_objects[0], self.num_objects[1] + 1))
        colors, shapes, self._target = self._sample_appearance(n)
        self._space = space = pymunk.Space()
        _add_walls(space)

        placed: list[tuple[np.ndarray, float]] = []
        self._goal = None
        if self.success_rule == "in_goal":
            self._goal = rng.uniform(20.0, WORLD - 20.0, size=2)
            placed.append((self._goal, GOAL_RADIUS))
        # The target goes first, far enough from the walls that the agent can get behind it from any side.
        bodies: list[pymunk.Body | None] = [None] * (n + 1)
        self._shapes = [None] * (n + 1)  # type: ignore[list-item]
        for i in [self._target] + [j for j in range(n) if j != self._target]:
            radius = _bounding_radius(SHAPES[shapes[i]])
            margin = WALL + radius + (2 * AGENT_RADIUS + 1.0 if i == self._target else 1.0)
            position = sample_free_position(rng, margin, WORLD - margin, radius, placed, gap=2.0)
            placed.append((position, radius))
            bodies[i + 1], self._shapes[i + 1] = _add_object(space, SHAPES[shapes[i]], position,
                                                             rng.uniform(-np.pi, np.pi))
        margin = WALL + AGENT_RADIUS + 1.0
        position = sample_free_position(rng, margin, WORLD - margin, AGENT_RADIUS, placed, gap=2.0)
        bodies[0], self._shapes[0] = self._add_agent(space, position)
        self._bodies = bodies  # type: ignore[assignment]
        self._pose = self._read_pose()
        self._motion = np.zeros_like(self._pose)

        circle = SHAPES.index("circle")
        self._static_states = np.array(
            [(AGENT_COLOR_ID, circle, 2 * AGENT_RADIUS / WORLD, 1.0, 0.0)]
            + [(colors[i], shapes[i], OBJECT_SIZE / WORLD, 0.0, float(i == self._target)) for i in range(n)],
            dtype=np.float32)
        self._prepare_drawing([circle] + shapes, colors)
        return n

    def _add_agent(self, space: pymunk.Space, position: np.ndarray) -> tuple[pymunk.Body, pymunk.Shape]:
        body = pymunk.Body(1.0, float("inf"))
        body.position = tuple(position)
        shape = pymunk.Circle(body, AGENT_RADIUS)
        shape.friction = 0.3
        self._control = pymunk.Body(body_type=pymunk.Body.KINEMATIC)
        self._control.position = body.position
        drive = pymunk.PivotJoint(self._control, body, (0.0, 0.0), (0.0, 0.0))
        drive.max_bias, drive.max_force = 0.0, AGENT_MAX_FORCE
        space.add(body, shape, self._control, drive)
        return body, shape

    def _read_pose(self) -> np.ndarray:
        # Velocities come from pose differences: reading pymunk properties is the slow part of a step.
        return np.array([(*b.position, b.angle) for b in self._bodies])

    def _simulate(self, move: np.ndarray) -> None:
        velocity = (float(move[0]) * AGENT_SPEED, float(move[1]) * AGENT_SPEED)
        # pymunk moves bodies with the previous substep's velocity; setting it here makes the commanded move
        # happen this step (no hidden momentum), while the force-limited drive still yields to walls.
        self._control.velocity = self._bodies[0].velocity = velocity
        for _ in range(SUBSTEPS):
            self._space.step(DT / SUBSTEPS)
        pose = self._read_pose()
        self._motion, self._pose = pose - self._pose, pose

    def _is_success(self) -> bool:
        target = self._target + 1
        if self.success_rule == "touch":
            touch = self._shapes[target].point_query(self._bodies[0].position)
            return touch.distance <= AGENT_RADIUS + TOUCH_MARGIN
        return float(np.hypot(*(self._pose[target, :2] - self._goal))) <= GOAL_RADIUS

    # --- observations --------------------------------------------------------------------------------------------
    def _prepare_drawing(self, shapes: list[int], colors: list[int]) -> None:
        """Per-episode tables: the static background as palette indices (floor 0, border 1, goal 2; body ``i``
        is ``i + 3``), the palette, and each body's half-planes in paint order."""
        size, scale = self.image_size, self._scale
        background = np.zeros((size, size), np.uint8)
        t = max(1, round(WALL * scale))
        background[:t], background[-t:], background[:, :t], background[:, -t:] = 1, 1, 1, 1
        if self._goal is not None:
            _, rows, cols = rasterize(size, min(int(np.ceil(2 * GOAL_RADIUS * scale)) + 2, size),
                                      self._goal[None] * scale, np.zeros(1), np.zeros((1, 1)), np.zeros((1, 1)),
                                      np.array([GOAL_RADIUS * scale]))
            background[rows, cols] = 2
        self._background = background
        border = COLORS[COLOR_NAMES[colors[self._target]]] if self.border_shows_target else WALL_COLOR
        self._palette = np.array([FLOOR_COLOR, border, GOAL_COLOR, AGENT_COLOR,
                                  *(COLORS[COLOR_NAMES[c]] for c in colors)], np.uint8)

        planes = [polygon_halfplanes(v * scale, 4) if (v := shape_vertices(SHAPES[s])) is not None
                  else (np.zeros(4, complex), np.zeros(4)) for s in shapes]
        radii = np.array([_bounding_radius(SHAPES[s]) for s in shapes]) * scale
        radii[0] = AGENT_RADIUS * scale
        self._radii = radii
        # Objects first and the agent last, so the agent stays visible where it touches an object.
        order = np.roll(np.arange(len(shapes)), -1)
        self._paint = (order, np.array([planes[i][0] for i in order]), np.array([planes[i][1] for i in order]),
                       radii[order])

    def _draw(self) -> tuple[np.ndarray, np.ndarray]:
        order, normals, limits, radii = self._paint
        pose = self._pose[order]
        k, rows, cols = rasterize(self.image_size, self._window, pose[:, :2] * self._scale, pose[:, 2], normals,
                                  limits, radii)
        body = order[k]
        segmentation = np.zeros((self.image_size, self.image_size), np.int32)
        segmentation[rows, cols] = body + 1
        index = self._background.copy()
        index[rows, cols] = body + 3
        return np.take(self._palette, index, axis=0), segmentation

    def _object_states(self) -> np.ndarray:
        dynamic = np.concatenate([self._pose[:, :2] / WORLD, self._motion[:, :2] / WORLD,
                                  (self._pose[:, 2:] + np.pi) % (2 * np.pi) - np.pi, self._motion[:, 2:]], axis=1)
        return np.concatenate([dynamic.astype(np.float32), self._static_states], axis=1)

    def planar_state(self) -> PlanarState:
        return PlanarState(
            agent=self._pose[0, :2].copy(), agent_radius=AGENT_RADIUS, objects=self._pose[1:, :2].copy(),
            radii=self._radii[1:] / self._scale, target=self._target, goal=self._goal, goal_radius=GOAL_RADIUS,
            step_size=self.step_size, bounds=np.array([[WALL + AGENT_RADIUS] * 2, [WORLD - WALL - AGENT_RADIUS] * 2]))


def _bounding_radius(shape: str) -> float:
    vertices = shape_vertices(shape)
    return OBJECT_SIZE / 2 if vertices is None else float(np.linalg.norm(vertices, axis=1).max())


def _add_walls(space: pymunk.Space) -> None:
    # Thick walls reaching far outside the arena: an object squeezed by the agent is pushed back, not through.
    outer, inner = -30.0, WORLD + 30.0
    for box in ([(outer, outer), (WALL, outer), (WALL, inner), (outer, inner)],
                [(WORLD - WALL, outer), (inner, outer), (inner, inner), (WORLD - WALL, inner)],
                [(outer, outer), (inner, outer), (inner, WALL), (outer, WALL)],
                [(outer, WORLD - WALL), (inner, WORLD - WALL), (inner, inner), (outer, inner)]):
        wall = pymunk.Poly(space.static_body, box)
        wall.friction = 0.3
        space.add(wall)


def _add_object(space: pymunk.Space, shape_name: str, position: np.ndarray, angle: float
                ) -> tuple[pymunk.Body, pymunk.Shape]:
    mass = 1.0
    vertices = shape_vertices(shape_name)
    if vertices is None:
        body = pymunk.Body(mass, pymunk.moment_for_circle(mass, 0.0, OBJECT_SIZE / 2))
        shape: pymunk.Shape = pymunk.Circle(body, OBJECT_SIZE / 2)
    else:
        points = [tuple(v) for v in vertices.tolist()]
        body = pymunk.Body(mass, pymunk.moment_for_poly(mass, points))
        shape = pymunk.Poly(body, points)
    body.position = tuple(position)
    body.angle = float(angle)
    shape.friction = 0.3
    # Velocity-only joints to the static body act as floor friction (max_bias=0: no position correction).
    slide = pymunk.PivotJoint(space.static_body, body, (0.0, 0.0), (0.0, 0.0))
    spin = pymunk.GearJoint(space.static_body, body, 0.0, 1.0)
    slide.max_bias, slide.max_force = 0.0, FLOOR_FRICTION_FORCE
    spin.max_bias, spin.max_force = 0.0, FLOOR_FRICTION_TORQUE
    space.add(body, shape, slide, spin)
    return body, shape


class ShapesReachEnv(ShapesEnv):
    """``oc/ShapesReach-v0``: touch the object whose colour matches the arena border."""

    success_rule = "touch"


class ShapesPushEnv(ShapesEnv):
    """``oc/ShapesPush-v0``: push the object whose colour matches the border until its centre is in the grey
    goal disc."""

    success_rule = "in_goal"


class ShapesOddOneOutEnv(ShapesEnv):
    """``oc/ShapesOddOneOut-v0``: touch the one object that differs from all others in colour or in shape.

    Needs at least 3 objects and two colours or two shapes. Each episode picks the odd property (colour or
    shape); the other property is shared by all objects or split into two groups of at least two, so no other
    value is unique and the odd object is well defined.
    """

    success_rule = "touch"
    min_objects = 3
    border_shows_target = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if len(self.colors) < 2 and len(self.shapes) < 2:
            raise ValueError("ShapesOddOneOut needs two colours or two shapes to tell the odd object apart; "
                             f"allowed colours: {list(COLOR_NAMES)}, allowed shapes: {list(SHAPES)}")

    def _min_colors(self) -> int:
        return 1

    def _sample_appearance(self, n: int) -> tuple[list[int], list[int], int]:
        rng = self.np_random
        properties = [p for p in (self.colors, self.shapes) if len(p) >= 2]
        odd_property = int(rng.integers(len(properties)))
        odd_values = properties[odd_property]
        common, odd = (int(v) for v in rng.choice(odd_values, 2, replace=False))
        target = int(rng.integers(n))
        odd_column = [odd if i == target else common for i in range(n)]
        other_values = self.shapes if odd_values is self.colors else self.colors
        if n >= 4 and len(other_values) >= 2 and rng.random() < 0.5:
            first, second = (int(v) for v in rng.choice(other_values, 2, replace=False))
            split = int(rng.integers(2, n - 1))
            other_column = [int(v) for v in rng.permutation([first] * split + [second] * (n - split))]
        else:
            other_column = [int(rng.choice(other_values))] * n
        if odd_values is self.colors:
            return odd_column, other_column, target
        return other_column, odd_column, target
