"""Helpers shared by the streaming tests (test_sinks.py, test_worker.py): read topics, build docs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.schemas import ScoredDocument, TickerLink
from pipeline.sinks import EFFECT_HEADER

T0 = 1_710_424_800_000  # 2024-03-14T14:00:00Z


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    effect_id: str | None


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
        while todo:
            batches = await consumer.getmany(*todo, timeout_ms=500)
            for tp, records in batches.items():
                for r in records:
                    effect = dict(r.headers or ()).get(EFFECT_HEADER)
                    out.append(Record(r.topic, r.partition, r.offset, r.key, r.value,
                                      effect.decode() if effect else None))  # fmt: skip
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
