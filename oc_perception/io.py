"""Files in and out: any video FFmpeg reads (frame by frame), mp4/gif and PNG writing, streamed ``.npz`` output,
and the one atomic writer every file of ours goes through (temporary file, then rename).

    with VideoReader("clip.mov") as reader:
        for frame in reader: ...                      # uint8 [H, W, 3]
    write_video("slots.mp4", frames, fps=10)         # uint8 [T, H, W, 3]

FFmpeg (``av``) is imported where a video is opened: the atomic writer serves every checkpoint write, and
``import oc_perception`` must not load FFmpeg for it.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import math
import os
import shutil
import tempfile
import uuid
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np
import torch
from PIL import Image

from oc_perception.frames import check_rgb_uint8

ArrayLike = np.ndarray | torch.Tensor

MIN_VIDEO_SIDE = 256  # videos are enlarged to at least this many pixels (write_video's scale, inference)
MAX_VIDEO_SIDE = 4096  # automatic upscaling stops here (libx264 refuses very wide frames)


class WriteError(OSError):
    """A file could not be written (a full disk, a read-only folder): the message names the file and the disk."""


class OutputPathError(ValueError):
    """An output path that is one of the command's inputs (or another output): writing it would destroy a file."""


LOW_DISK_BYTES = 64 * 2**20  # a write that failed with less free space than this failed for want of space


def _free_bytes(folder: Path) -> int | None:
    """Free space of the disk holding ``folder`` (or its nearest existing parent), None if it cannot be told."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def write_error(path: str | os.PathLike, error: BaseException) -> WriteError | None:
    """``error``, raised while writing ``path``, as a one-line ``WriteError`` that names the file and says whether
    the disk is full or the folder not writable; None when it is not a writing problem (a bug to show as is).

    torch's zip writer reports a full disk as a ``RuntimeError`` (``unexpected pos ...``) without the OS error,
    so a ``RuntimeError`` counts when the disk has (almost) no space left."""
    path = Path(path)
    code = getattr(error, "errno", None)
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return WriteError(f"cannot write {path}: {path.parent} is not writable ({error.strerror}); pick a folder "
                          "you can write to")
    free = _free_bytes(path.parent)
    full = code in (errno.ENOSPC, errno.EDQUOT) or (code is None and free is not None and free < LOW_DISK_BYTES)
    if full and isinstance(error, (OSError, RuntimeError)):
        space = f" ({free / 2**20:.0f} MiB free)" if free is not None else ""
        return WriteError(f"cannot write {path}: the disk holding {path.parent} is full{space}; free some space "
                          "there or write to another disk")
    if isinstance(error, OSError):
        return WriteError(f"cannot write {path} ({error.strerror or error})")
    return None


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> Path:
    """``write(tmp)`` into a temporary file beside ``path``, then rename it into place: a crash never leaves
    half a file under the real name. The file gets the usual permissions (umask), not mkstemp's 0600.

    Raises:
        WriteError: the folder cannot be made or written, or the disk is full (the temporary file is removed).
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint is meant to be shared
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        problem = None if isinstance(e, WriteError) else write_error(path, e)  # judged while tmp still fills the disk
        if problem is None:
            raise
        raise problem from e
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():  # also for files that do not exist yet
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def check_outputs(outputs: Mapping[str, str | os.PathLike | None],
                  inputs: Mapping[str, str | os.PathLike | Sequence[str | os.PathLike] | None]) -> None:
    """Refuse an output path that is one of the inputs or another output, whatever its extension.

    Keys name the paths as the user gave them (``"--slots-out"``, ``"--checkpoint"``); an input may name a list
    of paths (shards); None values are skipped. Paths are compared after following symlinks, and existing
    files by identity (hard links too).

    Raises:
        OutputPathError: names both paths.
    """
    outs = [(name, Path(p)) for name, p in outputs.items() if p is not None]
    ins = [(name, Path(p)) for name, given in inputs.items() if given is not None
           for p in (given if isinstance(given, (list, tuple)) else [given])]
    for i, (name, path) in enumerate(outs):
        for other, source in ins:
            if _same_file(path, source):
                raise OutputPathError(f"{name} {path} is an input ({other} {source}): writing it would destroy "
                                      "that file; pick another output path")
        for other, earlier in outs[:i]:
            if _same_file(path, earlier):
                raise OutputPathError(f"{other} and {name} are the same file {path}: one would replace the other; "
                                      "give them different paths")


# ---------------------------------------------------------------------------------------------- reading


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
        import av

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
        import av

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
        import av

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


# ---------------------------------------------------------------------------------------------- writing


def as_frames(frames: ArrayLike) -> torch.Tensor:
    """uint8 RGB ``[T, H, W, 3]`` (numpy or torch) -> a CPU tensor, with a clear error otherwise."""
    frames = torch.as_tensor(frames).cpu()
    check_rgb_uint8(frames)
    if frames.ndim != 4:
        raise ValueError(f"frames: expected uint8 RGB [T, H, W, 3], got shape {tuple(frames.shape)}")
    return frames


def _enlarge(frames: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling by an integer factor (keeps mask pixels sharp)."""
    if scale == 1:
        return frames
    return frames.repeat(scale, axis=1).repeat(scale, axis=2)


def _pad_even(frames: np.ndarray) -> np.ndarray:
    """Pad [T, H, W, 3] with black to even H and W (yuv420p halves the chroma resolution)."""
    h, w = frames.shape[1:3]
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))


class VideoWriter:
    """Streams frames into an ``.mp4`` (H.264, yuv420p) or ``.gif``; the file appears only when complete.

    Frames go to a temporary file beside ``path``, renamed into place by ``close()``; an exception inside
    ``with VideoWriter(...)`` removes it instead. mp4 frames are encoded as they arrive (memory of a chunk);
    gif frames are kept until ``close()`` (Pillow writes a gif in one go, so keep gifs short).

    Args:
        path: output file; the extension picks the format.
        fps: frames per second.
        scale: integer nearest-neighbour upscaling; ``None`` picks the smallest that makes the shorter
            side at least ``MIN_VIDEO_SIDE`` pixels, so 64-pixel env frames stay watchable.
    """

    FORMATS = (".mp4", ".gif")

    def __init__(self, path: str | os.PathLike, fps: float = 10.0, scale: int | None = None) -> None:
        self.path = Path(path)
        self.suffix = self.path.suffix.lower()
        if self.suffix not in self.FORMATS:
            raise ValueError(f"{self.path}: unsupported video format; use one of {', '.join(self.FORMATS)}")
        if fps <= 0 or (scale is not None and scale < 1):
            raise ValueError(f"VideoWriter: need fps > 0 and scale >= 1, got fps={fps}, scale={scale}")
        self.fps, self.scale = fps, scale
        self._tmp: Path | None = None  # the partial file, created by the first write
        self._size: tuple[int, int] | None = None  # (H, W) of the input frames, fixed by the first write
        self._container: Any = None
        self._stream: Any = None
        self._gif: list[Image.Image] = []
        self.frames_written = 0

    def write(self, frames: ArrayLike) -> None:
        """Append uint8 RGB frames ``[T, H, W, 3]`` (or one frame ``[H, W, 3]``); all of one size."""
        x = as_frames(frames[None] if np.ndim(frames) == 3 else frames).numpy()
        if self._size is None:
            self._open(x.shape[1:3])
        elif x.shape[1:3] != self._size:
            raise ValueError(f"{self.path}: frame size {x.shape[1:3]} differs from the first frames' {self._size}")
        x = _pad_even(_enlarge(x, self.scale)) if self.suffix == ".mp4" else _enlarge(x, self.scale)
        if self.suffix == ".mp4":
            import av
        for frame in x:
            if self.suffix == ".gif":
                self._gif.append(Image.fromarray(frame).quantize(256))
            else:
                try:
                    self._container.mux(self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
                except OSError as e:  # the message names the video, not its hidden partial file
                    raise write_error(self.path, e) from e
        self.frames_written += len(x)

    def _open(self, size: tuple[int, int]) -> None:
        self._size = size
        if self.scale is None:  # enlarge small frames, but never past what encoders take on the long side
            self.scale = max(1, min(math.ceil(MIN_VIDEO_SIDE / min(size)), MAX_VIDEO_SIDE // max(size)))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A unique hidden name beside the target (not mkstemp, whose 0600 mode would stay on the video).
        self._tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:12]}.part")
        if self.suffix == ".mp4":
            import av

            # faststart: the index goes first, so browsers play the file while it downloads
            self._container = av.open(str(self._tmp), "w", format="mp4", options={"movflags": "+faststart"})
            self._stream = self._container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
            height, width = (s * self.scale for s in size)
            self._stream.height, self._stream.width = height + height % 2, width + width % 2
            self._stream.pix_fmt = "yuv420p"
            # crf 18: near-lossless, thin mask boundaries survive; veryfast: encoding keeps up with the model
            self._stream.options = {"crf": "18", "preset": "veryfast"}

    def close(self) -> Path:
        """Finish the file and move it into place; returns its path."""
        if self.frames_written == 0:
            self.abort()
            raise ValueError(f"{self.path}: no frames were written")
        try:
            if self.suffix == ".gif":
                duration = round(1000 / self.fps)
                self._gif[0].save(self._tmp, format="GIF", save_all=True, append_images=self._gif[1:],
                                  duration=duration, loop=0)
                self._gif = []
            else:
                self._container.mux(self._stream.encode(None))  # flush the encoder's delayed frames
                self._container.close()
                self._container = None
            os.replace(self._tmp, self.path)
        except OSError as e:
            raise write_error(self.path, e) from e
        finally:
            self.abort()
        return self.path

    def abort(self) -> None:
        """Drop the partial file (nothing is written at ``path``)."""
        container, self._container = self._container, None
        if container is not None:
            import av

            # Closing flushes what is buffered, which fails again on a full disk: the file goes anyway.
            with contextlib.suppress(av.FFmpegError, OSError):
                container.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def save_png(path: str | os.PathLike, image: ArrayLike) -> Path:
    """Write a uint8 RGB image ``[H, W, 3]`` as PNG, atomically (a temporary file renamed into place)."""
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"save_png: expected uint8 RGB [H, W, 3], got {array.dtype} {array.shape}")
    return atomic_write(Path(path), lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def write_video(path: str | os.PathLike, frames: ArrayLike, fps: float = 10.0, scale: int | None = None) -> Path:
    """Write uint8 RGB frames ``[T, H, W, 3]`` to an ``.mp4`` or ``.gif`` atomically (see :class:`VideoWriter`)."""
    with VideoWriter(path, fps, scale) as writer:
        writer.write(frames)
    return writer.path



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
        """Write ``path`` (atomically, ``atomic_write``) and drop the parts; returns the path."""
        try:
            return atomic_write(self.path, lambda tmp: self._assemble(Path(tmp)))
        finally:
            self.abort()

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
