"""The report of a perception model trained on an env's videos: pictures, figures and a verdict.

    report = write_report(run_dir, data_dir, out_dir, python_lines)   # what ``oc_perception.fit`` ends with

writes to ``out_dir``:

- ``masks.png``: held-out videos, four frames each, [frame | reconstruction | decoder masks | slot-attention masks]
  (``evaluate.mask_sheet``);
- ``masks.mp4``: the first held-out videos played with [frame | slot overlay | per-slot panels];
- ``learning_curve.png``: training and validation losses and the validation figures over the steps, from the
  run's TensorBoard log;
- ``report.json`` and ``report.md``: the figures on every held-out video (``evaluate.evaluate``: losses, the
  label-free signals of :mod:`oc_perception.signals`, and FG-ARI, mBO and slot identity when the videos have
  segmentations), the verdict, and the lines of Python that put the model in the env.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from oc_perception import io, viz
from oc_perception.checkpoint import load_model, read_checkpoint
from oc_perception.config import Config, load_config
from oc_perception.consistency import slot_identity_stats
from oc_perception.data.datasets import build_dataloader
from oc_perception.data.shards import expand_shards, iter_videos
from oc_perception.evaluate import evaluate, mask_sheet
from oc_perception.inference import display_size, render_panels, run_inference
from oc_perception.io import MIN_VIDEO_SIDE
from oc_perception.model import SlotContrast
from oc_perception.signals import PREFIX

# Verdict thresholds. With segmentations: the targets docs/checkpoints.md holds the bundled Panda model to (video
# FG-ARI / mBO). Without: a rule of thumb below what the bundled Shapes and Panda models (both past those targets)
# score on held-out videos of their envs (objects drawn 0.4 to 0.7, mask change on still pixels under 0.05), and
# above what a model at the start of training scores (objects drawn below 0, mask change 0.2 and more).
TARGET_FG_ARI, TARGET_MBO = 0.70, 0.40
DRAWN, STILL_CHANGE = 0.3, 0.1
VIDEO_COUNT = 2  # held-out videos in masks.mp4


@dataclass
class Report:
    """What :func:`write_report` wrote: the figures (``figures``, flat ``name -> value``), the ``verdict`` line,
    the model's training ``step``, and the paths of its files (``files``, name -> path)."""

    figures: dict[str, float]
    verdict: str
    step: int | None
    files: dict[str, Path]


def read_scalars(log_dir: str | Path, tags: list[str] | None = None) -> dict[str, dict[int, float]]:
    """``{tag: {step: value}}`` of a run's TensorBoard log (``tags``: those only), from all its event files in the
    order they were written: the last value logged at a step wins, as after a resume (also for runs whose
    resumed writer purged the resume step itself)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    out: dict[str, dict[int, float]] = {}
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*"), key=lambda p: int(p.name.split(".")[3])):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.HasField("tensor") and len(value.tensor.float_val) != 1:
                    continue  # images, videos, text: not scalars
                if tags is None or value.tag in tags:
                    number = value.tensor.float_val[0] if value.HasField("tensor") else value.simple_value
                    out.setdefault(value.tag, {})[event.step] = number
    return out


def verdict(figures: dict[str, float]) -> str:
    """One line: does the model see the objects? From FG-ARI and mBO when the videos have segmentations, else from
    the label-free signals (see the thresholds above)."""
    ari, mbo = figures.get("decoder/video_ari_fg"), figures.get("decoder/video_mbo_fg")
    if ari is not None and mbo is not None:
        scores = f"video FG-ARI {ari:.2f}, mBO {mbo:.2f} (targets {TARGET_FG_ARI:.2f} / {TARGET_MBO:.2f})"
        if ari >= TARGET_FG_ARI and mbo >= TARGET_MBO:
            return f"sees the objects: {scores}"
        return f"not yet: {scores}; train longer (a larger --budget continues this fit)"
    drawn, still = figures.get(PREFIX + "objects_drawn"), figures.get(PREFIX + "mask_change_static")
    if drawn is None:
        return "no verdict: the model reconstructs features, not pixels, and the videos have no segmentations"
    if drawn < DRAWN:
        return (f"not yet: the reconstruction does not draw the objects (objects drawn {drawn:.2f} < {DRAWN}; 0 is "
                "the mean image); train longer (a larger --budget continues this fit)")
    if still is not None and still > STILL_CHANGE:
        # The reconstruction can draw what differs between videos (a lit area, a camera pose) before any object:
        # churning masks say no slot holds an object yet.
        return (f"not yet: the reconstruction departs from the mean image (objects drawn {drawn:.2f}) but the masks "
                f"churn on still pixels ({still:.2f} > {STILL_CHANGE}), so no slot holds an object steadily; train "
                "longer (a larger --budget continues this fit)")
    return (f"draws the objects ({drawn:.2f}) with steady slots (change on still pixels {still or 0:.2f}); without "
            "masks nothing scores the grouping: masks.png shows whether each object has a slot of its own")


def plot_learning_curve(log_dir: str | Path, path: str | Path) -> Path:
    """PNG of a run's curves: training and validation loss; the validation figures in [0, 1] (label-free
    signals, and FG-ARI / mBO when logged); the slots used."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    scalars = read_scalars(log_dir)
    fig, (ax_loss, ax_fig, ax_slots) = plt.subplots(1, 3, figsize=(14, 4))
    panels = (
        (ax_loss, "loss", {"train/loss_total": "training", "val/loss_total": "validation"}),
        (ax_fig, "validation figures", {
            f"val/{PREFIX}objects_drawn": "objects drawn", f"val/{PREFIX}mask_change_static": "mask change (still)",
            f"val/{PREFIX}mask_change": "mask change", "val/video_ari_fg": "video FG-ARI",
            "val/video_mbo_fg": "video mBO"}),
        (ax_slots, "slots used (validation)", {f"val/{PREFIX}slots_used": "slots used"}),
    )
    for ax, title, series in panels:
        for tag, label in series.items():
            points = sorted(scalars.get(tag, {}).items())
            if points:
                ax.plot(*zip(*points), marker="." if len(points) < 50 else None, label=label)
        ax.set(title=title, xlabel="training step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    ax_loss.set_yscale("log")
    lowest = min([0.0, *(y for line in ax_fig.lines for y in line.get_ydata())])  # objects drawn can be < 0
    ax_fig.set_ylim(lowest - 0.05, 1.05)
    fig.tight_layout()
    try:
        return io.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)


def masks_video(model: SlotContrast, videos: list[np.ndarray]) -> np.ndarray:
    """uint8 [sum T, H', W', 3]: each video uint8 [T, H, W, 3] as [frame | slot overlay | per-slot panels],
    one after the other, shown at least ``MIN_VIDEO_SIDE`` pixels high."""
    shown = []
    for video in videos:
        result = next(run_inference(model, video, chunk=len(video)))
        size = display_size(*video.shape[1:3], max(video.shape[1], MIN_VIDEO_SIDE))
        shown.append(render_panels(result.frames, result.masks, size))
    return np.concatenate(shown)


def _identity(batch: dict, out: dict, stats: list[dict]) -> None:
    """Slot identity of each video of a batch that has segmentations (``consistency.slot_identity_stats``)."""
    if "segmentation" not in batch:
        return
    masks = viz.masks_to_grid(out["decoder_masks"].float().cpu())
    for i in range(len(masks)):
        stats.append(slot_identity_stats(masks[i], batch["segmentation"][i]))


def _markdown(report: Report, python_lines: list[str], title: str) -> str:
    rows = "\n".join(f"| `{k}` | {v:.4f} |" for k, v in sorted(report.figures.items()))
    code = "\n".join(python_lines)
    return f"""# {title}

Model at step {report.step}: `{report.files['model']}`

**Verdict**: {report.verdict}

![masks]({report.files['masks'].name})

Rows: held-out videos; per frame [frame | reconstruction | decoder masks | slot-attention masks].
Video: [{report.files['video'].name}]({report.files['video'].name}).

![learning curve]({report.files['curve'].name})

| figure (held-out videos) | value |
|---|---:|
{rows}

`label_free/*` need no masks (`oc_perception.signals`): objects drawn (on the pixels unlike the mean image, 1: the
reconstruction draws them exactly, 0: no better than the mean image), slots used per frame, and the share of mask
cells that change slot from frame to frame (on still pixels: churn that no motion explains).

```python
{code}
```
"""


def write_report(run_dir: str | Path, data_dir: str | Path, out_dir: str | Path, python_lines: list[str],
                 title: str = "Perception report", device: str = "auto") -> Report:
    """Evaluate ``run_dir/model.safetensors`` on the held-out videos of its config (shard patterns relative to
    ``data_dir``) and write the files of the module docstring to ``out_dir`` (each atomically)."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    model_path = run_dir / "model.safetensors"
    model = load_model(model_path, device)
    cfg: Config = load_config(run_dir / "config.yml")
    cfg.model = model.cfg
    first: list[tuple[dict, dict]] = []
    identity: list[dict] = []

    def collect(batch: dict, out: dict) -> None:
        if not first:
            first.append((batch, out))
        _identity(batch, out, identity)

    figures = evaluate(model, build_dataloader(cfg, data_dir, "val"), cfg, model.device, ("decoder", "grouping"),
                       on_batch=collect)
    if identity:
        for key in ("frames_kept", "kept_fraction", "identity_switches"):
            values = [s[key] for s in identity if not math.isnan(s[key])]
            if values:
                figures[f"identity/{key}"] = float(np.mean(values))
    files = {"model": model_path, "masks": out_dir / "masks.png", "video": out_dir / "masks.mp4",
             "curve": out_dir / "learning_curve.png", "json": out_dir / "report.json",
             "markdown": out_dir / "report.md"}
    io.save_png(files["masks"], mask_sheet(model, *first[0], cfg))
    held_out = iter_videos(expand_shards(cfg.data.val_shards, data_dir), ["video"])
    videos = [sample["video"] for sample in itertools.islice(held_out, VIDEO_COUNT)]
    io.write_video(files["video"], masks_video(model, videos), fps=4)
    plot_learning_curve(run_dir, files["curve"])
    step = read_checkpoint(model_path)[1].get("step")
    report = Report(figures, verdict(figures), int(step) if step is not None else None, files)
    finite = {k: (None if math.isnan(v) else v) for k, v in figures.items()}  # JSON has no NaN
    payload: dict[str, Any] = {"step": report.step, "verdict": report.verdict, "figures": finite,
                               "files": {k: str(v) for k, v in files.items()}, "python": python_lines}
    io.atomic_write(files["json"], lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=2) + "\n"))
    text = _markdown(report, python_lines, title)
    io.atomic_write(files["markdown"], lambda tmp: Path(tmp).write_text(text))
    return report
