"""A third-party robot env (panda-gym's PandaPush-v3, PyBullet) through the whole user path: record videos, wrap
with slots (single and SB3 vector), as docs/third_party.md shows."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from conftest import tiny_overrides
from oc_perception import SlotContrast
from oc_perception.config import load_config
from oc_perception.data.clips import ShardIndex
from oc_perception.data.generate import main as generate_main
from oc_perception.wrappers import SlotObservation, make

pytest.importorskip("panda_gym")
ENV_ID = "panda_gym:PandaPush-v3"
SMALL = {"render_mode": "rgb_array", "render_width": 64, "render_height": 64}


@pytest.fixture(scope="module")
def model() -> SlotContrast:
    torch.manual_seed(0)
    return SlotContrast(load_config(None, tiny_overrides("cnn") + ["model.encoder.input_size=64"]).model).eval()


def test_record_videos_without_segmentation(tmp_path):
    generate_main(["--env", ENV_ID, "--episodes", "2", "--steps", "4", "--val-episodes", "0", "--out", str(tmp_path),
                   "--env-kwargs", "{render_width: 64, render_height: 64}"])
    index = ShardIndex(sorted(tmp_path.glob("panda_push-train-*.tar")))
    assert len(index) == 2 and index.entries[0].segmentations is None
    assert index.video(0).shape == (4, 64, 64, 3)


def test_slot_observations_single_and_vector(model):
    env = make(ENV_ID, wrappers=[functools.partial(SlotObservation, checkpoint=model)], **SMALL)
    obs, _ = env.reset(seed=0)
    for _ in range(3):
        obs, *_ = env.step(env.action_space.sample())
    assert obs.shape == (model.cfg.num_slots, model.cfg.slot_dim) and np.isfinite(obs).all()
    env.close()

    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv

    from oc_perception import VecSlotObservation

    venv = DummyVecEnv([lambda: gym.make(ENV_ID, **SMALL)] * 2)
    with pytest.warns(UserWarning, match="get_images"):
        venv = VecSlotObservation(venv, checkpoint=model)
    obs = venv.reset()
    obs, rewards, dones, _ = venv.step(np.stack([venv.action_space.sample()] * 2))
    assert obs.shape == (2, model.cfg.num_slots, model.cfg.slot_dim) and rewards.shape == (2,)
    venv.close()


def test_pretrain_on_videos_without_segmentation(tmp_path, capsys):
    from oc_perception.train import main as train_main

    for split, count in (("train", 3), ("validation", 1)):
        generate_main(["--env", ENV_ID, "--episodes", str(count), "--steps", "4", "--val-episodes", "0",
                       "--out", str(tmp_path / "raw" / split), "--env-kwargs", "{render_width: 64, render_height: 64}",
                       "--seed", str(len(split))])
        for shard in (tmp_path / "raw" / split).glob("*.tar"):
            shard.rename(tmp_path / shard.name.replace("-train-", f"-{split}-"))
    train_main(["configs/pretrain/panda.yml", *tiny_overrides("cnn"), "model.encoder.input_size=64",
                "data.train_shards=panda_push-train-*.tar", "data.val_shards=panda_push-validation-*.tar",
                "data.batch_size=2", "data.num_workers=0", "trainer.max_steps=2", "trainer.val_every=2",
                "trainer.stop_at=null", "model.loss.segmentation_weight=0",
                "--data-dir", str(tmp_path), "--log-dir", str(tmp_path / "run")])
    last = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step 2:")][-1]
    assert "ari" not in last  # there is no segmentation to score: losses and the label-free signals
    assert "loss_total" in last and "label_free/objects_drawn" in last and "label_free/mask_change_static" in last
