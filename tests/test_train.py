"""Pretraining: runs end to end, resumes exactly, feature cache, DDP on CPU, and one-line errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, tiny_overrides
from oc_perception.checkpoint import CheckpointError, load_checkpoint, load_model, load_training_state
from oc_perception.config import load_config, to_dict
from oc_perception.data.shards import write_shards
from oc_perception.dynamics.config import load_dynamics_config
from oc_perception.train import main
from oc_perception.trainer import check_resume_config, lr_factor


def moving_squares(n: int, t: int = 8, size: int = 32, seed: int = 0):
    """Videos of 2 coloured squares moving on grey, with their segmentation ids [T, H, W, 1]."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        video = np.full((t, size, size, 3), 90, np.uint8)
        seg = np.zeros((t, size, size, 1), np.uint8)
        pos = rng.integers(0, size - 8, (2, 2)).astype(float)
        vel = rng.uniform(-2, 2, (2, 2))
        colors = rng.integers(0, 256, (2, 3))
        for f in range(t):
            for o in range(2):
                y, x = np.clip(pos[o] + vel[o] * f, 0, size - 8).astype(int)
                video[f, y : y + 8, x : x + 8] = colors[o]
                seg[f, y : y + 8, x : x + 8] = o + 1
        yield {"video": video, "segmentations": seg}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_shards(moving_squares(12, seed=0), str(root / "sq" / "sq-train-%06d.tar"), videos_per_shard=5)
    write_shards(moving_squares(4, seed=1), str(root / "sq" / "sq-validation-%06d.tar"), videos_per_shard=4)
    return root


def overrides(backbone="cnn", steps=10):
    return tiny_overrides(backbone) + [
        "data.train_shards=sq/sq-train-*.tar", "data.val_shards=sq/sq-validation-*.tar", "data.batch_size=4",
        "data.val_batch_size=2", "data.num_workers=0", "data.flip=true", f"trainer.max_steps={steps}",
        "trainer.val_every=5", "trainer.ckpt_every=5", "trainer.log_every=1", "optim.warmup_steps=3",
        "trainer.keep_last=5",
        # shapes_stage1.yml's recipe minus what these tests do not need (the broadcast decoder and the supervised loss
        # have tests of their own); its random initial slots stay, so resuming is checked with them.
        "model.decoder.kind=mlp", "model.loss.segmentation_weight=0", "trainer.stop_at=null",
    ]


def run(data_dir, log_dir, extra=(), resume=None, backbone="cnn", steps=10):
    argv = ["configs/pretrain/shapes_stage1.yml", *overrides(backbone, steps), *extra, "--data-dir", str(data_dir),
            "--log-dir", str(log_dir)]
    main(argv + (["--continue", str(resume)] if resume else []))


def test_lr_schedule():
    assert lr_factor(0, 10, 110) == 0 and lr_factor(5, 10, 110) == 0.5 and lr_factor(10, 10, 110) == 1
    assert lr_factor(110, 10, 110) == pytest.approx(0.5) and lr_factor(60, 10, 110) == pytest.approx(0.5**0.5)


def test_train_then_resume_matches_uninterrupted(data_dir, tmp_path):
    """5 steps from the step-5 checkpoint (what an interrupted run leaves) end where 10 straight steps do."""
    run(data_dir, tmp_path / "full")
    run(data_dir, tmp_path / "resumed", resume=tmp_path / "full" / "checkpoints" / "step_00000005.pt")
    full = load_training_state(tmp_path / "full" / "checkpoints" / "step_00000010.pt")
    resumed = load_training_state(tmp_path / "resumed" / "checkpoints" / "step_00000010.pt")
    assert not (tmp_path / "resumed" / "checkpoints" / "step_00000005.pt").exists()  # it did not start over
    for k, v in full["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    assert torch.equal(full["optimizer"]["state"][0]["exp_avg"], resumed["optimizer"]["state"][0]["exp_avg"])
    # The final model file loads and validation wrote metrics.
    model = load_checkpoint(tmp_path / "full" / "model.safetensors")
    assert model.cfg.num_slots == 4
    # The last training checkpoint loads as the same model, from the config it holds (to evaluate any step).
    at_step = load_model(tmp_path / "full" / "checkpoints" / "step_00000010.pt", "cpu")
    assert at_step.cfg == model.cfg and not at_step.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, at_step.state_dict()[k]), k
    events = list((tmp_path / "full").glob("events.out.tfevents.*"))
    assert events and (tmp_path / "full" / "config.yml").is_file()


def test_tensorboard_keeps_the_resume_steps_validation(data_dir, tmp_path):
    """A run stopped at its step-5 checkpoint and continued logs validation at 5 and 10: the resume purges only
    what came after the checkpoint (the step-5 scalars and mask images were logged before it was written)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(data_dir, tmp_path / "run", extra=["trainer.stop_at=5"])
    run(data_dir, tmp_path / "run", resume=tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("val/loss_total")] == [5, 10]
    assert [e.step for e in events.Images("val/masks_0")] == [5, 10]
    assert [e.step for e in events.Scalars("train/loss_total")] == list(range(1, 11))


def test_resume_with_another_config_is_refused(data_dir, tmp_path, capsys):
    run(data_dir, tmp_path / "a", steps=5)
    with pytest.raises(SystemExit) as e:
        run(data_dir, tmp_path / "a", extra=["model.num_slots=5"], resume=tmp_path / "a", steps=5)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error:") and "another config" in err and "model" in err


def test_feature_cache_trains_like_the_backbone(data_dir, tmp_path):
    """With a frozen ViT, training from the cache sees the same features (fp16-rounded) as the live path."""
    run(data_dir, tmp_path / "live", backbone="vit", steps=3, extra=["data.flip=false"])
    run(data_dir, tmp_path / "cached", backbone="vit", steps=3,
        extra=["data.flip=false", "data.cache_features=true"])
    live = load_file(tmp_path / "live" / "model.safetensors")
    cached = load_file(tmp_path / "cached" / "model.safetensors")
    assert (tmp_path / "cached" / "feature_cache" / "meta.json").is_file()
    for k in live:
        torch.testing.assert_close(live[k], cached[k], atol=2e-3, rtol=1e-2)


@pytest.mark.parametrize("bad, message", [
    (["data.train_shards=nope/x-*.tar"], "no shards match"),
    (["model.num_slotz=3"], "unknown config key 'model.num_slotz'"),
    (["trainer.precision=fp16"], "trainer.precision"),
])
def test_bad_input_stops_with_one_line(data_dir, tmp_path, capsys, bad, message):
    with pytest.raises(SystemExit) as e:
        run(data_dir, tmp_path / "bad", extra=bad, steps=2)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and message in err[-1]


@pytest.mark.filterwarnings("ignore:cpu has no native bfloat16")
def test_bf16_trains_on_cpu_close_to_fp32(data_dir, tmp_path):
    """bf16 autocast is accepted on the CPU, and two steps from the same seed stay close to fp32's."""
    run(data_dir, tmp_path / "fp32", steps=2)
    run(data_dir, tmp_path / "bf16", extra=["trainer.precision=bf16"], steps=2)
    fp32 = load_file(tmp_path / "fp32" / "model.safetensors")
    bf16 = load_file(tmp_path / "bf16" / "model.safetensors")
    moved = [k for k in fp32 if not torch.equal(fp32[k], bf16[k])]
    assert moved  # autocast changed the arithmetic
    for k in fp32:  # weights stay float32 (mixed precision), and the steps agree to bf16's precision
        assert bf16[k].dtype == torch.float32
        torch.testing.assert_close(bf16[k], fp32[k], atol=2e-3, rtol=2e-2)


def test_empty_dataset_is_an_error(tmp_path, capsys):
    import tarfile

    (tmp_path / "sq").mkdir()
    for split in ("train", "validation"):
        tarfile.open(tmp_path / "sq" / f"sq-{split}-000000.tar", "w").close()
    with pytest.raises(SystemExit):
        run(tmp_path, tmp_path / "log", steps=2)
    assert "hold no videos" in capsys.readouterr().err


def test_ddp_two_cpu_processes(data_dir, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(port), "-m", "oc_perception.train", "configs/pretrain/shapes_stage1.yml",
           *overrides(steps=3), "--data-dir", str(data_dir), "--log-dir", str(tmp_path / "ddp")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "ddp" / "checkpoints" / "step_00000003.pt").is_file()


def test_evaluate_cli_reproduces_training_validation(data_dir, tmp_path, capsys):
    """`python -m oc_perception.evaluate` on the final model gives the metrics the run's last validation logged."""
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from oc_perception.evaluate import main as evaluate_main
    run(data_dir, tmp_path / "run", steps=2)
    out = tmp_path / "eval.json"
    evaluate_main(["configs/pretrain/shapes_stage1.yml", *overrides(), "--data-dir", str(data_dir), "--out", str(out),
                   "--checkpoint", str(tmp_path / "run" / "model.safetensors")])
    results = json.loads(out.read_text())
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    for name in ("video_ari_fg", "video_mbo_fg", "image_ari_fg", "loss_featrec", "label_free/objects_drawn",
                 "label_free/mask_change_static", "label_free/slots_used"):
        logged = events.Scalars(f"val/{name}")[-1]
        assert logged.step == 2
        key = name if name.startswith(("loss", "label_free")) else f"decoder/{name}"
        assert results[key] == pytest.approx(logged.value, abs=1e-5), name
    assert -1 <= results["grouping/video_ari_fg"] <= 1 and "grouping/video_mbo_fg" in results
    assert "decoder/video_ari_fg" in capsys.readouterr().out

    overlays = tmp_path / "sheet" / "masks.png"
    evaluate_main(["configs/pretrain/shapes_stage1.yml", *overrides(), "--data-dir", str(data_dir),
                   "--checkpoint", str(tmp_path / "run" / "model.safetensors"), "--overlays", str(overlays)])
    assert f"mask overlays: {overlays}" in capsys.readouterr().out.splitlines() and overlays.is_file()

    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["configs/pretrain/shapes_stage1.yml", "--checkpoint", str(tmp_path / "missing.safetensors")])
    assert exit_info.value.code == 2 and "checkpoint not found" in capsys.readouterr().err


def test_init_from_starts_a_new_run_from_a_models_weights(data_dir, tmp_path, capsys):
    run(data_dir, tmp_path / "base", steps=2)
    base = load_checkpoint(tmp_path / "base" / "model.safetensors")
    # One step at warm-up factor 0 leaves the weights as loaded: the new run starts exactly from the model.
    run(data_dir, tmp_path / "tuned", extra=["--init-from", str(tmp_path / "base" / "model.safetensors"),
                                             "model.loss.ss_weight=0.1"], steps=1)
    tuned = load_checkpoint(tmp_path / "tuned" / "model.safetensors")
    for key, value in base.state_dict().items():
        assert torch.equal(value, tuned.state_dict()[key]), key
    assert tuned.cfg.loss.ss_weight == 0.1
    with pytest.raises(SystemExit):
        run(data_dir, tmp_path / "both", extra=["--init-from", str(tmp_path / "base" / "model.safetensors")],
            resume=tmp_path / "base")
    assert "pass one of them" in capsys.readouterr().err


def test_stop_at_ends_early_on_the_long_schedule_and_continues(data_dir, tmp_path):
    run(data_dir, tmp_path / "full", steps=6)
    run(data_dir, tmp_path / "cut", extra=["trainer.stop_at=3"], steps=6)
    cut = load_training_state(tmp_path / "cut" / "checkpoints" / "step_00000003.pt")
    assert not (tmp_path / "cut" / "checkpoints" / "step_00000005.pt").exists()
    assert cut["scheduler"]["last_epoch"] == 3 and cut["scheduler"]["base_lrs"]
    # Going on without the budget ends where the uninterrupted 6-step run ends.
    run(data_dir, tmp_path / "cut", resume=tmp_path / "cut", steps=6)
    full = load_training_state(tmp_path / "full" / "checkpoints" / "step_00000006.pt")
    resumed = load_training_state(tmp_path / "cut" / "checkpoints" / "step_00000006.pt")
    for k, v in full["model"].items():
        assert torch.equal(v, resumed["model"][k]), k


@pytest.mark.parametrize("load, name, allowed, refused", [
    (load_config, "shapes", "trainer.stop_at=7", "model.num_slots=3"),
    (load_dynamics_config, "shapes_push", "data.dir=moved", "model.history=2"),
])
def test_both_trainers_resume_by_one_rule(load, name, allowed, refused, tmp_path):
    saved = json.dumps(to_dict(load(name)), sort_keys=True)
    check_resume_config(saved, load(name, [allowed]), tmp_path)  # a time budget or moved data: the same run
    with pytest.raises(CheckpointError, match=r"another config \(differs in: model\)") as e:
        check_resume_config(saved, load(name, [refused]), tmp_path)
    assert "\n" not in str(e.value)
