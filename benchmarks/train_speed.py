"""Training steps/s: fp32 against bf16 autocast, with and without the frozen-feature cache.

    python benchmarks/train_speed.py [--config movi_c] [--batch-size 2] [--steps 3] [--glibc-default] [key=value ...]

A random-init backbone (speed does not depend on the weights), fp32 and bf16 autocast on the CPU and, when
present, on CUDA. bf16 pays on CPUs with AMX-BF16 or AVX512-BF16 (the header says whether this one has it);
elsewhere it is emulated, and slower than fp32. "backbone" runs the frozen ViT on every clip, as training without
a cache does; "cache" starts from fp16 features as the cache stores them, so it times the trainable part alone
(slot attention, predictor, decoder, losses, backward, Adam). Reading the cache from disk is not included: it is
a few hundred kB per frame. Configs that train their encoder (shapes, panda, unsupervised) have no cache: "n/a".

The process keeps freed memory in its heap, as the training scripts do (``devices.keep_freed_memory``);
``--glibc-default`` leaves glibc's defaults, for the comparison. "sys s/step" is the kernel time per step of the
backbone column (page faults and memory mapping), which that setting removes.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from oc_perception import SlotContrast
from oc_perception.config import config_path
from oc_perception.config import load_config
from oc_perception.devices import autocast, keep_freed_memory, native_bf16
from oc_perception.train import TrainStep


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(step_fn, device: torch.device, steps: int) -> tuple[float, float]:
    """(steps/s, kernel seconds per step) after one warm-up step."""
    step_fn()
    sync(device)
    start, sys_start = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_stime
    for _ in range(steps):
        step_fn()
    sync(device)
    sys_time = resource.getrusage(resource.RUSAGE_SELF).ru_stime - sys_start
    return steps / (time.perf_counter() - start), sys_time / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="movi_c")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--glibc-default", action="store_true",
                        help="leave glibc's allocator settings (training keeps freed memory in the heap)")
    parser.add_argument("overrides", nargs="*", help="config overrides, key.sub=value")
    args = parser.parse_args()
    kept = False if args.glibc_default else keep_freed_memory()

    cfg = load_config(config_path(args.config), ["model.encoder.pretrained=false", *args.overrides])
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    b, t, s = args.batch_size, cfg.data.chunk_size, cfg.model.encoder.input_size
    print(f"{args.config}: batch {b} x {t} frames at {s} px, {args.steps} timed steps after one warm-up; "
          f"threads {torch.get_num_threads()}; native bf16 on cpu: {native_bf16(torch.device('cpu'))}; "
          f"freed memory kept: {kept}")
    print(f"{'device':>6} {'dtype':>5} {'backbone steps/s':>17} {'sys s/step':>11} {'cache steps/s':>14} "
          f"{'speed-up':>9}")
    for device in devices:
        torch.manual_seed(0)
        model = SlotContrast(cfg.model).to(device).train()
        train_step = TrainStep(model)
        optim = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.optim.lr)
        video = torch.randn(b, t, 3, s, s, device=device)
        frozen = cfg.model.encoder.target == "features"
        if frozen:
            with torch.no_grad():
                features = model.encode_frames(video.flatten(0, 1))[0].unflatten(0, (b, t)).half()
        for precision in ("fp32", "bf16"):
            def run(batch):
                def one_step():
                    with autocast(precision, device):
                        losses = train_step(batch())
                    optim.zero_grad(set_to_none=True)
                    losses["loss_total"].backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                    optim.step()
                return one_step

            full, sys_per_step = timed(run(lambda: {"video": video}), device, args.steps)
            row = f"{device.type:>6} {precision:>5} {full:17.3f} {sys_per_step:11.3f}"
            if not frozen:
                print(f"{row} {'n/a':>14} {'n/a':>9}")
                continue
            cached, _ = timed(run(lambda: {"features": features.float()}), device, args.steps)
            print(f"{row} {cached:14.3f} {cached / full:8.1f}x")


if __name__ == "__main__":
    main()
