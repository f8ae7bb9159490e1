"""Where do objects leave the slot of their first visible frame? Out-of-first-slot rates by circumstance.

    python benchmarks/switch_causes.py [--checkpoint PATH] [--envs oc/PandaPush-v0 ...] [--episodes 20]
        [--steps 40] [--seed 555000] [--first-frame-passes N] [--dormant-below PATCHES] [--lost-frames PNG]

Plays episodes as ``benchmarks/slot_consistency.py`` does (the exploration policy, ``SlotObservation`` with the
decoder masks) and, for every (object, visible frame after its first), asks whether the object's best-IoU slot is
the slot of its first visible frame (``first_slot_share``'s question). It then splits those frames by
circumstance and prints the out-of-first-slot rate of each:

- touching: another object's pixels within 2 pixels of the object's (a robot at a cube, the agent at a shape);
- partly hidden: fewer visible pixels than 60 % of the object's median in the episode;
- smaller / larger: the object's visible area below or above the median of all (object, frame) pairs;
- by visible area: under 10, 10-25, 25-50 and 50 or more pixels;
- after hiding: the object was partly hidden (as above) or out of view at an earlier frame since its first.

and, of the frames out of the first slot, how many sit in the slot that holds most of a touching object's
pixels: the object's pixels were taken by its neighbour's mask. ``--lost-frames`` writes a PNG of the first
frames out of the first slot, one row each: the frame, the object in magenta, the slots (argmax of the decoder
masks), and the same with the object's first slot in white (absent: the slot holds none of the frame).
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import envs  # noqa: F401  (registers the oc/ ids)
from envs.policies import ExplorationPolicy
from oc_perception.checkpoint import load_model
from oc_perception.consistency import best_iou_slots
from oc_perception.io import save_png
from oc_perception.metrics import masks_to_labels
from oc_perception.wrappers import SlotObservation, make

TOUCH_PIXELS = 2
HIDDEN_FRACTION = 0.6
AREA_BINS = (0, 10, 25, 50)
LOST_ROWS = 8
PALETTE = np.random.default_rng(0).integers(40, 230, (64, 3), dtype=np.uint8)


class KeepFrame(gym.ObservationWrapper):
    """Keeps the last RGB observation (``frame``) for the lost-frame sheet, under ``SlotObservation``."""

    def observation(self, observation: np.ndarray) -> np.ndarray:
        self.frame = np.asarray(observation)
        return observation


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
        hidden = area < HIDDEN_FRACTION * median_area  # [T]
        hidden_since = hidden.long().cumsum(0)  # [T] hidden frames up to t
        for t in frames[1:]:
            touching_ids = seg[t][near[t] & others[t]].unique()
            neighbour_slots = set()
            for n in touching_ids.tolist():  # the slot holding most of each touching object's pixels
                neighbour_slots.add(int(torch.bincount(labels[t][seg[t] == n], minlength=num_slots).argmax()))
            records.append({"out": float(best[t, o] != first), "touching": float(touching_ids.numel() > 0),
                            "hidden": float(hidden[t]), "area": float(area[t]),
                            "after_hiding": float(hidden_since[t - 1] > hidden_since[frames[0]]),
                            "in_neighbour_slot": float(int(best[t, o]) in neighbour_slots),
                            "t": t, "object_id": object_id, "first_slot": first})
    return records


def lost_row(frame: np.ndarray, labels: torch.Tensor, seg: torch.Tensor, record: dict[str, float]) -> np.ndarray:
    """frame | object in magenta | slots | slots with the object's first slot in white, at the segmentation's
    size: uint8 [H, 4 W, 3]."""
    h, w = seg.shape
    frame = np.asarray(F.interpolate(torch.as_tensor(frame).permute(2, 0, 1)[None].float(), size=(h, w),
                                     mode="bilinear", antialias=True)[0].permute(1, 2, 0).round().clamp(0, 255).byte())
    marked = frame.copy()
    marked[(seg == record["object_id"]).numpy()] = (255, 0, 255)
    slots = PALETTE[labels.numpy() % len(PALETTE)]
    first = slots.copy()
    first[(labels == record["first_slot"]).numpy()] = 255
    return np.concatenate([frame, marked, slots, first], axis=1)


def measure(env_id: str, checkpoint: str | None, episodes: int, steps: int, seed: int,
            first_frame_passes: int | None, dormant_below: float | None = None,
            lost_rows: list[np.ndarray] | None = None) -> list[dict[str, float]]:
    model = load_model(checkpoint, env_id=env_id)
    if dormant_below is not None:
        model.cfg.slot_attention.dormant_below = dormant_below
    env = make(env_id, wrappers=[KeepFrame, partial(SlotObservation, checkpoint=model, include_masks=True,
                                                    first_frame_passes=first_frame_passes)], max_episode_steps=steps)
    policy = ExplorationPolicy(env, seed=seed)
    records = []
    for episode in tqdm(range(episodes), desc=env_id, leave=False):
        obs, info = env.reset(seed=seed + episode)
        policy.reset()
        masks, segs, frames = [obs["masks"]], [info["segmentation"]], [env.get_wrapper_attr("frame")]
        for _ in range(steps):
            obs, _, terminated, truncated, info = env.step(policy(obs, info))
            masks.append(obs["masks"])
            segs.append(info["segmentation"])
            frames.append(env.get_wrapper_attr("frame"))
            if terminated or truncated:
                break
        seg = torch.as_tensor(np.stack(segs)).long()
        labels = masks_to_labels(torch.as_tensor(np.stack(masks))[None], seg.shape[-2:])[0]
        episode_records = frame_records(labels, seg)
        shown: dict[int, int] = {}
        for r in episode_records:  # two rows at most per object and episode, so the sheet shows several
            if lost_rows is not None and r["out"] and len(lost_rows) < LOST_ROWS and shown.get(r["object_id"], 0) < 2:
                shown[r["object_id"]] = shown.get(r["object_id"], 0) + 1
                t = int(r["t"])
                lost_rows.append(lost_row(frames[t], labels[t], seg[t], r))
        records += episode_records
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
                    (f"larger (>= {median_area:.0f} px)", r["area"] >= median_area),
                    *[(f"visible {lo}-{hi} px" if hi else f"visible >= {lo} px",
                       (r["area"] >= lo) & (r["area"] < (hi or np.inf)))
                      for lo, hi in zip(AREA_BINS, (*AREA_BINS[1:], None))],
                    ("after hiding", r["after_hiding"] == 1), ("never hidden since its first frame",
                                                             r["after_hiding"] == 0)]:
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
    parser.add_argument("--dormant-below", type=float, default=None,
                        help="model.slot_attention.dormant_below, in input patches (default: the checkpoint's)")
    parser.add_argument("--lost-frames", type=Path, default=None,
                        help=f"write a PNG of the first {LOST_ROWS} frames out of the first slot (first env)")
    args = parser.parse_args()
    if args.lost_frames is not None and args.lost_frames.exists():
        parser.error(f"--lost-frames {args.lost_frames} exists; pick a new path")
    print(f"{args.episodes} episodes of up to {args.steps} steps per env, exploration policy, seeds from "
          f"{args.seed}; checkpoint: {args.checkpoint or 'bundled default'}")
    rows: list[np.ndarray] = []
    for i, env_id in enumerate(args.envs):
        report(env_id, measure(env_id, args.checkpoint, args.episodes, args.steps, args.seed,
                               args.first_frame_passes, args.dormant_below,
                               rows if args.lost_frames is not None and i == 0 else None))
    if rows:
        sheet = np.concatenate(rows, axis=0)
        sheet = sheet.repeat(3, axis=0).repeat(3, axis=1)  # nearest-neighbour x3: a cube is a few pixels wide
        print(f"lost frames: {save_png(args.lost_frames, sheet)}")


if __name__ == "__main__":
    main()
