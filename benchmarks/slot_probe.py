"""What do the slots say about their objects? Linear probes from a slot to its object's ground-truth state.

    python benchmarks/slot_probe.py [--checkpoint PATH] [--env oc/ShapesOddOneOut-v0] [--episodes 40] [--steps 15]

Plays random-policy episodes through ``SlotObservation(include_masks=True, mask_source="attention")``; in every
frame each visible object is paired with the slot whose mask has the best IoU with it, and the slot vector
``[D]`` with the object's row of ``info["object_states"]``. A linear map (least squares, with a bias) is fitted on
70 % of the pairs and scored on the rest: R^2 for continuous columns (position, velocity, angle), accuracy
against the majority class for discrete ones (colour, shape, ``is_agent``...). A policy on slots has to read
these properties: a task that compares colours needs them in the slots, and readable without much learning.
Without ``--checkpoint`` the env's bundled checkpoint is probed.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import envs  # noqa: F401  (registers the oc/ ids)
from oc_perception.wrappers import SlotObservation, make

DISCRETE = ("color_id", "shape_id", "size", "is_agent", "is_target")


def collect(env_id: str, checkpoint: str | None, episodes: int, steps: int, seed: int
            ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(slots [N, D], object states [N, S], state column names) of every (frame, visible object)."""
    env = make(env_id, wrappers=[lambda e: SlotObservation(e, checkpoint=checkpoint, include_masks=True,
                                                           mask_source="attention")])
    env.action_space.seed(seed)
    slots, states = [], []
    for episode in tqdm(range(episodes), desc=env_id, leave=False):
        obs, info = env.reset(seed=seed + episode)
        for _ in range(steps):
            seg = torch.as_tensor(info["segmentation"]).long()  # [H, W]
            masks = torch.as_tensor(obs["masks"])[None]  # [1, K, g, g]
            labels = F.interpolate(masks, size=tuple(seg.shape), mode="bilinear")[0].argmax(0)  # [H, W]
            onehot = labels[None] == torch.arange(masks.shape[1])[:, None, None]  # [K, H, W]
            for row, object_id in enumerate(info["object_ids"]):
                target = seg == object_id
                if object_id == 0 or not target.any():
                    continue
                iou = (onehot & target).sum((1, 2)) / (onehot | target).sum((1, 2)).clamp(min=1)
                slots.append(obs["slots"][int(iou.argmax())])
                states.append(info["object_states"][row])
            obs, _, terminated, truncated, info = env.step(env.action_space.sample())
            if terminated or truncated:
                break
    names = env.unwrapped.object_state_names
    env.close()
    return np.asarray(slots), np.asarray(states), names


def probe(x: np.ndarray, y: np.ndarray, names: tuple[str, ...], seed: int) -> list[tuple[str, str, float, float]]:
    """(column, metric, score, baseline) per state column: linear least squares on 70 %, scored on 30 %."""
    order = np.random.default_rng(seed).permutation(len(x))
    train, test = order[: int(0.7 * len(x))], order[int(0.7 * len(x)):]
    xb = np.c_[x, np.ones(len(x))]
    rows = []
    for j, name in enumerate(names):
        column = y[:, j]
        if name in DISCRETE:
            classes = np.unique(column)
            onehot = (column[:, None] == classes[None]).astype(np.float64)
            w = np.linalg.lstsq(xb[train], onehot[train], rcond=None)[0]
            accuracy = float(((xb[test] @ w).argmax(1) == onehot[test].argmax(1)).mean())
            rows.append((name, "accuracy", accuracy, float(onehot[test].mean(0).max())))
        else:
            w = np.linalg.lstsq(xb[train], column[train], rcond=None)[0]
            var = column[test].var()
            r2 = float(1 - ((xb[test] @ w - column[test]) ** 2).mean() / var) if var > 0 else float("nan")
            rows.append((name, "R^2", r2, 0.0))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--env", default="oc/ShapesOddOneOut-v0")
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--seed", type=int, default=10000)
    args = parser.parse_args()
    x, y, names = collect(args.env, args.checkpoint, args.episodes, args.steps, args.seed)
    print(f"{len(x)} (frame, object) pairs from {args.episodes} episodes of {args.env}; "
          f"checkpoint: {args.checkpoint or 'bundled'}")
    print("| state | metric | linear probe | baseline (majority class) |\n|---|---|---:|---:|")
    for name, metric, score, baseline in probe(x, y, names, args.seed):
        print(f"| {name} | {metric} | {score:.2f} | {f'{baseline:.2f}' if metric == 'accuracy' else '-'} |")


if __name__ == "__main__":
    main()
