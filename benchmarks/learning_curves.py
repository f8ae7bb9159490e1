"""Validation curves of training runs, read from their TensorBoard logs: a table and a PNG.

    python benchmarks/learning_curves.py runs/screen_* [--steps 500 1000 1500] [--png docs/img/curves.png]
        [--start RUN=STEP ...]

For each run (a log dir of ``python -m oc_perception.train``) prints, per validated step, the decoder-mask and
slot-attention video FG-ARI and mBO, the first-frame-slot share (an object's later visible frames in the slot
of its first visible frame, decoder masks) and the training speed (s/step, this process's mean at that step), as
a Markdown table. ``--png`` draws step -> FG-ARI (solid: decoder masks, dashed: slot attention), mBO and the
first-frame-slot share for every run. Every event file of a run is read, the last value written at a step
winning: a resumed run's curve is whole.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from oc_perception.fit_report import read_scalars

SERIES = {
    "decoder FG-ARI": "val/video_ari_fg",
    "attention FG-ARI": "val/grouping/video_ari_fg",
    "decoder mBO": "val/video_mbo_fg",
    "attention mBO": "val/grouping/video_mbo_fg",
    "first-frame slot": "val/first_slot_share",
}


def read_run(log_dir: Path) -> dict[str, dict[int, float]]:
    """{series: {step: value}} of one run (the last value logged at each step wins, as after a resume)."""
    scalars = read_scalars(log_dir)
    return {name: scalars[tag] for name, tag in {**SERIES, "steps/s": "train/steps_per_s"}.items() if tag in scalars}


def nearest(series: dict[int, float], step: int) -> float | None:
    """The value at the last logged step <= ``step`` (speed is logged every few steps, not at validation)."""
    steps = [s for s in series if s <= step]
    return series[max(steps)] if steps else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--steps", nargs="*", type=int, default=None, help="rows to show (default: every validation)")
    ap.add_argument("--png", type=Path, default=None)
    ap.add_argument("--title", default="validation video FG-ARI / mBO / identity (held-out episodes)")
    ap.add_argument("--start", nargs="*", default=[], metavar="RUN=STEP",
                    help="steps a run had before it began (a run fine-tuned with --init-from from another run's "
                         "step): its curve is shifted by them, e.g. base6k_bg05=6000")
    args = ap.parse_args()
    try:
        starts = {name: int(step) for name, step in (item.split("=", 1) for item in args.start)}
    except ValueError:
        ap.error("--start takes RUN=STEP pairs, e.g. base6k_bg05=6000")
    runs = {run.name: {key: {step + starts.get(run.name, 0): v for step, v in values.items()}
                       for key, values in read_run(run).items()} for run in args.runs}
    print("| run | step | " + " | ".join(SERIES) + " | s/step |")
    print("|---|---:|" + "---:|" * (len(SERIES) + 1))
    for name, series in runs.items():
        steps = sorted(series.get("decoder FG-ARI", {}))
        for step in steps if args.steps is None else [s for s in steps if s in args.steps]:
            cells = [f"{series[k][step]:.3f}" if step in series.get(k, {}) else "" for k in SERIES]
            rate = nearest(series.get("steps/s", {}), step)
            speed = f"{1 / rate:.2f}" if rate else ""
            print(f"| {name} | {step} | " + " | ".join(cells) + f" | {speed} |")
    if args.png is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax_ari, ax_mbo, ax_id) = plt.subplots(1, 3, figsize=(16, 4.5))
        for i, (name, series) in enumerate(runs.items()):
            color = f"C{i % 10}"
            for key, ax, style in (("decoder FG-ARI", ax_ari, "-"), ("attention FG-ARI", ax_ari, "--"),
                                   ("decoder mBO", ax_mbo, "-"), ("attention mBO", ax_mbo, "--"),
                                   ("first-frame slot", ax_id, "-")):
                points = sorted(series.get(key, {}).items())
                if points:
                    ax.plot(*zip(*points), style, color=color, marker=".",
                            label=name if style == "-" else None)
        for ax, label in ((ax_ari, "video FG-ARI"), (ax_mbo, "video mBO"),
                          (ax_id, "first-frame-slot share (decoder masks)")):
            ax.set_xlabel("training step")
            ax.set_ylabel(label)
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
        ax_ari.legend(fontsize=8, title="solid: decoder masks, dashed: slot attention", title_fontsize=8)
        fig.suptitle(args.title)
        fig.tight_layout()
        args.png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.png, dpi=110)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
