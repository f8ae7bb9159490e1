"""`make demo`: PPO on SlotContrast slots in oc/ShapesOddOneOut-v0 with the bundled perception checkpoint.

Runs ``python -m agents.ppo configs/agents/oddoneout_slots.yml --log-dir runs/demo``: 200k env steps, about
8 minutes on 2 CPU cores (throughput, budget and the measured run: docs/agents.md), then one line with the
agent's success rate beside a random policy's (same 50 episodes) and the paths of the TensorBoard log and of a
video of one episode with the slot masks overlaid.
"""

import sys

from agents import ppo
from agents.config import load_agent_config
from oc_perception.checkpoint import CONFIG_DIR, DEFAULT_CHECKPOINTS, default_checkpoint

CONFIG = CONFIG_DIR / "agents" / "oddoneout_slots.yml"
LOG_DIR = "runs/demo"


def main() -> None:
    env_id = load_agent_config(CONFIG).env_id
    try:
        default_checkpoint(env_id)
    except FileNotFoundError:
        sys.exit(f"error: the demo needs the bundled perception checkpoint of {env_id} (oc_perception/checkpoints/"
                 f"{DEFAULT_CHECKPOINTS[env_id]}), which is missing; train it: see docs/checkpoints.md")
    ppo.main([str(CONFIG), "--log-dir", LOG_DIR])


if __name__ == "__main__":
    main()
