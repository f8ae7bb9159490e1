"""Slots and slot-mask videos for a user's video.

    python -m oc_perception.inference --checkpoint model.safetensors --video clip.mov \\
        --out clip_slots.mp4 --slots-out clip_slots.npz

Any file FFmpeg reads is decoded frame by frame, each frame goes through ``model.preprocess`` (the training
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
import shutil
import sys
import tempfile
import time
import uuid
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import av
import numpy as np
import torch
from tqdm import tqdm

from oc_perception import viz
from oc_perception.checkpoint import load_model
from oc_perception.devices import resolve_device
from oc_perception.data.transforms import center_square_box
from oc_perception.model.slotcontrast import SlotContrast, SlotState

DEFAULT_FPS = 10.0  # output frame rate when the input does not state one


class VideoError(ValueError):
    """A video that cannot be used: not a video FFmpeg reads, no video stream, or no decodable frame."""


# ---------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class VideoInfo:
    """The first video stream as its container describes it (before decoding)."""

    width: int
    height: int
    fps: float | None  # average frame rate; None when unknown
    num_frames: int | None  # None when the container does not say


class VideoReader:
    """Iterates uint8 RGB frames ``[H, W, 3]`` of the first video stream of any file FFmpeg reads, decoding
    one frame at a time.

    A video that breaks part-way (truncated or corrupt data) yields the frames decoded before the break
    with a warning and sets ``complete = False``; one with no decodable frame raises ``VideoError``.
    Frames that change size mid-stream are scaled to the first frame's size.

    One pass: iterating again continues where the first pass stopped.

    Args:
        path: video file.
        max_frames: stop after this many frames (None: all).
    """

    def __init__(self, path: str | os.PathLike, max_frames: int | None = None) -> None:
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        self.path = Path(path)
        if self.path.is_dir():
            raise VideoError(f"{self.path} is a directory, not a video file; pass one video file")
        if not self.path.is_file():
            raise FileNotFoundError(f"video not found: {self.path}")
        try:
            self._container = av.open(str(self.path))
        except av.FFmpegError as e:
            raise VideoError(f"{self.path} is not a video FFmpeg can read ({e.strerror or e})") from e
        if not self._container.streams.video:
            self._container.close()
            raise VideoError(f"{self.path} has no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"  # frame- and slice-threaded decoding
        rate, frames = self._stream.average_rate, self._stream.frames
        self.info = VideoInfo(self._stream.width, self._stream.height, float(rate) if rate else None,
                              frames or None)
        # Some containers (Matroska/WebM) state no frame count, only a duration: estimate the count from it so
        # a truncated file is still noticed.
        self.estimated_frames = None if frames else self._frames_from_duration()
        self.max_frames = max_frames
        self.frames_read = 0
        self.complete = True

    def _frames_from_duration(self) -> int | None:
        rate = self.info.fps
        if not rate:
            return None
        stream = self._stream
        if stream.duration and stream.time_base:
            seconds = float(stream.duration * stream.time_base)
        elif self._container.duration:
            seconds = self._container.duration / av.time_base
        else:
            return None
        return max(1, int(round(seconds * rate)))

    @property
    def expected_frames(self) -> int | None:
        """Frames this reader will yield if the video is intact (None when unknown)."""
        known = [n for n in (self.info.num_frames, self.max_frames) if n is not None]
        return min(known) if known else None

    def __iter__(self) -> Iterator[np.ndarray]:
        size = {"width": self.info.width, "height": self.info.height}
        frames = itertools.islice(self._container.decode(self._stream), self.max_frames)
        try:
            for frame in frames:
                yield frame.to_ndarray(format="rgb24", **size)
                self.frames_read += 1
        except av.FFmpegError as e:
            if self.frames_read == 0:
                raise VideoError(f"{self.path}: no frame could be decoded ({e.strerror or e})") from e
            self._warn_incomplete(f"decoding failed after {self.frames_read} frames ({e.strerror or e})")
            return
        if self.frames_read == 0:
            raise VideoError(f"{self.path}: the video stream holds no frame")
        if self.info.num_frames is not None and self.frames_read < self.expected_frames:
            self._warn_incomplete(f"only {self.frames_read} of {self.info.num_frames} frames could be decoded")
        elif self.estimated_frames is not None and self.max_frames is None \
                and self.frames_read < self.estimated_frames - 1:  # one frame of slack for rounding
            self._warn_incomplete(f"only {self.frames_read} of about {self.estimated_frames} frames (from the "
                                  "container's duration) could be decoded")

    def _warn_incomplete(self, reason: str) -> None:
        self.complete = False
        warnings.warn(f"{self.path}: {reason}; the video is truncated or corrupt, keeping the frames "
                      "decoded so far", stacklevel=3)

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


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
    out = model(video, state)
    return out, model.next_state(out)


def run_inference(model: SlotContrast, frames: Iterable[np.ndarray], chunk: int = 16) -> Iterator[ChunkOutput]:
    """Run the streaming model over uint8 RGB frames ``[H, W, 3]`` in chunks of ``chunk`` frames.

    The recurrent state goes from one chunk to the next, so the slots equal those of one forward over the
    whole video (up to float rounding) while memory holds a single chunk. Yields one ``ChunkOutput`` per chunk.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    state, start = None, 0
    for batch in _batches(frames, chunk):
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


class NpzStreamWriter:
    """Builds an ``.npz`` from arrays appended chunk by chunk along their first axis, with the memory of one
    chunk (``np.savez`` needs whole arrays): parts are spooled to temporary files and copied into the zip
    (stored, as ``np.savez`` does) by ``close()``, which writes ``path`` atomically."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._parts: dict[str, tuple[IO[bytes], np.dtype, tuple[int, ...]]] = {}
        self._rows: dict[str, int] = {}

    def append(self, **arrays: np.ndarray) -> None:
        """Append each array ``[N, ...]`` to the one of that name (same dtype and trailing shape each time)."""
        for name, array in arrays.items():
            array = np.ascontiguousarray(array)
            if name not in self._parts:
                self._parts[name] = (tempfile.TemporaryFile(), array.dtype, array.shape[1:])
                self._rows[name] = 0
            file, dtype, tail = self._parts[name]
            if (array.dtype, array.shape[1:]) != (dtype, tail):
                raise ValueError(f"{self.path}: '{name}' was {dtype} [N, {tail}], got {array.dtype} {array.shape}")
            file.write(array.tobytes())
            self._rows[name] += len(array)

    def _assemble(self, target: Path) -> None:
        with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, (file, dtype, tail) in self._parts.items():
                header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                          "shape": (self._rows[name], *tail)}
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array_header_1_0(member, header)
                    file.seek(0)
                    shutil.copyfileobj(file, member)

    def close(self) -> Path:
        """Write ``path`` (through a temporary file renamed into place) and drop the parts; returns the path."""
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:12]}.part")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._assemble(tmp)
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
            self.abort()
        return self.path

    def abort(self) -> None:
        """Drop the parts without writing anything."""
        for file, _, _ in self._parts.values():
            file.close()
        self._parts.clear()

    def __enter__(self) -> "NpzStreamWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


# ---------------------------------------------------------------------------------------------- entry points


def _model_frames(reader: VideoReader, center_crop: bool) -> tuple[Iterable[np.ndarray], tuple[int, int]]:
    """The frames the model gets and their (H, W): the whole frames, or their centred squares."""
    if not center_crop:
        return reader, (reader.info.height, reader.info.width)
    top, left, side = center_square_box(reader.info.height, reader.info.width)
    return (frame[top : top + side, left : left + side] for frame in reader), (side, side)


def check_output_paths(video: str | os.PathLike, out: str | os.PathLike | None,
                       slots_out: str | os.PathLike | None) -> None:
    """Refuse outputs that would overwrite the input video or each other (one file would be lost)."""
    src = Path(video).resolve()
    given = {name: Path(p).resolve() for name, p in (("--out", out), ("--slots-out", slots_out)) if p}
    for name, path in given.items():
        if path == src:
            raise ValueError(f"{name} {path} is the input video: writing it would destroy the input; pick "
                             "another output path")
    if len(given) == 2 and given["--out"] == given["--slots-out"]:
        raise ValueError(f"--out and --slots-out are the same file {given['--out']}: one would replace the "
                         "other; give them different paths")


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
    progress: bool = True,
) -> dict[str, Any]:
    """Run a checkpoint (path, or a loaded ``SlotContrast``, moved to ``device``) over a video file and write
    the outputs.

    Args:
        out: mp4 (or gif) of [frame | overlay | per-slot panels], frames shown at the model's input height
            (at least ``viz.MIN_VIDEO_SIDE`` pixels) with their aspect ratio.
        slots_out: ``.npz`` with ``slots`` float32 [T, K, D] and ``masks`` float16 [T, K, h, w].
        config: config name or YAML path, see ``load_model`` (official checkpoints: detected by default).
        chunk: frames per forward; memory grows with it, results do not change.
        device: "auto" (CUDA when present), "cpu", "cuda:1", ...
        max_frames: stop after this many frames.
        fps: frame rate of ``out`` (default: the input's).
        center_crop: use the centred square of each frame (the YT-VIS validation geometry: objects keep their
            aspect ratio) instead of the whole frame squeezed to a square (the default; everything stays in view).
        progress: show a tqdm bar on stderr.

    Returns:
        ``{"frames", "seconds", "fps" (frames per second achieved), "device", "out", "slots_out", "complete"}``;
        ``complete`` is False when the video broke part-way (a warning says so).

    Raises:
        FileNotFoundError: missing video or checkpoint. VideoError: unreadable video or no decodable frame.
        CheckpointError: unknown checkpoint type or weights that do not fit. Partial outputs are removed.
    """
    check_output_paths(video, out, slots_out)
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps} (leave it out to use the input's frame rate)")
    dev = resolve_device(device)
    with contextlib.ExitStack() as stack:
        reader = stack.enter_context(VideoReader(video, max_frames))
        # Outputs before the model: a bad output path fails before a slow checkpoint load.
        writer = stack.enter_context(viz.VideoWriter(out, fps or reader.info.fps or DEFAULT_FPS)) if out else None
        arrays = stack.enter_context(NpzStreamWriter(slots_out)) if slots_out else None
        if isinstance(checkpoint, SlotContrast):
            model = checkpoint.to(dev).eval()
        else:
            model = load_model(checkpoint, dev, config=config)
        frames, (height, width) = _model_frames(reader, center_crop)
        # Shown at least MIN_VIDEO_SIDE high: masks upsampled bilinearly look better than enlarged pixels.
        size = display_size(height, width, max(model.input_size, viz.MIN_VIDEO_SIDE))
        bar = stack.enter_context(tqdm(total=reader.expected_frames, unit="frame", disable=not progress,
                                       desc=Path(video).name))
        start = time.perf_counter()
        for result in run_inference(model, frames, chunk):
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
    p.add_argument("--max-frames", type=_positive_int, help="stop after this many frames")
    p.add_argument("--fps", type=float, help="frame rate of --out (default: the input's)")
    p.add_argument("--center-crop", action="store_true",
                   help="use the centred square of each frame instead of squeezing the whole frame to a square")
    args = p.parse_args(argv)
    if args.out is None and args.slots_out is None:
        args.out = f"{Path(args.video).stem}_slots.mp4"
    return args


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: 0 on success; 2 with one ``error: ...`` line on bad input."""
    args = parse_args(argv)
    try:
        summary = infer_video(args.checkpoint, args.video, args.out, args.slots_out, config=args.config,
                              chunk=args.chunk, device=args.device, max_frames=args.max_frames, fps=args.fps,
                              center_crop=args.center_crop)
    except (OSError, ValueError) as e:  # missing files, VideoError, CheckpointError, ConfigError, bad values
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    outputs = ", ".join(p for p in (summary["out"], summary["slots_out"]) if p)
    print(f"{summary['frames']} frames in {summary['seconds']:.1f} s ({summary['fps']:.1f} frames/s on "
          f"{summary['device']}){'' if summary['complete'] else ' (video incomplete)'} -> {outputs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
