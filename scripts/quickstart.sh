#!/bin/bash
# Quick start on a fresh machine (CPU is enough, a few minutes):
#   1. a virtual environment in .venv (torch==2.13.0 first, then requirements.txt)
#   2. a 4,096-subword WordPiece tokenizer trained on the Gutenberg training books
#   3. those books cleaned, split into sentences, tokenized and memory-mapped
#   4. a short MLM+NSP pretraining of configs/bert_small.json, with tensorboard logs and checkpoints
# Data root: $BERT_DATA_ROOT (default ../shared/data beside the repository). Output: $QUICKSTART_DIR
# (default runs/quickstart). Set PYTHON to use an existing environment instead of creating .venv.
# Running it again reuses the tokenizer and corpus and resumes (or finishes) the pretraining run.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_ROOT=${BERT_DATA_ROOT:-../shared/data}
OUT=${QUICKSTART_DIR:-runs/quickstart}
STEPS=${QUICKSTART_STEPS:-200}
BOOKS="$DATA_ROOT/corpus/gutenberg/train"
[ -d "$BOOKS" ] || { echo "error: $BOOKS not found: set BERT_DATA_ROOT to the shared data folder" >&2; exit 2; }

if [ -z "${PYTHON:-}" ]; then
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
        .venv/bin/pip install torch==2.13.0
        .venv/bin/pip install -r requirements.txt
    fi
    PYTHON=.venv/bin/python
fi
mkdir -p "$OUT"

if [ ! -f "$OUT/tokenizer.json" ]; then
    echo "== training the tokenizer"
    "$PYTHON" tokenizers/create_tokenizer.py --input_path "$BOOKS" --vocab_size 4096 \
        --output_path "$OUT/tokenizer.json"
fi

echo "== preprocessing the corpus"
"$PYTHON" data/preprocess.py --input_path "$BOOKS" --vocab_path "$OUT/tokenizer.json" \
    --output_dir "$OUT/processed"

echo "== pretraining configs/bert_small.json on the CPU ($STEPS steps)"
"$PYTHON" train_pretrain.py --config_file configs/bert_small.json \
    --input_path "$OUT/processed" --vocab_path "$OUT/tokenizer.json" --output_dir "$OUT/pretrain" \
    --device cpu --mixed_precision no --seq_length 64 --batch_size 32 --max_steps "$STEPS" \
    --learning_rate 1e-3 --warmup_proportion 0.05 --log_freq 10 --validation_every 100 \
    --validation_batches 4 --checkpoint_steps "0,log:100" --save_every 50

echo
echo "tensorboard logs: $OUT/pretrain/tensorboard   (tensorboard --logdir $OUT/pretrain/tensorboard)"
echo "checkpoints:      $OUT/pretrain/checkpoints   (model.io.load_model(DIR/step_N) loads one)"
echo "metrics:          $OUT/pretrain/metrics.jsonl"
