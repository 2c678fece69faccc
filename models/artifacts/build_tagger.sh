#!/usr/bin/env bash
# Build a TOKEE tagger (MiniLM-L6 + LoRA + 6 BIO heads), the recipe of the shipped
# models/artifacts/tagger-minilm-finer, from FiNER-ORD train + silver ORG labels on the sentiment
# corpora, then score it on FiNER-ORD's held-out test split.
#
#   FINSENT_DATA_DIR=/path/to/data  models/artifacts/build_tagger.sh [OUT]
#
# FINSENT_DATA_DIR: the folder holding the public datasets (finer_ord/, twitter_financial_news/,
# financial_phrasebank/, semeval2017_task5/, fiqa2018_task1/; sources, licences and layout in
# models/datasets.py). OUT (default models/artifacts/tagger-minilm-finer-YYYYmmdd-HHMMSS) must not exist:
# the shipped tagger is never overwritten. To promote a build, replace models/artifacts/tagger-minilm-finer
# with OUT by hand in one reviewed commit (git rm -r the old folder, mv OUT there, git add), after
# comparing OUT/eval-test.json with the shipped one.
#
# 1. `finsent silver-ner` labels TFNS train, Financial PhraseBank, SemEval-2017 Task 5 and FiQA 2018
#    with the linker's strong evidence (pipeline/silver.py) and adds the WordNet senses of the
#    ambiguous names, into runs/silver/ (generated, not in git). Needs WordNet 3.0:
#    `apt-get install wordnet-base` (or WORDNET=/path/to/dict). The linking gold set is excluded;
#    TFNS validation is never read.
# 2. `finsent train-tagger` on FiNER-ORD train + the silver file; early stopping and the default
#    exit setting are chosen on FiNER-ORD validation.
#
# FiNER-ORD is CC BY-NC 4.0, PhraseBank and SemEval CC BY-NC-SA, FiQA research-only: the artifact
# is a non-commercial research artifact. Seeded; on CPU with 1 thread it takes about 15 minutes.
set -euo pipefail
fail() { echo "error: $*" >&2; exit 2; }
DATA_DIR="${DATA_DIR:-${FINSENT_DATA_DIR:-}}"
[ -n "$DATA_DIR" ] || fail "FINSENT_DATA_DIR is not set: set it to the folder holding the public datasets" \
  "(finer_ord/train.conll, twitter_financial_news/train.csv, ... under it; sources: models/datasets.py)"
[ -d "$DATA_DIR" ] || fail "FINSENT_DATA_DIR=$DATA_DIR is not a folder"
DATA_DIR=$(cd "$DATA_DIR" && pwd)  # before the cd below: relative to the caller
FINER="${FINER_DIR:-$DATA_DIR/finer_ord}"
for f in "$FINER/train.conll" "$FINER/validation.conll" "$FINER/test.conll"; do
  [ -f "$f" ] || fail "$f not found: FiNER-ORD is Hugging Face gtfintechlab/finer-ord (CC BY-NC 4.0);" \
    "layout: models/datasets.py"
done
OUT=${1:-}
case $OUT in "") ;; /*) ;; *) OUT="$PWD/$OUT" ;; esac  # relative to the caller
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
SILVER=runs/silver/silver.conll
WORDNET="${WORDNET:-/usr/share/wordnet}"
OUT=${OUT:-models/artifacts/tagger-minilm-finer-$(date +%Y%m%d-%H%M%S)}
[ ! -e "$OUT" ] || fail "$OUT exists (the shipped tagger is models/artifacts/tagger-minilm-finer); give a new folder"
THREADS="${THREADS:-1}"

finsent silver-ner --data-dir "$DATA_DIR" --out "$SILVER" --exclude tests/fixtures/linking_gold.jsonl \
    --ambiguous-cap 5 --no-org-ratio 0 --wordnet "$WORDNET"
finsent train-tagger --data "$FINER/train.conll" --data "$SILVER" --valid "$FINER/validation.conll" --out "$OUT" \
    --epochs 3 --stage2-epochs 1 --seed 13 --threads "$THREADS"
finsent eval-tagger --model "$OUT" --data "$FINER/test.conll" --json --threads "$THREADS" > "$OUT/eval-test.json"
du -sh "$OUT"
