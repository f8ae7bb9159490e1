"""Stable-Baselines3 agents on slot observations."""

import importlib
from types import ModuleType

# Our envs, imported here so that every module of this package (and every SubprocVecEnv worker that imports
# one) has the oc/ ids registered. The package is "envs" beside this one in the repository and
# "oc_perception_envs" in an installed wheel, which installs both under names no other project uses
# (pyproject.toml says why).
envs_package: ModuleType = importlib.import_module(__name__.replace("agents", "envs"))
