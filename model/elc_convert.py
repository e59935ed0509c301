"""ELC-BERT interop: read checkpoints of ltgoslo/elc-bert's train_elc_bert_*.py into our LTG + ELC model, and
write ours in its format, so that a model trained here runs in its code and BabyLM evaluation pipelines.

  python -m model.convert --from_elc model.bin --config_file small.json --layer_weighting base --output_dir D
  python -m model.convert --to_elc CHECKPOINT_DIR --output_dir D   # -> D/model.bin + D/config.json

A reference checkpoint is the dict its training scripts torch.save ({"model": state_dict, "optimizer": ...,
"args": Namespace}) or a bare state dict, read with torch.load(weights_only=True) only. Its keys are those of
elc-bert's models/model_elc_bert_{variant}.py; its config is a configs/*.json of that repository. The variant
is not in the file (base, zero and normalized have the same keys), hence --layer_weighting.

Key mapping (N = layer):
  embedding.word_embedding.weight                  encoder.embeddings.word_embeddings.weight (tied decoder)
  embedding.relative_embedding                     encoder.embeddings.relative_embedding
  embedding.relative_layer_norm.{weight,bias}      encoder.embeddings.relative_norm.*
  transformer.layers.N.attention.in_proj_qk.*      encoder.layers.N.attention.qkv.* rows [0, 2H)
  transformer.layers.N.attention.in_proj_v.*       encoder.layers.N.attention.qkv.* rows [2H, 3H)
  transformer.layers.N.attention.out_proj.*        encoder.layers.N.attention.out.*
  transformer.layers.N.attention.post_layer_norm.* encoder.layers.N.attention.post_norm.*
  transformer.layers.N.mlp.mlp.{1,4}.weight        encoder.layers.N.ffn.mlp.{1,4}.weight
  transformer.layers.N.prev_layer_weights          encoder.layer_weighting.layer_weights.N
  transformer.prev_layer_weights                   encoder.layer_weighting.output_weights (weighted_output)
  classifier.nonlinearity.1.{weight,bias}          mlm_head.transform.1.*
  classifier.nonlinearity.5.bias                   mlm_head.bias
  classifier.nonlinearity.5.weight                 (the word embedding again: checked equal, not stored)
  transformer.layers.N.attention.position_indices  (a buffer: derived from the config, checked, not stored)
"""

import argparse
import sys
from pathlib import Path

import torch

from model.config import ModelConfig
from model.ltg import relative_position_indices
from utils.errors import UserError
from utils.files import atomic_write, read_json, write_json_atomic

VARIANTS = ("base", "zero", "normalized", "weighted_output")  # the reference's models/ files
REF_CONFIG_KEYS = (  # configs/{small,base}.json of elc-bert
    "attention_probs_dropout_prob",
    "hidden_dropout_prob",
    "hidden_size",
    "intermediate_size",
    "max_position_embeddings",
    "position_bucket_size",
    "num_attention_heads",
    "num_hidden_layers",
    "vocab_size",
    "layer_norm_eps",
)
TIED = "classifier.nonlinearity.5.weight"


def reference_names(config: ModelConfig) -> dict[str, str]:
    """Our parameter name -> the reference's, for every parameter of an ltg + ELC PretrainingModel (the
    fused qkv maps to "in_proj_qk+in_proj_v"). Ours without a counterpart (an NSP head) are absent."""
    names = {
        "encoder.embeddings.word_embeddings.weight": "embedding.word_embedding.weight",
        "encoder.embeddings.relative_embedding": "embedding.relative_embedding",
        "encoder.embeddings.relative_norm.weight": "embedding.relative_layer_norm.weight",
        "encoder.embeddings.relative_norm.bias": "embedding.relative_layer_norm.bias",
        "mlm_head.transform.1.weight": "classifier.nonlinearity.1.weight",
        "mlm_head.transform.1.bias": "classifier.nonlinearity.1.bias",
        "mlm_head.bias": "classifier.nonlinearity.5.bias",
    }
    for i in range(config.num_hidden_layers):
        ours, ref = f"encoder.layers.{i}.", f"transformer.layers.{i}."
        for kind in ("weight", "bias"):
            qk, v = f"{ref}attention.in_proj_qk.{kind}", f"{ref}attention.in_proj_v.{kind}"
            names[f"{ours}attention.qkv.{kind}"] = f"{qk}+{v}"
            names[f"{ours}attention.out.{kind}"] = f"{ref}attention.out_proj.{kind}"
            names[f"{ours}attention.post_norm.{kind}"] = f"{ref}attention.post_layer_norm.{kind}"
        for j in (1, 4):
            names[f"{ours}ffn.mlp.{j}.weight"] = f"{ref}mlp.mlp.{j}.weight"
        if config.layer_weighting != "none":
            names[f"encoder.layer_weighting.layer_weights.{i}"] = f"{ref}prev_layer_weights"
    if config.layer_weighting == "weighted_output":
        names["encoder.layer_weighting.output_weights"] = "transformer.prev_layer_weights"
    return names


def config_from_reference(ref_config: dict, variant: str, source: str) -> ModelConfig:
    """Our ModelConfig from an elc-bert configs/*.json and the variant."""
    if variant not in VARIANTS:
        raise UserError(f"--layer_weighting {variant!r} must be one of {', '.join(VARIANTS)} (elc-bert's)")
    if not isinstance(ref_config, dict):
        raise UserError(f"{source}: expected a JSON object (an elc-bert configs/*.json)")
    missing = [k for k in REF_CONFIG_KEYS if k not in ref_config]
    if missing:
        raise UserError(f"{source}: missing key {missing[0]!r} (not an elc-bert config?)")
    d = {k: ref_config[k] for k in REF_CONFIG_KEYS}
    return ModelConfig.from_dict(
        {
            **ModelConfig().to_dict(),
            **d,
            "backbone": "ltg",
            "type_vocab_size": 0,
            "layer_weighting": variant,
            "next_sentence_prediction": False,
            "pad_vocab_to_multiple_of": 1,
        },
        source,
    )


def reference_config(config: ModelConfig) -> dict:
    return {k: getattr(config, k) for k in REF_CONFIG_KEYS}


def read_reference_checkpoint(path) -> dict[str, torch.Tensor]:
    """The state dict of a train_elc_bert_*.py checkpoint ({"model": ...}) or of a bare state dict file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--from_elc {path}: file not found")
    try:
        # the training scripts also pickle their argparse.Namespace: allowed, nothing else
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors come in many types; one line either way
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"--from_elc {path}: not a readable torch checkpoint ({first})") from None
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"--from_elc {path}: neither a state dict nor a dict with a 'model' state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}  # a DDP-wrapped save


def from_reference_state(ref: dict[str, torch.Tensor], config: ModelConfig, source: str) -> dict:
    """The reference's state dict -> ours (for PretrainingModel(config)); every key used, shapes checked."""
    names = reference_names(config)
    wanted = {r for joined in names.values() for r in joined.split("+")} | {TIED}
    extra = sorted(k for k in ref if k not in wanted and not k.endswith("attention.position_indices"))
    if extra:
        hint = " (a weighted_output checkpoint?)" if extra[0] == "transformer.prev_layer_weights" else ""
        variant = config.layer_weighting
        raise UserError(f"{source}: key {extra[0]!r} is not in elc-bert's {variant} model{hint}")
    missing = sorted(k for k in wanted if k not in ref and k != TIED)
    if missing:
        variant = config.layer_weighting
        raise UserError(f"{source}: missing key {missing[0]!r} for --layer_weighting {variant}")
    if TIED in ref and not torch.equal(ref[TIED], ref["embedding.word_embedding.weight"]):
        raise UserError(f"{source}: {TIED} differs from the word embedding (elc-bert ties them)")
    want_indices = relative_position_indices(config.position_bucket_size, config.max_position_embeddings)
    for key in (k for k in ref if k.endswith("attention.position_indices")):
        idx = ref[key]
        P = config.max_position_embeddings
        if idx.dim() != 2 or idx.shape[0] < P or not torch.equal(idx[:P, :P].long(), want_indices):
            raise UserError(f"{source}: {key} does not match the config's position buckets")
    state = {}
    for ours, joined in names.items():
        state[ours] = torch.cat([ref[r] for r in joined.split("+")], 0).clone()
    return state


def to_reference_state(model) -> dict[str, torch.Tensor]:
    """Our ltg + ELC PretrainingModel -> the reference's state dict (as its Bert(config).state_dict())."""
    config = model.config
    if config.backbone != "ltg" or config.layer_weighting not in VARIANTS:
        raise UserError(
            f"--to_elc needs an ltg backbone with layer_weighting one of {', '.join(VARIANTS)} "
            f"(got backbone={config.backbone!r}, layer_weighting={config.layer_weighting!r})"
        )
    own = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    names = reference_names(config)
    left = sorted(k for k in own if k not in names and not k.startswith("nsp_head."))
    if left:
        raise UserError(f"--to_elc: weight {left[0]!r} has no counterpart in elc-bert's model")
    if any(k.startswith("nsp_head.") for k in own):
        print("note: the NSP head is not exported (elc-bert's model has none)", file=sys.stderr)
    V, H = config.vocab_size, config.hidden_size
    indices = relative_position_indices(config.position_bucket_size, config.max_position_embeddings)
    ref = {}
    for ours, joined in names.items():
        tensor = own[ours]
        if ours.endswith(("word_embeddings.weight", "mlm_head.bias")):
            tensor = tensor[:V]  # drop pad_vocab_to_multiple_of rows
        parts = joined.split("+")
        chunks = tensor.split([2 * H, H], 0) if len(parts) == 2 else [tensor]
        for r, t in zip(parts, chunks):
            ref[r] = t.contiguous().clone()
    ref[TIED] = ref["embedding.word_embedding.weight"]
    for i in range(config.num_hidden_layers):
        ref[f"transformer.layers.{i}.attention.position_indices"] = indices.clone()
    return ref


def load_reference(checkpoint, config_file, variant):
    """--from_elc: (our PretrainingModel with the reference checkpoint's weights)."""
    from model.io import load_state
    from model.pretraining_model import PretrainingModel

    if config_file is None or variant is None:
        raise UserError("--from_elc needs --config_file (elc-bert's configs/*.json) and --layer_weighting")
    config = config_from_reference(read_json(config_file, "--config_file"), variant, str(config_file))
    ref = read_reference_checkpoint(checkpoint)
    state = from_reference_state(ref, config, f"--from_elc {checkpoint}")
    model = PretrainingModel(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for name, tensor in state.items():
        if shapes[name] != tuple(tensor.shape):
            raise UserError(
                f"--from_elc {checkpoint}: {name} has shape {tuple(tensor.shape)}, --config_file "
                f"{config_file} wants {shapes[name]}"
            )
    load_state(model, state, str(checkpoint))
    return model


def save_reference(model, out_dir) -> None:
    """--to_elc: out_dir/model.bin ({"model": state_dict}, as train_elc_bert_*.py saves) + config.json."""
    state = to_reference_state(model)
    out_dir = Path(out_dir)
    atomic_write(out_dir / "model.bin", lambda f: torch.save({"model": state}, f))
    write_json_atomic(out_dir / "config.json", reference_config(model.config))
