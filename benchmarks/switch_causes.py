"""Where do objects leave the slot of their first visible frame? Out-of-first-slot rates by circumstance.

    python benchmarks/switch_causes.py [--checkpoint PATH] [--envs oc/PandaPush-v0 ...] [--episodes 20]
        [--steps 40] [--seed 555000] [--first-frame-passes N]

Plays episodes as ``benchmarks/slot_consistency.py`` does (the exploration policy, ``SlotObservation`` with the
decoder masks) and, for every (object, visible frame after its first), asks whether the object's best-IoU slot is
the slot of its first visible frame (``first_slot_share``'s question). It then splits those frames by
circumstance and prints the out-of-first-slot rate of each:

- touching: another object's pixels within 2 pixels of the object's (a robot at a cube, the agent at a shape);
- partly hidden: fewer visible pixels than 60 % of the object's median in the episode;
- smaller / larger: the object's visible area below or above the median of all (object, frame) pairs.

and, of the frames out of the first slot, how many sit in the slot that holds most of a touching object's
pixels: the object's pixels were taken by its neighbour's mask.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import envs  # noqa: F401  (registers the oc/ ids)
from envs.policies import ExplorationPolicy
from oc_perception.checkpoint import load_model
from oc_perception.consistency import best_iou_slots
from oc_perception.metrics import masks_to_labels
from oc_perception.wrappers import SlotObservation, make

TOUCH_PIXELS = 2
HIDDEN_FRACTION = 0.6


def frame_records(labels: torch.Tensor, seg: torch.Tensor) -> list[dict[str, float]]:
    """One record per (object, visible frame after its first) of an episode.

    labels: slot per pixel [T, H, W]; seg: object id per pixel [T, H, W], 0 = background.
    """
    num_slots = int(labels.max()) + 1
    object_ids, best, visible = best_iou_slots(labels, seg)  # [O], [T, O], [T, O]
    records = []
    for o, object_id in enumerate(object_ids.tolist()):
        frames = torch.nonzero(visible[:, o]).flatten().tolist()
        if len(frames) < 2:
            continue
        obj = seg == object_id  # [T, H, W]
        area = obj.flatten(1).sum(1)  # [T]
        others = (seg > 0) & ~obj
        near = F.max_pool2d(obj[:, None].float(), 2 * TOUCH_PIXELS + 1, 1, TOUCH_PIXELS)[:, 0] > 0
        median_area = float(area[frames].double().median())
        first = int(best[frames[0], o])
        for t in frames[1:]:
            touching_ids = seg[t][near[t] & others[t]].unique()
            neighbour_slots = set()
            for n in touching_ids.tolist():  # the slot holding most of each touching object's pixels
                neighbour_slots.add(int(torch.bincount(labels[t][seg[t] == n], minlength=num_slots).argmax()))
            records.append({"out": float(best[t, o] != first), "touching": float(touching_ids.numel() > 0),
                            "hidden": float(area[t] < HIDDEN_FRACTION * median_area), "area": float(area[t]),
                            "in_neighbour_slot": float(int(best[t, o]) in neighbour_slots)})
    return records


def measure(env_id: str, checkpoint: str | None, episodes: int, steps: int, seed: int,
            first_frame_passes: int | None) -> list[dict[str, float]]:
    model = load_model(checkpoint, env_id=env_id)
    env = make(env_id, wrappers=[partial(SlotObservation, checkpoint=model, include_masks=True,
                                         first_frame_passes=first_frame_passes)], max_episode_steps=steps)
    policy = ExplorationPolicy(env, seed=seed)
    records = []
    for episode in tqdm(range(episodes), desc=env_id, leave=False):
        obs, info = env.reset(seed=seed + episode)
        policy.reset()
        masks, segs = [obs["masks"]], [info["segmentation"]]
        for _ in range(steps):
            obs, _, terminated, truncated, info = env.step(policy(obs, info))
            masks.append(obs["masks"])
            segs.append(info["segmentation"])
            if terminated or truncated:
                break
        seg = torch.as_tensor(np.stack(segs)).long()
        labels = masks_to_labels(torch.as_tensor(np.stack(masks))[None], seg.shape[-2:])[0]
        records += frame_records(labels, seg)
    env.close()
    return records


def report(env_id: str, records: list[dict[str, float]]) -> None:
    r = {k: np.array([x[k] for x in records]) for k in records[0]}
    median_area = np.median(r["area"])
    print(f"\n{env_id}: {len(records)} (object, later frame) pairs; out of the first slot in {r['out'].mean():.3f}")
    print(f"{'circumstance':<34} {'frames':>7} {'out of first slot':>18} {'share of all out':>17}")
    for name, m in [("touching another object", r["touching"] == 1), ("apart", r["touching"] == 0),
                    ("partly hidden", r["hidden"] == 1), ("not hidden", r["hidden"] == 0),
                    (f"smaller (< {median_area:.0f} px)", r["area"] < median_area),
                    (f"larger (>= {median_area:.0f} px)", r["area"] >= median_area)]:
        out = r["out"][m]
        print(f"{name:<34} {m.sum():7d} {out.mean() if m.any() else float('nan'):18.3f} "
              f"{out.sum() / max(r['out'].sum(), 1):17.3f}")
    out = r["out"] == 1
    print(f"of the frames out of the first slot, in the slot of a touching object: "
          f"{(out & (r['in_neighbour_slot'] == 1)).sum()} of {out.sum()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="model file or step checkpoint (default: the env's)")
    parser.add_argument("--envs", nargs="+", default=["oc/PandaPush-v0"])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seed", type=int, default=555_000)
    parser.add_argument("--first-frame-passes", type=int, default=None,
                        help="passes over each episode's first frame (default: the checkpoint's)")
    args = parser.parse_args()
    print(f"{args.episodes} episodes of up to {args.steps} steps per env, exploration policy, seeds from "
          f"{args.seed}; checkpoint: {args.checkpoint or 'bundled default'}")
    for env_id in args.envs:
        report(env_id, measure(env_id, args.checkpoint, args.episodes, args.steps, args.seed,
                               args.first_frame_passes))


if __name__ == "__main__":
    main()
