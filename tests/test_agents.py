"""Agents: the slot-set extractor, the state baseline wrapper, configs, and short PPO runs end to end."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO

from agents import demo, ppo
from agents.config import load_agent_config
from agents.envs import make_vec_env
from agents.evaluation import RandomAgent, success_rate
from agents.extractor import SlotSetExtractor
from agents.state import ObjectStateObservation
from oc_perception import SlotContrast
from oc_perception.checkpoint import default_checkpoint, load_checkpoint, save_checkpoint
from oc_perception.config import CONFIG_DIR
from oc_perception.config import ConfigError, load_config
from conftest import tiny_overrides

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import rl_compare  # noqa: E402

CONFIG = CONFIG_DIR / "agents" / "oddoneout_slots.yml"
# 4 envs x 64 steps per rollout, 8 rollouts in 2048 steps; evaluations of 4 episodes: seconds per run.
TINY = ["n_envs=4", "ppo.n_steps=64", "ppo.batch_size=128", "ppo.n_epochs=2", "eval_freq=1024", "eval_episodes=4",
        "extractor.embed_dim=32", "extractor.num_layers=1", "extractor.num_heads=2"]


# ---------------------------------------------------------------------------------------------- extractor
def _slot_space(k: int = 6, d: int = 16, g: int | None = None) -> spaces.Space:
    slots = spaces.Box(-np.inf, np.inf, (k, d), np.float32)
    return slots if g is None else spaces.Dict({"slots": slots, "masks": spaces.Box(0, 1, (k, g, g), np.float32)})


@pytest.mark.parametrize("use_masks", [False, True])
def test_extractor_is_permutation_invariant(use_masks):
    torch.manual_seed(0)
    space = _slot_space(g=16 if use_masks else None)
    extractor = SlotSetExtractor(space, embed_dim=32, num_layers=2, num_heads=4, use_masks=use_masks).eval()
    slots = torch.randn(3, 6, 16)
    obs = {"slots": slots, "masks": torch.rand(3, 6, 16, 16).softmax(dim=1)} if use_masks else slots
    perm = torch.randperm(6)
    permuted = {k: v[:, perm] for k, v in obs.items()} if use_masks else slots[:, perm]
    features = extractor(obs)
    assert features.shape == (3, 32)
    torch.testing.assert_close(extractor(permuted), features, atol=1e-5, rtol=1e-5)
    # ...while the features do depend on the slots (and on the masks, when used).
    other = torch.randn_like(slots)
    assert not torch.allclose(extractor({**obs, "slots": other} if use_masks else other), features)
    if use_masks:
        assert not torch.allclose(extractor({**obs, "masks": obs["masks"].roll(1, dims=-1)}), features)


def test_extractor_mask_moments_give_area_centre_and_spread():
    extractor = SlotSetExtractor(_slot_space(g=16), embed_dim=32, use_masks=True)
    masks = torch.zeros(1, 3, 16, 16)
    masks[0, 0, 0, 15] = 1  # top-right pixel: x = +1 (last column), y = -1 (first row)
    masks[0, 1, 15, 0] = 1
    masks[0, 2, :, :8] = 1  # the left half
    moments = extractor._moments(masks)[0]
    torch.testing.assert_close(moments[0], torch.tensor([1 / 256, 1.0, -1.0, 0.0]))
    torch.testing.assert_close(moments[1], torch.tensor([1 / 256, -1.0, 1.0, 0.0]))
    assert moments[2, 0] == 0.5 and moments[2, 1] < -0.4 and abs(moments[2, 2]) < 1e-6 and moments[2, 3] > 0.5


def test_extractor_rejects_masks_without_a_mask_space():
    with pytest.raises(ValueError, match="use_masks=True needs a Dict"):
        SlotSetExtractor(_slot_space(), use_masks=True)


# ---------------------------------------------------------------------------------------------- state baseline
def test_state_observation_is_the_flattened_object_states():
    env = ObjectStateObservation(gym.make("oc/ShapesPush-v0"))
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    np.testing.assert_array_equal(obs, info["object_states"].reshape(-1))
    for _ in range(3):
        obs, *_, info = env.step(env.action_space.sample())
        assert obs.dtype == np.float32 and obs.shape == env.observation_space.shape
        np.testing.assert_array_equal(obs, info["object_states"].reshape(-1))


def test_state_rows_are_padded_to_the_most_objects_of_the_env_class():
    env = ObjectStateObservation(gym.make("oc/ShapesOddOneOut-v0", num_objects=3), flatten=False)
    columns = len(env.unwrapped.object_state_names)
    assert env.observation_space.shape == (env.unwrapped.max_objects + 1, columns) == (9, columns)
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    np.testing.assert_array_equal(obs[:4], info["object_states"])
    assert not obs[4:].any()
    # More objects: the same space, so a set policy trained on 3 objects can be evaluated on 6.
    six = ObjectStateObservation(gym.make("oc/ShapesOddOneOut-v0", num_objects=6), flatten=False)
    assert six.observation_space == env.observation_space
    obs, info = six.reset(seed=3)
    np.testing.assert_array_equal(obs[:7], info["object_states"])


def test_state_observation_needs_one_of_our_envs():
    with pytest.raises(TypeError, match="needs one of the envs"):
        ObjectStateObservation(gym.make("CartPole-v1"))


# ---------------------------------------------------------------------------------------------- configs
def test_config_loads_and_overrides():
    cfg = load_agent_config(CONFIG, ["ppo.lr=1e-4", "obs=state"])
    assert cfg.env_id == "oc/ShapesOddOneOut-v0" and cfg.ppo.lr == 1e-4 and cfg.obs == "state"


@pytest.mark.parametrize("override, message", [
    ("ppo.learning_rate=1e-4", "unknown config key 'ppo.learning_rate'"),
    ("obs=rgb", "obs='rgb': must be one of slots, pixels, state"),
    ("n_envs=0", "n_envs=0: must be a positive integer"),
    ("ppo.batch_size=100", "ppo.batch_size (100) must divide"),
    ("state_policy=cnn", "state_policy='cnn': must be one of mlp, set"),
    ("first_frame_passes=0", "first_frame_passes=0: must be a positive integer"),
])
def test_config_errors_are_one_line(override, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        ppo.main([str(CONFIG), override, "--log-dir", "unused"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    with pytest.raises(ConfigError, match="unknown config key"):
        load_agent_config(CONFIG, ["extractor.depth=3"])


@pytest.mark.parametrize("state_policy, extractor", [("mlp", "FlattenExtractor"), ("set", "SlotSetExtractor")])
def test_state_policy_picks_the_state_agents_extractor(state_policy, extractor, tmp_path):
    cfg = load_agent_config(CONFIG, [*TINY, "obs=state", f"state_policy={state_policy}"])
    venv = make_vec_env(cfg, "state", cfg.n_envs)
    agent = ppo.build_agent(cfg, venv, tmp_path, torch.device("cpu"))
    assert type(agent.policy.features_extractor).__name__ == extractor
    obs = torch.as_tensor(venv.reset())
    if state_policy == "set":  # rows [B, M, S]: the object order does not matter
        assert obs.ndim == 3
        features = agent.policy.extract_features(obs, agent.policy.features_extractor)
        permuted = agent.policy.extract_features(obs[:, torch.randperm(obs.shape[1])], agent.policy.features_extractor)
        torch.testing.assert_close(features, permuted, rtol=1e-4, atol=1e-5)
    venv.close()


def test_demo_without_the_bundled_checkpoint_says_how_to_get_it(monkeypatch):
    def missing(env_id: str, recipe: str = "default") -> Path:
        raise FileNotFoundError(env_id)

    monkeypatch.setattr(demo, "default_checkpoint", missing)
    with pytest.raises(SystemExit, match=r"shapes_label_free.safetensors\), which is missing; train it: see docs/"):
        demo.main([])
    with pytest.raises(SystemExit, match=r"checkpoints/shapes.safetensors\), which is missing"):
        demo.main(["--recipe", "supervised"])


# ---------------------------------------------------------------------------------------------- PPO end to end
def _train(obs: str, log_dir: Path, checkpoint: Path | None = None) -> ppo.RunResult:
    argv = [str(CONFIG), *TINY, "--obs", obs, "--total-timesteps", "2048", "--log-dir", str(log_dir),
            "--device", "cpu", "--no-progress"]
    return ppo.main(argv + (["--checkpoint", str(checkpoint)] if checkpoint else []))


def _obs_of(result: ppo.RunResult) -> str:
    return json.loads((result.log_dir / "result.json").read_text())["config"]["obs"]


def _check_outputs(result: ppo.RunResult) -> None:
    assert result.model_path == result.log_dir / "model.zip" and result.model_path.is_file()
    assert result.tensorboard_dir.parent == result.log_dir and any(result.tensorboard_dir.glob("events.out.*"))
    assert result.video_path.is_file() and result.video_path.stat().st_size > 0
    assert (result.log_dir / "evaluations.npz").is_file()
    assert [t for t, _ in result.curve] == [1024, 2048]
    # The reported figures are what evaluating the saved agent (and the random policy) gives again.
    cfg = load_agent_config(CONFIG, [*TINY, f"obs={_obs_of(result)}"])
    eval_seed = cfg.seed + ppo.EVAL_SEED_OFFSET
    random_venv = make_vec_env(cfg, "pixels", cfg.n_envs)
    again = success_rate(RandomAgent(random_venv.action_space, cfg.n_envs, eval_seed), random_venv,
                         cfg.eval_episodes, eval_seed, deterministic=False)
    random_venv.close()
    assert again == result.random_success_rate


@pytest.fixture(scope="module")
def perception_checkpoint(tmp_path_factory) -> Path:
    """A tiny random CNN SlotContrast at the envs' 64 px."""
    torch.manual_seed(0)
    model = SlotContrast(load_config(None, tiny_overrides("cnn") + ["model.encoder.input_size=64"]).model)
    return save_checkpoint(model.eval(), tmp_path_factory.mktemp("perception") / "tiny.safetensors")


@pytest.fixture(scope="module")
def slots_run(perception_checkpoint, tmp_path_factory) -> ppo.RunResult:
    return _train("slots", tmp_path_factory.mktemp("slots"), perception_checkpoint)


def test_ppo_on_slots(slots_run):
    _check_outputs(slots_run)


@pytest.mark.parametrize("obs", ["pixels", "state"])
def test_ppo_baselines(obs, tmp_path, capsys):
    result = _train(obs, tmp_path)
    _check_outputs(result)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"oc/ShapesOddOneOut-v0 {obs}: success rate") and "random policy" in line
    assert str(result.tensorboard_dir) in line and str(result.video_path) in line


def _quick(log_dir: Path, *extra: str) -> ppo.RunResult:
    """A state run of a few rollouts, evaluated every rollout."""
    return ppo.main([str(CONFIG), *TINY, "eval_freq=256", "--obs", "state", "--total-timesteps", "512", "--device",
                     "cpu", "--no-progress", "--log-dir", str(log_dir), *extra])


def test_a_finished_ppo_run_is_refused_and_overwrite_replaces_it_whole(tmp_path, capsys):
    log = tmp_path / "run"
    _quick(log)
    before = (log / "model.zip").read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        _quick(log)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and line.startswith(f"error: log dir {log} already holds a run (model.zip")
    assert f"--continue {log}" in line and "--overwrite" in line and (log / "model.zip").read_bytes() == before
    result = _quick(log, "--overwrite")
    assert [p.name for p in log.glob("tensorboard_*")] == ["tensorboard_1"] and result.steps == 512
    assert [t for t, _ in result.curve] == [256, 512]


def test_ctrl_c_saves_the_ppo_model_and_continue_goes_on(tmp_path, capsys, monkeypatch):
    log = tmp_path / "cut"
    update, updates = PPO.train, []

    def interrupted_in_update_2(self):
        updates.append(1)
        if len(updates) == 2:
            raise KeyboardInterrupt
        update(self)

    monkeypatch.setattr(PPO, "train", interrupted_in_update_2)
    with pytest.raises(SystemExit) as exit_info:
        _quick(log, "--total-timesteps", "1024")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 130
    assert line.startswith(f"interrupted: stopped at 512 of 1,024 env steps; saved the policy and its optimiser in "
                           f"{log / 'model.zip'}: go on with --continue {log}")
    assert PPO.load(log / "model.zip", device="cpu").num_timesteps == 512
    monkeypatch.undo()
    result = _quick(log, "--total-timesteps", "1024", "--continue", str(log))
    assert result.steps == 1024 and [t for t, _ in result.curve] == [256, 512, 768, 1024]
    with pytest.raises(SystemExit):  # another config is not the run to go on with
        _quick(log, "--total-timesteps", "2048", "ppo.lr=1e-3", "--continue", str(log))
    assert "was trained with another config (differs in: ppo)" in capsys.readouterr().err


def test_saved_agent_loads_and_evaluates(slots_run, perception_checkpoint, tmp_path):
    cfg = load_agent_config(CONFIG, [*TINY, "obs=slots"])
    venv = make_vec_env(cfg, "slots", 2, load_checkpoint(perception_checkpoint))
    agent = ppo.build_agent(cfg, venv, tmp_path, torch.device("cpu"))
    agent.save(tmp_path / "agent.zip")
    loaded = PPO.load(tmp_path / "agent.zip", device="cpu")
    assert isinstance(loaded.policy.features_extractor, SlotSetExtractor)
    for key, value in agent.policy.state_dict().items():
        torch.testing.assert_close(loaded.policy.state_dict()[key], value, rtol=0, atol=0)
    obs = venv.reset()
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], agent.predict(obs, deterministic=True)[0])
    # The agent the CLI saved evaluates like any SB3 agent, beside the random reference.
    trained = PPO.load(slots_run.model_path, device="cpu")
    first = success_rate(trained, venv, episodes=2, seed=0)
    assert success_rate(trained, venv, episodes=2, seed=0) == first  # seeded: the same episodes again
    venv.close()


def test_success_rate_tells_a_solver_from_doing_nothing():
    from envs.policies import scripted_solver
    from stable_baselines3.common.vec_env import DummyVecEnv

    venv = DummyVecEnv([lambda: gym.make("oc/ShapesReach-v0", max_episode_steps=60)] * 2)
    solvers = [scripted_solver(env) for env in venv.envs]

    class Solver:
        def predict(self, observation, state=None, episode_start=None, deterministic=True):
            return np.array([solve(None, None) for solve in solvers]), None

    class Idle:
        def predict(self, observation, state=None, episode_start=None, deterministic=True):
            return np.zeros(2, dtype=np.int64), None  # action 0: no-op

    assert success_rate(Solver(), venv, episodes=4, seed=0) == 1.0
    assert success_rate(Idle(), venv, episodes=4, seed=0) == 0.0
    venv.close()


def test_run_result_is_read_back_only_for_the_same_run(slots_run, perception_checkpoint, tmp_path):
    cfg = load_agent_config(CONFIG, [*TINY, "obs=slots", "total_timesteps=2048"])
    loaded = ppo.RunResult.load(slots_run.log_dir, cfg, perception_checkpoint)
    assert loaded == slots_run
    assert ppo.RunResult.load(slots_run.log_dir, load_agent_config(CONFIG, [*TINY, "obs=slots", "seed=1",
                                                                            "total_timesteps=2048"]),
                              perception_checkpoint) is None
    assert ppo.RunResult.load(slots_run.log_dir, cfg, None) is None  # another perception model (the bundled one)
    # The perception model counts by content: a copy elsewhere is the same run, a retrained file is not.
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(perception_checkpoint.read_bytes())
    assert ppo.RunResult.load(slots_run.log_dir, cfg, copy) == slots_run
    model = load_checkpoint(copy)
    with torch.no_grad():
        model.initial_slots.add_(1.0)
    save_checkpoint(model, copy)
    assert ppo.RunResult.load(slots_run.log_dir, cfg, copy) is None


def test_first_frame_passes_reach_the_slot_envs_and_count_when_set(slots_run, perception_checkpoint):
    cfg = load_agent_config(CONFIG, [*TINY, "obs=slots", "total_timesteps=2048", "first_frame_passes=3"])
    venv = make_vec_env(cfg, "slots", 2, load_checkpoint(perception_checkpoint))
    assert venv.encoder.first_frame_passes == 3
    venv.close()
    # A run trained with the checkpoint's setting (the key unset) is another run than one with 3 passes.
    assert ppo.RunResult.load(slots_run.log_dir, cfg, perception_checkpoint) is None


def test_state_policy_counts_only_for_state_runs(slots_run, perception_checkpoint, tmp_path):
    cfg = load_agent_config(CONFIG, [*TINY, "obs=slots", "total_timesteps=2048"])
    record = json.loads((slots_run.log_dir / "result.json").read_text())
    older = tmp_path / "older"  # a result written before state_policy existed
    older.mkdir()
    del record["config"]["state_policy"]
    (older / "result.json").write_text(json.dumps(record))
    assert ppo.RunResult.load(older, cfg, perception_checkpoint) is not None
    assert ppo.RunResult.load(older, load_agent_config(CONFIG, [*TINY, "obs=slots", "total_timesteps=2048",
                                                                "state_policy=mlp"]), perception_checkpoint)
    record["config"]["obs"] = "state"  # a state run: its policy is part of what it trained
    (older / "result.json").write_text(json.dumps(record))
    assert ppo.RunResult.load(older, load_agent_config(CONFIG, [*TINY, "obs=state", "total_timesteps=2048"]),
                              perception_checkpoint) is None


def test_a_damaged_run_result_means_training_again(slots_run, perception_checkpoint, tmp_path, capsys):
    cfg = load_agent_config(CONFIG, [*TINY, "obs=slots", "total_timesteps=2048"])
    damaged = tmp_path / "run"
    damaged.mkdir()
    text = (slots_run.log_dir / "result.json").read_text()
    (damaged / "result.json").write_text(text[: len(text) // 2])
    assert ppo.RunResult.load(damaged, cfg, perception_checkpoint) is None
    assert "is not JSON" in capsys.readouterr().out


def test_rl_compare_reuses_finished_runs(tmp_path, monkeypatch, capsys):
    argv = ["--configs", str(CONFIG), "--obs", "state", "--seeds", "0", "--total-timesteps", "1024",
            "--out", str(tmp_path), "--reuse", "--device", "cpu", *TINY]
    rl_compare.main(argv)
    first = (tmp_path / "results.md").read_text()
    assert "| oc/ShapesOddOneOut-v0 | state | 1,024 | 1 |" in first and (tmp_path / "learning_curves.png").is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(rl_compare, "train", no_training)
    rl_compare.main(argv)
    assert "(read from its result.json)" in capsys.readouterr().out
    assert (tmp_path / "results.md").read_text() == first
    # --table-only: seed 1 was never trained, so the table has the one finished seed and says what it left out.
    table_only = [a for a in argv if a != "--reuse"] + ["--table-only"]
    table_only[table_only.index("--seeds") + 1: table_only.index("--seeds") + 2] = ["0", "1"]
    rl_compare.main(table_only)
    assert "state seed 1: left out (no finished run" in capsys.readouterr().out
    assert (tmp_path / "results.md").read_text() == first
    with pytest.raises(SystemExit, match="no finished run of these configs"):
        rl_compare.main([*table_only, "ppo.lr=1e-3"])  # another config: nothing in OUT matches


@pytest.mark.parametrize("state_policy", ["mlp", "set"])
def test_env_kwargs_and_held_out_scenes(state_policy, tmp_path):
    # A bad constructor argument stops at the config, before any training.
    with pytest.raises(ConfigError, match="env_kwargs=.*does not make oc/ShapesOddOneOut-v0"):
        load_agent_config(CONFIG, [*TINY, "env_kwargs={colors: [no-such-colour]}"])
    train_colours, test_colours = "[red, green, blue, yellow]", "[magenta, cyan, orange, purple]"
    argv = ["--configs", str(CONFIG), "--obs", "state", "--seeds", "0", "--total-timesteps", "1024",
            "--out", str(tmp_path), "--device", "cpu", "--test-env-kwargs", f"{{colors: {test_colours}}}",
            "--test-env-kwargs", "{num_objects: 6}", *TINY, f"state_policy={state_policy}",
            f"env_kwargs={{colors: {train_colours}, num_objects: [3, 4]}}"]
    rl_compare.main(argv)
    text = (tmp_path / "results.md").read_text()
    assert "held-out {colors: [magenta, cyan, orange, purple]}" in text.splitlines()[0]
    assert (tmp_path / "held_out.png").stat().st_size > 0
    colours_cell, objects_cell = text.splitlines()[2].split("|")[-3:-1]
    assert "n/a" not in colours_cell
    if state_policy == "mlp":  # more objects than in training give a longer flat observation: said, not crashed on
        assert objects_cell.startswith(" n/a: other observation shape (random ")
    else:  # the rows are padded to the env's most objects: the set policy takes 6 objects
        assert re.fullmatch(r" \d\.\d\d ± 0\.00 \(random \d\.\d\d\) ", objects_cell), objects_cell
    # The random policy's held-out figure is what evaluating it in scenes of the held-out colours gives.
    cfg = load_agent_config(CONFIG, [*TINY, f"env_kwargs={{colors: {test_colours}, num_objects: [3, 4]}}",
                                     "obs=state", f"state_policy={state_policy}"])
    venv = make_vec_env(cfg, "state", cfg.n_envs)
    from envs.palette import COLOR_NAMES

    assert all({COLOR_NAMES[c] for c in env.unwrapped.colors} == {"magenta", "cyan", "orange", "purple"}
               for env in venv.envs)
    seed = cfg.seed + ppo.EVAL_SEED_OFFSET
    expected = success_rate(RandomAgent(venv.action_space, cfg.n_envs, seed), venv, cfg.eval_episodes, seed,
                            deterministic=False)
    assert f"(random {expected:.2f}) |" in text.splitlines()[2]


def test_demo_compares_slots_with_pixels_and_reuses_finished_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "BUDGET", 1024)
    monkeypatch.setattr(demo, "LOG_DIR", tmp_path)
    monkeypatch.setattr(demo, "load_agent_config", lambda path, overrides=(): load_agent_config(
        path, [*TINY, "eval_episodes=2", *overrides]))
    demo.main([])
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    slots = json.loads((tmp_path / "slots" / "result.json").read_text())
    pixels = json.loads((tmp_path / "pixels" / "result.json").read_text())
    assert f"slots {slots['success_rate']:.2f}, pixels {pixels['success_rate']:.2f}" in last
    # --recipe supervised: the slot run of the supervised model in its own folder, the same pixel run.
    demo.main(["--recipe", "supervised"])
    out = capsys.readouterr().out
    assert "training PPO on slots" in out and "PPO on pixels: read the finished run" in out
    cfg = demo.load_agent_config(demo.CONFIG, ["obs=slots", f"total_timesteps={demo.BUDGET}"])
    supervised = default_checkpoint("oc/ShapesOddOneOut-v0", "supervised")
    assert ppo.RunResult.load(tmp_path / "slots_supervised", cfg, supervised) is not None
    assert ppo.RunResult.load(tmp_path / "slots_supervised", cfg, None) is None  # the default is the label-free one
    # A pixel run reads no perception model: any checkpoint finds it.
    pixels_cfg = demo.load_agent_config(demo.CONFIG, ["obs=pixels", f"total_timesteps={demo.BUDGET}"])
    assert ppo.RunResult.load(tmp_path / "pixels", pixels_cfg, supervised) is not None
    assert ppo.RunResult.load(tmp_path / "slots", cfg, None) is not None  # the default run is kept
    monkeypatch.setattr(demo.ppo, "train", lambda *a, **k: pytest.fail("a finished run was trained again"))
    demo.main([])
    assert capsys.readouterr().out.count("read the finished run") == 2


def test_slot_probe_reads_what_is_linearly_encoded_and_nothing_else():
    from slot_probe import probe

    rng = np.random.default_rng(0)
    n = 600
    u = rng.uniform(-1, 1, n)
    color = rng.integers(0, 4, n)
    noise_color = rng.integers(0, 4, n)
    x = np.c_[u, np.eye(4)[color], rng.normal(size=(n, 3))]  # slots: u and the colour one-hot are in them
    y = np.c_[u, rng.uniform(-1, 1, n), color, noise_color].astype(np.float32)
    rows = {name: (metric, score, deep) for name, metric, score, deep, _ in
            probe(x, y, ("u", "v", "color_id", "shape_id"), 0, mlp_steps=300)}
    assert rows["u"][0] == "R^2" and rows["u"][1] > 0.99
    assert rows["v"][1] < 0.1  # not in the slots
    assert rows["color_id"][:2] == ("accuracy", 1.0) and rows["color_id"][2] > 0.95
    assert rows["shape_id"][1] < 0.4 and rows["shape_id"][2] < 0.45  # chance is 0.25: neither probe invents it


def test_slot_probe_mlp_reads_what_a_linear_probe_cannot():
    from slot_probe import probe

    rng = np.random.default_rng(1)
    x = rng.normal(size=(800, 4))
    xor = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(np.float32)  # no linear read-out: a sign product
    (_, _, linear, deep, _), = probe(x, xor[:, None], ("is_target",), 0, mlp_steps=300)
    assert linear < 0.65 and deep > 0.85


def test_slot_probe_scores_on_held_out_episodes():
    # Frames of one episode are near-copies: scored on pairs of its training episodes, a probe recalls an
    # episode's labels without reading anything; held-out episodes leave it at chance.
    from slot_probe import probe

    rng = np.random.default_rng(2)
    episodes = np.repeat(np.arange(40), 15)
    x = rng.normal(size=(40, 48))[episodes] + 0.01 * rng.normal(size=(600, 48))  # one vector per episode
    label = rng.integers(0, 2, 40)[episodes].astype(np.float32)  # a label per episode, unrelated to x
    (_, _, leaked, _, _), = probe(x, label[:, None], ("is_target",), 0, mlp_steps=1)
    (_, _, held_out, _, _), = probe(x, label[:, None], ("is_target",), 0, groups=episodes, mlp_steps=1)
    assert leaked > 0.9 and held_out < 0.75
