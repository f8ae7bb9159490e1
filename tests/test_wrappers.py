"""Slot observation wrappers: single, Gymnasium vector (both autoreset modes) and SB3, plus slot consistency.

A tiny random CNN checkpoint and a small image env with random episode lengths keep this fast; the vector
wrappers are checked step for step against one single-env wrapper per sub-env.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from stable_baselines3.common.vec_env import DummyVecEnv

import oc_perception.wrappers as wrappers_module
from oc_perception import SlotContrast
from oc_perception.checkpoint import default_checkpoint, load_checkpoint, save_checkpoint
from oc_perception.config import load_config
from oc_perception.consistency import SlotConsistency, best_iou_slots, slot_identity_stats
from oc_perception.sb3 import VecSlotObservation
from oc_perception.wrappers import SlotObservation, VectorSlotObservation, make
from conftest import tiny_overrides

TEST_ID = "oc_test/TinyImage-v0"
K, D, G = 4, 32, 8  # tiny CNN: 4 slots of dim 32, 32 px input with patch size 4 -> 8 x 8 grid


class TinyImageEnv(gym.Env):
    """Two squares on a grey 16 x 16 canvas, moving at random; episodes of 1 to ``max_len`` steps.

    ``obs_kind``: "image" (uint8 RGB observations), "state" (float square positions; frames from ``render()``),
    "mission" (a dict of positions and a text, as MiniGrid's; frames from ``render()``), "rgba" or "float" (frames
    the model cannot take). ``info["segmentation"]``: int32 [16, 16], ids 1 and 2.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = None, obs_kind: str = "image", max_len: int = 4) -> None:
        self.render_mode, self.obs_kind, self.max_len = render_mode, obs_kind, max_len
        self.observation_space = {
            "image": spaces.Box(0, 255, (16, 16, 3), np.uint8),
            "state": spaces.Box(0, 16, (4,), np.float32),
            "rgba": spaces.Box(0, 255, (16, 16, 4), np.uint8),
            "float": spaces.Box(0, 1, (16, 16, 3), np.float32),
            "mission": spaces.Dict({"state": spaces.Box(0, 16, (4,), np.float32),
                                    "mission": spaces.Text(40, charset="abcdefghijklmnopqrstuvwxyz ")}),
        }[obs_kind]
        self.action_space = spaces.Discrete(2)

    def _segmentation(self) -> np.ndarray:
        seg = np.zeros((16, 16), np.int32)
        for i, (x, y) in enumerate(self._pos):
            seg[y:y + 5, x:x + 5] = i + 1
        return seg

    def _frame(self) -> np.ndarray:
        colours = np.array([[90, 90, 90], [230, 40, 40], [40, 80, 230]], np.uint8)
        return colours[self._segmentation()]

    def _image(self) -> np.ndarray:
        """The frame in the format of ``obs_kind`` (RGB for "state")."""
        frame = self._frame()
        if self.obs_kind == "rgba":
            return np.concatenate([frame, np.full((16, 16, 1), 255, np.uint8)], axis=-1)
        return frame.astype(np.float32) / 255 if self.obs_kind == "float" else frame

    def _obs(self) -> np.ndarray | dict[str, Any]:
        state = self._pos.reshape(-1).astype(np.float32)
        if self.obs_kind == "mission":
            return {"state": state, "mission": "reach the red square"}
        return state if self.obs_kind == "state" else self._image()

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self._frame() if self.obs_kind == "mission" else self._image()

    def _info(self) -> dict[str, Any]:
        return {"segmentation": self._segmentation()}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t, self._len = 0, int(self.np_random.integers(1, self.max_len + 1))
        self._pos = self.np_random.integers(0, 12, (2, 2))
        return self._obs(), self._info()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self._t += 1
        self._pos = np.clip(self._pos + self.np_random.integers(-2, 3, (2, 2)) + int(action), 0, 11)
        ended = self._t >= self._len
        return self._obs(), 0.0, ended and self._len % 2 == 1, ended and self._len % 2 == 0, self._info()


def _make(env_cls: type[gym.Env], wrappers=(), **kwargs) -> gym.Env:
    """Entry point like ``envs.registration``'s: ``partial(_make, EnvClass)``, applying ``wrappers`` inside."""
    env = env_cls(**kwargs)
    for wrapper in wrappers:
        env = wrapper(env)
    return env


if TEST_ID not in gym.registry:
    gym.register(TEST_ID, entry_point=functools.partial(_make, TinyImageEnv), max_episode_steps=50)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    torch.manual_seed(0)
    model = SlotContrast(load_config(None, tiny_overrides("cnn")).model)
    return str(save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"))


@pytest.fixture(scope="module")
def model(ckpt) -> SlotContrast:
    return load_checkpoint(ckpt)


def first_frame_slots(model: SlotContrast, frame: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out, _ = model.step(model.preprocess(frame[None]), model.init_state(1))
    return out["slots"][0].numpy()


# ------------------------------------------------------------------------------------------- single env
@pytest.mark.parametrize("include_masks", [False, True])
def test_check_env(ckpt, include_masks):
    env = SlotObservation(TinyImageEnv("rgb_array", max_len=50), checkpoint=ckpt, device="cpu",
                          include_masks=include_masks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # check_env warns that a wrapper is not the unwrapped env
        check_env(env, skip_render_check=True)
    expected = spaces.Box(-np.inf, np.inf, (K, D), np.float32)
    if include_masks:
        expected = spaces.Dict({"slots": expected, "masks": spaces.Box(0, 1, (K, G, G), np.float32)})
    assert env.observation_space == expected
    assert env.encoder.device == torch.device("cpu")


def test_attention_masks_are_the_steps_own_and_skip_the_decoder(model, monkeypatch):
    env = SlotObservation(TinyImageEnv("rgb_array", max_len=50), checkpoint=model, include_masks=True,
                          mask_source="attention")
    grid = model.grid
    assert env.observation_space["masks"] == spaces.Box(0, 1, (K, grid, grid), np.float32)
    obs, _ = env.reset(seed=1)
    frames, masks = [env.unwrapped.render()], [obs["masks"]]

    def no_decoder(*args, **kwargs):
        raise AssertionError("attention masks must not run the decoder")

    monkeypatch.setattr(model.decoder, "forward", no_decoder)
    for _ in range(3):
        obs, *_ = env.step(0)
        frames.append(env.unwrapped.render())
        masks.append(obs["masks"])
    monkeypatch.undo()
    with torch.inference_mode():
        out, _ = model(model.preprocess(np.stack(frames)[None]))
    np.testing.assert_allclose(np.stack(masks), out["grouping_masks"][0].reshape(4, K, grid, grid).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="mask_source must be one of"):
        SlotObservation(TinyImageEnv("rgb_array"), checkpoint=model, include_masks=True, mask_source="alpha")


def test_slots_match_clip_forward_and_reset_restarts(model):
    env = SlotObservation(TinyImageEnv("rgb_array", max_len=50), checkpoint=model, include_masks=True)
    obs, _ = env.reset(seed=1)
    slots, masks, frames = [obs["slots"]], [obs["masks"]], [env.unwrapped.render()]
    for _ in range(5):
        obs, *_ = env.step(0)
        slots.append(obs["slots"])
        masks.append(obs["masks"])
        frames.append(env.unwrapped.render())
    with torch.inference_mode():
        out, _ = model(model.preprocess(np.stack(frames)[None]))
    np.testing.assert_allclose(np.stack(slots), out["slots"][0].numpy(), atol=1e-5)
    np.testing.assert_allclose(np.stack(masks), out["decoder_masks"][0].reshape(6, K, G, G).numpy(), atol=1e-5)
    # After reset the stream starts over: the slots of a fresh model's first frame.
    obs, _ = env.reset(seed=7)
    np.testing.assert_allclose(obs["slots"], first_frame_slots(model, env.unwrapped.render()), atol=1e-5)


def test_dynamics_predicts_the_next_slots(model):
    """With dynamics, info["predicted_slots"] is the rollout of the slots seen so far and the actions taken."""
    from oc_perception.dynamics import SlotDynamics, SlotPrediction

    torch.manual_seed(0)
    dynamics = SlotDynamics(D, num_layers=1, hidden_dim=16, history=3, action_dim=3)
    torch.nn.init.normal_(dynamics.out_proj.weight, std=0.1)  # not the copy-last identity of a fresh model
    env = SlotPrediction(SlotObservation(TinyImageEnv("rgb_array", max_len=50), checkpoint=model), dynamics,
                         horizon=4)
    obs, info = env.reset(seed=2)
    slots, actions = [obs], []
    for action in (1, 2, 0, 1):
        obs, _, _, _, info = env.step(action)
        slots.append(obs)
        actions.append(action)
    assert info["predicted_slots"].shape == (4, K, D)
    history = torch.as_tensor(np.stack(slots[-3:]))[None]
    past = torch.tensor(actions[-2:])
    future = torch.full((4,), actions[-1])  # after the newest frame and 3 predicted ones: the last action again
    with torch.inference_mode():
        expected = dynamics.rollout(history, torch.cat([past, future])[None], steps=4)[0]
    np.testing.assert_allclose(info["predicted_slots"], expected.numpy(), atol=1e-5)


def test_frames_from_render_for_state_observations(model):
    env = SlotObservation(TinyImageEnv("rgb_array", obs_kind="state"), checkpoint=model)
    obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(obs, first_frame_slots(model, env.unwrapped.render()), atol=1e-5)


def test_error_without_rgb_source(model):
    with pytest.raises(ValueError, match='render_mode="rgb_array"'):
        SlotObservation(TinyImageEnv(None, obs_kind="state"), checkpoint=model)
    with pytest.raises(ValueError, match='render_mode="rgb_array"'):
        SlotObservation(TinyImageEnv(None, obs_kind="rgba"), checkpoint=model)


@pytest.mark.parametrize("obs_kind", ["rgba", "float"])
def test_error_for_frames_the_model_cannot_take(model, obs_kind):
    env = SlotObservation(TinyImageEnv("rgb_array", obs_kind=obs_kind), checkpoint=model)
    with pytest.raises(ValueError, match=r"uint8 RGB frames \[H, W, 3\]"):
        env.reset(seed=0)


def test_spec_rebuilds_and_make_renders_state_envs(ckpt):
    env = make(TEST_ID, obs_kind="state", wrappers=[functools.partial(SlotObservation, checkpoint=ckpt)])
    assert env.unwrapped.render_mode == "rgb_array"  # made with it, since the observations are not images
    obs, _ = env.reset(seed=0)
    assert obs.shape == (K, D) and obs.dtype == np.float32
    rebuilt = gym.make(env.spec)
    assert isinstance(rebuilt, SlotObservation) and rebuilt.spec.additional_wrappers[-1].kwargs["checkpoint"] == ckpt
    np.testing.assert_allclose(rebuilt.reset(seed=0)[0], obs, atol=1e-6)


@pytest.mark.filterwarnings("ignore:cpu has no native bfloat16")
def test_model_instance_and_precision_are_recorded(model):
    env = SlotObservation(gym.make(TEST_ID), checkpoint=model, precision="bf16")
    kwargs = env.spec.additional_wrappers[-1].kwargs
    assert kwargs["checkpoint"] is model and kwargs["precision"] == "bf16"  # the model by reference, not a copy
    rebuilt = gym.make(env.spec)
    assert rebuilt.encoder.model is model and rebuilt.encoder.precision == "bf16"
    bf16 = env.reset(seed=3)[0]
    np.testing.assert_array_equal(rebuilt.reset(seed=3)[0], bf16)
    fp32 = SlotObservation(gym.make(TEST_ID), checkpoint=model).reset(seed=3)[0]
    assert not np.array_equal(bf16, fp32)  # autocast ran
    np.testing.assert_allclose(bf16, fp32, atol=0.05 * np.abs(fp32).max())


def test_unknown_precision_is_refused(model):
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        SlotObservation(gym.make(TEST_ID), checkpoint=model, precision="fp16")


def test_first_frame_passes_option(ckpt, model):
    """``first_frame_passes=3`` gives the slots of the same weights with ``slot_attention.first_frame_passes=3``,
    in the single and the batched wrappers, without changing a shared model; a bad value is refused."""
    settled = load_checkpoint(ckpt)
    settled.cfg.slot_attention.first_frame_passes = 3

    def rollout(env: gym.Env) -> np.ndarray:
        obs, _ = env.reset(seed=5)
        return np.stack([obs] + [env.step(0)[0] for _ in range(4)])

    option = rollout(SlotObservation(gym.make(TEST_ID), checkpoint=model, first_frame_passes=3))
    np.testing.assert_allclose(option, rollout(SlotObservation(gym.make(TEST_ID), checkpoint=settled)), atol=1e-5)
    plain = rollout(SlotObservation(gym.make(TEST_ID), checkpoint=model))
    assert not np.allclose(option[0], plain[0], atol=1e-3)  # the extra passes moved the first frame's slots
    assert model.cfg.slot_attention.first_frame_passes == 1
    vector = VectorSlotObservation(SyncVectorEnv([lambda: gym.make(TEST_ID)] * 2), checkpoint=model,
                                   first_frame_passes=3)
    np.testing.assert_allclose(vector.reset(seed=5)[0][0], option[0], atol=1e-5)
    env = SlotObservation(gym.make(TEST_ID), checkpoint=model, first_frame_passes=3)
    assert gym.make(env.spec).encoder.first_frame_passes == 3
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="first_frame_passes must be an int >= 1"):
            SlotObservation(gym.make(TEST_ID), checkpoint=model, first_frame_passes=bad)


def test_default_checkpoint_from_entry_point_wrappers(ckpt, monkeypatch):
    # gym.make sets env.spec only after the entry point returns: the id is found through the registry.
    monkeypatch.setitem(wrappers_module.DEFAULT_CHECKPOINTS, TEST_ID, "tiny.safetensors")
    monkeypatch.setattr("oc_perception.checkpoint.loader.default_checkpoint", {TEST_ID: ckpt}.__getitem__)
    env = gym.make(TEST_ID, wrappers=[functools.partial(SlotObservation, device="cpu")])
    assert env.reset(seed=0)[0].shape == (K, D)


def test_gym_make_our_envs(ckpt):
    import envs  # noqa: F401  (registers the oc/ ids; part of this repository, so an import error must fail)

    env = gym.make("oc/ShapesPush-v0", wrappers=[functools.partial(SlotObservation, checkpoint=ckpt)])
    obs, _ = env.reset(seed=0)
    assert obs.shape == (K, D)
    assert default_checkpoint("oc/ShapesPush-v0").is_file()  # the bundled checkpoint ships with the package
    env = gym.make("oc/ShapesPush-v0", max_episode_steps=5, wrappers=[SlotObservation])
    assert env.observation_space.contains(env.reset(seed=0)[0])


def test_slot_consistency_on_our_envs(ckpt):
    import envs  # noqa: F401
    # Outside TimeLimit (oc_perception.make puts the wrappers there), so truncated episodes report too.
    env = SlotConsistency(make("oc/ShapesPush-v0", max_episode_steps=5,
                               wrappers=[functools.partial(SlotObservation, checkpoint=ckpt, include_masks=True)]))
    obs, info = env.reset(seed=0)
    masks, segs = [obs["masks"]], [info["segmentation"]]
    infos = []
    for _ in range(5):
        obs, _, _, _, info = env.step(0)
        masks.append(obs["masks"])
        segs.append(info["segmentation"])
        infos.append(info)
    assert "slot_consistency" not in infos[-2]
    # The wrapper reports what the statistics of the episode's own masks and segmentations are.
    expected = slot_identity_stats(np.stack(masks), np.stack(segs))
    assert infos[-1]["slot_consistency"] == pytest.approx(expected)


def test_cartpole_renders_frames(ckpt):
    pytest.importorskip("pygame")  # CartPole's rgb_array rendering
    env = make("CartPole-v1", wrappers=[functools.partial(SlotObservation, checkpoint=ckpt)])
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert env.observation_space.contains(env.step(0)[0])


def test_compile_is_accepted(model, monkeypatch):
    compiled = []

    def fake_compile(fn):  # compiling for real takes minutes on a CPU: check the wrapper uses what compile gives
        def wrapped(*args, **kwargs):
            compiled.append(args[0].shape)
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(torch, "compile", fake_compile)
    env = SlotObservation(TinyImageEnv("rgb_array"), checkpoint=model, compile=True)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    assert len(compiled) == 2, "every frame goes through the compiled step"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiling on CPU takes minutes; this runs on a GPU")
def test_compiled_bf16_step_on_gpu(model):
    env = SlotObservation(TinyImageEnv("rgb_array"), checkpoint=model, device="cuda", compile=True,
                          precision="bf16")
    assert env.observation_space.contains(env.reset(seed=0)[0])


# ------------------------------------------------------------------------------------------- vector envs
def reference_rollout(model, seed: int, actions: np.ndarray, same_step: bool, include_masks: bool = False,
                      **env_kwargs) -> tuple[list, list]:
    """One single-env wrapper driven like a vector sub-env: per step (obs, final obs or None)."""
    env = SlotObservation(TinyImageEnv("rgb_array", **env_kwargs), checkpoint=model, include_masks=include_masks)
    obs, _ = env.reset(seed=seed)
    observations, finals, pending_reset = [obs], [None], False
    for action in actions:
        final = None
        if pending_reset:  # NEXT_STEP: this step resets instead of stepping
            obs, _ = env.reset()
            pending_reset = False
        else:
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                if same_step:
                    final, (obs, _) = obs, env.reset()
                else:
                    pending_reset = True
        observations.append(obs)
        finals.append(final)
    return observations, finals


@pytest.mark.parametrize("mode,vector_cls,obs_kind", [
    (AutoresetMode.NEXT_STEP, SyncVectorEnv, "image"),
    (AutoresetMode.SAME_STEP, SyncVectorEnv, "image"),
    (AutoresetMode.NEXT_STEP, SyncVectorEnv, "state"),
    (AutoresetMode.SAME_STEP, AsyncVectorEnv, "image"),
])
def test_vector_matches_single_wrappers(model, mode, vector_cls, obs_kind):
    n, steps = 3, 12
    actions = np.random.default_rng(0).integers(0, 2, (steps, n))
    venv = vector_cls([functools.partial(TinyImageEnv, "rgb_array", obs_kind=obs_kind)] * n, autoreset_mode=mode)
    env = VectorSlotObservation(venv, checkpoint=model)
    assert env.single_observation_space == spaces.Box(-np.inf, np.inf, (K, D), np.float32)
    assert env.observation_space.shape == (n, K, D)
    same_step = mode == AutoresetMode.SAME_STEP
    refs = [reference_rollout(model, 10 + i, actions[:, i], same_step, obs_kind=obs_kind) for i in range(n)]
    obs, _ = env.reset(seed=[10 + i for i in range(n)])
    np.testing.assert_allclose(obs, np.stack([r[0][0] for r in refs]), atol=1e-5)
    n_finals = n_ends = 0
    for t in range(steps):
        obs, _, terminated, truncated, infos = env.step(actions[t])
        n_ends += int(np.sum(terminated | truncated))
        assert env.observation_space.contains(obs)
        np.testing.assert_allclose(obs, np.stack([r[0][t + 1] for r in refs]), atol=1e-5)
        for i in range(n):
            final = refs[i][1][t + 1]
            assert (final is not None) == bool(infos.get("_final_obs", np.zeros(n, bool))[i])
            if final is not None:
                np.testing.assert_allclose(infos["final_obs"][i], final, atol=1e-5)
                n_finals += 1
    assert n_ends >= 3 and n_finals == (n_ends if same_step else 0)  # episodes of 1-4 steps: several ends
    env.close()


def test_vector_same_step_without_frames_of_final_observations(model):
    venv = SyncVectorEnv([functools.partial(TinyImageEnv, "rgb_array", obs_kind="state", max_len=1)] * 2,
                         autoreset_mode=AutoresetMode.SAME_STEP)
    with pytest.warns(UserWarning, match="final_obs"):
        env = VectorSlotObservation(venv, checkpoint=model, include_masks=True)
    env.reset(seed=0)
    obs, _, _, _, infos = env.step(np.zeros(2, int))
    assert env.observation_space.contains(obs) and list(infos["final_obs"]) == [None, None]


def test_vector_errors(model):
    with pytest.raises(ValueError, match='render_mode="rgb_array"'):
        VectorSlotObservation(SyncVectorEnv([functools.partial(TinyImageEnv, None, obs_kind="state")]),
                              checkpoint=model)
    with pytest.raises(ValueError, match="DISABLED"):
        VectorSlotObservation(SyncVectorEnv([TinyImageEnv], autoreset_mode=AutoresetMode.DISABLED), checkpoint=model)


@pytest.mark.parametrize("include_masks", [False, True])
def test_sb3_matches_single_wrappers(model, include_masks):
    n, steps = 3, 12
    actions = np.random.default_rng(1).integers(0, 2, (steps, n))
    venv = DummyVecEnv([functools.partial(TinyImageEnv, "rgb_array")] * n)
    venv.seed(20)  # env i: seed 20 + i
    env = VecSlotObservation(venv, checkpoint=model, include_masks=include_masks)
    single = SlotObservation(TinyImageEnv(), model, include_masks=include_masks)
    assert env.observation_space == single.observation_space

    def slots(o):
        return o["slots"] if include_masks else o

    refs = [reference_rollout(model, 20 + i, actions[:, i], True, include_masks) for i in range(n)]
    np.testing.assert_allclose(slots(env.reset()), np.stack([slots(r[0][0]) for r in refs]), atol=1e-5)
    n_finals = 0
    for t in range(steps):
        obs, _, dones, infos = env.step(actions[t])
        np.testing.assert_allclose(slots(obs), np.stack([slots(r[0][t + 1]) for r in refs]), atol=1e-5)
        for i in range(n):
            final = refs[i][1][t + 1]
            assert bool(dones[i]) == (final is not None)
            if final is not None:
                terminal = infos[i]["terminal_observation"]
                np.testing.assert_allclose(slots(terminal), slots(final), atol=1e-5)
                if include_masks:
                    np.testing.assert_allclose(terminal["masks"], final["masks"], atol=1e-5)
                n_finals += 1
    assert n_finals >= 3


def test_sb3_env_from_an_id_with_text_in_its_dict_observations(model):
    """SB3's DummyVecEnv cannot buffer a text field (MiniGrid's mission); make_slot_vec_env observes the frames
    instead, and keeps the terminal observations."""
    from oc_perception.sb3 import make_slot_vec_env

    n, steps = 2, 6
    actions = np.random.default_rng(2).integers(0, 2, (steps, n))
    env = make_slot_vec_env(TEST_ID, n, checkpoint=model, seed=30, env_kwargs={"obs_kind": "mission"})
    refs = [reference_rollout(model, 30 + i, actions[:, i], True, obs_kind="mission") for i in range(n)]
    np.testing.assert_allclose(env.reset(), np.stack([r[0][0] for r in refs]), atol=1e-5)
    finals = 0
    for t in range(steps):
        obs, _, dones, infos = env.step(actions[t])
        np.testing.assert_allclose(obs, np.stack([r[0][t + 1] for r in refs]), atol=1e-5)
        for i in np.flatnonzero(dones):
            np.testing.assert_allclose(infos[i]["terminal_observation"], refs[i][1][t + 1], atol=1e-5)
            finals += 1
    assert finals >= 1


def test_sb3_env_on_minigrid(model):
    pytest.importorskip("minigrid")
    from oc_perception.sb3 import make_slot_vec_env

    env = make_slot_vec_env("minigrid:MiniGrid-Dynamic-Obstacles-8x8-v0", 2, checkpoint=model, seed=0)
    assert env.reset().shape == (2, K, D)
    obs, rewards, _, _ = env.step(np.array([2, 2]))
    assert obs.shape == (2, K, D) and np.isfinite(obs).all() and rewards.shape == (2,)
    env.close()


def test_sb3_render_frames_without_terminal_observation(model):
    venv = DummyVecEnv([functools.partial(TinyImageEnv, "rgb_array", obs_kind="state", max_len=1)] * 2)
    with pytest.warns(UserWarning, match="terminal_observation"):
        env = VecSlotObservation(venv, checkpoint=model)
    env.reset()
    obs, _, dones, infos = env.step(np.zeros(2, int))
    assert obs.shape == (2, K, D) and dones.all()
    assert [info["terminal_observation"] for info in infos] == [None, None]


# ------------------------------------------------------------------------------------------- consistency
def test_slot_identity_stats_synthetic():
    seg = np.zeros((4, 8, 8), np.int64)
    seg[:, :4, :4], seg[:, 4:, 4:] = 3, 7  # two objects, sparse ids
    labels = np.zeros_like(seg)
    labels[:, :4, :4], labels[:, 4:, 4:] = 1, 2
    ids, slots, visible = best_iou_slots(torch.as_tensor(labels), torch.as_tensor(seg))
    assert ids.tolist() == [3, 7] and slots.tolist() == [[1, 2]] * 4 and bool(visible.all())
    perfect = slot_identity_stats(labels, seg)
    assert perfect == {"identity_switches": 0, "kept_fraction": 1.0, "frames_kept": 1.0, "first_slot_share": 1.0,
                       "second_frame_switches": 0, "objects": 2, "video_fg_ari": pytest.approx(1.0),
                       "video_mbo": pytest.approx(1.0)}
    swapped = labels.copy()
    swapped[2:, :4, :4], swapped[2:, 4:, 4:] = 2, 1  # the objects swap slots at frame 2
    stats = slot_identity_stats(swapped, seg)
    assert stats["identity_switches"] == 2 and stats["kept_fraction"] == 0.0 and stats["video_fg_ari"] < 1
    assert stats["frames_kept"] == 0.5  # each object is in "its" slot in 2 of its 4 frames
    assert stats["first_slot_share"] == 1 / 3  # ... and in its first frame's slot in 1 of its 3 later frames
    # over the video, an object's best slot holds half of it, and as much of the other object: IoU 32 / 96
    assert stats["video_mbo"] == pytest.approx(1 / 3)
    grown = labels.copy()
    grown[:, :4, 4:] = 2  # object 7's slot also takes 16 floor pixels in each frame: IoU 16 / 32
    assert slot_identity_stats(grown, seg)["video_mbo"] == pytest.approx((1 + 0.5) / 2)
    handed_over = labels.copy()
    handed_over[1:, :4, :4] = 0  # object 3 leaves its first slot after frame 0 and stays in the new one
    stats = slot_identity_stats(handed_over, seg)
    assert stats["frames_kept"] == 7 / 8 and stats["first_slot_share"] == 3 / 6  # only the second figure shows it
    assert stats["second_frame_switches"] == 1 and slot_identity_stats(swapped, seg)["second_frame_switches"] == 0
    once = labels.copy()
    once[3, :4, :4] = 0  # object 3 strays into the background's slot in the last frame only
    assert slot_identity_stats(once, seg)["frames_kept"] == 7 / 8
    # Soft masks on a coarser grid; an object hidden in between frames keeps its slot.
    soft = np.eye(3, dtype=np.float32)[labels[:, ::2, ::2]].transpose(0, 3, 1, 2)  # [T, K, 4, 4]
    seg[1:3, 4:, 4:] = 0
    assert slot_identity_stats(soft, seg)["identity_switches"] == 0


def test_switch_causes_splits_frames_by_contact_and_hiding():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from switch_causes import frame_records, lost_row

    t = 5
    seg = torch.zeros(t, 8, 8, dtype=torch.long)
    seg[:, 0:2, 0:2] = 1  # object 1, far from object 2 in frames 0-1
    seg[:, 5:8, 5:8] = 2
    seg[2:, 0:2, 0:2] = 0
    seg[2:, 3:5, 3:5] = 1  # frames 2-4: object 1 touches object 2 ...
    seg[3, 3:5, 3] = 0  # ... and is half hidden in frame 3
    labels = torch.zeros_like(seg)
    labels[seg == 1], labels[seg == 2] = 1, 2
    labels[3][seg[3] == 1] = 2  # frame 3: the neighbour's slot takes object 1; frame 4: its own again
    records = frame_records(labels, seg)
    assert len(records) == 2 * (t - 1)
    one = [r for r in records if r["object_id"] == 1]  # object 1's frames 1-4 (area 4, 4, 2, 4)
    assert [r["area"] for r in one] == [4.0, 4.0, 2.0, 4.0]
    assert [r["touching"] for r in one] == [0.0, 1.0, 1.0, 1.0]
    assert [r["hidden"] for r in one] == [0.0, 0.0, 1.0, 0.0]
    assert [r["after_hiding"] for r in one] == [0.0, 0.0, 0.0, 1.0]
    assert [r["out"] for r in one] == [0.0, 0.0, 1.0, 0.0] and one[2]["in_neighbour_slot"] == 1.0
    assert sum(r["out"] for r in records) == 1  # object 2 keeps its slot throughout

    frame = np.full((16, 16, 3), 100, np.uint8)  # any frame size: drawn at the segmentation's
    row = lost_row(frame, labels[3], seg[3], one[2])
    assert row.shape == (8, 32, 3) and row.dtype == np.uint8
    assert (row[:, 8:16][seg[3].numpy() == 1] == (255, 0, 255)).all()  # the object, in magenta
    first_slot = (labels[3] == one[2]["first_slot"]).numpy()
    assert not first_slot.any() and not (row[:, 24:] == 255).all(-1).any()  # its first slot holds no pixel


def test_slot_consistency_wrapper(model):
    env = SlotConsistency(SlotObservation(TinyImageEnv("rgb_array", max_len=3), checkpoint=model,
                                          include_masks=True))
    env.reset(seed=0)
    ended = False
    while not ended:
        _, _, terminated, truncated, info = env.step(0)
        ended = terminated or truncated
    stats = info["slot_consistency"]
    assert set(stats) == {"identity_switches", "kept_fraction", "frames_kept", "first_slot_share",
                          "second_frame_switches", "objects", "video_fg_ari", "video_mbo"}
    assert isinstance(stats["identity_switches"], int) and 0 <= stats["kept_fraction"] <= 1
    with pytest.raises(ValueError, match="include_masks=True"):
        SlotConsistency(SlotObservation(TinyImageEnv("rgb_array"), checkpoint=model))


def test_minigrid_identity_tracker_follows_positions_and_is_fooled_by_a_swap():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from minigrid_identity import tracker_hits

    seg = np.zeros((4, 8, 8), np.int64)
    seg[:, 0:2, 0:2] = 2  # object 2 stays in the corner
    for t, col in enumerate([2, 3, 4, 5]):
        seg[t, 6:8, col:col + 2] = 3  # object 3 slides along the bottom, one pixel a frame
    assert tracker_hits(seg, [2, 3]) == (6, 6)  # 2 objects x the 3 frames after the first
    # Frame 2 onward: the two identical objects trade places in one jump. A tracker by position cannot see it.
    swapped = seg.copy()
    for t in (2, 3):
        swapped[t][seg[t] == 2], swapped[t][seg[t] == 3] = 3, 2
    assert tracker_hits(swapped, [2, 3]) == (2, 6)
