"""oc-perception: object-centric perception for robot learning.

Temporally consistent object slots from SlotContrast, as Gymnasium observations.
"""

from typing import Any

from oc_perception.model import SlotContrast, SlotState
from oc_perception.wrappers import SlotObservation, VectorSlotObservation, make

__all__ = ["SlotContrast", "SlotObservation", "SlotState", "VecSlotObservation", "VectorSlotObservation", "make"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "VecSlotObservation":  # imports Stable-Baselines3, which the rest of the library does not need
        from oc_perception.sb3 import VecSlotObservation

        return VecSlotObservation
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
