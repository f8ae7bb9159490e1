"""Record episodes of an env as an mp4: the frame and its colour-coded segmentation side by side.

    python -m envs.play oc/ShapesPush-v0 --episodes 2 --out play.mp4 [--policy random|explore|solver]

Frames are upscaled by nearest neighbour (``--scale``, default 4) so 64 px episodes are watchable, padded to
even dimensions and encoded with libx264 in yuv420p (plays everywhere). One video frame per observation:
an episode of T steps gives T + 1 frames (the reset frame included).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from .policies import ExplorationPolicy, scripted_solver
from oc_perception.io import VideoWriter
from oc_perception.viz import compose_panels, label_colors


def compose(frame: np.ndarray, segmentation: np.ndarray) -> np.ndarray:
    """Frame uint8 [H, W, 3] and segmentation [H, W] -> side-by-side RGB [1, H, 2W + gap, 3]."""
    return compose_panels(frame[None], label_colors(segmentation[None]))


def play(env_id: str, out: str, *, episodes: int = 2, seed: int = 0, policy: str = "random", scale: int = 4,
         fps: int = 10, max_steps: int | None = None, env_kwargs: dict | None = None) -> list[int]:
    """Write ``episodes`` episodes of ``env_id`` to ``out``; returns the number of steps of each episode.

    Args:
        policy: ``"random"`` (uniform actions), ``"explore"`` (``ExplorationPolicy``) or ``"solver"``
            (``scripted_solver``).
        max_steps: cut episodes to this many steps (default: the env's own time limit).
        env_kwargs: constructor arguments for ``gym.make``.
    """
    env = gym.make(env_id, max_episode_steps=max_steps, **(env_kwargs or {}))
    env.action_space.seed(seed)
    act = {"random": lambda obs, info: env.action_space.sample(),
           "explore": ExplorationPolicy(env, seed=seed),
           "solver": scripted_solver(env)}[policy]
    lengths = []
    with VideoWriter(out, fps=fps, scale=scale) as video:
        for episode in tqdm(range(episodes), desc=f"{env_id} -> {out}", unit="episode"):
            obs, info = env.reset(seed=seed + episode)
            if hasattr(act, "reset"):
                act.reset()
            video.write(compose(obs, info["segmentation"]))
            steps, done = 0, False
            while not done:
                obs, _, terminated, truncated, info = env.step(act(obs, info))
                video.write(compose(obs, info["segmentation"]))
                steps, done = steps + 1, terminated or truncated
            lengths.append(steps)
    env.close()
    return lengths


def main(argv: Sequence[str] | None = None) -> list[int]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("env_id", help="e.g. oc/ShapesPush-v0")
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--out", default="play.mp4")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--policy", choices=("random", "explore", "solver"), default="random")
    parser.add_argument("--scale", type=int, default=4, help="nearest-neighbour upscaling factor")
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=None, help="cut episodes to this many steps")
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args(argv)
    try:
        check_args(args)
        lengths = play(args.env_id, args.out, episodes=args.episodes, seed=args.seed, policy=args.policy,
                       scale=args.scale, fps=args.fps, max_steps=args.max_steps,
                       env_kwargs={"image_size": args.image_size})
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {args.out}: {len(lengths)} episodes, {sum(lengths) + len(lengths)} frames")
    return lengths


def check_args(args: argparse.Namespace) -> None:
    """Every bad argument stops here with one line, before an env is built or a file written."""
    for flag, value in (("--episodes", args.episodes), ("--scale", args.scale), ("--fps", args.fps),
                        ("--image-size", args.image_size), ("--max-steps", args.max_steps)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} {value}: must be at least 1")
    try:
        gym.spec(args.env_id)
    except gym.error.Error as e:
        ours = sorted(k for k in gym.registry if k.startswith("oc/"))
        raise ValueError(f"unknown env id {args.env_id!r} ({e}); ours: {', '.join(ours)}") from None
    out = Path(args.out)
    if out.suffix.lower() not in VideoWriter.FORMATS:
        raise ValueError(f"--out {out}: unsupported video format {out.suffix or '(none)'}; use "
                         + " or ".join(VideoWriter.FORMATS))
    folder = out.parent if str(out.parent) else Path(".")
    if out.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ValueError(f"--out {out}: cannot write there (is it a folder, or is its folder missing or "
                         "read-only?); pick a writable file path")


if __name__ == "__main__":
    main()
