#!/usr/bin/env bash
# Rebuild models/artifacts/tagger-minilm-finer (TOKEE tagger: MiniLM-L6 + LoRA + 6 BIO heads) from
# FiNER-ORD train + silver ORG labels on the sentiment corpora, then score it on FiNER-ORD's
# held-out test split.
#
#   DATA_DIR=/path/to/shared/data  models/artifacts/build_tagger.sh
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
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
DATA_DIR="${DATA_DIR:-/work/shared/data}"
FINER="${FINER_DIR:-$DATA_DIR/finer_ord}"
SILVER=runs/silver/silver.conll
WORDNET="${WORDNET:-/usr/share/wordnet}"
OUT=models/artifacts/tagger-minilm-finer
THREADS="${THREADS:-1}"

finsent silver-ner --data-dir "$DATA_DIR" --out "$SILVER" --exclude tests/fixtures/linking_gold.jsonl \
    --ambiguous-cap 5 --no-org-ratio 0 --wordnet "$WORDNET"
finsent train-tagger --data "$FINER/train.conll" --data "$SILVER" --valid "$FINER/validation.conll" --out "$OUT" \
    --epochs 3 --stage2-epochs 1 --seed 13 --threads "$THREADS"
finsent eval-tagger --model "$OUT" --data "$FINER/test.conll" --json --threads "$THREADS" > "$OUT/eval-test.json"
du -sh "$OUT"
