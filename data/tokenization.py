"""WordPiece tokenizers: train, convert a BERT vocab.txt, load, and describe special ids.

Our own tokenizers put [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4 (and, optionally, ELC-BERT's
[PAR]=5 [TAB]=6); a converted bert-base-uncased vocab keeps its own ids, so code asks `special_ids()`.
"""

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from data.wordpiece_training import count_words, train_wordpiece_vocab
from utils.errors import UserError
from utils.files import write_text_atomic

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ELC_EXTRA_TOKENS = ["[PAR]", "[TAB]"]
BYTE_WORD_START = "\u0120"  # "Ġ": the byte-level pre-tokeniser's marker of a word that follows a space


@dataclass(frozen=True)
class SpecialIds:
    pad: int
    unk: int
    cls: int
    sep: int
    mask: int

    def to_dict(self) -> dict:
        return asdict(self)


def load_tokenizer(path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"tokenizer file not found: {path}")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # the Rust side raises plain Exception on bad JSON
        raise UserError(f"{path} is not a tokenizers JSON file ({str(err).splitlines()[0]})") from None


def special_ids(tokenizer: Tokenizer) -> SpecialIds:
    ids = {}
    for name, token in zip(["pad", "unk", "cls", "sep", "mask"], SPECIAL_TOKENS):
        ids[name] = tokenizer.token_to_id(token)
        if ids[name] is None:
            raise UserError(f"the tokenizer has no {token} token")
    return SpecialIds(**ids)


def all_special_ids(tokenizer: Tokenizer) -> list[int]:
    """Ids of every added special token ([PAD] ... and [PAR]/[TAB] when present): never masked or drawn."""
    ids = {i for i, tok in tokenizer.get_added_tokens_decoder().items() if tok.special}
    return sorted(ids | set(special_ids(tokenizer).to_dict().values()))


def is_byte_level(tokenizer: Tokenizer) -> bool:
    return "ByteLevel" in json.dumps(json.loads(tokenizer.to_str()).get("pre_tokenizer"))


def word_start_table(tokenizer: Tokenizer) -> np.ndarray:
    """[vocab] bool: True where a token begins a word (WordPiece: not '##'; byte-level: starts with 'Ġ')."""
    vocab = tokenizer.get_vocab()
    table = np.ones(tokenizer.get_vocab_size(), dtype=bool)
    byte_level = is_byte_level(tokenizer)
    for token, i in vocab.items():
        table[i] = token.startswith(BYTE_WORD_START) if byte_level else not token.startswith("##")
    table[all_special_ids(tokenizer)] = True
    return table


def tokenizer_hash(tokenizer: Tokenizer) -> str:
    """sha256 of the tokenizer's canonical JSON: equal hashes tokenize identically."""
    canonical = json.dumps(json.loads(tokenizer.to_str()), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _pipeline(tokenizer: Tokenizer, lowercase: bool, byte_level: bool) -> Tokenizer:
    """Normaliser, pre-tokeniser, decoder: BERT's by default, ELC-BERT's byte-level one as an option."""
    if byte_level:
        if lowercase:
            tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.ByteLevel(add_prefix_space=True), pre_tokenizers.Digits(individual_digits=True)]
        )
        tokenizer.decoder = decoders.ByteLevel()
    else:
        # strip_accents=None follows lowercase, exactly like bert-base-uncased / bert-base-cased
        tokenizer.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
        )
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


def _add_post_processor(tokenizer: Tokenizer) -> Tokenizer:
    """[CLS] A [SEP] (B [SEP]) with token types, so transformers' fast tokenizer encodes pairs like BERT."""
    ids = special_ids(tokenizer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids.cls), ("[SEP]", ids.sep)],
    )
    return tokenizer


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    min_frequency: int = 2,
    lowercase: bool = False,
    byte_level: bool = False,
    elc_tokens: bool = False,
) -> Tokenizer:
    """Train WordPiece on an iterator of texts; special tokens get ids 0.. in SPECIAL_TOKENS order.

    BERT's "##" WordPiece is learned by data.wordpiece_training (tokenizers' trainer, made deterministic);
    ELC-BERT's byte-level one by tokenizers' trainer itself, which is deterministic without a prefix."""
    if vocab_size < len(SPECIAL_TOKENS) + 2:
        raise UserError(f"--vocab_size {vocab_size} is too small")
    special = SPECIAL_TOKENS + (ELC_EXTRA_TOKENS if elc_tokens else [])
    if not byte_level:
        pipeline = _pipeline(Tokenizer(models.WordPiece(unk_token="[UNK]")), lowercase, byte_level)
        words = count_words(texts, pipeline)
        vocab = train_wordpiece_vocab(words, vocab_size, min_frequency, special, prefix="##")
        model = models.WordPiece(
            {t: i for i, t in enumerate(vocab)}, unk_token="[UNK]", max_input_chars_per_word=100
        )
        tokenizer = _pipeline(Tokenizer(model), lowercase, byte_level)
        tokenizer.add_special_tokens(special)
        return _add_post_processor(_canonical_ids(tokenizer, special))
    # ELC-BERT's byte-level WordPiece marks word starts instead of continuations: no prefix
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix=""))
    _pipeline(tokenizer, lowercase, byte_level)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=special,
        continuing_subword_prefix="",
        limit_alphabet=1000,
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return _add_post_processor(_canonical_ids(tokenizer, special))


def _canonical_ids(tokenizer: Tokenizer, special: list[str]) -> Tokenizer:
    """Number the learned tokens in sorted order after the specials: the trainer breaks ties between
    equally frequent merges (and orders its alphabet) differently from run to run, while the token set
    it learns, and so the tokenisation, is the same; sorted ids make training reproducible."""
    spec = json.loads(tokenizer.to_str())
    rest = sorted(t for t in spec["model"]["vocab"] if t not in special)
    spec["model"]["vocab"] = {t: i for i, t in enumerate(special + rest)}
    return Tokenizer.from_str(json.dumps(spec))


def read_vocab_txt(path) -> dict[str, int]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"vocabulary file not found: {path}")
    try:
        tokens = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8") from None
    if tokens and tokens[-1] == "":
        tokens.pop()
    vocab = {}
    for i, token in enumerate(tokens):
        token = token.rstrip("\r")
        if token in vocab:
            raise UserError(f"{path}: token {token!r} appears twice (lines {vocab[token] + 1} and {i + 1})")
        vocab[token] = i
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise UserError(f"{path} lacks the special tokens {' '.join(missing)}")
    return vocab


def tokenizer_from_vocab(path, lowercase: bool | None = None) -> tuple[Tokenizer, bool]:
    """A BERT vocab.txt (bert-base-uncased, MultiBERTs) as a tokenizer; lowercase=None detects it."""
    vocab = read_vocab_txt(path)
    if lowercase is None:  # an uncased vocab has no capital letters outside its [BRACKETED] specials
        lowercase = not any(c.isupper() for t in vocab if not t.startswith("[") for c in t)
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    _pipeline(tokenizer, lowercase, byte_level=False)
    present = [t for t in SPECIAL_TOKENS + ELC_EXTRA_TOKENS if t in vocab]
    tokenizer.add_special_tokens(present)
    return _add_post_processor(tokenizer), lowercase


def save_tokenizer(tokenizer: Tokenizer, path) -> Path:
    """Write FILE.json and a vocab.txt beside it (FILE.vocab.txt unless FILE is tokenizer.json)."""
    path = Path(path)
    vocab_path = path.with_name("vocab.txt" if path.name == "tokenizer.json" else path.stem + ".vocab.txt")
    by_id = sorted(tokenizer.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
    write_text_atomic(path, tokenizer.to_str(pretty=True))  # as Tokenizer.save writes it
    write_text_atomic(vocab_path, "".join(token + "\n" for token, _ in by_id))
    return vocab_path


def encode_words(tokenizer: Tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of many texts (no special tokens): (ids [n_tokens] int64, tokens per text [n_texts]).

    Both pipelines split at whitespace before anything else and treat each piece alike wherever it
    stands, so each distinct whitespace-separated word is encoded once and the text's ids gathered
    from those: ten times faster on books than encoding every text (tests check they are equal).
    """
    words = [text.split() for text in texts]
    index: dict[str, int] = {}
    word_idx = np.fromiter((index.setdefault(w, len(index)) for ws in words for w in ws), dtype=np.int64)
    encoded = [enc.ids for enc in tokenizer.encode_batch_fast(list(index), add_special_tokens=False)]
    lens = np.array([len(e) for e in encoded], dtype=np.int64)
    flat = np.fromiter((i for e in encoded for i in e), dtype=np.int64, count=int(lens.sum()))
    starts = np.cumsum(lens) - lens
    # ragged gather: the ids of word_idx[0], then of word_idx[1], ...
    n = lens[word_idx]  # [n_words] tokens per word occurrence
    out_starts = np.cumsum(n) - n
    ids = flat[np.repeat(starts[word_idx] - out_starts, n) + np.arange(int(n.sum()))]
    word_bounds = np.cumsum([0] + [len(ws) for ws in words])  # [n_texts + 1]
    token_bounds = np.concatenate([[0], np.cumsum(n)])
    return ids, token_bounds[word_bounds[1:]] - token_bounds[word_bounds[:-1]]


def f95(tokenizer: Tokenizer, texts: list[str]) -> int:
    """ELC-BERT's F95: the frequency of the subword at the 95th percentile of the frequency ranking."""
    # Both pre-tokenisers split at whitespace, so encoding each distinct word once and weighting it by
    # its count gives the same subword counts as encoding every text, twenty times faster.
    words = Counter(w for text in texts for w in text.split())
    ids = [enc.ids for enc in tokenizer.encode_batch_fast(list(words), add_special_tokens=False)]
    weights = np.repeat(np.fromiter(words.values(), dtype=np.int64), [len(i) for i in ids])
    flat = np.fromiter((i for word_ids in ids for i in word_ids), dtype=np.int64, count=len(weights))
    counts = np.bincount(flat, weights=weights, minlength=tokenizer.get_vocab_size())
    ranked = np.sort(counts[counts > 0])[::-1]
    return int(ranked[len(ranked) * 95 // 100]) if len(ranked) else 0
