"""Training clips with exact resume: random access into tar shards, a per-step deterministic sampler, and
the frozen-backbone feature cache.

Why not stream the shards: a resumed run must see exactly the batches the uninterrupted run would have
seen. Here the batch of step ``s`` is a pure function of ``(seed, s)``: the sampler draws an epoch
permutation from ``(seed, epoch)`` and each clip's chunk and flip from ``(seed, epoch, index)``, so
resuming is "start the sampler at step s" with no replay and no dependence on worker count.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from oc_perception.data.shards import (SEGMENTATIONS, VIDEO, EmptyDatasetError, ShardError, check_video,
                                        segmentation_to_labels)
from oc_perception.data.transforms import VideoTransform, sample_chunk_start
from oc_perception.io import atomic_write


@dataclass(frozen=True)
class Member:
    """Where one ``.npy`` member of a shard lies: shard path, byte offset and size of its data."""

    path: str
    offset: int
    size: int


@dataclass(frozen=True)
class VideoEntry:
    key: str
    video: Member
    segmentations: Member | None
    num_frames: int


def _npy_header(tar: tarfile.TarFile, info: tarfile.TarInfo) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of a stored array from its .npy header alone."""
    f = tar.extractfile(info)
    major, _ = np.lib.format.read_magic(f)
    read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(f)
    return shape, dtype


class ShardIndex:
    """Random access to the videos of tar shards (read headers once, then seek to any member).

    ``index[i]`` -> ``{"video": uint8 [T, H, W, 3], "segmentations": ... (if present)}``.
    """

    def __init__(self, shards: Sequence[str | Path]) -> None:
        self.entries: list[VideoEntry] = []
        for shard in shards:
            try:
                with tarfile.open(shard) as tar:
                    members: dict[str, dict[str, Member]] = {}
                    frames: dict[str, int] = {}
                    for info in tar:
                        if not info.isfile() or not info.name.endswith(".npy"):
                            continue
                        base = Path(info.name).name
                        key, _, name = base.partition(".")
                        name = name[: -len(".npy")]
                        members.setdefault(key, {})[name] = Member(str(shard), info.offset_data, info.size)
                        if name == VIDEO:
                            shape, dtype = _npy_header(tar, info)
                            check_video(dtype, shape, f"{shard}: video {key}")
                            frames[key] = int(shape[0])
            except (tarfile.TarError, OSError, ValueError) as e:
                raise ShardError(f"cannot read shard {shard}: {e}; the file is corrupt or truncated, re-create it") from e
            for key, named in members.items():
                if VIDEO not in named:
                    raise ShardError(f"{shard}: video {key} has no {key}.{VIDEO}.npy")
                self.entries.append(VideoEntry(key, named[VIDEO], named.get(SEGMENTATIONS), frames[key]))
        if not self.entries:
            raise EmptyDatasetError(f"the {len(shards)} shard(s) hold no videos; re-create them")

    def __len__(self) -> int:
        return len(self.entries)

    @staticmethod
    def read(member: Member) -> np.ndarray:
        with open(member.path, "rb") as f:
            f.seek(member.offset)
            data = f.read(member.size)
        if len(data) != member.size:
            raise ShardError(f"{member.path} is truncated (member at byte {member.offset}); re-create it")
        return np.load(io.BytesIO(data), allow_pickle=False)

    def video(self, i: int) -> np.ndarray:
        return self.read(self.entries[i].video)

    def fingerprint(self) -> str:
        """Identifies the shard contents (paths, sizes, members) for cache validation."""
        h = hashlib.sha256()
        for e in self.entries:
            h.update(f"{e.video.path}:{e.video.offset}:{e.video.size}:{e.num_frames};".encode())
        return h.hexdigest()[:16]


def clip_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


class StepSampler(Sampler):
    """Yields, for each training step from ``start_step`` on, this rank's share of the global batch.

    Items are ``(video_index, epoch)`` tuples. Epoch ``e`` is a permutation of all videos drawn from
    ``(seed, e)``; consecutive global batches take consecutive slices of it (across epoch borders), and rank
    ``r`` of ``world_size`` takes the r-th contiguous part of each global batch.
    """

    def __init__(self, num_videos: int, global_batch: int, seed: int, start_step: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        if global_batch % world_size:
            raise ValueError(f"data.batch_size {global_batch} is not divisible by the {world_size} processes")
        self.n, self.batch, self.seed = num_videos, global_batch, seed
        self.start_step, self.rank, self.world = start_step, rank, world_size
        self._perm: tuple[int, np.ndarray] | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch, 0x5EED]).permutation(self.n))
        return self._perm[1]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per_rank = self.batch // self.world
        step = self.start_step
        while True:
            first = step * self.batch + self.rank * per_rank  # position in the endless epoch sequence
            items = []
            for pos in range(first, first + per_rank):
                epoch, i = divmod(pos, self.n)
                items.append((int(self._permutation(epoch)[i]), epoch))
            yield items
            step += 1


class TrainClips(Dataset):
    """Map-style training clips: item ``(video_index, epoch)`` -> ``{"video": float [chunk, 3, S, S]}``.

    The chunk start and flip come from ``clip_rng(seed, epoch, video_index)``; with a feature cache the
    item is ``{"features": float [chunk, P, F]}`` read from the cache (its flipped copy when flipped).
    """

    def __init__(self, index: ShardIndex, transform: VideoTransform, chunk_size: int, seed: int,
                 cache: "FeatureCache | None" = None, segmentation: bool = False) -> None:
        self.index, self.transform, self.chunk, self.seed, self.cache = index, transform, chunk_size, seed, cache
        self.segmentation = segmentation
        if segmentation:
            if cache is not None:
                raise ValueError("training with segmentations (model.loss.segmentation_weight) needs videos, not a "
                                 "feature cache: set data.cache_features=false")
            missing = [e.key for e in index.entries if e.segmentations is None]
            if missing:
                raise ShardError(f"model.loss.segmentation_weight > 0 needs segmentations, but {len(missing)} "
                                 f"training video(s) have none (e.g. {missing[0]}); set it to 0 or use shards "
                                 "with segmentations")
        short = [e for e in index.entries if e.num_frames < chunk_size]
        if short:  # caught here, with names, rather than inside a DataLoader worker mid-run
            shown = ", ".join(f"{e.key} ({e.num_frames} frames)" for e in short[:5])
            raise ShardError(f"{len(short)} training video(s) are shorter than data.chunk_size={chunk_size}: "
                             f"{shown}{' ...' if len(short) > 5 else ''}; lower data.chunk_size or drop them")

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: tuple[int, int]) -> dict[str, torch.Tensor]:
        i, epoch = item
        rng = clip_rng(self.seed, epoch, i)
        start = sample_chunk_start(self.index.entries[i].num_frames, self.chunk, rng)
        if self.cache is not None:
            flipped = self.transform.flip_prob > 0 and rng.random() < self.transform.flip_prob
            return {"features": self.cache.read(i, start, self.chunk, flipped)}
        video = self.index.video(i)[start : start + self.chunk]
        if not self.segmentation:
            return {"video": self.transform(video, rng=rng).video}
        labels = segmentation_to_labels(self.index.read(self.index.entries[i].segmentations))
        clip = self.transform(video, labels[start : start + self.chunk], rng=rng)
        return {"video": clip.video, "segmentation": clip.labels}


class FeatureCache:
    """Frozen-backbone features of every training frame, fp16 on disk, plus a mirrored copy for flips.

    Layout in ``directory``: ``features.npy`` and ``features_flip.npy`` [total_frames, P, F] (memory-mapped),
    ``offsets.npy`` [N + 1] (first frame of each video), ``meta.json`` (what the cache was made from; a
    mismatch rebuilds it).
    """

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.offsets = np.load(self.dir / "offsets.npy")
        self._arrays: dict[bool, np.ndarray] = {}

    def _array(self, flipped: bool) -> np.ndarray:
        if flipped not in self._arrays:  # opened lazily, so each DataLoader worker maps its own view
            name = "features_flip.npy" if flipped else "features.npy"
            self._arrays[flipped] = np.load(self.dir / name, mmap_mode="r")
        return self._arrays[flipped]

    def read(self, video: int, start: int, length: int, flipped: bool) -> torch.Tensor:
        first = int(self.offsets[video]) + start
        return torch.from_numpy(np.asarray(self._array(flipped)[first : first + length], dtype=np.float32))

    @staticmethod
    def build(directory: str | Path, index: ShardIndex, model, transform: VideoTransform, with_flip: bool,
              device: torch.device, batch_frames: int = 32) -> "FeatureCache":
        """Compute the cache if ``directory`` does not already hold one for this data and backbone."""
        directory = Path(directory)
        enc = model.cfg.encoder
        meta = {"data": index.fingerprint(), "backbone": enc.backbone, "weights": enc.weights,
                "pretrained": enc.pretrained, "input_size": enc.input_size, "mean": list(model.cfg.mean),
                "std": list(model.cfg.std), "flip": with_flip}
        meta_path = directory / "meta.json"
        if meta_path.is_file() and json.loads(meta_path.read_text()) == meta:
            return FeatureCache(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta_path.unlink(missing_ok=True)  # a half-built cache is never mistaken for a complete one
        offsets = np.concatenate([[0], np.cumsum([e.num_frames for e in index.entries])])
        shape = (int(offsets[-1]), model.num_patches, enc.feature_dim)
        variants = [False, True] if with_flip else [False]
        arrays = {
            flip: np.lib.format.open_memmap(directory / ("features_flip.npy" if flip else "features.npy"),
                                            mode="w+", dtype=np.float16, shape=shape)
            for flip in variants
        }
        plain = VideoTransform(transform.size, transform.mean, transform.std, transform.mode)
        with torch.inference_mode():
            for i in tqdm(range(len(index)), desc="feature cache", unit="video"):
                video = plain(index.video(i)).video  # [T, 3, S, S]
                for flip in variants:
                    frames = video.flip(-1) if flip else video
                    for s in range(0, len(frames), batch_frames):
                        feats = model.encoder(frames[s : s + batch_frames].to(device))
                        arrays[flip][offsets[i] + s : offsets[i] + s + len(feats)] = feats.cpu().half().numpy()
        for array in arrays.values():
            array.flush()
        np.save(directory / "offsets.npy", offsets)
        atomic_write(meta_path, lambda tmp: Path(tmp).write_text(json.dumps(meta)))  # written last: the cache is whole
        return FeatureCache(directory)
