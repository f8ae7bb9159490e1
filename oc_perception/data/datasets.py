"""Data loaders: endless, resumable training clips and one pass over the validation videos.

Training goes through :mod:`oc_perception.data.clips` (random access, the batch of a step is a function of
the seed and the step, so a resumed run sees exactly the batches of the uninterrupted one). Validation
streams the shards once, split across DDP ranks and DataLoader workers: with at least as many shards as
parts each part reads whole shards (``shards[part::parts]``); otherwise (few shards, or a ``max_videos``
cap) every part reads all shards and keeps every ``parts``-th video. The parts are disjoint and together
cover every video once.
"""

from __future__ import annotations

import dataclasses
import itertools
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, default_collate, get_worker_info

from oc_perception.config import Config
from oc_perception.data.clips import FeatureCache, ShardIndex, StepSampler, TrainClips
from oc_perception.data.shards import SEGMENTATIONS, VIDEO, expand_shards, iter_videos, segmentation_to_labels
from oc_perception.data.transforms import VideoTransform

SPLITS = {"train": "train", "val": "val", "validation": "val"}


class ValidationVideos(IterableDataset):
    """Every validation video once: ``{"video": float32 [T, 3, S, S], "segmentation": int64 [T, h, w],
    "key": str}`` with 0 = background/unlabelled (see :func:`~oc_perception.data.shards.segmentation_to_labels`);
    videos stored without segmentations (e.g. recorded from an env that gives none) come without the key.
    """

    def __init__(self, shards: Sequence[str | Path], transform: VideoTransform, *, max_videos: int | None = None,
                 rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside [0, world_size={world_size})")
        self.shards = [Path(p) for p in shards]
        ShardIndex(self.shards)  # here, in this process: an empty or unreadable shard or a bad video is named now
        self.transform, self.max_videos, self.rank, self.world_size = transform, max_videos, rank, world_size

    def _videos(self) -> Iterator[dict]:
        """This process's videos (disjoint from the other ranks' and workers')."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        part, parts = self.rank * workers + worker, self.world_size * workers
        keys, optional = [VIDEO], [SEGMENTATIONS]
        if self.max_videos is None and len(self.shards) >= parts:
            yield from iter_videos(self.shards[part::parts], keys, optional)
            return
        videos = iter_videos(self.shards, keys, optional)
        if self.max_videos is not None:
            videos = itertools.islice(videos, self.max_videos)
        yield from itertools.islice(videos, part, None, parts)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for sample in self._videos():
            if SEGMENTATIONS not in sample:
                yield {"video": self.transform(sample[VIDEO]).video, "key": sample["__key__"]}
                continue
            out = self.transform(sample[VIDEO], segmentation_to_labels(sample[SEGMENTATIONS]))
            yield {"video": out.video, "segmentation": out.labels, "key": sample["__key__"]}


def collate_videos(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack items into a batch; a clear error when videos in one batch differ in length or size."""
    try:
        return default_collate(items)
    except RuntimeError as e:
        names = [k for k in ("video", "segmentation") if k in items[0]]
        shapes = {k: sorted({tuple(item[k].shape) for item in items}) for k in names}
        raise ValueError(
            f"cannot batch videos of different shapes {shapes}: set data.val_batch_size=1 (as the official "
            "YT-VIS config) or data.segmentation_size"
        ) from e


def decoder_mask_side(cfg: Config) -> int:
    """Side of the decoder masks of ``cfg.model`` (as ``SlotContrast.mask_side``), without building it."""
    dec, enc = cfg.model.decoder, cfg.model.encoder
    if dec.kind == "broadcast":
        return dec.broadcast_size * 2 ** len(dec.conv_channels)
    return enc.input_size // enc.patch_size


def video_transform(cfg: Config, train: bool) -> VideoTransform:
    """The training (random crop, flip) or validation transform of ``cfg``."""
    data = cfg.data
    return VideoTransform(size=cfg.model.encoder.input_size, mean=tuple(cfg.model.mean), std=tuple(cfg.model.std),
                          mode=data.transform, train=train, flip_prob=0.5 if train and data.flip else 0.0,
                          mask_size=None if train else data.segmentation_size)


def _leave_stop_signals_to_the_main_process(worker_id: int) -> None:
    """Ctrl-C in a terminal and SIGTERM from a scheduler (Slurm's ``scancel``, ``kill -- -PGID``) reach the whole
    process group. A worker killed by them would make the main process fail with a DataLoader error before it
    saved; ignoring them here lets the main process save the last whole step and then end its workers itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def build_dataloader(cfg: Config, data_dir: str | Path | None, split: str, rank: int = 0, world_size: int = 1,
                     start_step: int = 0, cache: FeatureCache | None = None) -> DataLoader:
    """DataLoader for ``split`` ("train" or "val"/"validation") from ``cfg.data`` and the model's input size,
    mean and std.

    Train: endless batches of ``{"video": [B, chunk, 3, S, S]}`` (or ``{"features": [B, chunk, P, F]}`` from a
    feature ``cache``), this rank's ``cfg.data.batch_size / world_size`` clips of each global batch, from
    ``start_step`` on; seeded by ``cfg.trainer.seed``. Val: one pass, ``cfg.data.val_batch_size`` videos per
    batch (videos batched together must share T and segmentation size, see :func:`collate_videos`).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
    data = cfg.data
    pin = torch.cuda.is_available()
    if SPLITS[split] == "train":
        index = ShardIndex(expand_shards(data.train_shards, data_dir))
        supervised = cfg.model.loss.segmentation_weight > 0
        transform = video_transform(cfg, True)
        if supervised:  # labels at the decoder mask resolution, for the supervised mask loss
            transform = dataclasses.replace(transform, mask_size=decoder_mask_side(cfg))
        dataset = TrainClips(index, transform, data.chunk_size, cfg.trainer.seed, cache, segmentation=supervised)
        sampler = StepSampler(len(dataset), data.batch_size, cfg.trainer.seed, start_step, rank, world_size)
        return DataLoader(dataset, batch_sampler=sampler, num_workers=data.num_workers, pin_memory=pin,
                          worker_init_fn=_leave_stop_signals_to_the_main_process)
    dataset = ValidationVideos(expand_shards(data.val_shards, data_dir), video_transform(cfg, False),
                               max_videos=data.val_max_videos, rank=rank, world_size=world_size)
    return DataLoader(dataset, batch_size=data.val_batch_size, num_workers=data.num_workers,
                      collate_fn=collate_videos, pin_memory=pin, worker_init_fn=_leave_stop_signals_to_the_main_process)
