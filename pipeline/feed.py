"""Input files -> Kafka input topics (``finsent produce``, the demo's replay).

A feed file is JSON Lines (one input object per line, ``.jsonl``/``.json``/``.ndjson``) or CSV with
a header naming input fields (``id,text,published_at,kind,source,url,lang,body,tickers``;
``tickers`` as a JSON array or separated by ``;``/``,``/spaces). Each record is validated with
:func:`pipeline.schemas.parse_input` before it is sent, so a bad line is reported with its line
number and reason and skipped instead of becoming a dead letter. What is sent is the line's own
JSON (JSONL) or the row as a JSON object (CSV), keyed by the document id; ``kind`` picks the
topic (``tweet`` -> tweets, anything else -> news) unless a topic is forced.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from pipeline.schemas import ParseError, parse_input
from pipeline.settings import Settings

__all__ = ["FeedLine", "ProduceReport", "produce_feed", "read_feed", "send_lines"]

_JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
_TICKER_SPLIT = re.compile(r"[;,\s]+")
_FAR_FUTURE_MS = 2**62  # validation here is about shape; the worker judges timestamps vs its clock


@dataclass(frozen=True, slots=True)
class FeedLine:
    """One record of a feed file: the bytes to send, or why the line is unusable."""

    line_no: int
    value: bytes | None
    doc_id: str | None = None
    kind: str | None = None
    error: str | None = None
    published_at: int | None = None  # event time, epoch ms (valid lines)


def _csv_row_to_json(row: dict[str, str | None]) -> bytes:
    obj: dict[str, object] = {}
    for k, v in row.items():
        if k is None or v is None or v.strip() == "":
            continue  # empty cell = absent field
        k = k.strip()
        v = v.strip()
        if k == "tickers":
            obj[k] = orjson.loads(v) if v.startswith("[") else [t for t in _TICKER_SPLIT.split(v) if t]
        elif k == "published_at" and v.lstrip("-").isdigit():
            obj[k] = int(v)
        else:
            obj[k] = v
    return orjson.dumps(obj)


def _raw_records(path: Path) -> Iterator[tuple[int, bytes | None, str | None]]:
    """(line number, JSON bytes or None, error or None) per non-blank record."""
    data = path.read_bytes()
    if path.suffix.lower() in _JSONL_SUFFIXES:
        for i, line in enumerate(data.splitlines(), 1):
            if line.strip():
                yield i, line.strip(), None
        return
    text = data.decode("utf-8-sig", errors="replace")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or "text" not in [f.strip() for f in reader.fieldnames]:
        raise ValueError(f"{path}: a CSV feed needs a header with at least id,text,published_at")
    for row in reader:
        line_no = reader.line_num
        try:
            yield line_no, _csv_row_to_json(row), None
        except (orjson.JSONDecodeError, TypeError) as exc:
            yield line_no, None, f"bad tickers cell: {exc}"


def read_feed(path: Path) -> Iterator[FeedLine]:
    """Validate every record of ``path`` (JSONL or CSV); bad ones carry ``error``."""
    for line_no, value, error in _raw_records(path):
        if value is None:
            yield FeedLine(line_no, None, error=error)
            continue
        try:
            msg = parse_input(value, now_ms=_FAR_FUTURE_MS)
        except ParseError as exc:
            yield FeedLine(line_no, None, error=str(exc))
            continue
        yield FeedLine(line_no, value, doc_id=msg.id, kind=msg.kind, published_at=msg.published_at)


@dataclass(slots=True)
class ProduceReport:
    sent: dict[str, int]
    bad: list[tuple[int, str]]  # (line number, reason)
    seconds: float


async def send_lines(
    settings: Settings,
    lines: Iterable[FeedLine],
    *,
    topic: str | None = None,
    partition: int | None = None,
    due: Callable[[int, FeedLine], float] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ProduceReport:
    """Send the valid ``lines`` in the order given; bad ones are collected, not sent.

    Args:
        topic: send everything to this topic (already namespaced) instead of choosing
            news/tweets by ``kind``.
        partition: send everything to this partition (default: by the key, the document id).
        due: seconds after the start at which the i-th record sent (0-based) is due; the sender
            sleeps until then (against the start time, so slow sends do not compound).
        on_progress: called with the number of lines handled so far (good or bad).
    """
    from pipeline.connections import kafka_producer

    news, tweets = settings.topic(settings.news_topic), settings.topic(settings.tweets_topic)
    producer = kafka_producer(settings, enable_idempotence=False, acks="all")
    sent: dict[str, int] = {}
    bad: list[tuple[int, str]] = []
    n_sent = 0
    try:
        await producer.start()
        t0 = time.monotonic()
        futures = []
        for i, fl in enumerate(lines, 1):
            if fl.value is None:
                bad.append((fl.line_no, fl.error or "unreadable"))
            else:
                if due is not None and (delay := t0 + due(n_sent, fl) - time.monotonic()) > 0:
                    await asyncio.sleep(delay)
                target = topic or (tweets if fl.kind == "tweet" else news)
                key = fl.doc_id.encode() if fl.doc_id else None
                futures.append(await producer.send(target, fl.value, key=key, partition=partition))
                sent[target] = sent.get(target, 0) + 1
                n_sent += 1
            if on_progress is not None:
                on_progress(i)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return ProduceReport(sent=sent, bad=bad, seconds=time.monotonic() - t0)


async def produce_feed(
    settings: Settings,
    path: Path,
    *,
    topic: str | None = None,
    rate: float | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ProduceReport:
    """Send every valid record of ``path`` to the input topics; returns counts and bad lines.

    Args:
        topic: send everything to this topic (already namespaced by the caller) instead of
            choosing news/tweets by ``kind``.
        rate: at most this many messages per second (None: as fast as possible).
        on_progress: called with the number of records handled so far (good or bad).
    """
    due = (lambda i, _fl: i / rate) if rate else None
    return await send_lines(settings, read_feed(path), topic=topic, due=due, on_progress=on_progress)
