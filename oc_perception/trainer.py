"""What the training scripts share (pretraining ``oc_perception.train`` and ``oc_perception.dynamics.train``):
resume points and the check that a resumed run keeps its config, the training-state payload and its writer,
RNG state, the learning-rate schedule, and the loop skeleton with logging, validation, checkpoints and a
progress bar. Each script keeps its own story (data, model, losses) top to bottom.

    optim, sched = adam_with_schedule(params, cfg.optim, cfg.trainer.max_steps)
    step = restore(state, model, optim, sched) if state else 0
    TrainLoop(params, optim, sched, cfg.trainer, cfg.optim.grad_clip, writer).run(
        step, compute_losses, validate, save_checkpoint, describe)
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from oc_perception.checkpoint import (CheckpointError, checkpoint_kind, load_training_state, save_step_checkpoint,
                                      training_state_kind)
from oc_perception.cli import Interrupted
from oc_perception.config import canonical_config, to_dict


def lr_factor(step: int, warmup: int, max_steps: int) -> float:
    """Linear warmup to 1 over ``warmup`` steps, then 0.5 ** ((step - warmup) / (max_steps - warmup))."""
    if step < warmup:
        return step / warmup
    return 0.5 ** ((step - warmup) / max(1, max_steps - warmup))


def adam_with_schedule(params: Sequence[torch.nn.Parameter], optim_cfg: Any, max_steps: int):
    """Adam from ``optim_cfg`` (lr, betas, eps, weight_decay, warmup_steps) and its :func:`lr_factor` schedule."""
    optim = torch.optim.Adam(params, lr=optim_cfg.lr, betas=tuple(optim_cfg.betas), eps=optim_cfg.eps,
                             weight_decay=optim_cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: lr_factor(s, optim_cfg.warmup_steps, max_steps))
    return optim, sched


def resolve_resume(path: str) -> Path:
    """A log dir (-> its latest checkpoint) or a checkpoint file."""
    p = Path(path)
    if p.is_dir():
        ckpts = sorted((p / "checkpoints").glob("step_*.pt"))
        if not ckpts:
            raise FileNotFoundError(f"--continue {p}: no checkpoints/step_*.pt in that log dir")
        return ckpts[-1]
    if not p.is_file():
        raise FileNotFoundError(f"--continue {p}: no such checkpoint file or log dir")
    return p


TRAINING_COMMANDS = {"pretraining": "python -m oc_perception.train",
                     "dynamics": "python -m oc_perception.dynamics.train"}


def read_resume_state(path: str, kind: str) -> tuple[Path, dict[str, Any]]:
    """``--continue PATH`` of a ``kind`` ("pretraining" or "dynamics") run -> (the checkpoint file, its training
    state), or a ``CheckpointError`` saying what the file is and what to pass instead."""
    resume_path = resolve_resume(path)
    if checkpoint_kind(resume_path) == "safetensors":
        fresh = (f"; to start a new run from these weights, pass --init-from {resume_path}"
                 if kind == "pretraining" else "")
        raise CheckpointError(f"--continue {resume_path} is a model file (safetensors), not a training state: pass "
                              f"the run's log dir or one of its checkpoints/step_*.pt{fresh}")
    state = load_training_state(resume_path)
    found = training_state_kind(state)
    if found is None:
        raise CheckpointError(f"--continue {resume_path} is not a training checkpoint of ours: pass a run's log dir "
                              "or one of its checkpoints/step_*.pt")
    if found != kind:
        raise CheckpointError(f"--continue {resume_path} is a {found} checkpoint, not a {kind} one: resume it with "
                              f"{TRAINING_COMMANDS[found]} --continue {resume_path}")
    return resume_path, state


# Settings a resumed run may change: when to stop (a time budget, not the recipe: a run may go on past it) and
# where the data lives (it may have moved). Any other difference is another experiment.
RESUMABLE_CHANGES = ("trainer.stop_at", "data.dir")


def check_resume_config(saved_json: str, cfg: Any, resume_path: Path) -> None:
    """Refuse to continue a run with another config than it was trained with.

    ``saved_json`` is the training state's config, read in today's schema (that of ``cfg``: retired keys
    dropped, keys added since at their defaults); the settings of ``RESUMABLE_CHANGES`` may differ.

    Raises:
        CheckpointError: one line naming the sections that differ.
    """
    current = to_dict(cfg)
    saved = canonical_config(json.loads(saved_json), type(cfg))
    for dotted in RESUMABLE_CHANGES:
        section, key = dotted.split(".")
        if key in current.get(section, {}) and key in saved.get(section, {}):
            saved[section][key] = current[section][key]
    if saved != current:
        diff = [k for k in current if saved.get(k) != current[k]]
        raise CheckpointError(f"--continue {resume_path} was trained with another config (differs in: "
                              f"{', '.join(diff)}); pass the same config and overrides")


def save_training_state_at(log_dir: Path, step: int, cfg: Any, model_state: dict[str, torch.Tensor], optim,
                           sched) -> Path:
    """``<log_dir>/checkpoints/step_XXXXXXXX.pt`` (atomic; only the newest ``cfg.trainer.keep_last`` are kept):
    what :func:`restore` and ``TrainLoop.run(rng_state=...)`` continue from, and the config
    :func:`check_resume_config` compares."""
    payload = {"model": model_state, "optimizer": optim.state_dict(), "scheduler": sched.state_dict(), "step": step,
               "rng": rng_states(), "config": json.dumps(to_dict(cfg), sort_keys=True)}
    return save_step_checkpoint(log_dir, step, payload, cfg.trainer.keep_last)


def rng_states() -> dict:
    _, keys, pos, has_gauss, cached = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "python": random.getstate(),
              "numpy": [torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def restore(state: dict, model: torch.nn.Module, optim, sched, source: Path,
            allow_missing: Callable[[str], bool] = lambda key: False) -> int:
    """Load a training state (model, optimiser, schedule) to continue exactly; returns its step. The RNG state
    is set by ``TrainLoop.run(rng_state=state["rng"])`` right before the first step: building the data
    iterators draws from the torch RNG, which the uninterrupted run did before its first step too.

    ``allow_missing(key)``: model keys that may be absent (a frozen backbone, rebuilt rather than stored).
    """
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    missing = [k for k in missing if not allow_missing(k)]
    if missing or unexpected:
        raise CheckpointError(f"{source} does not fit the model: missing {missing}, unexpected {unexpected}")
    optim.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    return int(state["step"])


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Ctrl-C or SIGTERM during the block takes effect when it ends: an optimiser update is applied whole or not
    at all, so the state saved on an interrupt is that of a whole number of steps."""
    signals = (signal.SIGINT, signal.SIGTERM)
    # Only the main thread may set handlers, and a handler set outside Python (None) could not be put back.
    if threading.current_thread() is not threading.main_thread() or None in map(signal.getsignal, signals):
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        signal.raise_signal(caught[0])  # now, to whatever handled it before


class TrainLoop:
    """Optimiser steps from ``step`` to ``trainer_cfg.max_steps``: gradient clipping, the schedule, a stop on a
    non-finite loss, scalars every ``log_every`` steps (losses, lr, grad norm, and the steps/s of this process,
    right after a resume too), validation every ``val_every`` and checkpoints every ``ckpt_every`` steps (and at
    the last), with a progress bar. ``writer`` None (non-main DDP ranks): no logging, validation or checkpoints.
    """

    def __init__(self, params: Sequence[torch.nn.Parameter], optim, sched, trainer_cfg: Any, grad_clip: float,
                 writer: Any | None) -> None:
        self.params, self.optim, self.sched = list(params), optim, sched
        self.cfg, self.grad_clip, self.writer = trainer_cfg, grad_clip, writer

    def run(self, step: int, compute_losses: Callable[[int], dict[str, torch.Tensor]],
            validate: Callable[[int], dict[str, float]], save: Callable[[int], Path],
            describe: Callable[[dict[str, float]], str], rng_state: dict | None = None) -> int:
        """``compute_losses(step)`` -> losses with ``loss_total``; ``validate(step)`` -> scalars to log;
        ``save(step)`` writes a checkpoint (``<log dir>/checkpoints/step_*.pt``) and returns its path;
        ``describe(results)`` is the line printed after validation; ``rng_state`` (a resumed run's) is set before
        the first step.

        Raises:
            Interrupted: Ctrl-C or SIGTERM; the state after the last whole step was saved first (the message
                says where, and names ``--continue``).
            FloatingPointError: a non-finite loss.
        """
        if rng_state is not None:
            set_rng_states(rng_state)
        cfg, main = self.cfg, self.writer is not None
        end = min(cfg.max_steps, getattr(cfg, "stop_at", None) or cfg.max_steps)
        bar = tqdm(total=end, initial=step, desc="train", disable=not main, dynamic_ncols=True)
        start_time, start_step = time.perf_counter(), step
        rng_at_step: dict | None = None  # the RNG before the step in progress, for an interrupt to roll back to
        try:
            while step < end:
                rng_at_step = rng_states()
                losses = compute_losses(step)
                self.optim.zero_grad(set_to_none=True)
                losses["loss_total"].backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
                with deferred_interrupts():
                    self.optim.step()
                    self.sched.step()
                    step += 1
                    rng_at_step = None
                total = losses["loss_total"].item()
                if not math.isfinite(total):
                    raise FloatingPointError(f"loss is {total} at step {step}: training diverged; lower optim.lr, "
                                             "or check the data for NaN/inf values")
                bar.update(1)
                if main and (step % cfg.log_every == 0 or step == 1):
                    for key, value in losses.items():
                        self.writer.add_scalar(f"train/{key}", value.item(), step)
                    self.writer.add_scalar("train/lr", self.sched.get_last_lr()[0], step)
                    self.writer.add_scalar("train/grad_norm", grad_norm.item(), step)
                    rate = (step - start_step) / max(time.perf_counter() - start_time, 1e-9)  # this process's steps
                    self.writer.add_scalar("train/steps_per_s", rate, step)
                    bar.set_postfix(loss=f"{total:.4g}")
                last = step == end
                if main and (step % cfg.val_every == 0 or last):
                    with torch.random.fork_rng(devices=[]):  # validation (its DataLoader draws a seed) leaves the
                        results = validate(step)              # training RNG as it was: runs match whatever val_every
                    for key, value in results.items():
                        self.writer.add_scalar(key, value, step)
                    bar.write(f"step {step}: {describe(results)}")
                if main and (step % cfg.ckpt_every == 0 or last):
                    save(step)
        except KeyboardInterrupt:
            bar.close()
            if not main:
                raise
            if rng_at_step is not None:  # a step cut short drew random numbers its rerun will draw again
                set_rng_states(rng_at_step)
            if step == 0:
                raise Interrupted("stopped before the first step finished; nothing to save") from None
            path = save(step)
            raise Interrupted(f"stopped at step {step} of {end}; saved {path}: go on with --continue "
                              f"{path.parent.parent}") from None
        finally:
            bar.close()  # before any message: an error line must not share the bar's line
        return step
