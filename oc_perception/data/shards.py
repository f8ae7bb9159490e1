"""Video shards in the official SlotContrast/VideoSaur webdataset layout.

A shard is a plain tar file. One video is a group of members sharing a key (the name up to the first
dot): ``<key>.video.npy`` holds uint8 ``[T, H, W, 3]`` and, where labelled, ``<key>.segmentations.npy``
holds either MOVi-style ids ``[T, H, W, 1]`` (0 = background) or YT-VIS-style instance masks
``[T, H, W, N]`` (non-zero = instance on; the official converter stores the category id there).
The official converters use keys ``str(index)`` (MOVi) and ``str(video_id)`` (YT-VIS); ours write
``%06d`` indices. Any key without a dot reads the same, so shards made for the official code work as they are.
"""

from __future__ import annotations

import glob
import io
import os
import re
import tarfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import braceexpand
import numpy as np
import webdataset as wds
from tqdm import tqdm

from oc_perception.frames import rgb_conversion

VIDEO = "video"
SEGMENTATIONS = "segmentations"


class ShardError(RuntimeError):
    """A shard that cannot be read (corrupt, truncated, or missing a member)."""


class EmptyDatasetError(ValueError):
    """Shards exist but hold no videos."""


def check_video(dtype: np.dtype, shape: Sequence[int], where: str) -> None:
    """Raise a ShardError unless a stored video of this dtype and shape is uint8 RGB ``[T, H, W, 3]``; ``where``
    names the shard and video, and the message the conversion."""
    if np.dtype(dtype) != np.uint8 or len(shape) != 4 or shape[-1] != 3:
        raise ShardError(f"{where} is {np.dtype(dtype)} {list(shape)}, but videos must be uint8 RGB [T, H, W, 3]: "
                         f"{rgb_conversion(np.dtype(dtype), shape[1:])}, and write the shards again")


def _unreadable(path: str | Path, reason: object) -> ShardError:
    return ShardError(f"cannot read shard {path}: {reason}; the file is corrupt or truncated, re-create it")


def _pattern_glob(pattern: str) -> str:
    """``DIR/x-train-%06d.tar`` -> ``DIR/x-train-*.tar``."""
    return re.sub(r"%0?\d*d", "*", pattern)


def write_shards(
    samples: Iterable[Mapping[str, np.ndarray | str]],
    pattern: str | Path,
    videos_per_shard: int = 32,
    *,
    total: int | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> list[Path]:
    """Write videos to ``pattern % shard_index`` tar shards, ``videos_per_shard`` videos each.

    Each sample maps array names to numpy arrays (``"video"``: uint8 [T, H, W, 3], optionally
    ``"segmentations"``: uint8 [T, H, W, C]), stored as ``<key>.<name>.npy``; ``"__key__"`` sets the key
    (default: the running index as ``%06d``). Existing files matching the pattern are an error unless
    ``overwrite``, which deletes them first, so no stale shard of an earlier, larger run survives.
    ``total`` sizes the progress bar; ``progress=None`` shows it only on a terminal.
    Returns the shard paths written.
    """
    pattern = str(pattern)
    existing = sorted(glob.glob(_pattern_glob(pattern)))
    if existing and not overwrite:
        raise FileExistsError(
            f"{len(existing)} shard(s) already match {pattern} (e.g. {existing[0]}); "
            "delete them or pass overwrite=True (--overwrite)"
        )
    for path in existing:
        os.remove(path)
    Path(pattern).parent.mkdir(parents=True, exist_ok=True)

    written: list[Path] = []
    count = 0
    show = None if progress is None else not progress  # tqdm: None = only on a terminal
    bar = tqdm(samples, total=total, unit="video", desc=Path(pattern).name, disable=show)
    try:
        with wds.ShardWriter(pattern, maxcount=videos_per_shard, verbose=0,
                             post=lambda f: written.append(Path(f))) as sink:
            for sample in bar:
                key = str(sample.get("__key__", f"{count:06d}"))
                if "." in key:
                    raise ValueError(f"sample key {key!r} contains a dot; tar readers split keys at the first dot")
                if VIDEO not in sample:
                    raise ValueError(f"sample {key} has no 'video' array (it has {sorted(sample)})")
                record = {f"{name}.npy": np.asarray(array) for name, array in sample.items() if name != "__key__"}
                sink.write({"__key__": key, **record})
                count += 1
    except BaseException:
        # A run that fails part-way leaves no shard behind (the pattern's files were cleared above, so every
        # match is this call's): a half data set would pass for a whole one later.
        for path in glob.glob(_pattern_glob(pattern)):
            os.remove(path)
        raise
    if count == 0:
        for path in written:
            os.remove(path)
        raise EmptyDatasetError(f"no videos to write to {pattern}")
    return written


def _missing_shards_hint(pattern: str, where: Path) -> str:
    """What to run to create the shards ``pattern`` names."""
    out = where / Path(pattern).parent
    name = Path(pattern).name.lower()
    if "movi" in name:
        variant = "e" if "movi_e" in name else "c"
        return f"convert MOVi with: python -m oc_perception.data.movi --variant {variant} --out {out}"
    if "ytvis" in name:
        return f"convert YT-VIS 2021 with: python -m oc_perception.data.ytvis --raw <ytvis2021 download> --out {out}"
    return (
        "generate env videos with: python -m oc_perception.data.generate --env oc/ShapesPush-v0 "
        f"--episodes 1000 --steps 24 --out {out}"
    )


def expand_shards(pattern: str, data_dir: str | Path | None = None) -> list[Path]:
    """Shard paths named by ``pattern``: brace ranges (``x-{000000..000010}.tar``) and globs (``x-*.tar``).

    A relative pattern is taken relative to ``data_dir`` (default: the working directory). Brace names
    come out in their order, glob matches sorted. Raises FileNotFoundError naming the pattern, the
    directory and what to run when nothing matches or a brace-named shard is missing.
    """
    where = Path(data_dir) if data_dir is not None else Path.cwd()
    full = pattern if os.path.isabs(pattern) else str(where / pattern)
    paths: list[Path] = []
    missing: list[str] = []
    for name in braceexpand.braceexpand(full):
        if glob.has_magic(name):
            paths.extend(Path(p) for p in sorted(glob.glob(name)))
        elif os.path.isfile(name):
            paths.append(Path(name))
        else:
            missing.append(name)
    if paths and not missing:
        return paths
    problem = (
        f"{len(missing)} shard(s) named by '{pattern}' are missing (first: {missing[0]})"
        if paths
        else f"no shards match '{pattern}' in {where}"
    )
    if not where.is_dir():
        problem += f" (the data directory {where} does not exist)"
    hint = _missing_shards_hint(pattern, where)
    raise FileNotFoundError(f"{problem}; {hint}, or point --data-dir at the folder holding them")


def _decode(raw: dict, path: Path) -> dict[str, np.ndarray | str]:
    """Raw tar members of one sample -> ``{"__key__": str, name: array}`` (``.npy`` suffix dropped)."""
    sample: dict[str, np.ndarray | str] = {"__key__": raw["__key__"]}
    for member, data in raw.items():
        if member.endswith(".npy"):
            try:
                sample[member[: -len(".npy")]] = np.load(io.BytesIO(data), allow_pickle=False)
            except ValueError as e:
                raise ShardError(f"{path}: member {raw['__key__']}.{member} is not a valid .npy array ({e})") from e
    return sample


def read_shard(path: str | Path, keys: Sequence[str] | None = None,
               optional: Sequence[str] = ()) -> Iterator[dict[str, np.ndarray | str]]:
    """Yield the videos of one shard as ``{"__key__": str, "video": uint8 [T, H, W, 3], ...}``.

    ``keys`` restricts the arrays read (e.g. ``["video"]`` skips segmentations and flow without
    decoding them); a sample lacking one of them is an error. ``optional`` arrays are read when present.
    Raises :class:`ShardError` naming the file when it is not a readable tar.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"shard {path} does not exist")
    wanted = None if keys is None else {f"{k}.npy" for k in (*keys, *optional)}

    def select(fname: str) -> bool:
        return wanted is None or os.path.basename(fname).split(".", 1)[-1] in wanted

    try:
        for raw in wds.tariterators.tarfile_samples([{"url": str(path)}], select_files=select):
            sample = _decode(raw, path)
            absent = [k for k in keys or () if k not in sample]
            if absent:
                raise ShardError(
                    f"{path}: video {sample['__key__']} has no {', '.join(f'{k}.npy' for k in absent)} "
                    f"(it has {', '.join(k for k in sample if k != '__key__') or 'nothing'})"
                )
            if VIDEO in sample:
                check_video(sample[VIDEO].dtype, sample[VIDEO].shape, f"{path}: video {sample['__key__']}")
            yield sample
    except (tarfile.TarError, OSError, EOFError) as e:
        # webdataset appends the stream and url to ``args``; the first entry is the message
        raise _unreadable(path, e.args[0] if e.args else type(e).__name__) from e


def iter_videos(
    paths: Iterable[str | Path], keys: Sequence[str] | None = None, optional: Sequence[str] = ()
) -> Iterator[dict[str, np.ndarray | str]]:
    """Yield the videos of several shards in order (see :func:`read_shard`)."""
    for path in paths:
        yield from read_shard(path, keys, optional)


def segmentation_to_labels(seg: np.ndarray) -> np.ndarray:
    """Stored segmentations -> int64 labels [T, H, W], 0 = background / unlabelled.

    ``[T, H, W, 1]`` ids (MOVi, our envs) are kept. ``[T, H, W, N]`` instance masks (YT-VIS) become
    label ``i + 1`` where instance ``i`` is non-zero; on overlap the last instance wins.
    """
    if seg.ndim != 4:
        raise ValueError(f"segmentations: expected [T, H, W, C], got shape {seg.shape}")
    if seg.shape[-1] == 1:
        return seg[..., 0].astype(np.int64)
    on = seg != 0
    # Index of the last instance that is on, +1; 0 where none is.
    last = seg.shape[-1] - np.argmax(on[..., ::-1], axis=-1)
    return np.where(on.any(axis=-1), last, 0).astype(np.int64)
