"""Ticker linking: which symbols a message is about, and how strongly.

Pure and deterministic (no I/O, no wall clock): ``link(msg) -> list[TickerLink]``.

Three explicit sources, found in the message's normalised ``text`` (the headline or tweet):

* ``feed`` -- the symbols the producer put in ``tickers`` (no span);
* ``cashtag`` -- ``$AAPL``, ``$BRK.B``, ``$tsla`` (upper-cased). ``$115`` and ``$5bn`` are prices,
  not tickers: a cashtag starts with a letter. It must stand alone as a word: ``US$AAPL`` or
  ``$AAPLx1`` are not cashtags, while trailing punctuation is fine (``$AAPL.`` -> ``AAPL``);
* ``exchange`` -- an exchange prefix, ``NASDAQ:AAPL``, ``(NYSE: F)``, ``NYSEARCA:SPY``.

Relevance in (0, 1] says how central the ticker is to the message. The first ticker mentioned
is the subject (1.0); each later distinct ticker is a step less central (``1 - 0.2 k`` for the
k-th, floored at 0.4), because a headline like "$AAPL supplier $SWKS cuts guidance" is about its
first ticker first. Feed tickers are ranked by their list position the same way (the feed's first
ticker is its subject). A symbol found several ways keeps its most relevant link (ties prefer a
link with a span, which says where the evidence is).

A company-name linker (``method="name"``) comes later; it will add candidates here.
"""

from __future__ import annotations

import re
from typing import Final

from pipeline.schemas import InputMessage, TickerLink

__all__ = ["EXCHANGES", "MIN_RELEVANCE", "RELEVANCE_STEP", "find_mentions", "link", "rank_relevance"]

#: Relevance lost per rank step, and the floor: the 4th and later tickers all weigh 0.4.
RELEVANCE_STEP: Final[float] = 0.2
MIN_RELEVANCE: Final[float] = 0.4

#: Exchange prefixes recognised in ``EXCHANGE:SYMBOL`` (upper case, as written in news wires).
EXCHANGES: Final[tuple[str, ...]] = (
    "NASDAQ", "NASDAQGS", "NASDAQGM", "NASDAQCM", "NYSE", "NYSEARCA", "NYSEAMERICAN", "NYSEMKT",
    "AMEX", "ARCA", "BATS", "CBOE", "OTC", "OTCMKTS", "OTCQX", "OTCQB", "TSX", "TSXV", "LSE",
    "XETRA", "ASX", "HKEX", "TSE",
)  # fmt: skip

# A symbol body: 1-6 letters, optional share class (.B / -B). A class suffix must be letters, so
# the full stop in "$AAPL." ends the sentence instead of starting a suffix.
_BODY = r"[A-Z]{1,6}(?:[.\-][A-Z]{1,2})?"
# Cashtag: not glued to a preceding word or '$' ("US$", "$$"), either all upper or all lower
# case ("$Apple" is a word, not a ticker), and not followed by a word character ("$AAPL2").
_CASHTAG: Final[re.Pattern[str]] = re.compile(
    rf"(?<![\w$])\$({_BODY}|{_BODY.replace('A-Z', 'a-z')})(?![\w$])", re.ASCII
)
_EXCHANGE: Final[re.Pattern[str]] = re.compile(
    rf"(?<![\w:])(?:{'|'.join(sorted(EXCHANGES, key=len, reverse=True))})\s?:\s?({_BODY})(?![\w$])",
    re.ASCII,
)


def rank_relevance(rank: int) -> float:
    """Relevance of the ``rank``-th (0-based) distinct ticker of a message."""
    return max(MIN_RELEVANCE, 1.0 - RELEVANCE_STEP * rank)


def find_mentions(text: str) -> list[tuple[str, tuple[int, int], str]]:
    """Explicit ticker mentions in ``text``: ``(SYMBOL, (start, end), method)`` in text order.

    The span covers the whole mention (``$AAPL``, ``NASDAQ:AAPL``) in ``text``'s characters.
    """
    found = [(m.group(1).upper(), m.span(), "cashtag") for m in _CASHTAG.finditer(text)]
    found += [(m.group(1), m.span(), "exchange") for m in _EXCHANGE.finditer(text)]
    found.sort(key=lambda f: f[1])
    return found


def link(msg: InputMessage) -> list[TickerLink]:
    """Link ``msg`` to tickers: one :class:`TickerLink` per symbol, most relevant first."""
    best: dict[str, TickerLink] = {}

    def offer(candidate: TickerLink) -> None:
        cur = best.get(candidate.symbol)
        if (
            cur is None
            or candidate.relevance > cur.relevance
            or (candidate.relevance == cur.relevance and cur.span is None and candidate.span is not None)
        ):
            best[candidate.symbol] = candidate

    # parse_input already upper-cased, de-duplicated and validated the feed's symbols
    for rank, symbol in enumerate(msg.tickers):
        offer(TickerLink(symbol=symbol, span=None, method="feed", relevance=rank_relevance(rank)))

    ranks: dict[str, int] = {}  # symbol -> rank of its first mention in the text
    for symbol, span, method in find_mentions(msg.text):
        rank = ranks.setdefault(symbol, len(ranks))
        offer(TickerLink(symbol=symbol, span=span, method=method, relevance=rank_relevance(rank)))  # type: ignore[arg-type]

    # stable: equal relevance keeps first-seen order (feed order, then text order)
    return sorted(best.values(), key=lambda t: -t.relevance)
