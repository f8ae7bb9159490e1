"""Env-steps/s of the slot observation wrappers against the bare env and the bare model.

    OMP_NUM_THREADS=1 python benchmarks/wrapper_speed.py [--steps 50] [--reps 10] [--envs 8 32]

Env ``oc/ShapesPush-v0`` (4 objects, 64 x 64 RGB, discrete actions drawn at random, auto-reset) with, in order of
preference, the bundled checkpoint, a random-init model of ``configs/pretrain/shapes.yml``, or a tiny CNN at
64 px (the speed does not depend on the weights); the script prints which. In float32, on CPU and on CUDA when
present.

- overhead: (wrapped env step - bare env step - bare model step) / bare model step, where the bare model step is
  ``model.preprocess`` + ``model.step``. Three estimates: from the separate runs of the table (the bare model on
  the frames the bare env produced; alternating env and model in one loop makes each slower through cache
  effects, which this counts as overhead), (wrapped - the same loop written by hand) / model step, and stopwatches
  around the env's ``step``/``reset`` and the model's ``preprocess``/``step`` inside one wrapped run (robust to
  load changes between runs on a shared machine). Target: <= 5 %.
- batching: ``VectorSlotObservation`` (gymnasium) and ``VecSlotObservation`` (Stable-Baselines3 ``DummyVecEnv``)
  over 8 and 32 envs against 8 ``SlotObservation`` envs stepped in turn. Target: 8 envs batched >= 4x the
  env-steps/s. Beside it, the model's cost per frame at batch 1 and 8 (the whole step and the encoder alone), and
  the speed-up that the batched encoder's cost alone leaves possible.
Each figure is the median of ``--reps`` runs of ``--steps`` steps; the runs are interleaved and short, so that load
from other processes on a shared machine hits every setup alike. One thread (``torch.set_num_threads(1)``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import SyncVectorEnv
from stable_baselines3.common.vec_env import DummyVecEnv

# `python benchmarks/X.py` puts benchmarks/ first on the path; envs/ and agents/ live beside it (the wheel
# installs them as oc_perception_envs / oc_perception_agents, so an editable install does not provide them).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import envs  # noqa: F401  (registers oc/ShapesPush-v0)
from oc_perception import SlotContrast
from oc_perception.checkpoint import default_checkpoint, load_checkpoint
from oc_perception.config import CONFIG_DIR
from oc_perception.config import load_config
from oc_perception.sb3 import VecSlotObservation
from oc_perception.wrappers import SlotObservation, VectorSlotObservation

ENV_ID = "oc/ShapesPush-v0"
# A fixed object count: gymnasium's vector envs batch info["object_states"], whose shape follows the count.
ENV_KWARGS = {"num_objects": 4}
TINY_CNN = ["model.num_slots=4", "model.slot_dim=32", "model.decoder.hidden_dims=[64, 64]",
            "model.encoder.backbone=cnn", "model.encoder.input_size=64", "model.encoder.patch_size=4",
            "model.encoder.feature_dim=32", "model.encoder.cnn_channels=[16, 32]", "model.encoder.target=pixels"]


def benchmark_model(device: torch.device) -> tuple[SlotContrast, str]:
    """The bundled supervised Shapes model (K = 10, 1 first-frame pass: the model of the figures in
    docs/wrappers.md), else a random-init one of its config (speed does not depend on the weights)."""
    try:
        path = default_checkpoint(ENV_ID, "supervised")
        return load_checkpoint(path, device), f"bundled checkpoint {path}"
    except FileNotFoundError:
        pass
    config = CONFIG_DIR / "pretrain" / "shapes.yml"
    if config.is_file():
        cfg = load_config(config, ["model.encoder.pretrained=false"]).model
        return SlotContrast(cfg).to(device).eval(), f"random-init {config.relative_to(CONFIG_DIR.parent)}"
    return SlotContrast(load_config(None, TINY_CNN).model).to(device).eval(), "random-init tiny CNN at 64 px"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_times(runs: dict[str, Callable[[], None]], device: torch.device, reps: int) -> dict[str, float]:
    """Median wall time of each run over ``reps`` rounds, after a warm-up round.

    The runs are interleaved round by round, so a load spike on a shared machine hits all of them alike.
    """
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(reps + 1):
        for name, run in runs.items():
            sync(device)
            start = time.perf_counter()
            run()
            sync(device)
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def single_env_loop(env: gym.Env, actions: np.ndarray) -> Callable[[], None]:
    def run() -> None:
        env.reset(seed=0)
        for a in actions:
            _, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                env.reset()
    return run


def in_turn_loop(env_list: list[gym.Env], actions: np.ndarray) -> Callable[[], None]:
    """Step every env once per time step, one after the other (what batching replaces)."""
    def run() -> None:
        for env in env_list:
            env.reset(seed=0)
        for t in range(actions.shape[0]):
            for env, a in zip(env_list, actions[t]):
                _, _, terminated, truncated, _ = env.step(a)
                if terminated or truncated:
                    env.reset()
    return run


def vector_loop(env: VectorSlotObservation, actions: np.ndarray) -> Callable[[], None]:
    def run() -> None:
        env.reset(seed=0)
        for a in actions:
            env.step(a)
    return run


def sb3_loop(venv: VecSlotObservation, actions: np.ndarray) -> Callable[[], None]:
    def run() -> None:
        venv.seed(0)
        venv.reset()
        for a in actions:
            venv.step(a)
    return run


def by_hand_loop(env: gym.Env, model: SlotContrast, actions: np.ndarray) -> Callable[[], None]:
    """What the wrapper does, written out: the bare env and the bare model, frame by frame."""
    def encode(frame: np.ndarray, state):
        out, state = model.step(model.preprocess(frame[None]), state)
        out["slots"].cpu().numpy()
        return state

    def run() -> None:
        with torch.inference_mode():
            state = encode(env.reset(seed=0)[0], model.init_state(1))
            for a in actions:
                obs, _, terminated, truncated, _ = env.step(a)
                state = encode(obs, state)
                if terminated or truncated:
                    state = encode(env.reset()[0], model.init_state(1))
    return run


def model_loop(model: SlotContrast, frames: np.ndarray) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            state = model.init_state(1)
            for frame in frames:
                out, state = model.step(model.preprocess(frame[None]), state)
            out["slots"].cpu()
    return run


def batch_loops(model: SlotContrast, frames: np.ndarray, batch: int) -> dict[str, Callable[[], None]]:
    """``model.step`` and the encoder alone on ``batch`` frames at a time, over ``frames``."""
    video = [model.preprocess(np.stack([f] * batch)) for f in frames]

    def step() -> None:
        with torch.inference_mode():
            state = model.init_state(batch)
            for x in video:
                out, state = model.step(x, state)
            out["slots"].cpu()

    def encoder() -> None:
        with torch.inference_mode():
            for x in video:
                features, _ = model.encode_frames(x)
            features.cpu()
    return {f"model step, batch {batch}": step, f"encoder alone, batch {batch}": encoder}


class Stopwatch:
    """Accumulates the time spent in the callables it wraps."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds = device, 0.0

    def wrap(self, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            sync(self.device)
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            sync(self.device)
            self.seconds += time.perf_counter() - start
            return out
        return timed


def instrumented_overhead(model: SlotContrast, precision: str, actions: np.ndarray, reps: int) -> float:
    """Median over ``reps`` wrapped runs of (total - env - model) / model, all timed within the same run."""
    device = model.device
    overheads = []
    for _ in range(reps + 1):
        env_watch, model_watch, total_watch = Stopwatch(device), Stopwatch(device), Stopwatch(device)
        inner = gym.make(ENV_ID, **ENV_KWARGS)
        inner.step, inner.reset = env_watch.wrap(inner.step), env_watch.wrap(inner.reset)
        wrapped = SlotObservation(inner, checkpoint=model, precision=precision)
        wrapped.encoder._step = model_watch.wrap(wrapped.encoder._step)
        model.preprocess = model_watch.wrap(model.preprocess)  # an instance attribute shadows the method
        try:
            total_watch.wrap(single_env_loop(wrapped, actions))()
        finally:
            del model.preprocess  # back to the class method
        overheads.append((total_watch.seconds - env_watch.seconds - model_watch.seconds) / model_watch.seconds)
    return float(np.median(overheads[1:]))  # the first run warms up


def bench(model: SlotContrast, precision: str, steps: int, reps: int, num_envs: list[int]) -> None:
    device = model.device
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 5, (steps, max(num_envs + [8])))
    bare = gym.make(ENV_ID, **ENV_KWARGS)
    bare.reset(seed=0)
    frames = np.stack([bare.step(a)[0] for a in actions[:, 0]])

    def make_wrapped(include_masks: bool = False, mask_source: str = "decoder") -> SlotObservation:
        return SlotObservation(gym.make(ENV_ID, **ENV_KWARGS), checkpoint=model, precision=precision,
                               include_masks=include_masks, mask_source=mask_source)

    def make_vector(n: int) -> VectorSlotObservation:
        return VectorSlotObservation(SyncVectorEnv([lambda: gym.make(ENV_ID, **ENV_KWARGS)] * n), checkpoint=model,
                                     precision=precision)

    def make_sb3(n: int) -> VecSlotObservation:
        return VecSlotObservation(DummyVecEnv([lambda: gym.make(ENV_ID, **ENV_KWARGS)] * n), checkpoint=model,
                                  precision=precision)

    runs = {  # name -> (run, env-steps per run)
        "bare env": (single_env_loop(bare, actions[:, 0]), steps),
        "bare model step (preprocess + step)": (model_loop(model, frames), steps),
        "bare env + bare model, by hand": (by_hand_loop(gym.make(ENV_ID, **ENV_KWARGS), model, actions[:, 0]), steps),
        "SlotObservation": (single_env_loop(make_wrapped(), actions[:, 0]), steps),
        "SlotObservation, include_masks": (single_env_loop(make_wrapped(True), actions[:, 0]), steps),
        "SlotObservation, attention masks": (single_env_loop(make_wrapped(True, "attention"), actions[:, 0]), steps),
        "8 x SlotObservation in turn": (in_turn_loop([make_wrapped() for _ in range(8)], actions[:, :8]), 8 * steps),
        **{f"VectorSlotObservation, {n} envs": (vector_loop(make_vector(n), actions[:, :n]), n * steps)
           for n in num_envs},
        **{f"VecSlotObservation (SB3), {n} envs": (sb3_loop(make_sb3(n), actions[:, :n]), n * steps)
           for n in num_envs},
    }
    median = median_times({name: run for name, (run, _) in runs.items()}, device, reps)
    per_step = {name: median[name] / env_steps for name, (_, env_steps) in runs.items()}  # seconds per env-step

    print(f"\ndevice {device}, {precision}, torch threads {torch.get_num_threads()}")
    print(f"{'setup':<38} {'env-steps/s':>12} {'ms/env-step':>12}")
    for name, seconds in per_step.items():
        print(f"{name:<38} {1 / seconds:>12.1f} {1e3 * seconds:>12.3f}")
    t_model, t_wrapped = per_step["bare model step (preprocess + step)"], per_step["SlotObservation"]
    separate = (t_wrapped - per_step["bare env"] - t_model) / t_model
    by_hand = (t_wrapped - per_step["bare env + bare model, by hand"]) / t_model
    same_run = instrumented_overhead(model, precision, actions[:, 0], reps)
    print(f"wrapper overhead over the bare model step (target <= 5 %): {100 * separate:+.1f} % from the separate "
          f"runs, {100 * by_hand:+.1f} % over the loop by hand, {100 * same_run:+.1f} % timed within one run")
    if 8 in num_envs:
        speedup = per_step["8 x SlotObservation in turn"] / per_step["VectorSlotObservation, 8 envs"]
        print(f"8 envs batched vs 8 single wrappers in turn: {speedup:.2f}x (target >= 4x)")
        # Where the batched step's time goes: what batching cannot remove bounds the speed-up.
        loops = {(name, batch): loop for batch in (1, 8) for name, loop in batch_loops(model, frames, batch).items()}
        costs = median_times({name: loop for (name, _), loop in loops.items()}, device, reps)
        ms = {name: 1e3 * costs[name] / (steps * batch) for name, batch in loops}
        ceiling = per_step["8 x SlotObservation in turn"] / (per_step["bare env"] + ms["encoder alone, batch 8"] / 1e3)
        print(f"ms per frame at batch 1 / 8: model step {ms['model step, batch 1']:.2f} / "
              f"{ms['model step, batch 8']:.2f}, encoder alone {ms['encoder alone, batch 1']:.2f} / "
              f"{ms['encoder alone, batch 8']:.2f}; batching 8 envs cannot pass {ceiling:.1f}x here "
              "(8 wrappers in turn over the bare env + the batched encoder alone)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--envs", type=int, nargs="+", default=[8, 32])
    args = parser.parse_args()
    torch.set_num_threads(1)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        model, source = benchmark_model(device)
        print(f"\nmodel: {source} (K={model.cfg.num_slots}, D={model.cfg.slot_dim}, "
              f"{model.cfg.encoder.backbone} at {model.input_size} px)")
        bench(model, "fp32", args.steps, args.reps, args.envs)


if __name__ == "__main__":
    main()
