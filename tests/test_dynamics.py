"""Slot dynamics: model symmetries and windowing, extraction, training with exact resume, evaluation, run time."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import tiny_overrides
from oc_perception.checkpoint import CheckpointError, load_training_state, save_checkpoint
from oc_perception.config import load_config
from oc_perception.data.shards import write_shards
from oc_perception.dynamics import DynamicsPredictor, SlotDynamics, load_dynamics, save_dynamics
from oc_perception.dynamics import evaluate as evaluate_cli
from oc_perception.dynamics import extract as extract_cli
from oc_perception.dynamics import train as train_cli
from oc_perception.dynamics.data import load_meta, load_split
from oc_perception.model import SlotContrast
from test_train import moving_squares

K, D, STEPS = 4, 32, 10


def random_model(action_dim: int = 0, history: int = 3) -> SlotDynamics:
    """A small model whose output layer is random (it starts at zero: the copy-last baseline)."""
    torch.manual_seed(0)
    model = SlotDynamics(D, num_layers=2, num_heads=2, hidden_dim=32, history=history, action_dim=action_dim).eval()
    with torch.no_grad():
        model.out_proj.weight.normal_(std=0.3)
    return model


# ---------------------------------------------------------------------------------------------- model
def test_a_damaged_or_non_finite_dynamics_file_is_refused_in_one_line(tmp_path):
    path = save_dynamics(random_model(), tmp_path / "dynamics.safetensors")
    assert load_dynamics(path).history == 3
    data = bytearray(path.read_bytes())
    data[-8:] = b"\x7f" * 8  # the last weights' bytes, behind an intact header
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="do not match the digest") as e:
        load_dynamics(damaged)
    assert "\n" not in str(e.value)
    model = random_model()
    with torch.no_grad():
        model.out_proj.weight[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match=r"non-finite \(NaN/inf\) weights in out_proj.weight") as e:
        load_dynamics(save_dynamics(model, tmp_path / "nan.safetensors"))
    assert "\n" not in str(e.value)


def test_permutation_equivariant_within_a_frame():
    model = random_model(action_dim=5)
    slots, actions = torch.randn(2, 3, K, D), torch.randint(0, 5, (2, 3 + 4 - 1))
    perm = torch.randperm(K)
    with torch.no_grad():
        out = model.rollout(slots, actions, steps=4)
        out_perm = model.rollout(slots[:, :, perm], actions, steps=4)
    torch.testing.assert_close(out_perm, out[:, :, perm], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out[:, :, 0], out[:, :, 1])  # the slots are not all alike


def test_rollout_shapes_and_actions():
    model = random_model(action_dim=5)
    slots = torch.randn(2, 3, K, D)
    with torch.no_grad():
        a = model.rollout(slots, torch.zeros(2, 6, dtype=torch.long), steps=4)
        b = model.rollout(slots, torch.full((2, 6), 3), steps=4)
    assert a.shape == (2, 4, K, D)
    assert not torch.allclose(a, b)  # the actions change the predictions
    continuous = random_model(action_dim=2)
    assert continuous.rollout(slots, torch.randn(2, 6, 2), steps=4).shape == (2, 4, K, D)
    assert random_model().rollout(slots, steps=2).shape == (2, 2, K, D)  # no actions


def test_sliding_window_uses_only_the_last_history_frames():
    model = random_model(action_dim=5, history=3)
    slots, actions = torch.randn(1, 8, K, D), torch.randint(0, 5, (1, 8 + 3 - 1))
    with torch.no_grad():
        long = model.rollout(slots, actions, steps=3)
        short = model.rollout(slots[:, -3:], actions[:, 5:], steps=3)
        changed = slots.clone()
        changed[:, :5] = torch.randn(1, 5, K, D)  # frames older than the window
        assert torch.equal(model.rollout(changed, actions, steps=3), long)
        # Step by step: each prediction is forward() on the last 3 frames, true or predicted.
        frames = list(slots[:, -3:].unbind(1))
        for h in range(3):
            window = torch.stack(frames[-3:], dim=1)
            step = model(window, actions[:, 5 + h: 8 + h])
            torch.testing.assert_close(step, long[:, h])
            frames.append(step)
    torch.testing.assert_close(long, short)


@pytest.mark.parametrize("call, message", [
    (lambda m: m.rollout(torch.randn(1, 3, K, D + 1), torch.zeros(1, 3, dtype=torch.long)), f"D={D}"),
    (lambda m: m.rollout(torch.randn(1, 3, K, D)), "pass actions"),
    (lambda m: m.rollout(torch.randn(1, 3, K, D), torch.zeros(1, 2, dtype=torch.long), steps=2), "[B, F] = [1, 4]"),
    (lambda m: m.rollout(torch.randn(1, 3, K, D), torch.full((1, 3), 7)), "must lie in [0, 5)"),
    (lambda m: m(torch.randn(3, K, D)), "[B, T, K, D]"),
])
def test_bad_model_input_is_a_clear_error(call, message):
    with pytest.raises(ValueError, match=None) as e:
        call(random_model(action_dim=5))
    assert message in str(e.value)


# ---------------------------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def perception(tmp_path_factory):
    cfg = load_config(None, tiny_overrides("cnn") + ["model.encoder.input_size=64"])
    torch.manual_seed(0)
    return save_checkpoint(SlotContrast(cfg.model), tmp_path_factory.mktemp("perception") / "tiny.safetensors")


@pytest.fixture(scope="module")
def data_dir(perception, tmp_path_factory):
    out = tmp_path_factory.mktemp("dyn") / "push"
    extract_cli.main(["--checkpoint", str(perception), "--env", "oc/ShapesPush-v0", "--episodes", "4",
                      "--val-episodes", "3", "--steps", str(STEPS), "--out", str(out), "--batch-size", "3"])
    return out


def test_extract_from_env_writes_the_documented_arrays(data_dir, perception):
    meta = load_meta(data_dir)
    assert meta["checkpoint"] == str(perception.resolve()) and meta["action_space"] == "discrete"
    assert (meta["action_dim"], meta["num_slots"], meta["slot_dim"], meta["steps"]) == (5, K, D, STEPS)
    assert meta["episodes"] == {"train": 4, "val": 3}
    train, val = load_split(data_dir, "train", frames=True), load_split(data_dir, "val", frames=True)
    assert train["slots"].shape == (4, STEPS, K, D) and train["slots"].dtype == np.float32
    assert train["actions"].shape == (4, STEPS) and train["actions"].dtype == np.int64
    assert train["segmentations"].shape == (4, STEPS, 64, 64) and train["segmentations"].dtype == np.uint8
    assert "frames" not in train and val["frames"].shape == (3, STEPS, 64, 64, 3)  # frames: val only by default
    assert train["segmentations"].max() >= 2 and np.isfinite(train["slots"]).all()
    # The slots are those of the streaming model on the recorded frames.
    from oc_perception.checkpoint import load_checkpoint

    model = load_checkpoint(perception)
    np.testing.assert_allclose(extract_cli.stream_slots(model, val["frames"][:1]), val["slots"][:1], atol=1e-5)


def test_extract_from_shards_has_no_actions(perception, tmp_path):
    write_shards(moving_squares(3, t=STEPS), str(tmp_path / "sq" / "sq-train-%06d.tar"))
    write_shards(moving_squares(2, t=STEPS, seed=1), str(tmp_path / "sq" / "sq-val-%06d.tar"))
    extract_cli.main(["--checkpoint", str(perception), "--shards", "sq/sq-train-*.tar", "--val-shards",
                      "sq/sq-val-*.tar", "--data-dir", str(tmp_path), "--steps", "8", "--out", str(tmp_path / "o")])
    val = load_split(tmp_path / "o", "val")
    assert "actions" not in val and val["slots"].shape == (2, 8, K, D) and val["segmentations"].shape == (2, 8, 32, 32)
    assert load_meta(tmp_path / "o")["action_dim"] == 0


# ---------------------------------------------------------------------------------------------- training
def train(data_dir, log_dir, steps=6, resume=None, extra=()):
    argv = ["shapes_push", "--data", str(data_dir), "--log-dir", str(log_dir), "model.slot_dim=null",
            "model.num_layers=1", "model.num_heads=2", "model.hidden_dim=32", "model.history=3", "data.burn_in=3",
            "data.rollout=4", "data.batch_size=4", f"trainer.max_steps={steps}", "trainer.ckpt_every=3",
            "trainer.val_every=3", "trainer.log_every=1", "trainer.keep_last=5", "optim.warmup_steps=2", *extra]
    train_cli.main(argv + (["--continue", str(resume)] if resume else []))


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("train") / "full"
    train(data_dir, log_dir)
    return log_dir


def test_train_then_resume_matches_uninterrupted(data_dir, trained, tmp_path):
    train(data_dir, tmp_path / "resumed", resume=trained / "checkpoints" / "step_00000003.pt")
    full = load_training_state(trained / "checkpoints" / "step_00000006.pt")
    resumed = load_training_state(tmp_path / "resumed" / "checkpoints" / "step_00000006.pt")
    assert not (tmp_path / "resumed" / "checkpoints" / "step_00000003.pt").exists()  # it did not start over
    for k, v in full["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    assert torch.equal(full["optimizer"]["state"][0]["exp_avg"], resumed["optimizer"]["state"][0]["exp_avg"])
    model = load_dynamics(trained / "model.safetensors")
    assert (model.history, model.action_dim, model.slot_dim) == (3, 5, D)
    assert list(trained.glob("events.out.tfevents.*")) and (trained / "config.yml").is_file()


@pytest.mark.parametrize("argv, message", [
    (["shapes_push", "--data", "/nonexistent/dyn"], "does not exist"),
    (["shapes_push", "model.slot_dim=7"], "model.slot_dim=7"),
    (["shapes_push", "data.rollout=20"], "at least that long"),
    (["shapes_push", "model.num_layerz=2"], "unknown config key 'model.num_layerz'"),
])
def test_train_bad_input_stops_with_one_line(data_dir, tmp_path, capsys, argv, message):
    if "--data" not in argv:
        argv = argv + ["--data", str(data_dir)]
    with pytest.raises(SystemExit) as e:  # clips that fit the data, unless the case overrides them
        train_cli.main(argv[:1] + ["model.history=3", "data.burn_in=3", "data.rollout=4"] + argv[1:]
                       + ["--log-dir", str(tmp_path / "bad")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and message in err[-1]


# ---------------------------------------------------------------------------------------------- evaluation
def test_evaluate_writes_figures_plot_and_video(trained, tmp_path, capsys):
    out = tmp_path / "eval"
    evaluate_cli.main(["--dynamics", str(trained), "--horizon", "4", "--out", str(out), "--videos", "2"])
    figures = json.loads((out / "metrics.json").read_text())
    assert (out / "metrics.png").stat().st_size > 0 and (out / "rollouts.mp4").stat().st_size > 0
    assert figures["steps"] == [1, 2, 3, 4] and figures["burn_in"] == 3 and figures["trajectories"] == 3
    for row in ("dynamics", "copy_last", "perception"):
        assert all(-1 <= v <= 1 for v in figures[row]["fg_ari"]) and all(0 <= v <= 1 for v in figures[row]["mbo"])
        assert all(v >= 0 for v in figures[row]["slot_mse"])
    assert figures["perception"]["slot_mse"] == [0.0] * 4 and max(figures["copy_last"]["slot_mse"]) > 0
    table = capsys.readouterr().out
    assert "copy-last" in table and "FG-ARI at step 4" in table


def test_evaluate_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        evaluate_cli.main(["--dynamics", str(tmp_path / "missing.safetensors")])
    assert e.value.code == 2 and "not found" in capsys.readouterr().err


def test_extract_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        extract_cli.main(["--out", str(tmp_path), "--shards", "nope-*.tar", "--data-dir", str(tmp_path)])
    assert e.value.code == 2 and "no shards match" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- run time
def test_predictor_rolls_out_the_recent_history():
    model = random_model(action_dim=5, history=3)
    predictor = DynamicsPredictor(model, horizon=4)
    frames, actions = torch.randn(5, K, D), [None, 1, 2, 2, 4]  # actions[t]: the action that led to frame t
    for t in range(5):
        predicted = predictor.update(frames[t].numpy(), actions[t])
    assert predicted.shape == (4, K, D) and predicted.dtype == np.float32
    # The last 3 frames, the actions after them (the future one: the last action repeated).
    expected = model.rollout(frames[None, 2:], torch.tensor([[2, 4, 4, 4, 4, 4]]), steps=4)[0]
    np.testing.assert_allclose(predicted, expected.detach().numpy(), atol=1e-5)
    predictor.reset()
    first = predictor.update(frames[0])  # an episode's first frame: the future actions are "unknown"
    unknown = torch.zeros(1, 4, 5)
    np.testing.assert_allclose(first, model.rollout(frames[None, :1], unknown, steps=4)[0].detach().numpy(),
                               atol=1e-5)
    with pytest.raises(ValueError, match="D=32"):
        predictor.update(torch.randn(K, D + 1))


def test_truncated_data_and_unwritable_out_are_one_line_errors(data_dir, trained, tmp_path, capsys, monkeypatch):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(data_dir, broken)
    data = (broken / "train.npz").read_bytes()
    (broken / "train.npz").write_bytes(data[: len(data) // 3])
    with pytest.raises(SystemExit) as e:
        train(broken, tmp_path / "log")
    assert e.value.code == 2 and "truncated or corrupt" in capsys.readouterr().err
    # The output place is checked before the (slow) evaluation: it never starts.
    (tmp_path / "a_file").write_text("")
    monkeypatch.setattr(evaluate_cli, "evaluate", lambda *a, **k: pytest.fail("evaluation ran"))
    with pytest.raises(SystemExit) as e:
        evaluate_cli.main(["--dynamics", str(trained), "--out", str(tmp_path / "a_file" / "eval")])
    assert e.value.code == 2 and "cannot write there" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- misfits
def test_non_finite_slots_and_a_zero_horizon_are_named(data_dir, trained, tmp_path, capsys, monkeypatch):
    import shutil

    from oc_perception.dynamics.data import save_split

    for split in ("train", "val"):
        copy = tmp_path / split
        shutil.copytree(data_dir, copy)
        arrays = load_split(copy, split, frames=True)
        arrays["slots"][1, 2, 0, 0] = np.nan
        save_split(copy, split, arrays)
        with pytest.raises(SystemExit) as e:
            train(copy, tmp_path / f"log_{split}")
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert e.value.code == 2 and err.startswith(f"error: {copy / f'{split}.npz'}: the slots of 1 of ")
        assert "hold NaN or inf (first: trajectory 1)" in err
    monkeypatch.setattr(evaluate_cli, "evaluate", lambda *a, **k: pytest.fail("evaluation ran"))
    with pytest.raises(SystemExit) as e:
        evaluate_cli.main(["--dynamics", str(trained), "--horizon", "0", "--out", str(tmp_path / "eval")])
    assert e.value.code == 2 and "--horizon 0: must be at least 1" in capsys.readouterr().err


def test_evaluate_refuses_another_perception_model_than_the_datas(data_dir, perception, trained, tmp_path, capsys,
                                                                  monkeypatch):
    import shutil

    torch.manual_seed(1)
    cfg = load_config(None, tiny_overrides("cnn") + ["model.encoder.input_size=64"])
    other = save_checkpoint(SlotContrast(cfg.model), tmp_path / "other.safetensors")
    monkeypatch.setattr(evaluate_cli, "evaluate", lambda *a, **k: pytest.fail("evaluation ran"))
    with pytest.raises(SystemExit) as e:
        evaluate_cli.main(["--dynamics", str(trained), "--checkpoint", str(other), "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"the slots in {data_dir} were made by {perception.resolve()}, not by {other}" in err

    class Ran(Exception):
        pass

    def ran(*args, **kwargs):
        raise Ran

    monkeypatch.setattr(evaluate_cli, "evaluate", ran)  # a copy of the same model is the same model
    with pytest.raises(Ran):
        copy = shutil.copy(perception, tmp_path / "copy.safetensors")
        evaluate_cli.main(["--dynamics", str(trained), "--checkpoint", str(copy), "--out", str(tmp_path / "eval")])


def test_slot_prediction_names_a_dynamics_model_of_another_env(tmp_path):
    import gymnasium as gym

    from oc_perception.dynamics import SlotPrediction, save_dynamics

    path = save_dynamics(random_model(action_dim=5), tmp_path / "dyn.safetensors",
                         metadata={"env": "oc/ShapesPush-v0"})

    class SlotEnv(gym.Env):
        def __init__(self, slot_dim: int, action_space: gym.Space) -> None:
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (K, slot_dim), np.float32)
            self.action_space = action_space
            self.spec = gym.envs.registration.EnvSpec("oc/PandaPush-v0")

    with pytest.raises(ValueError, match="the dynamics model .*dyn.safetensors \\(trained on oc/ShapesPush-v0\\) "
                                         "takes actions of size 5, but oc/PandaPush-v0 acts with Box"):
        SlotPrediction(SlotEnv(D, gym.spaces.Box(-1, 1, (4,), np.float32)), path)
    with pytest.raises(ValueError, match=f"predicts slots \\[K, {D}\\], but oc/PandaPush-v0 observes"):
        SlotPrediction(SlotEnv(D + 1, gym.spaces.Discrete(5)), path)
    with pytest.warns(UserWarning, match="was trained on oc/ShapesPush-v0, but the env is oc/PandaPush-v0"):
        SlotPrediction(SlotEnv(D, gym.spaces.Discrete(5)), path)
