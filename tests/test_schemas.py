"""pipeline.schemas: hostile input, timestamps, round trips, the bundled sample feed."""

from __future__ import annotations

import base64
import dataclasses
import importlib.util
import itertools
import json
import math
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pipeline.schemas import (
    MAX_DEAD_LETTER_RAW_BYTES,
    MAX_FUTURE_MS,
    MAX_TICKERS,
    MIN_EVENT_MS,
    REASON_CODES,
    DeadLetter,
    InputMessage,
    ParseError,
    ScoredDocument,
    TickerLink,
    TickerScore,
    normalize_symbol,
    parse_input,
    parse_timestamp,
    rfc3339,
    score_from_probs,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NOW = datetime(2024, 3, 14, 20, 0, tzinfo=UTC)
NOW_MS = (NOW - EPOCH) // timedelta(milliseconds=1)
DATA = Path(__file__).resolve().parent.parent / "pipeline" / "data"


def ms_of(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(milliseconds=1)


def msg(**fields: object) -> bytes:
    """A valid message with ``fields`` overriding (value ``...`` deletes the field)."""
    base: dict[str, object] = {"id": "n-1", "text": "Apple beats estimates", "published_at": NOW_MS - 60_000}
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


def reason_of(raw: bytes | str, **kw: object) -> str:
    with pytest.raises(ParseError) as e:
        parse_input(raw, now_ms=NOW_MS, **kw)  # type: ignore[arg-type]
    assert e.value.reason in REASON_CODES
    return e.value.reason


# ------------------------------------------------------------------ every reason code, for real

HOSTILE: list[tuple[str, bytes | str, str]] = [
    # too_large is decided on length alone, before any decoding
    ("1 MB text", b'{"id":"a","text":"' + b"x" * 1_000_000 + b'","published_at":1710424800000}', "too_large"),
    ("1 MB of garbage", b"\xff" * 1_000_001, "too_large"),
    ("invalid byte", b'{"id":"a","text":"caf\xe9","published_at":1710424800000}', "not_utf8"),
    ("overlong slash", b'{"id":"a","text":"\xc0\xaf","published_at":1710424800000}', "not_utf8"),
    ("encoded surrogate", b'{"id":"a","text":"\xed\xa0\x80","published_at":1710424800000}', "not_utf8"),
    ("truncated sequence", b'{"id":"a","text":"\xe2\x82","published_at":1710424800000}', "not_utf8"),
    ("str with lone surrogate", '{"id":"a","text":"\ud800","published_at":1710424800000}', "not_utf8"),
    ("empty", b"", "not_json"),
    ("NaN", b'{"id":"a","text":"x","published_at":NaN}', "not_json"),
    ("Infinity", b'{"id":"a","text":"x","published_at":Infinity}', "not_json"),
    ("overflowing float", b'{"id":"a","text":"x","published_at":1e999}', "not_json"),
    ("deep nesting", b'{"id":"a","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "not_json"),
    ("trailing garbage", b'{"id":"a"} {}', "not_json"),
    ("single quotes", b"{'id':'a'}", "not_json"),
    ("escaped lone surrogate", b'{"id":"a","text":"\\ud800","published_at":1}', "not_json"),
    ("raw newline in string", b'{"id":"a","text":"a\nb","published_at":1710424800000}', "not_json"),
    ("array", b'[{"id":"a"}]', "not_object"),
    ("string", b'"hello"', "not_object"),
    ("null", b"null", "not_object"),
    ("number", b"1710424800000", "not_object"),
    ("no id", msg(id=...), "missing_field"),
    ("null text", msg(text=None), "missing_field"),
    ("no published_at", msg(published_at=...), "missing_field"),
    ("numeric id", msg(id=12345), "wrong_type"),
    ("text list", msg(text=["Apple", "beats"]), "wrong_type"),
    ("text object", msg(text={"en": "Apple"}), "wrong_type"),
    ("boolean timestamp", msg(published_at=True), "wrong_type"),
    ("object timestamp", msg(published_at={"ms": 1}), "wrong_type"),
    ("numeric source", msg(source=7), "wrong_type"),
    ("list kind", msg(kind=["news"]), "wrong_type"),
    ("empty id", msg(id=""), "bad_value"),
    ("blank id", msg(id="   "), "bad_value"),
    ("huge id", msg(id="a" * 10_000), "bad_value"),
    ("id with NUL", msg(id="a\x00b"), "bad_value"),
    ("unknown kind", msg(kind="blog"), "bad_value"),
    ("bad lang", msg(lang="english please"), "bad_value"),
    ("url with spaces", msg(url="http://x y/z"), "bad_value"),
    ("url with newline", msg(url="http://x/\nSet-Cookie: a"), "bad_value"),
    ("empty text", msg(text=""), "empty_text"),
    ("whitespace text", msg(text=" \t\n\u3000\u00a0 "), "empty_text"),
    ("invisible text", msg(text="\u200b\u202e\u2066\ufeff\x00\x07"), "empty_text"),
    ("words", msg(published_at="yesterday"), "bad_timestamp"),
    ("date only", msg(published_at="2024-03-14"), "bad_timestamp"),
    ("no offset", msg(published_at="2024-03-14T13:30:00"), "bad_timestamp"),
    ("30 February", msg(published_at="2024-02-30T00:00:00Z"), "bad_timestamp"),
    ("hour 25", msg(published_at="2024-03-14T25:00:00Z"), "bad_timestamp"),
    ("offset +24:00", msg(published_at="2024-03-14T13:00:00+24:00"), "bad_timestamp"),
    ("fractional ms", msg(published_at=1710424800000.5), "bad_timestamp"),
    ("digit string", msg(published_at="1710424800000"), "bad_timestamp"),
    ("huge string", msg(published_at="2024-03-14T13:00:00Z" + " " * 1000), "bad_timestamp"),
    ("arabic-indic digits", msg(published_at="٢٠٢٤-03-14T13:00:00Z"), "bad_timestamp"),
    ("2 days ahead", msg(published_at=NOW_MS + 2 * 86_400_000), "future_timestamp"),
    ("year 9999", msg(published_at="9999-12-31T23:59:59Z"), "future_timestamp"),
    ("beyond 64 bits", b'{"id":"a","text":"x","published_at":100000000000000000000}', "future_timestamp"),
    ("epoch seconds", msg(published_at=NOW_MS // 1000), "too_old"),
    ("1989", msg(published_at="1989-12-31T23:59:59.999Z"), "too_old"),
    ("negative", msg(published_at=-1), "too_old"),
    ("tickers string", msg(tickers="AAPL"), "bad_tickers"),
    ("tickers numbers", msg(tickers=["AAPL", 1]), "bad_tickers"),
    ("tickers null entry", msg(tickers=[None]), "bad_tickers"),
    ("tickers object", msg(tickers={"AAPL": 1}), "bad_tickers"),
]


@pytest.mark.parametrize("raw,reason", [(r, c) for _, r, c in HOSTILE], ids=[n for n, _, _ in HOSTILE])
def test_hostile_input_rejected_with_reason(raw: bytes | str, reason: str) -> None:
    assert reason_of(raw) == reason


def test_every_parse_reason_code_is_exercised() -> None:
    aggregator_or_worker = {"late", "internal"}
    assert {c for _, _, c in HOSTILE} == REASON_CODES - aggregator_or_worker


def test_too_large_respects_max_bytes_and_boundary() -> None:
    raw = msg(text="x" * 200)
    assert parse_input(raw, now_ms=NOW_MS, max_bytes=len(raw)).text == "x" * 200
    assert reason_of(raw, max_bytes=len(raw) - 1) == "too_large"


def test_future_and_past_bounds_are_inclusive_of_the_edges() -> None:
    assert (
        parse_input(msg(published_at=NOW_MS + 86_400_000), now_ms=NOW_MS).published_at == NOW_MS + 86_400_000
    )
    assert reason_of(msg(published_at=NOW_MS + 86_400_001)) == "future_timestamp"
    y1990 = ms_of(datetime(1990, 1, 1, tzinfo=UTC))
    assert parse_input(msg(published_at=y1990), now_ms=NOW_MS).published_at == y1990
    assert reason_of(msg(published_at=y1990 - 1)) == "too_old"


def test_parse_error_carries_detail() -> None:
    with pytest.raises(ParseError) as e:
        parse_input(msg(published_at=NOW_MS // 1000), now_ms=NOW_MS)
    assert "seconds" in e.value.detail and str(e.value).startswith("too_old")


# ------------------------------------------------------------------ normalisation


def test_control_characters_removed_and_noted() -> None:
    m = parse_input(msg(text="Apple\x00 beats\x07 estimates\x1b[31m"), now_ms=NOW_MS)
    assert m.text == "Apple beats estimates[31m"
    assert "control_chars_removed" in m.notes


def test_bidi_and_invisible_characters_removed_and_noted() -> None:
    # RTL override would display "$LPAA"; zero-width space would split the cashtag; tags smuggle text
    m = parse_input(msg(text="\u202eShort $AA\u200bPL\u202c now\u200f\U000e0041\U000e0042"), now_ms=NOW_MS)
    assert m.text == "Short $AAPL now"
    assert "format_chars_removed" in m.notes and "control_chars_removed" not in m.notes


def test_whitespace_collapsed_without_a_note() -> None:
    m = parse_input(msg(text="  Apple\t\tbeats\r\n\u00a0estimates\u2028 "), now_ms=NOW_MS)
    assert m.text == "Apple beats estimates"
    assert m.notes == ()


def test_emoji_zwj_sequences_and_rtl_scripts_survive() -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    text = f"سهم أبل يرتفع {family} 🚀"
    assert parse_input(msg(text=text), now_ms=NOW_MS).text == text


@pytest.mark.parametrize(
    "text", ["Nestle\u0301 profit up", "Nestle\u0301\tprofit up", "Nestle\u200b\u0301 profit up"]
)
def test_text_is_nfc(text: str) -> None:
    m = parse_input(msg(text=text), now_ms=NOW_MS)
    assert m.text == unicodedata.normalize("NFC", "Nestle\u0301 profit up") and len(m.text) == 16


def test_long_text_truncated_not_rejected() -> None:
    m = parse_input(msg(text="word " * 10_000), now_ms=NOW_MS, max_text_chars=1000)
    assert len(m.text) <= 1000 and m.text_truncated and not m.text.endswith(" ")
    short = parse_input(msg(text="word " * 10), now_ms=NOW_MS, max_text_chars=1000)
    assert not short.text_truncated


def test_tickers_normalised_deduplicated_and_bad_ones_dropped() -> None:
    m = parse_input(
        msg(tickers=["$aapl", "NASDAQ:AAPL", " msft ", "BRK.B", "S&P 500", "", "nyse:f"]), now_ms=NOW_MS
    )
    assert m.tickers == ("AAPL", "MSFT", "BRK.B", "F")
    assert "tickers_dropped" in m.notes


def test_huge_tickers_list_is_capped() -> None:
    many = [f"T{i}" for i in range(100_000)]
    m = parse_input(msg(tickers=many), now_ms=NOW_MS)
    assert m.tickers == tuple(many[:MAX_TICKERS]) and "tickers_truncated" in m.notes
    # exactly the cap is not truncation
    m2 = parse_input(msg(tickers=many[:MAX_TICKERS]), now_ms=NOW_MS)
    assert len(m2.tickers) == MAX_TICKERS and "tickers_truncated" not in m2.notes


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("$AAPL", "AAPL"),
        ("nasdaq:nvda", "NVDA"),
        ("BF-B", "BF-B"),
        ("$", None),
        ("12AB", None),
        ("AAPL US", None),
    ],
)
def test_normalize_symbol(raw: str, expected: str | None) -> None:
    assert normalize_symbol(raw) == expected


def test_optional_fields_and_unknown_fields() -> None:
    m = parse_input(
        msg(
            source=" Marketline ",
            kind="TWEET",
            body=" Body\x00 text ",
            url=" https://e.com/a ",
            lang="en_US",
            extra={"nested": [1, 2]},
        ),
        now_ms=NOW_MS,
    )
    assert (m.source, m.kind, m.body, m.url, m.lang) == (
        "Marketline",
        "tweet",
        "Body text",
        "https://e.com/a",
        "en-us",
    )
    assert m.notes == ()  # body clean-up is not reported
    assert parse_input(msg(), now_ms=NOW_MS, default_kind="news").kind == "news"
    assert parse_input(msg(kind="tweet"), now_ms=NOW_MS, default_kind="news").kind == "tweet"
    nulls = parse_input(
        msg(source=None, kind=None, body=None, url=None, lang=None, tickers=None), now_ms=NOW_MS
    )
    assert (nulls.source, nulls.kind, nulls.body, nulls.url, nulls.lang, nulls.tickers) == (None,) * 5 + ((),)


def test_bom_and_input_buffer_types() -> None:
    raw = msg()
    expected = parse_input(raw, now_ms=NOW_MS)
    for variant in (b"\xef\xbb\xbf" + raw, bytearray(raw), memoryview(raw), raw.decode()):
        assert parse_input(variant, now_ms=NOW_MS) == expected
    assert reason_of(12345) == "wrong_type"  # type: ignore[arg-type]


# ------------------------------------------------------------------ timestamps


@pytest.mark.parametrize(
    "value,dt",
    [
        ("2024-03-14T13:30:00Z", datetime(2024, 3, 14, 13, 30, tzinfo=UTC)),
        ("2024-03-14T13:30:00.123Z", datetime(2024, 3, 14, 13, 30, 0, 123_000, tzinfo=UTC)),
        (
            "2024-03-14T13:30:00.123999999Z",
            datetime(2024, 3, 14, 13, 30, 0, 123_000, tzinfo=UTC),
        ),  # truncated
        ("2024-03-14T13:30:00.5Z", datetime(2024, 3, 14, 13, 30, 0, 500_000, tzinfo=UTC)),
        ("2024-03-14T09:30:00-04:00", datetime(2024, 3, 14, 13, 30, tzinfo=UTC)),
        ("2024-03-14T19:00:00.250+05:30", datetime(2024, 3, 14, 13, 30, 0, 250_000, tzinfo=UTC)),
        ("2024-03-14t13:30:00z", datetime(2024, 3, 14, 13, 30, tzinfo=UTC)),
        ("2024-03-14 13:30:00Z", datetime(2024, 3, 14, 13, 30, tzinfo=UTC)),
        ("2024-03-14T13:30:00-00:00", datetime(2024, 3, 14, 13, 30, tzinfo=UTC)),
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC)),  # leap second
    ],
)
def test_rfc3339_parsing(value: str, dt: datetime) -> None:
    assert parse_timestamp(value) == ms_of(dt)
    assert parse_input(msg(published_at=value), now_ms=NOW_MS).published_at == ms_of(dt)


def test_epoch_ms_parsing() -> None:
    ms = ms_of(datetime(2024, 3, 14, 13, 30, 0, 7000, tzinfo=UTC))
    assert parse_input(msg(published_at=ms), now_ms=NOW_MS).published_at == ms
    assert parse_input(msg(published_at=float(ms)), now_ms=NOW_MS).published_at == ms


def test_rfc3339_format() -> None:
    dt = datetime(2024, 3, 14, 9, 5, 7, 89_000, tzinfo=UTC)
    assert rfc3339(ms_of(dt)) == "2024-03-14T09:05:07.089Z"
    assert rfc3339(-1) == "1969-12-31T23:59:59.999Z"
    with pytest.raises(ValueError):
        rfc3339(10**18)


@given(
    st.integers(
        min_value=ms_of(datetime(1, 1, 1, tzinfo=UTC)), max_value=ms_of(datetime(9999, 12, 31, tzinfo=UTC))
    )
)
def test_rfc3339_round_trips(ms: int) -> None:
    s = rfc3339(ms)
    assert parse_timestamp(s) == ms
    assert datetime.fromisoformat(s) == EPOCH + timedelta(milliseconds=ms)


# ------------------------------------------------------------------ records round trip


def scored(**kw: object) -> ScoredDocument:
    probs = {"negative": 0.1, "neutral": 0.2, "positive": 0.7}
    base: dict[str, object] = {
        "id": "n-1",
        "published_at": NOW_MS,
        "label": "positive",
        "probs": probs,
        "score": score_from_probs(probs),
        "exit_layer": 3,
        "model_version": "elbert-1",
        "ingested_at": NOW_MS + 5,
        "scored_at": NOW_MS + 9,
        "tickers": (TickerLink("AAPL", (0, 5), "name", 0.8, 0.9), TickerLink("MSFT", None, "feed")),
    }
    base.update(kw)
    return ScoredDocument(**base)  # type: ignore[arg-type]


def test_input_message_round_trip() -> None:
    m = parse_input(
        msg(tickers=["AAPL"], kind="news", source="s", body="b", url="u", lang="en", text="x\x00y " * 3),
        now_ms=NOW_MS,
        max_text_chars=5,
    )
    assert m.notes == ("control_chars_removed", "text_truncated")
    assert InputMessage.from_json(m.to_json()) == m


def test_scored_document_round_trip_and_shape() -> None:
    doc = scored(truncated=True, source="wire", kind="news", text="Apple beats")
    again = ScoredDocument.from_json(doc.to_json())
    assert again == doc and isinstance(again.tickers[0].span, tuple)
    d = orjson.loads(doc.to_json())
    assert d["tickers"][0] == {
        "symbol": "AAPL",
        "span": [0, 5],
        "method": "name",
        "relevance": 0.8,
        "confidence": 0.9,
        "score": None,  # no target-aware score: the ticker takes the document's
        "label": None,
    }
    assert d["score"] == pytest.approx(0.6) and d["published_at"] == NOW_MS
    # a document written before links carried scores reads back with none
    del d["tickers"][0]["score"], d["tickers"][0]["label"]
    assert ScoredDocument.from_json(orjson.dumps(d)) == doc


def test_ticker_link_round_trip_and_validation() -> None:
    link = TickerLink("NVDA", (3, 8), "cashtag", 0.5, None)
    assert TickerLink.from_json(link.to_json()) == link
    scored_link = TickerLink("NVDA", (3, 8), "cashtag", 0.5, None, score=-0.75, label="negative")
    assert TickerLink.from_json(scored_link.to_json()) == scored_link
    for bad in (
        {"relevance": 0.0},
        {"relevance": 1.5},
        {"relevance": math.nan},
        {"span": (5, 5)},
        {"span": (-1, 2)},
        {"method": "guess"},
        {"confidence": 2.0},
        {"score": 1.5, "label": "positive"},
        {"score": math.nan, "label": "positive"},
        {"score": 0.5, "label": "bullish"},
        {"score": 0.5},  # a score without its label
        {"label": "positive"},
    ):
        args: dict[str, object] = {
            "symbol": "NVDA",
            "span": (3, 8),
            "method": "cashtag",
            "relevance": 0.5,
            "confidence": None,
        }
        args.update(bad)
        with pytest.raises(ValueError):
            TickerLink(**args)  # type: ignore[arg-type]


def test_scored_document_refuses_nan_and_out_of_range() -> None:
    for bad in ({"score": math.nan}, {"score": 1.5}, {"probs": {"positive": math.nan}}):
        with pytest.raises(ValueError):
            scored(**bad)


def test_ticker_score_round_trip() -> None:
    ts = TickerScore(
        "AAPL",
        0.25,
        "somewhat_bullish",
        1,
        2,
        3,
        1,
        0,
        0,
        1,
        1,
        0,
        2,
        1,
        0,
        "n-1",
        NOW_MS,
        NOW_MS + 1,
        "elbert-1",
        3,
    )
    assert TickerScore.from_json(ts.to_json()) == ts
    assert ts.to_dict()["bullish_24h"] == 2 and set(ts.to_dict()) == set(orjson.loads(ts.to_json()))


@given(st.binary(max_size=2000), st.text(max_size=50), st.integers(0, 2**31), st.integers(0, 2**62))
def test_dead_letter_keeps_bytes_exactly(raw: bytes, topic: str, partition: int, offset: int) -> None:
    dl = DeadLetter.from_error(raw, "not_json", "detail", topic, partition, offset, failed_at=NOW_MS)
    again = DeadLetter.from_json(dl.to_json())
    assert again == dl and again.raw == raw
    assert base64.b64decode(orjson.loads(dl.to_json())["raw_b64"]) == raw


def test_dead_letter_of_a_huge_message_stays_producible() -> None:
    # Regression: a 1 MB message kept whole became a 1.3 MB dead letter (base64), which the
    # producer refuses (MessageSizeTooLargeError, max_request_size 1 MB) -- and the outbox retried it forever.
    raw = b"\xff" + b"x" * 1_999_999
    dl = DeadLetter.from_error(raw, "too_large", "detail", "news.raw", 0, 1)
    assert len(dl.to_json()) < 100_000
    assert dl.raw == raw[:MAX_DEAD_LETTER_RAW_BYTES] and dl.raw_size == len(raw) and dl.raw_truncated
    assert DeadLetter.from_json(dl.to_json()) == dl
    small = DeadLetter.from_error(b"abc", "not_json", "", None, None, None)
    assert small.raw == b"abc" and small.raw_size == 3 and not small.raw_truncated
    # records written before raw_size/raw_truncated existed still read
    old = {"reason": "not_json", "detail": "", "raw_b64": "YWJj"}
    assert DeadLetter.from_json(orjson.dumps(old)) == DeadLetter("not_json", "", "YWJj")


def test_from_json_rejects_garbage_with_value_error() -> None:
    for cls in (InputMessage, TickerLink, ScoredDocument, TickerScore, DeadLetter):
        for raw in (b"[]", b"{", b"{}", b'{"id": 1}'):
            with pytest.raises(ValueError):
                cls.from_json(raw)  # type: ignore[attr-defined]


# ------------------------------------------------------------------ properties on arbitrary input


def _check(raw: bytes, **kw: object) -> InputMessage | None:
    """parse_input may only return a sane message or raise ParseError with a known code."""
    try:
        m = parse_input(raw, now_ms=NOW_MS, **kw)  # type: ignore[arg-type]
    except ParseError as e:
        assert e.reason in REASON_CODES
        return None
    max_chars = int(kw.get("max_text_chars", 20_000))  # type: ignore[call-overload]
    assert m.text and len(m.text) <= max_chars and m.text == m.text.strip() and "  " not in m.text
    for ch in m.text:
        cat = unicodedata.category(ch)
        assert (
            cat not in ("Cc", "Zl", "Zp")
            and (cat != "Cf" or ch in "\u200c\u200d")
            and (ch == " " or not ch.isspace())
        )
    assert unicodedata.is_normalized("NFC", m.text)
    assert len(m.tickers) <= MAX_TICKERS and all(normalize_symbol(t) == t for t in m.tickers)
    assert InputMessage.from_json(m.to_json()) == m
    # normalisation is idempotent: feeding the output back changes nothing
    again = parse_input(
        orjson.dumps({"id": m.id, "text": m.text, "published_at": m.published_at}),
        now_ms=NOW_MS,
        max_text_chars=max_chars,
    )
    assert again.text == m.text and not again.text_truncated
    return m


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_only_raise_parse_error(raw: bytes) -> None:
    _check(raw)
    _check(b'{"id":"a","text":' + raw + b',"published_at":1710424800000}')


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
FIELDS = ["id", "text", "published_at", "source", "kind", "body", "url", "tickers", "lang"]
plausible = {
    "id": st.text(max_size=12) | json_values,
    "text": st.text(max_size=80)
    | st.text(alphabet=st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Mn"]), max_size=20),
    "published_at": st.integers(0, 2 * NOW_MS)
    | st.datetimes(
        timezones=st.builds(timezone, st.timedeltas(-timedelta(hours=23), timedelta(hours=23)))
    ).map(lambda d: d.isoformat())
    | st.builds(rfc3339, st.integers(0, 2 * NOW_MS))
    | json_values,
    "source": st.text(max_size=10) | json_values,
    "kind": st.sampled_from(["news", "tweet", "NEWS", "blog", ""]) | json_values,
    "tickers": st.lists(st.text(max_size=8) | st.sampled_from(["$AAPL", "nyse:f", "BRK.B"]), max_size=60)
    | json_values,
    "lang": st.sampled_from(["en", "en_US", "EN-gb", "x"]) | json_values,
    "url": st.text(max_size=20) | json_values,
    "body": st.text(max_size=40) | json_values,
}


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values, max_size=10))
def test_arbitrary_json_objects_only_raise_parse_error(obj: dict[str, object]) -> None:
    # json (not orjson) so NaN/Infinity and >64-bit integers reach the parser as text
    _check(json.dumps(obj).encode())


@settings(max_examples=300)
@given(st.fixed_dictionaries({}, optional=plausible), st.integers(1, 100))
def test_plausible_messages_only_raise_parse_error(obj: dict[str, object], max_text_chars: int) -> None:
    _check(json.dumps(obj).encode(), max_text_chars=max_text_chars)


hostile_text = st.text(min_size=1, max_size=120) | st.lists(
    st.sampled_from(
        [
            "Apple",
            " ",
            "$AAPL",
            "\x00",
            "\u202e",
            "\u200b",
            "\u2028",
            "\t",
            "e\u0301",
            "\U000e0041",
            "\u200d",
            "\U0001f680",
            "\u0627",
            "\ufeff",
            "\x85",
            "\u3000",
        ]
    ),
    min_size=1,
    max_size=40,
).map("".join)


@settings(max_examples=300)
@given(
    st.fixed_dictionaries(
        {
            "id": st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=12),
            "text": hostile_text,
            "published_at": st.integers(NOW_MS - 86_400_000, NOW_MS)
            | st.builds(rfc3339, st.integers(NOW_MS // 2, NOW_MS)),
        },
        optional={k: v for k, v in plausible.items() if k not in ("id", "text", "published_at")},
    ),
    st.integers(1, 100),
)
def test_messages_with_hostile_text_mostly_parse(obj: dict[str, object], max_text_chars: int) -> None:
    # valid id and timestamp, so this exercises normalisation and the optional fields
    _check(json.dumps(obj).encode(), max_text_chars=max_text_chars)


def _nested(depth: int) -> object:
    value: object = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@settings(max_examples=200)
@given(
    st.dictionaries(st.text(max_size=8).filter(lambda k: k not in FIELDS), json_values | st.builds(_nested, st.integers(0, 1000)), max_size=5),
    hostile_text,
)
def test_unknown_fields_never_change_the_result(extra: dict[str, object], text: str) -> None:
    """Whatever unknown fields hold (any JSON, nesting up to orjson's 1,024 levels), the parse
    is that of the known fields alone; deeper nesting is not JSON to the parser (not_json)."""
    try:
        raw = json.dumps(extra, allow_nan=False)  # NaN/Infinity are not JSON: not_json, tested above
    except ValueError:
        assume(False)
    known = {"id": "n-1", "text": text, "published_at": NOW_MS}
    try:
        want: InputMessage | str = parse_input(orjson.dumps(known), now_ms=NOW_MS)
    except ParseError as e:
        want = e.reason
    try:
        got: InputMessage | str = parse_input(raw[:-1].encode() + (b", " if extra else b"") + orjson.dumps(known)[1:],
                                              now_ms=NOW_MS)  # fmt: skip
    except ParseError as e:
        got = e.reason
    assert got == want


def test_nesting_beyond_the_depth_limit_is_not_json() -> None:
    raw = orjson.dumps({"id": "n-1", "text": "hi", "published_at": NOW_MS})[:-1] + b',"x":' + b"[" * 1100 + b"]" * 1100 + b"}"
    with pytest.raises(ParseError) as e:
        parse_input(raw, now_ms=NOW_MS)
    assert e.value.reason == "not_json"


@settings(max_examples=300)
@given(st.integers(-(2**63), 2**63 - 1) | st.builds(rfc3339, st.integers(-62_135_596_800_000, 253_402_300_799_999)))
def test_timestamps_accepted_exactly_within_the_bounds(published_at: int | str) -> None:
    raw = orjson.dumps({"id": "t", "text": "hi", "published_at": published_at})
    ms = parse_timestamp(published_at)
    try:
        m = parse_input(raw, now_ms=NOW_MS)
    except ParseError as e:
        assert (e.reason, ms < MIN_EVENT_MS) in (("too_old", True), ("future_timestamp", False))
        assert not (MIN_EVENT_MS <= ms <= NOW_MS + MAX_FUTURE_MS)
        return
    assert m.published_at == ms and MIN_EVENT_MS <= ms <= NOW_MS + MAX_FUTURE_MS


# ------------------------------------------------------------------ the bundled sample feed


def test_sample_feed_parses_and_covers_the_mix() -> None:
    lines = (DATA / "sample_feed.jsonl").read_bytes().splitlines()
    assert 300 <= len(lines) <= 400
    raw = [orjson.loads(line) for line in lines]
    msgs = [parse_input(line, now_ms=NOW_MS) for line in lines]
    assert len({m.id for m in msgs}) == len(msgs)
    assert all(m.notes == () for m in msgs)
    assert {m.kind for m in msgs} == {"news", "tweet"}
    ts = [m.published_at for m in msgs]
    assert max(ts) - min(ts) >= 3 * 3_600_000 and max(ts) - min(ts) <= 8 * 3_600_000
    assert sum(b < a for a, b in itertools.pairwise(ts)) >= 5  # some arrive out of order
    assert {type(r["published_at"]) for r in raw} == {str, int}
    assert any(str(r["published_at"]).endswith("Z") for r in raw)
    assert any(str(r["published_at"]).endswith("-04:00") for r in raw)
    assert sum("$" in m.text for m in msgs) >= 30
    assert sum(":" in m.text for m in msgs) >= 10  # NASDAQ:AAPL style
    assert sum(bool(m.tickers) for m in msgs) >= 10
    assert len({m.source for m in msgs}) >= 5


def test_sample_feed_is_what_the_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location("make_sample_feed", DATA / "make_sample_feed.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.render(mod.generate()) == (DATA / "sample_feed.jsonl").read_text(encoding="utf-8")


def test_with_story_equals_replace_and_keeps_the_checks() -> None:
    d = scored(text="Apple beats", lang="en", source="wire", kind="news", truncated=True, aggregated=False)
    got = d.with_story("n-0", 0.75)
    assert got == dataclasses.replace(d, story_id="n-0", novelty=0.75)
    assert got.story == "n-0" and d.story_id is None  # the original is untouched
    with pytest.raises(ValueError, match="novelty"):
        d.with_story("n-0", 1.5)
