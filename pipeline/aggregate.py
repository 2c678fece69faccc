"""Per-ticker sentiment aggregation: pure, deterministic, no I/O and no wall clock.

For each ticker the aggregator keeps

* an exponentially time-decayed, relevance-weighted mean of document scores in **event time**
  (``published_at``)::

      score(t) = sum_i w_i s_i / sum_i w_i,   w_i = relevance_i * 2 ** (-(t - t_i) / half_life)

  over documents with ``t_i <= t``, reported at ``t = as_of`` (the ticker's latest event time);
* counts of bullish / bearish / neutral documents in the rolling windows 5m, 1h and 24h,
  each window being ``(as_of - W, as_of]``, and the distinct stories among the last hour's.

A document's relevance is scaled by its ``novelty`` (:mod:`pipeline.novelty`: 1 for a story's
first document, ``0.75 ** k`` for its k-th repeat), unless the aggregator is built with
``novelty_weighting=False``: one headline retweeted 50 times weighs what ~4 documents do, not 50.

Numerics: the two sums are stored *referenced to as_of*, i.e. ``num = sum r_i s_i 2^-(as_of-t_i)/H``
and ``den = sum r_i 2^-(as_of-t_i)/H``. The common factor ``2^-(t-as_of)/H`` cancels in the ratio,
so the score needs no exponent at all. When as_of advances by d, both sums are multiplied by
``2^-d/H`` (<= 1), and a new document adds ``r * 2^-(as_of-t)/H`` (<= r, >= r 2^-lateness/H
because late documents are refused). Every stored weight is therefore in [0, n] and nothing can
overflow, however long the stream runs; history that decays below the smallest double
underflows to 0, which is exactly its true contribution to 16 digits. The latest document always
carries weight r > 0, so den > 0. Order independence follows from the weights being a pure
function of (t_i, as_of): the only order-dependent part is floating-point rounding (~1e-15).

Units: times are int epoch **milliseconds**; the constructor takes half-life and lateness in
**seconds** (as :class:`pipeline.settings.Settings` does).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from pipeline.schemas import ScoredDocument, TickerScore, score_label

__all__ = ["WINDOWS_MS", "Aggregator", "Late", "TickerState", "decay", "recompute", "recompute_states"]

#: Rolling count windows: name -> length in ms. The longest bounds what state must retain.
WINDOWS_MS: Final[dict[str, int]] = {"5m": 300_000, "1h": 3_600_000, "24h": 86_400_000}
_MAX_WINDOW_MS: Final[int] = max(WINDOWS_MS.values())
_5M_MS, _1H_MS, _24H_MS = WINDOWS_MS["5m"], WINDOWS_MS["1h"], WINDOWS_MS["24h"]

# Window-count classes; index into TickerState.times. Any label other than positive/negative
# (a model with other class names) counts as neutral.
BEARISH, NEUTRAL, BULLISH = 0, 1, 2
_CLASS_OF_LABEL: Final[dict[str, int]] = {"negative": BEARISH, "neutral": NEUTRAL, "positive": BULLISH}


def decay(dt_ms: float, half_life_ms: float) -> float:
    """``2 ** (-dt_ms / half_life_ms)``: the weight left after dt_ms (>= 0) of ageing."""
    return math.exp2(-dt_ms / half_life_ms)


class Late(Exception):
    """A document is older than (ticker's as_of - lateness) for one or more of its tickers.

    Attributes:
        doc_id: the document.
        published_at: its event time, epoch ms.
        symbols: the tickers for which it was late (it was *not* applied to these).
        updates: updates for the document's other tickers, which *were* applied; the caller
            should publish them and dead-letter the document with reason ``late``.
    """

    def __init__(self, doc_id: str, published_at: int, symbols: tuple[str, ...], updates: list[TickerScore]):
        super().__init__(f"document {doc_id} at {published_at} is late for {', '.join(symbols)}")
        self.doc_id = doc_id
        self.published_at = published_at
        self.symbols = symbols
        self.updates = updates


@dataclass
class TickerState:
    """Aggregation state of one ticker.

    Fields:
        symbol: the ticker.
        as_of: latest event time applied, epoch ms.
        num, den: decayed sums ``sum r s 2^-(as_of-t)/H`` and ``sum r 2^-(as_of-t)/H``.
        seq: documents applied so far (never decreases; pruning does not touch it).
        last_doc_id, model_version: of the most recently applied document.
        events: ``(t_ms, doc_id, class, story_id)`` sorted, for documents with
            ``t >= as_of - retention_ms``; used for window counts and de-duplication.
        times: per class (BEARISH, NEUTRAL, BULLISH), the sorted event times of ``events``;
            derived, so window counts are two bisections instead of a scan.
        hour, hour_from: story id -> its events in ``(as_of - 1h, as_of]``, and the index in
            ``events`` where that window starts; derived, kept up to date as events come and
            the window slides, so ``stories_1h`` is ``len(hour)`` instead of a scan.
    """

    symbol: str
    as_of: int
    num: float = 0.0
    den: float = 0.0
    seq: int = 0
    last_doc_id: str = ""
    model_version: str = ""
    events: list[tuple[int, str, int, str]] = field(default_factory=list)
    times: tuple[list[int], list[int], list[int]] = field(default_factory=lambda: ([], [], []))
    hour: dict[str, int] = field(default_factory=dict)
    hour_from: int = 0

    @property
    def score(self) -> float:
        """Decayed mean at as_of, clamped to [-1, 1] against rounding."""
        if self.den <= 0.0:
            return 0.0
        return min(1.0, max(-1.0, self.num / self.den))

    def has(self, t_ms: int, doc_id: str) -> bool:
        """Whether document (t_ms, doc_id) is among the retained events."""
        i = bisect_left(self.events, (t_ms, doc_id))
        return i < len(self.events) and self.events[i][0] == t_ms and self.events[i][1] == doc_id

    def add(
        self,
        t_ms: int,
        doc_id: str,
        cls: int,
        score: float,
        relevance: float,
        half_life_ms: float,
        retention_ms: int,
        story_id: str | None = None,
    ) -> None:
        """Fold one document in. The caller has checked it is neither late nor a duplicate."""
        if t_ms > self.as_of:
            # Re-reference both sums to the new as_of (a factor <= 1, so no overflow ever).
            f = decay(t_ms - self.as_of, half_life_ms)
            self.num *= f
            self.den *= f
            self.as_of = t_ms
            self._slide_hour()
            self.prune(retention_ms)
        w = relevance * decay(self.as_of - t_ms, half_life_ms)
        self.num += w * score
        self.den += w
        self.seq += 1
        story = story_id or doc_id
        insort(self.events, (t_ms, doc_id, cls, story))
        insort(self.times[cls], t_ms)
        if t_ms > self.as_of - _1H_MS:
            self.hour[story] = self.hour.get(story, 0) + 1
        else:  # a late document, before the hour's window: the window starts one further on
            self.hour_from += 1

    def _slide_hour(self) -> None:
        """Move the hour's window start to ``as_of - 1h``, uncounting the events that left it."""
        lo, ev, hour, i = self.as_of - _1H_MS, self.events, self.hour, self.hour_from
        while i < len(ev) and ev[i][0] <= lo:
            story = ev[i][3]
            if hour[story] > 1:
                hour[story] -= 1
            else:
                del hour[story]
            i += 1
        self.hour_from = i

    def rebuild_hour(self) -> None:
        """Recount :attr:`hour` from ``events`` (after building ``events`` directly)."""
        self.hour_from = bisect_left(self.events, (self.as_of - _1H_MS + 1,))
        self.hour = {}
        for e in self.events[self.hour_from :]:
            self.hour[e[3]] = self.hour.get(e[3], 0) + 1

    def prune(self, retention_ms: int) -> None:
        """Drop events older than ``as_of - retention_ms``; they are outside every window."""
        cutoff = self.as_of - retention_ms
        if self.events and self.events[0][0] < cutoff:
            gone = bisect_left(self.events, (cutoff,))
            del self.events[:gone]
            self.hour_from = max(0, self.hour_from - gone)  # pruned events lie before the hour
            for ts in self.times:
                del ts[: bisect_left(ts, cutoff)]

    def counts(self, window_ms: int) -> tuple[int, int, int]:
        """(bearish, neutral, bullish) documents with event time in ``(as_of - window_ms, as_of]``."""
        lo = self.as_of - window_ms
        b, n, u = self.times
        return len(b) - bisect_right(b, lo), len(n) - bisect_right(n, lo), len(u) - bisect_right(u, lo)

    def snapshot(self, now_ms: int) -> TickerScore:
        """The current aggregate as a :class:`TickerScore` (``updated_at = now_ms``)."""
        c5, c1, c24 = self.counts(_5M_MS), self.counts(_1H_MS), self.counts(_24H_MS)
        s = self.score
        return TickerScore(
            symbol=self.symbol,
            score=s,
            label=score_label(s),
            n_5m=c5[0] + c5[1] + c5[2],
            n_1h=c1[0] + c1[1] + c1[2],
            n_24h=c24[0] + c24[1] + c24[2],
            bullish_5m=c5[BULLISH],
            bearish_5m=c5[BEARISH],
            neutral_5m=c5[NEUTRAL],
            bullish_1h=c1[BULLISH],
            bearish_1h=c1[BEARISH],
            neutral_1h=c1[NEUTRAL],
            bullish_24h=c24[BULLISH],
            bearish_24h=c24[BEARISH],
            neutral_24h=c24[NEUTRAL],
            last_doc_id=self.last_doc_id,
            as_of=self.as_of,
            updated_at=now_ms,
            model_version=self.model_version,
            seq=self.seq,
            stories_1h=len(self.hour),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (floats round-trip exactly through orjson)."""
        return {
            "symbol": self.symbol,
            "as_of": self.as_of,
            "num": self.num,
            "den": self.den,
            "seq": self.seq,
            "last_doc_id": self.last_doc_id,
            "model_version": self.model_version,
            "events": [list(e) for e in self.events],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TickerState:
        # a 3-element event was stored before stories were recorded: its own story
        events = sorted((int(e[0]), str(e[1]), int(e[2]), str(e[3] if len(e) > 3 else e[1])) for e in d["events"])
        times: tuple[list[int], list[int], list[int]] = ([], [], [])
        for t, _, c, _ in events:  # events are sorted, so each list comes out sorted
            times[c].append(t)
        st = cls(
            symbol=d["symbol"],
            as_of=int(d["as_of"]),
            num=float(d["num"]),
            den=float(d["den"]),
            seq=int(d["seq"]),
            last_doc_id=d["last_doc_id"],
            model_version=d["model_version"],
            events=events,
            times=times,
        )
        st.rebuild_hour()
        return st


def _links(doc: ScoredDocument, novelty_weighting: bool = True) -> dict[str, tuple[float, int, float]]:
    """symbol -> (weight, class, score): the link's relevance (a symbol linked twice, cashtag and
    name, counts once, at its best), times the document's novelty when ``novelty_weighting``; the
    sentiment toward the symbol (its link's target-aware ``label`` and ``score`` where it has
    them, else the document's). Nothing for a document kept out of the aggregates
    (``aggregated`` False: not an aggregated language)."""
    out: dict[str, tuple[float, int, float]] = {}
    if not doc.aggregated:
        return out
    doc_cls = _CLASS_OF_LABEL.get(doc.label, NEUTRAL)
    scale = doc.novelty if novelty_weighting else 1.0
    for link in doc.tickers:
        weight = link.relevance * scale
        if link.symbol in out and weight <= out[link.symbol][0]:
            continue
        if link.score is None:
            out[link.symbol] = (weight, doc_cls, doc.score)
        else:
            out[link.symbol] = (weight, _CLASS_OF_LABEL.get(link.label or "", NEUTRAL), link.score)
    return out


class Aggregator:
    """All tickers' state. Not thread-safe: one aggregator per partition/worker.

    Args:
        half_life_s: half-life of the decayed score, seconds (> 0).
        lateness_s: how far (event time, seconds) behind a ticker's as_of a document may be
            and still be applied (>= 0).
        novelty_weighting: scale each document's weight by its novelty (a repeated story
            counts less); False: every document counts fully, as before stories existed.
    """

    def __init__(self, half_life_s: float, lateness_s: float, novelty_weighting: bool = True) -> None:
        if not (half_life_s > 0 and math.isfinite(half_life_s)):
            raise ValueError(f"half_life_s must be > 0, got {half_life_s!r}")
        if not (lateness_s >= 0 and math.isfinite(lateness_s)):
            raise ValueError(f"lateness_s must be >= 0, got {lateness_s!r}")
        self.half_life_s = float(half_life_s)
        self.lateness_s = float(lateness_s)
        self.half_life_ms = self.half_life_s * 1000.0
        self.lateness_ms = round(self.lateness_s * 1000)
        # Anything older than this behind as_of is outside every window and would be late anyway.
        self.retention_ms = _MAX_WINDOW_MS + self.lateness_ms
        self.novelty_weighting = novelty_weighting
        self.tickers: dict[str, TickerState] = {}

    def apply(self, doc: ScoredDocument, now_ms: int) -> list[TickerScore]:
        """Apply one document to each of its tickers; return one update per ticker applied.

        ``now_ms`` is only stamped into ``updated_at``. A document already applied to a ticker
        (same id and event time, still retained) is skipped for it, so redelivery after a
        restart does not double count. A document without tickers returns ``[]``.

        Raises:
            Late: if the document is late for at least one ticker; it is still applied to
                the others and their updates are in ``Late.updates``.
        """
        t = doc.published_at
        updates: list[TickerScore] = []
        late: list[str] = []
        for symbol, (relevance, cls, score) in _links(doc, self.novelty_weighting).items():
            st = self.tickers.get(symbol)
            if st is None:
                st = self.tickers[symbol] = TickerState(symbol=symbol, as_of=t)
            elif t < st.as_of - self.lateness_ms:
                late.append(symbol)
                continue
            elif st.has(t, doc.id):
                continue
            st.add(t, doc.id, cls, score, relevance, self.half_life_ms, self.retention_ms, doc.story)
            st.last_doc_id = doc.id
            st.model_version = doc.model_version
            updates.append(st.snapshot(now_ms))
        if late:
            raise Late(doc.id, t, tuple(late), updates)
        return updates

    def snapshot(self, symbol: str, now_ms: int) -> TickerScore | None:
        """Current aggregate of one ticker, or None if it has never been seen."""
        st = self.tickers.get(symbol)
        return None if st is None else st.snapshot(now_ms)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state, enough to rebuild an identical aggregator with :meth:`from_dict`."""
        return {
            "half_life_s": self.half_life_s,
            "lateness_s": self.lateness_s,
            "novelty_weighting": self.novelty_weighting,
            "tickers": {s: st.to_dict() for s, st in self.tickers.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Aggregator:
        agg = cls(float(d["half_life_s"]), float(d["lateness_s"]), bool(d.get("novelty_weighting", True)))
        agg.tickers = {s: TickerState.from_dict(st) for s, st in d["tickers"].items()}
        return agg


def recompute(
    documents: Iterable[ScoredDocument],
    *,
    half_life_s: float,
    lateness_s: float = 0.0,
    now_ms: int = 0,
    novelty_weighting: bool = True,
) -> dict[str, TickerScore]:
    """Batch recomputation: symbol -> aggregate over all ``documents``, by the direct formula.

    Weights are evaluated once at the final as_of (``r 2^-(as_of - t)/H``, summed with fsum)
    instead of incrementally, so this is an independent check of :class:`Aggregator`. Nothing
    is late here; the result equals applying ``documents`` in the given order to a fresh
    ``Aggregator(half_life_s, lateness_s)`` whenever none of them is late there. ``lateness_s``
    only sets how much event history the returned states retain (same as the aggregator).
    """
    return {
        s: st.snapshot(now_ms)
        for s, st in recompute_states(
            documents, half_life_s=half_life_s, lateness_s=lateness_s, novelty_weighting=novelty_weighting
        ).items()
    }


def recompute_states(
    documents: Iterable[ScoredDocument],
    *,
    half_life_s: float,
    lateness_s: float = 0.0,
    novelty_weighting: bool = True,
) -> dict[str, TickerState]:
    """Like :func:`recompute`, returning the :class:`TickerState` objects (to compare states)."""
    ref = Aggregator(half_life_s, lateness_s)  # only for the derived constants
    per_symbol: dict[str, dict[tuple[int, str], tuple[float, float, int, str, str]]] = {}
    for doc in documents:
        for symbol, (relevance, cls, score) in _links(doc, novelty_weighting).items():
            # setdefault: a duplicate (same id and time) keeps its first application, like apply()
            per_symbol.setdefault(symbol, {}).setdefault(
                (doc.published_at, doc.id), (relevance, score, cls, doc.model_version, doc.story)
            )
    # last_doc_id / model_version: the last *distinct* document per symbol in input order
    out: dict[str, TickerState] = {}
    for symbol, docs in per_symbol.items():
        as_of = max(t for t, _ in docs)
        ws = [(r * decay(as_of - t, ref.half_life_ms), s) for (t, _), (r, s, *_) in docs.items()]
        (_, last_id), (_, _, _, last_version, _) = next(reversed(docs.items()))
        st = TickerState(
            symbol=symbol,
            as_of=as_of,
            num=math.fsum(w * s for w, s in ws),
            den=math.fsum(w for w, _ in ws),
            seq=len(docs),
            last_doc_id=last_id,
            model_version=last_version,
        )
        for (t, doc_id), (_, _, cls, _, story) in sorted(docs.items()):
            st.events.append((t, doc_id, cls, story))
            st.times[cls].append(t)
        st.prune(ref.retention_ms)
        st.rebuild_hour()
        out[symbol] = st
    return out
