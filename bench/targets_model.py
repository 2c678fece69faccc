"""A first target-aware model for per-ticker sentiment (issue 22): its training data and its score.

Research only: the target-level sets are non-commercial (SemEval-2017 Task 5, CC BY-NC-SA) or
carry no licence (FiQA 2018), see docs/targets.md. Nothing here touches the default model or path.

The input marks the target the simplest way the backbone already reads: ``"{target} [SEP] {text}"``
(:func:`models.targets.target_input`). The
same early-exit model and recipe as the shipped one learn "sentiment toward this target" from it.

    python bench/targets_model.py data --out /tmp/targets_train.csv   # training rows, held-out left out
    finsent train --data /tmp/targets_train.csv --out DIR ...        # models/artifacts/build_targets.sh
    python bench/targets_model.py score --model DIR --json          # held-out metrics vs the shipped model
    python bench/targets_model.py tfn --model DIR --json            # the hand-labelled tweets, as the worker runs

``data`` writes every row of the four sets whose text is not in the ``heldout`` part of
``bench/targets_eval.py``'s split (the split is by normalised text, so a FiQA copy of a held-out
SemEval headline is held out too), one per (normalised text, target), labelled from its score with
the evaluation's thresholds. ``score`` reports, on held-out rows only:

* **cosine** of predicted vs gold scores over the SemEval-2017 microblog (text, target) pairs (the
  task's metric; predicted score = P(positive) - P(negative) at the model's early exit);
* **per-ticker accuracy** on the evaluation manifest's held-out multi-target items (targets whose
  gold sentiments differ) and single-target controls: the target model's label per target against
  the shipped model's one document label copied to every target.

``tfn`` scores ``bench/data/targets_tfn_multi.json``: 187 real multi-ticker tweets and headlines
from Twitter Financial News, labelled per ticker by hand before any model was scored on them
(docs/targets.md). Each text goes through the worker's own steps (``pipeline.process``: the input
normalisation, the default linker, ``target_asks`` for each target's input), and each labelled
ticker's target-model label is compared with the document label copied to it. Controls: every
Twitter Financial News *validation* text the linker links to exactly one ticker, whose dataset
label is its ticker's label; there the pipeline keeps the document score by design, and the
target model's answer is reported beside it. The shipped document model was trained on the
train split, where 4/5 of the multi-ticker texts come from: that favours the copied baseline.
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


def tfn_rows(data_dir: str | None, pairs: int = 0, seed: int = 13) -> list[tuple[str, str]]:
    """``(input, label)`` rows from Twitter Financial News *train* (MIT) texts that the worker's
    linker links to exactly one ticker: the target as the text writes it (what
    ``pipeline.process.target_asks`` passes), the text's label as the target's; plus ``pairs``
    joined texts of two of them (:func:`joined_pairs`). Texts that link two or more tickers (the
    pool of the hand-labelled set, ``tfn``) and the validation split (its controls) stay out."""
    from pipeline.linking import default_linker
    from pipeline.process import message, target_of

    linker = default_linker()
    kept: list[tuple[str, str, str]] = []
    with (Path(data_dir or "") / TFN / "train.csv").open(newline="", encoding="utf-8") as f:
        for i, r in enumerate(csv.DictReader(f)):
            msg = message(r["text"], doc_id=f"t{i}", now_ms=1_700_000_000_000)
            links = linker.link(msg)
            if len({lk.symbol for lk in links}) != 1:
                continue
            kept.append((msg.text, target_of(msg.text, links[0]), r["label"]))
    return [(target_input(t, g), lab) for t, g, lab in kept] + joined_pairs(kept, pairs, seed)


#: Brokers, rating agencies and data sources: in a rating or estimate headline they report a view
#: on the subject, so the sentiment toward them is neutral (the hand-labelled set's rule).
SOURCES: tuple[str, ...] = (
    "B. Riley FBR", "B. Riley", "Baird", "Bank of America", "Barclays", "Berenberg", "Bernstein", "BMO Capital",
    "BofA Merrill Lynch", "BofA Securities", "BofA", "Canaccord", "CFRA", "Citi", "Cowen", "Credit Suisse",
    "Deutsche Bank", "Evercore ISI", "FactSet", "Goldman Sachs", "Goldman", "Guggenheim", "HSBC", "Imperial Capital",
    "J.P. Morgan", "Jefferies", "JPMorgan", "KeyBanc Capital", "KeyBanc", "Loop Capital", "Macquarie", "Mizuho",
    "MoffettNathanson", "Moody's", "Morgan Stanley", "Needham", "Nomura", "Oppenheimer", "Piper Jaffray",
    "Piper Sandler", "Raymond James", "RBC", "Stifel Nicolaus", "Stifel", "SunTrust", "Truist", "UBS", "Wedbush",
    "Wells Fargo",
)
#: The ones the linker links to a ticker: a swapped copy names one of them, as real headlines do.
LINKED_SOURCES: tuple[str, ...] = (
    "Barclays", "BofA", "Citi", "Deutsche Bank", "Goldman Sachs", "J.P. Morgan", "JPMorgan", "Morgan Stanley",
    "Raymond James", "UBS", "Wells Fargo", "FactSet", "HSBC", "Moody's",
)


def source_rows(data_dir: str | None, seed: int = 13, swaps: int = 3) -> list[tuple[str, str]]:
    """Rows that teach "a broker or data source reporting a view is neutral": every Twitter
    Financial News train text that links exactly one ticker and names a source of
    :data:`SOURCES` the linker did not link (KeyBanc, Oppenheimer, ...) gives ``(source ->
    neutral)``; and ``swaps`` copies with that source replaced by a linked one
    (:data:`LINKED_SOURCES`, seeded) give each ``(subject -> the text's label)`` and ``(new source -> neutral)``. Texts that
    link two or more tickers stay out (the hand-labelled set's pool)."""
    import random
    import re

    from pipeline.linking import default_linker
    from pipeline.process import message, target_of

    rng = random.Random(seed)
    pattern = re.compile(r"\b(" + "|".join(re.escape(x) for x in SOURCES) + r")(?![\w'])")
    linker = default_linker()
    out: list[tuple[str, str]] = []
    with (Path(data_dir or "") / TFN / "train.csv").open(newline="", encoding="utf-8") as f:
        for i, r in enumerate(csv.DictReader(f)):
            msg = message(r["text"], doc_id=f"s{i}", now_ms=1_700_000_000_000)
            links = linker.link(msg)
            if len({lk.symbol for lk in links}) != 1 or not (m := pattern.search(msg.text)):
                continue
            lk = links[0]
            if lk.span and lk.span[0] < m.end() and m.start() < lk.span[1]:
                continue  # the source is the linked subject itself
            out.append((target_input(msg.text, m.group(1)), "neutral"))
            subject = target_of(msg.text, lk)
            for other in rng.sample([x for x in LINKED_SOURCES if x != m.group(1)], swaps):
                swapped = msg.text[: m.start()] + other + msg.text[m.end():]
                if subject in swapped:
                    out += [(target_input(swapped, subject), r["label"]), (target_input(swapped, other), "neutral")]
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


TFN_MANIFEST = ROOT / "bench" / "data" / "targets_tfn_multi.json"
TFN = "twitter_financial_news"


def _accuracy(pred: list[str], gold: list[str]) -> float:
    return round(float(np.mean([p == g for p, g in zip(pred, gold, strict=True)])), 4) if gold else float("nan")


def score_tfn(model_dir: Path, data_dir: str | None) -> dict[str, Any]:
    """Per-ticker accuracy on the hand-labelled multi-ticker texts and the single-ticker controls."""
    import hashlib

    from pipeline.linking import default_linker
    from pipeline.process import message, target_asks, target_of

    manifest = json.loads(TFN_MANIFEST.read_text())
    base = Path(data_dir or "") / TFN
    texts: dict[str, list[dict[str, str]]] = {}
    for split in ("train", "validation"):
        with (base / f"{split}.csv").open(newline="", encoding="utf-8") as f:
            texts[split] = list(csv.DictReader(f))
    linker = default_linker()
    now = 1_700_000_000_000
    target_engine, shipped_engine = engine(model_dir), engine(None)

    rows = []  # (item, normalised text, [(symbol, gold, target model input)])
    for it in manifest["items"]:
        raw = texts[it["split"]][it["row"]]["text"]
        if hashlib.sha256(raw.encode()).hexdigest()[:16] != it["sha256"]:
            raise SystemExit(f"{it['id']}: the shared text differs from the labelled one")
        msg = message(raw, doc_id=it["id"], now_ms=now)
        asked = dict(target_asks(msg, linker.link(msg)))
        rows.append((it, msg.text, [(t["symbol"], t["label"], asked.get(t["symbol"]) or target_input(msg.text, f"${t['symbol']}"))
                                    for t in it["targets"] if t["label"]]))  # fmt: skip
    _, target_labels = predict(target_engine, [inp for _, _, ts in rows for _, _, inp in ts])
    _, doc_labels = predict(shipped_engine, [text for _, text, _ in rows])
    per_target = []  # (kind, gold, target model, copied)
    answers = iter(target_labels)
    for (it, _, ts), doc_label in zip(rows, doc_labels, strict=True):
        per_target += [(it["kind"], gold, next(answers), doc_label) for _, gold, _ in ts]
    out: dict[str, Any] = {"model": str(model_dir), "manifest": TFN_MANIFEST.name}
    for kind in ("all", "companies", "source"):
        chosen = [r for r in per_target if kind == "all" or r[0] == kind]
        gold = [r[1] for r in chosen]
        out[f"multi_{kind}"] = {
            "items": sum(1 for it, _, _ in rows if kind == "all" or it["kind"] == kind),
            "targets": len(chosen),
            "accuracy_target_model": _accuracy([r[2] for r in chosen], gold),
            "accuracy_document_copied": _accuracy([r[3] for r in chosen], gold),
        }
    controls = []  # (text, target input, gold)
    for r in texts["validation"]:
        msg = message(r["text"], doc_id="c", now_ms=now)
        links = linker.link(msg)
        if len({lk.symbol for lk in links}) == 1:
            controls.append((msg.text, target_input(msg.text, target_of(msg.text, links[0])), r["label"]))
    _, c_target = predict(target_engine, [inp for _, inp, _ in controls])
    _, c_doc = predict(shipped_engine, [t for t, _, _ in controls])
    gold = [g for _, _, g in controls]
    out["controls_single_ticker_validation"] = {
        "texts": len(controls),
        "accuracy_target_model": _accuracy(c_target, gold),
        "accuracy_document_score": _accuracy(c_doc, gold),
        "pipeline": "one-ticker texts keep the document score (no target pass): the pipeline's accuracy is the document score's",
    }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data", help="write the training CSV (text,label), held-out rows left out")
    d.add_argument("--out", type=Path, required=True, help="CSV to write (outside the repository)")
    d.add_argument("--pairs", type=int, default=0, help="add this many joined two-target texts (two rows each)")
    d.add_argument("--seed", type=int, default=13, help="seed of the joined texts")
    d.add_argument("--tfn", action="store_true",
                   help="add Twitter Financial News train texts that link one ticker (MIT; the text's label is the "
                   "ticker's), as the worker's linker finds it")
    d.add_argument("--tfn-pairs", type=int, default=0, help="with --tfn: add this many joined two-ticker texts of them")
    d.add_argument("--tfn-sources", action="store_true",
                   help="with --tfn: add rows where a broker or data source that reports a view is a neutral target")
    s = sub.add_parser("score", help="held-out cosine and per-ticker accuracy, against the shipped model")
    s.add_argument("--model", type=Path, required=True, help="the target model's directory")
    s.add_argument("--json", action="store_true", help="one JSON object")
    t = sub.add_parser("tfn", help="per-ticker accuracy on the hand-labelled multi-ticker tweets, as the worker runs")
    t.add_argument("--model", type=Path, default=None, help="the target model's directory (default: the shipped one)")
    t.add_argument("--json", action="store_true", help="one JSON object")
    for p in (d, s, t):
        p.add_argument("--data-dir", default=None, help="the shared data folder (default: FINSENT_DATA_DIR)")
    args = ap.parse_args(argv)
    args.data_dir = args.data_dir or data_dir()
    if args.cmd == "data":
        rows_by_dataset, _ = load_all(args.data_dir)
        rows = training_rows(rows_by_dataset, args.pairs, args.seed)
        if args.tfn:
            rows += tfn_rows(args.data_dir, args.tfn_pairs, args.seed)
            if args.tfn_sources:
                rows += source_rows(args.data_dir, args.seed)
        with args.out.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows(rows)
        print(f"{len(rows)} rows -> {args.out}", file=sys.stderr)
        return 0
    if args.cmd == "tfn":
        from models.targets import TARGET_MODEL_DIR

        result = score_tfn(args.model or TARGET_MODEL_DIR, args.data_dir)
    else:
        result = score(args.model, args.data_dir)
    print(json.dumps(result, indent=None if args.json else 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
