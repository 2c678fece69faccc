"""A first target-aware model for per-ticker sentiment (issue 22): its training data and its score.

Research only: the target-level sets are non-commercial (SemEval-2017 Task 5, CC BY-NC-SA) or
carry no licence (FiQA 2018), see docs/targets.md. Nothing here touches the default model or path.

The input marks the target the simplest way the backbone already reads: ``"{target} [SEP] {text}"``
(:func:`models.targets.target_input`). The
same early-exit model and recipe as the shipped one learn "sentiment toward this target" from it.

    python bench/targets_model.py data --out /tmp/targets_train.csv   # training rows, held-out left out
    finsent train --data /tmp/targets_train.csv --out DIR ...        # models/artifacts/build_targets.sh
    python bench/targets_model.py score --model DIR --json          # held-out metrics vs the shipped model

``data`` writes every row of the four sets whose text is not in the ``heldout`` part of
``bench/targets_eval.py``'s split (the split is by normalised text, so a FiQA copy of a held-out
SemEval headline is held out too), one per (normalised text, target), labelled from its score with
the evaluation's thresholds. ``score`` reports, on held-out rows only:

* **cosine** of predicted vs gold scores over the SemEval-2017 microblog (text, target) pairs (the
  task's metric; predicted score = P(positive) - P(negative) at the model's early exit);
* **per-ticker accuracy** on the evaluation manifest's held-out multi-target items (targets whose
  gold sentiments differ) and single-target controls: the target model's label per target against
  the shipped model's one document label copied to every target.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):  # first, or bench/pipeline.py would shadow the package
    sys.path.insert(0, str(ROOT))

from bench.targets_eval import (
    DATASETS,
    MANIFEST,
    data_dir,
    label,
    load_all,
    load_eval,
    normalise,
    row_splits,
)
from models.targets import target_input

MICROBLOGS = "semeval2017_task5/microblogs"


def training_rows(rows_by_dataset: dict[str, list[Any]], pairs: int = 0, seed: int = 13) -> list[tuple[str, str]]:
    """``(input, label)`` for every non-held-out row, one per (normalised text, target); plus
    ``pairs`` joined texts of two of them (:func:`joined_pairs`)."""
    out: list[tuple[str, str]] = []
    kept: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str]] = set()
    for ds in DATASETS:
        rows = rows_by_dataset.get(ds, [])
        for row, split in zip(rows, row_splits(ds, rows), strict=True):
            key = (normalise(row.text), row.target.upper())
            if split == "heldout" or key in seen:
                continue
            seen.add(key)
            out.append((target_input(row.text, row.target), label(row.score)))
            kept.append((row.text, row.target, label(row.score)))
    return out + joined_pairs(kept, pairs, seed)


def joined_pairs(rows: list[tuple[str, str, str]], n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` texts made of two training texts about different targets with different labels,
    each named in its own text, joined in random order; one row per target (``(input, label)``).
    In the sets, most texts carry one target, or only the span about it, so a model can score the
    text and ignore the marked target; in a joined text only the target's own part answers."""
    import random

    rng = random.Random(seed)
    named = [(t, g, lab) for t, g, lab in rows if g.lower() in t.lower()]
    out: list[tuple[str, str]] = []
    while len(out) < 2 * n and len(named) > 1:
        (ta, ga, la), (tb, gb, lb) = rng.sample(named, 2)
        if la == lb or ga.lower() == gb.lower() or gb.lower() in ta.lower() or ga.lower() in tb.lower():
            continue
        text = f"{ta} {tb}" if rng.random() < 0.5 else f"{tb} {ta}"
        out += [(target_input(text, ga), la), (target_input(text, gb), lb)]
    return out


def heldout_microblog_pairs(rows: list[Any]) -> list[tuple[str, str, float]]:
    """``(text, target, mean gold score)`` of the held-out microblog rows (the same cashtag
    annotated twice in one span counts once, with the mean)."""
    scores: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row, split in zip(rows, row_splits(MICROBLOGS, rows), strict=True):
        if split == "heldout":
            scores[(row.text, row.target)].append(row.score)
    return [(t, g, float(np.mean(s))) for (t, g), s in scores.items()]


def engine(model_dir: Path | None) -> Any:
    """An engine for ``model_dir`` (None: the shipped model) at its tuned exit rule."""
    from pipeline.inference import build_engine
    from pipeline.settings import Settings

    return build_engine(Settings(model_dir=model_dir, max_batch=64))


def predict(eng: Any, texts: list[str]) -> tuple[np.ndarray, list[str]]:
    """Scores (P(positive) - P(negative)) and labels of ``texts``."""
    labels = list(eng.model.labels)
    preds = eng.predict_texts(texts)
    probs = np.array([p.probs for p in preds])
    return probs[:, labels.index("positive")] - probs[:, labels.index("negative")], [p.label for p in preds]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def score(model_dir: Path, data_dir: str | None) -> dict[str, Any]:
    rows_by_dataset, _ = load_all(data_dir)
    pairs = heldout_microblog_pairs(rows_by_dataset[MICROBLOGS])
    gold = np.array([s for _, _, s in pairs])
    target_engine, shipped_engine = engine(model_dir), engine(None)
    target_scores, _ = predict(target_engine, [target_input(t, g) for t, g, _ in pairs])
    doc_scores, _ = predict(shipped_engine, [t for t, _, _ in pairs])
    out: dict[str, Any] = {
        "model": str(model_dir),
        "microblog_heldout_pairs": len(pairs),
        "cosine": {
            "target_model": round(cosine(target_scores, gold), 4),
            "shipped_document_score": round(cosine(doc_scores, gold), 4),
        },
    }
    items = [r for r in load_eval(data_dir, MANIFEST) if r.split == "heldout"]
    for kind in ("multi", "control"):
        chosen = [r for r in items if r.set == kind]
        inputs = [target_input(r.text, t["target"]) for r in chosen for t in r.targets]
        golds = [t["label"] for r in chosen for t in r.targets]
        _, target_labels = predict(target_engine, inputs)
        _, doc_labels = predict(shipped_engine, [r.text for r in chosen])
        copied = [lab for r, lab in zip(chosen, doc_labels, strict=True) for _ in r.targets]
        out[f"{kind}_heldout"] = {
            "items": len(chosen),
            "targets": len(golds),
            "accuracy_target_model": round(float(np.mean([p == g for p, g in zip(target_labels, golds)])), 4),
            "accuracy_document_copied": round(float(np.mean([p == g for p, g in zip(copied, golds)])), 4),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data", help="write the training CSV (text,label), held-out rows left out")
    d.add_argument("--out", type=Path, required=True, help="CSV to write (outside the repository)")
    d.add_argument("--pairs", type=int, default=0, help="add this many joined two-target texts (two rows each)")
    d.add_argument("--seed", type=int, default=13, help="seed of the joined texts")
    s = sub.add_parser("score", help="held-out cosine and per-ticker accuracy, against the shipped model")
    s.add_argument("--model", type=Path, required=True, help="the target model's directory")
    s.add_argument("--json", action="store_true", help="one JSON object")
    for p in (d, s):
        p.add_argument("--data-dir", default=None, help="the shared data folder (default: FINSENT_DATA_DIR)")
    args = ap.parse_args(argv)
    args.data_dir = args.data_dir or data_dir()
    if args.cmd == "data":
        rows_by_dataset, _ = load_all(args.data_dir)
        rows = training_rows(rows_by_dataset, args.pairs, args.seed)
        with args.out.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows(rows)
        print(f"{len(rows)} rows -> {args.out}", file=sys.stderr)
        return 0
    result = score(args.model, args.data_dir)
    print(json.dumps(result, indent=None if args.json else 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
