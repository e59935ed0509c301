"""Hugging Face folders with their tokenizer, and a whole run as a hub-style git repository.

  python -m model.convert --to_hf CHECKPOINT_DIR --output_dir DIR    # one folder: weights, config, tokenizer
  python -m model.convert --to_hf_repo RUN_DIR --output_dir REPO     # one git branch per checkpoint

The repository follows EarlyBERTs / MultiBERTs on the Hub: branch `stepN` holds checkpoint N as a complete
Hugging Face folder (config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
special_tokens_map.json, vocab.txt, README.md), `main` holds the final checkpoint; after
`git checkout step1000` (or `from_pretrained(REPO, revision="step1000")` once pushed),
`BertForPreTraining.from_pretrained` and `AutoTokenizer.from_pretrained` load it. With git-lfs installed,
*.safetensors are stored through LFS (the Hub wants files over 10 MB there) and `git push --all` publishes
every revision as it is.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

from utils.errors import UserError
from utils.files import temp_dir_beside, write_json_atomic, write_text_atomic

SPECIAL_TOKENS = {
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}


def find_tokenizer(checkpoint_dir: Path) -> Path | None:
    """The checkpoint's own tokenizer.json, else the tokenizer its args.json names; None when neither."""
    checkpoint_dir = Path(checkpoint_dir)
    if (checkpoint_dir / "tokenizer.json").is_file():
        return checkpoint_dir / "tokenizer.json"
    if not (checkpoint_dir / "args.json").is_file():
        return None
    from evaluation.checkpoints import resolve_vocab

    return resolve_vocab(checkpoint_dir, None)


def write_hf_tokenizer(tokenizer_file: Path, out_dir: Path, model_max_length: int) -> None:
    """tokenizer.json + the files AutoTokenizer reads: the same ids as ours, special tokens included."""
    from data.tokenization import load_tokenizer, special_ids

    tokenizer = load_tokenizer(tokenizer_file)
    special_ids(tokenizer)  # a tokenizer without [CLS] ... [MASK] is refused here, naming the token
    out_dir = Path(out_dir)
    write_text_atomic(out_dir / "tokenizer.json", tokenizer.to_str())
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model_max_length,
        "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
        "clean_up_tokenization_spaces": False,
        **SPECIAL_TOKENS,
    }
    write_json_atomic(out_dir / "tokenizer_config.json", config)
    write_json_atomic(out_dir / "special_tokens_map.json", SPECIAL_TOKENS)
    if json.loads(tokenizer.to_str())["model"]["type"] == "WordPiece":  # BERT's vocab.txt, by id
        by_id = sorted(tokenizer.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
        write_text_atomic(out_dir / "vocab.txt", "".join(token + "\n" for token, _ in by_id))


def export_hf_folder(checkpoint_dir: Path, out_dir: Path) -> None:
    """One checkpoint as a Hugging Face BertForPreTraining folder with its tokenizer."""
    from model.convert import copy_tokenizer_files, save_hf_bert
    from model.io import load_model

    model = load_model(checkpoint_dir)
    save_hf_bert(model, out_dir)
    tokenizer = find_tokenizer(checkpoint_dir)
    if tokenizer is not None:
        write_hf_tokenizer(tokenizer, out_dir, model.config.max_position_embeddings)
    else:  # e.g. an imported HF folder: its tokenizer files travel as they are
        copy_tokenizer_files(Path(checkpoint_dir), Path(out_dir))


def model_card(run_dir: Path, step: int, info: dict, branches: list[str]) -> str:
    tokens = f"{info['tokens_seen']:,}" if info.get("tokens_seen") is not None else "unknown"
    return (
        f"# {run_dir.name}, step {step}\n\nBERT pretrained with bert-research; checkpoint at step {step} "
        f"({tokens} tokens seen). Revisions (git branches): {', '.join(branches)}; `main` is the final "
        "step.\n\n```python\nfrom transformers import AutoTokenizer, BertForPreTraining\n"
        f'model = BertForPreTraining.from_pretrained(REPO, revision="step{step}")\n'
        f'tokenizer = AutoTokenizer.from_pretrained(REPO, revision="step{step}")\n```\n'
    )


def _git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "bert-research",
        "GIT_AUTHOR_EMAIL": "export@bert-research",
        "GIT_COMMITTER_NAME": "bert-research",
        "GIT_COMMITTER_EMAIL": "export@bert-research",
    }
    try:
        done = subprocess.run(
            ["git", "-c", "commit.gpgsign=false", *args],
            cwd=repo,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        raise UserError("--to_hf_repo needs git on the PATH") from None
    except subprocess.CalledProcessError as err:
        last = (err.stderr.strip().splitlines() or [""])[-1]
        raise UserError(f"git {' '.join(args)} failed in {repo}: {last}") from None
    return done.stdout


def _has_lfs() -> bool:
    try:
        return subprocess.run(["git", "lfs", "version"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


def export_hub_repo(run_dir: Path, output_dir: Path) -> list[str]:
    """Every checkpoint of a run as branch stepN of a new git repository, the last one also on main."""
    from evaluation.checkpoints import find_checkpoints

    run_dir, output_dir = Path(run_dir), Path(output_dir)
    checkpoints = [(s, d) for s, d in find_checkpoints(run_dir) if s is not None]
    if not checkpoints:
        raise UserError(f"--to_hf_repo {run_dir}: no checkpoints/step_N folders")
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise UserError(f"--output_dir {output_dir} already exists and is not empty")
    for _, ckpt in checkpoints:  # refuse before writing anything: unknown tokenizer, unexportable model
        find_tokenizer(ckpt)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(output_dir)
    branches = [f"step{s}" for s, _ in checkpoints]
    lfs = _has_lfs()
    try:
        _git(tmp, "init", "-q", "-b", "main")
        if lfs:
            _git(tmp, "lfs", "install", "--local")
        for (step, ckpt), branch in zip(checkpoints, branches):
            _git(tmp, "checkout", "-q", "--orphan", branch)
            _git(tmp, "rm", "-rfq", "--ignore-unmatch", ".")
            export_hf_folder(ckpt, tmp)
            info = _read_json(ckpt / "checkpoint.json")
            write_text_atomic(tmp / "README.md", model_card(run_dir, step, info, branches))
            if lfs:  # before `git add`: the weights go in as LFS objects
                write_text_atomic(
                    tmp / ".gitattributes", "*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
                )
            _git(tmp, "add", "-A")
            _git(tmp, "commit", "-q", "-m", f"{run_dir.name}: step {step}")
        _git(tmp, "checkout", "-q", "-B", "main", branches[-1])  # main: the final model
        if output_dir.exists():
            output_dir.rmdir()
        os.replace(tmp, output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return branches


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
