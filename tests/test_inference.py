"""Inference on a user's video: outputs, streaming equals a whole-video forward, checkpoints, errors, memory."""

from __future__ import annotations

import sys
import wave

import av
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import REPO, tiny_overrides
from oc_perception import SlotContrast, io
from oc_perception.checkpoint import CheckpointError, save_checkpoint, save_training_state
from oc_perception.config import load_config
from oc_perception.checkpoint import load_model
from oc_perception.inference import infer_video, main, run_inference
from oc_perception.io import VideoError, VideoReader

sys.path.insert(0, str(REPO / "benchmarks"))
from inference_memory import measure, moving_squares  # noqa: E402

T = 12
RANDOM_BYTES = np.random.default_rng(0).bytes(4096)  # fixed: some random bytes could probe as an audio format


def count_frames(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def moov_end(data: bytes) -> int:
    """Byte offset just after the mp4 index (``moov`` box)."""
    offset = 0
    while data[offset + 4 : offset + 8] != b"moov":
        offset += int.from_bytes(data[offset : offset + 4], "big")
    return offset + int.from_bytes(data[offset : offset + 4], "big")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return io.write_video(tmp_path_factory.mktemp("video") / "squares.mp4", moving_squares(T, 48, 80), fps=8, scale=1)


def save_tiny(folder, backbone: str):
    torch.manual_seed(0)
    model = SlotContrast(load_config("configs/pretrain/movi_c.yml", tiny_overrides(backbone)).model)
    return save_checkpoint(model, folder / f"{backbone}.safetensors")


@pytest.fixture(scope="module", params=["cnn", "vit"])
def checkpoint(request, tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("ckpt"), request.param)


@pytest.fixture(scope="module")
def cnn_checkpoint(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("cnn"), "cnn")


def test_outputs(checkpoint, video, tmp_path):
    summary = infer_video(checkpoint, video, tmp_path / "out.mp4", tmp_path / "slots.npz", chunk=5, progress=False)
    assert summary["frames"] == T and summary["complete"] and summary["device"] in ("cpu", "cuda")
    assert count_frames(tmp_path / "out.mp4") == T
    cfg = load_model(checkpoint).cfg
    grid = cfg.encoder.input_size // cfg.encoder.patch_size
    with np.load(tmp_path / "slots.npz") as arrays:
        assert arrays["slots"].shape == (T, cfg.num_slots, cfg.slot_dim) and arrays["slots"].dtype == np.float32
        assert arrays["masks"].shape == (T, cfg.num_slots, grid, grid) and arrays["masks"].dtype == np.float16
        np.testing.assert_allclose(arrays["masks"].astype(np.float32).sum(axis=1), 1.0, atol=1e-2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "slots.npz"]


def test_chunks_equal_one_forward(checkpoint, video):
    model = load_model(checkpoint)
    with VideoReader(video) as reader:
        frames = list(reader)
    chunked = list(run_inference(model, frames, chunk=3))
    whole = list(run_inference(model, frames, chunk=100))
    assert [c.start for c in chunked] == [0, 3, 6, 9] and len(whole) == 1
    torch.testing.assert_close(torch.cat([c.slots for c in chunked]), whole[0].slots, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.cat([c.masks for c in chunked]), whole[0].masks, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        out, _ = model(model.preprocess(np.stack(frames))[None])
    torch.testing.assert_close(whole[0].slots, out["slots"][0], atol=1e-5, rtol=1e-4)


def test_bad_videos(cnn_checkpoint, video, tmp_path):
    data = video.read_bytes()
    cases = {
        "missing.mp4": (None, FileNotFoundError, "video not found"),
        "empty.mp4": (b"", VideoError, "not a video FFmpeg can read"),
        "random.mp4": (RANDOM_BYTES, VideoError, "not a video FFmpeg can read"),
        "index_only.mp4": (data[: moov_end(data)], VideoError, "no frame could be decoded|holds no frame"),
        "index_missing.mp4": (data[moov_end(data) :], VideoError, "not a video FFmpeg can read"),
    }
    for name, (content, error, message) in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(error, match=message):
            infer_video(cnn_checkpoint, tmp_path / name, tmp_path / "out.mp4", tmp_path / "out.npz", progress=False)
    with wave.open(str(tmp_path / "sound.wav"), "wb") as sound:  # audio FFmpeg reads, but no video stream
        sound.setparams((1, 2, 8000, 800, "NONE", "not compressed"))
        sound.writeframes(bytes(1600))
    with pytest.raises(VideoError, match="has no video stream"):
        infer_video(cnn_checkpoint, tmp_path / "sound.wav", tmp_path / "out.mp4", progress=False)
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "out.npz").exists()
    assert not list(tmp_path.glob(".*"))  # no partial outputs either


def test_truncated_video_keeps_the_decoded_prefix(cnn_checkpoint, tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (T, 48, 80, 3), dtype=np.uint8)  # frames of similar size
    data = io.write_video(tmp_path / "noise.mp4", noise, scale=1).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: moov_end(data) + (len(data) - moov_end(data)) * 3 // 4])  # index first: a prefix decodes
    with pytest.warns(UserWarning, match="truncated or corrupt, keeping the frames decoded so far"):
        summary = infer_video(cnn_checkpoint, cut, tmp_path / "out.mp4", progress=False)
    assert 0 < summary["frames"] < T and not summary["complete"]
    assert count_frames(tmp_path / "out.mp4") == summary["frames"]


def test_unknown_checkpoints(video, tmp_path):
    (tmp_path / "random.bin").write_bytes(RANDOM_BYTES)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "linear.pt")
    save_file({"weight": torch.zeros(2)}, tmp_path / "foreign.safetensors")
    save_training_state(tmp_path / "step_00000010.pt", {"model": {}, "optimizer": {}, "step": 10, "config": "{}"})
    cases = {
        "random.bin": "unknown checkpoint type",
        "list.pt": "expected an official SlotContrast checkpoint",
        "linear.pt": "not an official SlotContrast checkpoint: no key 'initializer.slots'",
        "foreign.safetensors": "not an oc-perception checkpoint",
        "step_00000010.pt": "step_00000010.pt: the stored model config is unreadable",
    }
    for name, message in cases.items():
        with pytest.raises(CheckpointError, match=message):
            infer_video(tmp_path / name, video, tmp_path / "out.mp4", progress=False)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_model(tmp_path / "missing.safetensors")


def test_cli(cnn_checkpoint, video, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["--checkpoint", str(cnn_checkpoint), "--video", str(video), "--max-frames", "4", "--fps", "5"]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("4 frames in ")
    # Default output <video name>_slots.mp4 here: the 80 x 48 frames shown 256 high (427 wide), their overlay
    # and 2 x 2 slot panels of 128 x 213, with 2-pixel gaps.
    with av.open("squares_slots.mp4") as container:
        stream = container.streams.video[0]
        assert (stream.frames, stream.average_rate, stream.height, stream.width) == (4, 5, 256, 427 * 2 + 426 + 4)
    assert main(argv + ["--center-crop", "--out", "square.mp4"]) == 0
    capsys.readouterr()
    with av.open("square.mp4") as container:  # 48 x 48 crops: three 256 x 256 panels
        assert container.streams.video[0].width == 3 * 256 + 4
    (tmp_path / "random.mp4").write_bytes(RANDOM_BYTES)
    failures = [
        ["--checkpoint", str(cnn_checkpoint), "--video", "missing.mp4"],
        ["--checkpoint", str(cnn_checkpoint), "--video", "random.mp4"],
        ["--checkpoint", "random.mp4", "--video", str(video)],
        ["--checkpoint", str(cnn_checkpoint), "--video", str(video), "--out", "slots.avi"],
    ]
    for argv in failures:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage and "error: argument --chunk: must be >= 1"
        main(["--checkpoint", str(cnn_checkpoint), "--video", str(video), "--chunk", "0"])
    assert exit_info.value.code == 2 and "--chunk: must be >= 1" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- official .ckpt


@pytest.fixture(scope="module")
def official_ckpt(fixtures_dir, tmp_path_factory):
    """A Lightning-style .ckpt: the MOVi-C reference weights plus a random ViT-S/14 backbone."""
    state_dict = load_file(fixtures_dir / "nonencoder_state_dict.safetensors")
    torch.manual_seed(0)
    cfg = load_config("configs/pretrain/movi_c.yml", ["model.encoder.pretrained=false"])
    backbone = SlotContrast(cfg.model).encoder.backbone.state_dict()
    state_dict |= {f"encoder.module.backbone.model.{k}": v for k, v in backbone.items()}
    path = tmp_path_factory.mktemp("official") / "movi_c.ckpt"
    torch.save({"state_dict": state_dict, "global_step": 100}, path)
    return path


def test_official_checkpoint_runs(official_ckpt, video, tmp_path, capsys):
    argv = ["--checkpoint", str(official_ckpt), "--video", str(video), "--config", "movi_c", "--max-frames", "2",
            "--slots-out", str(tmp_path / "slots.npz")]
    assert main(argv) == 0, capsys.readouterr().err
    with np.load(tmp_path / "slots.npz") as arrays:
        assert arrays["slots"].shape == (2, 11, 64) and arrays["masks"].shape == (2, 11, 24, 24)


def test_official_config_is_detected(official_ckpt, fixtures_dir):
    model = load_model(official_ckpt)  # no config: movi_c from the weights' shapes
    reference = load_file(fixtures_dir / "nonencoder_state_dict.safetensors")
    torch.testing.assert_close(model.initial_slots.data, reference["initializer.slots"])
    assert model.input_size == 336


def test_official_checkpoint_without_backbone_needs_the_pretrained_one(fixtures_dir, tmp_path, monkeypatch):
    def offline(name, pretrained=False, **kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr("timm.create_model", offline)
    state_dict = load_file(fixtures_dir / "nonencoder_state_dict.safetensors")
    torch.save({"state_dict": state_dict}, tmp_path / "trainable_only.ckpt")
    with pytest.raises(CheckpointError, match="holds no backbone weights, so the pretrained vit_small_patch14_dinov2 "
                                              "is needed and could not be loaded"):
        load_model(tmp_path / "trainable_only.ckpt")


# ---------------------------------------------------------------------------------------------- memory


@pytest.mark.slow
def test_memory_does_not_grow_with_video_length():
    results = measure([30, 300])
    assert results[300]["frames"] == 300
    assert results[300]["peak_mb"] <= 1.2 * results[30]["peak_mb"], results
