"""Does a visible object keep its slot over an episode? Kept fraction, identity switches, video FG-ARI and mBO.

    python benchmarks/slot_consistency.py [--checkpoint PATH] [--envs oc/ShapesPush-v0 ...] [--episodes 20]
        [--steps 40] [--first-frame-passes N] [--dormant-below PATCHES] [--policy P] [--env-kwargs YAML]

Plays ``--episodes`` episodes of ``--steps`` steps per env with the exploration policy that made the training
data (objects move and collide), through ``SlotObservation(include_masks=True)`` and ``SlotConsistency``.
MiniGrid ids (``minigrid:MiniGrid-...``) are played with ``envs.policies:MiniGridWalk`` and scored on masks drawn
from the grid state (``envs.minigrid_masks``); ``--policy`` and ``--env-kwargs`` choose others.
"kept" is the fraction of (episode, visible object) pairs whose best-IoU slot never changes, "frames kept" the
fraction of (object, visible frame) pairs in which the object is in the slot it has most often in its episode,
"first slot" the mean over episodes of the fraction of (object, visible frame after its first) pairs in which the
object is in the slot of its first visible frame ("first slot s.e." its standard error over the episodes), "at 2nd
frame" the switches at an object's second visible frame (``oc_perception.consistency.slot_identity_stats``); FG-ARI
and mBO are over the whole episode's masks. Without ``--checkpoint`` each env uses its bundled default checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

# `python benchmarks/X.py` puts benchmarks/ first on the path; envs/ and agents/ live beside it (the wheel
# installs them as oc_perception_envs / oc_perception_agents, so an editable install does not provide them).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import envs  # noqa: F401  (registers the oc/ ids)
from envs.minigrid_masks import MiniGridSegmentation
from envs.policies import ExplorationPolicy
from oc_perception.checkpoint import load_model
from oc_perception.cli import yaml_mapping
from oc_perception.consistency import SlotConsistency
from oc_perception.data.generate import load_policy
from oc_perception.wrappers import SlotObservation, make


def is_minigrid(env_id: str) -> bool:
    return "minigrid" in env_id.lower()


def measure(env_id: str, checkpoint: str | None, episodes: int, steps: int, seed: int,
            first_frame_passes: int | None = None, dormant_below: float | None = None,
            policy_spec: str | None = None, env_kwargs: dict[str, Any] | None = None) -> dict[str, float]:
    model = load_model(checkpoint, env_id=env_id)
    if dormant_below is not None:
        model.cfg.slot_attention.dormant_below = dormant_below
    # MiniGrid has no masks of its own: they are drawn from its grid state, for scoring only
    masks = [MiniGridSegmentation] if is_minigrid(env_id) else []
    env = SlotConsistency(make(env_id, wrappers=[*masks, partial(SlotObservation, checkpoint=model,
                                                                 include_masks=True,
                                                                 first_frame_passes=first_frame_passes)],
                               max_episode_steps=steps, **(env_kwargs or {})))
    # Our envs keep one exploration policy over the episodes (the figures in the docs were measured so);
    # a --policy is made afresh for each episode, as data.generate makes it.
    explore = ExplorationPolicy(env, seed=seed) if policy_spec is None else None
    factory = None if policy_spec is None else load_policy(policy_spec)
    kept, objects, switches, second, aris, mbos, lengths, frames_kept, first_slot = 0.0, 0, 0, 0, [], [], [], [], []
    for episode in tqdm(range(episodes), desc=env_id, leave=False):
        obs, info = env.reset(seed=seed + episode)
        if explore is not None:
            explore.reset()
            policy = explore
        else:
            policy = factory(env, seed + episode)
        for t in range(steps):
            obs, _, terminated, truncated, info = env.step(policy(obs, info))
            if terminated or truncated:
                break
        stats = info["slot_consistency"]
        if stats["objects"]:
            kept += stats["kept_fraction"] * stats["objects"]
            objects += stats["objects"]
            frames_kept.append(stats["frames_kept"])
        if not np.isnan(stats["first_slot_share"]):
            first_slot.append(stats["first_slot_share"])
        switches += stats["identity_switches"]
        second += stats["second_frame_switches"]
        aris.append(stats["video_fg_ari"])
        mbos.append(stats["video_mbo"])
        lengths.append(t + 1)
    env.close()
    return {"kept": kept / max(objects, 1), "frames_kept": float(np.mean(frames_kept)) if frames_kept else float("nan"),
            "first_slot": float(np.mean(first_slot)) if first_slot else float("nan"),
            # the share is a mean over episodes: its standard error says how far two models' shares can differ
            # by the draw of episodes alone
            "first_slot_se": float(np.std(first_slot, ddof=1) / np.sqrt(len(first_slot))) if len(first_slot) > 1
            else float("nan"),
            "switches_per_episode": switches / episodes, "second_frame_switches": second / episodes,
            "video_fg_ari": float(np.mean(aris)), "video_mbo": float(np.nanmean(mbos)) if mbos else float("nan"),
            "mean_length": float(np.mean(lengths))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--envs", nargs="+",
                        default=["oc/ShapesReach-v0", "oc/ShapesPush-v0", "oc/ShapesOddOneOut-v0"])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seed", type=int, default=10_000)
    parser.add_argument("--first-frame-passes", type=int, default=None,
                        help="passes over each episode's first frame (default: the checkpoint's)")
    parser.add_argument("--dormant-below", type=float, default=None,
                        help="model.slot_attention.dormant_below, in input patches (default: the checkpoint's)")
    parser.add_argument("--policy", default=None,
                        help="'random' or MODULE:NAME, as data.generate takes it (default: the exploration policy "
                             "for our envs, envs.policies:MiniGridWalk for MiniGrid ids)")
    parser.add_argument("--env-kwargs", type=yaml_mapping, default=None,
                        help="env constructor arguments, a YAML mapping, e.g. '{highlight: false}'")
    args = parser.parse_args()
    print(f"{args.episodes} episodes of up to {args.steps} steps per env, {args.policy or 'default'} policy, "
          f"env arguments {args.env_kwargs or {}}, seeds from "
          f"{args.seed}; checkpoint: {args.checkpoint or 'bundled default'}; first-frame passes: "
          f"{args.first_frame_passes or 'the checkpoint' + chr(39) + 's'}; dormant below: "
          f"{'the checkpoint' + chr(39) + 's' if args.dormant_below is None else args.dormant_below}")
    print(f"{'env':<24} {'kept':>6} {'frames kept':>12} {'first slot':>11} {'switches/ep':>12} "
          f"{'at 2nd frame/ep':>16} {'video FG-ARI':>13} {'video mBO':>10} {'mean length':>12} {'first slot s.e.':>16}")
    for env_id in args.envs:
        policy = args.policy or ("envs.policies:MiniGridWalk" if is_minigrid(env_id) else None)
        r = measure(env_id, args.checkpoint, args.episodes, args.steps, args.seed, args.first_frame_passes,
                    args.dormant_below, policy, args.env_kwargs)
        print(f"{env_id:<24} {r['kept']:6.3f} {r['frames_kept']:12.3f} {r['first_slot']:11.3f} "
              f"{r['switches_per_episode']:12.2f} {r['second_frame_switches']:16.2f} {r['video_fg_ari']:13.3f} "
              f"{r['video_mbo']:10.3f} {r['mean_length']:12.1f} {r['first_slot_se']:16.3f}")


if __name__ == "__main__":
    main()
