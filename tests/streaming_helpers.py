"""Helpers shared by the streaming tests (test_sinks.py, test_worker.py, test_reliability.py) and
bench/reliability.py: build and send inputs, start workers, read topics, build docs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import RecordMetadata

from pipeline.outbox import EFFECT_HEADER
from pipeline.schemas import ScoredDocument, TickerLink
from pipeline.settings import Settings

ROOT = Path(__file__).resolve().parents[1]

T0 = 1_710_424_800_000  # 2024-03-14T14:00:00Z


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    effect_id: str | None
    timestamp: int = 0  # the record's Kafka timestamp, epoch ms


#: Longest read_topic may take. A clean-clone CI run once sat 18 minutes, idle, in a reliability
#: scenario's verdict after its worker had stopped cleanly (under a training on the other core);
#: this loop, waiting for a fetch to report a partition's end, was the verdict's one unbounded wait.
READ_TIMEOUT_S = 120


async def read_topic(bootstrap: str, topic: str) -> list[Record]:
    """Every record of ``topic`` from the beginning to the current end (no consumer group)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        # a fresh client's metadata knows no topics yet, and may lag a just-created one
        parts: set[int] = set()
        deadline = asyncio.get_running_loop().time() + 10
        while not parts and asyncio.get_running_loop().time() < deadline:
            await consumer.topics()
            parts = consumer.partitions_for_topic(topic) or set()
            if not parts:
                await asyncio.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Record] = []
        todo = set(tps)
        # until the high watermark of a fetch response: Tansu's ListOffsets(latest) can be too low
        give_up = asyncio.get_running_loop().time() + READ_TIMEOUT_S
        while todo:
            if asyncio.get_running_loop().time() > give_up:  # a failure, not a CI run that never ends
                raise AssertionError(f"read_topic({topic!r}): no end reached after {READ_TIMEOUT_S}s on "
                                     f"{sorted(tp.partition for tp in todo)}; {len(out)} records read")
            batches = await consumer.getmany(*todo, timeout_ms=500)
            for tp, records in batches.items():
                for r in records:
                    effect = dict(r.headers or ()).get(EFFECT_HEADER)
                    out.append(Record(r.topic, r.partition, r.offset, r.key, r.value,
                                      effect.decode() if effect else None, r.timestamp))  # fmt: skip
            for tp in list(todo):
                high = consumer.highwater(tp)
                if high is not None and await consumer.position(tp) >= high:
                    todo.discard(tp)
        return out
    finally:
        await consumer.stop()


async def high_watermarks(bootstrap: str, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    """Exact end offsets, from fetch responses (Tansu's ListOffsets(latest) can be too low)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: dict[TopicPartition, int] = {}
        while len(out) < len(tps):
            await consumer.getmany(*tps, timeout_ms=200, max_records=1)
            out.update({tp: h for tp in tps if (h := consumer.highwater(tp)) is not None})
        return out
    finally:
        await consumer.stop()


def scored_doc(
    doc_id: str,
    t: int,
    symbols: tuple[str, ...],
    *,
    label: str = "positive",
    score: float = 0.5,
    text: str | None = None,
) -> ScoredDocument:
    """A scored document linked to ``symbols`` (relevance falling with rank)."""
    probs = {"negative": (1 - score) / 2, "neutral": 0.0, "positive": (1 + score) / 2}
    links = tuple(
        TickerLink(symbol=s, span=None, method="feed", relevance=max(0.4, 1.0 - 0.2 * i)) for i, s in enumerate(symbols)
    )
    return ScoredDocument(
        id=doc_id,
        published_at=t,
        tickers=links,
        label=label,
        probs=probs,
        score=probs["positive"] - probs["negative"],
        exit_layer=2,
        model_version="test-model",
        ingested_at=t,
        scored_at=t,
        text=text if text is not None else f"text of {doc_id}",
    )


# ---------------------------------------------------------------------------- inputs

SYMBOLS = ("AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "JPM", "XOM", "META")
PHRASES = (
    "beats revenue estimates and raises full-year guidance",
    "shares slump after the company cuts its outlook",
    "to present at an industry conference next week",
    "recalls vehicles over a faulty brake sensor",
    "announces a $10 billion share buyback",
    "misses on earnings as margins shrink",
)
# (malformed payload, the reason the worker must give)
MALFORMED: tuple[tuple[bytes, str], ...] = (
    (b"not json at all", "not_json"),
    (b"[1, 2, 3]", "not_object"),
    (b'{"id": "m", "published_at": "2024-03-14T14:00:00Z"}', "missing_field"),
    (b'{"id": "m", "text": "   ", "published_at": "2024-03-14T14:00:00Z"}', "empty_text"),
    (b'{"id": "m", "text": "hi", "published_at": "yesterday"}', "bad_timestamp"),
    (b'{"id": "m", "text": "hi", "published_at": 1710424800}', "too_old"),
    (b'{"id": 7, "text": "hi", "published_at": "2024-03-14T14:00:00Z"}', "wrong_type"),
    (b"\xff\xfe{}", "not_utf8"),
    (b'{"id": "m", "text": "hi", "published_at": "2024-03-14T14:00:00Z", "tickers": "AAPL"}', "bad_tickers"),
    (b'{"id": "m", "text": "hi", "published_at": "2999-01-01T00:00:00Z"}', "future_timestamp"),
)


def valid_message(i: int, tag: str, *, t0: int = T0, spacing_ms: int = 1000) -> tuple[str, bytes]:
    """(kind, JSON) of the i-th valid input: a mix of cashtags, exchange prefixes, feed tickers,
    several tickers and none; event time ``t0 + i * spacing_ms``."""
    sym, other = SYMBOLS[i % len(SYMBOLS)], SYMBOLS[(i * 3 + 1) % len(SYMBOLS)]
    phrase = PHRASES[i % len(PHRASES)]
    style = i % 5
    text = {
        0: f"${sym} {phrase}",
        1: f"NASDAQ:{sym} {phrase}; ${other} also moves",
        2: f"Company {phrase}",  # feed tickers only
        3: f"Markets: {phrase} (no ticker) #{i}",
        4: f"${sym} and ${other}: {phrase}",
    }[style]
    kind = "tweet" if i % 2 else "news"
    msg: dict[str, object] = {"id": f"{tag}-{i:06d}", "text": text, "published_at": t0 + i * spacing_ms, "kind": kind}
    if style == 2:
        msg["tickers"] = [sym]
    return kind, orjson.dumps(msg)


async def produce(
    settings: Settings,
    messages: Sequence[tuple[str, bytes | None]],
    *,
    keys: Sequence[bytes | None] | None = None,
    max_request_size: int = 1_048_576,
) -> list[RecordMetadata]:
    """Send ``(kind, value)`` messages (kind ``tweet`` -> the tweets topic, else news) in order;
    returns each record's metadata (partition, offset) once all are acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, enable_idempotence=False, acks="all",
                                max_request_size=max_request_size, linger_ms=5)  # fmt: skip
    await producer.start()
    try:
        news, tweets = settings.topic(settings.news_topic), settings.topic(settings.tweets_topic)
        futures = []
        for i, (kind, value) in enumerate(messages):
            key = keys[i] if keys is not None else None
            futures.append(await producer.send(tweets if kind == "tweet" else news, value, key=key))
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


async def wait_drained(worker: Any, task: asyncio.Task[None], timeout_s: float, *, applied_at_least: int = 0) -> None:
    """Poll until the in-process ``worker`` has applied ``applied_at_least`` documents and has
    nothing in flight; fail if its ``task`` ends first or ``timeout_s`` passes."""
    t0 = time.monotonic()
    while worker.counts["applied"] < applied_at_least or not await worker.drained():
        assert not task.done(), "worker exited early"
        assert time.monotonic() - t0 < timeout_s, f"not drained after {timeout_s:.0f} s: {worker.counts}"
        await asyncio.sleep(0.25)


# ---------------------------------------------------------------------------- worker processes


def spawn_worker(
    s: Settings,
    log_path: Path,
    *,
    model_dir: str | Path | None = None,
    rule: str | None = None,
    session_timeout_ms: int = 6000,
    metrics_port: int = 0,
    threads: int | None = None,
    processes: int = 1,
) -> subprocess.Popen[bytes]:
    """``finsent worker`` as a child process with ``s``'s Kafka/Redis/namespace/group/batch,
    appending its log to ``log_path``; the child gets SIGTERM if this process dies."""
    from pipeline.infra import _pdeathsig_preexec

    env = {**os.environ, "FINSENT_LATENESS_S": str(s.lateness_s), "FINSENT_PARTITIONS": str(s.partitions)}
    if threads:
        env["FINSENT_THREADS"] = str(threads)
    cmd = [
        sys.executable, "-m", "pipeline.cli", "worker",
        "--bootstrap", s.bootstrap, "--redis-url", s.redis_url, "--namespace", s.namespace,
        "--group-id", s.group_id, "--max-batch", str(s.max_batch), "--metrics-port", str(metrics_port),
        "--session-timeout-ms", str(session_timeout_ms),
    ]  # fmt: skip
    if model_dir:
        cmd += ["--model", str(model_dir)]
    if rule:
        cmd += ["--rule", rule]
    if processes != 1:
        cmd += ["--processes", str(processes)]
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=ROOT,
            preexec_fn=_pdeathsig_preexec(),  # noqa: PLW1509 - only a prctl call
        )  # fmt: skip
