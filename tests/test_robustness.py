"""Bad input and faults: each case ends in one line naming the problem and the fix, and nothing is lost.

One test per class of failure; every case here failed (silently, or with a traceback) before it was fixed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import av
import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors import safe_open

from conftest import REPO, tiny_overrides
from oc_perception import SlotContrast, io
from oc_perception.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from oc_perception.config import ConfigError, load_config
from oc_perception.data.shards import write_shards
from oc_perception.inference import display_size, infer_video
from oc_perception.io import VideoReader
from oc_perception.model.encoder import BackboneWeightsError, ViTEncoder
from oc_perception.rundir import LOCK_NAME, LogDirBusy, claim_log_dir
from oc_perception.train import main as train_main
from test_train import moving_squares, overrides


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_shards(moving_squares(6, seed=0), str(root / "sq" / "sq-train-%06d.tar"), videos_per_shard=3)
    write_shards(moving_squares(2, seed=1), str(root / "sq" / "sq-validation-%06d.tar"), videos_per_shard=2)
    return root


def tiny_model(extra: list[str] | None = None) -> SlotContrast:
    torch.manual_seed(0)
    return SlotContrast(load_config("configs/pretrain/movi_c.yml", tiny_overrides("cnn") + (extra or [])).model).eval()


def one_line_error(capsys, fn, *args) -> str:
    with pytest.raises(SystemExit) as exit_info:
        fn(*args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    assert not any("Traceback" in line for line in err), err
    return err[-1]


def train_argv(data_dir, log_dir, steps=2, extra=()):
    return ["configs/pretrain/shapes_stage1.yml", *overrides("cnn", steps), "trainer.val_every=100",
            *extra, "--data-dir", str(data_dir), "--log-dir", str(log_dir)]


def test_evaluate_names_a_bad_inference_setting(data_dir, tmp_path, capsys):
    from oc_perception.evaluate import main as evaluate_main

    model = save_checkpoint(tiny_model(), tmp_path / "model.safetensors")
    argv = ["configs/pretrain/shapes_stage1.yml", "data.val_shards=sq/sq-validation-*.tar", "--checkpoint", str(model),
            "--data-dir", str(data_dir), "--device", "cpu"]
    assert ("--dormant-below: model.slot_attention.dormant_below=-1.0: must be a non-negative number"
            in one_line_error(capsys, evaluate_main, [*argv, "--dormant-below", "-1"]))
    assert "--first-frame-passes" in one_line_error(capsys, evaluate_main, [*argv, "--first-frame-passes", "0"])


# ------------------------------------------------------------------------------------------------- run dirs
def test_a_finished_run_is_never_overwritten(data_dir, tmp_path, capsys):
    log = tmp_path / "run"
    train_main(train_argv(data_dir, log))
    before = (log / "model.safetensors").read_bytes()
    line = one_line_error(capsys, train_main, train_argv(data_dir, log))
    assert "already holds a run" in line and "--continue" in line and "--overwrite" in line
    assert (log / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in (log / "checkpoints").glob("step_*.pt")) == ["step_00000002.pt"]
    # --overwrite replaces it: the new run's checkpoints and TensorBoard curves are its own, none of the old ones
    # survive.
    train_main(train_argv(data_dir, log, steps=1, extra=["--overwrite"]))
    assert sorted(p.name for p in (log / "checkpoints").glob("step_*.pt")) == ["step_00000001.pt"]
    assert len(list(log.glob("events.out.tfevents.*"))) == 1


def test_one_run_per_log_dir_and_stale_locks_are_taken_over(data_dir, tmp_path, capsys):
    log = tmp_path / "busy"
    with claim_log_dir(log, resuming=False):
        with pytest.raises(LogDirBusy, match=f"in use by a running training process \\(pid {os.getpid()}\\)"):
            with claim_log_dir(log, resuming=True):
                pass
        line = one_line_error(capsys, train_main, train_argv(data_dir, log))
        assert "in use by a running training process" in line
    # A lock file left by a process that died (no flock held) is taken over, with a warning.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (log / LOCK_NAME).write_text(dead.stdout.strip())
    (log / "checkpoints").mkdir(exist_ok=True)
    partial = log / "checkpoints" / ".step_00000005.pt.abc.tmp"
    partial.write_bytes(b"half a checkpoint")
    with pytest.warns(UserWarning, match="taking over the lock"):
        with claim_log_dir(log, resuming=True):
            assert (log / LOCK_NAME).read_text() == str(os.getpid())
            assert not partial.exists(), "partial writes of a crashed run are cleaned up"


# ------------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("override, message", [
    ("data.batch_size=0", "data.batch_size=0: must be a positive integer"),
    ("model.num_slots=0", "model.num_slots=0: must be a positive integer"),
    ("optim.lr=.nan", "optim.lr=nan: must be a positive number"),
    ("model.decoder.kind=conv", "model.decoder.kind='conv': must be one of mlp, broadcast"),
])
def test_bad_config_values_stop_before_the_run_dir_exists(data_dir, tmp_path, capsys, override, message):
    log = tmp_path / "never"
    line = one_line_error(capsys, train_main, train_argv(data_dir, log, extra=[override]))
    assert message in line
    assert not log.exists()


def test_malformed_yaml_and_short_videos(data_dir, tmp_path, capsys):
    bad = tmp_path / "bad.yml"
    bad.write_text("model:\n  num_slots: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yml: not valid YAML at line \d+"):
        load_config(bad)
    line = one_line_error(capsys, train_main, ["configs/pretrain/shapes_stage1.yml", *overrides("cnn", 2),
                                               "data.chunk_size=9", "--data-dir", str(data_dir), "--log-dir",
                                               str(tmp_path / "short")])
    assert "shorter than data.chunk_size=9" in line and "(8 frames)" in line


# ------------------------------------------------------------------------------------------------- checkpoints
def test_damaged_checkpoint_bytes_are_caught(tmp_path):
    path = save_checkpoint(tiny_model(), tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        header = 8 + int.from_bytes(path.read_bytes()[:8], "little")
        assert f.metadata()["weights_sha256"]
    data = bytearray(path.read_bytes())
    data[header + 100] ^= 0xFF  # one byte of tensor data; the header is intact
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="do not match the digest"):
        load_checkpoint(damaged)
    # Files without a digest (written before it existed) are still checked for NaN/inf weights.
    model = tiny_model()
    with torch.no_grad():
        model.feature_mlp.fc1.weight[0, 0] = float("nan")
    save_checkpoint(model, tmp_path / "nan.safetensors")
    with pytest.raises(CheckpointError, match="non-finite .* feature_mlp.fc1.weight"):
        load_checkpoint(tmp_path / "nan.safetensors")


def test_random_bytes_resume_never_suggests_unsafe_loading(data_dir, tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(np.random.default_rng(0).bytes(2048))
    line = one_line_error(capsys, train_main, train_argv(data_dir, tmp_path / "r") + ["--continue", str(junk)])
    assert "not a readable training checkpoint" in line and "weights_only" not in line


def test_missing_pretrained_backbone_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    start = time.perf_counter()
    with pytest.raises(BackboneWeightsError, match="pretrained weights of backbone 'vit_small_patch14_dinov2'.*"
                                                   "model.encoder.weights="):
        ViTEncoder("vit_small_patch14_dinov2", pretrained=True)
    assert time.perf_counter() - start < 10


# ------------------------------------------------------------------------------------------------- model input
def test_model_input_is_checked():
    model = tiny_model()
    state = model.init_state(1)
    frame = model.preprocess(np.zeros((1, 32, 32, 3), np.uint8))
    bad = [
        (lambda: model.step(frame.numpy(), state), TypeError, "expected a torch tensor"),
        (lambda: model.step(frame.double(), state), ValueError, "got torch.float64"),
        (lambda: model.preprocess(np.zeros((1, 0, 0, 3), np.uint8)), ValueError, "0x0 pixels hold no image"),
        (lambda: model(frame[:, None][:, :0]), ValueError, "a clip of 0 frames"),
        (lambda: model.init_state(-1), ValueError, "batch_size must be a positive int"),
    ]
    for call, error, message in bad:
        with pytest.raises(error, match=message):
            call()


def test_non_finite_frames_are_refused_and_the_state_survives():
    model = tiny_model()
    video = model.preprocess(np.random.default_rng(0).integers(0, 256, (1, 3, 32, 32, 3), dtype=np.uint8))
    with torch.no_grad():
        out, state = model.step(video[:, 0], model.init_state(1))
        for value in (float("nan"), float("inf")):
            poisoned = video[:, 1].clone()
            poisoned[0, 0, 0, 0] = value
            with pytest.raises(ValueError, match="NaN or inf"):
                model.step(poisoned, state)
        # The stream goes on from the state before the bad frame, as if it had never come.
        out, _ = model.step(video[:, 1], state)
        reference, _ = model(video[:, :2])
    torch.testing.assert_close(out["slots"], reference["slots"][:, 1])


# ------------------------------------------------------------------------------------------------- wrappers
def test_vector_wrappers_name_the_right_class():
    from stable_baselines3.common.vec_env import DummyVecEnv

    from oc_perception.sb3 import VecSlotObservation
    from oc_perception.wrappers import VectorSlotObservation
    from test_wrappers import TinyImageEnv

    model = tiny_model()
    gym_vector = gym.vector.SyncVectorEnv([lambda: TinyImageEnv("rgb_array")] * 2)
    with pytest.raises(TypeError, match="use VectorSlotObservation"):
        VecSlotObservation(gym_vector, checkpoint=model)
    with pytest.raises(TypeError, match="use VecSlotObservation"):
        VectorSlotObservation(DummyVecEnv([lambda: TinyImageEnv("rgb_array")]), checkpoint=model)
    env = VectorSlotObservation(gym_vector, checkpoint=model)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="got 3 actions for 2 sub-envs"):
        env.step(np.zeros((3, 2), np.float32))


# ------------------------------------------------------------------------------------------------- videos
def test_inference_outputs_never_replace_inputs_or_each_other(tmp_path):
    from oc_perception.io import OutputPathError, check_outputs

    video = tmp_path / "in.mp4"
    with pytest.raises(OutputPathError, match="is an input \\(--video"):
        check_outputs({"--out": video}, {"--video": video})
    with pytest.raises(OutputPathError, match="--out and --slots-out are the same file"):
        check_outputs({"--out": tmp_path / "x.npz", "--slots-out": tmp_path / "x.npz"}, {"--video": video})
    with pytest.raises(ValueError, match="fps must be > 0"):
        infer_video(tiny_model(), tmp_path / "missing.mp4", fps=0)


def test_directory_as_video_and_truncated_mkv(tmp_path):
    from oc_perception.io import VideoError

    with pytest.raises(VideoError, match="is a directory"):
        VideoReader(tmp_path)
    frames = np.stack([np.full((32, 32, 3), 6 * i, np.uint8) for i in range(40)])
    path = tmp_path / "clip.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    whole = VideoReader(path)
    assert len(list(whole)) == 40 and whole.complete
    data = path.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    reader = VideoReader(cut)
    with pytest.warns(UserWarning, match="frames \\(from the container's duration\\) could be decoded"):
        n = len(list(reader))
    assert 0 < n < 40 and not reader.complete


def test_extreme_aspect_videos_render(tmp_path):
    assert max(display_size(16, 1024, 256)) <= 1024
    frames = np.random.default_rng(0).integers(0, 256, (3, 4, 256, 3), dtype=np.uint8)  # 1:64
    src = io.write_video(tmp_path / "wide.mp4", frames, fps=5, scale=1)
    summary = infer_video(tiny_model(), src, out=tmp_path / "wide_slots.mp4", progress=False)
    assert summary["frames"] == 3 and (tmp_path / "wide_slots.mp4").is_file()


# ------------------------------------------------------------------------------------------------- CLIs
@pytest.mark.parametrize("argv, message", [
    (["oc/NoSuchEnv-v0"], "unknown env id 'oc/NoSuchEnv-v0'"),
    (["oc/ShapesPush-v0", "--episodes", "0"], "--episodes 0: must be at least 1"),
    (["oc/ShapesPush-v0", "--out", "play.avi"], "unsupported video format .avi"),
    (["oc/ShapesPush-v0", "--out", "/nonexistent-dir/play.mp4"], "cannot write there"),
])
def test_play_errors(argv, message, capsys):
    from envs.play import main as play_main

    assert message in one_line_error(capsys, play_main, argv)


@pytest.mark.parametrize("argv, message", [
    (["--env", "oc/NoSuchEnv-v0"], "cannot make env 'oc/NoSuchEnv-v0'"),
    (["--env", "oc/ShapesPush-v0", "--episodes", "-3"], "--episodes -3: must be at least 1"),
    (["--env", "oc/ShapesPush-v0", "--steps", "0"], "--steps 0: must be at least 1"),
    (["--env", "CartPole-v1", "--image-size", "32"], "does not take the arguments ['image_size']"),
])
def test_generate_errors(argv, message, capsys, tmp_path):
    from oc_perception.data.generate import main as generate_main

    base = {"--episodes": "2", "--steps": "3", "--out": str(tmp_path)}
    for flag, value in base.items():
        if flag not in argv:
            argv = argv + [flag, value]
    assert message in one_line_error(capsys, generate_main, argv)
    assert not list(tmp_path.glob("*.tar")), "a failed generate leaves no shard"


def test_generate_existing_shards_and_failure_midway(tmp_path, capsys):
    from oc_perception.data.generate import main as generate_main

    argv = ["--env", "oc/ShapesPush-v0", "--episodes", "2", "--steps", "3", "--val-episodes", "0",
            "--out", str(tmp_path)]
    generate_main(argv)
    capsys.readouterr()
    assert "delete them or pass overwrite=True" in one_line_error(capsys, generate_main, argv)

    def broken():
        yield from moving_squares(1)
        raise RuntimeError("the env crashed")

    with pytest.raises(RuntimeError, match="the env crashed"):
        write_shards(broken(), tmp_path / "b" / "b-train-%06d.tar")
    assert not list((tmp_path / "b").glob("*.tar"))


def test_generate_without_segmentation_or_our_policy(tmp_path, capsys):
    from oc_perception.data.generate import main as generate_main

    generate_main(["--env", "CartPole-v1", "--episodes", "1", "--steps", "3", "--val-episodes", "0",
                   "--out", str(tmp_path), "--policy", "random"])
    from oc_perception.data.clips import ShardIndex

    index = ShardIndex(sorted(tmp_path.glob("*.tar")))
    assert index.entries[0].segmentations is None and index.entries[0].num_frames == 3


def test_dynamics_truncated_data_and_unwritable_out(tmp_path, capsys):
    from oc_perception.dynamics.data import DataError, load_split

    np.savez_compressed(tmp_path / "train.npz", slots=np.zeros((4, 8, 3, 2), np.float32))
    data = (tmp_path / "train.npz").read_bytes()
    (tmp_path / "train.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_split(tmp_path, "train")


def test_panda_urdf_is_removed_at_exit(tmp_path):
    code = ("import gymnasium as gym, envs, envs.panda as p; env = gym.make('oc/PandaPush-v0'); env.reset(seed=0); "
            "print(p._collision_visual_urdf())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    path = Path(out.stdout.strip().splitlines()[-1])
    assert path.suffix == ".urdf" and not path.exists()


def test_our_checkpoint_with_another_config_is_named_before_any_build(tmp_path, monkeypatch):
    path = save_checkpoint(tiny_model(), tmp_path / "cnn.safetensors")
    monkeypatch.setattr("timm.create_model", lambda *a, **k: pytest.fail("built a backbone first"))
    with pytest.raises(CheckpointError, match="encoder.backbone: checkpoint 'cnn' vs config "
                                              "'vit_small_patch14_dinov2'.*leave out --config"):
        load_checkpoint(path, cfg=load_config("configs/pretrain/movi_c.yml").model)


# ------------------------------------------------------------------------------------------------- outputs over inputs
def test_no_output_is_written_over_an_input(data_dir, tmp_path, capsys):
    from oc_perception.evaluate import main as evaluate_main
    from oc_perception.inference import main as infer_main

    model = save_checkpoint(tiny_model(), tmp_path / "model.safetensors")
    before = model.read_bytes()
    video = io.write_video(tmp_path / "clip.mp4", np.zeros((2, 32, 32, 3), np.uint8), fps=5, scale=1)
    os.link(model, tmp_path / "hard_link.npz")
    for flag, target in (("--slots-out", model), ("--slots-out", tmp_path / "hard_link.npz"), ("--out", model)):
        line = one_line_error(capsys, infer_main, ["--checkpoint", str(model), "--video", str(video), flag,
                                                   str(target)])
        assert f"{flag} {target} is an input (--checkpoint {model})" in line
    argv = ["configs/pretrain/shapes_stage1.yml", "data.val_shards=sq/sq-validation-*.tar", "--checkpoint", str(model),
            "--data-dir", str(data_dir), "--device", "cpu"]
    for flag in ("--out", "--overlays"):
        line = one_line_error(capsys, evaluate_main, [*argv, flag, str(model)])
        assert f"{flag} {model} is an input (--checkpoint {model})" in line
    shard = sorted((data_dir / "sq").glob("sq-validation-*.tar"))[0]
    assert "is an input (validation shards" in one_line_error(capsys, evaluate_main, [*argv, "--out", str(shard)])
    assert model.read_bytes() == before and not list(tmp_path.glob(".*"))


# ------------------------------------------------------------------------------------------------- run dirs
def test_continue_into_another_finished_run_is_refused(data_dir, tmp_path, capsys):
    train_main(train_argv(data_dir, tmp_path / "a", steps=3, extra=["trainer.stop_at=1"]))  # A stopped at step 1
    train_main(train_argv(data_dir, tmp_path / "b", steps=2))
    before = {p.name: p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file()}
    line = one_line_error(capsys, train_main, train_argv(data_dir, tmp_path / "b", steps=3) + [
        "--continue", str(tmp_path / "a")])
    assert f"log dir {tmp_path / 'b'} already holds another run" in line and f"go on in {tmp_path / 'a'}" in line
    assert {p.name: p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file()} == before
    assert [p.name for p in (tmp_path / "a" / "checkpoints").glob("step_*.pt")] == ["step_00000001.pt"]


def test_a_run_that_failed_at_its_first_step_can_be_run_again(data_dir, tmp_path, capsys, monkeypatch):
    log = tmp_path / "nan"
    monkeypatch.setattr("oc_perception.model.slotcontrast.slot_slot_contrastive_loss",
                        lambda slots, *a: slots.sum() * float("nan"))
    line = one_line_error(capsys, train_main, train_argv(data_dir, log))
    assert "loss is nan at step 1: training diverged" in line
    monkeypatch.undo()
    train_main(train_argv(data_dir, log, steps=1))  # the dir held no checkpoint: nothing to refuse or resume
    assert len(list(log.glob("events.out.tfevents.*"))) == 1


def test_one_frame_clips_train(data_dir, tmp_path):
    from oc_perception.model.losses import slot_slot_contrastive_loss

    assert slot_slot_contrastive_loss(torch.randn(2, 1, 4, 8)).item() == 0.0
    train_main(train_argv(data_dir, tmp_path / "t1", steps=2, extra=["data.chunk_size=1"]))
    assert (tmp_path / "t1" / "checkpoints" / "step_00000002.pt").is_file()


# ------------------------------------------------------------------------------------------------- YAML
def test_keys_given_twice_are_refused_in_every_config(tmp_path):
    from agents.config import load_agent_config
    from oc_perception.dynamics.config import load_dynamics_config

    cases = [
        (load_config, "optim:\n  lr: 1.0e-3\ntrainer:\n  seed: 3\noptim:\n  warmup_steps: 10\n", "key 'optim'", 5),
        (load_config, "model:\n  loss:\n    ss_weight: 1.0\n    ss_weight: 0.5\n", "key 'ss_weight'", 4),
        (load_agent_config, "env_id: oc/ShapesPush-v0\nppo:\n  lr: 1.0e-4\nppo:\n  n_steps: 64\n", "key 'ppo'", 4),
        (load_dynamics_config, "data:\n  burn_in: 4\n  burn_in: 6\n", "key 'burn_in'", 3),
    ]
    for load, text, key, line in cases:
        path = tmp_path / "twice.yml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=f"twice.yml at line {line}, column \\d+: {key} is given twice"):
            load(path)
    with pytest.raises(ConfigError, match="override 'model.loss' at line 1, column \\d+: key 'ss_weight' is given"):
        load_config(None, ["model.loss={ss_weight: 1, ss_weight: 2}"])
    # A merge key ("<<: *base") brings keys in for the mapping to override: that is not a key given twice.
    (tmp_path / "merge.yml").write_text("optim:\n  <<: {lr: 1.0e-3, eps: 1.0e-6}\n  lr: 2.0e-3\n")
    assert load_config(tmp_path / "merge.yml").optim.lr == 2.0e-3


def test_alias_bombs_are_refused_and_values_are_never_printed_whole(tmp_path):
    # 9 levels of 9 references under a key we read: ~300 bytes that expand to 9 ** 9 values.
    levels = ["&a [x, x, x, x, x, x, x, x, x]"] + [f"&{name} [{', '.join([f'*{prev}'] * 9)}]"
                                                   for prev, name in zip("abcdefgh", "bcdefghi")]
    bomb = tmp_path / "bomb.yml"
    bomb.write_text(f"model:\n  num_slots: [{', '.join(levels)}]\n")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="aliases expand to more than 10,000 values") as e:
        load_config(bomb)
    assert len(str(e.value)) < 300 and time.perf_counter() - start < 5
    long_list = "[" + ", ".join(["7"] * 5000) + "]"
    with pytest.raises(ConfigError, match="model.num_slots: expected int") as e:
        load_config(None, [f"model.num_slots={long_list}"])
    assert len(str(e.value)) < 200


# ------------------------------------------------------------------------------------------------- interrupts, disks
def test_ctrl_c_in_training_saves_the_last_whole_step_and_resumes_exactly(data_dir, tmp_path, capsys, monkeypatch):
    import signal

    from oc_perception.checkpoint import load_training_state
    from oc_perception.train import TrainStep
    from oc_perception.trainer import deferred_interrupts

    done = []
    # Python's own Ctrl-C handler, whatever this process inherited: a shell starts background jobs (`make test &`)
    # with SIGINT ignored, and an ignored Ctrl-C rightly stays ignored after the block.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):  # an update is applied whole: Ctrl-C takes effect after it
            with deferred_interrupts():
                signal.raise_signal(signal.SIGINT)  # to this thread, so it is handled inside the block
                done.append("the rest of the update")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert done == ["the rest of the update"]

    train_main(train_argv(data_dir, tmp_path / "straight", steps=4))
    forward, calls = TrainStep.forward, []

    def interrupted_in_step_3(self, batch):
        out = forward(self, batch)  # the step's random draws happen before the interrupt
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(TrainStep, "forward", interrupted_in_step_3)
    log = tmp_path / "cut"
    with pytest.raises(SystemExit) as exit_info:
        train_main(train_argv(data_dir, log, steps=4))
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 130
    assert line == (f"interrupted: stopped at step 2 of 4; saved {log / 'checkpoints' / 'step_00000002.pt'}: go on "
                    f"with --continue {log}")
    monkeypatch.undo()
    train_main(train_argv(data_dir, log, steps=4) + ["--continue", str(log)])
    straight = load_training_state(tmp_path / "straight" / "checkpoints" / "step_00000004.pt")["model"]
    resumed = load_training_state(log / "checkpoints" / "step_00000004.pt")["model"]
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key


def test_full_disk_and_read_only_log_dir_are_named(data_dir, tmp_path, capsys, monkeypatch):
    import errno
    import shutil

    def full_disk(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 4160 vs 4054")

    monkeypatch.setattr(torch, "save", full_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 0))
    log = tmp_path / "full"
    line = one_line_error(capsys, train_main, train_argv(data_dir, log, steps=1))
    assert line == (f"error: cannot write {log / 'checkpoints' / 'step_00000001.pt'}: the disk holding "
                    f"{log / 'checkpoints'} is full (0 MiB free); free some space there or write to another disk")
    assert not list(log.rglob(".*.tmp"))
    monkeypatch.undo()

    read_only = tmp_path / "read_only"
    real_open, real_mkdir = os.open, os.mkdir

    def refuse(path):
        if str(path).startswith(str(read_only)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(os, "open", lambda path, *a, **k: refuse(path) or real_open(path, *a, **k))
    monkeypatch.setattr(os, "mkdir", lambda path, *a, **k: refuse(path) or real_mkdir(path, *a, **k))
    line = one_line_error(capsys, train_main, train_argv(data_dir, read_only, steps=1))
    assert line == (f"error: cannot write {read_only / '.lock'}: {read_only} is not writable (Read-only file "
                    "system); pick a folder you can write to")


def test_sigterm_or_a_full_disk_in_inference_leave_no_partial_file(tmp_path, capsys, monkeypatch):
    import errno
    import signal

    from oc_perception import inference

    checkpoint = save_checkpoint(tiny_model(), tmp_path / "model.safetensors")
    video = io.write_video(tmp_path / "clip.mp4", np.zeros((6, 32, 32, 3), np.uint8), fps=5, scale=1)
    out = tmp_path / "out"
    argv = ["--checkpoint", str(checkpoint), "--video", str(video), "--chunk", "2", "--out", str(out / "s.mp4"),
            "--slots-out", str(out / "s.npz")]
    run_inference = inference.run_inference

    def terminated_after_one_chunk(*args):
        for i, chunk in enumerate(run_inference(*args)):
            yield chunk
            if i == 0:
                os.kill(os.getpid(), signal.SIGTERM)

    def unhandled(signum, frame):  # without a handler of the command's own, SIGTERM would end pytest itself
        raise RuntimeError("SIGTERM reached the test's own handler")

    monkeypatch.setattr(inference, "run_inference", terminated_after_one_chunk)
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        with pytest.raises(SystemExit) as exit_info:
            inference.main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 130 and line.startswith("interrupted: stopped before the end; files that were")
    assert not list(out.iterdir())
    monkeypatch.undo()

    class FullDisk:
        def __init__(self, container):
            self.container = container

        def mux(self, packets):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def close(self):  # flushing on close fails again
            self.container.close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    open_video = io.VideoWriter._open

    def open_on_a_full_disk(self, size):
        open_video(self, size)
        self._container = FullDisk(self._container)

    monkeypatch.setattr(io.VideoWriter, "_open", open_on_a_full_disk)
    line = one_line_error(capsys, inference.main, argv)
    assert line.startswith(f"error: cannot write {out / 's.mp4'}: the disk holding {out} is full")
    assert not list(out.iterdir())


# ------------------------------------------------------------------------------------------------- resume targets
def test_continue_and_init_from_name_what_the_file_is(data_dir, tmp_path, capsys):
    from oc_perception.checkpoint import CHECKPOINT_DIR, load_training_state, load_weights, save_training_state

    run = tmp_path / "run"
    train_main(train_argv(data_dir, run, steps=1))
    step = run / "checkpoints" / "step_00000001.pt"
    dynamics = tmp_path / "dyn" / "checkpoints" / "step_00000003.pt"
    save_training_state(dynamics, {"model": {}, "optimizer": {}, "scheduler": {}, "step": 3, "rng": {},
                                   "config": '{"model": {}, "data": {"burn_in": 6}, "loss": {}}'})
    cases = [
        (run / "model.safetensors", "is a model file (safetensors), not a training state: pass the run's log dir or "
                                    f"one of its checkpoints/step_*.pt; to start a new run from these weights, pass "
                                    f"--init-from {run / 'model.safetensors'}"),
        (CHECKPOINT_DIR / "panda.safetensors", "is a model file (safetensors)"),
        (dynamics, "is a dynamics checkpoint, not a pretraining one: resume it with python -m "
                   "oc_perception.dynamics.train --continue"),
    ]
    for target, message in cases:
        line = one_line_error(capsys, train_main, train_argv(data_dir, tmp_path / "new", steps=2) + [
            "--continue", str(target)])
        assert message in line, line
    model = SlotContrast(load_config(run / "config.yml").model)
    load_weights(model, step)
    for key, value in load_training_state(step)["model"].items():
        assert torch.equal(model.state_dict()[key], value), key
    train_main(train_argv(data_dir, tmp_path / "fine", steps=1) + ["--init-from", str(step)])
    assert "a slot dynamics training checkpoint" in one_line_error(
        capsys, train_main, train_argv(data_dir, tmp_path / "fine2", steps=1) + ["--init-from", str(dynamics)])


# ------------------------------------------------------------------------------------------------- data and values
@pytest.mark.parametrize("frames, conversion", [
    (np.zeros((8, 32, 32, 3), np.float32), "map floats in [0, 1] to uint8"),
    (np.zeros((8, 32, 32), np.uint8), "stack the grey frames to RGB"),
    (np.zeros((8, 32, 32, 4), np.uint8), "drop the alpha channel (x[..., :3])"),
    (np.zeros((8, 32, 32, 3), np.int16), "rescale the int16 values to 0..255"),
])
def test_shards_of_other_frame_formats_name_the_shard_and_the_conversion(frames, conversion, tmp_path):
    from oc_perception.data.clips import ShardIndex
    from oc_perception.data.datasets import ValidationVideos
    from oc_perception.data.shards import ShardError, read_shard

    (shard,) = write_shards([{"video": frames}], str(tmp_path / "x-%06d.tar"))
    where = f"{shard}: video 000000 is {frames.dtype} {list(frames.shape)}, but videos must be uint8 RGB"
    for read in (lambda: ShardIndex([shard]), lambda: ValidationVideos([shard], None), lambda: list(read_shard(shard))):
        with pytest.raises(ShardError) as e:
            read()
        assert where in str(e.value) and conversion in str(e.value)


def test_values_the_model_cannot_take_are_refused(tmp_path, monkeypatch):
    import json

    from safetensors.torch import save_file

    for override, message in (("model.num_slots=1000000000", "model.num_slots=1000000000: must be at most 1024"),
                              ("model.mean=[0.5, 0.5]", "model.mean=[0.5, 0.5]: must be 3 finite numbers"),
                              ("model.std=[0, 0, 0]", "model.std=[0.0, 0.0, 0.0]: must be positive")):
        with pytest.raises(ConfigError, match=message.replace("[", "\\[").replace("]", "\\]")):
            load_config(None, [override])
    good = save_checkpoint(tiny_model(), tmp_path / "good.safetensors")
    with safe_open(str(good), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    stored = json.loads(meta["config"])
    for config, message in ((["not", "a", "mapping"], "must be a mapping of names to values, got ['not', 'a'"),
                            ({**stored, "num_slots": 10**9}, "model.num_slots=1000000000: must be at most 1024")):
        save_file(tensors, tmp_path / "bad.safetensors", metadata={**meta, "config": json.dumps(config)})
        with pytest.raises(CheckpointError, match="the stored model config is unreadable") as e:
            load_checkpoint(tmp_path / "bad.safetensors")
        assert message in str(e.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="unknown backbone 'vit_small_patch14_dinov3x': timm has no model"):
        ViTEncoder("vit_small_patch14_dinov3x", pretrained=True)


@pytest.mark.parametrize("shape, dtype, conversion", [
    ((8, 8, 4), np.uint8, "drop the alpha channel (x[..., :3])"),
    ((8, 8), np.uint8, "stack the grey frames to RGB"),
    ((3, 8, 8), np.uint8, "move the channels last (np.moveaxis(x, -3, -1))"),
    ((8, 8, 3), np.float32, "map floats in [0, 1] to uint8"),
])
def test_image_observations_of_another_layout_name_the_conversion(shape, dtype, conversion):
    from oc_perception.wrappers import SlotObservation

    class OtherImages(gym.Env):
        observation_space = gym.spaces.Box(0, 1, shape, dtype)
        action_space = gym.spaces.Discrete(2)

    with pytest.raises(ValueError, match="convert them in a wrapper inside this one") as e:
        SlotObservation(OtherImages(), checkpoint=tiny_model())
    assert conversion in str(e.value) and 'render_mode="rgb_array"' in str(e.value)


def test_a_bundled_model_of_another_env_is_named(tmp_path):
    import shutil

    from oc_perception.checkpoint import CHECKPOINT_DIR, load_model

    copy = shutil.copy(CHECKPOINT_DIR / "panda.safetensors", tmp_path / "mine.safetensors")
    for path in (CHECKPOINT_DIR / "panda.safetensors", copy):
        with pytest.warns(UserWarning, match=f"checkpoint {path} is the bundled model of oc/PandaPush-v0, but the "
                                             "env is oc/ShapesOddOneOut-v0"):
            load_model(path, "cpu", env_id="oc/ShapesOddOneOut-v0")


def test_sigterm_to_the_process_group_saves_the_last_step(data_dir, tmp_path):
    """A scheduler's SIGTERM (or Ctrl-C in a terminal) reaches the DataLoader workers too; the run must still save
    its last whole step, exit 130 and resume from it."""
    import signal

    log = tmp_path / "run"
    argv = [sys.executable, "-m", "oc_perception.train", *train_argv(data_dir, log, steps=100000),
            "data.num_workers=1", "trainer.log_every=1000"]
    proc = subprocess.Popen(argv, cwd=REPO, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    seen = ""
    while "/100000" not in seen:  # the progress bar: training steps have begun
        chunk = proc.stderr.read(200)
        assert chunk, f"training ended before it began: {seen[-500:]}"
        seen += chunk
    time.sleep(3)
    os.killpg(proc.pid, signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, (seen + rest)[-2000:]
    assert "DataLoader worker" not in rest
    last_line = rest.strip().splitlines()[-1]
    saved = sorted((log / "checkpoints").glob("step_*.pt"))
    assert saved and saved[-1].name in last_line and "--continue" in last_line, last_line
