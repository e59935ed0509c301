"""Hub-style export: a run as a git repository, one branch per checkpoint, each a complete Hugging Face folder
whose model (transformers, after a checkout) and tokenizer (AutoTokenizer) equal ours."""

import subprocess

import pytest
import torch
from conftest import micro_pretrain_flags

from model.convert import main as convert_main
from model.io import load_model
from utils.errors import UserError

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def micro_run(processed_corpus, tokenizer_path, tmp_path_factory):
    """A 30k-parameter BERT trained 4 steps with checkpoints at 0, 2 and 4."""
    import train_pretrain

    tmp = tmp_path_factory.mktemp("hub_run")
    flags = dict(output_dir=tmp / "run", max_steps=4, checkpoint_steps="0,2", warmup_steps=1, seed=0)
    train_pretrain.main(micro_pretrain_flags(tmp, processed_corpus, tokenizer_path, **flags))
    return tmp / "run"


def real_sentences(data_root, n=12):
    text = (data_root / "corpus" / "gutenberg" / "dev").glob("*.txt")
    lines = [
        line.strip() for line in next(iter(sorted(text))).read_text().splitlines()[200:2000] if line.strip()
    ]
    return lines[:n] + ["[MASK] is a token, and Ünïcödé naïve café — “quotes”!"]


def test_every_branch_loads_in_transformers_with_equal_outputs_and_tokenizer(
    micro_run, tokenizer_path, data_root, tmp_path
):
    from data.tokenization import load_tokenizer

    repo = tmp_path / "repo"
    convert_main(["--to_hf_repo", str(micro_run), "--output_dir", str(repo)])
    branches = subprocess.run(
        ["git", "branch", "--format=%(refname:short)"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(branches) == ["main", "step0", "step2", "step4"]
    heads = {
        b: subprocess.run(["git", "rev-parse", b], cwd=repo, capture_output=True, text=True).stdout
        for b in branches
    }
    assert heads["main"] == heads["step4"]  # main: the final model
    ours_tok = load_tokenizer(tokenizer_path)
    sentences = real_sentences(data_root)
    for step in (0, 2, 4):
        clone = tmp_path / f"clone_{step}"
        subprocess.run(["git", "clone", "-q", "-b", f"step{step}", str(repo), str(clone)], check=True)
        hf_tok = transformers.AutoTokenizer.from_pretrained(clone)
        for s in sentences:
            assert hf_tok(s)["input_ids"] == ours_tok.encode(s).ids  # [CLS] ... [SEP] included
        pair = hf_tok(sentences[0], sentences[1])
        mine = ours_tok.encode(sentences[0], sentences[1])
        assert pair["input_ids"] == mine.ids and pair["token_type_ids"] == mine.type_ids
        batch = hf_tok(sentences, padding=True, truncation=True, max_length=64, return_tensors="pt")
        hf = transformers.BertForPreTraining.from_pretrained(clone, attn_implementation="eager").eval()
        ours = load_model(micro_run / "checkpoints" / f"step_{step}").eval()
        with torch.no_grad():
            want = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            got = hf(**batch)
        keep = batch["attention_mask"].bool()
        torch.testing.assert_close(got.prediction_logits[keep], want.mlm_logits[keep], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got.seq_relationship_logits, want.nsp_logits, atol=1e-5, rtol=1e-5)
    # weights differ between branches: each branch holds its own checkpoint
    a = transformers.BertForPreTraining.from_pretrained(tmp_path / "clone_0").bert.embeddings.word_embeddings
    b = transformers.BertForPreTraining.from_pretrained(tmp_path / "clone_4").bert.embeddings.word_embeddings
    assert not torch.equal(a.weight, b.weight)


def test_single_folder_export_has_the_tokenizer_and_refusals(micro_run, tokenizer_path, tmp_path):
    out = tmp_path / "hf"
    convert_main(["--to_hf", str(micro_run / "checkpoints" / "step_4"), "--output_dir", str(out)])
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        assert (out / name).is_file(), name
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    assert hf_tok.mask_token_id == 4 and hf_tok.pad_token_id == 0 and hf_tok.model_max_length == 64
    with pytest.raises(UserError, match="not empty"):
        convert_main(["--to_hf_repo", str(micro_run), "--output_dir", str(out)])
    with pytest.raises(UserError, match="no checkpoints"):
        convert_main(["--to_hf_repo", str(tmp_path), "--output_dir", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()
