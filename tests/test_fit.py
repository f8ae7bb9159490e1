"""`python -m oc_perception.fit`: one command from an env id to a model, its report and the lines that use it.

The fast tests fit CartPole (a third-party env with no masks and frames of 400 x 600) with the recipe shrunk by
overrides; the slow one fits MiniGrid with the recipe as it is, and checks that an interrupted fit continues
exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from oc_perception.checkpoint import load_training_state
from oc_perception.fit import FitError, main, parse_budget
from oc_perception.fit_report import read_scalars
from test_robustness import one_line_error

# The recipe's model and loop, narrower and on batches of 2 clips: seconds instead of minutes.
TINY = ["model.encoder.cnn_channels=[8, 8, 16]", "model.encoder.feature_dim=16", "model.slot_dim=16",
        "model.decoder.conv_channels=[8, 8]", "data.batch_size=2", "data.val_batch_size=2", "data.num_workers=0",
        "trainer.val_every=2", "trainer.ckpt_every=2", "trainer.log_every=1"]


def fit_argv(out: Path, budget: str = "2", env: str = "CartPole-v1", extra: tuple[str, ...] = ()) -> list[str]:
    return [env, *TINY, "--budget", budget, "--episodes", "3", "--val-episodes", "2", "--out", str(out), *extra]


def test_budget_is_steps_or_a_duration_with_its_unit():
    assert parse_budget("5000").steps == 5000 and parse_budget("5000").seconds is None
    assert parse_budget("30m").seconds == 1800 and parse_budget("1.5h").seconds == 5400
    assert parse_budget("90s").steps is None
    for bad in ("30 min", "0", "2.5", "-3", "1d", ""):
        with pytest.raises(FitError, match="duration with its unit"):
            parse_budget(bad)


def test_episode_length_is_what_half_the_probe_episodes_reach():
    from oc_perception.fit import Probe, episode_length

    length, reason = episode_length(Probe([1, 3, 5, 5, 7, 14, 24, 24], False), 2, "random")
    assert length == 7 and reason.startswith("episode length 7 frames: half of 8 random-policy episodes")
    assert "shortest 1, longest 24+" in reason
    with pytest.raises(FitError, match="end within 1 frame.*pass a --policy that keeps episodes going"):
        episode_length(Probe([1, 1, 1, 2], False), 2, "random")
    with pytest.raises(FitError, match=r"MiniGrid: --policy \S+policies:MiniGridWalk"):
        episode_length(Probe([1, 1, 1, 2], False), 2, "random", "minigrid:MiniGrid-Dynamic-Obstacles-6x6-v0")


@pytest.mark.parametrize("argv, message", [
    (["--budget", "30min"], "--budget '30min'"),
    (["trainer.stop_at=5"], "override trainer.stop_at: fit sets it from --budget"),
    (["model.no_such_key=1"], "unknown config key 'model.no_such_key'"),
    (["--episode-length", "1"], "--episode-length 1: must be at least 2"),
    (["--env-kwargs", "[1, 2]"], "expected a YAML mapping"),
    (["--supervised"], "CartPole-v1 gives no info['segmentation']"),
    (["--policy", "nomodule:Policy"], "--policy 'nomodule:Policy': cannot load it"),
    (["--init-from", "no_model.safetensors"], "--init-from no_model.safetensors: no such file"),
])
def test_bad_input_stops_with_one_line_and_leaves_nothing(argv, message, tmp_path, capsys):
    out = tmp_path / "fit"
    assert message in one_line_error(capsys, main, ["CartPole-v1", "--out", str(out), *argv])
    assert not out.exists()


def test_bad_env_and_an_out_dir_that_is_not_a_fits(tmp_path, capsys):
    assert "cannot make env 'nomodule:Foo-v0'" in one_line_error(capsys, main, ["nomodule:Foo-v0", "--out",
                                                                                 str(tmp_path / "fit")])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert "holds files and no fit.json" in one_line_error(capsys, main, fit_argv(mine))
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_fit_writes_the_report_and_a_rerun_continues(tmp_path, capsys):
    out = tmp_path / "fit"
    main(fit_argv(out))
    printed = capsys.readouterr().out
    assert "frames are squeezed to a square" in printed and "episode length " in printed
    assert "model.num_slots " in printed and "advised from the recorded frames" in printed
    for name in ("masks.png", "masks.mp4", "learning_curve.png", "report.json", "report.md"):
        assert (out / "report" / "step_000002" / name).is_file(), name
    report = json.loads((out / "report" / "step_000002" / "report.json").read_text())
    assert report["step"] == 2 and report["verdict"]
    assert {"loss_total", "label_free/objects_drawn", "label_free/mask_change_static"} <= report["figures"].keys()
    assert not any(k.startswith("decoder/") for k in report["figures"])  # no masks, no FG-ARI
    # The printed lines put the model in the env.
    lines = printed.split("the model in your env:\n")[1].splitlines()[:2]
    scope: dict = {}
    exec("\n".join(line.strip() for line in lines), scope)
    obs, _ = scope["env"].reset(seed=0)
    state = json.loads((out / "fit.json").read_text())
    assert obs.shape == (state["num_slots"], 16) and np.isfinite(obs).all()

    # The same command again: nothing recorded or trained anew. A larger budget trains on from step 2.
    main(fit_argv(out))
    again = capsys.readouterr().out
    assert "recording: done" in again and "training: done (2 steps" in again
    main(fit_argv(out, budget="4"))
    assert "(resumed at step 2)" in capsys.readouterr().err
    assert load_training_state(out / "run" / "checkpoints" / "step_00000004.pt")["step"] == 4
    assert (out / "report" / "step_000004" / "masks.png").is_file() and (out / "report" / "step_000002").is_dir()

    # Other options for the same folder are refused, naming what differs.
    message = one_line_error(capsys, main, fit_argv(out, extra=("--episodes", "5")))
    assert "holds a fit with other options (episodes 3 there, 5 now)" in message


def test_an_env_with_masks_is_scored_and_trains_on_them_when_asked(tmp_path, capsys):
    out = tmp_path / "fit"
    main(fit_argv(out, env="envs:oc/ShapesPush-v0", extra=("--supervised", "--num-slots", "5")))
    assert "model.num_slots 5: --num-slots" in capsys.readouterr().out
    assert json.loads((out / "fit.json").read_text())["options"]["policy"] == "envs.policies:ExplorationPolicy"
    report = json.loads((out / "report" / "step_000002" / "report.json").read_text())
    figures = report["figures"]
    assert {"decoder/video_ari_fg", "decoder/video_mbo_fg", "grouping/video_ari_fg",
            "identity/frames_kept"} <= figures.keys()
    assert "train/loss_seg" in read_scalars(out / "run")  # trained on the masks
    assert report["verdict"].startswith(("sees the objects: video FG-ARI", "not yet: video FG-ARI"))


def test_init_from_starts_training_from_a_models_weights(tmp_path, capsys):
    """--init-from loads a model of the recipe's architecture (another slot count is fine): after 2 steps at the
    warm-up's learning rate the weights are still the given model's, which a fresh start would not give."""
    from oc_perception import SlotContrast
    from oc_perception.checkpoint import load_checkpoint, save_checkpoint
    from oc_perception.config import config_path, load_config

    torch.manual_seed(1)
    given = SlotContrast(load_config(config_path("unsupervised"), [*TINY, "model.num_slots=7"]).model)
    with torch.no_grad():
        for p in given.parameters():
            p.add_(0.5)  # far from any fresh initialisation
    path = save_checkpoint(given, tmp_path / "given.safetensors")
    out = tmp_path / "fit"
    main(fit_argv(out, extra=("--init-from", str(path))))
    trained = dict(load_checkpoint(out / "run" / "model.safetensors").named_parameters())
    for name, p in given.named_parameters():
        torch.testing.assert_close(trained[name], p, atol=0.02, rtol=0, msg=name)
    assert json.loads((out / "fit.json").read_text())["options"]["init_from"] == str(path.resolve())
    capsys.readouterr()
    message = one_line_error(capsys, main, fit_argv(out))  # the same folder without it is another fit
    assert "holds a fit with other options (init_from" in message


def test_a_time_budget_is_timed_once(tmp_path, capsys):
    out = tmp_path / "fit"
    main(fit_argv(out, budget="1s"))
    first = capsys.readouterr().out
    assert "budget 1s: " in first and "s/step (timed here" in first
    steps = json.loads((out / "fit.json").read_text())["budgets"]["1s"]["steps"]
    main(fit_argv(out, budget="1s"))
    assert f"budget 1s: {steps} steps, as timed before" in capsys.readouterr().out


@pytest.mark.slow
def test_fit_minigrid_with_the_recipe_continues_exactly(tmp_path, capsys):
    """The recipe as it is on MiniGrid: 4 steps, then the same command with budget 6 continues to where a straight
    6-step fit ends, bit for bit."""
    pytest.importorskip("minigrid")
    env = "minigrid:MiniGrid-Dynamic-Obstacles-8x8-v0"
    common = ["--episodes", "8", "--val-episodes", "2", "trainer.val_every=2", "trainer.ckpt_every=2"]
    main([env, "--budget", "4", "--out", str(tmp_path / "cut"), *common])
    main([env, "--budget", "6", "--out", str(tmp_path / "cut"), *common])
    main([env, "--budget", "6", "--out", str(tmp_path / "straight"), *common])
    printed = capsys.readouterr().out
    assert "frame size 64x64" in printed and "verdict at step 6" in printed
    cut = load_training_state(tmp_path / "cut" / "run" / "checkpoints" / "step_00000006.pt")
    straight = load_training_state(tmp_path / "straight" / "run" / "checkpoints" / "step_00000006.pt")
    for key, value in straight["model"].items():
        assert torch.equal(value, cut["model"][key]), key
    for name in ("masks.png", "masks.mp4", "learning_curve.png", "report.md"):
        assert (tmp_path / "cut" / "report" / "step_000006" / name).is_file(), name


def test_label_free_verdict_says_not_yet_while_masks_churn():
    from oc_perception.fit_report import verdict

    p = "label_free/"
    assert verdict({p + "objects_drawn": -0.1, p + "mask_change_static": 0.4}).startswith("not yet: the reconstruction "
                                                                                          "does not draw")
    churning = verdict({p + "objects_drawn": 0.58, p + "mask_change_static": 0.72})
    assert churning.startswith("not yet:") and "churn on still pixels (0.72 > 0.1)" in churning
    assert verdict({p + "objects_drawn": 0.6, p + "mask_change_static": 0.03}).startswith("draws the objects (0.60) "
                                                                                         "with steady slots")
