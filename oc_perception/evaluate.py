"""Evaluate a checkpoint on validation shards: video/image FG-ARI and mBO, as training validates.

    python -m oc_perception.evaluate CONFIG --checkpoint C [--data-dir D] [--masks decoder grouping]
        [--out results.json] [--device auto] [key=value ...]

CONFIG (a name in configs/pretrain or a YAML path) gives the data settings: validation shards, transform and
segmentation size; ``key=value`` overrides it (e.g. ``data.val_max_videos=50``). The checkpoint is ours (a model
file, or a run's ``checkpoints/step_*.pt`` to score any step) or an official SlotContrast ``.ckpt`` (as
``oc_perception.inference`` loads them). ``--masks`` picks which masks are scored: the decoder's (the paper's
figures) and/or slot attention's.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from einops import rearrange
from tqdm import tqdm

from oc_perception import io
from oc_perception.checkpoint import CheckpointError, load_model
from oc_perception.cli import run_or_exit
from oc_perception.config import Config, ConfigError, check_values, config_path, load_config
from oc_perception.consistency import slot_identity_stats
from oc_perception.devices import PRECISIONS, autocast, check_precision, resolve_device
from oc_perception.data.datasets import build_dataloader
from oc_perception.data.shards import EmptyDatasetError, ShardError, expand_shards
from oc_perception.io import OutputPathError, check_outputs
from oc_perception.metrics import SegmentationMetrics, labels_to_onehot, masks_to_onehot
from oc_perception.model import SlotContrast
from oc_perception.model.slotcontrast import check_first_frame_passes
from oc_perception.signals import LabelFreeSignals

MASK_KEYS = {"decoder": "decoder_masks", "grouping": "grouping_masks"}


@torch.no_grad()
def evaluate(model: SlotContrast, loader: DataLoader, cfg: Config, device: torch.device,
             masks: tuple[str, ...] = ("decoder",),
             autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
             on_batch: Callable[[dict, dict], None] | None = None) -> dict[str, float]:
    """Mean losses and segmentation metrics over ``loader`` (metrics over the videos with segmentations).

    Returns ``{"loss_*": ..., "<masks>/video_ari_fg": ..., "label_free/...": ...}``: the losses of ``model.loss``,
    for each of ``masks`` ("decoder", "grouping") the metrics of :class:`SegmentationMetrics` (``_fg`` names when
    label 0 is background, ``cfg.data.label_zero``) and ``<masks>/first_slot_share``, the mean over videos of
    ``consistency.slot_identity_stats``' share of an object's later visible frames in its first frame's slot, and
    the label-free signals of the decoder masks (:mod:`oc_perception.signals`). ``on_batch(batch, out)`` sees
    every batch (e.g. to log overlays).
    """
    was_training = model.training
    model.eval()
    background = cfg.data.label_zero == "background"  # else 0 = unlabelled: no class, in no metric
    metrics = {name: SegmentationMetrics(ignore_background=background) for name in masks}
    identity: dict[str, list[float]] = {name: [] for name in masks}
    losses: dict[str, float] = {}
    signals = LabelFreeSignals(pixels=model.cfg.encoder.target == "pixels")
    batches = scored = 0
    for batch in tqdm(loader, desc="validation", leave=False, disable=not sys.stderr.isatty()):
        video = batch["video"].to(device)
        with autocast() if autocast else contextlib.nullcontext():
            out, _ = model(video)
            for k, v in model.loss(out).items():
                losses[k] = losses.get(k, 0.0) + v.item()
        signals.update(out, video)
        if "segmentation" in batch:  # videos without segmentations give their losses only
            labels = batch["segmentation"]
            truth = labels_to_onehot(labels, zero_is_unlabelled=not background)
            for name in masks:
                soft = out[MASK_KEYS[name]].float().cpu()  # [B, T, K, h * w]
                metrics[name].update(masks_to_onehot(soft, labels.shape[-2:]), truth)
                soft = rearrange(soft, "b t k (h w) -> b t k h w", h=math.isqrt(soft.shape[-1]))
                shares = [slot_identity_stats(m, lab)["first_slot_share"] for m, lab in zip(soft, labels)]
                identity[name] += [x for x in shares if not math.isnan(x)]
            scored += 1
        batches += 1
        if on_batch is not None:
            on_batch(batch, out)
    model.train(was_training)
    results = {k: v / max(batches, 1) for k, v in losses.items()} | signals.compute()
    for name in masks:
        if scored:
            results.update({f"{name}/{k}": v for k, v in metrics[name].compute().items()})
        if identity[name]:
            results[f"{name}/first_slot_share"] = float(np.mean(identity[name]))
    return results


def mask_sheet(model: SlotContrast, batch: dict, out: dict, cfg: Config, videos: int = 4,
               frames: int = 4) -> np.ndarray:
    """uint8 [rows * H, W, 3]: one row per validation video, ``frames`` frames spread over it, each shown as
    [frame | reconstruction (pixel models) | decoder-mask overlay | slot-attention overlay], enlarged 2x."""
    from oc_perception import viz

    mean = torch.tensor(cfg.model.mean).view(1, 1, 3, 1, 1)
    std = torch.tensor(cfg.model.std).view(1, 1, 3, 1, 1)

    def to_uint8(x: torch.Tensor) -> np.ndarray:  # normalised [B, T, 3, h, w] -> uint8 [B, T, h, w, 3]
        return ((x.float().cpu() * std + mean).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()

    video = to_uint8(batch["video"][:videos])
    t = np.linspace(0, video.shape[1] - 1, frames).round().astype(int)
    size = video.shape[2:4]
    rows = []
    for i in range(len(video)):
        shown = video[i, t]
        panels = [shown]
        if model.cfg.encoder.target == "pixels":
            recon = to_uint8(model.reconstruction_image(out["reconstruction"][i : i + 1, t]))[0]
            panels.append(viz.resize_frames(recon, size))
        for key in ("decoder_masks", "grouping_masks"):
            masks = viz.masks_to_grid(out[key][i, t].float().cpu())
            panels.append(viz.overlay_masks(shown, masks))
        strip = viz.compose_panels(*panels)  # [F, H, W', 3]
        rows.append(np.concatenate(list(strip), axis=1))
    sheet = np.concatenate(rows, axis=0)
    return np.repeat(np.repeat(sheet, 2, axis=0), 2, axis=1)


def main(argv: list[str] | None = None) -> None:

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="YAML path or a name in configs/pretrain (its data settings are used)")
    ap.add_argument("overrides", nargs="*", help="key.sub=value overrides of the config")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data-dir", default=None, help="folder the config's shard patterns are relative to")
    ap.add_argument("--masks", nargs="+", choices=list(MASK_KEYS), default=["decoder", "grouping"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", choices=PRECISIONS, default=None,
                    help="bf16: bfloat16 autocast (GPUs, CPUs with AMX/AVX512-BF16); default: the config's "
                         "trainer.precision")
    ap.add_argument("--first-frame-passes", type=int, default=None,
                    help="passes over each video's first frame (model.slot_attention.first_frame_passes; default: "
                         "the checkpoint's)")
    ap.add_argument("--dormant-below", type=float, default=None,
                    help="a slot holding fewer input patches than this in a frame keeps its state "
                         "(model.slot_attention.dormant_below; default: the checkpoint's)")
    ap.add_argument("--num-slots", type=int, default=None,
                    help="slots per video, for models with random initial slots (default: the checkpoint's)")
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    ap.add_argument("--overlays", type=Path, default=None,
                    help="also write a PNG of the first validation videos: frame | reconstruction | decoder "
                         "masks | slot-attention masks")
    args = ap.parse_intermixed_args(argv)  # overrides may come after the options

    def run() -> dict[str, float]:
        cfg = load_config(config_path(args.config), args.overrides)
        outputs = {"--out": args.out, "--overlays": args.overlays}
        check_outputs(outputs, {"--checkpoint": args.checkpoint, "config": config_path(args.config),
                                "validation shards": expand_shards(cfg.data.val_shards, args.data_dir)
                                if any(outputs.values()) else None})
        device = resolve_device(args.device)
        precision = check_precision(args.precision or cfg.trainer.precision, device)
        model = load_model(args.checkpoint, device)
        if args.first_frame_passes is not None:  # an inference setting: the weights do not depend on it
            try:
                model.cfg.slot_attention.first_frame_passes = check_first_frame_passes(args.first_frame_passes)
            except ValueError as e:
                raise ConfigError(f"--first-frame-passes: {e}") from e
        if args.dormant_below is not None:  # an inference setting, checked by the config's own range
            settings = dataclasses.replace(model.cfg.slot_attention, dormant_below=args.dormant_below)
            try:
                check_values(settings, "model.slot_attention")
            except ConfigError as e:
                raise ConfigError(f"--dormant-below: {e}") from None
            model.cfg.slot_attention = settings
        if args.num_slots is not None:
            try:
                model.set_num_slots(args.num_slots)
            except ValueError as e:
                raise ConfigError(f"--num-slots: {e}") from None
        cfg.model = model.cfg  # videos are resized and normalised as the checkpoint was trained
        loader = build_dataloader(cfg, args.data_dir, "val")
        sheets = []

        def keep_first(batch: dict, out: dict) -> None:
            if args.overlays is not None and not sheets:
                sheets.append(mask_sheet(model, batch, out, cfg))

        results = evaluate(model, loader, cfg, device, tuple(args.masks), lambda: autocast(precision, device),
                           on_batch=keep_first)
        if sheets:
            print(f"mask overlays: {io.save_png(args.overlays, sheets[0])}")
        if args.out is not None:
            text = json.dumps(results, indent=2, sort_keys=True) + "\n"
            io.atomic_write(args.out, lambda tmp: Path(tmp).write_text(text))
        return results

    results = run_or_exit(run, errors=(ConfigError, CheckpointError, ShardError, EmptyDatasetError,
                                       FileNotFoundError, OutputPathError))
    for k, v in sorted(results.items()):
        print(f"{k:32s} {v:.4f}")


if __name__ == "__main__":
    main()
