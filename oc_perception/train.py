"""Pretrain SlotContrast.

    python -m oc_perception.train CONFIG [--data-dir D] [--log-dir L] [--continue PATH] [key=value ...]
    torchrun --nproc-per-node 4 -m oc_perception.train configs/pretrain/movi_c.yml --data-dir /data

CONFIG is a YAML file or a name from configs/pretrain (movi_c, movi_e, ytvis2021, shapes, panda).
``--continue`` takes a log dir (its latest checkpoint) or a checkpoint file and reproduces the
uninterrupted run exactly. Writes to the log dir: TensorBoard events, ``checkpoints/step_*.pt`` (training
state, last ``trainer.keep_last`` kept), ``config.yml`` and ``model.safetensors`` (the final model).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter

from oc_perception.cli import run_or_exit
from oc_perception.checkpoint import (CheckpointError, load_weights, save_checkpoint,
                                      save_step_checkpoint)
from oc_perception.config import Config, ConfigError, canonical_config, config_path, load_config, to_dict
from oc_perception.data.clips import FeatureCache, ShardIndex
from oc_perception.data.datasets import build_dataloader, video_transform
from oc_perception.data.shards import EmptyDatasetError, ShardError, expand_shards
from oc_perception.devices import autocast, check_precision, keep_freed_memory, resolve_device
from oc_perception.io import atomic_write
from oc_perception.evaluate import evaluate
from oc_perception.model import SlotContrast
from oc_perception.model.encoder import BackboneWeightsError
from oc_perception.rundir import claim_log_dir
from oc_perception.trainer import TrainLoop, adam_with_schedule, read_resume_state, restore, rng_states

# Errors that stop a run with one line: bad config, data, or checkpoint, and a diverged loss. (A ValueError only
# counts while setting up, so a bug in the loop still shows its traceback.)
USER_ERRORS = (ConfigError, CheckpointError, ShardError, EmptyDatasetError, FileNotFoundError, FloatingPointError)


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_name: str) -> DistInfo:
    """torchrun sets RANK/WORLD_SIZE; NCCL on GPUs, gloo on CPUs."""
    if "RANK" not in os.environ:
        return DistInfo()
    use_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    dist.init_process_group("nccl" if use_cuda else "gloo")
    d = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    if use_cuda:
        torch.cuda.set_device(d.local_rank)
    return d


class TrainStep(nn.Module):
    """Batch -> losses, as one module so DistributedDataParallel syncs gradients on either input path."""

    def __init__(self, model: SlotContrast) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "features" in batch:  # cached frozen features: they are the input and the target
            out, _ = self.model.forward_features(batch["features"])
        else:
            out, _ = self.model(batch["video"])
        return self.model.loss(out, batch.get("segmentation"))


def build_train_loader(cfg: Config, data_dir: str | None, model: SlotContrast, log_dir: Path, start_step: int,
                       d: DistInfo, device: torch.device) -> DataLoader:
    """Training batches from ``start_step`` on; with ``data.cache_features`` the frozen features are computed
    once (by rank 0) and read from disk."""
    cache = None
    if cfg.data.cache_features:
        if cfg.model.encoder.target != "features" or cfg.data.transform != "resize":
            raise ConfigError("data.cache_features needs a frozen backbone (model.encoder.target=features) and "
                              "data.transform=resize (random crops change the features)")
        cache_dir = Path(cfg.data.cache_dir or log_dir / "feature_cache")
        if d.main:
            index = ShardIndex(expand_shards(cfg.data.train_shards, data_dir))
            FeatureCache.build(cache_dir, index, model, video_transform(cfg, True), cfg.data.flip, device)
        if d.world_size > 1:
            dist.barrier()
        cache = FeatureCache(cache_dir)
    return build_dataloader(cfg, data_dir, "train", d.rank, d.world_size, start_step, cache)


@torch.inference_mode()
def validate(model: SlotContrast, loader: DataLoader, cfg: Config, device: torch.device, writer: SummaryWriter,
             step: int) -> dict[str, float]:
    """Video/image FG-ARI and mBO of the decoder masks (``val/*``) and of the slot attention masks
    (``val/grouping/*``), validation losses, and mask-overlay videos."""
    shown = 0

    def overlays(batch: dict, out: dict) -> None:
        nonlocal shown
        if shown < cfg.trainer.overlay_videos:
            shown += log_overlays(writer, batch, out, cfg, step, cfg.trainer.overlay_videos - shown)

    results = evaluate(model, loader, cfg, device, ("decoder", "grouping"),
                       lambda: autocast(cfg.trainer.precision, device), overlays)
    return {f"val/{k.removeprefix('decoder/')}": v for k, v in results.items()}


def log_overlays(writer: SummaryWriter, batch, out, cfg: Config, step: int, limit: int) -> int:
    """Mask overlays of up to ``limit`` validation videos as TensorBoard videos; returns how many."""
    from oc_perception import viz

    video = batch["video"][:limit]
    mean = torch.tensor(cfg.model.mean).view(1, 1, 3, 1, 1)
    std = torch.tensor(cfg.model.std).view(1, 1, 3, 1, 1)
    frames = ((video * std + mean).clamp(0, 1) * 255).to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()
    masks = viz.upsample_masks(viz.masks_to_grid(out["decoder_masks"][:limit].float().cpu()), frames.shape[2:4])
    for i in range(len(frames)):
        panel = viz.compose_panels(frames[i], viz.overlay_masks(frames[i], masks[i]))
        viz.add_video(writer, f"val/masks_{i}", panel, step, fps=6)
    return len(frames)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="YAML path or a name in configs/pretrain")
    ap.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    ap.add_argument("--data-dir", default=None, help="folder the config's shard patterns are relative to")
    ap.add_argument("--log-dir", default=None, help="default runs/<config name>")
    ap.add_argument("--continue", dest="resume", default=None, help="log dir or checkpoint to resume from")
    ap.add_argument("--init-from", default=None,
                    help="start from the weights of this model file (ours) or training checkpoint (step_*.pt), with "
                         "a fresh optimiser and schedule: fine-tuning, e.g. with another loss; the model config must "
                         "fit the weights")
    ap.add_argument("--overwrite", action="store_true",
                    help="replace the run in --log-dir (its checkpoints, model and TensorBoard events) instead of "
                         "refusing")
    args = ap.parse_intermixed_args(argv)  # overrides may come after the options
    keep_freed_memory()
    run_or_exit(train, args, errors=USER_ERRORS)


def train(args: argparse.Namespace) -> Path:
    # ---------------------------------------------------------------- config, resume, checks (no work yet)
    if getattr(args, "init_from", None) and args.resume:
        raise ConfigError("--init-from starts a new run from a model's weights; --continue resumes a run: "
                          "pass one of them")
    resume_path, state = read_resume_state(args.resume, "pretraining") if args.resume else (None, None)
    cfg = load_config(config_path(args.config), args.overrides)
    saved = canonical_config(json.loads(state["config"])) if state is not None else None
    current = to_dict(cfg)
    if saved is not None:  # trainer.stop_at is a time budget, not the recipe: a run may go on past it
        saved["trainer"]["stop_at"] = current["trainer"]["stop_at"]
    if saved is not None and saved != current:
        diff = [k for k in ("model", "data", "optim", "trainer") if saved.get(k) != current[k]]
        raise CheckpointError(f"--continue {resume_path} was trained with another config (differs in: "
                              f"{', '.join(diff)}); pass the same config and overrides")
    log_dir = Path(args.log_dir or (resume_path.parent.parent if resume_path else
                                    Path("runs") / Path(config_path(args.config)).stem))
    d = setup_distributed(cfg.trainer.device)
    device = resolve_device(cfg.trainer.device)
    check_precision(cfg.trainer.precision, device)
    expand_shards(cfg.data.train_shards, args.data_dir)  # missing shards stop here, before any work
    expand_shards(cfg.data.val_shards, args.data_dir)

    torch.manual_seed(cfg.trainer.seed)
    try:
        model = SlotContrast(cfg.model).to(device)
    except (ValueError, BackboneWeightsError) as e:  # an inconsistent model config, weights that cannot be had
        raise ConfigError(str(e)) from e
    init_from = getattr(args, "init_from", None)
    if init_from is not None:
        load_weights(model, init_from)

    # The log dir is made and locked only now, when every check has passed: a bad command leaves nothing.
    main_rank = contextlib.nullcontext() if not d.main else claim_log_dir(
        log_dir, resuming=state is not None, overwrite=getattr(args, "overwrite", False),
        resumed_dir=resume_path.parent.parent if resume_path else None)
    with main_rank:
        # ---------------------------------------------------------------- optimiser, schedule, resume
        params = [p for p in model.parameters() if p.requires_grad]
        optim, sched = adam_with_schedule(params, cfg.optim, cfg.trainer.max_steps)
        step = 0
        if state is not None:  # the frozen backbone is rebuilt (same seed, same pretrained weights), not stored
            step = restore(state, model, optim, sched, resume_path, lambda k: k.startswith("encoder.backbone."))
        train_step = TrainStep(model)
        if d.world_size > 1:
            train_step = DistributedDataParallel(train_step,
                                                 device_ids=[d.local_rank] if device.type == "cuda" else None)

        # ---------------------------------------------------------------- data
        train_loader = build_train_loader(cfg, args.data_dir, model, log_dir, step, d, device)
        val_loader = build_dataloader(cfg, args.data_dir, "val") if d.main else None
        # Purge what an interrupted run logged after its checkpoint; the checkpoint step's own scalars and
        # images were logged before the checkpoint was written, so they stay.
        writer = SummaryWriter(log_dir, purge_step=step + 1 if step else None) if d.main else None
        if d.main:
            text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
            atomic_write(log_dir / "config.yml", lambda tmp: Path(tmp).write_text(text))
            print(f"training {config_path(args.config).stem} on {device} x{d.world_size}: {log_dir}"
                  + (f" (resumed at step {step})" if step else ""), file=sys.stderr)

        # ---------------------------------------------------------------- loop
        model.train()
        batches = iter(train_loader)

        def compute_losses(_: int) -> dict[str, torch.Tensor]:
            batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
            with autocast(cfg.trainer.precision, device):
                return train_step(batch)

        TrainLoop(params, optim, sched, cfg.trainer, cfg.optim.grad_clip, writer).run(
            step, compute_losses,
            validate=lambda s: validate(model, val_loader, cfg, device, writer, s),
            save=lambda s: save_training_checkpoint(log_dir, model, optim, sched, s, cfg),
            describe=lambda results: ", ".join(f"{k[4:]} {v:.4f}" for k, v in sorted(results.items())),
            rng_state=None if state is None else state["rng"])
        if d.main:
            writer.close()
        if d.world_size > 1:
            dist.destroy_process_group()
    return log_dir


def save_training_checkpoint(log_dir: Path, model: SlotContrast, optim, sched, step: int, cfg: Config) -> Path:
    """checkpoints/step_XXXXXXXX.pt (atomic; only the newest ``trainer.keep_last`` are kept) and the current
    model as model.safetensors, usable by inference and the wrappers while training goes on."""
    trainable = {k: v for k, v in model.state_dict().items() if not k.startswith("encoder.backbone.")}
    payload = {"model": trainable, "optimizer": optim.state_dict(), "scheduler": sched.state_dict(), "step": step,
               "rng": rng_states(), "config": json.dumps(to_dict(cfg), sort_keys=True)}
    path = save_step_checkpoint(log_dir, step, payload, cfg.trainer.keep_last)
    save_checkpoint(model, log_dir / "model.safetensors", include_backbone=cfg.model.encoder.backbone == "cnn",
                    metadata={"step": str(step)})
    return path


if __name__ == "__main__":
    main()
