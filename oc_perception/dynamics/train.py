"""Train a slot dynamics model (SlotFormer-style) on extracted slot trajectories.

    python -m oc_perception.dynamics.train CONFIG [--data DIR] [--log-dir L] [--continue PATH] [key=value ...]
    python -m oc_perception.dynamics.train shapes_push --data data/dynamics/shapes_push trainer.max_steps=5000

CONFIG is a YAML file or a name from configs/dynamics (shapes_push, movi_c); ``--data`` is a directory written by
``python -m oc_perception.dynamics.extract`` (default: the config's ``data.dir``). Each step samples clips of
``burn_in + rollout`` frames at random offsets of random training trajectories (a function of the seed and the
step, so a resumed run draws the same clips) and minimises

    rollout_weight * MSE(rollout of ``rollout`` frames from the first ``burn_in``, true slots)
    + teacher_forcing_weight * MSE(one-step predictions from every true ``history``-frame window, true slots)

``--continue`` takes a log dir (its latest checkpoint) or a checkpoint file and reproduces the uninterrupted run
exactly. Writes to the log dir: TensorBoard events, ``checkpoints/step_*.pt`` (training state, last
``trainer.keep_last`` kept), ``config.yml`` and ``model.safetensors`` (the current model, for
``oc_perception.dynamics.evaluate`` and ``DynamicsPredictor``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch.utils.tensorboard import SummaryWriter

from oc_perception.cli import run_or_exit
from oc_perception.checkpoint import CheckpointError, save_step_checkpoint
from oc_perception.config import ConfigError, config_path, from_dict, to_dict
from oc_perception.dynamics.config import DynamicsConfig, load_dynamics_config
from oc_perception.dynamics.data import DataError, load_meta, load_split
from oc_perception.dynamics.model import (SlotDynamics, repeat_last, rollout_dataset, save_dynamics,
                                          teacher_forcing_windows)
from oc_perception.devices import autocast, check_precision, keep_freed_memory, resolve_device
from oc_perception.io import atomic_write
from oc_perception.rundir import claim_log_dir
from oc_perception.trainer import TrainLoop, adam_with_schedule, read_resume_state, restore, rng_states

USER_ERRORS = (ConfigError, CheckpointError, DataError, FileNotFoundError, FloatingPointError)


def load_trajectories(data_dir: str | Path, split: str, actions: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """slots float32 [N, T, K, D] and, with ``actions``, actions [N, T] int64 or [N, T, A] float32."""
    arrays = load_split(data_dir, split)
    if actions and "actions" not in arrays:
        raise ConfigError(f"model.actions=true but {data_dir}/{split}.npz has no actions (slots from video shards); "
                          "set model.actions=false")
    return torch.from_numpy(arrays["slots"]), torch.from_numpy(arrays["actions"]) if actions else None


def build_model(cfg: DynamicsConfig, meta: dict) -> SlotDynamics:
    """The model for ``cfg`` on data described by ``meta`` (its slot and action sizes)."""
    m = cfg.model
    if m.slot_dim is not None and m.slot_dim != meta["slot_dim"]:
        raise ConfigError(f"model.slot_dim={m.slot_dim} but the data's slots have D={meta['slot_dim']}")
    try:
        return SlotDynamics(meta["slot_dim"], m.num_layers, m.num_heads, m.hidden_dim, m.ffn_mult, m.history,
                            meta["action_dim"] if m.actions else 0, m.dropout)
    except ValueError as e:
        raise ConfigError(str(e)) from e


def sample_clips(slots: torch.Tensor, actions: torch.Tensor | None, length: int, batch_size: int,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``batch_size`` clips of ``length`` frames at random offsets of random trajectories:
    slots [B, L, K, D], actions [B, L(, A)] or None."""
    n, t = slots.shape[:2]
    episodes = torch.from_numpy(rng.integers(n, size=batch_size))
    idx = torch.from_numpy(rng.integers(t - length + 1, size=batch_size))[:, None] + torch.arange(length)
    return slots[episodes[:, None], idx], None if actions is None else actions[episodes[:, None], idx]


def losses(model: SlotDynamics, clip: torch.Tensor, actions: torch.Tensor | None, cfg: DynamicsConfig):
    """clip [B, burn_in + rollout, K, D] -> {"loss_rollout", "loss_teacher_forcing" (those with a weight),
    "loss_total"}."""
    burn_in, weights = cfg.data.burn_in, cfg.loss
    out = {}
    if weights.rollout_weight:  # a term with weight 0 is not computed: on a CPU each costs seconds
        predicted = model.rollout(clip[:, :burn_in], actions, cfg.data.rollout)
        out["loss_rollout"] = F.mse_loss(predicted, clip[:, burn_in:])
    if weights.teacher_forcing_weight:
        windows, window_actions, targets = teacher_forcing_windows(clip, actions, model.history)
        out["loss_teacher_forcing"] = F.mse_loss(model(windows, window_actions), targets)
    out["loss_total"] = (weights.rollout_weight * out.get("loss_rollout", 0.0)
                         + weights.teacher_forcing_weight * out.get("loss_teacher_forcing", 0.0))
    return out


def validate(model: SlotDynamics, slots: torch.Tensor, actions: torch.Tensor | None,
             cfg: DynamicsConfig, device: torch.device) -> dict[str, float]:
    """Slot MSE of the rollout from the first ``burn_in`` frames of each validation trajectory, per rollout step
    and overall, beside the copy-last baseline; in the training's precision."""
    model.eval()
    d = cfg.data
    with autocast(cfg.trainer.precision, device):
        predicted = rollout_dataset(model, slots, actions, d.burn_in, d.rollout, d.batch_size).float()
    true = slots[:, d.burn_in: d.burn_in + d.rollout]
    per_step = ((predicted - true) ** 2).mean(dim=(0, 2, 3))
    copy_last = ((repeat_last(slots[:, : d.burn_in], d.rollout) - true) ** 2).mean(dim=(0, 2, 3))
    model.train()
    results = {"val/mse": per_step.mean().item(), "val/copy_last_mse": copy_last.mean().item()}
    results.update({f"val/mse_step_{h + 1:02d}": v.item() for h, v in enumerate(per_step)})
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="YAML path or a name in configs/dynamics")
    ap.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    ap.add_argument("--data", default=None, help="extracted trajectories (default: the config's data.dir)")
    ap.add_argument("--log-dir", default=None, help="default runs/dynamics_<config name>")
    ap.add_argument("--continue", dest="resume", default=None, help="log dir or checkpoint to resume from")
    ap.add_argument("--overwrite", action="store_true", help="replace the run in --log-dir instead of refusing")
    args = ap.parse_intermixed_args(argv)  # overrides may come after the options
    keep_freed_memory()
    run_or_exit(train, args, errors=USER_ERRORS)


def comparable(cfg_dict: dict) -> str:
    """The config as compared on resume, keys added since at their defaults: the data may have moved, so
    ``data.dir`` does not count."""
    cfg_dict = to_dict(from_dict(DynamicsConfig, cfg_dict))
    return json.dumps({**cfg_dict, "data": {**cfg_dict["data"], "dir": None}}, sort_keys=True)


def train(args: argparse.Namespace) -> Path:
    # ---------------------------------------------------------------- config, resume, checks (no work yet)
    resume_path, state = read_resume_state(args.resume, "dynamics") if args.resume else (None, None)
    config_file = config_path(args.config, "dynamics")
    cfg = load_dynamics_config(config_file, args.overrides + ([f"data.dir={args.data}"] if args.data else []))
    if state is not None and comparable(json.loads(state["config"])) != comparable(to_dict(cfg)):
        raise CheckpointError(f"--continue {resume_path} was trained with another config; pass the same config "
                              "and overrides")
    if cfg.data.dir is None:
        raise ConfigError("no data: pass --data DIR (python -m oc_perception.dynamics.extract writes one)")
    meta = load_meta(cfg.data.dir)
    train_slots, train_actions = load_trajectories(cfg.data.dir, "train", cfg.model.actions)
    val_slots, val_actions = load_trajectories(cfg.data.dir, "val", cfg.model.actions)
    length = cfg.data.burn_in + cfg.data.rollout
    if min(train_slots.shape[1], val_slots.shape[1]) < length:
        raise ConfigError(f"clips of burn_in + rollout = {length} frames need trajectories at least that long; "
                          f"{cfg.data.dir} has {train_slots.shape[1]} (train), {val_slots.shape[1]} (val)")
    val_slots = val_slots[: cfg.data.val_max_episodes]
    val_actions = None if val_actions is None else val_actions[: cfg.data.val_max_episodes]
    log_dir = Path(args.log_dir or (resume_path.parent.parent if resume_path else
                                    Path("runs") / f"dynamics_{config_file.stem}"))
    device = resolve_device(cfg.trainer.device)
    check_precision(cfg.trainer.precision, device)

    # ---------------------------------------------------------------- model, optimiser, schedule, resume
    torch.manual_seed(cfg.trainer.seed)
    model = build_model(cfg, meta).to(device)
    params = list(model.parameters())
    optim, sched = adam_with_schedule(params, cfg.optim, cfg.trainer.max_steps)
    with claim_log_dir(log_dir, resuming=state is not None, overwrite=getattr(args, "overwrite", False),
                       resumed_dir=resume_path.parent.parent if resume_path else None):
        step = 0 if state is None else restore(state, model, optim, sched, resume_path)
        writer = SummaryWriter(log_dir, purge_step=step + 1 if step else None)  # keep the checkpoint step's logs
        text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
        atomic_write(log_dir / "config.yml", lambda tmp: Path(tmp).write_text(text))
        print(f"training dynamics {config_file.stem} on {device}: {len(train_slots)} trajectories, slots "
              f"{tuple(train_slots.shape[2:])}, actions {model.action_dim or 'none'}: {log_dir}"
              + (f" (resumed at step {step})" if step else ""), file=sys.stderr)

        # ---------------------------------------------------------------- loop
        model.train()

        def compute_losses(step: int) -> dict[str, torch.Tensor]:
            rng = np.random.default_rng([cfg.trainer.seed, step])  # clips depend on the step only: exact resume
            clip, actions = sample_clips(train_slots, train_actions, length, cfg.data.batch_size, rng)
            with autocast(cfg.trainer.precision, device):
                return losses(model, clip.to(device), None if actions is None else actions.to(device), cfg)

        TrainLoop(params, optim, sched, cfg.trainer, cfg.optim.grad_clip, writer).run(
            step, compute_losses,
            validate=lambda s: validate(model, val_slots, val_actions, cfg, device),
            save=lambda s: save_training_checkpoint(log_dir, model, optim, sched, s, cfg, meta),
            describe=lambda r: f"val mse {r['val/mse']:.4g} (copy-last {r['val/copy_last_mse']:.4g})",
            rng_state=None if state is None else state["rng"])
        writer.close()
    return log_dir


def save_training_checkpoint(log_dir: Path, model: SlotDynamics, optim, sched, step: int, cfg: DynamicsConfig,
                             meta: dict) -> Path:
    """checkpoints/step_XXXXXXXX.pt (atomic; only the newest ``trainer.keep_last`` kept) and the current model as
    model.safetensors, with what evaluation needs to know: burn-in, rollout, data, perception checkpoint and the
    env the data came from (when it came from one)."""
    payload = {"model": model.state_dict(), "optimizer": optim.state_dict(), "scheduler": sched.state_dict(),
               "step": step, "rng": rng_states(), "config": json.dumps(to_dict(cfg), sort_keys=True)}
    path = save_step_checkpoint(log_dir, step, payload, cfg.trainer.keep_last)
    save_dynamics(model, log_dir / "model.safetensors", metadata={
        "step": str(step), "burn_in": str(cfg.data.burn_in), "rollout": str(cfg.data.rollout),
        "data": str(Path(cfg.data.dir).resolve()), "checkpoint": meta["checkpoint"],
        "action_space": str(meta["action_space"] if cfg.model.actions else None),
        **({"env": meta["env"]} if "env" in meta else {})})
    return path


if __name__ == "__main__":
    main()
