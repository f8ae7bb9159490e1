"""Evaluate a slot dynamics model: rollouts on validation trajectories against the copy-last baseline.

    python -m oc_perception.dynamics.evaluate --dynamics runs/dynamics_shapes_push/model.safetensors \\
        [--data DIR] [--checkpoint PERCEPTION] [--horizon 10] [--out DIR]

Every validation trajectory is rolled out for ``--horizon`` frames from its first ``--burn-in`` frames (default:
the training burn-in). For each rollout step h = 1..H it computes

- ``slot_mse``: mean squared error of the predicted slots against the perception model's slots of that frame;
- ``fg_ari``, ``mbo``: per-frame FG-ARI and mBO (``oc_perception.metrics``, background left out) of the masks that
  the perception decoder gives for the predicted slots (upsampled to the segmentation size), against the
  ground-truth segmentation;

for three rows: ``dynamics`` (the model), ``copy_last`` (the last burn-in frame's slots at every step) and
``perception`` (the decoder on the true slots of that frame: the reference level, slot MSE 0 by definition).
Writes to ``--out`` (default: ``eval/`` beside the dynamics checkpoint) ``metrics.json``, ``metrics.png`` (the
metrics over the horizon) and ``rollouts.mp4`` (frames | ground truth | masks of the true slots | masks of the
predicted slots, black during the burn-in), and prints a table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from oc_perception import io, viz
from oc_perception.cli import run_or_exit
from oc_perception.checkpoint import CheckpointError
from oc_perception.dynamics.data import DataError, load_meta, load_split
from oc_perception.dynamics.model import (SlotDynamics, load_dynamics, read_dynamics_metadata, repeat_last,
                                          rollout_dataset)
from oc_perception.checkpoint import load_model
from oc_perception.devices import resolve_device
from oc_perception.metrics import SegmentationMetrics, masks_to_onehot
from oc_perception.model.slotcontrast import SlotContrast

ROWS = ("dynamics", "copy_last", "perception")
USER_ERRORS = (CheckpointError, DataError, FileNotFoundError)


class EvaluationError(ValueError):
    """Data or arguments that do not fit the models."""


@torch.inference_mode()
def decode_masks(perception: SlotContrast, slots: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """slots [N, K, D] -> decoder masks [N, K, M] (the decoder's resolution) on the CPU."""
    if perception.cfg.slot_attention.relative:
        raise EvaluationError("this perception model decodes slots at their positions (slot_attention.relative), "
                              "which predicted slots do not carry: its masks cannot be decoded from slots alone")
    device = perception.device
    return torch.cat([perception.decoder(slots[i: i + batch_size].to(device))[1].float().cpu()
                      for i in range(0, len(slots), batch_size)])


def mask_metrics(masks: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Per-frame FG-ARI and mBO of decoder masks [N, K, P] against labels [N, H, W] (0 = background)."""
    metrics = SegmentationMetrics(ignore_background=True)
    metrics.update(masks_to_onehot(masks[:, None], labels.shape[-2:]), labels[:, None].long())
    values = metrics.compute()
    return values["image_ari_fg"], values["image_mbo_fg"]


def evaluate(dynamics: SlotDynamics, perception: SlotContrast, data: dict[str, np.ndarray], burn_in: int,
             horizon: int, batch_size: int = 64) -> tuple[dict, dict[str, torch.Tensor]]:
    """Metrics per rollout step for the three rows (see the module docstring) and the slots they came from.

    data: the arrays of a split (``dynamics.data``). Returns ``(figures, {"dynamics": [N, H, K, D], "copy_last":
    ..., "perception": ...})``.
    """
    slots = torch.from_numpy(data["slots"])
    if slots.shape[-1] != dynamics.slot_dim or slots.shape[-1] != perception.cfg.slot_dim:
        raise EvaluationError(f"the data's slots have D={slots.shape[-1]}, the dynamics model takes "
                              f"D={dynamics.slot_dim}, the perception model makes D={perception.cfg.slot_dim}")
    if slots.shape[1] < burn_in + horizon:
        raise EvaluationError(f"burn-in {burn_in} + horizon {horizon} frames need trajectories at least that long; "
                              f"the data has {slots.shape[1]}")
    actions = None
    if dynamics.action_dim:
        if "actions" not in data:
            raise EvaluationError("the dynamics model is action-conditioned but the data has no actions")
        actions = torch.from_numpy(data["actions"])
    labels = torch.from_numpy(data["segmentations"][:, burn_in: burn_in + horizon].astype(np.int64))
    rows = {"dynamics": rollout_dataset(dynamics, slots, actions, burn_in, horizon, batch_size),
            "copy_last": repeat_last(slots[:, :burn_in], horizon),
            "perception": slots[:, burn_in: burn_in + horizon]}
    figures: dict = {"burn_in": burn_in, "horizon": horizon, "trajectories": len(slots),
                     "steps": list(range(1, horizon + 1))}
    for name, predicted in rows.items():
        row = {"slot_mse": [], "fg_ari": [], "mbo": []}
        for h in range(horizon):
            row["slot_mse"].append(((predicted[:, h] - rows["perception"][:, h]) ** 2).mean().item())
            ari, mbo = mask_metrics(decode_masks(perception, predicted[:, h]), labels[:, h])
            row["fg_ari"].append(ari)
            row["mbo"].append(mbo)
        figures[name] = row
    dyn, copy = np.array(figures["dynamics"]["slot_mse"]), np.array(figures["copy_last"]["slot_mse"])
    figures["mse_reduction_vs_copy_last"] = (1 - dyn / np.maximum(copy, 1e-12)).tolist()
    figures["fg_ari_gap_at_horizon"] = figures["perception"]["fg_ari"][-1] - figures["dynamics"]["fg_ari"][-1]
    return figures, rows


def table(figures: dict) -> str:
    """The figures as a fixed-width text table, one line per rollout step."""
    head = (f"{'step':>4} | {'slot MSE dyn':>12} {'copy-last':>10} {'reduction':>9} | {'FG-ARI dyn':>10} "
            f"{'copy-last':>9} {'percept.':>8} | {'mBO dyn':>7} {'copy-last':>9} {'percept.':>8}")
    lines = [head, "-" * len(head)]
    d, c, p = figures["dynamics"], figures["copy_last"], figures["perception"]
    for i, step in enumerate(figures["steps"]):
        lines.append(f"{step:>4} | {d['slot_mse'][i]:>12.4g} {c['slot_mse'][i]:>10.4g} "
                     f"{figures['mse_reduction_vs_copy_last'][i]:>9.1%} | {d['fg_ari'][i]:>10.3f} "
                     f"{c['fg_ari'][i]:>9.3f} {p['fg_ari'][i]:>8.3f} | {d['mbo'][i]:>7.3f} {c['mbo'][i]:>9.3f} "
                     f"{p['mbo'][i]:>8.3f}")
    return "\n".join(lines)


def plot(figures: dict, path: Path) -> Path:
    """Slot MSE, FG-ARI and mBO over the rollout steps, one line per row, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (key, title) in zip(axes, (("slot_mse", "slot MSE"), ("fg_ari", "FG-ARI"), ("mbo", "mBO"))):
        for name in ROWS:
            if key == "slot_mse" and name == "perception":
                continue  # 0 by definition
            ax.plot(figures["steps"], figures[name][key], marker="o", markersize=3, label=name.replace("_", "-"))
        ax.set(title=title, xlabel="rollout step")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    axes[1].legend()  # the panel with all three rows
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def rollout_video(perception: SlotContrast, data: dict[str, np.ndarray], rows: dict[str, torch.Tensor],
                  burn_in: int, count: int) -> np.ndarray:
    """uint8 [count * (burn_in + H), H', W', 3]: frames | ground truth | true-slot masks | predicted-slot masks
    (black during the burn-in) for the first ``count`` trajectories, one after the other."""
    horizon = rows["dynamics"].shape[1]
    segs = data["segmentations"][:count, : burn_in + horizon]
    frames = data["frames"][:count, : burn_in + horizon] if "frames" in data else viz.label_colors(segs)
    true_slots = torch.from_numpy(data["slots"][:count, : burn_in + horizon])
    clips = []
    for i in range(len(segs)):
        size = frames[i].shape[1:3]
        true_masks = viz.upsample_masks(viz.masks_to_grid(decode_masks(perception, true_slots[i])), size)
        predicted = viz.upsample_masks(viz.masks_to_grid(decode_masks(perception, rows["dynamics"][i])), size)
        predicted_panel = np.concatenate([np.zeros_like(frames[i][:burn_in]),
                                          viz.overlay_masks(frames[i][burn_in:], predicted)])
        clips.append(viz.compose_panels(frames[i], viz.label_colors(segs[i]),
                                        viz.overlay_masks(frames[i], true_masks), predicted_panel))
    return np.concatenate(clips)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m oc_perception.dynamics.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dynamics", required=True, help="dynamics model.safetensors (or the training log dir)")
    ap.add_argument("--data", default=None, help="extracted trajectories (default: the ones it was trained on)")
    ap.add_argument("--split", default="val", choices=["val", "train"])
    ap.add_argument("--checkpoint", default=None, help="perception model (default: the one that made the data)")
    ap.add_argument("--horizon", type=int, default=None, help="rollout steps (default: the training rollout)")
    ap.add_argument("--burn-in", type=int, default=None, help="true frames first (default: the training burn-in)")
    ap.add_argument("--out", type=Path, default=None, help="default: eval/ beside the dynamics checkpoint")
    ap.add_argument("--max-episodes", type=int, default=None, help="evaluate only the first N trajectories")
    ap.add_argument("--videos", type=int, default=4, help="trajectories in rollouts.mp4 (0: none)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    run_or_exit(run, args, errors=(EvaluationError, *USER_ERRORS))


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def check_perception(checkpoint: str | Path, made_by: str | None, data_dir: str | Path) -> None:
    """Refuse a perception model other than the one that made the data's slots (``meta.json``'s checkpoint): its
    decoder would draw masks for slots it did not make. Files are compared by content (a moved copy is the same
    model); when the recorded file is gone, a warning says the match cannot be checked."""
    if made_by is None or Path(checkpoint).resolve() == Path(made_by).resolve():
        return
    if not Path(made_by).is_file():
        warnings.warn(f"{data_dir}/meta.json says its slots were made by {made_by}, which is gone: cannot check "
                      f"that {checkpoint} is that model", stacklevel=2)
        return
    if Path(checkpoint).is_file() and _sha256(Path(checkpoint)) != _sha256(Path(made_by)):
        raise EvaluationError(f"the slots in {data_dir} were made by {made_by}, not by {checkpoint}: decoding them "
                              "with another perception model gives meaningless masks; leave out --checkpoint or "
                              f"pass {made_by}")


def run(args: argparse.Namespace) -> dict:
    path = Path(args.dynamics)
    path = path / "model.safetensors" if path.is_dir() else path
    for flag, value, least in (("--horizon", args.horizon, 1), ("--burn-in", args.burn_in, 1),
                               ("--max-episodes", args.max_episodes, 1), ("--batch-size", args.batch_size, 1),
                               ("--videos", args.videos, 0)):
        if value is not None and value < least:
            raise EvaluationError(f"{flag} {value}: must be at least {least}")
    meta = read_dynamics_metadata(path)
    data_dir = args.data or meta.get("data")
    if data_dir is None:
        raise EvaluationError("pass --data DIR (the checkpoint does not name its training data)")
    made_by = load_meta(data_dir).get("checkpoint")
    checkpoint = args.checkpoint or meta.get("checkpoint") or made_by
    check_perception(checkpoint, made_by, data_dir)
    burn_in = args.burn_in if args.burn_in is not None else int(meta.get("burn_in", 6))
    horizon = args.horizon if args.horizon is not None else int(meta.get("rollout", 10))
    out = args.out or path.parent / "eval"
    try:  # the output place is checked before the evaluation, which takes minutes
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise EvaluationError(f"--out {out}: cannot write there ({e.strerror or e}); pick a writable folder") from e
    data = load_split(data_dir, args.split, frames=args.videos > 0)
    data = {k: v[: args.max_episodes] for k, v in data.items()}
    device = resolve_device(args.device)
    dynamics = load_dynamics(path, device)
    perception = load_model(checkpoint, device=device)
    figures, rows = evaluate(dynamics, perception, data, burn_in, horizon, args.batch_size)
    figures.update(dynamics_checkpoint=str(path.resolve()), perception_checkpoint=str(Path(checkpoint).resolve()),
                   data=str(Path(data_dir).resolve()), split=args.split)

    (out / "metrics.json").write_text(json.dumps(figures, indent=2))
    plot(figures, out / "metrics.png")
    if args.videos > 0:
        io.write_video(out / "rollouts.mp4", rollout_video(perception, data, rows, burn_in, args.videos), fps=4)
    print(table(figures))
    late = figures["mse_reduction_vs_copy_last"][min(4, horizon - 1):]
    print(f"\nFG-ARI at step {horizon}: dynamics {figures['dynamics']['fg_ari'][-1]:.3f}, perception "
          f"{figures['perception']['fg_ari'][-1]:.3f} (gap {figures['fg_ari_gap_at_horizon']:.3f}); slot MSE "
          f"reduction vs copy-last at steps {min(5, horizon)}-{horizon}: {min(late):.1%} to {max(late):.1%}")
    print(f"wrote {out}/metrics.json, metrics.png" + (", rollouts.mp4" if args.videos > 0 else ""), file=sys.stderr)
    return figures


if __name__ == "__main__":
    main()
