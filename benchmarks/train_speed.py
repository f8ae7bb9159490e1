"""Training steps/s with and without the frozen-feature cache (``data.cache_features``).

    python benchmarks/train_speed.py [--config movi_c] [--batch-size 2] [--steps 3] [key=value ...]

A random-init backbone (speed does not depend on the weights), fp32 and bf16 autocast on the CPU and, when
present, on CUDA. bf16 pays on CPUs with AMX-BF16 or AVX512-BF16 (``native bf16`` in the header says whether this
one has it); elsewhere it is emulated and slower than fp32. "backbone" runs the frozen ViT on every clip, as training without a cache does; "cache"
starts from fp16 features as the cache stores them, so it times the trainable part alone (slot attention,
predictor, decoder, losses, backward, Adam). Reading the cache from disk is not included: it is a few
hundred kB per frame. Configs that train their encoder (shapes, panda) have no cache: "n/a".
"""

from __future__ import annotations

import argparse
import time

import torch

from oc_perception import SlotContrast
from oc_perception.devices import autocast, native_bf16
from oc_perception.checkpoint import config_path
from oc_perception.config import load_config
from oc_perception.train import TrainStep


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def steps_per_s(step_fn, device: torch.device, steps: int) -> float:
    step_fn()  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step_fn()
    sync(device)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="movi_c")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="config overrides, key.sub=value")
    args = parser.parse_args()

    cfg = load_config(config_path(args.config), ["model.encoder.pretrained=false", *args.overrides])
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    b, t, s = args.batch_size, cfg.data.chunk_size, cfg.model.encoder.input_size
    print(f"{args.config}: batch {b} x {t} frames at {s} px, {args.steps} timed steps after one warm-up; "
          f"threads {torch.get_num_threads()}, native bf16 on cpu: {native_bf16(torch.device('cpu'))}")
    print(f"{'device':>6} {'dtype':>5} {'backbone steps/s':>17} {'cache steps/s':>14} {'speed-up':>9}")
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
        for dtype in ("fp32", "bf16"):
            def run(batch):
                def one_step():
                    with autocast(dtype, device):
                        losses = train_step(batch())
                    optim.zero_grad(set_to_none=True)
                    losses["loss_total"].backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                    optim.step()
                return one_step

            full = steps_per_s(run(lambda: {"video": video}), device, args.steps)
            if not frozen:
                print(f"{device.type:>6} {dtype:>5} {full:17.3f} {'n/a':>14} {'n/a':>9}")
                continue
            cached = steps_per_s(run(lambda: {"features": features.float()}), device, args.steps)
            print(f"{device.type:>6} {dtype:>5} {full:17.3f} {cached:14.3f} {cached / full:8.1f}x")


if __name__ == "__main__":
    main()
