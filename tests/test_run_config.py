"""Typed run configurations (training/run_config.py): a flag is one field, parsed, recorded and compared on
resume by default; old records load; a recipe sets defaults."""

import dataclasses
import json

import pytest

from finetune.args import FinetuneConfig
from finetune.args import parse_args as parse_finetune
from training.pretrain_args import PretrainConfig, build_parser
from training.pretrain_args import parse_args as parse_pretrain
from training.run_config import flag, from_record, record, resume_differences
from utils.errors import UserError
from utils.paths import REPO_ROOT

BASE = ["--input_path", "c", "--vocab_path", "t.json", "--output_dir", "o", "--config_file",
        str(REPO_ROOT / "configs" / "tiny.json")]  # fmt: skip


def test_every_field_is_a_flag_and_round_trips():
    config = parse_pretrain(
        [*BASE, "--no_nsp", "--static_masking", "--max_trust_ratio", "10", "--no_tensorboard"]
    )
    assert (config.nsp, config.static_masking, config.max_trust_ratio, config.tensorboard) == (
        False,
        True,
        10.0,
        False,
    )
    assert (
        config.init_seed == config.data_seed == 42 and config.warmup_steps == 100
    )  # resolved from --seed, 1%
    flags = {o for a in build_parser()._actions for o in a.option_strings}
    for f in dataclasses.fields(PretrainConfig):
        assert (f"--{f.name}" in flags) == f.metadata["cli"], f.name
    assert from_record(PretrainConfig, json.loads(json.dumps(record(config)))) == config


def test_a_new_flag_is_compared_on_resume_unless_it_says_so():
    @dataclasses.dataclass
    class Extended(PretrainConfig):
        attention_bias: bool = flag(True, "a knob added later")
        progress_bar: bool = flag(True, "cosmetic", may_differ=True)

    saved = record(parse_pretrain(BASE))  # written before the knobs existed: it has neither key
    now = from_record(Extended, saved)
    assert resume_differences(saved, now) == []  # a missing key counts as the default
    assert resume_differences(saved, dataclasses.replace(now, attention_bias=False)) == ["attention_bias"]
    assert resume_differences(saved, dataclasses.replace(now, progress_bar=False)) == []
    assert resume_differences(saved, dataclasses.replace(now, learning_rate=1.0)) == ["learning_rate"]
    # operational flags may differ; the accumulation too (a step's tokens do not depend on it)
    assert resume_differences(saved, dataclasses.replace(now, log_freq=1, gradient_accumulation=4)) == []


def test_old_record_with_removed_flags_loads():
    saved = json.loads((REPO_ROOT / "tests" / "fixtures" / "run_2026_12_01" / "run_args.json").read_text())
    assert "unpad" in saved and "world_size" in saved  # a flag removed since; a record extra
    config = from_record(PretrainConfig, saved)
    assert config.seq_length == 32 and config.model_config["hidden_size"] == 16


def test_recipe_sets_defaults_and_flags_win(tmp_path):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"model_config": str(REPO_ROOT / "configs" / "tiny.json"),
                                  "args": {"learning_rate": 5e-4, "masking": "span"}}))  # fmt: skip
    argv = ["--input_path", "c", "--vocab_path", "t.json", "--output_dir", "o", "--config_file", str(recipe)]
    config = parse_pretrain([*argv, "--masking", "whole_word"])
    assert (config.learning_rate, config.masking) == (5e-4, "whole_word")
    assert config.model_config_path == str(REPO_ROOT / "configs" / "tiny.json")
    recipe.write_text(json.dumps({"model_config": "tiny.json", "args": {"lerning_rate": 1}}))
    with pytest.raises(UserError, match="lerning_rate"):
        parse_pretrain(argv)


def test_finetune_config_lists_and_resume_rule():
    argv = ["--task", "sst2", "--vocab_path", "v.json", "--output_dir", "o", "--checkpoint_path", "c"]
    config = parse_finetune([*argv, "--head_hidden_sizes", "32,16", "--split_fractions", "0.7,0.2,0.1"])
    assert isinstance(config, FinetuneConfig)
    assert (config.head_hidden_sizes, config.split_fractions) == ([32, 16], [0.7, 0.2, 0.1])
    assert (config.max_seq_length, config.head_dropout, config.head_seed) == (128, 0.1, 42)
    saved = json.loads(json.dumps(record(config)))
    assert resume_differences(saved, dataclasses.replace(config, eval_batch_size=7, resume=True)) == []
    # fine-tuning compares the accumulation, as before
    assert resume_differences(saved, dataclasses.replace(config, gradient_accumulation=2)) == [
        "gradient_accumulation"
    ]
    with pytest.raises(UserError, match="comma-separated"):
        parse_finetune([*argv, "--head_hidden_sizes", "a,b"])
