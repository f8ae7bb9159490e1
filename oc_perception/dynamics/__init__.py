"""SlotFormer-style slot dynamics: predict future slots from a history of slot sets (and actions).

    python -m oc_perception.dynamics.extract ...    # slot trajectories from an env or video shards
    python -m oc_perception.dynamics.train ...      # train SlotDynamics on them
    python -m oc_perception.dynamics.evaluate ...   # rollout slot MSE, FG-ARI and mBO vs copy-last

See docs/dynamics.md.
"""

from oc_perception.dynamics.model import SlotDynamics, load_dynamics, save_dynamics
from oc_perception.dynamics.predictor import DynamicsPredictor, SlotPrediction

__all__ = ["DynamicsPredictor", "SlotDynamics", "SlotPrediction", "load_dynamics", "save_dynamics"]
