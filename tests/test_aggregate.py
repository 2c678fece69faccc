"""pipeline.aggregate: decayed mean, windows, lateness, order independence, state round trip."""

from __future__ import annotations

import dataclasses
import math
import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.aggregate import WINDOWS_MS, Aggregator, Late, TickerState, decay, recompute, recompute_states
from pipeline.schemas import SENTIMENT_LABELS, ScoredDocument, TickerLink, TickerScore, score_label

T0 = 1_710_423_000_000  # 2024-03-14T13:30:00Z
H_S = 3600.0
H_MS = int(H_S * 1000)
MIN = 60_000
HOUR = 3_600_000


def doc(
    doc_id: str,
    t: int,
    score: float,
    symbols: tuple[str, ...] = ("AAPL",),
    relevance: float = 1.0,
    label: str | None = None,
) -> ScoredDocument:
    """A document whose probs are consistent with ``score`` (label = argmax unless given)."""
    pos, neg = max(score, 0.0), max(-score, 0.0)
    probs = {"negative": neg, "neutral": 1.0 - pos - neg, "positive": pos}
    return ScoredDocument(
        id=doc_id,
        published_at=t,
        tickers=tuple(TickerLink(s, None, "feed", relevance) for s in symbols),
        label=label or max(probs, key=probs.__getitem__),
        probs=probs,
        score=score,
        exit_layer=2,
        model_version="m1",
        ingested_at=t,
        scored_at=t,
    )


def direct_score(docs: list[ScoredDocument], symbol: str, half_life_ms: float) -> float:
    """The spec's formula, written out independently: weights evaluated at the latest event time."""
    mine = [
        (d, next(x.relevance for x in d.tickers if x.symbol == symbol))
        for d in docs
        if any(x.symbol == symbol for x in d.tickers)
    ]
    t = max(d.published_at for d, _ in mine)
    w = [r * 0.5 ** ((t - d.published_at) / half_life_ms) for d, r in mine]
    return sum(wi * d.score for wi, (d, _) in zip(w, mine)) / sum(w)


# ------------------------------------------------------------------ labels


@pytest.mark.parametrize(
    "score,label",
    [
        (-1.0, "bearish"),
        (-0.35, "bearish"),
        (math.nextafter(-0.35, 1), "somewhat_bearish"),
        (-0.15, "somewhat_bearish"),
        (math.nextafter(-0.15, 1), "neutral"),
        (0.0, "neutral"),
        (math.nextafter(0.15, -1), "neutral"),
        (0.15, "somewhat_bullish"),
        (math.nextafter(0.35, -1), "somewhat_bullish"),
        (0.35, "bullish"),
        (1.0, "bullish"),
    ],
)
def test_label_cut_offs(score: float, label: str) -> None:
    assert score_label(score) == label


@given(st.floats(-1, 1), st.floats(-1, 1))
def test_labels_are_monotone(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert SENTIMENT_LABELS.index(score_label(lo)) <= SENTIMENT_LABELS.index(score_label(hi))


# ------------------------------------------------------------------ decay


@given(st.floats(-1, 1), st.floats(0.01, 1))
def test_single_document_score_is_its_score(score: float, relevance: float) -> None:
    [u] = Aggregator(H_S, H_S).apply(doc("a", T0, score, relevance=relevance), now_ms=T0 + 5)
    assert u.score == pytest.approx(score, abs=1e-12)
    assert (u.symbol, u.as_of, u.updated_at, u.last_doc_id, u.model_version, u.seq) == (
        "AAPL",
        T0,
        T0 + 5,
        "a",
        "m1",
        1,
    )
    assert u.label == score_label(u.score)


def test_two_documents_a_half_life_apart_weigh_two_to_one() -> None:
    agg = Aggregator(H_S, 2 * H_S)
    agg.apply(doc("old", T0, -1.0), T0)
    [u] = agg.apply(doc("new", T0 + H_MS, 1.0), T0)
    assert u.score == pytest.approx((2 * 1.0 + 1 * -1.0) / 3, abs=1e-12)
    # the same pair arriving in the other order gives the same number
    agg2 = Aggregator(H_S, 2 * H_S)
    agg2.apply(doc("new", T0 + H_MS, 1.0), T0)
    [u2] = agg2.apply(doc("old", T0, -1.0), T0)
    assert u2.score == pytest.approx(u.score, abs=1e-12) and u2.as_of == T0 + H_MS


def test_relevance_scales_the_weight() -> None:
    agg = Aggregator(H_S, H_S)
    agg.apply(doc("a", T0, 1.0, relevance=0.25), T0)
    [u] = agg.apply(doc("b", T0, -1.0, relevance=1.0), T0)
    assert u.score == pytest.approx((0.25 - 1.0) / 1.25, abs=1e-12)


def test_twice_linked_symbol_counts_once_at_best_relevance() -> None:
    d = doc("a", T0, 0.5)
    d2 = ScoredDocument(
        **{
            **{f: getattr(d, f) for f in d.__slots__},  # type: ignore[attr-defined]
            "tickers": (TickerLink("AAPL", None, "feed", 0.9), TickerLink("AAPL", (0, 5), "name", 0.3)),
        }
    )
    agg = Aggregator(H_S, H_S)
    agg.apply(doc("b", T0, -1.0), T0)
    [u] = agg.apply(d2, T0)
    assert u.seq == 2 and u.n_5m == 2
    assert u.score == pytest.approx((0.9 * 0.5 - 1.0) / 1.9, abs=1e-12)


def test_matches_direct_formula_on_a_random_stream() -> None:
    rng = random.Random(7)
    docs = [
        doc(
            f"d{i}",
            T0 + i * 37_000 + rng.randint(-60_000, 0),
            rng.uniform(-1, 1),
            tuple(rng.sample(["AAPL", "MSFT", "F"], rng.randint(1, 2))),
            rng.uniform(0.1, 1.0),
        )
        for i in range(400)
    ]
    agg = Aggregator(H_S, 600.0)
    last: dict[str, TickerScore] = {}
    for d in docs:
        for u in agg.apply(d, T0):
            last[u.symbol] = u
    for sym, u in last.items():
        assert u.score == pytest.approx(direct_score(docs, sym, H_MS), abs=1e-9)


def test_no_overflow_or_nan_over_a_long_stream() -> None:
    # 10,000 half-lives of 1 s: naive 2**(t/H) weights would overflow after ~1024 s.
    agg = Aggregator(1.0, 1.0)
    for i in range(2000):
        [u] = agg.apply(doc(f"d{i}", T0 + i * 5000, 0.5 if i % 2 else -0.5), T0)
        assert math.isfinite(u.score) and -1 <= u.score <= 1
    # the last document dominates: the previous one is 5 half-lives older
    assert u.score == pytest.approx((0.5 - 0.5 / 32) / (1 + 1 / 32), abs=1e-9)
    agg.apply(doc("far", T0 + 10**12, -0.2), T0)  # a jump of 10^9 half-lives underflows history to 0
    state = agg.tickers["AAPL"]
    assert state.score == pytest.approx(-0.2) and state.den > 0


# ------------------------------------------------------------------ order independence


def state_key(agg: Aggregator) -> dict[str, tuple]:
    return {
        s: (st.as_of, st.seq, st.score, st.events, [st.counts(w) for w in WINDOWS_MS.values()])
        for s, st in agg.tickers.items()
    }


def assert_same_state(a: Aggregator, b: Aggregator) -> None:
    ka, kb = state_key(a), state_key(b)
    assert ka.keys() == kb.keys()
    for s in ka:
        as_of, seq, score, events, counts = ka[s]
        assert (as_of, seq, events, counts) == (kb[s][0], kb[s][1], kb[s][3], kb[s][4])
        assert score == pytest.approx(kb[s][2], abs=1e-9)
        assert a.tickers[s].den == pytest.approx(b.tickers[s].den, rel=1e-9)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2 * HOUR),
            st.floats(-1, 1),
            st.floats(0.05, 1.0),
            st.sets(st.sampled_from(["AAPL", "MSFT", "TSLA"]), min_size=1, max_size=3),
        ),
        min_size=1,
        max_size=40,
    ),
    st.randoms(use_true_random=False),
    st.sampled_from([1.0, 60.0, 3600.0]),
)
def test_order_independent_within_lateness(rows: list[tuple], rnd: random.Random, half_life_s: float) -> None:
    docs = [doc(f"d{i}", T0 + t, s, tuple(sorted(syms)), r) for i, (t, s, r, syms) in enumerate(rows)]
    lateness_s = 2 * HOUR / 1000  # every document is within lateness of every other
    in_order = Aggregator(half_life_s, lateness_s)
    for d in sorted(docs, key=lambda d: d.published_at):
        in_order.apply(d, T0)
    shuffled = docs[:]
    rnd.shuffle(shuffled)
    other = Aggregator(half_life_s, lateness_s)
    for d in shuffled:
        other.apply(d, T0)
    assert_same_state(in_order, other)
    # and both equal the batch recomputation
    batch = recompute(shuffled, half_life_s=half_life_s, lateness_s=lateness_s)
    for sym, ts in batch.items():
        assert ts.score == pytest.approx(other.tickers[sym].score, abs=1e-9)
        assert ts.seq == other.tickers[sym].seq and ts.as_of == other.tickers[sym].as_of
        syms_docs = [d for d in docs if any(x.symbol == sym for x in d.tickers)]
        assert ts.score == pytest.approx(direct_score(syms_docs, sym, half_life_s * 1000), abs=1e-9)


# ------------------------------------------------------------------ windows


def test_window_counts() -> None:
    agg = Aggregator(H_S, 25 * 3600.0)
    now = T0 + 25 * HOUR
    ages = [0, 4 * MIN, 5 * MIN, 30 * MIN, 60 * MIN, 2 * HOUR, 24 * HOUR - 1, 24 * HOUR, 24 * HOUR + 1]
    labels = ["positive", "negative", "neutral"]
    for i, age in enumerate(ages):
        agg.apply(doc(f"d{i}", now - age, 0.0, label=labels[i % 3]), T0)
    u = agg.snapshot("AAPL", T0)
    assert u is not None and u.as_of == now
    for w, n, b, be, ne in (
        ("5m", u.n_5m, u.bullish_5m, u.bearish_5m, u.neutral_5m),
        ("1h", u.n_1h, u.bullish_1h, u.bearish_1h, u.neutral_1h),
        ("24h", u.n_24h, u.bullish_24h, u.bearish_24h, u.neutral_24h),
    ):
        inside = [i for i, age in enumerate(ages) if age < WINDOWS_MS[w]]  # window is (as_of - W, as_of]
        assert n == len(inside) == b + be + ne
        assert (b, be, ne) == tuple(sum(1 for i in inside if labels[i % 3] == lab) for lab in labels)
    assert (u.n_5m, u.n_1h, u.n_24h) == (2, 4, 7)


def test_windows_slide_as_event_time_advances() -> None:
    agg = Aggregator(H_S, H_S)
    agg.apply(doc("a", T0, 0.9), T0)
    [u] = agg.apply(doc("b", T0 + 10 * MIN, -0.9), T0)
    assert (u.n_5m, u.n_1h, u.bullish_5m, u.bearish_5m, u.bullish_1h, u.bearish_1h) == (1, 2, 0, 1, 1, 1)


def test_market_wide_document_updates_nothing() -> None:
    agg = Aggregator(H_S, H_S)
    assert agg.apply(doc("m", T0, 0.5, symbols=()), T0) == [] and agg.tickers == {}


def test_one_update_per_ticker() -> None:
    ups = Aggregator(H_S, H_S).apply(doc("a", T0, 0.5, symbols=("AAPL", "MSFT", "NVDA")), T0)
    assert [u.symbol for u in ups] == ["AAPL", "MSFT", "NVDA"] and all(u.seq == 1 for u in ups)


# ------------------------------------------------------------------ lateness, duplicates


def test_late_document_raises_and_changes_nothing_for_that_ticker() -> None:
    agg = Aggregator(H_S, 600.0)
    agg.apply(doc("a", T0 + HOUR, 0.5), T0)
    [u] = agg.apply(doc("edge", T0 + HOUR - 600_000, 0.1), T0)  # exactly at the bound: accepted
    assert u.seq == 2 and u.as_of == T0 + HOUR
    before = orjson.dumps(agg.to_dict())
    with pytest.raises(Late) as e:
        agg.apply(doc("late", T0 + HOUR - 600_001, -1.0), T0)
    assert e.value.symbols == ("AAPL",) and e.value.updates == [] and e.value.doc_id == "late"
    assert e.value.published_at == T0 + HOUR - 600_001
    assert orjson.dumps(agg.to_dict()) == before


def test_late_for_one_ticker_still_applies_to_the_others() -> None:
    agg = Aggregator(H_S, 60.0)
    agg.apply(doc("a", T0 + HOUR, 0.5, symbols=("AAPL",)), T0)
    with pytest.raises(Late) as e:
        agg.apply(doc("b", T0, -0.5, symbols=("AAPL", "MSFT")), T0)
    assert e.value.symbols == ("AAPL",)
    assert [u.symbol for u in e.value.updates] == ["MSFT"] and agg.tickers["MSFT"].seq == 1
    assert agg.tickers["AAPL"].seq == 1


def test_redelivered_document_is_not_double_counted() -> None:
    agg = Aggregator(H_S, H_S)
    d = doc("a", T0, 0.6)
    agg.apply(d, T0)
    agg.apply(doc("b", T0 + MIN, -0.6), T0)
    assert agg.apply(d, T0) == []
    assert agg.tickers["AAPL"].seq == 2 and agg.tickers["AAPL"].counts(WINDOWS_MS["1h"]) == (1, 0, 1)


# ------------------------------------------------------------------ memory, serialisation, recompute


def test_pruning_keeps_memory_bounded() -> None:
    lateness_s = 600.0
    agg = Aggregator(H_S, lateness_s)
    step = 30_000
    for i in range(10_000):  # ~3.5 days of one document every 30 s
        agg.apply(doc(f"d{i}", T0 + i * step, 0.1), T0)
    st = agg.tickers["AAPL"]
    horizon = WINDOWS_MS["24h"] + int(lateness_s * 1000)
    assert len(st.events) <= horizon // step + 1
    assert sum(len(t) for t in st.times) == len(st.events)
    assert st.events[0][0] >= st.as_of - horizon
    assert st.seq == 10_000  # pruning drops detail, not the running totals
    assert agg.snapshot("AAPL", T0).n_24h == WINDOWS_MS["24h"] // step  # type: ignore[union-attr]


def test_state_round_trips_through_json() -> None:
    rng = random.Random(3)
    agg = Aggregator(H_S, 900.0)
    docs = [
        doc(
            f"d{i}",
            T0 + i * 20_000 - rng.randint(0, 800_000),
            rng.uniform(-1, 1),
            tuple(rng.sample(["AAPL", "MSFT", "TSLA"], 2)),
        )
        for i in range(300)
    ]
    for d in docs[:200]:
        try:
            agg.apply(d, T0)
        except Late:
            pass
    rebuilt = Aggregator.from_dict(orjson.loads(orjson.dumps(agg.to_dict())))
    assert rebuilt.to_dict() == agg.to_dict()
    for d in docs[200:]:
        try:
            a = agg.apply(d, T0)
        except Late as e:
            a = e.updates
        try:
            b = rebuilt.apply(d, T0)
        except Late as e:
            b = e.updates
        assert a == b  # exact, not approximately: the floats round-trip bit for bit


def test_recompute_equals_incremental_in_event_time_order() -> None:
    rng = random.Random(11)
    docs = [
        doc(
            f"d{i}",
            T0 + rng.randint(0, 30 * HOUR),
            rng.uniform(-1, 1),
            tuple(rng.sample(["AAPL", "MSFT", "TSLA", "F"], rng.randint(1, 3))),
            rng.uniform(0.2, 1.0),
            label=rng.choice(["positive", "negative", "neutral"]),
        )
        for i in range(500)
    ]
    docs.sort(key=lambda d: d.published_at)
    agg = Aggregator(H_S, 300.0)
    for d in docs:
        agg.apply(d, T0)
    batch = recompute(docs, half_life_s=H_S, lateness_s=300.0, now_ms=T0)
    assert batch.keys() == agg.tickers.keys()
    for sym, ts in batch.items():
        inc = agg.snapshot(sym, T0)
        assert inc is not None
        assert ts.score == pytest.approx(inc.score, abs=1e-9)
        exact = {f: getattr(ts, f) for f in ts.__slots__ if f != "score"}  # type: ignore[attr-defined]
        assert exact == {f: getattr(inc, f) for f in exact}
    states = recompute_states(docs, half_life_s=H_S, lateness_s=300.0)
    for sym, state in states.items():
        assert state.events == agg.tickers[sym].events and state.times == agg.tickers[sym].times


def test_ticker_state_from_dict_rebuilds_class_lists() -> None:
    agg = Aggregator(H_S, H_S)
    for i, lab in enumerate(["positive", "negative", "neutral", "positive"]):
        agg.apply(doc(f"d{i}", T0 + (3 - i) * MIN, 0.0, label=lab), T0)
    st = agg.tickers["AAPL"]
    again = TickerState.from_dict(st.to_dict())
    assert again == st and again.counts(WINDOWS_MS["5m"]) == st.counts(WINDOWS_MS["5m"]) == (1, 1, 2)


def test_constructor_validates() -> None:
    for bad in ((0, 1), (-1, 1), (math.nan, 1), (1, -1), (1, math.inf)):
        with pytest.raises(ValueError):
            Aggregator(*bad)


# ------------------------------------------------------------------ more properties


@given(st.floats(0, 1e9), st.floats(0, 1e9), st.floats(1.0, 1e8))
def test_decay_is_monotone_and_multiplicative(a: float, b: float, half_life_ms: float) -> None:
    lo, hi = sorted((a, b))
    assert 0.0 <= decay(hi, half_life_ms) <= decay(lo, half_life_ms) <= decay(0.0, half_life_ms) == 1.0
    assert decay(a + b, half_life_ms) == pytest.approx(decay(a, half_life_ms) * decay(b, half_life_ms), rel=1e-9, abs=1e-300)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 48 * HOUR), st.integers(0, 48 * HOUR), st.floats(-1, 1), st.floats(-1, 1), st.sampled_from([60.0, 3600.0]))
def test_an_older_document_weighs_less(gap_1: int, gap_2: int, old_score: float, new_score: float, half_life_s: float) -> None:
    """Decay monotonicity on the aggregate: the further an older document lies behind a newer
    one, the closer the score is to the newer document's."""

    def score(gap: int) -> float:
        agg = Aggregator(half_life_s, 49 * 3600.0)
        agg.apply(doc("old", T0, old_score), T0)
        agg.apply(doc("new", T0 + gap, new_score), T0)
        return agg.tickers["AAPL"].score

    near, far = sorted((gap_1, gap_2))
    assert abs(score(far) - new_score) <= abs(score(near) - new_score) + 1e-12
    # the score always lies between the two documents' scores
    lo, hi = sorted((old_score, new_score))
    assert lo - 1e-12 <= score(near) <= hi + 1e-12


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 30 * HOUR), st.sampled_from(["positive", "negative", "neutral"]), st.floats(-1, 1)),
        min_size=1,
        max_size=60,
    ),
    st.randoms(use_true_random=False),
)
def test_window_counts_equal_a_brute_force_count(rows: list[tuple[int, str, float]], rnd: random.Random) -> None:
    """In any arrival order (everything within lateness): each window counts exactly the
    documents with event time in (as_of - W, as_of], per label; 5m <= 1h <= 24h; seq = all."""
    docs = [doc(f"d{i}", T0 + t, s, label=lab) for i, (t, lab, s) in enumerate(rows)]
    rnd.shuffle(docs)
    agg = Aggregator(H_S, 31 * 3600.0)
    for d in docs:
        agg.apply(d, T0)
    u = agg.snapshot("AAPL", T0)
    assert u is not None and u.as_of == max(d.published_at for d in docs) and u.seq == len(docs)
    for w in WINDOWS_MS:
        inside = [d for d in docs if u.as_of - WINDOWS_MS[w] < d.published_at <= u.as_of]
        got = (getattr(u, f"n_{w}"), getattr(u, f"bullish_{w}"), getattr(u, f"bearish_{w}"), getattr(u, f"neutral_{w}"))
        want = (len(inside), *(sum(d.label == lab for d in inside) for lab in ("positive", "negative", "neutral")))
        assert got == want, w
    assert u.n_5m <= u.n_1h <= u.n_24h
    assert -1.0 <= u.score <= 1.0 and u.label == score_label(u.score)


# ------------------------------------------------------------------ stories


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3 * HOUR), st.sampled_from(["s1", "s2", "s3", None]), st.floats(0.1, 1.0)),
        min_size=1,
        max_size=50,
    ),
    st.randoms(use_true_random=False),
)
def test_stories_1h_counts_distinct_stories_of_the_hour_as_documents_come_and_go(
    rows: list[tuple], rnd: random.Random
) -> None:
    """Incremental ``stories_1h`` (the hour's window slides, late documents land before it, old
    ones are pruned) equals a count over the retained events after every document, and the
    novelty scales the weight exactly as relevance does."""
    import dataclasses

    docs = [dataclasses.replace(doc(f"d{i}", T0 + t, 0.5), story_id=story, novelty=nov)
            for i, (t, story, nov) in enumerate(rows)]  # fmt: skip
    rnd.shuffle(docs)
    agg = Aggregator(H_S, 3 * HOUR / 1000)
    for d in docs:
        updates = agg.apply(d, T0)
        st_ = agg.tickers["AAPL"]
        lo = st_.as_of - HOUR
        want = len({e[3] for e in st_.events if e[0] > lo})
        assert st_.snapshot(T0).stories_1h == want
        for u in updates:
            assert u.stories_1h == want
    batch = recompute(docs, half_life_s=H_S, lateness_s=3 * HOUR / 1000)["AAPL"]
    assert batch.stories_1h == agg.tickers["AAPL"].snapshot(T0).stories_1h
    assert batch.score == pytest.approx(agg.tickers["AAPL"].score, abs=1e-9)
    plain = recompute([dataclasses.replace(d, novelty=1.0) for d in docs], half_life_s=H_S, lateness_s=3 * HOUR / 1000)
    unweighted = Aggregator(H_S, 3 * HOUR / 1000, novelty_weighting=False)
    for d in docs:
        unweighted.apply(d, T0)
    assert unweighted.tickers["AAPL"].score == pytest.approx(plain["AAPL"].score, abs=1e-9)


def test_a_links_target_aware_score_replaces_the_documents_for_that_ticker_only() -> None:
    """"$AAPL beats, $MSFT misses": each ticker's aggregate takes the sentiment toward it (its
    link's score and label) where the link has one, else the document's; recompute agrees."""
    links = (
        TickerLink("AAPL", (0, 5), "cashtag", score=0.8, label="positive"),
        TickerLink("MSFT", (13, 18), "cashtag", score=-0.6, label="negative"),
        TickerLink("SPY", None, "feed", 0.5),
    )
    d = dataclasses.replace(doc("pair", 1_000, 0.1), tickers=links)
    agg = Aggregator(half_life_s=3600, lateness_s=0)
    got = {u.symbol: u for u in agg.apply(d, now_ms=1_000)}
    assert got["AAPL"].score == pytest.approx(0.8) and got["AAPL"].bullish_1h == 1 and got["AAPL"].bearish_1h == 0
    assert got["MSFT"].score == pytest.approx(-0.6) and got["MSFT"].bearish_1h == 1
    assert got["SPY"].score == pytest.approx(0.1)  # no target-aware score: the document's
    again = recompute([d], half_life_s=3600)
    assert {s: u.score for s, u in again.items()} == pytest.approx({s: u.score for s, u in got.items()})
