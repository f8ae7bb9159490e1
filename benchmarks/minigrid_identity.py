"""Which MiniGrid objects keep their slot? The first-frame-slot share per kind of object, beside a tracker's.

    python benchmarks/minigrid_identity.py --checkpoint PATH [--env minigrid:MiniGrid-Dynamic-Obstacles-6x6-v0]
        [--env-kwargs '{highlight: false}'] [--policy envs.policies:MiniGridWalk] [--episodes 20] [--steps 24]
        [--seed 555000] [--first-frame-passes N]

Plays episodes with ``--policy`` through ``MiniGridSegmentation`` (masks drawn from the grid state, for scoring
only) and ``SlotObservation(include_masks=True)``. Per kind of object (agent, ball, goal, key,
door, ...): "slots" is the share of an object's visible frames after its first that sit in the slot of its first
visible frame (the first-frame-slot share of ``slot_identity_stats``, pooled over the objects of that kind), and
"position tracker" the share of the same frames in which a tracker that is given every object's exact centre, but
not which object is which, is still on the object it started on: it links the objects of one kind from frame to
frame by the smallest total distance. Identical objects that jump from cell to cell (Dynamic-Obstacles' balls) can
trade places unseen; the tracker's share says how much identity the frames hold at all. "in the floor's slot" is
the share of an object's visible frames in which its best-overlap slot is the slot that holds most of the
background: an object merged into the floor never changes slot, so a high share there is no identity.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

# `python benchmarks/X.py` puts benchmarks/ first on the path; envs/ lives beside it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envs.minigrid_masks import MiniGridSegmentation
from oc_perception.checkpoint import load_model
from oc_perception.cli import yaml_mapping
from oc_perception.consistency import best_iou_slots
from oc_perception.data.generate import load_policy
from oc_perception.metrics import masks_to_labels
from oc_perception.wrappers import SlotObservation, make


def centres(segmentation: np.ndarray, ids: list[int]) -> dict[int, np.ndarray]:
    """``{id: [row, col]}`` centre of each id's pixels in one frame ``[H, W]`` (absent ids left out)."""
    out = {}
    for i in ids:
        rows, cols = np.nonzero(segmentation == i)
        if len(rows):
            out[i] = np.array([rows.mean(), cols.mean()])
    return out


def tracker_hits(segmentations: np.ndarray, ids: list[int]) -> tuple[int, int]:
    """(frames on the starting object, frames) for a nearest-position tracker of ``ids`` over ``[T, H, W]``."""
    first = centres(segmentations[0], ids)
    tracks = {i: i for i in first}  # starting id -> the id the track is on now
    hits = total = 0
    now = first
    for t in range(1, len(segmentations)):
        before, now = now, centres(segmentations[t], ids)
        heads = [start for start, on in tracks.items() if on in before]
        candidates = list(now)
        if heads and candidates:
            cost = np.array([[np.sum((before[tracks[h]] - now[c]) ** 2) for c in candidates] for h in heads])
            for row, col in zip(*linear_sum_assignment(cost)):
                tracks[heads[row]] = candidates[col]
        for start, on in tracks.items():
            if start in now:  # the object is in view: is its track still on it?
                hits += on == start
                total += 1
    return hits, total


def measure(checkpoint: str, env_id: str, env_kwargs: dict, policy: str, episodes: int, steps: int, seed: int,
            first_frame_passes: int | None) -> dict[str, dict[str, float]]:
    make_policy = load_policy(policy)
    model = load_model(checkpoint, env_id=env_id)
    env = make(env_id, wrappers=[MiniGridSegmentation, partial(SlotObservation, checkpoint=model, include_masks=True,
                                                               first_frame_passes=first_frame_passes)],
               max_episode_steps=steps, **env_kwargs)
    # per kind: [frames in the first slot, later frames, tracker hits, tracker frames, frames in the floor's slot,
    # visible frames]
    counts: dict[str, list[int]] = {}
    for episode in tqdm(range(episodes), desc=env_id, leave=False):
        obs, info = env.reset(seed=seed + episode)
        act = make_policy(env, seed + episode)
        masks, segmentations = [obs["masks"]], [info["segmentation"]]
        while True:
            obs, _, terminated, truncated, info = env.step(act(obs, info))
            masks.append(obs["masks"])
            segmentations.append(info["segmentation"])
            if terminated or truncated:
                break
        segmentations = np.stack(segmentations)
        seg = torch.as_tensor(segmentations).long()
        labels = masks_to_labels(torch.as_tensor(np.stack(masks))[None], seg.shape[-2:])[0]  # [T, H, W]
        object_ids, best_slot, visible = best_iou_slots(labels, seg)
        floor_slot = torch.stack([torch.bincount(labels[t][seg[t] == 0], minlength=int(labels.max()) + 1).argmax()
                                  for t in range(len(seg))])  # [T]
        kinds = info["segmentation_kinds"]
        for o, i in enumerate(object_ids.tolist()):
            slots = best_slot[visible[:, o], o]  # the object's slot in each frame it is visible in
            c = counts.setdefault(kinds[i], [0, 0, 0, 0, 0, 0])
            c[0] += int((slots[1:] == slots[0]).sum())
            c[1] += len(slots) - 1
            c[4] += int((best_slot[:, o] == floor_slot)[visible[:, o]].sum())
            c[5] += len(slots)
        for kind in {kinds[i] for i in object_ids.tolist()}:
            ids = [i for i, k in kinds.items() if k == kind]
            hits, total = tracker_hits(np.where(np.isin(segmentations, ids), segmentations, 0), ids)
            counts[kind][2] += hits
            counts[kind][3] += total
    env.close()
    return {kind: {"objects_frames": c[1], "slots": c[0] / c[1] if c[1] else float("nan"),
                   "tracker": c[2] / c[3] if c[3] else float("nan"),
                   "floor": c[4] / c[5] if c[5] else float("nan")} for kind, c in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a model trained on the env (e.g. a fit's model)")
    parser.add_argument("--env", default="minigrid:MiniGrid-Dynamic-Obstacles-6x6-v0")
    parser.add_argument("--env-kwargs", type=yaml_mapping, default={"highlight": False},
                        help="env constructor arguments, a YAML mapping (default: '{highlight: false}')")
    parser.add_argument("--policy", default="envs.policies:MiniGridWalk",
                        help="'random' or MODULE:NAME, as data.generate takes it")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--seed", type=int, default=555_000)
    parser.add_argument("--first-frame-passes", type=int, default=None,
                        help="passes over each episode's first frame (default: the checkpoint's)")
    args = parser.parse_args()
    results = measure(args.checkpoint, args.env, args.env_kwargs, args.policy, args.episodes, args.steps, args.seed,
                      args.first_frame_passes)
    print(f"{args.env} {args.env_kwargs}, {args.episodes} episodes of up to {args.steps} steps from seed "
          f"{args.seed}, policy {args.policy}; checkpoint {args.checkpoint}")
    print(f"{'object':<10} {'later frames':>13} {'slots: first-frame-slot share':>30} {'position tracker':>17} "
          f"{'in the floor' + chr(39) + 's slot':>20}")
    for kind, r in sorted(results.items()):
        print(f"{kind:<10} {r['objects_frames']:>13d} {r['slots']:>30.3f} {r['tracker']:>17.3f} {r['floor']:>20.3f}")


if __name__ == "__main__":
    main()
