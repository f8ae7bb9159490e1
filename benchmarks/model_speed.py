"""Per-frame latency and frames/s of SlotContrast ``step`` (streaming) against the clip ``forward``.

    python benchmarks/model_speed.py [--config movi_c] [--batch-sizes 1 8 32] [--frames 4] [--reps 3]

movi_c config with a random-init backbone (the speed does not depend on the weights). On CPU in fp32; on
CUDA, when present, in fp32 and bf16 autocast. "overhead" = streaming ms/frame over clip ms/frame - 1, both
decoding (the clip forward always decodes); "step" without decoding is what the env wrapper runs.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from oc_perception import SlotContrast
from oc_perception.config import config_path
from oc_perception.config import load_config


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, reps: int) -> float:
    fn()  # warm-up (allocator, kernels, caches)
    sync(device)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def bench(model: SlotContrast, batch: int, frames: int, device, dtype, reps: int) -> dict[str, float]:
    s = model.input_size
    video = torch.randn(batch, frames, 3, s, s, device=device)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext())

    def clip():
        with torch.inference_mode(), autocast:
            model(video)

    def stream(decode: bool):
        def run():
            with torch.inference_mode(), autocast:
                state = model.init_state(batch)
                for t in range(frames):
                    _, state = model.step(video[:, t], state, decode=decode)
        return run

    n = batch * frames
    clip_ms = timed(clip, device, reps) / n * 1e3
    step_dec_ms = timed(stream(True), device, reps) / n * 1e3
    step_ms = timed(stream(False), device, reps) / n * 1e3
    return {"clip": clip_ms, "step_dec": step_dec_ms, "step": step_ms}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="movi_c")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    cfg = load_config(config_path(args.config), ["model.encoder.pretrained=false"])
    runs = [(torch.device("cpu"), "fp32")]
    if torch.cuda.is_available():
        runs += [(torch.device("cuda"), "fp32"), (torch.device("cuda"), "bf16")]
    print(f"SlotContrast {args.config}: K={cfg.model.num_slots} D={cfg.model.slot_dim} "
          f"{cfg.model.encoder.backbone} @ {cfg.model.encoder.input_size}px, {args.frames} frames/clip, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    header = (f"{'device':<7}{'dtype':<6}{'batch':>6}{'clip ms/frame':>15}{'step+decode':>13}{'overhead':>10}"
              f"{'step ms/frame':>15}{'step frames/s':>15}")
    print(header)
    print("-" * len(header))
    for device, dtype in runs:
        torch.manual_seed(0)
        model = SlotContrast(cfg.model).to(device).eval()
        for batch in args.batch_sizes:
            r = bench(model, batch, args.frames, device, dtype, args.reps)
            overhead = r["step_dec"] / r["clip"] - 1
            print(f"{device.type:<7}{dtype:<6}{batch:>6}{r['clip']:>15.2f}{r['step_dec']:>13.2f}{overhead:>+10.1%}"
                  f"{r['step']:>15.2f}{1e3 / r['step']:>15.1f}", flush=True)


if __name__ == "__main__":
    main()
