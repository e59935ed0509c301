#!/bin/bash
# Quick start on a fresh machine (CPU is enough: 5 minutes on 2 quiet cores, 8 on a busy machine, besides the venv):
#   1. a virtual environment in .venv (torch==2.13.0 first, then requirements.txt)
#   2. a 4,096-subword WordPiece tokenizer trained on the Gutenberg training books
#   3. those books cleaned, split into sentences, tokenized and memory-mapped
#   4. a short MLM+NSP pretraining of configs/quickstart.json (a BERT of hidden 128, 4 layers, no
#      dropout: at this length dropout only slows learning), AdamW 2e-3, beta2 0.98, 100 warmup steps,
#      batch 32 x 64 tokens; tensorboard logs and checkpoints (steps 0, 1, 2, 4, ..., 256, then every 300)
#   5. what it learned: validation MLM accuracy next to the unigram baselines, and BLiMP on a subset
# Data root: $BERT_DATA_ROOT (default ../shared/data beside the repository). Output: $QUICKSTART_DIR
# (default runs/quickstart). Set PYTHON to use an existing environment instead of creating .venv.
# Running it again reuses the tokenizer and corpus and resumes (or finishes) the pretraining run.
# The README's next steps (fine-tuning, BLiMP, probing, configs/zoo/tiny_cpu.json) use its final
# checkpoint, runs/quickstart/pretrain/checkpoints/step_1500.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_ROOT=${BERT_DATA_ROOT:-../shared/data}
OUT=${QUICKSTART_DIR:-runs/quickstart}
STEPS=${QUICKSTART_STEPS:-1500}
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

echo "== pretraining configs/quickstart.json on the CPU ($STEPS steps)"
"$PYTHON" train_pretrain.py --config_file configs/quickstart.json \
    --input_path "$OUT/processed" --vocab_path "$OUT/tokenizer.json" --output_dir "$OUT/pretrain" \
    --device cpu --mixed_precision no --seq_length 64 --batch_size 32 --max_steps "$STEPS" \
    --learning_rate 2e-3 --warmup_steps 100 --adam_beta2 0.98 --log_freq 50 --validation_every 300 \
    --validation_batches 8 --checkpoint_steps "0,log:300,$STEPS" --save_every 100

FINAL="$OUT/pretrain/checkpoints/step_$STEPS"
echo
echo "== what the model learned (step $STEPS)"
"$PYTHON" scripts/quickstart_report.py --checkpoint_path "$FINAL"
"$PYTHON" -m evaluation.blimp --checkpoint_path "$FINAL" --max_pairs_per_paradigm 10 \
    --output_file "$OUT/blimp_step_$STEPS.json" | grep "overall [0-9]"
echo "(BLiMP: 10 pairs of each of its 67 paradigms; chance is 50%)"

echo
echo "tensorboard logs: $OUT/pretrain/tensorboard   (tensorboard --logdir $OUT/pretrain/tensorboard)"
echo "checkpoints:      $OUT/pretrain/checkpoints   (model.io.load_model(DIR/step_N) loads one)"
echo "metrics:          $OUT/pretrain/metrics.jsonl"
