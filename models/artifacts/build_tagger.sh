#!/usr/bin/env bash
# Rebuild models/artifacts/tagger-minilm-finer (TOKEE tagger: MiniLM-L6 + LoRA + 6 BIO heads) from
# FiNER-ORD, then score it on the held-out test split.
#
#   FINER_DIR=/path/to/finer_ord  models/artifacts/build_tagger.sh
#
# FiNER-ORD is CC BY-NC 4.0 (non-commercial): the artifact is a research artifact, not for
# commercial use. Seeded; on CPU with 2 threads it takes about 10-15 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1
DATA="${FINER_DIR:-/work/shared/data/finer_ord}"
OUT=models/artifacts/tagger-minilm-finer
THREADS="${THREADS:-2}"

finsent train-tagger --data "$DATA/train.conll" --valid "$DATA/validation.conll" --out "$OUT" \
    --epochs 3 --stage2-epochs 1 --seed 13 --threads "$THREADS"
finsent eval-tagger --model "$OUT" --data "$DATA/test.conll" --json --threads "$THREADS" > "$OUT/eval-test.json"
du -sh "$OUT"
