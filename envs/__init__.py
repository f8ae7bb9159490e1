"""Gymnasium environments for object-centric robot learning, with ground-truth segmentation.

Importing ``envs`` registers ``oc/ShapesReach-v0``, ``oc/ShapesPush-v0``, ``oc/ShapesOddOneOut-v0`` and
``oc/PandaPush-v0`` (100 steps per episode through ``TimeLimit``). Every id accepts the env's constructor
keyword arguments and ``wrappers=[...]`` (applied in order to the raw env, inside ``TimeLimit``)::

    import gymnasium as gym
    import envs

    env = gym.make("oc/ShapesPush-v0", image_size=64, continuous=True, wrappers=[MyWrapper])
    obs, info = env.reset(seed=0)  # obs uint8 [64, 64, 3]; info["segmentation"] int32 [64, 64]

See ``envs.base.ObjectCentricEnv`` for the spaces and ``info`` keys shared by every env, ``envs.policies``
for scripted policies (``MiniGridWalk`` for MiniGrid), ``envs.minigrid_masks`` for object masks of MiniGrid envs
(to score a model on them) and ``python -m envs.play`` for videos.
"""

from .base import ACTION_MEANINGS, ObjectCentricEnv, PlanarState
from .panda import PandaPushEnv
from .registration import ENV_IDS, make_with_wrappers, register_envs
from .shapes import ShapesEnv, ShapesOddOneOutEnv, ShapesPushEnv, ShapesReachEnv

register_envs()

__all__ = ["ACTION_MEANINGS", "ENV_IDS", "ObjectCentricEnv", "PandaPushEnv", "PlanarState", "ShapesEnv",
           "ShapesOddOneOutEnv", "ShapesPushEnv", "ShapesReachEnv", "make_with_wrappers", "register_envs"]
