"""`make demo`: PPO on SlotContrast slots against PPO on pixels in oc/ShapesOddOneOut-v0, at the same budget.

Trains ``configs/agents/oddoneout_slots.yml`` twice for ``BUDGET`` env steps, once on slots (the bundled
perception checkpoint) and once on pixels (SB3's ``CnnPolicy``), in ``runs/demo/<obs>``; a run whose
``result.json`` was made with the same config (and, for slots, the same checkpoint by content) is read instead
of trained again. Ends with the two success rates beside a random policy's (the same 50 seeded episodes), the
TensorBoard logs and a video of one slot-agent episode with the masks overlaid. About 6 minutes on 2 idle CPU
cores when both are trained (docs/agents.md).

The slots come from the env's default perception model, the label-free one (no simulator mask trained it;
docs/models.md). ``--recipe supervised`` takes them from the supervised model instead, in
``runs/demo/slots_supervised``; the pixel run is the same.
"""

import argparse
import sys
from pathlib import Path

from oc_perception.checkpoint import RECIPES, default_checkpoint
from oc_perception.config import CONFIG_DIR

from . import ppo
from .config import load_agent_config

CONFIG = CONFIG_DIR / "agents" / "oddoneout_slots.yml"
LOG_DIR = Path("runs/demo")
BUDGET = 100_000  # env steps per observation type


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m agents.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", choices=list(RECIPES), default="default",
                    help="which bundled perception model gives the slots (default: the env's default, "
                         "docs/models.md)")
    args = ap.parse_args(argv)
    env_id = load_agent_config(CONFIG).env_id
    try:
        perception = default_checkpoint(env_id, args.recipe)
    except FileNotFoundError:
        sys.exit(f"error: the demo needs the bundled perception checkpoint of {env_id} (oc_perception/checkpoints/"
                 f"{RECIPES[args.recipe][env_id]}), which is missing; train it: see docs/checkpoints.md")
    results = {}
    for obs in ("slots", "pixels"):
        cfg = load_agent_config(CONFIG, [f"obs={obs}", f"total_timesteps={BUDGET}"])
        # The default model is the run's default (None); another is passed. Both are recorded by content.
        checkpoint = perception if obs == "slots" and args.recipe != "default" else None
        log_dir = LOG_DIR / (f"slots_{args.recipe}" if checkpoint is not None else obs)
        result = ppo.RunResult.load(log_dir, cfg, checkpoint)
        if result is None:
            print(f"training PPO on {obs} for {BUDGET:,} env steps -> {log_dir}", flush=True)
            result = ppo.train(cfg, log_dir, checkpoint, overwrite=True)  # a run of another config is replaced
        else:
            print(f"PPO on {obs}: read the finished run of this config in {log_dir}")
        print(ppo.summary(cfg, result), flush=True)
        results[obs] = result
    slots, pixels = results["slots"], results["pixels"]
    verdict = "ahead of" if slots.success_rate > pixels.success_rate else "not ahead of"
    print(f"\n{env_id} after {BUDGET:,} env steps: slots {slots.success_rate:.2f}, pixels {pixels.success_rate:.2f}, "
          f"random policy {slots.random_success_rate:.2f} (same episodes): slots are {verdict} pixels. Slot-agent "
          f"episode with masks: {slots.video_path}")


if __name__ == "__main__":
    main()
