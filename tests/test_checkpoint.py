"""Checkpoints: our safetensors format, official Lightning checkpoints, and their errors."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_overrides
from oc_perception import SlotContrast
from oc_perception.checkpoint import (CHECKPOINT_DIR, DEFAULT_CHECKPOINTS, LABEL_FREE_CHECKPOINTS, SUPERVISED_CHECKPOINTS,
                                      CheckpointError, default_checkpoint, detect_official_config, load_checkpoint,
                                      load_official, load_training_state, save_checkpoint, save_step_checkpoint)
from oc_perception.config import load_config


def tiny(extra=None, backbone="vit"):
    torch.manual_seed(0)
    return SlotContrast(load_config("configs/pretrain/movi_c.yml", tiny_overrides(backbone) + (extra or [])).model)


@pytest.mark.parametrize("backbone", ["vit", "cnn"])
def test_roundtrip_same_numbers(tmp_path, backbone):
    model = tiny(backbone=backbone).eval()
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    loaded = load_checkpoint(path)
    assert loaded.cfg == model.cfg
    video = torch.randn(1, 2, 3, model.input_size, model.input_size)
    with torch.no_grad():
        torch.testing.assert_close(loaded(video)[0]["slots"], model(video)[0]["slots"])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no leftovers of the atomic write


def test_checkpoint_for_another_config_is_rejected(tmp_path):
    path = save_checkpoint(tiny(), tmp_path / "m.safetensors")
    other = load_config("configs/pretrain/movi_c.yml", tiny_overrides() + ["model.num_slots=6"]).model
    with pytest.raises(CheckpointError, match=r"another model config \(num_slots: checkpoint 4 vs config 6\)"):
        load_checkpoint(path, cfg=other)
    # A config of the same shapes but other weights (here: a narrower decoder) is named key by key.
    narrower = load_config("configs/pretrain/movi_c.yml", tiny_overrides() + ["model.decoder.hidden_dims=[32, 32]"])
    with pytest.raises(CheckpointError, match=r"mis-shaped keys: decoder.mlp.0.bias: checkpoint \(64,\) vs model \(32,\)"):
        load_checkpoint(path, cfg=narrower.model)


def test_corrupt_and_foreign_files(tmp_path):
    path = save_checkpoint(tiny(), tmp_path / "m.safetensors")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.safetensors")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")
    (tmp_path / "junk.ckpt").write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError, match="could not be read"):
        load_official(tmp_path / "junk.ckpt", load_config("configs/pretrain/movi_c.yml"))


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = save_checkpoint(tiny(), tmp_path / "m.safetensors")
    before = path.read_bytes()
    import oc_perception.checkpoint.format as ck

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tiny(["model.slot_dim=16"]), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


@pytest.fixture(scope="module")
def official_sd(request):
    fixtures_dir = request.getfixturevalue("fixtures_dir")
    return load_file(fixtures_dir / "nonencoder_state_dict.safetensors")


def test_official_ckpt_file_with_backbone(tmp_path, official_sd):
    """A full Lightning .ckpt (backbone included, no final norm) loads from disk with weights_only=True."""
    cfg = load_config("configs/pretrain/movi_c.yml", ["model.encoder.pretrained=false"])
    torch.manual_seed(1)
    backbone = SlotContrast(cfg.model).encoder.backbone.state_dict()
    sd = dict(official_sd) | {f"encoder.module.backbone.model.{k}": v for k, v in backbone.items()}
    torch.save({"state_dict": sd, "epoch": 3, "global_step": 100}, tmp_path / "movi_c.ckpt")
    assert detect_official_config(sd) == "movi_c"
    model = load_official(tmp_path / "movi_c.ckpt", load_config("configs/pretrain/movi_c.yml"))  # pretrained: true
    torch.testing.assert_close(model.encoder.backbone.pos_embed, backbone["pos_embed"])
    torch.testing.assert_close(model.initial_slots, sd["initializer.slots"])


def test_official_key_errors_list_every_problem(official_sd):
    cfg = load_config("configs/pretrain/movi_c.yml", ["model.encoder.pretrained=false"])
    sd = dict(official_sd)
    del sd["decoder.module.pos_emb"]
    sd["processor.module.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as e, pytest.warns(UserWarning):
        load_official(sd, cfg)
    assert "missing keys: decoder.pos_emb" in str(e.value)
    assert "unexpected keys: processor.module.extra.weight" in str(e.value)
    movi_e = load_config("configs/pretrain/movi_e.yml", ["model.encoder.pretrained=false"])
    with pytest.raises(CheckpointError, match=r"mis-shaped keys: decoder.mlp.0.weight: checkpoint \(1024, 64\) vs model \(1024, 128\).*movi_c' config"), pytest.warns(UserWarning):
        load_official(official_sd, movi_e)


def test_detect_config_unknown_shapes():
    with pytest.raises(CheckpointError, match="unknown official model shape.*movi_c"):
        detect_official_config({"initializer.slots": torch.zeros(1, 5, 64),
                                "decoder.module.pos_emb": torch.zeros(1, 1, 576, 64)})


@pytest.mark.parametrize("env_id, recipe", [(e, r) for e in ("oc/ShapesPush-v0", "oc/PandaPush-v0")
                                            for r in ("supervised", "label_free")])
def test_bundled_checkpoints_match_their_configs(env_id, recipe):
    # The bundled files are what `configs/pretrain/<name>.yml` trains (docs/checkpoints.md): a config edited
    # without retraining, or a file left out of the package, fails here rather than in a user's env.
    path = default_checkpoint(env_id, recipe)
    model = load_checkpoint(path)
    trained = load_config(f"configs/pretrain/{path.stem}.yml").model
    # first_frame_passes and dormant_below are inference settings (the weights do not depend on them): a file may
    # store its own.
    trained.slot_attention.first_frame_passes = model.cfg.slot_attention.first_frame_passes
    trained.slot_attention.dormant_below = model.cfg.slot_attention.dormant_below
    assert model.cfg == trained
    assert (model.cfg.loss.segmentation_weight == 0) == (recipe == "label_free")
    frames = torch.randint(0, 256, (1, 2, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        slots = model(model.preprocess(frames))[0]["slots"]
    assert slots.shape == (1, 2, model.cfg.num_slots, model.cfg.slot_dim) and torch.isfinite(slots).all()


def test_default_checkpoint_unknown_env():
    with pytest.raises(KeyError, match="no bundled checkpoint for 'CartPole-v1'"):
        default_checkpoint("CartPole-v1")
    with pytest.raises(KeyError, match="no bundled label-free checkpoint for 'CartPole-v1'; bundled: oc/Shapes"):
        default_checkpoint("CartPole-v1", "label_free")
    with pytest.raises(ValueError, match="unknown recipe 'labelfree'; choose one of default, label_free, supervised"):
        default_checkpoint("oc/ShapesPush-v0", "labelfree")


def test_each_default_is_a_bundled_model_of_its_env():
    for env_id, name in DEFAULT_CHECKPOINTS.items():
        assert name in (SUPERVISED_CHECKPOINTS[env_id], LABEL_FREE_CHECKPOINTS[env_id])
        assert default_checkpoint(env_id) == CHECKPOINT_DIR / name


def test_step_checkpoints_keep_the_newest(tmp_path):
    for step in (5, 10, 15, 20):
        save_step_checkpoint(tmp_path, step, {"step": step}, keep_last=2)
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["step_00000015.pt", "step_00000020.pt"]
    assert load_training_state(tmp_path / "checkpoints" / kept[-1])["step"] == 20


def test_the_former_module_names_stay_importable_from_the_package():
    import oc_perception.checkpoint as ck

    former = ["CHECKPOINT_DIR", "CONFIG_DIR", "CheckpointError", "DEFAULT_CHECKPOINTS", "FORMAT", "OFFICIAL_PREFIXES",
              "OFFICIAL_SHAPES", "REPO_ROOT", "TRAINING_STATE_KEYS", "check_env_of_checkpoint", "check_weights",
              "checkpoint_kind", "config_path", "default_checkpoint", "detect_official_config", "load_checkpoint",
              "load_model", "load_official", "load_training_state", "load_weights", "map_official_keys",
              "official_state_dict", "read_checkpoint", "remove_partial_writes", "save_checkpoint",
              "save_step_checkpoint", "save_training_state", "training_state_kind", "weights_digest"]
    assert [name for name in former if name not in ck.__all__ or getattr(ck, name) is None] == []
    with pytest.raises(AttributeError, match="no attribute 'save_model'"):
        ck.save_model  # noqa: B018
