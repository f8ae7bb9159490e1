"""``oc/PandaPush-v0``: a Franka Panda pushes the target cube into a goal zone on a table (PyBullet).

PyBullet runs in DIRECT mode (one client per env) and renders with its CPU TinyRenderer, so no display or
OpenGL is needed. The end effector moves in the table plane at a fixed height, the closed fingers acting as a
pusher; inverse kinematics turns the planar target into joint targets for position control.

The goal zone is a disc drawn on the table in a pale tint of the target cube's colour, and no other cube has
that colour: the target is visible in the pixels.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import tempfile
from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
import pybullet
import pybullet_data

from .base import ObjectCentricEnv, PlanarState, resolve_count, sample_free_position
from .palette import AGENT_COLOR_ID, COLOR_NAMES, COLORS, resolve_names, sample_unique_target_colors

CUBE_HALF = 0.025
CUBE_MASS = 0.1
EE_LINK = 11  # panda_grasptarget: between the fingertips
ARM_JOINTS = tuple(range(7))
FINGER_JOINTS = (9, 10)
ARM_FORCES = (87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0)
REST_POSE = (0.0, 0.3, 0.0, -2.2, 0.0, 2.5, 0.785, 0.0, 0.0)  # null-space preference: elbow up, hand down
EE_HEIGHT = 0.02  # fingertips 2 cm above the table: they push cubes below their centre, so cubes slide, not tip
EE_RADIUS = 0.015  # closed fingers seen from above, as a disc
HOME = np.array([0.32, 0.0])
WORKSPACE_LOW, WORKSPACE_HIGH = np.array([0.25, -0.3]), np.array([0.72, 0.3])
CUBE_LOW, CUBE_HIGH = np.array([0.4, -0.2]), np.array([0.62, 0.2])
GOAL_RADIUS = 0.06
STEP_SIZE = 0.03  # metres per step at full action
PHYSICS_DT = 1.0 / 120.0
SUBSTEPS = 8  # one env step is 1/15 s
MAX_CUBES = 6
TABLE_RGBA = (0.55, 0.55, 0.55, 1.0)
CAMERA_EYE, CAMERA_TARGET = (0.9, 0.0, 0.6), (0.45, 0.0, 0.0)  # in front of the robot, looking down ~53 degrees
CAMERA_FOV = 45.0


class _Client:
    """pybullet functions bound to one DIRECT client (``pybullet_utils.BulletClient`` prints to stdout)."""

    def __init__(self) -> None:
        self.client_id = pybullet.connect(pybullet.DIRECT)

    def __getattr__(self, name: str):
        return functools.partial(getattr(pybullet, name), physicsClientId=self.client_id)


@functools.lru_cache(maxsize=None)
def _collision_visual_urdf() -> str:
    """Path of a copy of ``franka_panda/panda.urdf`` that draws the collision meshes (~3k triangles instead
    of ~100k): the same robot and physics, rendered about 20x faster by the TinyRenderer."""
    root = os.path.join(pybullet_data.getDataPath(), "franka_panda")
    with open(os.path.join(root, "panda.urdf")) as f:
        urdf = f.read().replace("package://meshes/visual/", "package://meshes/collision/")
    urdf = urdf.replace("package://meshes/", os.path.join(root, "meshes") + os.sep)
    fd, path = tempfile.mkstemp(prefix="oc_panda_", suffix=".urdf")
    with os.fdopen(fd, "w") as f:
        f.write(urdf)
    atexit.register(_remove_quietly, path)  # one file per process (cached), gone when the process ends
    return path


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


class PandaPushEnv(ObjectCentricEnv):
    """Push the cube whose colour matches the goal zone until its centre is inside the zone.

    Args:
        image_size: side of the square RGB observation in pixels (>= 16).
        num_objects: number of cubes, an int or an inclusive ``(min, max)`` range within ``[1, 6]``.
        colors: allowed cube colours, a subset of ``envs.palette.COLOR_NAMES`` (default: all eight).
        continuous: ``Box(-1, 1, (2,))`` end-effector moves (default ``True``); ``False`` gives ``Discrete(5)``.
        max_episode_steps: truncate after this many steps; ``None`` leaves it to ``gym.make``'s ``TimeLimit``.
        reward_shaping: add potential-based shaping to the sparse success reward (``envs.base.ObjectCentricEnv``).
        robot_mesh: ``"collision"`` (default) renders the URDF's coarse collision meshes, about 20x faster
            than ``"visual"``, the detailed meshes (about 20 ms per 64 px frame), and nearly the same at 64 px.
        render_mode: only ``"rgb_array"``.

    Actions are image aligned: the first axis moves the end effector towards the image's right, the second
    towards its bottom (the camera looks at the robot from the front, 3 cm per step at full action). The
    segmentation maps the table, floor and goal zone to 0, the whole robot to 1 and cube ``i`` to ``i + 2``.

    ``object_states`` columns (``object_state_names``): ``u, v`` projected centre in image coordinates divided
    by the image size; ``x, y, z`` world position (m; the robot row is the end effector); ``vel_x, vel_y,
    vel_z`` (m per env step); ``yaw`` (rad); ``color_id`` (index into ``COLOR_NAMES``, -1 for the robot);
    ``size`` (cube side or pusher diameter, m); ``is_agent``; ``is_target``.
    """

    success_rule = "in_goal"
    max_objects: ClassVar[int] = MAX_CUBES
    object_state_names: ClassVar[tuple[str, ...]] = (
        "u", "v", "x", "y", "z", "vel_x", "vel_y", "vel_z", "yaw", "color_id", "size", "is_agent", "is_target")

    def __init__(self, *, image_size: int = 64, num_objects: int | Sequence[int] = (3, 5),
                 colors: Sequence[str] | None = None, continuous: bool = True,
                 max_episode_steps: int | None = None, robot_mesh: Literal["visual", "collision"] = "collision",
                 render_mode: str | None = "rgb_array", reward_shaping: bool = False) -> None:
        super().__init__(image_size=image_size, continuous=continuous, max_episode_steps=max_episode_steps,
                         render_mode=render_mode, reward_shaping=reward_shaping)
        self.num_objects = resolve_count(num_objects, 1, self.max_objects)
        self.colors = resolve_names("color", colors, COLOR_NAMES, minimum=2 if self.num_objects[1] > 1 else 1)
        if robot_mesh not in ("visual", "collision"):
            raise ValueError(f"unknown robot_mesh {robot_mesh!r}; allowed values: ['visual', 'collision']")
        self.robot_mesh = robot_mesh
        self.step_size = STEP_SIZE
        self._client: _Client | None = None
        self._view = pybullet.computeViewMatrix(CAMERA_EYE, CAMERA_TARGET, (0.0, 0.0, 1.0))
        self._projection = pybullet.computeProjectionMatrixFOV(CAMERA_FOV, 1.0, 0.1, 3.0)
        self._camera = (np.array(self._projection).reshape(4, 4).T @ np.array(self._view).reshape(4, 4).T)
        # Action plane axes on the table: image right and image down (towards the camera).
        forward = np.subtract(CAMERA_TARGET, CAMERA_EYE)[:2]
        self._axis_v = -forward / np.linalg.norm(forward)
        self._axis_u = np.array([-self._axis_v[1], self._axis_v[0]])
        self._down = pybullet.getQuaternionFromEuler((np.pi, 0.0, 0.0))
        self._robot = -1
        self._cubes: list[int] = []
        self._cube_colors: list[int] = []
        self._target = 0
        self._goal = np.zeros(2)
        self._id_lut = np.zeros(1, np.int32)
        self._joint_limits: tuple[list[float], list[float]] = ([], [])

    # --- scene ---------------------------------------------------------------------------------------------------
    def _reset_scene(self) -> int:
        if self._client is None:
            self._client = _Client()
        client = self._client
        # A fresh simulation per episode: no contact or solver state leaks between episodes, so a seed fixes it.
        client.resetSimulation()
        client.setPhysicsEngineParameter(fixedTimeStep=PHYSICS_DT, deterministicOverlappingPairs=1)
        client.setGravity(0.0, 0.0, -9.81)
        rng = self.np_random
        n = int(rng.integers(self.num_objects[0], self.num_objects[1] + 1))
        self._cube_colors, self._target = sample_unique_target_colors(rng, self.colors, n)

        table_half = (0.7, 0.7, 0.025)
        table = client.createMultiBody(
            0.0, client.createCollisionShape(pybullet.GEOM_BOX, halfExtents=table_half),
            client.createVisualShape(pybullet.GEOM_BOX, halfExtents=table_half, rgbaColor=TABLE_RGBA),
            basePosition=(0.45, 0.0, -table_half[2]))
        client.changeDynamics(table, -1, lateralFriction=0.5)
        urdf = (os.path.join(pybullet_data.getDataPath(), "franka_panda", "panda.urdf")
                if self.robot_mesh == "visual" else _collision_visual_urdf())
        self._robot = client.loadURDF(urdf, useFixedBase=True, flags=pybullet.URDF_ENABLE_CACHED_GRAPHICS_SHAPES)
        joints = [client.getJointInfo(self._robot, j) for j in (*ARM_JOINTS, *FINGER_JOINTS)]
        self._joint_limits = [info[8] for info in joints], [info[9] for info in joints]
        self._home_robot()

        self._goal = sample_free_position(rng, CUBE_LOW, CUBE_HIGH, GOAL_RADIUS, [], 0.0)
        tint = 0.5 * np.array(COLORS[COLOR_NAMES[self._cube_colors[self._target]]]) / 255 + 0.5 * np.array(
            TABLE_RGBA[:3])
        goal = client.createMultiBody(0.0, -1, self._flat_disc(GOAL_RADIUS, (*tint, 1.0)),
                                      basePosition=(*self._goal, 0.001))

        cube_radius = CUBE_HALF * np.sqrt(2.0)
        placed = [(HOME, EE_RADIUS + 0.03)]
        self._cubes = [-1] * n
        for i in [self._target] + [j for j in range(n) if j != self._target]:
            # The target starts outside the goal; the others may not block it by sitting in the goal.
            position = sample_free_position(rng, CUBE_LOW, CUBE_HIGH, cube_radius, [*placed, (self._goal, GOAL_RADIUS)],
                                            gap=0.02)
            placed.append((position, cube_radius))
            rgba = (*(np.array(COLORS[COLOR_NAMES[self._cube_colors[i]]]) / 255), 1.0)
            self._cubes[i] = client.createMultiBody(
                CUBE_MASS, client.createCollisionShape(pybullet.GEOM_BOX, halfExtents=(CUBE_HALF,) * 3),
                client.createVisualShape(pybullet.GEOM_BOX, halfExtents=(CUBE_HALF,) * 3, rgbaColor=rgba),
                basePosition=(*position, CUBE_HALF),
                baseOrientation=pybullet.getQuaternionFromEuler((0.0, 0.0, rng.uniform(-np.pi, np.pi))))
            client.changeDynamics(self._cubes[i], -1, lateralFriction=0.5)

        # Segmentation buffer values are PyBullet body ids (-1 for empty pixels): map them to our stable ids.
        self._id_lut = np.zeros(max(table, goal, self._robot, *self._cubes) + 2, np.int32)
        self._id_lut[self._robot + 1] = 1
        for i, cube in enumerate(self._cubes):
            self._id_lut[cube + 1] = i + 2
        return n

    def _flat_disc(self, radius: float, rgba: tuple[float, ...]) -> int:
        # A triangle fan with upward normals: a thin cylinder's smoothed normals shade it like a cone.
        angles = np.linspace(0.0, 2 * np.pi, 33)[:-1]
        vertices = [(0.0, 0.0, 0.0)] + [(radius * np.cos(a), radius * np.sin(a), 0.0) for a in angles]
        indices = [k for i in range(32) for k in (0, 1 + i, 1 + (i + 1) % 32)]
        return self._client.createVisualShape(pybullet.GEOM_MESH, vertices=vertices, indices=indices,
                                              normals=[(0.0, 0.0, 1.0)] * len(vertices), rgbaColor=rgba,
                                              specularColor=(0.0, 0.0, 0.0))

    def _home_robot(self) -> None:
        client = self._client
        for joint, q in zip((*ARM_JOINTS, *FINGER_JOINTS), REST_POSE):
            client.resetJointState(self._robot, joint, q)
        for _ in range(4):  # IK from the current pose converges in a few resets
            for joint, q in zip(ARM_JOINTS, self._inverse_kinematics(HOME)):
                client.resetJointState(self._robot, joint, q)
        client.setJointMotorControlArray(self._robot, FINGER_JOINTS, pybullet.POSITION_CONTROL,
                                         targetPositions=(0.0, 0.0), forces=(20.0, 20.0))
        self._command_arm(HOME)

    def _inverse_kinematics(self, xy: np.ndarray) -> Sequence[float]:
        lower, upper = self._joint_limits
        return self._client.calculateInverseKinematics(
            self._robot, EE_LINK, (float(xy[0]), float(xy[1]), EE_HEIGHT), self._down, lowerLimits=lower,
            upperLimits=upper, jointRanges=list(np.subtract(upper, lower)), restPoses=list(REST_POSE),
            maxNumIterations=50)[:len(ARM_JOINTS)]

    def _command_arm(self, xy: np.ndarray) -> None:
        self._client.setJointMotorControlArray(self._robot, ARM_JOINTS, pybullet.POSITION_CONTROL,
                                               targetPositions=self._inverse_kinematics(xy), forces=ARM_FORCES)

    def _end_effector(self) -> tuple[np.ndarray, np.ndarray, float]:
        state = self._client.getLinkState(self._robot, EE_LINK, computeLinkVelocity=1, computeForwardKinematics=1)
        return np.array(state[4]), np.array(state[6]), pybullet.getEulerFromQuaternion(state[5])[2]

    def _simulate(self, move: np.ndarray) -> None:
        # The target is relative to where the hand is, not where it was told to be: blocked by a cube, the arm
        # does not wind up a growing error.
        ee_xy = self._end_effector()[0][:2]
        target = ee_xy + STEP_SIZE * (move[0] * self._axis_u + move[1] * self._axis_v)
        self._command_arm(np.clip(target, WORKSPACE_LOW, WORKSPACE_HIGH))
        for _ in range(SUBSTEPS):
            self._client.stepSimulation()

    def _is_success(self) -> bool:
        position = self._client.getBasePositionAndOrientation(self._cubes[self._target])[0]
        return position[2] > 0.0 and float(np.hypot(*(np.array(position[:2]) - self._goal))) <= GOAL_RADIUS

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client = None

    def __del__(self) -> None:
        # An env dropped without close() would otherwise keep its physics server until the process ends.
        if getattr(self, "_client", None) is not None and pybullet.isConnected(self._client.client_id):
            self.close()

    # --- observations --------------------------------------------------------------------------------------------
    def project(self, points: np.ndarray) -> np.ndarray:
        """World points [..., 3] -> image coordinates [..., 2] ``(u, v)`` divided by the image size."""
        points = np.asarray(points, dtype=np.float64)
        clip = np.concatenate([points, np.ones((*points.shape[:-1], 1))], axis=-1) @ self._camera.T
        ndc = clip[..., :2] / clip[..., 3:]
        return np.stack([(ndc[..., 0] + 1.0) / 2.0, (1.0 - ndc[..., 1]) / 2.0], axis=-1)

    def _draw(self) -> tuple[np.ndarray, np.ndarray]:
        size = self.image_size
        _, _, rgba, _, segmentation = self._client.getCameraImage(
            size, size, self._view, self._projection, renderer=pybullet.ER_TINY_RENDERER, shadow=0,
            lightDirection=(0.4, -0.3, 1.0))
        frame = np.ascontiguousarray(np.asarray(rgba, np.uint8).reshape(size, size, 4)[..., :3])
        return frame, self._id_lut[np.asarray(segmentation).reshape(size, size) + 1]

    def _object_states(self) -> np.ndarray:
        ee, ee_velocity, ee_yaw = self._end_effector()
        rows = [(*ee, *(ee_velocity * PHYSICS_DT * SUBSTEPS), ee_yaw, AGENT_COLOR_ID, 2 * EE_RADIUS, 1.0, 0.0)]
        for i, cube in enumerate(self._cubes):
            position, orientation = self._client.getBasePositionAndOrientation(cube)
            velocity = np.array(self._client.getBaseVelocity(cube)[0]) * PHYSICS_DT * SUBSTEPS
            rows.append((*position, *velocity, pybullet.getEulerFromQuaternion(orientation)[2],
                         self._cube_colors[i], 2 * CUBE_HALF, 0.0, float(i == self._target)))
        states = np.array(rows, dtype=np.float64)
        return np.concatenate([self.project(states[:, :3]), states], axis=1).astype(np.float32)

    def planar_state(self) -> PlanarState:
        axes = np.stack([self._axis_u, self._axis_v], axis=1)  # world xy -> plane coordinates
        cubes = np.array([self._client.getBasePositionAndOrientation(c)[0][:2] for c in self._cubes])
        return PlanarState(
            agent=self._end_effector()[0][:2] @ axes, agent_radius=EE_RADIUS, objects=cubes @ axes,
            radii=np.full(len(self._cubes), CUBE_HALF * np.sqrt(2.0)), target=self._target,
            goal=self._goal @ axes, goal_radius=GOAL_RADIUS, step_size=STEP_SIZE,
            bounds=np.sort(np.stack([WORKSPACE_LOW @ axes, WORKSPACE_HIGH @ axes]), axis=0))
