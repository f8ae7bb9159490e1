"""What do the slots say about their objects? Linear probes from a slot to its object's ground-truth state.

    python benchmarks/slot_probe.py [--checkpoint PATH] [--env oc/ShapesOddOneOut-v0] [--episodes 40] [--steps 15]

Plays random-policy episodes through ``SlotObservation(include_masks=True, mask_source="attention")``; in every
frame each visible object is paired with the slot whose mask has the best IoU with it, and the slot vector
``[D]`` with the object's row of ``info["object_states"]``. A linear map (least squares, with a bias) is fitted on
the pairs of 70 % of the episodes and scored on the other episodes: R^2 for continuous columns (position, velocity, angle), accuracy
against the majority class for discrete ones (colour, shape, ``is_agent``...); for the discrete ones an MLP
(two hidden layers of 256, Adam, 1,500 steps of 256 pairs) too, which tells information held nonlinearly from
information absent. A policy on slots has to read these properties: a task that compares colours needs them.
Without ``--checkpoint`` the env's bundled checkpoint is probed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

# `python benchmarks/X.py` puts benchmarks/ first on the path; envs/ and agents/ live beside it (the wheel
# installs them as oc_perception_envs / oc_perception_agents, so an editable install does not provide them).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import envs  # noqa: F401  (registers the oc/ ids)
from oc_perception.metrics import masks_to_labels
from oc_perception.wrappers import SlotObservation, make

DISCRETE = ("color_id", "shape_id", "size", "is_agent", "is_target")


def collect(env_id: str, checkpoint: str | None, episodes: int, steps: int, seed: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """(slots [N, D], object states [N, S], episode index [N], state column names) of every (frame, visible
    object)."""
    env = make(env_id, wrappers=[lambda e: SlotObservation(e, checkpoint=checkpoint, include_masks=True,
                                                           mask_source="attention")])
    env.action_space.seed(seed)
    slots, states, episode_of = [], [], []
    for episode in tqdm(range(episodes), desc=env_id, leave=False):
        obs, info = env.reset(seed=seed + episode)
        for _ in range(steps):
            seg = torch.as_tensor(info["segmentation"]).long()  # [H, W]
            masks = torch.as_tensor(obs["masks"])  # [K, g, g]
            labels = masks_to_labels(masks[None, None], tuple(seg.shape))[0, 0]  # [H, W], as the metrics resize
            onehot = labels[None] == torch.arange(masks.shape[0])[:, None, None]  # [K, H, W]
            for row, object_id in enumerate(info["object_ids"]):
                target = seg == object_id
                if object_id == 0 or not target.any():
                    continue
                iou = (onehot & target).sum((1, 2)) / (onehot | target).sum((1, 2)).clamp(min=1)
                slots.append(obs["slots"][int(iou.argmax())])
                states.append(info["object_states"][row])
                episode_of.append(episode)
            obs, _, terminated, truncated, info = env.step(env.action_space.sample())
            if terminated or truncated:
                break
    names = env.unwrapped.object_state_names
    env.close()
    return np.asarray(slots), np.asarray(states), np.asarray(episode_of), names


def mlp_accuracy(x: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray, seed: int,
                 steps: int = 1500) -> float:
    """Test accuracy of an MLP classifier (2 x 256 hidden, inputs standardised on the training pairs)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    xs = torch.as_tensor(x, dtype=torch.float32)
    xs = (xs - xs[train].mean(0)) / xs[train].std(0).clamp(min=1e-6)
    classes, ys = np.unique(labels, return_inverse=True)
    ys = torch.as_tensor(ys)
    net = nn.Sequential(nn.Linear(xs.shape[1], 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                        nn.Linear(256, len(classes)))
    opt = torch.optim.Adam(net.parameters(), 1e-3, weight_decay=1e-4)
    train_t = torch.as_tensor(train)
    for _ in range(steps):
        batch = train_t[torch.randint(len(train_t), (256,), generator=gen)]
        loss = F.cross_entropy(net(xs[batch]), ys[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((net(xs[test]).argmax(1) == ys[test]).float().mean())


def probe(x: np.ndarray, y: np.ndarray, names: tuple[str, ...], seed: int, groups: np.ndarray | None = None,
          mlp_steps: int = 1500) -> list[tuple[str, str, float, float, float]]:
    """(column, metric, linear score, MLP accuracy or NaN, baseline) per state column: fitted on 70 % of the
    groups (episodes: frames of one episode are near-copies, and a probe scored on frames of its training
    episodes would recall them), scored on the other 30 %."""
    groups = np.arange(len(x)) if groups is None else groups
    ids = np.random.default_rng(seed).permutation(np.unique(groups))
    held_out = np.isin(groups, ids[int(0.7 * len(ids)):])
    train, test = np.flatnonzero(~held_out), np.flatnonzero(held_out)
    xb = np.c_[x, np.ones(len(x))]
    rows = []
    for j, name in enumerate(names):
        column = y[:, j]
        if name in DISCRETE:
            classes = np.unique(column)
            onehot = (column[:, None] == classes[None]).astype(np.float64)
            w = np.linalg.lstsq(xb[train], onehot[train], rcond=None)[0]
            accuracy = float(((xb[test] @ w).argmax(1) == onehot[test].argmax(1)).mean())
            deep = mlp_accuracy(x, column, train, test, seed, mlp_steps) if len(classes) > 1 else float("nan")
            rows.append((name, "accuracy", accuracy, deep, float(onehot[test].mean(0).max())))
        else:
            w = np.linalg.lstsq(xb[train], column[train], rcond=None)[0]
            var = column[test].var()
            r2 = float(1 - ((xb[test] @ w - column[test]) ** 2).mean() / var) if var > 0 else float("nan")
            rows.append((name, "R^2", r2, float("nan"), float("nan")))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--env", default="oc/ShapesOddOneOut-v0")
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--seed", type=int, default=10000)
    args = parser.parse_args()
    x, y, episodes, names = collect(args.env, args.checkpoint, args.episodes, args.steps, args.seed)
    print(f"{len(x)} (frame, object) pairs from {args.episodes} episodes of {args.env} (30 % of the episodes held "
          "out for scoring); "
          f"checkpoint: {args.checkpoint or 'bundled'}")
    print("| state | metric | linear probe | MLP probe | baseline (majority class) |\n|---|---|---:|---:|---:|")
    for name, metric, score, deep, baseline in probe(x, y, names, args.seed, groups=episodes):
        cells = [f"{v:.2f}" if v == v else "-" for v in (score, deep, baseline)]  # NaN -> "-"
        print(f"| {name} | {metric} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
