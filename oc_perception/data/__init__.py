"""Video data: shards in the official webdataset layout, clip transforms, data loaders, and the tools that
make shards (env videos, MOVi and YT-VIS converters: ``python -m oc_perception.data.<generate|movi|ytvis>``)."""

from oc_perception.data.clips import FeatureCache, ShardIndex, StepSampler, TrainClips
from oc_perception.data.datasets import ValidationVideos, build_dataloader, collate_videos, video_transform
from oc_perception.data.shards import (
    EmptyDatasetError,
    ShardError,
    expand_shards,
    iter_videos,
    read_shard,
    segmentation_to_labels,
    write_shards,
)
from oc_perception.data.transforms import Clip, VideoTransform, sample_chunk_start

__all__ = [
    "Clip",
    "EmptyDatasetError",
    "ShardError",
    "FeatureCache",
    "ShardIndex",
    "StepSampler",
    "TrainClips",
    "ValidationVideos",
    "VideoTransform",
    "build_dataloader",
    "collate_videos",
    "expand_shards",
    "iter_videos",
    "read_shard",
    "sample_chunk_start",
    "segmentation_to_labels",
    "video_transform",
    "write_shards",
]
