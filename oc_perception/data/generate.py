"""Write training and validation shards of videos from our environments.

    python -m oc_perception.data.generate --env oc/ShapesPush-v0 --episodes 1000 --steps 24 --out data/shapes_push

writes ``<out>/<name>-train-%06d.tar`` and ``<out>/<name>-validation-%06d.tar`` (``<name>`` from the env id,
e.g. ``shapes_push``, ``mini_grid_dynamic_obstacles_8x8``), one video per episode: ``video.npy`` uint8
[T, H, W, 3] (the reset frame and T - 1 steps) and ``segmentations.npy`` uint8 [T, H, W, 1] from
``info["segmentation"]`` (0 = background). ``--frame-size S`` stores any env's frames at S x S, resized as the
model's input transform resizes them (so at a model's input size they are what the model sees of the env), and
the segmentations alike (nearest). At the end it prints a slot count for the recorded scenes
(:mod:`oc_perception.data.scene`).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from oc_perception.cli import yaml_mapping
from oc_perception.data.scene import SlotAdvice, advise_num_slots
from oc_perception.data.shards import EmptyDatasetError, iter_videos, write_shards
from oc_perception.frames import resize_frames_as_model_input, resize_labels

Policy = Callable[[Any, dict], Any]
"""``policy(observation, info) -> action``, the interface of ``envs.policies``."""
PolicyFactory = Callable[[gym.Env, int], Policy]
"""``factory(env, seed) -> policy``, e.g. ``envs.policies.ExplorationPolicy`` (called as ``(env, seed=seed)``)."""
OUR_POLICY = "envs.policies:ExplorationPolicy"


def env_name(env_id: str) -> str:
    """The shard file prefix of an env id: words in lower case joined by ``_``, without module, namespace and
    version: ``"oc/ShapesPush-v0"`` -> ``"shapes_push"``, ``"panda_gym:PandaPush-v3"`` -> ``"panda_push"``,
    ``"MiniGrid-Dynamic-Obstacles-8x8-v0"`` -> ``"mini_grid_dynamic_obstacles_8x8"``."""
    base = re.sub(r"-v\d+$", "", env_id.split(":")[-1].split("/")[-1])
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", base)  # camel case: PandaPush, HTMLParser
    return re.sub(r"[^a-z0-9]+", "_", words.lower()).strip("_")


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


def record_episode(env: gym.Env, steps: int, policy: Policy, seed: int,
                   frame_size: int | None = None) -> dict[str, np.ndarray] | None:
    """Play one episode of ``steps`` frames. Returns ``{"video": uint8 [T, H, W, 3], "segmentations":
    uint8 [T, H, W, 1]}`` (no ``"segmentations"`` when the env's info has none), or None when the episode ends
    before ``steps`` frames. ``frame_size`` S: H = W = S (see the module docstring)."""
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
    if frame_size is not None:
        video["video"] = resize_frames_as_model_input(video["video"], frame_size)
        if "segmentations" in video:
            labels = resize_labels(torch.from_numpy(video["segmentations"][..., 0]), (frame_size, frame_size))
            video["segmentations"] = labels.numpy()[..., None]
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
    frame_size: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield ``episodes`` full-length videos (see :func:`record_episode`), reproducible from ``seed``
    (anything ``numpy.random.default_rng`` takes). ``policy(env, episode_seed)`` makes each episode's policy;
    ``env_kwargs`` go to ``gym.make``; ``frame_size`` resizes the frames to a square.

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
            video = record_episode(env, steps, policy(env, episode_seed), episode_seed, frame_size)
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
    except ImportError as e:  # MODULE:ID whose module is not installed
        raise ValueError(f"cannot make env {env_id!r}: {str(e).split('. ')[0]}; install the package that registers "
                         "it (e.g. pip install minigrid)") from e
    except TypeError as e:
        raise ValueError(f"env {env_id!r} does not take the arguments {sorted(env_kwargs or {})} ({e}); "
                         "--image-size is for envs that take image_size (ours); --frame-size resizes any env's "
                         "frames") from e


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
    parser.add_argument("--frame-size", type=int, default=None,
                        help="store frames at this square size, any env (e.g. 64, a model's input size)")
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


def default_policy(env_id: str) -> str:
    """The ``--policy`` of ``env_id`` when none is given: our exploration policy for ``oc/*`` ids, else random."""
    return OUR_POLICY if env_id.split(":")[-1].startswith("oc/") else "random"


@dataclass
class Recording:
    """What :func:`generate` wrote: the shard file prefix, the shard paths per split and the slot-count advice
    from the recorded frames."""

    name: str
    shards: dict[str, list[Path]]
    advice: SlotAdvice


def generate(args: argparse.Namespace) -> Recording:
    """Record the shards of the parsed command-line ``args`` (see :func:`main`) and print what was done."""
    val_episodes = max(1, args.episodes // 10) if args.val_episodes is None else args.val_episodes
    for flag, value, least in (("--episodes", args.episodes, 1), ("--steps", args.steps, 1),
                               ("--val-episodes", val_episodes, 0), ("--videos-per-shard", args.videos_per_shard, 1)):
        if value < least:
            raise ValueError(f"{flag} {value}: must be at least {least}")
    for flag, value in (("--image-size", args.image_size), ("--frame-size", getattr(args, "frame_size", None))):
        if value is not None and value < 1:
            raise ValueError(f"{flag} {value}: must be at least 1")
    policy = load_policy(args.policy or default_policy(args.env))
    env_kwargs = {**(args.env_kwargs or {}), **({} if args.image_size is None else {"image_size": args.image_size})}
    frame_size = getattr(args, "frame_size", None)
    height, width = first_frame(args.env, env_kwargs).shape[:2]  # a bad id, argument or frame stops here
    if frame_size is not None and (height, width) != (frame_size, frame_size):
        print(f"frames: the env gives {height}x{width}; stored at {frame_size}x{frame_size}, resized as the "
              "model's input transform resizes them")
    name = args.name or env_name(args.env)
    # Independent seed streams per split, so validation episodes are not replays of training ones.
    written = {}
    for split_id, (split, count) in enumerate((("train", args.episodes), ("validation", val_episodes))):
        if count == 0:
            continue
        videos = generate_videos(args.env, count, args.steps, policy, [args.seed, split_id], env_kwargs=env_kwargs,
                                 frame_size=frame_size)
        written[split] = write_shards(
            videos, args.out / f"{name}-{split}-%06d.tar", args.videos_per_shard, total=count, overwrite=args.overwrite
        )
        print(f"{split}: {count} videos in {len(written[split])} shard(s) {args.out}/{name}-{split}-*.tar")
    shards = written.get("validation", written["train"])
    advice = advise_num_slots(sample["video"] for sample in iter_videos(shards, ["video"]))
    print(advice.reason + " (model.num_slots)")
    return Recording(name, written, advice)


def first_frame(env_id: str, env_kwargs: dict[str, Any] | None = None) -> np.ndarray:
    """The reset frame of ``env_id`` (uint8 [H, W, 3]), as :func:`record_episode` takes it; raises ValueError
    naming the problem when the env cannot be made or gives no RGB frame."""
    env = make_env(env_id, 1, env_kwargs)
    try:
        observation, _ = env.reset(seed=0)
        return _frame(env, observation)
    finally:
        env.close()


if __name__ == "__main__":
    main()
