"""Our SlotContrast beside the official code: training steps/s and inference forwards/s on the same weights.

    python benchmarks/official_speed.py --official PATH [--batch-size 2] [--repeats 5] [--threads 1]
        [--compile] [--skip-official]

``PATH`` is a checkout of the official SlotContrast (github.com/martius-lab/slotcontrast); it needs its
dependencies (pytorch-lightning 1.9, omegaconf, torchmetrics, timm) importable. The official model is built
from its own ``configs/slotcontrast/movi_c.yaml`` (random-init backbone) and its trainable weights are copied into
ours with ``checkpoint.load_official``, so both compute the same function; the script prints the largest
difference of their losses and reconstructions before timing.

Both are timed on the frozen-feature path: a batch of precomputed backbone features [B, T, P, F] (random;
speed does not depend on the values), T = 4 frames as in training. The official model reads frames, so its
frozen timm backbone is replaced by a module that hands the features through (the one shim: the official
code's ``FrameEncoder``, slot attention, predictor, decoder and losses run unchanged). For ours the features
go to ``forward_features``, as the feature cache does.

- train: forward + loss + backward + gradient-norm clipping (0.05) + Adam step, the same optimiser code for both.
- infer: forward (slots and decoding) under ``torch.inference_mode``.

fp32, ``--threads`` intra-op threads (default 1), freed memory kept in the heap (as the training scripts do).
A and B are interleaved: each repeat times one official step and one of ours, of each kind; the table gives
medians over repeats and ratio = ours / official. ``--compile`` adds a column with our model under
``torch.compile`` (its first steps compile, untimed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from oc_perception.checkpoint import config_path, load_official
from oc_perception.config import load_config
from oc_perception.devices import keep_freed_memory
from oc_perception.train import TrainStep

GRAD_CLIP = 0.05


class FeaturesThrough(nn.Module):
    """Stands in for the official frozen backbone: "frames" [N, 1, P, F] -> {"vit_block12": features [N, P, F]}."""

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"vit_block12": images[:, 0]}


def build_official(root: Path) -> nn.Module:
    """The official movi_c model with its backbone replaced by ``FeaturesThrough``."""
    sys.path.insert(0, str(root))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation warnings of its pinned libraries
        from slotcontrast import configuration, models

        cfg = configuration.load_config(root / "configs" / "slotcontrast" / "movi_c.yaml",
                                        ["model.encoder.backbone.pretrained=false"])
        model = models.build(cfg.model, cfg.optimizer)
    model.encoder.module.backbone = FeaturesThrough()
    return model


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", type=Path, required=True, help="checkout of the official SlotContrast")
    ap.add_argument("--batch-size", type=int, default=2, help="clips per step (T = 4 frames each)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compile", action="store_true", help="also time our model under torch.compile")
    ap.add_argument("--skip-official", action="store_true", help="time ours alone (the official still gives "
                                                                 "the weights)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    kept = keep_freed_memory()

    torch.manual_seed(0)
    official = build_official(args.official.resolve())
    cfg = load_config(config_path("movi_c"), ["model.encoder.pretrained=false"])
    state = {k: v for k, v in official.state_dict().items() if not k.startswith("encoder.module.backbone")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no backbone weights": the features are given
        ours = load_official(state, cfg)
    b, t, p, f = args.batch_size, cfg.data.chunk_size, ours.num_patches, cfg.model.encoder.feature_dim
    features = torch.randn(b, t, p, f, generator=torch.Generator().manual_seed(1))
    official_batch = {"video": features.unsqueeze(2)}  # [B, T, 1, P, F]: "frames" for FeaturesThrough

    def official_losses() -> torch.Tensor:
        return official.compute_loss(official(official_batch))[0]

    with torch.no_grad():
        ours.eval(), official.eval()
        out_off = official(official_batch)
        out, _ = ours.forward_features(features)
        loss_diff = abs(official.compute_loss(out_off)[0].item() - ours.loss(out)["loss_total"].item())
        recon_diff = (out_off["decoder"]["reconstruction"] - out["reconstruction"]).abs().max().item()
    ours.train(), official.train()

    models: dict[str, tuple[nn.Module, Callable[[], torch.Tensor], Callable[[], object]]] = {}
    if not args.skip_official:
        models["official"] = (official, official_losses, lambda: official(official_batch))
    train_step = TrainStep(ours)
    models["ours"] = (ours, lambda: train_step({"features": features})["loss_total"],
                      lambda: ours.forward_features(features))
    if args.compile:
        compiled = torch.compile(train_step)
        compiled_infer = torch.compile(ours.forward_features)
        models["ours+compile"] = (ours, lambda: compiled({"features": features})["loss_total"],
                                  lambda: compiled_infer(features))

    def train_fn(model: nn.Module, losses: Callable[[], torch.Tensor]) -> Callable[[], None]:
        optim = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=4e-4)

        def step() -> None:
            loss = losses()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            optim.step()
        return step

    def infer_fn(model: nn.Module, forward: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                forward()
        return run

    fns = {name: {"train": train_fn(m, loss), "infer": infer_fn(m, fwd)} for name, (m, loss, fwd) in models.items()}
    for kinds in fns.values():  # warm-up (allocator, compilation)
        for fn in kinds.values():
            fn(), fn()
    times: dict[tuple[str, str], list[float]] = {(n, k): [] for n in fns for k in ("train", "infer")}
    for _ in range(args.repeats):
        for kind in ("train", "infer"):
            for name, kinds in fns.items():
                times[(name, kind)].append(timed(kinds[kind]))

    print(f"movi_c, frozen features [B={b}, T={t}, P={p}, F={f}], fp32, {torch.get_num_threads()} thread(s), "
          f"torch {torch.__version__}, freed memory kept: {kept}; medians of {args.repeats} interleaved repeats")
    print(f"same weights: |loss ours - official| {loss_diff:.1e}, max |reconstruction diff| {recon_diff:.1e}")
    base = {k: 1 / statistics.median(times[("official", k)]) for k in ("train", "infer")} if "official" in fns \
        else None
    print(f"{'model':<14}{'train steps/s':>14}{'ratio':>8}{'infer forwards/s':>18}{'ratio':>8}")
    for name in fns:
        rates = {k: 1 / statistics.median(times[(name, k)]) for k in ("train", "infer")}
        ratios = {k: f"{rates[k] / base[k]:.2f}x" if base else "n/a" for k in rates}
        print(f"{name:<14}{rates['train']:>14.3f}{ratios['train']:>8}{rates['infer']:>18.3f}{ratios['infer']:>8}")


if __name__ == "__main__":
    main()
