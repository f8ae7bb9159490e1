"""Peak memory of ``oc_perception.inference`` on a short and a long video: it must not grow with the length.

    python benchmarks/inference_memory.py [--frames 30 300] [--size 128] [--chunk 16]

A tiny random CNN model (64 px input) runs over synthetic videos of moving squares, writing both outputs
(mp4 and npz), each run in a fresh subprocess. Reported per run: the peak RSS of the process while it runs
the inference (Linux ``VmHWM``, reset after the model is loaded) and the part of it added by inference
(peak minus the RSS after imports and model load). ``ru_maxrss`` is not used: on Linux a child started
with vfork/exec inherits the parent's peak in it.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from oc_perception import SlotContrast, io
from oc_perception.checkpoint import save_checkpoint
from oc_perception.config import load_config

TINY_CNN = ["model.num_slots=5", "model.slot_dim=32", "model.decoder.hidden_dims=[64, 64]",
            "model.encoder.backbone=cnn", "model.encoder.input_size=64", "model.encoder.patch_size=8",
            "model.encoder.feature_dim=32", "model.encoder.cnn_channels=[16, 32, 32]",
            "model.encoder.target=pixels"]


def moving_squares(num_frames: int, height: int = 64, width: int = 96) -> np.ndarray:
    """uint8 [T, H, W, 3]: three coloured squares moving across a grey background, bouncing off the edges."""
    side = max(2, min(height, width) // 5)
    colors = np.array([[230, 40, 40], [40, 200, 60], [50, 90, 240]], np.uint8)
    start = np.array([[0.1, 0.2], [0.5, 0.7], [0.8, 0.3]]) * [height - side, width - side]
    speed = np.array([[1.0, 2.0], [-1.5, 1.0], [0.5, -2.5]]) * max(1, side // 6)
    video = np.full((num_frames, height, width, 3), 90, np.uint8)
    span = np.array([height - side, width - side])
    for t in range(num_frames):
        pos = np.abs((start + speed * t + span) % (2 * span) - span).astype(int)  # reflect at the edges
        for (y, x), color in zip(pos, colors):
            video[t, y : y + side, x : x + side] = color
    return video


def memory_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, from /proc (Linux)."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) / 1024


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)


def child(checkpoint: str, video: str, out_dir: str, chunk: int) -> None:
    """Runs in the subprocess: load, infer, print the memory figures as JSON."""
    from oc_perception.checkpoint import load_model
    from oc_perception.inference import infer_video

    torch.set_num_threads(1)
    model = load_model(checkpoint)
    baseline = memory_mb("VmRSS")
    reset_peak()
    summary = infer_video(model, video, Path(out_dir) / "out.mp4", Path(out_dir) / "out.npz", chunk=chunk,
                          device="cpu", progress=False)
    print(json.dumps({"frames": summary["frames"], "seconds": summary["seconds"], "baseline_mb": baseline,
                      "peak_mb": memory_mb("VmHWM")}))


def measure(frame_counts: list[int], size: int = 128, chunk: int = 16) -> dict[int, dict[str, float]]:
    """``{frames: {"frames", "seconds", "baseline_mb", "peak_mb"}}``, one fresh process per video."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        checkpoint = save_checkpoint(SlotContrast(load_config(None, TINY_CNN).model), Path(tmp) / "tiny.safetensors")
        for n in frame_counts:
            video = io.write_video(Path(tmp) / f"video_{n}.mp4", moving_squares(n, size, size), fps=25, scale=1)
            cmd = [sys.executable, __file__, "--child", str(checkpoint), str(video), tmp, "--chunk", str(chunk)]
            run = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results[n] = json.loads(run.stdout.strip().splitlines()[-1])
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, nargs="+", default=[30, 300])
    p.add_argument("--size", type=int, default=128, help="video side in pixels")
    p.add_argument("--chunk", type=int, default=16)
    p.add_argument("--child", nargs=3, metavar=("CHECKPOINT", "VIDEO", "OUT_DIR"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child, chunk=args.chunk)
        return
    results = measure(args.frames, args.size, args.chunk)
    first = results[args.frames[0]]
    print(f"tiny CNN model, {args.size}x{args.size} video, chunk {args.chunk}, CPU")
    print(f"{'frames':>7} {'peak RSS MB':>12} {'inference MB':>13} {'vs first':>9} {'frames/s':>9}")
    for n, r in results.items():
        print(f"{n:>7} {r['peak_mb']:>12.1f} {r['peak_mb'] - r['baseline_mb']:>13.1f} "
              f"{r['peak_mb'] / first['peak_mb']:>9.3f} {r['frames'] / r['seconds']:>9.1f}")


if __name__ == "__main__":
    main()
