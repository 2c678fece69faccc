"""The one schema module for every finsent message (input, output, dead letters).

Trading bots import this module too, so it stays light: standard library + orjson, no torch,
no pydantic. Every record is a frozen, slotted dataclass with ``to_json() -> bytes`` and
``from_json(bytes)``; orjson serialises the dataclasses natively, which keeps the hot path at
a few microseconds per message.

Units: every timestamp is an ``int`` of epoch **milliseconds, UTC** (field names end in
``_at`` or are ``as_of``). JSON carries the integers; :func:`rfc3339` renders them for humans.

Wire formats:

* ``news.raw`` / ``tweets.raw`` -> :func:`parse_input` -> :class:`InputMessage`
* ``finsent.documents`` -> :class:`ScoredDocument` (with :class:`TickerLink` entries)
* ``finsent.ticker-scores`` -> :class:`TickerScore` (Kafka key: the symbol)
* ``finsent.dlq`` -> :class:`DeadLetter`
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any, Final, Literal

import orjson

__all__ = [
    "BEARISH_MAX",
    "BULLISH_MIN",
    "LABELS",
    "MAX_DEAD_LETTER_RAW_BYTES",
    "MAX_TICKERS",
    "REASON_CODES",
    "SENTIMENT_LABELS",
    "DeadLetter",
    "InputMessage",
    "ParseError",
    "ScoredDocument",
    "TickerLink",
    "TickerScore",
    "epoch_ms",
    "normalize_symbol",
    "parse_input",
    "parse_timestamp",
    "rfc3339",
    "score_from_probs",
    "score_label",
]

# --------------------------------------------------------------------------------------------
# Constants

#: Model class labels (same order as ``models.elbert.LABELS``, duplicated to avoid importing torch).
LABELS: Final[tuple[str, ...]] = ("negative", "neutral", "positive")

#: Ticker-score labels, most bearish first.
SENTIMENT_LABELS: Final[tuple[str, ...]] = (
    "bearish",
    "somewhat_bearish",
    "neutral",
    "somewhat_bullish",
    "bullish",
)
# Alpha Vantage-style cut-offs on a score in [-1, 1]; see score_label for which side is inclusive.
BEARISH_MAX: Final[float] = -0.35
SOMEWHAT_BEARISH_MAX: Final[float] = -0.15
SOMEWHAT_BULLISH_MIN: Final[float] = 0.15
BULLISH_MIN: Final[float] = 0.35

#: Feed-supplied tickers kept per message; more are dropped with the note ``tickers_truncated``.
MAX_TICKERS: Final[int] = 50
MAX_ID_CHARS: Final[int] = 256
MAX_SOURCE_CHARS: Final[int] = 200
MAX_URL_CHARS: Final[int] = 4096
MAX_FUTURE_MS: Final[int] = 86_400_000  # 1 day of clock skew tolerated
MIN_EVENT_MS: Final[int] = 631_152_000_000  # 1990-01-01T00:00:00Z
#: Original bytes kept in a dead letter. A dead letter must stay well under Kafka's default 1 MB
#: record limit (base64 adds a third); the whole message stays in its input topic at the
#: dead letter's topic/partition/offset.
MAX_DEAD_LETTER_RAW_BYTES: Final[int] = 65_536

#: Stable reason codes written to ``finsent.dlq``. Parse codes come from :func:`parse_input`;
#: ``late`` is raised by the aggregator, ``internal`` is for anything the worker could not classify.
REASON_CODES: Final[frozenset[str]] = frozenset(
    {
        "too_large",  # raw message longer than max_bytes (checked before decoding)
        "not_utf8",  # bytes are not valid UTF-8
        "not_json",  # not JSON (includes NaN/Infinity, depth > 1024, numbers out of range)
        "not_object",  # JSON, but the top level is not an object
        "missing_field",  # id, text or published_at absent or null
        "wrong_type",  # a known field has the wrong JSON type
        "bad_value",  # right type, unusable value (empty/oversized id, unknown kind, bad lang/url)
        "empty_text",  # text is empty after normalisation
        "bad_timestamp",  # published_at is not RFC 3339 with offset / not integral epoch ms
        "future_timestamp",  # published_at more than max_future_ms ahead of now
        "too_old",  # published_at before 1990 (often epoch *seconds* sent as ms)
        "bad_tickers",  # tickers is not a list of strings
        "late",  # aggregator: older than the ticker's event time minus the lateness bound
        "internal",  # worker: unexpected failure while processing an accepted message
    }
)

Kind = Literal["news", "tweet"]
LinkMethod = Literal["feed", "cashtag", "exchange", "name"]
_KINDS: Final[frozenset[str]] = frozenset({"news", "tweet"})
_LINK_METHODS: Final[frozenset[str]] = frozenset({"feed", "cashtag", "exchange", "name"})


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


# --------------------------------------------------------------------------------------------
# Errors and small helpers


class ParseError(ValueError):
    """An input message was rejected. ``reason`` is one of :data:`REASON_CODES`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def rfc3339(ms: int) -> str:
    """Epoch milliseconds -> ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC, millisecond precision).

    Raises ValueError outside years 1..9999.
    """
    try:
        dt = _EPOCH + timedelta(milliseconds=ms)
    except OverflowError as e:
        raise ValueError(f"timestamp out of range: {ms}") from e
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T"
        f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}.{dt.microsecond // 1000:03d}Z"
    )


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


def parse_timestamp(value: object) -> int:
    """RFC 3339 string (``Z`` or ``±HH:MM`` offset required) or integral epoch ms -> epoch ms UTC.

    Fractions below a millisecond are truncated. Raises ParseError(``bad_timestamp`` or
    ``wrong_type``); range checks (too old / in the future) are :func:`parse_input`'s job.
    """
    if isinstance(value, bool):  # bool is an int subclass; True is not a timestamp
        raise ParseError("wrong_type", "published_at: expected RFC 3339 string or epoch ms integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        # orjson turns integers beyond 64 bits into floats; accept integral ones, range checks follow.
        if math.isfinite(value) and value.is_integer():
            return int(value)
        raise ParseError("bad_timestamp", "published_at: epoch ms must be an integer")
    if not isinstance(value, str):
        raise ParseError("wrong_type", "published_at: expected RFC 3339 string or epoch ms integer")
    m = _RFC3339.fullmatch(value.strip()) if len(value) <= 64 else None
    if m is None:
        raise ParseError("bad_timestamp", f"published_at: not RFC 3339 with a UTC offset: {value[:64]!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    frac_ms = int((m.group(7) or "0")[:3].ljust(3, "0"))
    if second == 60:  # RFC 3339 allows a leap second; fold it into the last millisecond of :59
        second, frac_ms = 59, 999
    offset_min = 0
    if m.group(9):
        oh, om = int(m.group(10)), int(m.group(11))
        if oh > 23 or om > 59:
            raise ParseError("bad_timestamp", f"published_at: bad UTC offset in {value!r}")
        offset_min = (oh * 60 + om) * (1 if m.group(9) == "+" else -1)
    try:
        dt = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as e:
        raise ParseError("bad_timestamp", f"published_at: {e}: {value!r}") from None
    return (dt - _EPOCH) // _MS + frac_ms - offset_min * 60_000


def epoch_ms(value: datetime | int | str) -> int:
    """A time given by a person or a program -> epoch ms UTC: an aware ``datetime``, epoch ms
    (``int`` or a string of digits), or RFC 3339 with an offset. Naive datetimes are refused:
    guessing their zone is how backtests go quietly wrong."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()}: give a time zone (e.g. tzinfo=UTC)")
        return (value - _EPOCH) // _MS
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    try:
        return parse_timestamp(value)
    except ParseError as e:
        raise ValueError(f"not a time: {value!r} (RFC 3339 with an offset, or epoch ms)") from e


def score_label(score: float) -> str:
    """Alpha Vantage-style label of a score in [-1, 1].

    ``<= -0.35`` bearish, ``<= -0.15`` somewhat_bearish, ``< 0.15`` neutral,
    ``< 0.35`` somewhat_bullish, else bullish.
    """
    if score <= BEARISH_MAX:
        return "bearish"
    if score <= SOMEWHAT_BEARISH_MAX:
        return "somewhat_bearish"
    if score < SOMEWHAT_BULLISH_MIN:
        return "neutral"
    if score < BULLISH_MIN:
        return "somewhat_bullish"
    return "bullish"


def score_from_probs(probs: Mapping[str, float]) -> float:
    """Document score = P(positive) - P(negative), in [-1, 1]."""
    return float(probs.get("positive", 0.0)) - float(probs.get("negative", 0.0))


# --------------------------------------------------------------------------------------------
# Text normalisation

# Characters removed from text. C0/C1 controls that are not whitespace, and the invisible format
# characters (Unicode category Cf) that only serve to hide or reorder text: bidi embeddings,
# overrides, isolates and marks (the RTL-override spoofing trick), zero-width space, word joiner,
# BOM, soft hyphen, interlinear annotations and the tag block (used for "ASCII smuggling").
# ZWJ/ZWNJ (U+200C/U+200D) are kept: emoji sequences and several scripts need them.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")
_FORMAT = re.compile(
    "[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b\u200e\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f]"
)
# Python's \s on str is Unicode whitespace: \t\n\v\f\r, \x1c-\x1f, NEL, NBSP, U+2000-200A,
# U+2028/2029, U+3000 ... All of it becomes one ASCII space so spans and tokenisation are stable.
_SPACE = re.compile(r"\s+")


def _normalize_text(s: str, notes: list[str]) -> str:
    """NFC, strip controls / invisible format characters, collapse whitespace, trim.

    Appends ``control_chars_removed`` / ``format_chars_removed`` to ``notes`` when it had to.
    """
    # Fast path: printable (no controls, no Cf, no whitespace but ' '), trimmed, no double spaces.
    if s.isprintable() and "  " not in s and s[:1] != " " and s[-1:] != " ":
        return s if unicodedata.is_normalized("NFC", s) else unicodedata.normalize("NFC", s)
    s2 = _CONTROL.sub("", s)
    if len(s2) != len(s):
        notes.append("control_chars_removed")
    s3 = _FORMAT.sub("", s2)
    if len(s3) != len(s2):
        notes.append("format_chars_removed")
    s3 = _SPACE.sub(" ", s3).strip()
    return s3 if unicodedata.is_normalized("NFC", s3) else unicodedata.normalize("NFC", s3)


# A ticker symbol as feeds send it: optional '$' or 'EXCHANGE:' prefix, 1-10 alphanumerics
# starting with a letter, optional share-class suffix (BRK.B, BF-B).
_SYMBOL = re.compile(r"(?:\$|[A-Z]{2,10}:)?([A-Z][A-Z0-9]{0,9}(?:[.\-][A-Z0-9]{1,4})?)", re.ASCII)
_LANG = re.compile(r"[a-z]{2,8}(?:-[a-z0-9]{1,8}){0,4}", re.ASCII)


def normalize_symbol(value: str) -> str | None:
    """``'$aapl'``, ``'NASDAQ:AAPL'``, ``' aapl '`` -> ``'AAPL'``; None if it is not a symbol."""
    m = _SYMBOL.fullmatch(value.strip().upper()) if len(value) <= 32 else None
    return m.group(1) if m else None


# --------------------------------------------------------------------------------------------
# Records


def _obj(raw: bytes | bytearray | memoryview | str, what: str) -> dict[str, Any]:
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"{what}: not JSON: {e}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{what}: expected a JSON object")  # noqa: TRY004 - from_json promises ValueError
    return d


@dataclass(frozen=True, slots=True)
class InputMessage:
    """One accepted input (``news.raw`` / ``tweets.raw``), normalised by :func:`parse_input`.

    Fields:
        id: producer's id (1..256 chars, no controls).
        text: headline or tweet, normalised (NFC, controls and invisible format characters
            removed, whitespace collapsed), at most ``max_text_chars`` characters.
        published_at: event time, epoch ms UTC.
        source: outlet or account, or None.
        kind: ``news`` | ``tweet`` | None.
        body: article body, normalised like text, or None.
        url: link, or None.
        tickers: feed-supplied symbols, upper-case without ``$``/exchange prefix, de-duplicated,
            at most :data:`MAX_TICKERS`.
        lang: lower-case BCP 47-ish tag (``en``, ``en-us``), or None.
        notes: what normalisation changed: ``control_chars_removed``, ``format_chars_removed``,
            ``text_truncated``, ``body_truncated``, ``tickers_dropped`` (strings that are not
            symbols), ``tickers_truncated``.
    """

    id: str
    text: str
    published_at: int
    source: str | None = None
    kind: Kind | None = None
    body: str | None = None
    url: str | None = None
    tickers: tuple[str, ...] = ()
    lang: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def text_truncated(self) -> bool:
        """True when text was cut to ``max_text_chars``."""
        return "text_truncated" in self.notes

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> InputMessage:
        """Read what :meth:`to_json` wrote (trusted). For raw feed bytes use :func:`parse_input`."""
        d = _obj(raw, "InputMessage")
        try:
            return cls(
                id=d["id"],
                text=d["text"],
                published_at=int(d["published_at"]),
                source=d.get("source"),
                kind=d.get("kind"),
                body=d.get("body"),
                url=d.get("url"),
                tickers=tuple(d.get("tickers") or ()),
                lang=d.get("lang"),
                notes=tuple(d.get("notes") or ()),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"InputMessage: {e!r}") from None


@dataclass(frozen=True, slots=True)
class TickerLink:
    """A ticker a document is about.

    Fields:
        symbol: upper-case symbol (``AAPL``, ``BRK.B``).
        span: ``(start, end)`` character offsets, end exclusive, into the normalised text, or
            None when the link has no span (``feed`` links).
        method: ``feed`` (producer's tickers list) | ``cashtag`` ($AAPL) | ``exchange``
            (NASDAQ:AAPL) | ``name`` (company name).
        relevance: weight of this document for this ticker, in (0, 1].
        confidence: linker's confidence that the link is right, in [0, 1], or None. Today only
            the ORG tagger gives one: its confidence for a ``name`` link that the tagger alone
            settled (an ambiguous name such as "Apple"); None for ``feed``, ``cashtag`` and
            ``exchange`` links and for names accepted by rule (unambiguous, corroborated by
            another mention, or a context cue), which carry no score.
        score, label: the sentiment toward this ticker (``P(pos) - P(neg)`` of a target model,
            and its argmax class, one of :data:`LABELS`), which the ticker's aggregate uses
            instead of the document's. Set only for a text with two or more linked tickers
            when a target model is configured (``FINSENT_TARGET_MODEL``); None otherwise (the
            ticker takes the document's score).
    """

    symbol: str
    span: tuple[int, int] | None
    method: LinkMethod
    relevance: float = 1.0
    confidence: float | None = None
    score: float | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        # Validated here because bad relevance would silently corrupt every aggregate downstream.
        if not (0.0 < self.relevance <= 1.0):  # also rejects NaN
            raise ValueError(f"TickerLink {self.symbol}: relevance {self.relevance!r} not in (0, 1]")
        if self.method not in _LINK_METHODS:
            raise ValueError(f"TickerLink {self.symbol}: unknown method {self.method!r}")
        if self.span is not None:
            start, end = self.span
            if not (0 <= start < end):
                raise ValueError(f"TickerLink {self.symbol}: bad span {self.span!r}")
        if self.confidence is not None and not (0.0 <= self.confidence <= 1.0):
            raise ValueError(f"TickerLink {self.symbol}: confidence {self.confidence!r} not in [0, 1]")
        if (self.score is None) != (self.label is None):
            raise ValueError(f"TickerLink {self.symbol}: score and label come together ({self.score!r}, {self.label!r})")
        if self.score is not None and not (-1.0 - 1e-6 <= self.score <= 1.0 + 1e-6):
            raise ValueError(f"TickerLink {self.symbol}: score {self.score!r} not in [-1, 1]")
        if self.label is not None and self.label not in LABELS:
            raise ValueError(f"TickerLink {self.symbol}: label {self.label!r} not one of {LABELS}")

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TickerLink:
        span = d.get("span")
        return cls(
            symbol=d["symbol"],
            span=None if span is None else (int(span[0]), int(span[1])),
            method=d["method"],
            relevance=float(d.get("relevance", 1.0)),
            confidence=None if d.get("confidence") is None else float(d["confidence"]),
            score=None if d.get("score") is None else float(d["score"]),
            label=d.get("label"),
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> TickerLink:
        try:
            return cls.from_dict(_obj(raw, "TickerLink"))
        except (KeyError, TypeError, IndexError) as e:
            raise ValueError(f"TickerLink: {e!r}") from None


@dataclass(frozen=True, slots=True)
class ScoredDocument:
    """One scored input on ``finsent.documents`` (Kafka key: the document id).

    Fields:
        id: the input's id.
        published_at: event time, epoch ms UTC.
        tickers: the linked tickers (may be empty for market-wide news).
        label: argmax class, one of :data:`LABELS`.
        probs: class -> probability (sums to ~1).
        score: ``probs['positive'] - probs['negative']``, in [-1, 1].
        exit_layer: 1-based encoder layer whose classifier answered (early exit).
        model_version: identifies the model artifact.
        ingested_at: wall time the worker read the message, epoch ms.
        scored_at: wall time the model answered, epoch ms.
        truncated: the text was cut (by :func:`parse_input` or by the tokenizer's max length).
        source, kind: copied from the input.
        text: the normalised text, or None when the producer chose not to echo it.
        lang: the text's language as the pipeline treats it (``"en"``, or the ISO 639-1 code of
            a text detected as another language; :func:`models.text.language`), None when
            unknown (documents written before it was recorded).
        aggregated: False when ``lang`` is not one of the aggregated languages
            (``FINSENT_LANGUAGES``): the document is published with its links and score but
            counts in no ticker aggregate (the model reads English only).
        story_id: the story the document belongs to: the id of the first document of its
            near-duplicate cluster (:mod:`pipeline.novelty`); its own id for a new story. None
            for documents written before stories were recorded (each its own story).
        novelty: 1.0 for a story's first document, less for each repeat inside the novelty
            window (``DECAY ** repeats_before``); a document's weight in the ticker aggregates
            is scaled by it (``FINSENT_NOVELTY_WEIGHTING``). 1.0 for older documents.
    """

    id: str
    published_at: int
    tickers: tuple[TickerLink, ...]
    label: str
    probs: Mapping[str, float]
    score: float
    exit_layer: int
    model_version: str
    ingested_at: int
    scored_at: int
    truncated: bool = False
    source: str | None = None
    kind: Kind | None = None
    text: str | None = None
    lang: str | None = None
    aggregated: bool = True
    story_id: str | None = None
    novelty: float = 1.0

    def __post_init__(self) -> None:
        # NaN would serialise as null and poison the aggregates: refuse it at construction.
        if not (-1.0 - 1e-6 <= self.score <= 1.0 + 1e-6):
            raise ValueError(f"ScoredDocument {self.id}: score {self.score!r} not in [-1, 1]")
        if not (0.0 <= self.novelty <= 1.0):
            raise ValueError(f"ScoredDocument {self.id}: novelty {self.novelty!r} not in [0, 1]")
        for k, p in self.probs.items():
            if not (0.0 <= p <= 1.0 + 1e-6):
                raise ValueError(f"ScoredDocument {self.id}: probs[{k!r}] = {p!r}")

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    def with_story(self, story_id: str, novelty: float) -> ScoredDocument:
        """This document with its story and novelty (:func:`dataclasses.replace`, without its
        per-call field introspection: the worker does this once per document)."""
        return ScoredDocument(*_BEFORE_STORY(self), story_id, novelty)

    @classmethod
    def from_prediction(
        cls,
        msg: InputMessage,
        links: Sequence[TickerLink],
        *,
        label: str,
        probs: Mapping[str, float],
        exit_layer: int,
        truncated: bool,
        model_version: str,
        ingested_at: int,
        scored_at: int,
        lang: str | None = None,
        aggregated: bool = True,
    ) -> ScoredDocument:
        """The document for ``msg`` and the model's answer. The streaming worker and
        ``finsent backtest`` both build documents here, so they score identically.

        Raises ValueError on unusable probabilities (e.g. NaN).
        """
        return cls(
            id=msg.id,
            published_at=msg.published_at,
            tickers=tuple(links),
            label=label,
            probs=probs,
            score=max(-1.0, min(1.0, score_from_probs(probs))),
            exit_layer=exit_layer,
            model_version=model_version,
            ingested_at=ingested_at,
            scored_at=scored_at,
            truncated=truncated or "text_truncated" in msg.notes,
            source=msg.source,
            kind=msg.kind,
            text=msg.text,
            lang=lang,
            aggregated=aggregated,
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> ScoredDocument:
        d = _obj(raw, "ScoredDocument")
        try:
            return cls(
                id=d["id"],
                published_at=int(d["published_at"]),
                tickers=tuple(TickerLink.from_dict(t) for t in d.get("tickers") or ()),
                label=d["label"],
                probs={str(k): float(v) for k, v in d["probs"].items()},
                score=float(d["score"]),
                exit_layer=int(d["exit_layer"]),
                model_version=d["model_version"],
                ingested_at=int(d["ingested_at"]),
                scored_at=int(d["scored_at"]),
                truncated=bool(d.get("truncated", False)),
                source=d.get("source"),
                kind=d.get("kind"),
                text=d.get("text"),
                lang=d.get("lang"),
                aggregated=bool(d.get("aggregated", True)),
                story_id=d.get("story_id"),
                novelty=float(d.get("novelty", 1.0)),
            )
        except (KeyError, TypeError, IndexError, AttributeError) as e:
            raise ValueError(f"ScoredDocument: {e!r}") from None

    @property
    def story(self) -> str:
        """The story id, the document's own id where none was recorded."""
        return self.story_id or self.id


# every field of ScoredDocument before story_id and novelty (its last two), in order
_BEFORE_STORY = attrgetter(*ScoredDocument.__slots__[:-2])


@dataclass(frozen=True, slots=True)
class TickerScore:
    """Per-ticker aggregate on ``finsent.ticker-scores`` (Kafka key: symbol).

    Fields:
        symbol: ticker.
        score: exponentially time-decayed (event time, relevance-weighted) mean of document
            scores as of ``as_of``, in [-1, 1].
        label: :func:`score_label` of score.
        n_5m, n_1h, n_24h: documents with event time in ``(as_of - window, as_of]``.
        bullish_*/bearish_*/neutral_*: of those, documents labelled positive/negative/neutral.
        last_doc_id: the document whose application produced this update.
        as_of: the ticker's latest event time, epoch ms.
        updated_at: wall time of the update, epoch ms.
        model_version: model of ``last_doc_id``.
        seq: documents applied to this ticker so far (monotonic; lets consumers drop stale updates).
        stories_1h: distinct stories (near-duplicate clusters, :mod:`pipeline.novelty`) among the
            ``n_1h`` documents: 1 for one headline retweeted 50 times. Records written before
            stories were recorded read it as ``n_1h``.
    """

    symbol: str
    score: float
    label: str
    n_5m: int
    n_1h: int
    n_24h: int
    bullish_5m: int
    bearish_5m: int
    neutral_5m: int
    bullish_1h: int
    bearish_1h: int
    neutral_1h: int
    bullish_24h: int
    bearish_24h: int
    neutral_24h: int
    last_doc_id: str
    as_of: int
    updated_at: int
    model_version: str
    seq: int
    stories_1h: int = 0

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    def to_dict(self) -> dict[str, Any]:
        """Flat field -> value dict (e.g. for a Redis hash)."""
        return {f: getattr(self, f) for f in self.__slots__}  # type: ignore[attr-defined]

    @classmethod
    def from_fields(cls, mapping: Mapping[str | bytes, str | bytes | float]) -> TickerScore:
        """Read a flat field -> value mapping whose values may be strings or bytes, such as the
        Redis hash ``finsent:ticker:{SYMBOL}`` (``HGETALL``); unknown fields are ignored."""
        d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in mapping.items()}
        if "stories_1h" not in d and "n_1h" in d:  # written before stories were recorded
            d["stories_1h"] = d["n_1h"]
        try:
            return cls(**{f: _TICKER_SCORE_TYPES[f](_text(d[f])) for f in cls.__slots__})  # type: ignore[attr-defined]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"TickerScore: {e!r}") from None

    @classmethod
    def from_json(cls, raw: bytes | str) -> TickerScore:
        d = _obj(raw, "TickerScore")
        if "stories_1h" not in d and "n_1h" in d:  # written before stories were recorded
            d["stories_1h"] = d["n_1h"]
        try:
            return cls(**{f: d[f] for f in cls.__slots__})  # type: ignore[attr-defined]
        except (KeyError, TypeError) as e:
            raise ValueError(f"TickerScore: {e!r}") from None


def _text(v: str | bytes | float) -> str | float:
    return v.decode() if isinstance(v, bytes) else v


# field -> constructor, from the annotations (strings under ``from __future__ import annotations``)
_TICKER_SCORE_TYPES: Final[dict[str, type]] = {
    f.name: {"str": str, "int": int, "float": float}[f.type] for f in fields(TickerScore)  # type: ignore[index]
}


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected input on ``finsent.dlq``.

    Fields:
        reason: one of :data:`REASON_CODES`.
        detail: human-readable explanation (not stable; do not match on it).
        raw_b64: the original message bytes, standard base64; only the first
            :data:`MAX_DEAD_LETTER_RAW_BYTES` of a longer message (see ``raw_truncated``).
        topic, partition, offset: where the message was read (None when unknown).
        failed_at: wall time of the rejection, epoch ms, or None.
        doc_id: the input's id when it could be parsed (e.g. for ``late``), else None.
        raw_size: length of the original message in bytes (None in records written before it
            existed).
        raw_truncated: ``raw_b64`` holds only a prefix of the message.
    """

    reason: str
    detail: str
    raw_b64: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    failed_at: int | None = None
    doc_id: str | None = None
    raw_size: int | None = None
    raw_truncated: bool = False

    @property
    def raw(self) -> bytes:
        """The original bytes."""
        return base64.b64decode(self.raw_b64)

    @classmethod
    def from_error(
        cls,
        raw: bytes | bytearray | memoryview,
        reason: str,
        detail: str,
        topic: str | None,
        partition: int | None,
        offset: int | None,
        *,
        failed_at: int | None = None,
        doc_id: str | None = None,
        max_detail_chars: int = 500,
        max_raw_bytes: int = MAX_DEAD_LETTER_RAW_BYTES,
    ) -> DeadLetter:
        """Build a dead letter; ``raw`` is kept byte-exact (base64) up to ``max_raw_bytes``.

        The cap keeps a dead letter producible: the base64 of a message near the 1 MB input
        limit would exceed Kafka's default 1 MB record size, and a record the producer refuses
        would stall the outbox behind it.
        """
        size = len(raw)
        return cls(
            reason=reason,
            detail=detail[:max_detail_chars],
            raw_b64=base64.b64encode(bytes(raw[:max_raw_bytes])).decode("ascii"),
            topic=topic,
            partition=partition,
            offset=offset,
            failed_at=failed_at,
            doc_id=doc_id,
            raw_size=size,
            raw_truncated=size > max_raw_bytes,
        )

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> DeadLetter:
        d = _obj(raw, "DeadLetter")
        try:
            fields = {f: d.get(f) for f in cls.__slots__ if f != "raw_truncated"}  # type: ignore[attr-defined]
            dl = cls(**fields, raw_truncated=bool(d.get("raw_truncated", False)))
            if not isinstance(dl.reason, str) or not isinstance(dl.raw_b64, str):
                raise TypeError("reason and raw_b64 must be strings")
            base64.b64decode(dl.raw_b64, validate=True)
        except (TypeError, binascii.Error) as e:
            raise ValueError(f"DeadLetter: {e!r}") from None
        return dl


# --------------------------------------------------------------------------------------------
# Parsing hostile input


def _opt_str(d: Mapping[str, Any], key: str) -> str | None:
    v = d.get(key)
    if v is None or isinstance(v, str):
        return v
    raise ParseError("wrong_type", f"{key}: expected string or null, got {type(v).__name__}")


def parse_input(
    raw: bytes | bytearray | memoryview | str,
    *,
    now_ms: int,
    max_text_chars: int = 20_000,
    max_bytes: int = 1_000_000,
    max_future_ms: int = MAX_FUTURE_MS,
    max_tickers: int = MAX_TICKERS,
    default_kind: Kind | None = None,
) -> InputMessage:
    """Validate and normalise one raw input message. Raises only :class:`ParseError`.

    Args:
        raw: the Kafka message value.
        now_ms: wall clock, epoch ms (for ``future_timestamp``; injected for determinism).
        max_text_chars: text (and body) longer than this after normalisation is truncated and
            noted (``text_truncated`` / ``body_truncated``), not rejected.
        max_bytes: larger messages are rejected (``too_large``) before decoding.
        max_future_ms: tolerated clock skew for published_at.
        max_tickers: feed tickers beyond this are dropped (``tickers_truncated``); scanning the
            list stops there, so a million-element list costs no more than a short one.
        default_kind: kind when the message has none (the caller knows it from the topic).

    Unknown fields are ignored (forward compatibility). A leading UTF-8 BOM is tolerated.
    """
    if isinstance(raw, str):
        if len(raw) > max_bytes:  # a str is at least as many bytes as characters
            raise ParseError("too_large", f"{len(raw)} characters > {max_bytes} bytes")
        try:
            raw = raw.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates
            raise ParseError("not_utf8", "string holds lone surrogates") from None
    elif not isinstance(raw, (bytes, bytearray, memoryview)):
        raise ParseError("wrong_type", f"message value is {type(raw).__name__}, not bytes")
    if len(raw) > max_bytes:
        raise ParseError("too_large", f"{len(raw)} bytes > {max_bytes}")
    if raw[:3] == b"\xef\xbb\xbf":
        raw = raw[3:]
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        # orjson validates UTF-8 itself; only on failure pay for telling the two cases apart.
        try:
            bytes(raw).decode("utf-8")
        except UnicodeDecodeError as ue:
            raise ParseError("not_utf8", f"invalid UTF-8 at byte {ue.start}") from None
        raise ParseError("not_json", str(e)[:200]) from None
    if not isinstance(d, dict):
        raise ParseError("not_object", f"top level is {type(d).__name__}")

    notes: list[str] = []

    # --- required fields
    for key in ("id", "text", "published_at"):
        if d.get(key) is None:
            raise ParseError("missing_field", key)
    doc_id = d["id"]
    if not isinstance(doc_id, str):
        raise ParseError("wrong_type", f"id: expected string, got {type(doc_id).__name__}")
    doc_id = doc_id.strip()
    if not doc_id or len(doc_id) > MAX_ID_CHARS or not doc_id.isprintable():
        raise ParseError("bad_value", f"id: empty, longer than {MAX_ID_CHARS} or not printable")

    text = d["text"]
    if not isinstance(text, str):
        raise ParseError("wrong_type", f"text: expected string, got {type(text).__name__}")
    text = _normalize_text(text, notes)
    if not text:
        raise ParseError("empty_text", "text is empty after normalisation")
    if len(text) > max_text_chars:
        text = text[:max_text_chars].rstrip()
        notes.append("text_truncated")

    published_at = parse_timestamp(d["published_at"])
    if published_at < MIN_EVENT_MS:
        hint = " (epoch seconds instead of ms?)" if published_at > 0 else ""
        raise ParseError("too_old", f"published_at {published_at} before 1990{hint}")
    if published_at > now_ms + max_future_ms:
        raise ParseError(
            "future_timestamp", f"published_at {published_at} > now {now_ms} + {max_future_ms} ms"
        )

    # --- optional fields
    source = _opt_str(d, "source")
    if source is not None:
        source = _normalize_text(source, [])[:MAX_SOURCE_CHARS] or None

    kind = _opt_str(d, "kind")
    if kind is not None:
        kind = kind.strip().lower()
        if kind not in _KINDS:
            raise ParseError("bad_value", f"kind: {kind[:32]!r} is not 'news' or 'tweet'")
    else:
        kind = default_kind

    body = _opt_str(d, "body")
    if body is not None:
        # Body clean-up is not reported in notes: notes describe the text the model scores.
        body = _normalize_text(body, []) or None
        if body is not None and len(body) > max_text_chars:
            body = body[:max_text_chars].rstrip()
            notes.append("body_truncated")

    url = _opt_str(d, "url")
    if url is not None:
        url = url.strip() or None
        if url is not None and (len(url) > MAX_URL_CHARS or not url.isprintable() or " " in url):
            raise ParseError("bad_value", "url: too long or holds spaces/control characters")

    lang = _opt_str(d, "lang")
    if lang is not None:
        lang = lang.strip().lower().replace("_", "-") or None
        if lang is not None and not (len(lang) <= 35 and _LANG.fullmatch(lang)):
            raise ParseError("bad_value", f"lang: {lang[:35]!r} is not a language tag")

    tickers_raw = d.get("tickers")
    tickers: list[str] = []
    if tickers_raw is not None:
        if not isinstance(tickers_raw, list):
            raise ParseError("bad_tickers", f"tickers: expected list, got {type(tickers_raw).__name__}")
        seen: set[str] = set()
        for i, t in enumerate(tickers_raw):
            if len(tickers) >= max_tickers:
                notes.append("tickers_truncated")
                break
            if not isinstance(t, str):
                raise ParseError("bad_tickers", f"tickers[{i}]: expected string, got {type(t).__name__}")
            sym = normalize_symbol(t)
            if sym is None:
                if "tickers_dropped" not in notes:
                    notes.append("tickers_dropped")
            elif sym not in seen:
                seen.add(sym)
                tickers.append(sym)

    return InputMessage(
        id=doc_id,
        text=text,
        published_at=published_at,
        source=source,
        kind=kind,  # type: ignore[arg-type]
        body=body,
        url=url,
        tickers=tuple(tickers),
        lang=lang,
        notes=tuple(notes),
    )
