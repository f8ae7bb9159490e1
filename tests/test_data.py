"""Data side: shards (official layout), transforms, streaming datasets, env-video generation, converters."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from oc_perception.config import Config
from oc_perception.data import (
    EmptyDatasetError,
    ShardError,
    ShardIndex,
    StepSampler,
    ValidationVideos,
    VideoTransform,
    build_dataloader,
    collate_videos,
    expand_shards,
    iter_videos,
    read_shard,
    sample_chunk_start,
    segmentation_to_labels,
    write_shards,
)
from oc_perception.data import movi
from oc_perception.frames import resize_square

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _videos(n: int, frames: int = 8, size: int = 16, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "video": rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8),
            "segmentations": rng.integers(0, 5, (frames, size, size, 1), dtype=np.uint8),
        }
        for _ in range(n)
    ]


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _unnormalize(video: torch.Tensor) -> torch.Tensor:
    """float [..., 3, H, W] normalised -> uint8-valued float [..., H, W, 3]."""
    x = video * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)
    return (x * 255).round().movedim(-3, -1)


def _cfg(train: str, val: str, size: int = 16, **data) -> Config:
    cfg = Config()
    cfg.model.encoder.input_size = size
    cfg.data.train_shards, cfg.data.val_shards = train, val
    for key, value in data.items():
        setattr(cfg.data, key, value)
    return cfg


# ---------------------------------------------------------------- shards


def test_write_read_roundtrip(tmp_path):
    videos = _videos(5)
    paths = write_shards(videos, tmp_path / "x" / "toy-train-%06d.tar", videos_per_shard=2)
    assert [p.name for p in paths] == [f"toy-train-{i:06d}.tar" for i in range(3)]
    read = list(iter_videos(paths))
    assert [s["__key__"] for s in read] == [f"{i:06d}" for i in range(5)]
    for original, sample in zip(videos, read):
        np.testing.assert_array_equal(sample["video"], original["video"])
        np.testing.assert_array_equal(sample["segmentations"], original["segmentations"])
    assert set(next(read_shard(paths[0], ["video"]))) == {"__key__", "video"}
    with pytest.raises(FileExistsError, match="overwrite"):
        write_shards(videos[:1], tmp_path / "x" / "toy-train-%06d.tar")
    # overwrite removes the stale shards of the larger earlier run
    assert len(write_shards(videos[:1], tmp_path / "x" / "toy-train-%06d.tar", overwrite=True)) == 1
    assert len(expand_shards("x/toy-train-*.tar", tmp_path)) == 1


def test_official_layout_written_by_hand(tmp_path):
    """Members named like the official converters (key ``str(index)``, extra flow member) read unchanged."""
    rng = np.random.default_rng(1)
    video = rng.integers(0, 256, (8, 12, 12, 3), dtype=np.uint8)
    seg = rng.integers(0, 3, (8, 12, 12, 1), dtype=np.uint8)
    flow = rng.normal(size=(8, 12, 12, 2)).astype(np.float32)
    _tar(
        tmp_path / "movi_c-validation-000000.tar",
        {"0.video.npy": _npy(video), "0.segmentations.npy": _npy(seg), "0.forward_flow.npy": _npy(flow),
         "1.video.npy": _npy(video[::-1]), "1.segmentations.npy": _npy(seg[::-1]), "1.forward_flow.npy": _npy(flow)},
    )
    samples = list(read_shard(tmp_path / "movi_c-validation-000000.tar", ["video", "segmentations"]))
    assert [s["__key__"] for s in samples] == ["0", "1"]
    assert set(samples[0]) == {"__key__", "video", "segmentations"}
    np.testing.assert_array_equal(samples[1]["video"], video[::-1])
    cfg = _cfg("unused", "movi_c-validation-*.tar", size=12, num_workers=0)
    batch = next(iter(build_dataloader(cfg, tmp_path, "val")))
    assert batch["key"] == ["0", "1"]
    np.testing.assert_array_equal(batch["segmentation"][0].numpy(), seg[..., 0])
    np.testing.assert_allclose(_unnormalize(batch["video"][0]).numpy(), video, atol=0.51)


def test_expand_shards_and_missing(tmp_path):
    write_shards(_videos(3), tmp_path / "d" / "toy-validation-%06d.tar", videos_per_shard=1)
    assert [p.name[-10:] for p in expand_shards("d/toy-validation-{000000..000002}.tar", tmp_path)] == [
        "000000.tar", "000001.tar", "000002.tar"]
    assert len(expand_shards(str(tmp_path / "d" / "toy-validation-*.tar"), None)) == 3
    with pytest.raises(FileNotFoundError) as err:
        expand_shards("d/other-train-*.tar", tmp_path)
    assert "d/other-train-*.tar" in str(err.value) and str(tmp_path) in str(err.value)
    assert "python -m oc_perception.data.generate" in str(err.value)
    with pytest.raises(FileNotFoundError, match="missing .*000003.tar"):
        expand_shards("d/toy-validation-{000000..000004}.tar", tmp_path)
    with pytest.raises(FileNotFoundError, match="oc_perception.data.movi --variant e"):
        expand_shards("movi_e/movi_e-train-*.tar", tmp_path / "nowhere")


def test_corrupt_shard_names_the_file(tmp_path):
    (path,) = write_shards(_videos(2, frames=4), tmp_path / "toy-train-%06d.tar")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ShardError, match=str(path)):
        list(read_shard(path))
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar file at all" * 100)
    with pytest.raises(ShardError, match="garbage.tar"):
        list(read_shard(garbage))
    with pytest.raises(ShardError, match="garbage.tar"):
        ValidationVideos([garbage], VideoTransform(16, MEAN, STD))
    with pytest.raises(ShardError, match="garbage.tar"):
        ShardIndex([garbage])


def test_empty_dataset_errors(tmp_path):
    _tar(tmp_path / "empty-train-000000.tar", {})
    with pytest.raises(EmptyDatasetError, match="hold no videos"):
        build_dataloader(_cfg("empty-train-*.tar", "x"), tmp_path, "train")
    with pytest.raises(EmptyDatasetError):
        write_shards([], tmp_path / "none-train-%06d.tar")
    assert not list(tmp_path.glob("none-*"))


def test_segmentation_to_labels():
    ids = np.random.default_rng(0).integers(0, 7, (2, 4, 5, 1), dtype=np.uint8)
    labels = segmentation_to_labels(ids)
    assert labels.dtype == np.int64 and labels.shape == (2, 4, 5)
    np.testing.assert_array_equal(labels, ids[..., 0])
    inst = np.zeros((1, 2, 3, 3), dtype=np.uint8)
    inst[0, 0, :, 0] = 1  # instance 0: top row
    inst[0, :, 0, 1] = 26  # instance 1 (stored as its category id): left column, overlaps instance 0
    inst[0, 1, 2, 2] = 1
    np.testing.assert_array_equal(segmentation_to_labels(inst)[0], [[2, 1, 1], [2, 0, 3]])


# ---------------------------------------------------------------- transforms


def test_resize_is_official_bicubic_without_antialias():
    x = torch.rand(2, 3, 20, 30)
    expected = F.interpolate(x, size=(14, 14), mode="bicubic", align_corners=False).clamp(0, 1)
    torch.testing.assert_close(resize_square(x, 14), expected)


def test_chunk_starts_are_multiples_of_chunk_size(tmp_path):
    rng = np.random.default_rng(0)
    assert {sample_chunk_start(10, 4, rng) for _ in range(100)} == {0, 4}  # frames 8, 9 never start a chunk
    assert {sample_chunk_start(24, 4, rng) for _ in range(300)} == {0, 4, 8, 12, 16, 20}
    with pytest.raises(ValueError, match="shorter"):
        sample_chunk_start(3, 4, rng)
    videos = _videos(3, frames=10)
    write_shards(videos, tmp_path / "toy-train-%06d.tar")
    cfg = _cfg("toy-train-*.tar", "x", batch_size=3, num_workers=0, flip=False)
    loader = iter(build_dataloader(cfg, tmp_path, "train"))
    index = ShardIndex(expand_shards("toy-train-*.tar", tmp_path))
    for _ in range(4):
        batch = next(loader)
        assert batch["video"].shape == (3, 4, 3, 16, 16)
        for clip in _unnormalize(batch["video"]).numpy():  # each clip is some video's chunk at 0 or 4
            assert any(np.abs(clip - v["video"][s : s + 4]).max() <= 0.51 for v in videos for s in (0, 4))
    np.testing.assert_array_equal(index.video(1), videos[1]["video"])  # random access reads the right member


@pytest.mark.parametrize("mode", ["resize", "short_side_crop"])
def test_flip_applies_to_video_and_segmentation_alike(mode):
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, (3, 20, 30)).astype(np.int64)
    plain = VideoTransform(16, MEAN, STD, mode, train=True, flip_prob=0.0)(video, labels, np.random.default_rng(5))
    flip = VideoTransform(16, MEAN, STD, mode, train=True, flip_prob=1.0)(video, labels, np.random.default_rng(5))
    assert flip.flipped and not plain.flipped
    torch.testing.assert_close(flip.video, plain.video.flip(-1))
    torch.testing.assert_close(flip.labels, plain.labels.flip(-1))
    val = VideoTransform(16, MEAN, STD, mode, train=False, flip_prob=1.0)(video, labels)
    assert not val.flipped  # validation never flips


def test_short_side_crop_shapes_and_geometry():
    rng = np.random.default_rng(0)
    for h, w in [(30, 50), (50, 30)]:
        video = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
        labels = rng.integers(0, 4, (2, h, w))
        train = VideoTransform(20, MEAN, STD, "short_side_crop", train=True)(video, labels, rng)
        assert train.video.shape == (2, 3, 20, 20) and train.labels.shape == (2, 20, 20)
        val = VideoTransform(20, MEAN, STD, "short_side_crop")(video, labels)
        assert val.video.shape == (2, 3, 20, 20)
        assert val.labels.shape == (2, 30, 30)  # native scale, centre square
        offset = (max(h, w) - 30) // 2
        expected = labels[:, offset : offset + 30] if h > w else labels[:, :, offset : offset + 30]
        np.testing.assert_array_equal(val.labels.numpy(), expected)
        sized = VideoTransform(20, MEAN, STD, "short_side_crop", mask_size=20)(video, labels)
        assert sized.labels.shape == (2, 20, 20)
    # Train crops: short side to 20 first (30x50 -> 20x33), then a random 20x20 window.
    video = np.zeros((1, 30, 50, 3), dtype=np.uint8)
    video[..., 25:, :] = 255  # right half white
    lefts = set()
    for seed in range(30):
        clip = VideoTransform(20, MEAN, STD, "short_side_crop", train=True)(video, None, np.random.default_rng(seed))
        white = (_unnormalize(clip.video)[0, 0, :, 0] > 127).numpy()
        lefts.add(int(np.argmax(white)) if white.any() else 20)
    assert len(lefts) > 3  # the crop window moves


# ---------------------------------------------------------------- datasets


def test_val_dataloader_two_workers_no_duplicates(tmp_path):
    write_shards(_videos(7, frames=4, size=8), tmp_path / "toy-validation-%06d.tar", videos_per_shard=2)  # 4 shards
    write_shards(_videos(5, frames=4, size=8), tmp_path / "one-validation-%06d.tar", videos_per_shard=8)  # 1 shard
    for pattern, n in [("toy-validation-*.tar", 7), ("one-validation-*.tar", 5)]:
        cfg = _cfg("x", pattern, size=8, num_workers=2, val_batch_size=2)
        keys = [k for batch in build_dataloader(cfg, tmp_path, "val") for k in batch["key"]]
        assert sorted(keys) == [f"{i:06d}" for i in range(n)]
    cfg = _cfg("x", "toy-validation-*.tar", size=8, num_workers=2, val_max_videos=3)
    keys = [k for batch in build_dataloader(cfg, tmp_path, "val") for k in batch["key"]]
    assert sorted(keys) == ["000000", "000001", "000002"]


def test_validation_ranks_are_disjoint(tmp_path):
    shards = write_shards(_videos(6, frames=4, size=8), tmp_path / "toy-train-%06d.tar", videos_per_shard=1)
    val = VideoTransform(8, MEAN, STD)
    parts = [[s["key"] for s in ValidationVideos(shards, val, rank=r, world_size=2)] for r in range(2)]
    assert not set(parts[0]) & set(parts[1]) and sorted(parts[0] + parts[1]) == [f"{i:06d}" for i in range(6)]



def test_step_sampler_resumes_and_splits_ranks():
    """The batch of step s depends on (seed, s) only; ranks take disjoint parts; epochs cover every video."""
    full = iter(StepSampler(10, 4, seed=3))
    steps = [next(full) for _ in range(6)]
    resumed = iter(StepSampler(10, 4, seed=3, start_step=4))
    assert [next(resumed) for _ in range(2)] == steps[4:]
    first_epoch = [i for batch in steps for i, epoch in batch if epoch == 0]
    assert sorted(first_epoch) == list(range(10))
    parts = [next(iter(StepSampler(10, 4, seed=3, rank=r, world_size=2))) for r in range(2)]
    assert parts[0] + parts[1] == steps[0]
    assert next(iter(StepSampler(10, 4, seed=4))) != steps[0]
    with pytest.raises(ValueError, match="not divisible"):
        StepSampler(10, 5, seed=0, world_size=2)


def test_collate_rejects_unequal_lengths():
    items = [{"video": torch.zeros(4, 3, 8, 8), "key": "a"}, {"video": torch.zeros(6, 3, 8, 8), "key": "b"}]
    with pytest.raises(ValueError, match="val_batch_size=1"):
        collate_videos(items)


# ---------------------------------------------------------------- generation and converters


def test_generate_env_videos(tmp_path):
    import envs  # noqa: F401  (our example envs: part of this repository, so an import error must fail)
    from oc_perception.data import generate

    generate.main(["--env", "oc/ShapesPush-v0", "--episodes", "2", "--val-episodes", "1", "--steps", "5",
                   "--image-size", "32", "--out", str(tmp_path), "--seed", "3"])
    train = list(iter_videos(expand_shards("shapes_push-train-*.tar", tmp_path)))
    val = list(iter_videos(expand_shards("shapes_push-validation-*.tar", tmp_path)))
    assert len(train) == 2 and len(val) == 1
    for sample in train + val:
        assert sample["video"].shape == (5, 32, 32, 3) and sample["video"].dtype == np.uint8
        assert sample["segmentations"].shape == (5, 32, 32, 1) and sample["segmentations"].dtype == np.uint8
        assert sample["segmentations"].max() > 0
    assert not np.array_equal(train[0]["video"], train[1]["video"])


def test_shard_names_are_readable():
    from oc_perception.data.generate import env_name

    assert env_name("minigrid:MiniGrid-Dynamic-Obstacles-8x8-v0") == "mini_grid_dynamic_obstacles_8x8"
    assert env_name("panda_gym:PandaPickAndPlace-v3") == "panda_pick_and_place"
    assert env_name("oc/ShapesPush-v0") == "shapes_push" and env_name("ALE/Pong-v5") == "pong"
    assert env_name("HTMLParser-v1") == "html_parser"


def test_generate_resizes_any_envs_frames(tmp_path, capsys):
    """CartPole renders 400 x 600 and takes no size argument: --frame-size stores what the model would see."""
    import gymnasium as gym

    from oc_perception.data import generate
    from oc_perception.frames import resize_frames_as_model_input

    generate.main(["--env", "CartPole-v1", "--episodes", "1", "--val-episodes", "0", "--steps", "3",
                   "--frame-size", "32", "--out", str(tmp_path), "--seed", "5"])
    assert "the env gives 400x600; stored at 32x32" in capsys.readouterr().out
    video = next(iter_videos(expand_shards("cart_pole-train-*.tar", tmp_path)))["video"]
    assert video.shape == (3, 32, 32, 3)
    env = gym.make("CartPole-v1", render_mode="rgb_array")
    env.reset(seed=int(np.random.default_rng([5, 0]).integers(2**31)))  # the first episode's seed
    np.testing.assert_array_equal(video[0], resize_frames_as_model_input(env.render()[None], 32)[0])
    # Segmentations follow the frames (nearest: ids stay ids).
    generate.main(["--env", "oc/ShapesPush-v0", "--episodes", "1", "--val-episodes", "0", "--steps", "2",
                   "--frame-size", "32", "--out", str(tmp_path / "shapes")])
    sample = next(iter_videos(expand_shards("shapes_push-train-*.tar", tmp_path / "shapes")))
    assert sample["video"].shape == (2, 32, 32, 3) and sample["segmentations"].shape == (2, 32, 32, 1)
    assert sample["segmentations"].max() > 0


def test_slot_count_advice_counts_regions_of_even_colour(tmp_path, capsys):
    from oc_perception.data import generate
    from oc_perception.data.scene import advise_num_slots, count_things

    frame = np.repeat(np.linspace(40, 80, 64).astype(np.uint8)[None, :, None], 64, axis=0).repeat(3, -1)
    for i, color in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]):
        frame[4 + 11 * i : 9 + 11 * i, 10:15] = color  # five objects on a shaded floor (one region)
    frame[60, 60] = 255  # a speck: no object
    assert count_things(frame) == 5
    crowded = frame.copy()
    crowded[40:50, 40:50] = 200
    advice = advise_num_slots([np.stack([frame] * 8 + [crowded] * 2)])
    assert (advice.num_slots, advice.regions, advice.frames) == (8, 6, 10)  # 90th percentile: 6, + floor + spare
    assert advice.reason.startswith("num_slots 8: ")
    generate.main(["--env", "oc/ShapesPush-v0", "--episodes", "1", "--val-episodes", "1", "--steps", "2",
                   "--out", str(tmp_path)])
    assert "(model.num_slots)" in capsys.readouterr().out.splitlines()[-1]


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE: column-major run lengths, starting with a run of zeros."""
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    return {"size": list(mask.shape), "counts": ([0] + runs) if flat[0] else runs}


@pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")  # pycocotools vs numpy 2, harmless
def test_ytvis_converter_roundtrips_masks(tmp_path):
    mask_utils = pytest.importorskip("pycocotools.mask")
    from PIL import Image

    from oc_perception.data import ytvis

    rng = np.random.default_rng(0)
    h, w, frames = 24, 40, 3
    raw = tmp_path / "raw"
    videos, annotations, truth = [], [], {}
    for vid in (11, 12, 13):
        names = [f"v{vid}/{f:05d}.jpg" for f in range(frames)]
        for name in names:
            (raw / "train" / "JPEGImages" / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(raw / "train" / "JPEGImages" / name)
        videos.append({"id": vid, "length": frames, "height": h, "width": w, "file_names": names})
        masks = rng.random((2, frames, h, w)) < 0.3
        masks[0, 1] = False  # instance 0 absent (null) in frame 1
        truth[vid] = masks
        for i, category in enumerate((5, 9)):
            segs = []
            for f in range(frames):
                if not masks[i, f].any():
                    segs.append(None)
                elif i == 0:  # compressed RLE, counts as a JSON string
                    rle = mask_utils.encode(np.asfortranarray(masks[i, f].astype(np.uint8)))
                    segs.append({"size": rle["size"], "counts": rle["counts"].decode()})
                else:
                    segs.append(_uncompressed_rle(masks[i, f].astype(np.uint8)))
            annotations.append({"id": len(annotations) + 1, "video_id": vid, "category_id": category,
                                "iscrowd": 0, "segmentations": segs})
    annotations.append({"id": 99, "video_id": 13, "category_id": 3, "iscrowd": 1, "segmentations": [None] * frames})
    (raw / "train" / "instances.json").write_text(json.dumps({"videos": videos, "annotations": annotations}))

    ytvis.main(["--raw", str(raw), "--out", str(tmp_path / "out"), "--num-val", "2", "--short-side", "0"])
    (train,) = iter_videos(expand_shards("ytvis-train-*.tar", tmp_path / "out"))
    assert train["__key__"] == "11" and set(train) == {"__key__", "video"} and train["video"].shape == (frames, h, w, 3)
    val = list(iter_videos(expand_shards("ytvis-validation-*.tar", tmp_path / "out")))
    assert [s["__key__"] for s in val] == ["12", "13"]  # the last videos of instances.json, crowd dropped
    for sample in val:
        seg = sample["segmentations"]
        assert seg.shape == (frames, h, w, 2) and seg.dtype == np.uint8
        np.testing.assert_array_equal(seg != 0, np.moveaxis(truth[int(sample["__key__"])], 0, -1))
        assert set(np.unique(seg[..., 1])) <= {0, 9}  # stored as the category id, like the official converter

    ytvis.convert(raw, tmp_path / "small", "validation", num_val=2, short_side=12)
    (small, _) = iter_videos(expand_shards("ytvis-validation-*.tar", tmp_path / "small"))
    assert small["video"].shape == (frames, 12, 20, 3) and small["segmentations"].shape == (frames, 12, 20, 2)

    with pytest.raises(FileNotFoundError, match="nothing/train/instances.json"):
        ytvis.convert(tmp_path / "nothing", tmp_path / "o", "train")


def test_movi_conversion_and_missing_extra(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    examples = [
        {"video": rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8),
         "segmentations": rng.integers(0, 11, (6, 8, 8, 1), dtype=np.uint8),
         "forward_flow": np.zeros((6, 8, 8, 2), dtype=np.uint16), "metadata": {"num_instances": 3}}
        for _ in range(3)
    ]
    train = list(iter_videos(movi.convert(examples, tmp_path, "c", "train", videos_per_shard=2)))
    val = list(iter_videos(movi.convert(examples, tmp_path, "c", "validation")))
    assert [s["__key__"] for s in train] == ["0", "1", "2"] and set(train[0]) == {"__key__", "video"}
    assert set(val[0]) == {"__key__", "video", "segmentations"}
    np.testing.assert_array_equal(val[2]["segmentations"], examples[2]["segmentations"])
    assert len(expand_shards("movi_c-train-{000000..000001}.tar", tmp_path)) == 2

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # as if the extra were not installed
    with pytest.raises(SystemExit) as exit_info:
        movi.main(["--variant", "c", "--out", str(tmp_path / "m")])
    assert "pip install 'oc-perception[movi]'" in str(exit_info.value)
