"""Stable-Baselines3 agents on slot observations."""

import importlib
from types import ModuleType


def __getattr__(name: str) -> ModuleType:
    # envs_package: our envs, "envs" beside this package in the repository and "oc_perception_envs" in an
    # installed wheel, which installs both under names no other project uses (pyproject.toml says why). Looked
    # up on first use, so the extractor alone (what a saved policy needs) does not import the simulators.
    if name == "envs_package":
        return importlib.import_module(__name__.replace("agents", "envs"))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
