"""What bf16 autocast costs in accuracy: slots and masks in bf16 against fp32 on held-out episodes.

    python benchmarks/precision_error.py [--checkpoint PATH] [--envs oc/ShapesPush-v0 ...] [--episodes 10]
        [--steps 40] [--seed 555000]

Plays each env with the exploration policy and feeds every frame to two ``SlotEncoder`` streams that share the
model, one in fp32 and one in bf16 (each keeps its own recurrent state, as a wrapper in that precision would).
Prints, per env, the max and mean absolute difference of the slots, the same relative to the fp32 slots' mean
absolute value, and the share of mask pixels (decoder masks) whose argmax slot agrees. On a CPU without native
bf16 (no AMX/AVX512-BF16) bf16 is emulated: the figures hold, the run is slower. Without ``--checkpoint`` each
env uses its bundled checkpoint.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

# `python benchmarks/X.py` puts benchmarks/ first on the path; envs/ and agents/ live beside it (the wheel
# installs them as oc_perception_envs / oc_perception_agents, so an editable install does not provide them).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import envs  # noqa: F401  (registers the oc/ ids)
from envs.policies import ExplorationPolicy
from oc_perception.checkpoint import load_model
from oc_perception.engine import SlotEncoder
from oc_perception.wrappers import make


def measure(env_id: str, checkpoint: str | None, episodes: int, steps: int, seed: int) -> dict[str, float]:
    model = load_model(checkpoint, env_id=env_id)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*native bfloat16")
        encoders = {p: SlotEncoder(model, include_masks=True, precision=p) for p in ("fp32", "bf16")}
    env = make(env_id, max_episode_steps=steps)
    policy = ExplorationPolicy(env, seed=seed)
    diffs, scales, agree = [], [], []
    for episode in tqdm(range(episodes), desc=env_id, leave=False):
        obs, info = env.reset(seed=seed + episode)
        policy.reset()
        for encoder in encoders.values():
            encoder.reset(1)
        for _ in range(steps):
            frame = env.render()[None]
            (full, _), (half, _) = (encoders[p].encode(frame) for p in ("fp32", "bf16"))
            diffs.append(np.abs(full["slots"] - half["slots"]))
            scales.append(np.abs(full["slots"]).mean())
            agree.append((full["masks"].argmax(1) == half["masks"].argmax(1)).mean())
            obs, _, terminated, truncated, info = env.step(policy(obs, info))
            if terminated or truncated:
                break
    env.close()
    diff = np.concatenate([d.ravel() for d in diffs])
    scale = float(np.mean(scales))
    return {"max": float(diff.max()), "mean": float(diff.mean()), "max_rel": float(diff.max()) / scale,
            "mean_rel": float(diff.mean()) / scale, "mask_agreement": float(np.mean(agree)), "frames": len(agree)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--envs", nargs="+",
                        default=["oc/ShapesReach-v0", "oc/ShapesPush-v0", "oc/ShapesOddOneOut-v0"])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seed", type=int, default=555_000)
    args = parser.parse_args()
    print(f"{args.episodes} episodes of up to {args.steps} steps per env, exploration policy, seeds from "
          f"{args.seed}; checkpoint: {args.checkpoint or 'bundled default'}; slots bf16 against fp32")
    print(f"{'env':<24} {'frames':>7} {'max |d|':>8} {'mean |d|':>9} {'max rel':>8} {'mean rel':>9} "
          f"{'mask argmax agrees':>19}")
    for env_id in args.envs:
        r = measure(env_id, args.checkpoint, args.episodes, args.steps, args.seed)
        print(f"{env_id:<24} {r['frames']:7d} {r['max']:8.4f} {r['mean']:9.5f} {r['max_rel']:8.4f} "
              f"{r['mean_rel']:9.5f} {r['mask_agreement']:19.4f}")


if __name__ == "__main__":
    main()
