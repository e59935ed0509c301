"""Deterministic training of BERT's "##" WordPiece vocabulary with tokenizers' own trainer.

tokenizers' WordPieceTrainer with continuing_subword_prefix="##" gives its "##c" symbols ids in the
hash-map order of the word counts, and those ids break ties between equally frequent merges, so two
trainings on the same text can learn different vocabularies (huggingface/tokenizers#1794). Without a
prefix the trainer is deterministic: its alphabet gets ids in code-point order. So we count words here,
spell each word's non-initial characters as distinct private-use "continuing" symbols, train without a
prefix, and spell the learned tokens back with "##". The result is what the "##" trainer learns, with
ties between equally frequent merges broken by code point instead of by chance.
"""

from collections import Counter
from collections.abc import Iterable, Iterator

from tokenizers import Tokenizer, models, pre_tokenizers, trainers

LIMIT_ALPHABET = 1000  # BERT's recipe: at most 1000 distinct characters, the rarer ones dropped
CONTINUING_BASE = 0xF0000  # supplementary private use area A: continuing symbols start here
FEED_CHUNK_CHARS = 1 << 20  # the trainer is fed ~1 MB strings of repeated words


def count_words(texts: Iterable[str], tokenizer: Tokenizer, batch: int = 1000) -> Counter:
    """The trainer's word counts: each text normalised and pre-tokenised by `tokenizer`'s pipeline.

    BERT's normaliser works character by character and its pre-tokeniser splits at whitespace first,
    so we normalise ~1000 texts at a time (joined by a newline, which it turns into a space), count the
    whitespace-separated chunks, and pre-tokenise each distinct chunk once: the same counts as
    pre-tokenising every text (tests check it), at a fraction of the Python cost.
    """
    chunks: Counter = Counter()
    pending: list[str] = []
    for text in texts:  # streamed: the texts may be GBs
        pending.append(text)
        if len(pending) == batch:
            chunks.update(tokenizer.normalizer.normalize_str("\n".join(pending)).split())
            pending.clear()
    if pending:
        chunks.update(tokenizer.normalizer.normalize_str("\n".join(pending)).split())
    words: Counter = Counter()
    pre_tokenize = tokenizer.pre_tokenizer.pre_tokenize_str
    for chunk, count in chunks.items():
        for word, _ in pre_tokenize(chunk):
            words[word] += count
    return words


def kept_alphabet(words: Counter, limit: int = LIMIT_ALPHABET) -> list[str]:
    """The `limit` most frequent characters (counted over every position, as the trainer counts them),
    in code-point order. The trainer drops the rarest and breaks ties among equally rare characters
    arbitrarily; we drop the larger code point first."""
    chars: Counter = Counter()
    for word, count in words.items():
        for c in word:
            chars[c] += count
    ranked = sorted(chars, key=lambda c: (-chars[c], ord(c)))
    return sorted(ranked[:limit])


def continuing_symbols(alphabet: list[str], words: Counter | None = None) -> dict[str, str]:
    """Each kept character's continuing symbol: private-use code points from U+F0000 up, skipping any the
    corpus itself keeps (a symbol is never a real character of the alphabet); any character, BMP or not,
    private-use or not, gets one.

    Their order is the trainer's tie-break between equally frequent merges. The "##" trainer numbers its
    "##c" in the order it first meets them in randomly ordered words, so a "##c" in many distinct words
    tends to come early: we number them by that count (most words first, then code point), which stays
    as close to the trainer's vocabularies as they are to each other (code-point order alone does not).
    """
    in_words: Counter = Counter()
    for word in words or ():
        in_words.update(set(word[1:]))
    taken = set(alphabet)
    free = (chr(cp) for cp in range(CONTINUING_BASE, 0x110000) if chr(cp) not in taken)
    return {c: next(free) for c in sorted(alphabet, key=lambda c: (-in_words[c], ord(c)))}


def _feed(words: Counter) -> Iterator[str]:
    """Each distinct word `count` times, space-separated, in ~1 MB strings: the trainer's only way in for
    counts. Words hold no whitespace (the pre-tokeniser split there), so WhitespaceSplit gives them back."""
    parts, size = [], 0
    for word, count in sorted(words.items()):  # sorted: the feed itself is the same every run
        while count:
            n = min(count, max(1, FEED_CHUNK_CHARS // (len(word) + 1)))
            parts.append((word + " ") * n)
            size += n * (len(word) + 1)
            count -= n
            if size >= FEED_CHUNK_CHARS:
                yield "".join(parts)
                parts, size = [], 0
    if parts:
        yield "".join(parts)


def train_wordpiece_vocab(
    words: Counter, vocab_size: int, min_frequency: int, special: list[str], prefix: str = "##"
) -> list[str]:
    """The vocabulary (specials first) that WordPieceTrainer(continuing_subword_prefix=prefix,
    limit_alphabet=1000) learns from these word counts, up to ties, deterministically."""
    alphabet = kept_alphabet(words)
    kept = set(alphabet)
    cont = continuing_symbols(alphabet, words)
    plain = {v: k for k, v in cont.items()}
    # The trainer drops characters outside its alphabet but still treats every character after the
    # word's first one as continuing (it tests the position in the original word), as we do here.
    spelled: Counter = Counter()
    for word, count in words.items():
        symbols = "".join(c if i == 0 else cont[c] for i, c in enumerate(word) if c in kept)
        if symbols:
            spelled[symbols] += count
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=special,
        initial_alphabet=alphabet,  # every kept character also stands alone, as the "##" trainer has it
        show_progress=False,
    )
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    bpe.train_from_iterator(_feed(spelled), trainer)
    vocab = []
    for token, _ in sorted(bpe.get_vocab().items(), key=lambda kv: kv[1]):
        if token in special:
            vocab.append(token)
        elif token[0] in plain:  # a continuing token: every symbol is continuing
            vocab.append(prefix + "".join(plain[s] for s in token))
        else:
            vocab.append(token[0] + "".join(plain[s] for s in token[1:]))
    return vocab
