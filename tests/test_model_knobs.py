"""A model knob is one field in its backbone's file: a field of an options dataclass that ModelConfig
inherits becomes a flat config.json key, old configs load with its default, unknown keys stay refused."""

import dataclasses
import json
from dataclasses import dataclass

import pytest

import model.config as config_module
from model import ModelConfig, PretrainingModel
from model.bert import BertOptions
from model.ltg import LtgOptions
from utils.errors import UserError
from utils.paths import REPO_ROOT

SAVED = REPO_ROOT / "tests" / "fixtures" / "run_2026_12_01" / "checkpoints" / "step_2" / "config.json"


@dataclass
class ProbeOptions:  # declared as model/bert.py declares BertOptions; not part of the model
    probe_bias: bool = True


@dataclass
class ProbeConfig(ModelConfig, ProbeOptions):  # ModelConfig with one more backbone's options
    pass


def test_backbone_options_are_flat_keys_of_model_config():
    keys = set(ModelConfig().to_dict())
    for options in (BertOptions, LtgOptions):
        assert {f.name for f in dataclasses.fields(options)} <= keys
    assert ModelConfig().type_vocab_size == 2 and ModelConfig().position_bucket_size == 32


def test_a_new_knob_loads_old_configs_with_its_default_and_round_trips(tmp_path):
    saved = json.loads(SAVED.read_text())  # written on 2026-12-01, before the knob existed
    assert "probe_bias" not in saved
    config = ProbeConfig.from_dict(saved, source=str(SAVED))
    assert config.probe_bias is True
    assert {k: v for k, v in config.to_dict().items() if k != "probe_bias"} == ModelConfig.from_json(
        SAVED
    ).to_dict()
    off = ProbeConfig.from_dict({**saved, "probe_bias": False})
    off.to_json(tmp_path / "config.json")
    assert json.loads((tmp_path / "config.json").read_text())["probe_bias"] is False
    assert ProbeConfig.from_json(tmp_path / "config.json") == off
    assert PretrainingModel(off).config.probe_bias is False  # the model code reads config.probe_bias
    with pytest.raises(UserError, match="key 'probe_bias' must be bool"):
        ProbeConfig.from_dict({**saved, "probe_bias": "no"})
    with pytest.raises(UserError, match="unknown key 'probe_bais'"):
        ProbeConfig.from_dict({**saved, "probe_bais": False})
    with pytest.raises(UserError, match="unknown key 'probe_bias'"):  # not a knob of the real model
        ModelConfig.from_dict({**saved, "probe_bias": False})


def test_a_knob_is_declared_once(monkeypatch):
    @dataclass
    class Clash:
        type_vocab_size: int = 0  # already BertOptions'

    monkeypatch.setattr(config_module, "BACKBONE_OPTIONS", (BertOptions, LtgOptions, Clash))
    with pytest.raises(TypeError, match="'type_vocab_size' is declared by Clash and BertOptions"):
        config_module._check_knob_names()


def test_every_repo_config_loads_unchanged():
    for path in sorted((REPO_ROOT / "configs").glob("*.json")):
        raw = json.loads(path.read_text())
        config = ModelConfig.from_json(path)
        assert {k: config.to_dict()[k] for k in raw} == raw, path
