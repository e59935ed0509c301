"""Pretraining instances on real books: masking statistics, NSP pairs, determinism, slicing, loader."""

import numpy as np
import pytest
import torch

from data.corpus import ProcessedCorpus, check_tokenizer_matches
from data.loader import PretrainingLoader
from data.masking import SpanMasking, SubwordMasking, WholeWordMasking, build_masking
from data.pretraining import PretrainingData, truncate_pair
from data.tokenization import save_tokenizer, train_tokenizer
from utils.errors import UserError

SPECIAL = {0, 1, 2, 3, 4}  # the fixture tokenizer's [PAD] [UNK] [CLS] [SEP] [MASK]


def collect(data: PretrainingData, n_sequences: int, global_batch: int = 512):
    """Batches covering >= n_sequences (over several epochs) with the unmasked tokens beside them."""
    out = []
    for step in range(-(-n_sequences // global_batch)):
        batch = data.batch(step, global_batch)
        epoch, indices = data.instance_indices(step, global_batch)
        batch["tokens"] = torch.from_numpy(data.build(indices, epoch)["tokens"])
        out.append(batch)
    return {k: torch.cat([b[k] for b in out]) for k in out[0]}


@pytest.mark.parametrize("masking", [SubwordMasking(), WholeWordMasking()], ids=repr)  # span: test_elc_span
def test_masking_statistics(processed_corpus, masking):
    data = PretrainingData(
        processed_corpus, 128, nsp=False, masking=masking, static_masking=False, data_seed=3
    )
    b = collect(data, 10_240)
    tokens, inputs, pos, labels = b["tokens"], b["input_ids"], b["masked_positions"], b["masked_labels"]
    assert tokens.shape[0] >= 10_000
    valid = labels != -100
    rows = torch.arange(len(tokens))[:, None].expand_as(pos)
    selected = torch.zeros_like(tokens, dtype=torch.bool)
    selected[rows[valid], pos[valid]] = True
    special = torch.isin(tokens, torch.tensor(sorted(SPECIAL)))
    # never a special token; labels are the original tokens; the rest of the input is untouched
    assert not (selected & special).any()
    assert torch.equal(labels[valid], tokens[rows[valid], pos[valid]])
    assert torch.equal(inputs[~selected], tokens[~selected])
    share = selected.sum().item() / (~special).sum().item()
    assert abs(share - 0.15) < 0.005, share
    chosen_in, chosen_orig = inputs[selected], tokens[selected]
    masked = (chosen_in == 4).float().mean().item()
    kept = (chosen_in == chosen_orig).float().mean().item()
    random = 1 - masked - kept
    assert abs(masked - 0.8) < 0.01 and abs(kept - 0.1) < 0.01 and abs(random - 0.1) < 0.01, (masked, kept)
    assert not torch.isin(chosen_in[chosen_in != 4], torch.tensor(sorted(SPECIAL))).any()
    assert valid.sum(1).max() <= data.max_predictions == 22  # ceil(128 * 0.15) + 2 slack slots
    # runs of consecutive masked positions: long for span masking, mostly single otherwise
    starts = selected & ~torch.cat([torch.zeros_like(selected[:, :1]), selected[:, :-1]], 1)
    mean_run = selected.sum().item() / starts.sum().item()
    assert mean_run > 2.0 if isinstance(masking, SpanMasking) else mean_run < 1.6, mean_run
    if isinstance(masking, WholeWordMasking):
        # a "##" piece is masked exactly when the token before it (same word) is
        cont = ~torch.from_numpy(data.vocab.word_start)[tokens] & ~special
        cont[:, 0] = False
        prev_selected = torch.cat([torch.zeros_like(selected[:, :1]), selected[:, :-1]], 1)
        assert torch.equal(selected[cont], prev_selected[cont])
        assert (selected & cont).sum() > 1000  # multi-piece words do get masked


def test_span_lengths_follow_elc_bert_distribution():
    span = SpanMasking()
    pmf = span.span_length_pmf()
    assert pmf.shape == (10,) and abs(pmf.sum() - 1) < 1e-9
    # ELC-BERT draws torch.tensor([0]).geometric_(1/3).item() % 10
    torch.manual_seed(0)
    elc = torch.empty(200_000).geometric_(1 / 3).long() % 10
    ours = span.span_lengths(np.random.default_rng(0).random(200_000))
    for draws in (elc.numpy(), ours):
        assert np.abs(np.bincount(draws, minlength=10) / len(draws) - pmf).max() < 0.004


def test_nsp_pairs(processed_corpus):
    data = PretrainingData(
        processed_corpus,
        128,
        nsp=True,
        masking=SubwordMasking(),
        static_masking=False,
        data_seed=5,
        layout="fixed_chunks",
    )
    corpus, off = data.corpus, data.offsets
    infos = [data.build(data.order(epoch), epoch) for epoch in range(4)]
    info = {k: np.concatenate([i[k] for i in infos]) for k in infos[0] if k != "mask_uniforms"}
    n = len(info["length"])
    assert n >= 10_000
    positive = ~info["is_random_next"]
    assert abs(positive.mean() - 0.5) < 0.02, positive.mean()
    assert info["length"].max() <= 128 and info["a_length"].min() >= 1 and info["b_length"].min() >= 1
    # positives: B continues A in the same document; negatives: B comes from another document
    pos_docs = info["document"][positive]
    assert np.array_equal(info["b_document"][positive], pos_docs)
    assert np.array_equal(info["b_sentences"][positive, 0], info["a_sentences"][positive, 1])
    boundary = off[info["a_sentences"][positive, 1]]
    a_end = info["a_start"][positive] + info["a_length"][positive]
    assert np.all(a_end <= boundary) and np.all(boundary <= info["b_start"][positive])
    assert np.all(info["b_document"][~positive] != info["document"][~positive])
    # the tokens are those of the corpus at the recorded places, [CLS] A [SEP] B [SEP] with types 0/1
    tokens = infos[0]["tokens"]
    for row in range(0, len(tokens), 97):
        la, lb = infos[0]["a_length"][row], infos[0]["b_length"][row]
        a0, b0 = infos[0]["a_start"][row], infos[0]["b_start"][row]
        expect = np.concatenate([[2], corpus.tokens[a0 : a0 + la], [3], corpus.tokens[b0 : b0 + lb], [3]])
        assert np.array_equal(tokens[row, : la + lb + 3], expect)
        assert np.all(tokens[row, la + lb + 3 :] == 0)
        types = infos[0]["token_types"][row]
        assert (
            types[: la + 2].sum() == 0
            and types[la + 2 : la + lb + 3].all()
            and types[la + lb + 3 :].sum() == 0
        )
    # short_p: a tenth of the instances aim at a shorter length, and are shorter
    short = info["target"] < 125
    assert abs(short.mean() - 0.1) < 0.02, short.mean()
    assert info["length"][short].mean() < 0.7 * info["length"][~short].mean()
    batch = data.batch(0, 64)
    assert batch["nsp_labels"].dtype == torch.long and set(batch["nsp_labels"].tolist()) == {0, 1}


def test_short_p_and_no_nsp_packing(processed_corpus):
    for short_p in (0.0, 0.3):
        data = PretrainingData(processed_corpus, 64, False, SubwordMasking(), False, 1, short_p=short_p)
        assert abs((data.targets < 62).mean() - short_p) < 0.02
    info = data.build(np.arange(len(data)), 0)
    # [CLS] text [SEP]: one segment, no type 1, filled to seq_length - 2 unless short or a document's end
    assert info["token_types"].sum() == 0
    full = info["target"] == 62
    assert np.median(info["length"][full]) == 64


def test_batches_are_a_pure_function_of_seed_and_step(processed_corpus):
    make = lambda seed, static=False: PretrainingData(  # noqa: E731
        processed_corpus, 64, True, WholeWordMasking(), static, seed, layout="fixed_chunks"
    )
    a, b, c = make(7), make(7), make(8)
    steps = a.steps_per_epoch(32)
    for step in (0, 1, steps - 1, steps, 3 * steps + 2):  # across epoch boundaries
        x, y, z = a.batch(step, 32), b.batch(step, 32), c.batch(step, 32)
        assert all(torch.equal(x[k], y[k]) for k in x)
        assert not torch.equal(x["input_ids"], z["input_ids"])
    # static masking: an instance is identical every epoch; dynamic: masked anew
    static, dynamic = make(7, static=True), a
    for data, same in ((static, True), (dynamic, False)):
        idx = np.arange(16)
        e0, e1 = data.build(idx, 0), data.build(idx, 1)
        m0 = data.masking(e0["tokens"], data.vocab, e0["mask_uniforms"], data.max_predictions)
        m1 = data.masking(e1["tokens"], data.vocab, e1["mask_uniforms"], data.max_predictions)
        assert np.array_equal(m0[0], m1[0]) == same
    assert not np.array_equal(a.order(0), a.order(1))  # every epoch its own order


def test_ranks_and_accumulation_slice_the_same_global_batch(processed_corpus):
    data = PretrainingData(processed_corpus, 64, True, SpanMasking(), False, 11)
    G = 16
    steps = data.steps_per_epoch(G)
    for step in (0, 5, steps, steps + 1):
        whole = data.batch(step, G)
        one_proc = [data.batch(step, G, micro_step=m, accumulation=2) for m in range(2)]
        two_ranks = [data.batch(step, G, rank=r, world_size=2) for r in range(2)]
        four = [data.batch(step, G, rank=r, world_size=4) for r in range(4)]
        two_by_two = [
            data.batch(step, G, rank=r, world_size=2, micro_step=m, accumulation=2)
            for r in range(2)
            for m in range(2)
        ]
        for k in whole:
            assert torch.equal(torch.cat([b[k] for b in one_proc]), whole[k])
            for m in range(2):
                assert torch.equal(one_proc[m][k], two_ranks[m][k])
            for i in range(4):
                assert torch.equal(two_by_two[i][k], four[i][k])
        assert whole["input_ids"].shape == (16, 64) and four[0]["input_ids"].shape == (4, 64)
    with pytest.raises(UserError, match="divisible"):
        data.batch(0, 10, world_size=4)


def test_loader_resumes_at_any_step(processed_corpus):
    data = PretrainingData(processed_corpus, 64, True, SubwordMasking(), False, 2, dupe_factor=1)  # bert
    G, steps = 8, data.steps_per_epoch(8)
    with PretrainingLoader(
        data, G, rank=1, world_size=2, accumulation=2, start_step=0, max_steps=steps + 3
    ) as a:
        from_zero = list(a)
    assert len(from_zero) == steps + 3 and all(len(micro) == 2 for micro in from_zero)
    k = steps - 1  # resume just before an epoch boundary
    resumed = list(
        PretrainingLoader(data, G, rank=1, world_size=2, accumulation=2, start_step=k, max_steps=steps + 3)
    )
    assert len(resumed) == 4
    for got, want in zip(resumed, from_zero[k:]):
        for g, w in zip(got, want):
            assert all(torch.equal(g[key], w[key]) for key in w)
    direct = data.batch(k, G, rank=1, world_size=2, micro_step=1, accumulation=2)
    assert all(torch.equal(resumed[0][1][key], direct[key]) for key in direct)
    with pytest.raises(UserError, match="divisible"):
        PretrainingLoader(data, 6, world_size=4)


def test_long_phase_and_validation(processed_corpus):
    short = PretrainingData(processed_corpus, 128, False, SubwordMasking(), False, 0)
    long = PretrainingData(processed_corpus, 512, False, SubwordMasking(), False, 0)
    # 4x longer instances, a quarter of the batch: about the same number of steps per epoch
    assert abs(long.steps_per_epoch(32) / short.steps_per_epoch(128) - 1) < 0.1
    batch = long.batch(0, 32)
    assert batch["input_ids"].shape == (32, 512) and batch["masked_positions"].shape == (32, 79)
    val = PretrainingData(processed_corpus, 128, True, SubwordMasking(), True, 0, split="validation")
    vb = val.batch(0, 16)
    assert vb["input_ids"].shape == (16, 128) and vb["attention_mask"].sum() > 16 * 64
    assert torch.equal(vb["input_ids"], val.batch(0, 16)["input_ids"])
    assert len(ProcessedCorpus(processed_corpus, "validation").tokens) < 0.2 * len(short.corpus.tokens)


def test_tokenizer_must_match_the_corpus(processed_corpus, tokenizer_path, tmp_path, fixture_books):
    check_tokenizer_matches(processed_corpus, tokenizer_path)
    PretrainingData(processed_corpus, 64, True, SubwordMasking(), False, 0, vocab_path=tokenizer_path)
    texts = ["The cat sat on the mat. It was a happy cat."] * 50
    other = tmp_path / "other.json"
    save_tokenizer(train_tokenizer(texts, vocab_size=60, lowercase=True), other)
    with pytest.raises(UserError, match="vocabulary"):
        PretrainingData(processed_corpus, 64, True, SubwordMasking(), False, 0, vocab_path=other)
    with pytest.raises(UserError, match="not found"):
        check_tokenizer_matches(processed_corpus, tmp_path / "missing.json")
    with pytest.raises(UserError, match="meta.json"):
        PretrainingData(tmp_path, 64, True, SubwordMasking(), False, 0)
    with pytest.raises(UserError, match="masking"):
        build_masking("random_words")


def test_truncate_pair_matches_bert():
    def bert(a, b, max_tokens):  # BERT's create_pretraining_data.truncate_seq_pair, on lengths
        while a + b > max_tokens:
            if a > b:
                a -= 1
            else:
                b -= 1
        return a, b

    rng = np.random.default_rng(0)
    la, lb = rng.integers(1, 300, 2000), rng.integers(1, 300, 2000)
    new_a, new_b = truncate_pair(la, lb, 125)
    assert [bert(a, b, 125) for a, b in zip(la.tolist(), lb.tolist())] == list(
        zip(new_a.tolist(), new_b.tolist())
    )
