"""models.augment: deterministic, capped, labels that follow the stated rules, and nothing copied
from the behavioural suite (bench/data/checklist.jsonl is read here for the overlap check only)."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import emoji
import pytest

from models.augment import (
    BEARISH,
    BULLISH,
    CHECKLIST,
    EMOJI_POLARITY,
    NEGATION,
    NEUTRAL_EMOJI,
    SLANG,
    NearDuplicates,
    augment,
    cashtags,
    main,
    overlap_key,
    read_company_names,
    read_texts,
)

REPO = Path(__file__).resolve().parents[1]

_NEWS = {
    "positive": ["{t} beats estimates, raises guidance", "{t} shares jump after upgrade at Jefferies",
                 "{t} wins a $2bn contract https://t.co/Ab12Cd34", "{t} record quarterly revenue"],
    "negative": ["{t} misses on earnings, shares slide", "{t} cut to sell at Goldman",
                 "{t} recalls 40,000 vehicles https://t.co/Xy98Zw76", "{t} warns of weaker demand"],
    "neutral": ["{t} to present at investor conference", "{t} declares $0.25 dividend",
                "{t} files 10-Q https://t.co/Qq11Ww22", "{t} schedules Q3 earnings call"],
}
_TICKERS = ["AAPL", "TSLA", "NVDA", "AMZN", "SPY", "XOM", "BA", "ULTA", "LK", "COMDX", "WIRES", "PRPL", "HPQ"]


def _synthetic_rows() -> list[tuple[str, str]]:
    """~400 rows with the shape of the Twitter Financial News set (65% neutral)."""
    rows = []
    for i in range(400):
        label = "neutral" if i % 20 < 13 else ("positive" if i % 20 < 17 else "negative")
        tpl = _NEWS[label][i % 4]
        rows.append((tpl.format(t=f"${_TICKERS[i % len(_TICKERS)]}") + f" ({i})", label))
    rows.append(("$GME 🚀 already has emoji", "positive"))
    return rows


@pytest.fixture(scope="module")
def rows() -> list[tuple[str, str]]:
    return _synthetic_rows()


@pytest.fixture(scope="module")
def generated(rows: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    return augment(rows, seed=13)


def _emoji_in(text: str) -> list[str]:
    return [m.chars for m in emoji.analyze(text)]


def _polarity(chars: str) -> str | None:
    return EMOJI_POLARITY.get(chars) or EMOJI_POLARITY.get(chars + "\ufe0f") or EMOJI_POLARITY.get(
        chars.replace("\ufe0f", ""))


def test_deterministic_for_a_seed(rows: list[tuple[str, str]], generated: list[tuple[str, str, str]]) -> None:
    assert augment(rows, seed=13) == generated
    assert augment(rows, seed=14) != generated


def test_capped_at_the_share_of_the_training_set(rows: list[tuple[str, str]],
                                                 generated: list[tuple[str, str, str]]) -> None:
    assert len(generated) == round(0.30 * len(rows))
    assert 0.25 * len(rows) <= len(generated) <= 0.35 * len(rows)
    assert len(augment(rows, seed=13, max_share=0.1)) == round(0.1 * len(rows))
    families = Counter(how.split(":")[0] for _, _, how in generated)
    assert set(families) == {"emoji", "slang", "negation"}
    assert all(n >= 0.2 * len(generated) for n in families.values()), families


def test_every_text_is_new(rows: list[tuple[str, str]], generated: list[tuple[str, str, str]]) -> None:
    seen = {t.lower() for t, _ in rows}
    keys = [t.lower() for t, _, _ in generated]
    assert len(set(keys)) == len(keys) and not seen & set(keys)
    assert all(t == " ".join(t.split()) and t for t, _, _ in generated)
    assert {y for _, y, _ in generated} <= {"negative", "neutral", "positive"}


def test_emoji_never_contradict_the_label(generated: list[tuple[str, str, str]]) -> None:
    for text, label, how in generated:
        found = {_polarity(e) for e in _emoji_in(text)}
        if label == "negative":
            assert not any(e in text for e in BULLISH), text  # never a bullish emoji on a negative text
        if label == "positive":
            assert not any(e in text for e in BEARISH), text
        if how.startswith("emoji:"):
            assert found == {label}, (text, label, found)  # one class, the label's
        else:
            assert not found - {None}, text  # slang and negation rows carry no emoji


def test_appended_emoji_keep_the_training_label(rows: list[tuple[str, str]],
                                                generated: list[tuple[str, str, str]]) -> None:
    label_of = dict(rows)
    appended = [(t, y) for t, y, how in generated if how == "emoji:append"]
    assert appended
    for text, label in appended:
        bare = " ".join(emoji.replace_emoji(text, " ").split())
        assert label_of[bare] == label, text
    # a training text that already has emoji is left alone
    assert not any("already has emoji" in t for t, _ in appended)


def test_short_emoji_texts_are_a_ticker_and_emoji(generated: list[tuple[str, str, str]]) -> None:
    short = [(t, y) for t, y, how in generated if how == "emoji:short"]
    assert {y for _, y in short} == {"negative", "neutral", "positive"}
    for text, label in short:
        words = emoji.replace_emoji(text, " ").split()
        assert len(words) <= 5, text
        assert label != "neutral" or all(_polarity(e) == "neutral" for e in _emoji_in(text))
    assert any(e in t for t, _ in short for e in NEUTRAL_EMOJI)


def test_slang_rows_carry_their_phrase_label(generated: list[tuple[str, str, str]]) -> None:
    subject = r"\S+(?: \S+){0,2}?"  # a ticker or a company name of up to three words
    patterns = [(re.compile(re.escape(p).replace(re.escape("{s}"), subject), re.IGNORECASE), y)
                for p, y in SLANG]
    slang = [(t, y) for t, y, how in generated if how == "slang"]
    assert {y for _, y in slang} == {"negative", "neutral", "positive"}
    for text, label in slang:
        labels = {y for pat, y in patterns if pat.search(text)}
        assert label in labels, (text, label, labels)


_NEGATION_CUE = re.compile(r"\b(?:not|no|never|failed)\b|n't\b", re.IGNORECASE)


def test_negation_rows_follow_the_rule(generated: list[tuple[str, str, str]]) -> None:
    by_how = Counter(how for _, _, how in generated if how.startswith("negation"))
    assert set(by_how) == {"negation:negated", "negation:affirmed", "negation:neutral"}
    for text, label, how in generated:
        if how == "negation:negated":
            assert _NEGATION_CUE.search(text) and label in ("positive", "negative"), text
        elif how == "negation:affirmed":
            assert not _NEGATION_CUE.search(text) and label in ("positive", "negative"), text
        elif how == "negation:neutral":
            assert _NEGATION_CUE.search(text) and label == "neutral", text
    # the table itself: every twin is plain, and a neutral predicate has no twin
    for negated, label, twin in NEGATION:
        assert _NEGATION_CUE.search(negated), negated
        assert twin is None or not _NEGATION_CUE.search(twin), twin
        assert label != "neutral" or twin is None


def test_stated_examples_are_labelled_as_stated() -> None:
    table = {neg: y for neg, y, _ in NEGATION}
    assert table["{s}'s quarter was not bad at all"] == "positive"
    assert table["{s}'s quarter was not good"] == "negative"
    assert table["{s} is no longer a drag on earnings"] == "positive"
    assert table["{s} failed to beat estimates"] == "negative"
    assert table["no sign of a slowdown at {s}"] == "positive"
    assert table["{s} did not cut its guidance despite fears of a cut"] == "positive"
    assert table["{s} has not changed its outlook"] == "neutral"
    slang = dict(SLANG)
    assert slang["{s} to the moon"] == slang["{s} calls printing"] == "positive"
    assert slang["{s} puts printing"] == slang["{s} is a falling knife"] == "negative"
    assert slang["{s} bagholders"] == slang["{s} is cooked"] == "negative"


def test_tickers_come_from_the_training_cashtags(rows: list[tuple[str, str]],
                                                 generated: list[tuple[str, str, str]]) -> None:
    tickers = cashtags(rows)
    assert "COMDX" not in tickers and "WIRES" not in tickers  # newswire pseudo-tickers
    assert tickers[0] in _TICKERS and "GME" in tickers
    used = {m for t, _, how in generated if how != "emoji:append" for m in re.findall(r"\$([A-Z]{1,5})\b", t)}
    assert used and used <= set(tickers)
    with pytest.raises(ValueError, match="no cashtags"):
        augment([("no tickers here", "neutral")] * 10, seed=1)
    with pytest.raises(ValueError, match="unknown label"):
        augment([("$AAPL up", "bullish")], seed=1)


def test_company_names_table(tmp_path: Path) -> None:
    path = tmp_path / "sp500.csv"
    path.write_text("symbol,name\nDIS,Walt Disney Company (The)\nAAPL,Apple Inc.\nCVX,Chevron Corporation\n"
                    "GOOGL,Alphabet Inc. (Class A)\n", encoding="utf-8")
    expected = {"DIS": "Walt Disney", "AAPL": "Apple", "CVX": "Chevron", "GOOGL": "Alphabet"}
    assert read_company_names(path) == expected


def test_near_duplicates() -> None:
    held = NearDuplicates(["$TSLA is cooked", "Acme's margins are not deteriorating 📉"])
    assert overlap_key("$SPY is cooked!!") == overlap_key("$TSLA is cooked") == "tkr is cooked"
    assert "$SPY is cooked!!" in held and "lol $NVDA is cooked" in held
    assert "Acme's margins are not deteriorating📉📉" in held
    assert "Acme's margins are not deteriorating 🚀" not in held  # the emoji is read, not dropped
    assert "$TSLA calls printing after hours" not in held
    # excluded texts are never generated
    rows = _synthetic_rows()
    first = augment(rows, seed=5)
    banned = [t for t, _, _ in first[::7]]
    second = augment(rows, seed=5, exclude=banned)
    assert len(second) == len(first)
    assert not any(t in NearDuplicates(banned) for t, _, _ in second)


def _checklist_texts() -> list[str]:
    if not CHECKLIST.is_file():
        pytest.skip(f"{CHECKLIST} absent")
    return read_texts(CHECKLIST)


def _assert_no_overlap(texts: list[str], held_out: list[str]) -> None:
    lowered = {t.lower() for t in held_out}
    assert not [t for t in texts if t.lower() in lowered]  # exact, case-folded
    near = NearDuplicates(held_out)
    assert not [t for t in texts if t in near]


def test_cli_writes_a_training_csv_with_no_checklist_text(tmp_path: Path,
                                                          rows: list[tuple[str, str]]) -> None:
    from models.datasets import read_labelled_csv

    data = tmp_path / "train.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows([("text", "label"), *rows])
    out, train_out, dev_out = tmp_path / "aug.csv", tmp_path / "train_aug.csv", tmp_path / "dev.csv"
    assert main(["--data", str(data), "--out", str(out), "--seed", "13"]) == 0
    assert out.read_text(encoding="utf-8").splitlines()[0] == "text,label"
    aug = read_labelled_csv(out)  # the reader `finsent train --data` uses
    assert len(aug) == round(0.3 * len(rows))
    _assert_no_overlap(aug.texts, _checklist_texts())  # the checklist is kept out by default

    assert main(["--data", str(data), "--out", str(out), "--seed", "13", "--dev-seed", "13",
                 "--train-out", str(train_out), "--dev-out", str(dev_out)]) == 0
    both, dev = read_labelled_csv(train_out), read_labelled_csv(dev_out)
    from models.train import split_dev

    expected_train, expected_dev = split_dev(read_labelled_csv(data), 0.1, 13)
    assert dev.texts == expected_dev.texts and dev.labels == expected_dev.labels  # `--split-seed 13`'s dev
    assert both.texts[: len(expected_train)] == expected_train.texts
    assert len(both) == len(expected_train) + round(0.3 * len(expected_train))
    assert not set(both.texts) & set(dev.texts)



def test_the_real_training_set_gives_no_checklist_overlap(public_data: Path) -> None:
    with (public_data / "twitter_financial_news" / "train.csv").open(newline="", encoding="utf-8") as fh:
        train = [(r["text"], r["label"]) for r in csv.DictReader(fh)]
    held_out = _checklist_texts()
    # keeps the checklist out by default, as `finsent train --augment` calls it
    generated = augment(train, seed=13)
    assert 0.25 * len(train) <= len(generated) <= 0.35 * len(train)
    _assert_no_overlap([t for t, _, _ in generated], held_out)
    counts = Counter(y for _, y, _ in generated)
    assert min(counts.values()) >= 0.15 * len(generated), counts
