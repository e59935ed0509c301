"""Train a WordPiece tokenizer on a corpus in any input format, or convert a BERT vocab.txt into one.

    python tokenizers/create_tokenizer.py --input_path corpus/gutenberg/train --vocab_size 16384 \
        --output_path tokenizer.json [--format auto|gutenberg|lines|jsonl|parquet|babylm] [--text_field text]
        [--lowercase] [--byte_level] [--elc_tokens] [--f95_mb 32]
    python tokenizers/create_tokenizer.py --from_vocab bert-base-uncased/vocab.txt --output_path tok.json

Special tokens [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4 ([PAR]=5 [TAB]=6 with --elc_tokens); a
converted vocab keeps its ids. The inputs are read by the readers of data/preprocess.py (data/formats.py:
the same files, cleaning and sentences as the corpus), streamed sentence by sentence into the trainer, so
memory does not grow with the corpus. With --elc_tokens the [PAR] / [TAB] markers the corpus will hold are
special tokens, left out of the training text as ELC-BERT's create_tokenizer.py leaves them out. Document
boundaries (--min/max_document_words of preprocess) do not change the text, so they are not options here.
Writes FILE.json (loadable by tokenizers.Tokenizer and transformers.PreTrainedTokenizerFast) and a
vocab.txt beside it, and prints ELC-BERT's F95, counted on the first --f95_mb MB of the text.
"""

import hashlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data import formats  # noqa: E402
from data.tokenization import (  # noqa: E402
    f95,
    save_tokenizer,
    special_ids,
    tokenizer_from_vocab,
    tokenizer_hash,
    train_tokenizer,
)
from utils.errors import ArgumentParser, UserError, run_cli  # noqa: E402
from utils.files import check_output_dir  # noqa: E402

F95_SAMPLE_MB = 32  # text kept for F95: bounds memory on corpora of any size


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input_path", nargs="+", help="files or folders (searched for the format's extensions)")
    p.add_argument("--from_vocab", help="convert this BERT vocab.txt instead of training")
    p.add_argument(
        "--format", default="auto", help=f"auto (by extension) or one of {', '.join(formats.FORMATS)}"
    )
    p.add_argument("--text_field", default="text", help="jsonl field / parquet column holding a document")
    p.add_argument("--vocab_size", type=int, default=2**14, help="subwords in the trained vocabulary")
    p.add_argument("--min_frequency", type=int, default=2, help="minimal count of a merged pair")
    p.add_argument("--lowercase", action="store_true", help="uncased, like bert-base-uncased")
    p.add_argument("--byte_level", action="store_true", help="ELC-BERT's byte-level pre-tokeniser")
    p.add_argument("--elc_tokens", action="store_true", help="also add ELC-BERT's [PAR] [TAB] tokens")
    p.add_argument("--f95_mb", type=float, default=F95_SAMPLE_MB, help="MB of text F95 is counted on")
    p.add_argument("--output_path", required=True, help="tokenizer JSON file to write")
    return p.parse_args(argv)


class CorpusText:
    """The corpus's sentences, read piece by piece through data/formats.py (one reader with preprocess),
    as an iterator for the trainer; counts what it yielded (UTF-8 bytes) and keeps the first
    `sample_bytes` of it for F95."""

    def __init__(self, inputs, opts: dict, strip_tab: bool, sample_bytes: int):
        self.inputs, self.opts, self.strip_tab = inputs, opts, strip_tab
        self.sample, self.sample_bytes, self.bytes, self.sentences = [], sample_bytes, 0, 0

    def __iter__(self):
        for i, (path, fmt) in enumerate(self.inputs):
            for piece in formats.plan_pieces(i, path, fmt):
                for doc in formats.read_piece(path, fmt, piece, self.opts, hashlib.sha256()):
                    for sentence in doc:
                        if self.strip_tab:  # the [TAB] special token, not text (ELC-BERT drops "[TAB] ")
                            sentence = sentence.replace("[TAB] ", "").strip()
                        if not sentence:
                            continue
                        self.sentences += 1
                        self.bytes += len(sentence.encode())
                        if self.bytes <= self.sample_bytes:
                            self.sample.append(sentence)
                        yield sentence


def main(argv=None):
    args = parse_args(argv)
    output = Path(args.output_path)
    if output.is_dir():
        raise UserError(f"--output_path {output} is a folder; give a file name such as tokenizer.json")
    check_output_dir(output.parent, "--output_path")  # before the training, not after it
    if args.f95_mb < 0:
        raise UserError(f"--f95_mb {args.f95_mb} must be >= 0")
    start = time.time()
    if args.from_vocab:
        tokenizer, lowercase = tokenizer_from_vocab(args.from_vocab, True if args.lowercase else None)
        print(f"converted {args.from_vocab} ({'uncased' if lowercase else 'cased'})")
        text = None
    else:
        if not args.input_path:
            raise UserError("give --input_path (text to train on) or --from_vocab (a vocab.txt to convert)")
        inputs = formats.list_inputs(args.input_path, args.format)
        kinds = sorted({fmt for _, fmt in inputs})
        print(f"training on {len(inputs)} files ({', '.join(kinds)})", flush=True)
        # [PAR] is never appended: with --elc_tokens it is a special token, and the tokenizer the corpus
        # gets is trained on the text around it (as ELC-BERT trains on its text before segment.py)
        opts = formats.read_options(args.text_field, par_token=False)
        text = CorpusText(inputs, opts, args.elc_tokens, int(args.f95_mb * 2**20))
        tokenizer = train_tokenizer(
            iter(text), args.vocab_size, args.min_frequency, args.lowercase, args.byte_level, args.elc_tokens
        )
        if not text.sentences:
            raise UserError(f"no text left after reading {' '.join(args.input_path)} as {', '.join(kinds)}")
        print(f"trained on {text.sentences:,} sentences, {text.bytes / 2**20:.1f} MB of text", flush=True)
    vocab_txt = save_tokenizer(tokenizer, output)
    print(f"wrote {output} and {vocab_txt}: vocabulary {tokenizer.get_vocab_size()}")
    print(f"special ids: {special_ids(tokenizer).to_dict()}  sha256 {tokenizer_hash(tokenizer)[:16]}")
    if text is not None and text.sample:
        counted = (
            "all of the text"
            if text.bytes <= text.sample_bytes
            else f"the first {args.f95_mb:g} MB of {text.bytes / 2**20:.0f} MB (a count: grows with the text)"
        )
        print(
            f"F_95% is {f95(tokenizer, text.sample)} (ELC-BERT's statistic: the count of the subword ranked "
            f"at 95%, over {counted})"
        )
    print(f"done in {time.time() - start:.1f}s")


if __name__ == "__main__":
    run_cli(main)
