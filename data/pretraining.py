"""Pretraining instances and batches from a processed corpus, reproducible from (data seed, step).

Two instance layouts (`layout`, the --instance_layout flag):

"bert" (the default with NSP): google-research/bert's create_pretraining_data.py (commit eedf571), rule
for rule, as BERT, MultiBERTs and EarlyBERTs were trained: see data/bert_layout.py (targets per document,
put-back of unused sentences under a random B, one-sentence chunks, truncation with a coin per removed
token, its mask count, whole-vocabulary replacements) with dupe_factor copies, each its own layout,
pairing and masks, visited in one fixed permutation that is the same every pass (the reference's file).

"bert_exact" (opt-in): the same rules drawn from Python's random.Random(data seed) in the reference's
order (data/bert_exact.py), so data seed s gives the very instances of the reference run with
--random_seed s; built once by a sequential Python pass, masks stored (static by nature).

"fixed_chunks" (the default without NSP; ours): each document is cut into chunks of whole sentences once
per data seed: sentences are added until the chunk holds its target length, which is the maximum
(seq_length - 3 with NSP, seq_length - 2 without) or, with probability short_p (drawn per chunk), uniform
in [2, maximum]. With NSP a chunk has at least two sentences where the document has them (a lone last
sentence joins the chunk before it). Instance i in epoch e is a pure function of the Generator seeded
with (data_seed, e, i) (e = 0 for static masking, so an instance is the same every epoch):
  NSP    [CLS] A [SEP] B [SEP]: A = the chunk's first 1..n-1 sentences; B = the rest (label 0, IsNext)
         or, half of the time, sentences from a random other document filling the target (label 1,
         the chunk's other sentences unused); the pair is cut to seq_length - 3 (truncate_seq_pair's
         lengths, the cut split uniformly between front and back).
  no-NSP [CLS] chunk [SEP], cut to its target (ELC-BERT / RoBERTa full-sentences; the sentence cut off
         at the end of a full chunk starts the next, as ELC-BERT).
  Masks: ours (data/masking.py: stochastic rounding of mask_p x the non-special tokens).
Order: epoch e visits the instances in a permutation seeded with (data_seed, e) (bert: one permutation
for every pass; static masking keys the instance streams by e = 0). Global batch k is
instances [k*G, (k+1)*G) of that order; rank r takes slice r of W, and accumulation micro-step m
slice m of A of the rank's share, so (W ranks, accumulation A) see the same tokens at every step for
any W*A, and one process with accumulation 2 sees what two ranks see, concatenated.
"""

import math
import threading

import numpy as np
import torch

from data.bert_exact import apply_stored_masks, cached_exact_layout
from data.bert_layout import (
    bert_layout,
    bert_mask_count,
    bert_max_predictions,
    bert_pairs,
    cached_layout,
    corpus_fingerprint,
    truncate_pair,
)
from data.corpus import ProcessedCorpus, check_tokenizer_matches
from data.masking import MaskingStrategy, SpanMasking, VocabInfo
from data.tokenization import all_special_ids, word_start_table
from utils.errors import UserError

# first word of every SeedSequence: keeps the random streams of different uses apart
LAYOUT_STREAM, ORDER_STREAM, INSTANCE_STREAM = 0x1A70, 0x0DE5, 0x1E57
PAIR_UNIFORMS = 6  # A/B split, IsNext coin, random document, its first sentence, front cuts of A and B
PREDICTION_SLACK = 2  # extra [b,P] slots beyond ceil(seq_length * mask_p): shapes stay fixed
LAYOUTS = ("bert", "bert_exact", "fixed_chunks")
__all__ = ["LAYOUTS", "PretrainingData", "resolve_layout", "truncate_pair"]


def resolve_layout(layout: str | None, nsp: bool, dupe_factor: int | None) -> tuple[str, int]:
    """(layout, dupe_factor) a run uses: None takes the default, bert's create_pretraining_data with NSP and
    its 10 copies (bert, bert_exact), fixed_chunks (one copy) without NSP. The run saves these values."""
    layout = layout or ("bert" if nsp else "fixed_chunks")
    return layout, (10 if layout != "fixed_chunks" else 1) if dupe_factor is None else dupe_factor


class PretrainingData:
    def __init__(
        self,
        corpus_dir,
        seq_length: int,
        nsp: bool,
        masking: MaskingStrategy,
        static_masking: bool,
        data_seed: int,
        short_p: float = 0.1,
        max_predictions: int | None = None,
        split: str = "train",
        vocab_path=None,
        layout: str | None = None,
        dupe_factor: int | None = None,
        cache_dir=None,
    ):
        """layout None: "bert" with NSP, "fixed_chunks" without; dupe_factor None: 10 (the reference's
        default) for bert, 1 for fixed_chunks (which has no copies); cache_dir: where the bert layout is
        cached (None: <corpus_dir>/layout_cache, False: not cached)."""
        if vocab_path is not None:
            check_tokenizer_matches(corpus_dir, vocab_path)
        if data_seed < 0:
            raise UserError(f"data seed {data_seed} must be >= 0")
        if not 0 <= short_p <= 1:
            raise UserError(f"--short_p {short_p} must be in [0, 1]")
        if seq_length < 8:
            raise UserError(f"--seq_length {seq_length} is too short (at least 8)")
        layout, dupe_factor = resolve_layout(layout, nsp, dupe_factor)
        if layout not in LAYOUTS:
            raise UserError(f"--instance_layout {layout!r} must be one of {', '.join(LAYOUTS)}")
        bert = layout != "fixed_chunks"  # bert or bert_exact
        if bert and not nsp:
            raise UserError(
                f"--instance_layout {layout} makes sentence pairs: it needs NSP (use fixed_chunks)"
            )
        if layout == "bert_exact" and (isinstance(masking, SpanMasking) or not static_masking):
            raise UserError(
                "--instance_layout bert_exact stores the reference's masks: it needs --static_masking and "
                "--masking subword or whole_word"
            )
        if dupe_factor < 1 or (layout == "fixed_chunks" and dupe_factor != 1):
            raise UserError(f"--dupe_factor {dupe_factor}: must be >= 1 with bert, 1 with fixed_chunks")
        self.corpus = ProcessedCorpus(corpus_dir, split)
        self.layout, self.dupe_factor = layout, dupe_factor
        self.seq_length, self.nsp = seq_length, nsp
        self.masking = masking.as_in_bert() if bert else masking
        self.static_masking, self.data_seed, self.short_p = static_masking, data_seed, short_p
        self.max_tokens = seq_length - (3 if nsp else 2)
        default_p = (
            bert_max_predictions(seq_length, masking.mask_p)
            if bert
            else math.ceil(seq_length * masking.mask_p) + PREDICTION_SLACK
        )
        self.max_predictions = max_predictions or default_p
        if isinstance(masking, SpanMasking) and not max_predictions:
            self.max_predictions = seq_length  # its binomial counts are unbounded: slots for every case
        if nsp and self.corpus.n_documents < 2:
            hint = " (preprocess with a larger --validation_fraction)" if split == "validation" else ""
            raise UserError(
                f"{corpus_dir} ({split}) has {self.corpus.n_documents} document(s); NSP needs two{hint}"
            )
        tokenizer = self.corpus.tokenizer()
        special = np.zeros(self.corpus.vocab_size, dtype=bool)
        special[all_special_ids(tokenizer)] = True
        self.ids = self.corpus.special_ids
        self.vocab = VocabInfo(self.ids.mask, special, word_start_table(tokenizer), np.flatnonzero(~special))
        self.offsets = self.corpus.sentence_offsets  # [n_sent + 1] token offset of each sentence
        if bert:
            # BERT's candidates: every token but [CLS]/[SEP] (and our padding); replacements: any id
            reference_special = np.zeros_like(special)
            reference_special[[self.ids.cls, self.ids.sep, self.ids.pad]] = True
            self.vocab = VocabInfo(
                self.ids.mask, reference_special, self.vocab.word_start, np.arange(self.corpus.vocab_size)
            )
            self.bert = self._bert_layout(cache_dir)
            n_instances = len(self.bert["target"])
        else:
            self.chunks, self.targets = self._layout()
            n_instances = len(self.chunks)
        if n_instances == 0:
            raise UserError(f"{corpus_dir} ({split}) has no text to make instances from")
        self._order_cache = (None, None)
        self._local = threading.local()  # one reusable Philox per thread (the loader builds in its own)

    def _bert_layout(self, cache_dir) -> dict:
        args = (self.offsets, self.corpus.document_offsets, self.max_tokens, self.short_p, self.data_seed)
        options = dict(
            corpus=corpus_fingerprint(self.corpus),
            max_tokens=self.max_tokens,
            short_p=self.short_p,
            data_seed=self.data_seed,
            dupe_factor=self.dupe_factor,
        )
        folder = self.corpus.dir / "layout_cache" if cache_dir is None else cache_dir or None
        if self.layout == "bert_exact":
            return cached_exact_layout(self, folder, options)
        return cached_layout(folder, options, lambda: bert_layout(*args, self.dupe_factor))

    def _layout(self) -> tuple[np.ndarray, np.ndarray]:
        """-> chunks [n, 3] (document, first sentence, end sentence), targets [n] token counts."""
        rng = self._rng(LAYOUT_STREAM, self.data_seed)
        n_sent = self.corpus.n_sentences
        short = rng.random(n_sent) < self.short_p  # one draw per possible chunk (at most one per sentence)
        targets = np.where(short, rng.integers(2, self.max_tokens + 1, size=n_sent), self.max_tokens)
        doc_bounds, offsets = self.corpus.document_offsets, self.offsets
        chunks, chunk_targets, j = [], [], 0
        for doc in range(self.corpus.n_documents):
            s, doc_end, first = int(doc_bounds[doc]), int(doc_bounds[doc + 1]), len(chunks)
            while s < doc_end:
                target = int(targets[j])
                e = int(np.searchsorted(offsets, offsets[s] + target, side="left"))  # first e holding target
                e = min(max(e, s + (2 if self.nsp else 1)), doc_end)
                if self.nsp and e - s == 1 and len(chunks) > first:
                    chunks[-1][2] = e  # a lone last sentence joins the chunk before
                else:
                    chunks.append([doc, s, e])
                    chunk_targets.append(target)
                    j += 1
                # without NSP the sentence cut off at the end of a full chunk starts the next (ELC-BERT)
                cut = offsets[e] - offsets[s] > target
                s = e - 1 if (not self.nsp and cut and e - s > 1) else e
        return np.array(chunks, dtype=np.int64).reshape(-1, 3), np.array(chunk_targets, dtype=np.int64)

    @staticmethod
    def _rng(*words) -> np.random.Generator:
        return np.random.Generator(np.random.Philox(np.random.SeedSequence([int(w) for w in words])))

    def instance_rng(self, index: int, epoch: int) -> np.random.Generator:
        """The random stream of one instance: Philox keyed by SeedSequence((stream, data seed, epoch)),
        started at counter `index`. Counter-based streams are independent, so this is the same as a
        generator seeded with (data seed, epoch, index), but reusing one generator is ten times faster."""
        local = self._local
        if getattr(local, "epoch", None) != epoch:
            seq = np.random.SeedSequence([INSTANCE_STREAM, self.data_seed, epoch])
            local.key, local.epoch = seq.generate_state(2, np.uint64), epoch
            local.bitgen = np.random.Philox(key=local.key)
            local.generator = np.random.Generator(local.bitgen)
        local.bitgen.state = {
            "bit_generator": "Philox",
            "state": {"counter": np.array([0, 0, index, 0], dtype=np.uint64), "key": local.key},
            "buffer": np.zeros(4, dtype=np.uint64),
            "buffer_pos": 4,
            "has_uint32": 0,
            "uinteger": 0,
        }
        return local.generator

    def __len__(self) -> int:
        return len(self.bert["target"]) if self.layout != "fixed_chunks" else len(self.chunks)

    def steps_per_epoch(self, global_batch_size: int) -> int:
        steps = len(self) // global_batch_size
        if steps == 0:
            raise UserError(
                f"global batch size {global_batch_size} exceeds the {len(self)} instances of "
                f"{self.corpus.dir} ({self.corpus.split})"
            )
        return steps

    def order(self, epoch: int) -> np.ndarray:
        """[n] the instance indices in the order epoch `epoch` visits them."""
        if self.layout != "fixed_chunks":
            return self.bert["order"]  # the same every pass, as one file read again
        if self._order_cache[0] != epoch:
            self._order_cache = (epoch, self._rng(ORDER_STREAM, self.data_seed, epoch).permutation(len(self)))
        return self._order_cache[1]

    def build(self, indices: np.ndarray, epoch: int) -> dict:
        """Unmasked instances [b,S] (vectorised over the batch) with where their tokens came from."""
        b, S, off, ids = len(indices), self.seq_length, self.offsets, self.ids
        stream_epoch = 0 if self.static_masking else epoch
        bert, exact = self.layout != "fixed_chunks", self.layout == "bert_exact"
        n_pair = PAIR_UNIFORMS if self.nsp and not bert else 0
        u = np.empty((b, 0 if exact else n_pair + self.masking.n_uniforms(S)))
        if bert:
            pair = bert_pairs(self.bert, indices, off, self.max_tokens)
            cuts, front = np.stack([pair["cut_a"], pair["cut_b"]], 1), np.empty((b, 2), dtype=np.int64)
            if exact:  # the reference's coins, stored
                front = np.asarray(self.bert["front"][indices], dtype=np.int64)
        for row, index in enumerate(() if exact else indices):  # each instance's own stream (per-row Python)
            g = self.instance_rng(int(index), stream_epoch)
            u[row] = g.random(u.shape[1])
            if bert:  # tokens cut from the front: a coin per removed token
                front[row] = g.binomial(cuts[row], 0.5)
        if bert:
            s, a_end = pair["a_sentences"].T
            b_s, b_e = pair["b_sentences"].T
            doc = np.searchsorted(self.corpus.document_offsets, s, side="right") - 1
            b_doc = np.searchsorted(self.corpus.document_offsets, b_s, side="right") - 1
            is_random, target, len_a, len_b = (
                pair[k] for k in ("is_random_next", "target", "a_length", "b_length")
            )
            a_start, b_start = pair["a_start"] + front[:, 0], pair["b_start"] + front[:, 1]
        else:
            doc, s, e = self.chunks[indices].T
            target = self.targets[indices]
        if self.nsp and not bert:
            n = e - s
            a_end = np.where(n > 1, s + 1 + np.floor(u[:, 0] * (n - 1)).astype(np.int64), e)
            is_random = (n == 1) | (u[:, 1] < 0.5)
            # a random next: another document, from a random sentence on, as much as fills the target
            docs = self.corpus.document_offsets
            r_doc = np.floor(u[:, 2] * (self.corpus.n_documents - 1)).astype(np.int64)
            r_doc += r_doc >= doc
            r_s = docs[r_doc] + np.floor(u[:, 3] * (docs[r_doc + 1] - docs[r_doc])).astype(np.int64)
            want = np.maximum(1, target - (off[a_end] - off[s]))
            r_e = np.clip(np.searchsorted(off, off[r_s] + want, side="left"), r_s + 1, docs[r_doc + 1])
            b_doc, b_s, b_e = (np.where(is_random, x, y) for x, y in ((r_doc, doc), (r_s, a_end), (r_e, e)))
            full_a, full_b = off[a_end] - off[s], off[b_e] - off[b_s]
            len_a, len_b = truncate_pair(full_a, full_b, self.max_tokens)
            # the dropped tokens are split between front and back uniformly (the bert layout: a coin each)
            a_start = off[s] + np.floor(u[:, 4] * (full_a - len_a + 1)).astype(np.int64)
            b_start = off[b_s] + np.floor(u[:, 5] * (full_b - len_b + 1)).astype(np.int64)
        elif not bert:
            a_end, len_a, a_start = e, np.minimum(off[e] - off[s], target), off[s]
            len_b = b_start = np.zeros(b, dtype=np.int64)
        j = np.arange(S)[None, :]
        la, lb = len_a[:, None], len_b[:, None]
        in_a, in_b = (j >= 1) & (j <= la), (j >= la + 2) & (j < la + 2 + lb)
        src = np.where(in_a, a_start[:, None] + j - 1, np.where(in_b, b_start[:, None] + j - la - 2, 0))
        tokens = np.where(in_a | in_b, self.corpus.tokens[src], ids.pad).astype(np.int64)
        tokens[:, 0] = ids.cls
        length = len_a + 2 + (len_b + 1 if self.nsp else 0)
        tokens[j == la + 1] = ids.sep
        if self.nsp:
            tokens[j == la + 2 + lb] = ids.sep
        out = {
            "tokens": tokens,  # [b,S]
            "token_types": ((j >= la + 2) & (j < length[:, None])).astype(np.int64),
            "length": length,
            "document": doc,
            "a_sentences": np.stack([s, a_end], 1),
            "a_start": a_start,
            "a_length": len_a,
            "target": target,
            "mask_uniforms": u[:, n_pair:],
            **({"copy": pair["copy"]} if bert else {}),
        }
        if self.nsp:
            out.update(
                is_random_next=is_random,
                b_document=b_doc,
                b_sentences=np.stack([b_s, b_e], 1),
                b_start=b_start,
                b_length=len_b,
            )
        return out

    def instance_indices(self, step, global_batch_size, rank=0, world_size=1, micro_step=0, accumulation=1):
        """[b] the instances of micro-batch (rank, micro_step) of global batch `step`."""
        if global_batch_size % (world_size * accumulation):
            raise UserError(
                f"global batch size {global_batch_size} is not divisible by world size {world_size} x "
                f"gradient accumulation {accumulation}"
            )
        if not (0 <= rank < world_size and 0 <= micro_step < accumulation):
            raise ValueError(f"rank {rank}/{world_size}, micro-step {micro_step}/{accumulation} out of range")
        steps = self.steps_per_epoch(global_batch_size)
        epoch, k = divmod(step, steps)
        b = global_batch_size // (world_size * accumulation)
        first = k * global_batch_size + (rank * accumulation + micro_step) * b
        return epoch, self.order(epoch)[first : first + b]

    def batch(self, step, global_batch_size, rank=0, world_size=1, micro_step=0, accumulation=1) -> dict:
        """Fixed-shape tensors of one micro-batch: input_ids, token_type_ids, attention_mask [b,S],
        masked_positions, masked_labels [b,P] (padding: position 0, label -100), nsp_labels [b];
        span masking also masked_dropped [b], its masked tokens that had no slot."""
        epoch, indices = self.instance_indices(
            step, global_batch_size, rank, world_size, micro_step, accumulation
        )
        inst = self.build(indices, epoch)
        mask_args = (inst["tokens"], self.vocab, inst["mask_uniforms"], self.max_predictions)
        dropped = None
        if isinstance(self.masking, SpanMasking):  # the only strategy whose count can exceed the slots
            input_ids, positions, labels, dropped = self.masking.mask_counting_dropped(*mask_args)
        elif self.layout == "bert_exact":
            stored = self.bert["mask_positions"][indices], self.bert["mask_ids"][indices]
            input_ids, positions, labels = apply_stored_masks(inst["tokens"], *stored)
        else:
            n_target = None  # ours: data.masking's count
            if self.layout == "bert":
                n_target = bert_mask_count(inst["length"], self.masking.mask_p, self.max_predictions)
            input_ids, positions, labels = self.masking(*mask_args, n_target)
        out = {
            "input_ids": input_ids,
            "token_type_ids": inst["token_types"],
            "attention_mask": (np.arange(self.seq_length)[None, :] < inst["length"][:, None]).astype(
                np.int64
            ),
            "masked_positions": positions,
            "masked_labels": labels,
        }
        if self.nsp:
            out["nsp_labels"] = inst["is_random_next"].astype(np.int64)  # 0: B follows A, 1: B is random
        if dropped is not None:
            out["masked_dropped"] = dropped.astype(np.int64)  # [b] masked tokens without a slot
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}
