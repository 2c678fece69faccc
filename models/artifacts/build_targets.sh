#!/usr/bin/env bash
# Build the research-only target model (issue 22): the shipped model's recipe, trained on
# "{target} [SEP] {text}" rows of SemEval-2017 Task 5 and FiQA 2018 Task 1 with the held-out half of
# bench/targets_eval.py's split left out, plus Twitter Financial News train texts that link one
# ticker; then scored on that half and on the hand-labelled multi-ticker tweets (bench/targets_model.py).
# Non-commercial data (docs/targets.md): the result is a research artifact, never the default model.
#
#   FINSENT_DATA_DIR=../shared/data bash models/artifacts/build_targets.sh [OUT]
set -euo pipefail
fail() { echo "error: $*" >&2; exit 2; }
[ -n "${FINSENT_DATA_DIR:-}" ] || fail "FINSENT_DATA_DIR is not set: set it to the folder holding" \
  "semeval2017_task5/ and fiqa2018_task1/ (sources and licences: models/datasets.py, docs/targets.md)"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-$(mktemp -d)/elbert-minilm-targets}
[ ! -e "$OUT" ] || fail "$OUT exists; give a new folder"
export HF_HUB_OFFLINE=1
ROWS=$(mktemp --suffix=.csv)
trap 'rm -f "$ROWS"' EXIT
python "$ROOT/bench/targets_model.py" data --pairs 1500 --tfn --tfn-pairs 1500 --tfn-sources --seed 13 --out "$ROWS"
finsent train --data "$ROWS" --weighting learned --class-weighting sqrt_inverse --pooling mean \
  --epochs 5 --lr 8e-4 --head-lr 3e-3 --lora-r 16 --max-length 128 --split-seed 13 --threads 2 \
  --rule-max-loss 0.005 --seed 13 --out "$OUT"
python "$ROOT/bench/targets_model.py" score --model "$OUT" --json > "$OUT/heldout_eval.json"
python "$ROOT/bench/targets_model.py" tfn --model "$OUT" --json > "$OUT/tfn_eval.json"
echo "built $OUT (research only); held-out scores in $OUT/heldout_eval.json and $OUT/tfn_eval.json" >&2
