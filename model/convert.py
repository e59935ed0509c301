"""Hugging Face BERT interop: import a local HF BERT folder (bert-base-uncased, MultiBERTs, EarlyBERTs) into
our BERT with both heads, and export ours to a folder `transformers.BertForPreTraining` loads.

  python -m model.convert --from_hf HF_DIR --output_dir DIR        # -> model.safetensors + config.json
  python -m model.convert --to_hf CHECKPOINT_DIR --output_dir DIR  # -> HF config.json + model.safetensors
  python -m model.convert --from_elc model.bin --config_file REF.json --layer_weighting V --output_dir DIR
  python -m model.convert --to_elc CHECKPOINT_DIR --output_dir DIR  # -> elc-bert model.bin + config.json
(ELC-BERT, ltgoslo/elc-bert: see model/elc_convert.py)
  python -m model.convert --to_hf_repo RUN_DIR --output_dir REPO    # -> git repo, a branch per checkpoint

Weights are read with safetensors or torch.load(weights_only=True) only: a downloaded file cannot run code.
"""

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save

from model.config import ModelConfig
from model.io import load_model, load_state, read_safetensors, save_model
from model.pretraining_model import PretrainingModel
from utils.errors import ArgumentParser, UserError, run_cli
from utils.files import atomic_write, temp_dir_beside

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# HF config key -> (our key, default when absent: BertConfig's defaults; None = required)
HF_CONFIG_KEYS = {
    "vocab_size": ("vocab_size", None),
    "hidden_size": ("hidden_size", None),
    "num_hidden_layers": ("num_hidden_layers", None),
    "num_attention_heads": ("num_attention_heads", None),
    "intermediate_size": ("intermediate_size", None),
    "max_position_embeddings": ("max_position_embeddings", 512),
    "type_vocab_size": ("type_vocab_size", 2),
    "hidden_dropout_prob": ("hidden_dropout_prob", 0.1),
    "attention_probs_dropout_prob": ("attention_probs_dropout_prob", 0.1),
    "layer_norm_eps": ("layer_norm_eps", 1e-12),
    "initializer_range": ("initializer_range", 0.02),
    "pad_token_id": ("pad_token_id", 0),
}


def hf_names(config: ModelConfig) -> dict[str, list[str]]:
    """Our parameter name -> HF BertForPreTraining names (three for the fused qkv, concatenated in order)."""
    names = {
        "encoder.embeddings.word_embeddings.weight": ["bert.embeddings.word_embeddings.weight"],
        "encoder.embeddings.position_embeddings.weight": ["bert.embeddings.position_embeddings.weight"],
        "encoder.embeddings.token_type_embeddings.weight": ["bert.embeddings.token_type_embeddings.weight"],
        "encoder.embeddings.norm.weight": ["bert.embeddings.LayerNorm.weight"],
        "encoder.embeddings.norm.bias": ["bert.embeddings.LayerNorm.bias"],
        "encoder.pooler.weight": ["bert.pooler.dense.weight"],
        "encoder.pooler.bias": ["bert.pooler.dense.bias"],
        "mlm_head.dense.weight": ["cls.predictions.transform.dense.weight"],
        "mlm_head.dense.bias": ["cls.predictions.transform.dense.bias"],
        "mlm_head.norm.weight": ["cls.predictions.transform.LayerNorm.weight"],
        "mlm_head.norm.bias": ["cls.predictions.transform.LayerNorm.bias"],
        "mlm_head.bias": ["cls.predictions.bias"],
    }
    if config.next_sentence_prediction:
        names["nsp_head.linear.weight"] = ["cls.seq_relationship.weight"]
        names["nsp_head.linear.bias"] = ["cls.seq_relationship.bias"]
    for i in range(config.num_hidden_layers):
        ours, hf = f"encoder.layers.{i}.", f"bert.encoder.layer.{i}."
        for p in ("weight", "bias"):
            names[ours + f"attention.qkv.{p}"] = [
                hf + f"attention.self.{n}.{p}" for n in ("query", "key", "value")
            ]
            names[ours + f"attention.out.{p}"] = [hf + f"attention.output.dense.{p}"]
            names[ours + f"attention_norm.{p}"] = [hf + f"attention.output.LayerNorm.{p}"]
            names[ours + f"ffn_in.{p}"] = [hf + f"intermediate.dense.{p}"]
            names[ours + f"ffn_out.{p}"] = [hf + f"output.dense.{p}"]
            names[ours + f"ffn_norm.{p}"] = [hf + f"output.LayerNorm.{p}"]
    return names


def normalize_hf_key(key: str) -> str:
    """Older checkpoints: LayerNorm gamma/beta, and BertModel files without the `bert.` prefix."""
    key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    if key.startswith(("embeddings.", "encoder.", "pooler.")):
        key = "bert." + key
    return key


def read_hf_weights(hf_dir: Path) -> dict[str, torch.Tensor]:
    """model.safetensors (or its sharded index), else pytorch_model.bin loaded with weights_only=True."""
    if (hf_dir / "model.safetensors").is_file():
        state = read_safetensors(hf_dir / "model.safetensors")
    elif (hf_dir / "model.safetensors.index.json").is_file():
        index = json.loads((hf_dir / "model.safetensors.index.json").read_text())
        state = {}
        for shard in sorted(set(index["weight_map"].values())):
            state.update(read_safetensors(hf_dir / shard))
    elif (hf_dir / "pytorch_model.bin").is_file():
        path = hf_dir / "pytorch_model.bin"
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # weights_only refuses pickled code; any failure means an unusable file
            raise UserError(f"{path}: cannot read weights ({type(err).__name__}: {err})") from None
    else:
        raise UserError(f"weights file not found: {hf_dir}/model.safetensors or {hf_dir}/pytorch_model.bin")
    return {normalize_hf_key(k): v for k, v in state.items()}


def read_hf_config(hf_dir: Path, has_nsp: bool) -> ModelConfig:
    path = hf_dir / "config.json"
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        hf = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if hf.get("hidden_act", "gelu") != "gelu":
        raise UserError(f"{path}: hidden_act={hf['hidden_act']!r} is not supported (only exact 'gelu')")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise UserError(f"{path}: position_embedding_type={hf['position_embedding_type']!r} is not supported")
    values = {}
    for hf_key, (key, default) in HF_CONFIG_KEYS.items():
        if hf.get(hf_key) is None and default is None:
            raise UserError(f"{path}: missing key {hf_key!r}")
        values[key] = hf[hf_key] if hf.get(hf_key) is not None else default
    defaults = ModelConfig().to_dict()
    return ModelConfig.from_dict(
        {
            **defaults,
            **values,
            "backbone": "bert",
            "layer_weighting": "none",
            "next_sentence_prediction": has_nsp,
        },
        source=str(path),
    )


def load_hf_bert(hf_dir) -> PretrainingModel:
    """Build our BERT from a local HF BERT folder; heads absent from the file keep a fresh init (warned)."""
    hf_dir = Path(hf_dir)
    if not hf_dir.is_dir():
        raise UserError(f"Hugging Face folder not found: {hf_dir}")
    hf_state = read_hf_weights(hf_dir)
    config = read_hf_config(hf_dir, has_nsp="cls.seq_relationship.weight" in hf_state)
    if "cls.predictions.bias" not in hf_state and "cls.predictions.decoder.bias" in hf_state:
        hf_state["cls.predictions.bias"] = hf_state["cls.predictions.decoder.bias"]
    model = PretrainingModel(config)
    own = model.state_dict()
    state, used, fresh = {}, set(), []
    for ours, names in hf_names(config).items():
        if ours not in own:  # e.g. no token-type embedding when type_vocab_size is 0
            continue
        if not all(n in hf_state for n in names):
            if ours.startswith(("mlm_head.", "encoder.pooler.")):
                fresh.append(ours)
                state[ours] = own[ours]
                continue
            missing = next(n for n in names if n not in hf_state)
            raise UserError(f"{hf_dir}: missing weight {missing!r}")
        parts = [hf_state[n] for n in names]
        for n, t in zip(names, parts):
            want = list(own[ours].shape)
            want[0] = (
                config.vocab_size if ours.endswith(("word_embeddings.weight", "mlm_head.bias")) else want[0]
            )
            want[0] //= len(names)
            if list(t.shape) != want:
                raise UserError(
                    f"{hf_dir}: weight {n!r} has shape {list(t.shape)}, config.json implies {want}"
                )
        used.update(names)
        tensor = torch.cat(parts, 0) if len(parts) > 1 else parts[0]
        if tensor.shape[0] < own[ours].shape[0]:  # pad_vocab_to_multiple_of: keep the fresh padding rows
            tensor = torch.cat([tensor, own[ours][tensor.shape[0] :]], 0)
        state[ours] = tensor.to(own[ours].dtype)
    ignored = (
        "bert.embeddings.position_ids",
        "cls.predictions.decoder.weight",
        "cls.predictions.decoder.bias",
    )
    if "encoder.pooler.weight" not in own:  # no NSP head: no head of ours reads the pooler
        ignored += ("bert.pooler.dense.weight", "bert.pooler.dense.bias")
    unused = sorted(k for k in hf_state if k not in used and k not in ignored)
    if unused:
        raise UserError(f"{hf_dir}: weight {unused[0]!r} does not fit config.json (not used by the model)")
    if fresh:
        print(
            f"warning: {hf_dir} has no weights for {', '.join(fresh)}; they keep a fresh init",
            file=sys.stderr,
        )
    load_state(model, state, str(hf_dir))
    return model


def save_hf_bert(model: PretrainingModel, out_dir) -> None:
    """Write config.json + model.safetensors in HF BertForPreTraining format (decoder tied, so not stored)."""
    config = model.config
    if config.backbone != "bert" or config.layer_weighting != "none":
        raise UserError(
            f"only a bert backbone without layer weighting can be exported to Hugging Face "
            f"(got backbone={config.backbone!r}, layer_weighting={config.layer_weighting!r})"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    own = model.state_dict()
    hf_state = {}
    for ours, names in hf_names(config).items():
        if ours not in own:
            continue
        tensor = own[ours].detach().cpu()
        if ours.endswith(("word_embeddings.weight", "mlm_head.bias")):
            tensor = tensor[: config.vocab_size]  # drop pad_vocab_to_multiple_of rows
        for n, part in zip(names, tensor.chunk(len(names), 0)):
            hf_state[n] = part.contiguous()
    hf_config = {k: getattr(config, ours) for k, (ours, _) in HF_CONFIG_KEYS.items()}
    hf_config.update(
        architectures=["BertForPreTraining"],
        model_type="bert",
        hidden_act="gelu",
        position_embedding_type="absolute",
        tie_word_embeddings=True,
    )
    data = save(hf_state, metadata={"format": "pt"})  # bytes: save_file would make the file 0600
    atomic_write(out_dir / "model.safetensors", lambda f: f.write(data))
    (out_dir / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")


def write_folder(output_dir: Path, write) -> None:
    """Fill a temporary sibling folder, then rename it: an interrupted run leaves nothing half-written."""
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise UserError(f"--output_dir {output_dir} already exists and is not empty")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(output_dir)
    try:
        write(tmp)
        if output_dir.exists():
            output_dir.rmdir()
        os.replace(tmp, output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def copy_tokenizer_files(src: Path, dst: Path) -> None:
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def main(argv=None) -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from_hf", type=Path, help="a local Hugging Face BERT folder to import")
    source.add_argument("--to_hf", type=Path, help="one of our checkpoint folders to export")
    source.add_argument("--from_elc", type=Path, help="an elc-bert checkpoint (model.bin) to import")
    source.add_argument("--to_elc", type=Path, help="one of our ltg + ELC checkpoint folders to export")
    parser.add_argument("--config_file", type=Path, help="--from_elc: elc-bert's configs/*.json of the model")
    parser.add_argument("--layer_weighting", help="--from_elc: base | zero | normalized | weighted_output")
    source.add_argument("--to_hf_repo", type=Path, help="a run -> git repo, a branch per step")
    parser.add_argument("--output_dir", type=Path, required=True, help="new folder to write")
    args = parser.parse_args(argv)
    if args.from_elc is None and (args.config_file or args.layer_weighting):
        raise UserError("--config_file and --layer_weighting go with --from_elc only")
    if args.from_elc is not None or args.to_elc is not None:
        from model import elc_convert

        if args.from_elc is not None:
            model = elc_convert.load_reference(args.from_elc, args.config_file, args.layer_weighting)
            write = lambda tmp: save_model(model, tmp)  # noqa: E731
        else:
            model = load_model(args.to_elc)
            elc_convert.to_reference_state(model)  # refuses an unexportable model before writing
            write = lambda tmp: elc_convert.save_reference(model, tmp)  # noqa: E731
    elif args.from_hf is not None:
        model = load_hf_bert(args.from_hf)

        def write(tmp):
            save_model(model, tmp)
            copy_tokenizer_files(args.from_hf, tmp)

    elif args.to_hf_repo is not None:
        from model.hub_export import export_hub_repo

        branches = export_hub_repo(args.to_hf_repo, args.output_dir)
        return print(f"wrote {args.output_dir}: branches {', '.join(branches)}; main = {branches[-1]}")
    else:
        from model.hub_export import export_hf_folder  # weights, config and the tokenizer (issue 15)

        model = load_model(args.to_hf)

        def write(tmp):
            export_hf_folder(args.to_hf, tmp)

    write_folder(args.output_dir, write)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.output_dir} ({n / 1e6:.1f}M parameters)")


if __name__ == "__main__":
    run_cli(main)
