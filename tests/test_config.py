"""Config: YAML -> dataclasses, overrides, and errors that name the offending key."""

from __future__ import annotations

import pytest

from conftest import REPO
from oc_perception.config import ConfigError, load_config
from oc_perception.dynamics.config import load_dynamics_config


@pytest.mark.parametrize("name, k, d, backbone, lr, steps", [
    ("movi_c", 11, 64, "vit_small_patch14_dinov2", 4e-4, 100_000),
    ("movi_e", 15, 128, "vit_base_patch14_dinov2", 4e-4, 300_000),
    ("ytvis2021", 7, 64, "vit_base_patch14_dinov2", 8e-4, 100_000),
])
def test_paper_configs(name, k, d, backbone, lr, steps):
    cfg = load_config(f"configs/pretrain/{name}.yml")
    assert (cfg.model.num_slots, cfg.model.slot_dim, cfg.model.encoder.backbone) == (k, d, backbone)
    assert cfg.optim.lr == lr and cfg.trainer.max_steps == steps
    assert cfg.optim.warmup_steps == 2500 and cfg.optim.grad_clip == 0.05
    assert cfg.data.batch_size == 64 and cfg.data.chunk_size == 4
    assert cfg.model.loss.ss_weight == 0.5 and cfg.model.loss.temperature == 0.1


def test_overrides_are_typed():
    cfg = load_config("configs/pretrain/movi_c.yml", ["trainer.max_steps=10", "optim.lr=1e-3",
                                                       "model.decoder.hidden_dims=[8, 8]", "model.encoder.weights=w.pt"])
    assert cfg.trainer.max_steps == 10 and cfg.optim.lr == 1e-3
    assert cfg.model.decoder.hidden_dims == [8, 8] and cfg.model.encoder.weights == "w.pt"


def test_unknown_keys_are_named(tmp_path):
    with pytest.raises(ConfigError, match="'model.num_slotz'.*num_slots"):
        load_config("configs/pretrain/movi_c.yml", ["model.num_slotz=3"])
    bad = tmp_path / "bad.yml"
    bad.write_text("trainer:\n  max_step: 3\n")
    with pytest.raises(ConfigError, match="'trainer.max_step'"):
        load_config(bad)


def test_type_errors_and_missing_file():
    with pytest.raises(ConfigError, match="model.num_slots: expected int"):
        load_config(None, ["model.num_slots=many"])
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(None, ["model.num_slots"])
    with pytest.raises(ConfigError, match="not found"):
        load_config("configs/pretrain/nope.yml")


def test_shipped_configs_load_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a name, not a path relative to the repository
    assert load_config("movi_c").model.num_slots == 11
    assert load_config("movi_c") == load_config(REPO / "configs" / "pretrain" / "movi_c.yml")
    assert load_dynamics_config("shapes_push").model.history == load_dynamics_config(
        REPO / "configs" / "dynamics" / "shapes_push.yml").model.history
    with pytest.raises(ConfigError) as e:
        load_config("movi_x")
    assert "movi_x" in str(e.value) and "movi_c" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("override, message", [
    ("model.decoder.pos_emb=grid", "model.decoder.pos_emb='grid': must be one of learned, soft"),
    ("trainer.precision=fp16", "trainer.precision='fp16': must be one of fp32, bf16"),
    ("model.num_slots=0", "model.num_slots=0: must be a positive integer"),
    ("model.slot_dim=9000", "model.slot_dim=9000: must be at most 8192"),
    ("optim.weight_decay=-1e-4", "optim.weight_decay=-0.0001: must be a non-negative number"),
    ("optim.lr=.inf", "optim.lr=inf: must be a positive number"),
])
def test_choices_and_ranges_declared_on_the_fields_are_one_line_errors(override, message):
    with pytest.raises(ConfigError) as e:
        load_config("movi_c", [override])
    assert str(e.value) == message


def test_every_schema_checks_the_ranges_of_its_fields():
    with pytest.raises(ConfigError, match=r"^trainer.max_steps=0: must be a positive integer$"):
        load_dynamics_config("shapes_push", ["trainer.max_steps=0"])
    with pytest.raises(ConfigError, match=r"^model.dropout=1.5: must be at most 1$"):
        load_dynamics_config("shapes_push", ["model.dropout=1.5"])


@pytest.mark.parametrize("name", ["shapes_stage1", "shapes_stage2", "shapes_stage3", "shapes", "panda"])
def test_env_configs_build_a_cnn_model_for_64px_frames(name):
    import torch

    from oc_perception import SlotContrast
    cfg = load_config(f"configs/pretrain/{name}.yml")
    assert cfg.model.encoder.backbone == "cnn" and cfg.model.encoder.input_size == 64
    assert name.split("_")[0] in cfg.data.train_shards and name.split("_")[0] in cfg.data.val_shards
    model = SlotContrast(cfg.model)
    out, _ = model(model.preprocess(torch.zeros(1, 2, 64, 64, 3, dtype=torch.uint8)))
    assert out["slots"].shape == (1, 2, cfg.model.num_slots, cfg.model.slot_dim)
