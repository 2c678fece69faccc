#!/usr/bin/env bash
# Build a candidate default model (LoRA adapter + 6 exit heads) into a NEW folder:
#
#   FINSENT_DATA_DIR=/path/to/data  models/artifacts/build_default.sh [OUT]
#
# OUT (default models/artifacts/elbert-minilm-tfns-YYYYmmdd-HHMMSS) must not exist yet: the shipped
# model, models/artifacts/elbert-minilm-tfns, is never overwritten. FINSENT_DATA_DIR is the folder
# holding the public datasets, twitter_financial_news/train.csv and validation.csv under it (sources,
# licences and layout: models/datasets.py; in the development workspace: FINSENT_DATA_DIR=../shared/data).
#
# Promote a build to the shipped default (by hand, in one reviewed commit):
#   1. compare OUT/validation_eval.json with models/artifacts/elbert-minilm-tfns/validation_eval.json;
#   2. git rm -r -q models/artifacts/elbert-minilm-tfns && mv OUT models/artifacts/elbert-minilm-tfns
#      && git add models/artifacts/elbert-minilm-tfns   (config.json keeps the build's version string);
#   3. update docs/model-card.md's numbers and run tests/test_shipped_model.py before committing.
#
# Data: Twitter Financial News Sentiment, train split (MIT licence), from $FINSENT_DATA_DIR.
# 10% of it (seeded, seed 13) is held out as the dev set for early stopping, the logit biases
# and the default exit rule; the validation split is never touched here, so the numbers reported on
# it in docs/model-card.md are honest. Non-commercial data (Financial PhraseBank, SemEval, FiNER-ORD) is not used.
#
# One training: the base recipe with R-Drop (--rdrop 1.0: each batch runs twice with independent
# dropout, and every exit also learns to agree between the two passes), seed 13, plus
#   - text normalisation (on by default: emoji become words, models/text.py, recorded in config.json),
#   - generated emoji / fintwit-slang / negation rows (--augment 13, models/augment.py) added to the
#     training part only, after the dev hold-out is split off,
#   - a temperature per exit fitted on dev after the logit biases (on by default), so an exit's
#     confidence is what CWB can trust.
# The version string in config.json is the output
# folder's name and the date. Seeded and deterministic for a fixed thread count (threads=2 here).
# About 35-45 min on 2 cores.
set -euo pipefail
fail() { echo "error: $*" >&2; exit 2; }
[ -n "${FINSENT_DATA_DIR:-}" ] || fail "FINSENT_DATA_DIR is not set: set it to the folder holding the public" \
  "datasets (twitter_financial_news/train.csv and validation.csv under it; sources: models/datasets.py)"
[ -d "$FINSENT_DATA_DIR" ] || fail "FINSENT_DATA_DIR=$FINSENT_DATA_DIR is not a folder"
export FINSENT_DATA_DIR  # as given (relative to the caller's folder): config.json records the data path
for f in twitter_financial_news/train.csv twitter_financial_news/validation.csv; do
  [ -f "$FINSENT_DATA_DIR/$f" ] || fail "$FINSENT_DATA_DIR/$f not found: Twitter Financial News Sentiment is" \
    "Hugging Face zeroshot/twitter-financial-news-sentiment (MIT); layout: models/datasets.py"
done
ARTIFACTS=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-$ARTIFACTS/elbert-minilm-tfns-$(date +%Y%m%d-%H%M%S)}
[ ! -e "$OUT" ] || fail "$OUT exists (the shipped model is $ARTIFACTS/elbert-minilm-tfns); give a new folder"
echo "building into $OUT (data: $FINSENT_DATA_DIR)" >&2
export HF_HUB_OFFLINE=1
finsent train --data twitter_financial_news/train --weighting learned --class-weighting sqrt_inverse --pooling mean \
  --epochs 5 --lr 8e-4 --head-lr 3e-3 --lora-r 16 --max-length 128 --split-seed 13 --threads 2 \
  --rule-max-loss 0.005 --rdrop 1.0 --seed 13 --augment 13 --out "$OUT"
finsent eval --model "$OUT" --data twitter_financial_news/validation --json --plot "$OUT/accuracy_vs_cost.png" \
  > "$OUT/validation_eval.json"
echo "built $OUT; to make it the shipped default, see this script's header" >&2
