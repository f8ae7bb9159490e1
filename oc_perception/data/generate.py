"""Write training and validation shards of videos from our environments.

    python -m oc_perception.data.generate --env oc/ShapesPush-v0 --episodes 1000 --steps 24 --out data/shapes_push

writes ``<out>/<name>-train-%06d.tar`` and ``<out>/<name>-validation-%06d.tar`` (``<name>`` from the env id,
e.g. ``shapes_push``), one video per episode: ``video.npy`` uint8 [T, H, W, 3] (the reset frame and T - 1
steps) and ``segmentations.npy`` uint8 [T, H, W, 1] from ``info["segmentation"]`` (0 = background).

Actions come from ``--policy MODULE:NAME``, a callable ``(env, seed) -> policy`` (default for our ``oc/*`` ids:
``envs.policies:ExplorationPolicy``, which heads for random objects and pushes through them, so objects move
and collide; for any other env: uniform random actions). The module is imported by name, so the library
does not depend on our example envs. An env whose ``info`` has no ``"segmentation"`` gives videos without
segmentations (they train; validation metrics then need another data set).
Only full-length episodes are kept: an episode that terminates before T frames (e.g. a task solved early)
is dropped and a new one played, so no video spans a reset. The env's time limit is set to T so it never
cuts a video short.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from oc_perception.cli import yaml_mapping
from oc_perception.data.shards import EmptyDatasetError, write_shards

Policy = Callable[[Any, dict], Any]
"""``policy(observation, info) -> action``, the interface of ``envs.policies``."""
PolicyFactory = Callable[[gym.Env, int], Policy]
"""``factory(env, seed) -> policy``, e.g. ``envs.policies.ExplorationPolicy`` (called as ``(env, seed=seed)``)."""
OUR_POLICY = "envs.policies:ExplorationPolicy"


def env_name(env_id: str) -> str:
    """``"oc/ShapesPush-v0"`` -> ``"shapes_push"``, ``"panda_gym:PandaPush-v3"`` -> ``"panda_push"`` (the shard
    file prefix)."""
    base = env_id.split(":")[-1].split("/")[-1].rsplit("-v", 1)[0]
    return re.sub(r"(?<!^)(?=[A-Z])", "_", base).lower()


def _is_rgb(x: Any) -> bool:
    return isinstance(x, np.ndarray) and x.ndim == 3 and x.shape[-1] == 3 and x.dtype == np.uint8


def _frame(env: gym.Env, observation: Any) -> np.ndarray:
    """The RGB frame of a step: the observation when it is an image, else ``env.render()``."""
    frame = observation if _is_rgb(observation) else env.render()
    if not _is_rgb(frame):
        raise ValueError("the env gives no uint8 RGB [H, W, 3] frame, neither as observation nor from render()")
    return frame


def _segmentation(info: dict) -> np.ndarray | None:
    if "segmentation" not in info:
        return None
    seg = np.asarray(info["segmentation"])
    if seg.size and (seg.min() < 0 or seg.max() > 255):
        raise ValueError(f"segmentation ids must lie in [0, 255] to be stored as uint8, got [{seg.min()}, {seg.max()}]")
    return seg.astype(np.uint8)


def record_episode(env: gym.Env, steps: int, policy: Policy, seed: int) -> dict[str, np.ndarray] | None:
    """Play one episode of ``steps`` frames. Returns ``{"video": uint8 [T, H, W, 3], "segmentations":
    uint8 [T, H, W, 1]}`` (no ``"segmentations"`` when the env's info has none), or None when the episode ends
    before ``steps`` frames."""
    observation, info = env.reset(seed=seed)
    frames, segs = [_frame(env, observation)], [_segmentation(info)]
    while len(frames) < steps:
        observation, _, terminated, truncated, info = env.step(policy(observation, info))
        if terminated or truncated:
            return None
        frames.append(_frame(env, observation))
        segs.append(_segmentation(info))
    video = {"video": np.stack(frames)}
    if all(seg is not None for seg in segs):
        video["segmentations"] = np.stack(segs)[..., None]
    return video


def random_policy(env: gym.Env, seed: int) -> Policy:
    """Uniform random actions from the env's action space, seeded."""
    space = env.action_space
    space.seed(seed)
    return lambda observation, info: space.sample()


def load_policy(spec: str) -> PolicyFactory:
    """``"random"`` or ``"module:name"`` (a callable ``(env, seed=...) -> policy``) -> a policy factory."""
    if spec == "random":
        return random_policy
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"--policy {spec!r}: expected 'random' or MODULE:NAME, e.g. {OUR_POLICY}")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"--policy {spec!r}: cannot load it ({e}); run from the repository root or install "
                         "the package that holds it") from e
    return lambda env, seed: factory(env, seed=seed)


def generate_videos(
    env_id: str,
    episodes: int,
    steps: int,
    policy: PolicyFactory = random_policy,
    seed: int | list[int] = 0,
    max_attempts: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield ``episodes`` full-length videos (see :func:`record_episode`), reproducible from ``seed``
    (anything ``numpy.random.default_rng`` takes). ``policy(env, episode_seed)`` makes each episode's policy;
    ``env_kwargs`` go to ``gym.make``.

    Raises RuntimeError after ``max_attempts`` episodes (default ``10 * episodes + 10``) if too many end early.
    """
    env = make_env(env_id, steps, env_kwargs)
    rng = np.random.default_rng(seed)
    max_attempts = 10 * episodes + 10 if max_attempts is None else max_attempts
    kept = attempts = 0
    try:
        while kept < episodes:
            if attempts == max_attempts:
                raise RuntimeError(
                    f"{env_id}: only {kept} of {attempts} episodes lasted {steps} frames; "
                    "use fewer --steps or an env whose episodes last longer"
                )
            attempts += 1
            episode_seed = int(rng.integers(2**31))
            video = record_episode(env, steps, policy(env, episode_seed), episode_seed)
            if video is not None:
                kept += 1
                yield video
    finally:
        env.close()


def make_env(env_id: str, steps: int, env_kwargs: dict[str, Any] | None = None) -> gym.Env:
    """``gym.make`` with a time limit of ``steps``, errors that name the env id and the fix."""
    kwargs = {"render_mode": "rgb_array", **(env_kwargs or {})}  # frames come from render() for state envs
    try:
        return gym.make(env_id, max_episode_steps=steps, **kwargs)
    except gym.error.Error as e:
        raise ValueError(f"cannot make env {env_id!r} ({e}); check the id (ours: oc/ShapesPush-v0, "
                         "oc/ShapesReach-v0, oc/ShapesOddOneOut-v0, oc/PandaPush-v0; MODULE:ID imports MODULE "
                         "first, e.g. envs:oc/ShapesPush-v0)") from e
    except TypeError as e:
        raise ValueError(f"env {env_id!r} does not take the arguments {sorted(env_kwargs or {})} ({e}); "
                         "--image-size is for envs that take image_size (ours)") from e


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m oc_perception.data.generate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--env", required=True, help="env id, e.g. oc/ShapesPush-v0")
    parser.add_argument("--episodes", type=int, required=True, help="training videos")
    parser.add_argument("--steps", type=int, required=True, help="frames per video")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--val-episodes", type=int, default=None, help="validation videos (default: episodes // 10, at least 1)"
    )
    parser.add_argument("--image-size", type=int, default=None, help="passed as image_size= to the env (ours: 64)")
    parser.add_argument("--env-kwargs", type=yaml_mapping, default=None,
                        help="more env constructor arguments, a YAML mapping, e.g. '{render_width: 64, render_height: 64}'")
    parser.add_argument("--policy", default=None,
                        help=f"'random' or MODULE:NAME (default: {OUR_POLICY} for oc/* ids, else random)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--videos-per-shard", type=int, default=32)
    parser.add_argument("--name", default=None, help="shard file prefix (default: from the env id)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing shards of the same name")
    args = parser.parse_args(argv)
    try:
        generate(args)
    except (ValueError, RuntimeError, FileExistsError, EmptyDatasetError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def generate(args: argparse.Namespace) -> None:
    val_episodes = max(1, args.episodes // 10) if args.val_episodes is None else args.val_episodes
    for flag, value, least in (("--episodes", args.episodes, 1), ("--steps", args.steps, 1),
                               ("--val-episodes", val_episodes, 0), ("--videos-per-shard", args.videos_per_shard, 1)):
        if value < least:
            raise ValueError(f"{flag} {value}: must be at least {least}")
    if args.image_size is not None and args.image_size < 1:
        raise ValueError(f"--image-size {args.image_size}: must be at least 1")
    policy = load_policy(args.policy or (OUR_POLICY if args.env.startswith("oc/") else "random"))
    env_kwargs = {**(args.env_kwargs or {}), **({} if args.image_size is None else {"image_size": args.image_size})}
    make_env(args.env, args.steps, env_kwargs).close()  # a bad id or argument stops here, before any file
    name = args.name or env_name(args.env)
    # Independent seed streams per split, so validation episodes are not replays of training ones.
    for split_id, (split, count) in enumerate((("train", args.episodes), ("validation", val_episodes))):
        if count == 0:
            continue
        videos = generate_videos(args.env, count, args.steps, policy, [args.seed, split_id], env_kwargs=env_kwargs)
        paths = write_shards(
            videos, args.out / f"{name}-{split}-%06d.tar", args.videos_per_shard, total=count, overwrite=args.overwrite
        )
        print(f"{split}: {count} videos in {len(paths)} shard(s) {paths[0].parent}/{name}-{split}-*.tar")


if __name__ == "__main__":
    main()
