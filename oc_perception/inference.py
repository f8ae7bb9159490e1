"""Slots and slot-mask videos for a user's video.

    python -m oc_perception.inference --checkpoint model.safetensors --video clip.mov \\
        --out clip_slots.mp4 --slots-out clip_slots.npz

Any file FFmpeg reads is decoded frame by frame (``oc_perception.io.VideoReader``), each frame goes through ``model.preprocess`` (the training
input size and normalisation), and the streaming model runs over chunks of ``--chunk`` frames, carrying its
state from chunk to chunk: memory is that of one chunk whatever the video's length. Outputs are written
as they are produced: an mp4 of [frame | slot-colour overlay | per-slot panels] and an ``.npz`` with
``slots`` float32 [T, K, D] and ``masks`` float16 [T, K, h, w] (decoder masks on the patch grid).

Checkpoints: ours (``.safetensors``, config inside) or an official SlotContrast Lightning ``.ckpt`` (config
from ``--config`` or detected from the weights' shapes). See docs/inference.md.

Python::

    summary = infer_video("model.safetensors", "clip.mp4", out="clip_slots.mp4")
    for chunk in run_inference(model, VideoReader("clip.mp4"), chunk=16):
        chunk.slots  # [T_c, K, D]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from oc_perception import viz
from oc_perception.checkpoint import load_model
from oc_perception.cli import run_or_exit
from oc_perception.io import MIN_VIDEO_SIDE, NpzStreamWriter, VideoReader, VideoWriter, check_outputs
from oc_perception.devices import PRECISIONS, Precision, autocast, check_precision, resolve_device
from oc_perception.data.transforms import center_square_box
from oc_perception.model.slotcontrast import SlotContrast, SlotState

DEFAULT_FPS = 10.0  # output frame rate when the input does not state one


# ---------------------------------------------------------------------------------------------- model


# ---------------------------------------------------------------------------------------------- running


@dataclass
class ChunkOutput:
    """Model outputs for consecutive frames of a stream (tensors on the CPU).

    start: index of the first frame in the stream. frames: uint8 [T_c, H, W, 3] the input frames.
    slots: float32 [T_c, K, D]. masks: float32 [T_c, K, P] decoder masks (softmax over slots).
    """

    start: int
    frames: np.ndarray
    slots: torch.Tensor
    masks: torch.Tensor


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


@torch.inference_mode()
def _forward_chunk(model: SlotContrast, frames: list[np.ndarray],
                   state: SlotState | None) -> tuple[dict[str, torch.Tensor], SlotState]:
    # Frame by frame into the model's input size: only one full-resolution float frame exists at a time.
    video = torch.stack([model.preprocess(frame) for frame in frames])[None]
    return model(video, state)


def run_inference(model: SlotContrast, frames: Iterable[np.ndarray], chunk: int = 16,
                  precision: Precision = "fp32") -> Iterator[ChunkOutput]:
    """Run the streaming model over uint8 RGB frames ``[H, W, 3]`` in chunks of ``chunk`` frames, in
    ``precision`` (``"bf16"``: bfloat16 autocast, :mod:`oc_perception.devices`).

    The recurrent state goes from one chunk to the next, so the slots equal those of one forward over the
    whole video (up to float rounding) while memory holds a single chunk. Yields one ``ChunkOutput`` per chunk.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    state, start = None, 0
    for batch in _batches(frames, chunk):
        with autocast(precision, model.device):
            out, state = _forward_chunk(model, batch, state)
        slots, masks = out["slots"][0].float().cpu(), out["decoder_masks"][0].float().cpu()
        yield ChunkOutput(start, np.stack(batch), slots, masks)
        start += len(batch)


MAX_DISPLAY_SIDE = 1024  # a panel row holds several frames side by side: keep it within what encoders take


def display_size(height: int, width: int, target_height: int) -> tuple[int, int]:
    """(H', W') of a frame shown ``target_height`` pixels high with its aspect ratio kept, both sides at most
    ``MAX_DISPLAY_SIDE`` (a very wide or tall video is shown smaller, aspect still kept)."""
    h, w = target_height, width * target_height / height
    scale = min(1.0, MAX_DISPLAY_SIDE / max(h, w))
    return max(2, round(h * scale)), max(2, round(w * scale))


def render_panels(frames: np.ndarray, masks: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """uint8 [T, H', W'', 3]: [frame | slot-colour overlay | per-slot panels] of frames uint8 [T, H, W, 3] and
    their decoder masks [T, K, P], frames shown at ``size`` (H', W').

    The model saw the whole frame squeezed to a square, so its square mask grid maps back onto the full frame.
    """
    frames = viz.resize_frames(frames, size)
    masks = viz.masks_to_grid(masks)
    return viz.compose_panels(frames, viz.overlay_masks(frames, masks), viz.slot_grid(frames, masks))


# ---------------------------------------------------------------------------------------------- npz output


# ---------------------------------------------------------------------------------------------- entry points


def _model_frames(reader: VideoReader, center_crop: bool) -> tuple[Iterable[np.ndarray], tuple[int, int]]:
    """The frames the model gets and their (H, W): the whole frames, or their centred squares."""
    if not center_crop:
        return reader, (reader.info.height, reader.info.width)
    top, left, side = center_square_box(reader.info.height, reader.info.width)
    return (frame[top : top + side, left : left + side] for frame in reader), (side, side)


def infer_video(
    checkpoint: str | os.PathLike | SlotContrast,
    video: str | os.PathLike,
    out: str | os.PathLike | None = None,
    slots_out: str | os.PathLike | None = None,
    *,
    config: str | None = None,
    chunk: int = 16,
    device: str | torch.device = "auto",
    max_frames: int | None = None,
    fps: float | None = None,
    center_crop: bool = False,
    precision: Precision = "fp32",
    progress: bool = True,
) -> dict[str, Any]:
    """Run a checkpoint (path, or a loaded ``SlotContrast``, moved to ``device``) over a video file and write
    the outputs.

    Args:
        out: mp4 (or gif) of [frame | overlay | per-slot panels], frames shown at the model's input height
            (at least ``MIN_VIDEO_SIDE`` pixels) with their aspect ratio.
        slots_out: ``.npz`` with ``slots`` float32 [T, K, D] and ``masks`` float16 [T, K, h, w].
        config: config name or YAML path, see ``load_model`` (official checkpoints: detected by default).
        chunk: frames per forward; memory grows with it, results do not change.
        device: "auto" (CUDA when present), "cpu", "cuda:1", ...
        max_frames: stop after this many frames.
        fps: frame rate of ``out`` (default: the input's).
        center_crop: use the centred square of each frame (the YT-VIS validation geometry: objects keep their
            aspect ratio) instead of the whole frame squeezed to a square (the default; everything stays in view).
        precision: ``"fp32"`` or ``"bf16"`` (bfloat16 autocast; pays on GPUs and on CPUs with AMX/AVX512-BF16).
        progress: show a tqdm bar on stderr.

    Returns:
        ``{"frames", "seconds", "fps" (frames per second achieved), "device", "out", "slots_out", "complete"}``;
        ``complete`` is False when the video broke part-way (a warning says so).

    Raises:
        FileNotFoundError: missing video or checkpoint. VideoError: unreadable video or no decodable frame.
        CheckpointError: unknown checkpoint type or weights that do not fit. Partial outputs are removed.
    """
    check_outputs({"--out": out, "--slots-out": slots_out},
                  {"--video": video, "--checkpoint": None if isinstance(checkpoint, SlotContrast) else checkpoint,
                   "--config": config if config is not None and Path(config).is_file() else None})
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps} (leave it out to use the input's frame rate)")
    dev = resolve_device(device)
    check_precision(precision, dev)
    with contextlib.ExitStack() as stack:
        reader = stack.enter_context(VideoReader(video, max_frames))
        # Outputs before the model: a bad output path fails before a slow checkpoint load.
        writer = stack.enter_context(VideoWriter(out, fps or reader.info.fps or DEFAULT_FPS)) if out else None
        arrays = stack.enter_context(NpzStreamWriter(slots_out)) if slots_out else None
        if isinstance(checkpoint, SlotContrast):
            model = checkpoint.to(dev).eval()
        else:
            model = load_model(checkpoint, dev, config=config)
        frames, (height, width) = _model_frames(reader, center_crop)
        # Shown at least MIN_VIDEO_SIDE high: masks upsampled bilinearly look better than enlarged pixels.
        size = display_size(height, width, max(model.input_size, MIN_VIDEO_SIDE))
        bar = stack.enter_context(tqdm(total=reader.expected_frames, unit="frame", disable=not progress,
                                       desc=Path(video).name))
        start = time.perf_counter()
        for result in run_inference(model, frames, chunk, precision):
            if writer is not None:
                # Frame by frame: a whole chunk rendered at display size takes several times the model's memory.
                for i in range(len(result.frames)):
                    writer.write(render_panels(result.frames[i : i + 1], result.masks[i : i + 1], size))
            if arrays is not None:
                masks = viz.masks_to_grid(result.masks).numpy().astype(np.float16)
                arrays.append(slots=result.slots.numpy(), masks=masks)
            bar.update(len(result.frames))
    seconds = time.perf_counter() - start
    return {"frames": reader.frames_read, "seconds": seconds, "fps": reader.frames_read / max(seconds, 1e-9),
            "device": str(dev), "out": str(out) if out else None, "slots_out": str(slots_out) if slots_out else None,
            "complete": reader.complete}


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m oc_perception.inference", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="our .safetensors or an official SlotContrast .ckpt")
    p.add_argument("--video", required=True, help="input video (any format FFmpeg reads)")
    p.add_argument("--config", help="config of an official .ckpt: movi_c | movi_e | ytvis2021 or a YAML path "
                                    "(default: detected from the weights); our checkpoints carry theirs")
    p.add_argument("--out", help="mp4/gif of [frame | overlay | slots] (default: <video name>_slots.mp4 "
                                 "here, unless --slots-out is given)")
    p.add_argument("--slots-out", help=".npz with slots [T, K, D] float32 and masks [T, K, h, w] float16")
    p.add_argument("--chunk", type=_positive_int, default=16, help="frames per forward (memory, not results)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="bf16: bfloat16 autocast (GPUs, CPUs with AMX/AVX512-BF16); fp32 elsewhere")
    p.add_argument("--max-frames", type=_positive_int, help="stop after this many frames")
    p.add_argument("--fps", type=float, help="frame rate of --out (default: the input's)")
    p.add_argument("--center-crop", action="store_true",
                   help="use the centred square of each frame instead of squeezing the whole frame to a square")
    args = p.parse_args(argv)
    if args.out is None and args.slots_out is None:
        args.out = f"{Path(args.video).stem}_slots.mp4"
    return args


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: 0 on success; exit code 2 with one ``error: ...`` line on bad input, 130 with one
    ``interrupted: ...`` line on Ctrl-C or SIGTERM (no output is left, whole or partial)."""
    args = parse_args(argv)
    # OSError, ValueError: missing files, VideoError, CheckpointError, ConfigError, outputs over inputs, bad values
    summary = run_or_exit(lambda: infer_video(
        args.checkpoint, args.video, args.out, args.slots_out, config=args.config, chunk=args.chunk,
        device=args.device, max_frames=args.max_frames, fps=args.fps, center_crop=args.center_crop,
        precision=args.precision), errors=(OSError, ValueError))
    outputs = ", ".join(p for p in (summary["out"], summary["slots_out"]) if p)
    print(f"{summary['frames']} frames in {summary['seconds']:.1f} s ({summary['fps']:.1f} frames/s on "
          f"{summary['device']}){'' if summary['complete'] else ' (video incomplete)'} -> {outputs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
