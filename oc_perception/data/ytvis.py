"""Convert raw YouTube-VIS 2021 to shards in the official layout.

    python -m oc_perception.data.ytvis --raw data/ytvis2021_raw --out data/ytvis2021

reads ``<raw>/train/instances.json`` and ``<raw>/train/JPEGImages/<video>/<frame>.jpg`` (the official
training set; only it has annotations) and writes ``<out>/ytvis-{train,validation}-%06d.tar`` like the
official ``save_ytvis2021.py`` with ``--resize``:

- the last ``--num-val`` (300) videos, in the order of ``instances.json``, are the validation split, the
  rest the training split;
- frames and masks are resized so the short side is ``--short-side`` (320; 0 keeps the original size), long
  side ``floor(long / short * 320)``, both with ``nearest-exact``;
- keys are ``str(video_id)``; train shards hold only ``video.npy`` (uint8 [F, H, W, 3]), 32 videos each;
  validation shards (10 videos each) add ``segmentations.npy``: uint8 [F, H, W, N] with instance ``i``'s
  mask stored as its category id (0 = off), one channel per non-crowd annotation in file order, or
  [F, H, W, 1] zeros for a video without annotations. Frames where an instance is absent (``null``) are 0.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image

try:
    from pycocotools import mask as mask_utils
except ImportError as e:
    raise ImportError("YT-VIS conversion needs pycocotools: pip install 'oc-perception[ytvis]'") from e

from oc_perception.data.shards import SEGMENTATIONS, VIDEO, write_shards
from oc_perception.frames import short_side_size

SPLITS = ("train", "validation")
VIDEOS_PER_SHARD = {"train": 32, "validation": 10}  # the official README's --maxcount
DOWNLOAD_HINT = (
    "download the YouTube-VIS 2021 training set (train.zip, https://youtube-vos.org/dataset/vis/) and unzip it "
    "so that {raw}/train/instances.json and {raw}/train/JPEGImages/ exist"
)


def _train_root(raw: Path) -> Path:
    """``<raw>/train`` (or ``raw`` itself when it is already that folder), checked for its two parts."""
    root = raw if (raw / "instances.json").is_file() else raw / "train"
    for needed in (root / "instances.json", root / "JPEGImages"):
        if not needed.exists():
            raise FileNotFoundError(f"{needed} not found: " + DOWNLOAD_HINT.format(raw=raw))
    return root


def load_annotations(instances_json: str | Path) -> tuple[list[dict], dict[int, list[dict]]]:
    """Videos in file order, and each video's non-crowd annotations in file order."""
    data = json.loads(Path(instances_json).read_text())
    annotations: dict[int, list[dict]] = defaultdict(list)
    for ann in data.get("annotations") or []:
        if not ann.get("iscrowd", 0):
            annotations[ann["video_id"]].append(ann)
    return data["videos"], annotations


def split_videos(videos: Sequence[dict], split: str, num_val: int = 300) -> list[dict]:
    """The official split: the last ``num_val`` videos are validation, the others train."""
    if len(videos) <= num_val:
        raise ValueError(
            f"instances.json has {len(videos)} videos, not more than the {num_val} held out for validation"
        )
    return list(videos[-num_val:] if split == "validation" else videos[:-num_val])


def decode_mask(segmentation: dict | None, height: int, width: int) -> np.ndarray:
    """One frame's RLE (``counts`` compressed string or uncompressed list) -> uint8 [H, W]; ``None`` -> zeros."""
    if segmentation is None:
        return np.zeros((height, width), dtype=np.uint8)
    rle = segmentation
    if isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    return mask_utils.decode(rle)


def _read_frames(jpeg_dir: Path, file_names: Sequence[str]) -> np.ndarray:
    frames = []
    for name in file_names:
        path = jpeg_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"frame {path} not found; is the YT-VIS download complete?")
        with Image.open(path) as image:
            frames.append(np.asarray(image.convert("RGB")))
    return np.stack(frames)


def _resize_nearest(array: np.ndarray, short_side: int) -> np.ndarray:
    """uint8 [F, H, W, C] -> [F, H', W', C] with the short side ``short_side`` (``nearest-exact``)."""
    size = short_side_size(array.shape[1], array.shape[2], short_side)
    x = rearrange(torch.from_numpy(np.ascontiguousarray(array)), "f h w c -> f c h w")
    return rearrange(F.interpolate(x, size=size, mode="nearest-exact"), "f c h w -> f h w c").numpy()


def video_sample(
    video: dict[str, Any], annotations: Sequence[dict], jpeg_dir: Path, short_side: int, with_segmentations: bool
) -> dict[str, Any]:
    """One YT-VIS video -> a shard sample ``{"__key__", "video"[, "segmentations"]}`` (see the module doc)."""
    length, height, width = int(video["length"]), int(video["height"]), int(video["width"])
    frames = _read_frames(jpeg_dir, video["file_names"])
    if frames.shape != (length, height, width, 3):
        expected = (length, height, width, 3)
        raise ValueError(f"video {video['id']}: frames are {frames.shape}, instances.json says {expected}")
    sample: dict[str, Any] = {"__key__": str(video["id"]), VIDEO: frames}
    if with_segmentations:
        masks = [
            [decode_mask(ann["segmentations"][f], height, width) * np.uint8(ann["category_id"]) for ann in annotations]
            for f in range(length)
        ]
        seg = (
            rearrange(np.asarray(masks, dtype=np.uint8), "f i h w -> f h w i")
            if annotations
            else np.zeros((length, height, width, 1), dtype=np.uint8)
        )
        sample[SEGMENTATIONS] = seg
    if short_side:
        sample = {k: v if k == "__key__" else _resize_nearest(v, short_side) for k, v in sample.items()}
    return sample


def convert(
    raw: str | Path,
    out_dir: str | Path,
    split: str,
    *,
    num_val: int = 300,
    short_side: int = 320,
    videos_per_shard: int | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write one split of raw YT-VIS 2021 as shards (see the module doc); returns the shard paths."""
    root = _train_root(Path(raw))
    videos, annotations = load_annotations(root / "instances.json")
    chosen = split_videos(videos, split, num_val)
    samples: Iterator[dict] = (
        video_sample(v, annotations[v["id"]], root / "JPEGImages", short_side, with_segmentations=split == "validation")
        for v in chosen
    )
    pattern = Path(out_dir) / f"ytvis-{split}-%06d.tar"
    per_shard = videos_per_shard or VIDEOS_PER_SHARD[split]
    return write_shards(samples, pattern, per_shard, total=len(chosen), overwrite=overwrite)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m oc_perception.data.ytvis", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--raw", type=Path, required=True, help="folder holding train/instances.json and train/JPEGImages"
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--split", nargs="+", choices=SPLITS, default=list(SPLITS))
    parser.add_argument("--num-val", type=int, default=300, help="last videos held out as validation")
    parser.add_argument("--short-side", type=int, default=320, help="short side after resizing; 0 keeps the original")
    parser.add_argument("--videos-per-shard", type=int, default=None, help="default: 32 train, 10 validation")
    parser.add_argument("--overwrite", action="store_true", help="replace existing shards of the same name")
    args = parser.parse_args(argv)
    for split in args.split:
        paths = convert(
            args.raw,
            args.out,
            split,
            num_val=args.num_val,
            short_side=args.short_side,
            videos_per_shard=args.videos_per_shard,
            overwrite=args.overwrite,
        )
        print(f"{split}: {len(paths)} shard(s) in {args.out}")


if __name__ == "__main__":
    main()
