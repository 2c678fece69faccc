"""pipeline.linking: feed tickers, cashtags, exchange prefixes, relevance and de-duplication."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.linking import MAX_LINKS, MIN_RELEVANCE, default_linker, find_mentions, link, rank_relevance
from pipeline.schemas import InputMessage, TickerLink, parse_input

NOW = 1_710_423_000_000


def msg(text: str, tickers: list[str] | None = None) -> InputMessage:
    raw = {"id": "x", "text": text, "published_at": NOW}
    if tickers is not None:
        raw["tickers"] = tickers
    return parse_input(orjson.dumps(raw), now_ms=NOW)


def symbols(text: str, tickers: list[str] | None = None) -> list[str]:
    return [t.symbol for t in link(msg(text, tickers))]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$AAPL beats estimates", ["AAPL"]),
        ("Berkshire $BRK.B adds to its stake", ["BRK.B"]),
        ("Brown-Forman $BF-B slips", ["BF.B"]),  # the universe's symbol: class shares as BF.B
        ("Loading up on $AAPL.", ["AAPL"]),  # the full stop ends the sentence
        ("$AAPL, $MSFT; ($NVDA) and $GOOGL!", ["AAPL", "MSFT", "NVDA", "GOOGL"]),
        ("bought more $tsla today", ["TSLA"]),  # all-lower-case cashtags are common on social
        ("$AMZN's cloud unit", ["AMZN"]),
    ],
)
def test_cashtags(text: str, expected: list[str]) -> None:
    assert symbols(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "price target raised to $115",  # a price, not a ticker
        "a $5bn buyback",
        "paid US$AAPL",  # glued to a word
        "$AAPL2 is not a symbol",  # followed by a word character
        "$Apple is a word",  # mixed case
        "$$AAPL",
        "costs $ 12",
        "email me at a$b.com",
    ],
)
def test_not_cashtags(text: str) -> None:
    assert symbols(text) == []


def test_exchange_prefixes_with_spans() -> None:
    text = "Ford (NYSE: F) and NASDAQ:AAPL rise; NYSEARCA:SPY flat"
    links = link(msg(text))
    assert [(t.symbol, t.method) for t in links] == [("F", "exchange"), ("AAPL", "exchange"), ("SPY", "exchange")]
    assert [text[slice(*t.span)] for t in links] == ["NYSE: F", "NASDAQ:AAPL", "NYSEARCA:SPY"]
    assert symbols("ratio 10:1, FOO:BAR, time 10:30") == []  # unknown prefixes are not exchanges


def test_cashtag_span_covers_the_mention() -> None:
    text = "Shares of $MSFT. climb"
    (t,) = link(msg(text))
    assert t == TickerLink(symbol="MSFT", span=(10, 15), method="cashtag", relevance=1.0)
    assert text[10:15] == "$MSFT"


def test_relevance_falls_with_rank_and_floors() -> None:
    links = link(msg("$A $B $C $D $E"))
    assert [t.relevance for t in links] == [1.0, 0.8, 0.6, MIN_RELEVANCE, MIN_RELEVANCE]
    assert rank_relevance(0) == 1.0 and rank_relevance(100) == MIN_RELEVANCE
    assert all(0.0 < t.relevance <= 1.0 for t in links)


def test_feed_tickers_ranked_by_list_order() -> None:
    links = link(msg("Market wrap: stocks mixed", ["msft", "$aapl"]))
    assert [(t.symbol, t.method, t.span, t.relevance) for t in links] == [
        ("MSFT", "feed", None, 1.0),
        ("AAPL", "feed", None, 0.8),
    ]


def test_dedupe_keeps_max_relevance_and_prefers_a_span() -> None:
    # AAPL: feed rank 1 (0.8), cashtag first in text (1.0) -> the cashtag link wins
    # MSFT: feed rank 0 (1.0), cashtag second in text (0.8) -> the feed link wins
    links = {t.symbol: t for t in link(msg("$AAPL leads, $MSFT and NASDAQ:AAPL follow", ["MSFT", "AAPL"]))}
    assert set(links) == {"AAPL", "MSFT"}
    assert (links["AAPL"].method, links["AAPL"].relevance, links["AAPL"].span) == ("cashtag", 1.0, (0, 5))
    assert (links["MSFT"].method, links["MSFT"].relevance) == ("feed", 1.0)
    # equal relevance: the link with a span (evidence) is kept over the feed's
    (only,) = link(msg("$TSLA recalls cars", ["TSLA"]))
    assert (only.method, only.span) == ("cashtag", (0, 5))


def test_repeated_mentions_do_not_advance_rank() -> None:
    links = link(msg("$AAPL up, $AAPL again, then $MSFT"))
    assert [(t.symbol, t.relevance) for t in links] == [("AAPL", 1.0), ("MSFT", 0.8)]


def test_find_mentions_in_text_order() -> None:
    assert [(s, m) for s, _, m in find_mentions("NYSE:F beats; $GM lags")] == [("F", "exchange"), ("GM", "cashtag")]


def test_sample_feed_links_are_valid() -> None:
    from pathlib import Path

    import pipeline

    path = Path(pipeline.__file__).parent / "data" / "sample_feed.jsonl"
    linked = set()
    for line in path.read_bytes().splitlines():
        for t in link(parse_input(line, now_ms=NOW + 10**12)):
            linked.add(t.symbol)
            assert 0.0 < t.relevance <= 1.0
    assert len(linked) >= 10  # every company of the demo feed is reachable without the name linker


# ------------------------------------------------------------------ hostile input and properties


def test_links_per_message_are_capped_most_relevant_first() -> None:
    # Regression: 10,000 made-up cashtags linked 3,334 tickers (all the 20,000-character text
    # holds), each a new ticker state, score record and set of Redis keys.
    tags = [f"{a}{b}{c}{d}" for a in "ABCD" for b in "ABCDEFGHIJ" for c in "ABCDEFGHIJ" for d in "ABCDEFGHIJKLMNOPQRSTUVWXY"]
    links = link(msg(" ".join(f"${t}" for t in tags[:10_000])))
    assert len(links) == MAX_LINKS
    assert [t.symbol for t in links] == tags[:MAX_LINKS]  # the first mentioned, in rank order
    assert len(link(msg("Index changes", [f"X{i}" for i in range(200)]))) <= MAX_LINKS


_FILLER = st.sampled_from(["up", "down", "today", "vs", "on", "after", "-", "and", "2%", "(", ")", ",", "!"])
_TAG = st.from_regex(r"[A-Z]{1,5}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_TAG, st.lists(_FILLER, max_size=3), st.booleans()), min_size=1, max_size=70))
def test_cashtag_links_follow_the_rank_formula(parts: list[tuple[str, list[str], bool]]) -> None:
    """Whatever the mix: one link per distinct symbol (at most MAX_LINKS), ranked by first
    mention, relevance = rank_relevance(rank) + a bonus per repeat, spans on the mentions."""
    words: list[str] = []
    for tag, filler, lower in parts:
        words += [f"${tag.lower() if lower else tag}", *filler]
    text = " ".join(words)
    links = link(msg(text))
    resolve = default_linker().resolve
    mentions = [resolve(tag) for tag, _, _ in parts]
    expected = list(dict.fromkeys(mentions))

    def relevance(s: str) -> float:
        return round(min(1.0, rank_relevance(expected.index(s)) + 0.1 * (mentions.count(s) - 1)), 4)

    assert [t.symbol for t in links] == sorted(expected, key=lambda s: -relevance(s))[:MAX_LINKS]
    for t in links:
        assert t.relevance == relevance(t.symbol)
        assert t.method == "cashtag" and t.span is not None and text[t.span[0]] == "$"
    assert [t.relevance for t in links] == sorted((t.relevance for t in links), reverse=True)
    assert link(msg(text)) == links  # deterministic


@settings(max_examples=200, deadline=None)
@given(st.lists(_TAG, max_size=80), st.text(max_size=200))
def test_links_are_valid_for_any_text_and_feed(feed: list[str], text: str) -> None:
    raw = {"id": "x", "text": f"x {text}", "published_at": NOW, "tickers": feed}
    links = link(parse_input(orjson.dumps(raw), now_ms=NOW))
    assert len(links) <= MAX_LINKS
    assert len({t.symbol for t in links}) == len(links)
    assert all(0.0 < t.relevance <= 1.0 for t in links)
    assert [t.relevance for t in links] == sorted((t.relevance for t in links), reverse=True)
    if len(set(feed)) <= MAX_LINKS and not text.strip():  # only feed tickers: all of them, in order
        assert [t.symbol for t in links] == list(dict.fromkeys(default_linker().resolve(s) for s in feed))
