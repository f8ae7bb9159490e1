"""Your env, start to finish: one command from an env id to a perception model, its pictures and a verdict.

    python -m oc_perception.fit ENV_ID [--env-kwargs YAML] [--policy P] [--budget B] [--out DIR] [key=value ...]
    python -m oc_perception.fit minigrid:MiniGrid-Dynamic-Obstacles-8x8-v0 --budget 30m

1. Records episodes of the env to ``DIR/data`` (``oc_perception.data.generate``), frames resized to the recipe's
   input size.
2. Trains the label-free recipe ``configs/pretrain/unsupervised.yml`` in ``DIR/run`` (``oc_perception.train``),
   overriding only what the env decides: the shards, the slot count and where training stops
   (``trainer.stop_at``). Segmentations the env gives score the model; they train it only with ``--supervised``.
   ``--init-from CHECKPOINT`` starts from a trained model's weights instead of from scratch.
3. Writes the report to ``DIR/report/step_<N>`` (``oc_perception.fit_report``: mask overlays, a masks video, the
   learning curve, the figures and a verdict) and prints the lines of Python that put the model in the env.

``B`` is a number of training steps (``--budget 5000``) or a duration with its unit (``90s``, ``30m``, ``2h``); a
duration becomes a step count once, from a timing of training steps here, kept in ``DIR/fit.json``. Every env-specific
choice is printed with its reason or set by an option: frames per video (``--episode-length``; default: what half
of 20 probe episodes reach, at most 24), the slot count (``--num-slots``; default: advised from the recorded frames,
``oc_perception.data.scene``), the frame size (the recipe's ``model.encoder.input_size``).

The same command continues an interrupted fit: recording is skipped once complete, training goes on from the run's
latest checkpoint, and a larger ``--budget`` trains on from where the last one stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from oc_perception import io
from oc_perception.checkpoint import CheckpointError
from oc_perception.cli import run_or_exit
from oc_perception.config import Config, ConfigError, config_path, load_config
from oc_perception.data import generate as recorder
from oc_perception.data.datasets import build_dataloader
from oc_perception.data.shards import EmptyDatasetError, ShardError
from oc_perception.devices import autocast, resolve_device
from oc_perception.fit_report import Report, write_report
from oc_perception.model import SlotContrast
from oc_perception.rundir import LogDirBusy, claim_log_dir
from oc_perception.train import TrainStep, train
from oc_perception.trainer import TrainLoop, adam_with_schedule

RECIPE = "unsupervised"  # configs/pretrain/unsupervised.yml, read at every run: fit follows the file
STATE = "fit.json"
PROBE_EPISODES = 20
MAX_EPISODE_LENGTH = 24  # frames per video at most: our envs' videos (docs/checkpoints.md)
TIMING_STEPS, TIMING_WARMUP = 10, 2
UNITS = {"s": 1, "m": 60, "h": 3600}
# Keys fit sets itself, each from an option: an override of them would be silently replaced.
OWN_KEYS = {"data.train_shards": "the recording", "data.val_shards": "the recording", "data.dataset": "the env id",
            "model.num_slots": "--num-slots", "trainer.stop_at": "--budget",
            "model.loss.segmentation_weight": "--supervised"}
# Options that make a fit what it is: a re-run with others would train another model into the same DIR.
IDENTITY = ("env", "env_kwargs", "policy", "seed", "episodes", "val_episodes", "supervised", "overrides", "init_from")


class FitError(ValueError):
    """A command that cannot fit as asked (options, env, out dir); the message names the fix."""


USER_ERRORS = (FitError, ConfigError, CheckpointError, ShardError, EmptyDatasetError, FileNotFoundError)


@dataclass(frozen=True)
class Budget:
    """``--budget``: ``steps`` (a step count) or ``seconds`` (a duration), the other None; ``text`` as given."""

    text: str
    steps: int | None
    seconds: float | None


def parse_budget(text: str) -> Budget:
    """``"5000"`` -> 5000 steps, ``"30m"`` -> 1800 s (units s, m, h)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if match is None or float(match[1]) <= 0 or (not match[2] and "." in match[1]):
        raise FitError(f"--budget {text!r}: give training steps (5000) or a duration with its unit (90s, 30m, 2h)")
    if match[2]:
        return Budget(text, None, float(match[1]) * UNITS[match[2]])
    return Budget(text, int(match[1]), None)


@dataclass(frozen=True)
class Probe:
    """Frames per episode (at most the cap) of probe episodes, and whether the env's info has segmentations."""

    lengths: list[int]
    segmentation: bool


def probe_episodes(env_id: str, policy: str, env_kwargs: dict[str, Any], episodes: int = PROBE_EPISODES,
                   cap: int = MAX_EPISODE_LENGTH, seed: int = 0) -> Probe:
    """Play ``episodes`` episodes of ``env_id`` with ``policy`` (a ``--policy`` spec) for up to ``cap`` frames each,
    without rendering; frames are counted as :func:`oc_perception.data.generate.record_episode` keeps them."""
    env = recorder.make_env(env_id, cap, env_kwargs)
    factory = recorder.load_policy(policy)
    rng = np.random.default_rng([seed, 2])  # generate uses streams [seed, 0] and [seed, 1]
    lengths, segmentation = [], True
    try:
        for _ in tqdm(range(episodes), desc="probing episode lengths", unit="episode"):
            episode_seed = int(rng.integers(2**31))
            observation, info = env.reset(seed=episode_seed)
            act = factory(env, episode_seed)
            segmentation &= "segmentation" in info
            frames = 1
            while frames < cap:
                observation, _, terminated, truncated, info = env.step(act(observation, info))
                if terminated or truncated:
                    break
                frames += 1
            lengths.append(frames)
    finally:
        env.close()
    return Probe(lengths, segmentation)


def episode_length(probe: Probe, least: int, policy: str, env: str = "") -> tuple[int, str]:
    """Frames per video that at least half the probe episodes reach, and the printed reason (``env``: the env id,
    for the hint of a policy).

    Raises:
        FitError: fewer than ``least`` frames (a training clip's).
    """
    ordered = sorted(probe.lengths, reverse=True)
    length = ordered[math.ceil(len(ordered) / 2) - 1]
    spread = f"shortest {ordered[-1]}, longest {ordered[0]}{'+' if ordered[0] == MAX_EPISODE_LENGTH else ''}"
    if length < least:
        raise FitError(f"half of {len(ordered)} episodes with the {policy} policy end within {length} frame(s) "
                       f"({spread}); training clips need {least}: pass a --policy that keeps episodes going"
                       + (f" (MiniGrid: --policy {recorder.example_envs_package()}.policies:MiniGridWalk)"
                          if "minigrid" in env.lower() else ""))
    return length, (f"episode length {length} frames: half of {len(ordered)} {policy}-policy episodes last at least "
                    f"that long ({spread}; at most {MAX_EPISODE_LENGTH}); --episode-length to choose")


def time_training(cfg: Config, data_dir: Path, steps: int = TIMING_STEPS) -> float:
    """Seconds per step of ``cfg``'s training loop on its device: ``steps`` steps after ``TIMING_WARMUP`` untimed
    ones, on a fresh model and the recorded shards; nothing is written."""
    device = resolve_device(cfg.trainer.device)
    model = SlotContrast(cfg.model).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optim, sched = adam_with_schedule(params, cfg.optim, cfg.trainer.max_steps)
    train_step = TrainStep(model)
    batches = iter(build_dataloader(cfg, data_dir, "train"))

    def compute_losses(_: int) -> dict[str, torch.Tensor]:
        batch = {k: v.to(device) for k, v in next(batches).items()}
        with autocast(cfg.trainer.precision, device):
            return train_step(batch)

    def run(start: int, end: int) -> None:
        trainer = dataclasses.replace(cfg.trainer, max_steps=end, stop_at=None)
        TrainLoop(params, optim, sched, trainer, cfg.optim.grad_clip, writer=None).run(
            start, compute_losses, validate=lambda s: {}, save=lambda s: None, describe=str)

    run(0, TIMING_WARMUP)
    start = time.perf_counter()
    run(TIMING_WARMUP, TIMING_WARMUP + steps)
    return (time.perf_counter() - start) / steps


def python_lines(env_id: str, env_kwargs: dict[str, Any], model_path: Path) -> list[str]:
    """The two lines that put the model in the env (``SlotObservation`` around ``oc_perception.make``)."""
    if all(isinstance(k, str) and k.isidentifier() for k in env_kwargs):
        kwargs = "".join(f", {k}={v!r}" for k, v in env_kwargs.items())
    else:
        kwargs = f", **{env_kwargs!r}"
    return ["from oc_perception import SlotObservation, make",
            f"env = SlotObservation(make({env_id!r}{kwargs}), checkpoint={str(model_path)!r})"]


# ---------------------------------------------------------------------------------------------- the fit
def _read_state(out: Path) -> dict[str, Any]:
    path = out / STATE
    if not path.exists():
        if out.is_dir() and any(p.name != ".lock" for p in out.iterdir()):
            raise FitError(f"--out {out} holds files and no {STATE}: it is not a fit's; pass a fresh --out")
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, OSError) as e:
        raise FitError(f"{path} is damaged ({e}); pass a fresh --out (or delete {out} to fit again)") from e


def _write_state(out: Path, state: dict[str, Any]) -> None:
    text = json.dumps(state, indent=2, sort_keys=True) + "\n"
    io.atomic_write(out / STATE, lambda tmp: Path(tmp).write_text(text))


def _check_same_fit(state: dict[str, Any], options: dict[str, Any], out: Path) -> None:
    saved = state.get("options")
    if saved is None:
        return
    before = {**saved, **{k: state.get(k) for k in ("episode_length", "num_slots")}}
    differ = [k for k in IDENTITY if before.get(k) != options[k]]
    differ += [k for k in ("episode_length", "num_slots") if None not in (options[k], before[k]) and
               options[k] != before[k]]
    if differ:
        shown = ", ".join(f"{k} {before.get(k)!r} there, {options[k]!r} now" for k in differ)
        raise FitError(f"--out {out} holds a fit with other options ({shown}); re-run with its options to continue "
                       "it, or pass a fresh --out")


def _checked_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of a fit, checked, with the policy resolved (the same spec whether given or defaulted)."""
    for flag, value, least in (("--episodes", args.episodes, 1), ("--val-episodes", args.val_episodes, 1),
                               ("--episode-length", args.episode_length, 2), ("--num-slots", args.num_slots, 1)):
        if value is not None and value < least:
            raise FitError(f"{flag} {value}: must be at least {least}")
    if args.env_kwargs is not None and not isinstance(args.env_kwargs, dict):
        raise FitError(f"--env-kwargs {args.env_kwargs!r}: expected a YAML mapping such as '{{render_width: 64}}'")
    for item in args.overrides:
        key = item.split("=", 1)[0].strip()
        if key in OWN_KEYS:
            raise FitError(f"override {key}: fit sets it from {OWN_KEYS[key]}")
    if args.init_from is not None and not Path(args.init_from).is_file():
        raise FitError(f"--init-from {args.init_from}: no such file; pass a model file (.safetensors) or a training "
                       "checkpoint (step_*.pt) of ours")
    return {"env": args.env, "env_kwargs": args.env_kwargs or {}, "policy": args.policy or
            recorder.default_policy(args.env), "seed": args.seed, "episodes": args.episodes,
            "val_episodes": args.val_episodes, "supervised": args.supervised, "overrides": list(args.overrides),
            "episode_length": args.episode_length, "num_slots": args.num_slots,
            "init_from": None if args.init_from is None else str(Path(args.init_from).resolve())}


def _latest_step(run_dir: Path) -> int:
    checkpoints = sorted((run_dir / "checkpoints").glob("step_*.pt"))
    return int(checkpoints[-1].stem.removeprefix("step_")) if checkpoints else 0


def _train_steps(budget: Budget, state: dict[str, Any], cfg: Config, data_dir: Path, out: Path) -> int:
    """The steps of ``budget`` (a duration is timed once and kept in the state), at most the recipe's schedule."""
    if budget.steps is not None:
        steps = budget.steps
    elif budget.text in state.setdefault("budgets", {}):
        timed = state["budgets"][budget.text]
        steps = timed["steps"]
        print(f"budget {budget.text}: {steps} steps, as timed before ({timed['seconds_per_step']:.3f} s/step, {STATE})")
    else:
        print(f"budget {budget.text}: timing {TIMING_STEPS} training steps ...")
        per_step = time_training(cfg, data_dir)
        steps = max(1, int(budget.seconds / per_step))
        state["budgets"][budget.text] = {"steps": steps, "seconds_per_step": per_step}
        _write_state(out, state)
        print(f"budget {budget.text}: {steps} steps at {per_step:.3f} s/step (timed here; kept in {out / STATE}, so "
              "a re-run trains the same steps; validation, checkpoints and the report come on top)")
    if steps > cfg.trainer.max_steps:
        print(f"budget: {steps} steps is past the recipe's schedule, which ends at {cfg.trainer.max_steps} "
              "(trainer.max_steps): training stops there")
        steps = cfg.trainer.max_steps
    return steps


def _plan_recording(options: dict[str, Any], base: Config, state: dict[str, Any]) -> None:
    """Check the env's frames, probe its episodes (unless an earlier run did) and print the frame size and the
    episode length with their reasons; sets ``state["episode_length"]`` and ``state["segmentation"]``."""
    env, kwargs, policy = options["env"], options["env_kwargs"], options["policy"]
    height, width = recorder.first_frame(env, kwargs).shape[:2]
    size = base.model.encoder.input_size
    print(f"frame size {size}x{size}: the recipe's input size (model.encoder.input_size)" + (
        "" if height == width else f"; the env's {height}x{width} frames are squeezed to a square, as the wrappers "
        "squeeze them (a square camera, if the env has one, keeps the aspect)"))
    if state.get("episode_length") is None:
        probe = probe_episodes(env, policy, kwargs, seed=options["seed"])
        if options["episode_length"] is None:
            state["episode_length"], reason = episode_length(probe, base.data.chunk_size, policy, env)
            print(reason)
        else:
            state["episode_length"] = options["episode_length"]
        state["segmentation"] = probe.segmentation
    if options["supervised"] and not state["segmentation"]:
        raise FitError(f"--supervised: {env} gives no info['segmentation'] to train the masks on; drop --supervised")


def fit(args: argparse.Namespace) -> Report:
    """Record, train and report as the module docstring says; returns the report."""
    options = _checked_options(args)
    budget = parse_budget(args.budget)
    recipe = config_path(RECIPE)
    base = load_config(recipe, options["overrides"])  # a bad override stops here, before any file
    if options["episode_length"] is not None and options["episode_length"] < base.data.chunk_size:
        raise FitError(f"--episode-length {options['episode_length']}: training clips take {base.data.chunk_size} "
                       "frames (data.chunk_size); record at least that many")
    name = recorder.env_name(args.env)
    out = Path(args.out) if args.out else Path("runs") / "fit" / name
    if out.exists() and not out.is_dir():
        raise FitError(f"--out {out} is a file; pass a directory")
    state = _read_state(out)
    _check_same_fit(state, options, out)
    size = base.model.encoder.input_size
    if "recorded" not in state:  # the env is checked before any file is made: a bad id or env leaves nothing
        try:
            _plan_recording(options, base, state)
        except ValueError as e:  # the env's (id, arguments, frames) or the policy's, each named by the message
            raise FitError(str(e)) from e
    data_dir, run_dir = out / "data", out / "run"
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(claim_log_dir(out, resuming=True))
        except LogDirBusy:
            raise FitError(f"--out {out} is in use by another running fit; wait for it or pass another --out") from None
        state["options"] = {k: options[k] for k in IDENTITY}
        _write_state(out, state)

        # ------------------------------------------------------------------------------------ record
        if "recorded" in state:
            print(f"recording: done ({state['recorded']['train']} + {state['recorded']['validation']} videos in "
                  f"{data_dir}), skipped")
        else:
            try:
                recording = recorder.generate(argparse.Namespace(
                    env=args.env, episodes=args.episodes, steps=state["episode_length"], out=data_dir,
                    val_episodes=args.val_episodes, image_size=None, env_kwargs=options["env_kwargs"],
                    policy=options["policy"], seed=args.seed, videos_per_shard=32, name=name, overwrite=True,
                    frame_size=size))
            except (ValueError, RuntimeError) as e:  # the env's: arguments, frames, episodes that end too soon
                raise FitError(str(e)) from e
            state["recorded"] = {"train": args.episodes, "validation": args.val_episodes,
                                 "advice": dataclasses.asdict(recording.advice)}
            _write_state(out, state)

        # ------------------------------------------------------------------------------------ train
        advice = state["recorded"]["advice"]
        if state.get("num_slots") is None:
            state["num_slots"] = options["num_slots"] or advice["num_slots"]
            _write_state(out, state)
        print(f"model.num_slots {state['num_slots']}: " + (
            "--num-slots" if options["num_slots"] else f"advised from the recorded frames ({advice['regions']} "
            f"region(s) in {advice['percentile']} % of them, + the floor and a spare); --num-slots to choose"))
        overrides = [f"data.dataset={name}", f"data.train_shards={name}-train-*.tar",
                     f"data.val_shards={name}-validation-*.tar", f"model.num_slots={state['num_slots']}",
                     *(["model.loss.segmentation_weight=1.0"] if args.supervised else []), *options["overrides"]]
        steps = _train_steps(budget, state, load_config(recipe, overrides), data_dir, out)
        done = _latest_step(run_dir)
        if done >= steps:
            past = "" if done == steps else f", past the budget's {steps}"
            print(f"training: done ({done} steps{past}, {run_dir}), skipped")
        else:
            train(argparse.Namespace(config=str(recipe), overrides=[*overrides, f"trainer.stop_at={steps}"],
                                     data_dir=str(data_dir), log_dir=str(run_dir),
                                     resume=str(run_dir) if done else None,
                                     init_from=None if done else options["init_from"], overwrite=not done))

        # ------------------------------------------------------------------------------------ report
        lines = python_lines(args.env, options["env_kwargs"], run_dir / "model.safetensors")
        # One folder per trained step: a fit continued with larger budgets keeps what each budget gave.
        report_dir = out / "report" / f"step_{_latest_step(run_dir):06d}"
        report = write_report(run_dir, data_dir, report_dir, lines, title=f"{args.env}: what the model sees")
    print(f"report: {report.files['markdown']} (masks.png, masks.mp4, learning_curve.png, report.json)")
    print(f"verdict at step {report.step}: {report.verdict}")
    print("the model in your env:\n" + "\n".join(f"    {line}" for line in lines))
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m oc_perception.fit", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("env", help="env id; MODULE:ID imports MODULE first (minigrid:MiniGrid-Empty-8x8-v0)")
    ap.add_argument("overrides", nargs="*", help="key.sub=value overrides of the recipe (e.g. trainer.val_every=500)")
    ap.add_argument("--env-kwargs", type=yaml.safe_load, default=None,
                    help="env constructor arguments, a YAML mapping, e.g. '{render_width: 64, render_height: 64}'")
    ap.add_argument("--policy", default=None, help="'random' or MODULE:NAME, as data.generate takes it "
                    f"(default: {recorder.OUR_POLICY} for oc/* ids, else random)")
    ap.add_argument("--budget", default="1h", help="training steps (5000) or a duration with its unit (90s, 30m, 2h)")
    ap.add_argument("--out", default=None, help="the fit's folder (default: runs/fit/<env name>)")
    ap.add_argument("--episode-length", type=int, default=None, help="frames per recorded video (default: probed)")
    ap.add_argument("--episodes", type=int, default=500, help="training videos")
    ap.add_argument("--val-episodes", type=int, default=30, help="held-out videos (validation and the report)")
    ap.add_argument("--num-slots", type=int, default=None, help="slots (default: advised from the recorded frames)")
    ap.add_argument("--supervised", action="store_true",
                    help="also train the masks on the env's segmentations (info['segmentation'])")
    ap.add_argument("--seed", type=int, default=0, help="seed of the recorded episodes")
    ap.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                    help="start from the weights of a model of the recipe's architecture (a .safetensors model file "
                         "or a step_*.pt checkpoint; any slot count), e.g. a label-free model of another env, "
                         "instead of from scratch")
    args = ap.parse_intermixed_args(argv)
    run_or_exit(fit, args, errors=USER_ERRORS)


if __name__ == "__main__":
    main()
