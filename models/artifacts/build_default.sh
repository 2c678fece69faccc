#!/usr/bin/env bash
# Rebuild the shipped default model, models/artifacts/elbert-minilm-tfns (LoRA adapter + 6 exit heads).
#
# Data: Twitter Financial News Sentiment, train split (MIT licence), from the project's shared data
# folder. 10% of it (seeded, seed 13) is held out as the dev set for early stopping, the logit biases
# and the default exit rule; the validation split is never touched here, so the numbers reported on
# it in README are honest. Non-commercial data (Financial PhraseBank, SemEval, FiNER-ORD) is not used.
#
# One training: the base recipe with R-Drop (--rdrop 1.0: each batch runs twice with independent
# dropout, and every exit also learns to agree between the two passes), seed 13. Dev score 1.6988
# (calibrated full-depth accuracy + macro-F1), the best of every candidate in README. The version
# string in config.json is the output folder's name and the date; the shipped one was renamed
# elbert-minilm-tfns-20261203-rdrop so that it differs from the default before it.
# Seeded and deterministic for a fixed thread count (threads=1 here): the shipped artifact is this
# script's output. About 40-50 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-../shared/data/twitter_financial_news}
OUT=models/artifacts/elbert-minilm-tfns
export HF_HUB_OFFLINE=1
finsent train --data "$DATA/train.csv" --weighting learned --class-weighting sqrt_inverse --pooling mean \
  --epochs 5 --lr 8e-4 --head-lr 3e-3 --lora-r 16 --max-length 128 --split-seed 13 --threads 1 \
  --rule-max-loss 0.005 --rdrop 1.0 --seed 13 --out "$OUT"
finsent eval --data "$DATA/validation.csv" --json --plot "$OUT/accuracy_vs_cost.png" > "$OUT/validation_eval.json"
