"""Train a WordPiece tokenizer on text files, or convert a BERT vocab.txt into the same kind of file.

    python tokenizers/create_tokenizer.py --input_path corpus/gutenberg/train --vocab_size 16384 \
        --output_path tokenizer.json [--lowercase] [--byte_level] [--elc_tokens]
    python tokenizers/create_tokenizer.py --from_vocab bert-base-uncased/vocab.txt --output_path tok.json

Special tokens [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4 ([PAR]=5 [TAB]=6 with --elc_tokens); a
converted vocab keeps its ids. Text is cleaned like data/preprocess.py cleans it (Gutenberg licence
removed, paragraphs joined) before training. Writes FILE.json (loadable by tokenizers.Tokenizer and
transformers.PreTrainedTokenizerFast) and a vocab.txt beside it, and prints ELC-BERT's F95.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.cleaning import clean_documents, list_text_files, read_text  # noqa: E402
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


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input_path", nargs="+", help="text files or folders (searched for *.txt)")
    p.add_argument("--from_vocab", help="convert this BERT vocab.txt instead of training")
    p.add_argument("--vocab_size", type=int, default=2**14, help="subwords in the trained vocabulary")
    p.add_argument("--min_frequency", type=int, default=2, help="minimal count of a merged pair")
    p.add_argument("--lowercase", action="store_true", help="uncased, like bert-base-uncased")
    p.add_argument("--byte_level", action="store_true", help="ELC-BERT's byte-level pre-tokeniser")
    p.add_argument("--elc_tokens", action="store_true", help="also add ELC-BERT's [PAR] [TAB] tokens")
    p.add_argument("--output_path", required=True, help="tokenizer JSON file to write")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    output = Path(args.output_path)
    if output.is_dir():
        raise UserError(f"--output_path {output} is a folder; give a file name such as tokenizer.json")
    check_output_dir(output.parent, "--output_path")  # before the training, not after it
    start = time.time()
    if args.from_vocab:
        tokenizer, lowercase = tokenizer_from_vocab(args.from_vocab, True if args.lowercase else None)
        print(f"converted {args.from_vocab} ({'uncased' if lowercase else 'cased'})")
        texts = []
    else:
        if not args.input_path:
            raise UserError("give --input_path (text to train on) or --from_vocab (a vocab.txt to convert)")
        files = list_text_files(args.input_path)
        texts = [p for f in files for doc in clean_documents(read_text(f)[0]) for p in doc]
        if not texts:
            raise UserError(f"no text left after cleaning {' '.join(args.input_path)}")
        print(f"training on {len(files)} files, {len(texts):,} paragraphs", flush=True)
        tokenizer = train_tokenizer(
            texts, args.vocab_size, args.min_frequency, args.lowercase, args.byte_level, args.elc_tokens
        )
    vocab_txt = save_tokenizer(tokenizer, output)
    print(f"wrote {output} and {vocab_txt}: vocabulary {tokenizer.get_vocab_size()}")
    print(f"special ids: {special_ids(tokenizer).to_dict()}  sha256 {tokenizer_hash(tokenizer)[:16]}")
    if texts:
        print(
            f"F_95% is {f95(tokenizer, texts)} (ELC-BERT's statistic: the count of the subword ranked at 95%)"
        )
    print(f"done in {time.time() - start:.1f}s")


if __name__ == "__main__":
    run_cli(main)
