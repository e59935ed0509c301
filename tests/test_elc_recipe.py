"""configs/recipes/elc_bert_babylm.json reproduces elc-bert's training arguments (train_elc_bert_*.py
defaults and configs/small.json, hand-copied below as values)."""

import json
from pathlib import Path

from training.pretrain_args import parse_args

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "recipes" / "elc_bert_babylm.json"

# elc-bert train_elc_bert_base.py argparse defaults (and its __main__: mixed precision on, with GradScaler)
REFERENCE_ARGS = {
    "optimizer": "lamb",
    "scheduler": "cosine",
    "seq_length": 128,
    "batch_size": 256,  # per GPU there, global here: see the recipe's description
    "learning_rate": 1e-2,
    "max_steps": 31250 // 2,
    "long_after": 0.9,
    "warmup_proportion": 0.016,
    "seed": 42,
    "mask_p": 0.15,
    "short_p": 0.1,
    "weight_decay": 0.1,
    "max_gradient": 2.0,
    "label_smoothing": 0.0,
    "adam_beta1": 0.9,  # Lamb(..., betas=(0.9, 0.98), eps=1e-6)
    "adam_beta2": 0.98,
    "adam_eps": 1e-6,
    "min_lr_factor": 0.1,  # cosine_schedule_with_warmup(..., 0.1)
    "mixed_precision": "fp16",
    "masking": "span",
    "nsp": False,
    "param_groups": "elc",
}
# elc-bert configs/small.json
REFERENCE_SMALL = {
    "attention_probs_dropout_prob": 0.1,
    "hidden_dropout_prob": 0.1,
    "hidden_size": 384,
    "intermediate_size": 1024,
    "max_position_embeddings": 512,
    "position_bucket_size": 32,
    "num_attention_heads": 6,
    "num_hidden_layers": 12,
    "vocab_size": 6144,
    "layer_norm_eps": 1.0e-7,
}


def test_recipe_is_the_reference_run(tmp_path):
    args = parse_args(
        ["--config_file", str(RECIPE), "--input_path", str(tmp_path), "--output_dir", str(tmp_path / "o")]
        + ["--vocab_path", str(tmp_path / "t.json")]
    )
    got = {k: getattr(args, k) for k in REFERENCE_ARGS}
    assert got == REFERENCE_ARGS
    assert args.warmup_steps == int(15625 * 0.016)
    model = json.loads(Path(args.model_config_path).read_text())
    assert {k: model[k] for k in REFERENCE_SMALL} == REFERENCE_SMALL
    assert model["backbone"] == "ltg" and model["layer_weighting"] == "base"
    assert model["next_sentence_prediction"] is False
    # our choices are stated, with the reference's values
    text = json.loads(RECIPE.read_text())["description"]
    assert "GLOBAL batch" in text and "256 is per GPU" in text and "fp16" in text and "bf16" in text
