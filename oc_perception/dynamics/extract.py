"""Slot trajectories for dynamics training: play an env (or read video shards) through a perception model.

    python -m oc_perception.dynamics.extract --env oc/ShapesPush-v0 --episodes 300 --val-episodes 50 --steps 24 \\
        --out data/dynamics/shapes_push
    python -m oc_perception.dynamics.extract --checkpoint movi_c.safetensors --data-dir /data \\
        --shards 'movi_c/movi_c-train-*.tar' --val-shards 'movi_c/movi_c-validation-*.tar' --out data/dynamics/movi_c

Env mode plays ``--episodes`` training and ``--val-episodes`` validation episodes of ``--steps`` frames with the
policy of ``--policy`` (``explore``: our envs' exploration policy ``envs.policies:ExplorationPolicy``; ``random``:
uniform actions; or any ``MODULE:NAME`` taking ``(env, seed=...)``), recording each action. Only full-length
episodes are kept (one that ends early is replayed with a new seed), so no trajectory spans a reset. Shard mode
reads videos and their segmentations (no actions), optionally cut to their first ``--steps`` frames.

The perception model (``--checkpoint``; default: the bundled one of ``--env``; official ``.ckpt`` files work as
in ``oc_perception.inference``) streams over each batch of episodes frame by frame with ``model.step``, as the
slot observation wrappers do. The output layout is described in ``oc_perception.dynamics.data``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from oc_perception.cli import run_or_exit
from oc_perception.checkpoint import CheckpointError, default_checkpoint
from oc_perception.data.generate import OUR_POLICY, load_policy, make_env, record_episode
from oc_perception.data.shards import ShardError, expand_shards, iter_videos, segmentation_to_labels
from oc_perception.dynamics.data import SPLITS, save_meta, save_split
from oc_perception.checkpoint import load_model
from oc_perception.devices import resolve_device
from oc_perception.model.slotcontrast import SlotContrast



class ExtractError(ValueError):
    """Arguments or data that cannot give trajectories."""


# Errors that stop a run with one line (KeyError: an env id without a bundled checkpoint).
USER_ERRORS = (ExtractError, CheckpointError, ShardError, FileNotFoundError, FileExistsError, KeyError, gym.error.Error)


class RecordingPolicy:
    """Calls ``policy(obs, info)`` and keeps the actions it returns."""

    def __init__(self, policy: Any) -> None:
        self.policy, self.actions = policy, []

    def __call__(self, obs: Any, info: dict | None) -> Any:
        action = self.policy(obs, info)
        self.actions.append(action)
        return action


def env_episodes(env: gym.Env, episodes: int, steps: int, policy: Any, seed: Any) -> Iterator[dict[str, np.ndarray]]:
    """Yield ``episodes`` full-length episodes ``{"frames", "segmentations", "actions"}``, reproducible from ``seed``.

    Raises ExtractError when fewer than one in ten episodes lasts ``steps`` frames.
    """
    rng = np.random.default_rng(seed)
    kept = 0
    for attempt in itertools.count(1):
        if kept == episodes:
            return
        if attempt > 10 * episodes + 10:
            raise ExtractError(f"only {kept} of {attempt - 1} episodes lasted {steps} frames; use fewer --steps")
        episode_seed = int(rng.integers(2**31))
        recorder = RecordingPolicy(policy(env, episode_seed))
        video = record_episode(env, steps, recorder, episode_seed)
        if video is None:
            continue
        recorder(None, None)  # the action chosen at the last frame, so actions line up with frames
        kept += 1
        if "segmentations" not in video:
            raise ExtractError("the env's info has no 'segmentation': the dynamics evaluation needs it")
        yield {"frames": video["video"], "segmentations": video["segmentations"][..., 0],
               "actions": np.stack([np.asarray(a) for a in recorder.actions])}  # int64 [T] or float32 [T, A]


def shard_videos(pattern: str, data_dir: str | None, steps: int | None,
                 limit: int | None) -> Iterator[dict[str, np.ndarray]]:
    """Videos of shards as ``{"frames", "segmentations"}``, cut to ``steps`` frames, at most ``limit`` of them."""
    videos = iter_videos(expand_shards(pattern, data_dir), keys=["video", "segmentations"])
    for sample in itertools.islice(videos, limit):
        labels = segmentation_to_labels(sample["segmentations"])
        if labels.max(initial=0) > 255:
            raise ExtractError(f"video {sample['__key__']}: segmentation ids above 255 cannot be stored as uint8")
        frames, labels = sample["video"][:steps], labels[:steps].astype(np.uint8)
        if steps is not None and len(frames) < steps:
            raise ExtractError(f"video {sample['__key__']} has {len(frames)} frames, fewer than --steps {steps}")
        yield {"frames": frames, "segmentations": labels}


@torch.inference_mode()
def stream_slots(model: SlotContrast, frames: np.ndarray) -> np.ndarray:
    """uint8 frames [B, T, H, W, 3] -> float32 slots [B, T, K, D], frame by frame with ``model.step``."""
    state = model.init_state(frames.shape[0])
    slots = []
    for t in range(frames.shape[1]):
        out, state = model.step(model.preprocess(frames[:, t]), state)
        slots.append(out["slots"].float().cpu())
    return torch.stack(slots, dim=1).numpy()


def extract(model: SlotContrast, episodes: Iterable[dict[str, np.ndarray]], total: int | None, batch_size: int,
            keep_frames: bool, desc: str) -> dict[str, np.ndarray]:
    """Run the model over episodes in batches; returns the stacked split arrays (see ``dynamics.data``)."""
    parts: dict[str, list[np.ndarray]] = {}
    bar = tqdm(total=total, desc=desc, unit="episode", dynamic_ncols=True)
    iterator = iter(episodes)
    while batch := list(itertools.islice(iterator, batch_size)):
        lengths = {len(e["frames"]) for e in batch} | ({parts["slots"][0].shape[1]} if parts else set())
        if len(lengths) > 1:
            raise ExtractError(f"videos differ in length ({sorted(lengths)} frames); pass --steps to cut them")
        stacked = {k: np.stack([e[k] for e in batch]) for k in batch[0]}
        stacked["slots"] = stream_slots(model, stacked["frames"])
        if not keep_frames:
            del stacked["frames"]
        for k, v in stacked.items():
            parts.setdefault(k, []).append(v)
        bar.update(len(batch))
    bar.close()
    if not parts:
        raise ExtractError(f"{desc}: no episodes to extract")
    return {k: np.concatenate(v) for k, v in parts.items()}


def action_info(env: gym.Env) -> tuple[str, int]:
    """("discrete", n) or ("continuous", A) of the env's action space."""
    space = env.action_space
    if isinstance(space, gym.spaces.Discrete):
        return "discrete", int(space.n)
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return "continuous", int(space.shape[0])
    raise ExtractError(f"unsupported action space {space}: need Discrete or a 1-d Box")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m oc_perception.dynamics.extract", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="output data directory")
    ap.add_argument("--checkpoint", default=None, help="perception model (default: the bundled one of --env)")
    ap.add_argument("--env", default=None, help="env id, e.g. oc/ShapesPush-v0")
    ap.add_argument("--episodes", type=int, default=None, help="training episodes (shards: a cap on videos)")
    ap.add_argument("--val-episodes", type=int, default=None, help="default episodes // 10, at least 1 (env mode)")
    ap.add_argument("--steps", type=int, default=None, help="frames per episode (required with --env)")
    ap.add_argument("--policy", default="explore",
                    help=f"explore ({OUR_POLICY}), random, or MODULE:NAME taking (env, seed=...)")
    ap.add_argument("--continuous", action="store_true", help="the env's continuous Box(2) actions")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shards", default=None, help="training video shards (glob or brace pattern), no actions")
    ap.add_argument("--val-shards", default=None, help="validation video shards")
    ap.add_argument("--data-dir", default=None, help="folder the shard patterns are relative to")
    ap.add_argument("--frames", default="val", choices=["none", "val", "all"], help="splits that keep RGB frames")
    ap.add_argument("--batch-size", type=int, default=16, help="episodes per model batch")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing data directory's files")
    args = ap.parse_args(argv)
    run_or_exit(run, args, errors=USER_ERRORS)


def run(args: argparse.Namespace) -> Path:
    if (args.env is None) == (args.shards is None):
        raise ExtractError("pass exactly one of --env (play an env) and --shards (read video shards)")
    if args.env is not None and (args.steps is None or args.episodes is None):
        raise ExtractError("--env needs --episodes and --steps")
    if any((args.out / f"{s}.npz").exists() for s in SPLITS) and not args.overwrite:
        raise FileExistsError(f"{args.out} already holds extracted data; pass --overwrite to replace it")
    if args.shards is not None:  # missing shards stop here, before the model loads
        expand_shards(args.shards, args.data_dir)
        if args.val_shards:
            expand_shards(args.val_shards, args.data_dir)
    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint(args.env) if args.env else None
    if checkpoint is None:
        raise ExtractError("--shards needs --checkpoint (the perception model)")
    model = load_model(checkpoint, device=resolve_device(args.device))
    meta: dict[str, Any] = {"checkpoint": str(checkpoint.resolve()), "num_slots": model.cfg.num_slots,
                            "slot_dim": model.cfg.slot_dim, "action_space": None, "action_dim": 0, "episodes": {}}

    splits: list[tuple[str, Iterable[dict[str, np.ndarray]], int | None]] = []
    env = None
    if args.env is not None:
        try:  # importing the policy's module registers our oc/* ids
            policy = load_policy(OUR_POLICY if args.policy == "explore" else args.policy)
            env = make_env(args.env, args.steps, {"continuous": True} if args.continuous else None)
        except ValueError as e:
            raise ExtractError(str(e)) from e
        meta["action_space"], meta["action_dim"] = action_info(env)
        meta.update(source="env", env=args.env, policy=args.policy, seed=args.seed, continuous=args.continuous)
        val = max(1, args.episodes // 10) if args.val_episodes is None else args.val_episodes
        # Independent seed streams per split, so validation episodes are not replays of training ones.
        for i, (split, count) in enumerate((("train", args.episodes), ("val", val))):
            splits.append((split, env_episodes(env, count, args.steps, policy, [args.seed, i]), count))
    else:
        meta.update(source="shards", shards=args.shards, val_shards=args.val_shards)
        splits.append(("train", shard_videos(args.shards, args.data_dir, args.steps, args.episodes), args.episodes))
        if args.val_shards:
            splits.append(("val", shard_videos(args.val_shards, args.data_dir, args.steps, None), None))

    args.out.mkdir(parents=True, exist_ok=True)
    try:
        for split, episodes, count in splits:
            keep_frames = args.frames == "all" or (args.frames == "val" and split == "val")
            arrays = extract(model, episodes, count, args.batch_size, keep_frames, split)
            save_split(args.out, split, arrays)
            meta["episodes"][split] = len(arrays["slots"])
            meta["steps"] = arrays["slots"].shape[1]
            print(f"{split}: {len(arrays['slots'])} trajectories of {arrays['slots'].shape[1]} frames, slots "
                  f"{arrays['slots'].shape[2:]} -> {args.out / f'{split}.npz'}", file=sys.stderr)
    finally:
        if env is not None:
            env.close()
    save_meta(args.out, meta)
    return args.out


if __name__ == "__main__":
    main()
