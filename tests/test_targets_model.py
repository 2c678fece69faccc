"""bench/targets_model.py: the target model's training rows never hold a held-out text.

Invented fixture rows (no dataset text), in the layout of the shared target-level files.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_targets_model", ROOT / "bench" / "targets_model.py")
tm = importlib.util.module_from_spec(_spec)
sys.modules["bench_targets_model"] = tm
_spec.loader.exec_module(tm)
te = sys.modules["bench.targets_eval"]  # what targets_model reads the splits with

MB, HL, FH, FP = te.DATASETS


def headlines(n: int) -> list[str]:
    return [f"Invented company number {i} reports quarterly results" for i in range(n)]


def test_training_rows_leave_out_held_out_texts_and_their_copies() -> None:
    texts = headlines(40)
    held = [t for t in texts if te.split_of(t) == "heldout"]
    dev = [t for t in texts if te.split_of(t) == "dev"]
    assert held and dev  # the fixture has both parts
    i0 = texts.index(dev[0])
    rows = {
        MB: [te.Row("1", "$AAA ripping", "$AAA", 0.6, "stocktwits"),
             te.Row("1", "$BBB dumping", "$BBB", -0.7, "stocktwits")],
        HL: [te.Row(str(i), t, f"Company {i}", 0.5 if i % 2 else -0.5) for i, t in enumerate(texts)],
        # FiQA annotates SemEval headlines again: a copy of a held-out one must stay out too
        FH: [te.Row("f1", held[0], "Company x", 0.2), te.Row("f2", dev[0], f"company {i0}", 0.9)],
        FP: [],
    }
    got = tm.training_rows(rows)
    inputs = [text for text, _ in got]
    assert not any(t in x for t in held for x in inputs)
    assert all(any(t in x for x in inputs) for t in dev)
    # one row per (text, target): the FiQA copy of a dev headline with the same target is dropped
    assert sum(x.endswith(dev[0]) and x.lower().startswith(f"company {i0} ") for x in inputs) == 1
    assert ("$AAA [SEP] $AAA ripping", "positive") in got or te.split_of("$AAA ripping") == "heldout"
    assert {lab for _, lab in got} <= {"positive", "negative", "neutral"}


def test_the_target_input_marks_the_target_before_the_separator() -> None:
    assert tm.target_input("Ford recalls trucks; GM gains", "GM") == "GM [SEP] Ford recalls trucks; GM gains"


def test_cosine() -> None:
    import numpy as np

    assert tm.cosine(np.array([1.0, 0.0]), np.array([2.0, 0.0])) == 1.0
    assert abs(tm.cosine(np.array([1.0, 1.0]), np.array([1.0, -1.0]))) < 1e-12


def test_joined_pairs_join_two_named_targets_with_different_labels() -> None:
    rows = [(f"$T{i} text number {i}", f"$T{i}", ("positive", "negative", "neutral")[i % 3]) for i in range(30)]
    rows.append(("a text that does not name its target", "$ZZZ", "negative"))
    got = tm.joined_pairs(rows, 20, seed=1)
    assert len(got) == 40
    by_text: dict[str, list[tuple[str, str]]] = {}
    for inp, lab in got:
        target, text = inp.split(" [SEP] ", 1)
        assert target in text and "$ZZZ" not in text
        by_text.setdefault(text, []).append((target, lab))
    for pair in by_text.values():
        (ga, la), (gb, lb) = pair[:2]
        assert ga != gb and la != lb
    assert tm.joined_pairs(rows, 20, seed=1) == got  # seeded


def test_tfn_rows_take_one_ticker_texts_of_the_train_split_only(tmp_path: Path) -> None:
    """Twitter Financial News rows: a text the worker's linker links to exactly one ticker gives
    one row (its mention as written, its label); texts with two tickers (the hand-labelled
    evaluation pool) and texts with none give nothing; joined pairs name each target in its own
    part. Invented texts in the dataset's layout."""
    import csv

    base = tmp_path / "twitter_financial_news"
    base.mkdir()
    rows = [("$AAPL beats on revenue", "positive"), ("Tesla recalls 2M cars", "negative"),
            ("$MSFT and $NVDA both slide", "negative"), ("Markets are quiet today", "neutral"),
            ("$NFLX holds its subscriber count", "neutral")]  # fmt: skip
    with (base / "train.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    got = tm.tfn_rows(str(tmp_path))
    assert got == [("$AAPL [SEP] $AAPL beats on revenue", "positive"), ("Tesla [SEP] Tesla recalls 2M cars", "negative"),
                   ("$NFLX [SEP] $NFLX holds its subscriber count", "neutral")]  # fmt: skip
    joined = tm.tfn_rows(str(tmp_path), pairs=2, seed=1)[3:]
    assert len(joined) == 4
    for inp, lab in joined:
        target, text = inp.split(" [SEP] ")
        own = next(t for t, _ in rows if t.startswith(target))  # the part that names the target
        assert own in text and lab == dict(rows)[own]


def test_source_rows_make_a_reporting_broker_a_neutral_target(tmp_path: Path) -> None:
    """A one-ticker text that names an unlinked broker gives (broker -> neutral), and copies with
    a linked broker swapped in give (subject -> the text's label) and (that broker -> neutral);
    a text without a broker, or with two tickers, gives nothing. Invented texts."""
    import csv

    base = tmp_path / "twitter_financial_news"
    base.mkdir()
    rows = [("$AAPL downgraded to neutral at KeyBanc", "negative"), ("$TSLA beats on deliveries", "positive"),
            ("$MSFT and $NVDA upgraded at Oppenheimer", "positive")]  # fmt: skip
    with (base / "train.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    got = tm.source_rows(str(tmp_path), seed=3, swaps=2)
    assert got[0] == ("KeyBanc [SEP] $AAPL downgraded to neutral at KeyBanc", "neutral")
    assert len(got) == 5
    for (subject_row, label), (broker_row, broker_label) in zip(got[1::2], got[2::2], strict=True):
        broker, text = broker_row.split(" [SEP] ")
        assert broker in tm.LINKED_SOURCES and text == f"$AAPL downgraded to neutral at {broker}"
        assert subject_row == f"$AAPL [SEP] {text}" and label == "negative" and broker_label == "neutral"
