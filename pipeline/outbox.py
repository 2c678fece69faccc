"""The outbox: output records move from Redis streams to Kafka, each exactly once.

The commit script (:mod:`pipeline.applier`) writes a document's Kafka records into an outbox
stream in the same atomic step that applies it. There is one stream per *input* partition,
``finsent:outbox:{topic}:{partition}``: the consumer that owns the input partition owns its
outbox, so ownership of pending outputs moves with Kafka's partition assignment and no two
workers ever publish the same stream. Each entry holds the record (topic, partition, key,
value), an **effect id** (``doc:{id}``, ``score:{SYM}:{seq}``, ``dlq:{topic}:{partition}:{offset}``),
and ``scan_from``: an end offset of the target partition known before the entry was written, so
the record, if ever produced, lies at or after it.

:class:`OutboxPublisher` produces entries (the effect id goes into the ``finsent-effect-id``
header), awaits the acks, and XDELs them. Whenever a produce's outcome is unknown (a crash, a
timeout), the target partitions are first scanned from ``scan_from`` for the effect ids and
only the missing records are produced. When an input offset may be committed is decided by
:class:`pipeline.checkpoint.Checkpoint`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2

from pipeline import metrics
from pipeline.connections import kafka_consumer
from pipeline.retry import TRANSIENT_ERRORS, retry
from pipeline.settings import Settings

__all__ = ["EFFECT_HEADER", "OutboxEntry", "OutboxPublisher"]

log = logging.getLogger(__name__)

#: Kafka header carrying an output record's effect id.
EFFECT_HEADER = "finsent-effect-id"
# The scanner stops at the high watermark of a fetch response; for a partition with nothing new
# that answer comes only when the broker's long poll ends, so keep both waits short.
_SCAN_POLL_MS = 50
_MAX_ROUTES = 100_000  # cached partitions of repeating keys (symbols)


@dataclass(slots=True)
class OutboxEntry:
    """One Kafka record waiting in (or written to) an outbox stream."""

    stream: str
    effect_id: str
    topic: str
    partition: int
    key: bytes
    value: bytes
    scan_from: int
    entry_id: str | None = None  # the stream entry id, once written

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    def fields(self) -> list[bytes | str | int]:
        """The six script arguments of an entry, in the commit script's order."""
        return [self.effect_id, self.topic, self.partition, self.key, self.value, self.scan_from]

    @classmethod
    def from_stream(cls, stream: str, entry_id: bytes | str, f: dict[bytes, bytes]) -> OutboxEntry:
        return cls(
            stream=stream,
            effect_id=f[b"e"].decode(),
            topic=f[b"t"].decode(),
            partition=int(f[b"p"]),
            key=f[b"k"],
            value=f[b"v"],
            scan_from=int(f[b"o"]),
            entry_id=entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
        )



class OutboxPublisher:
    """Moves outbox entries to Kafka exactly once (see the module docstring).

    Entries are *claimed* by this process before it produces them: fresh ones by the applier
    right after its script wrote them (they cannot be in Kafka yet), old ones by :meth:`recover`
    (they may be, so they are checked first). A claimed entry is never picked up twice.

    Args:
        producer: a started producer (``enable_idempotence=False`` on Tansu).
        redis: asyncio Redis client.
        kafka: the settings (connection and security) of the scanning consumer, or a bare
            bootstrap string for an unsecured broker.
        output_topics: every topic entries may target (partition counts are read at start).
    """

    def __init__(
        self,
        producer: AIOKafkaProducer,
        redis: aioredis.Redis,
        kafka: Settings | str,
        output_topics: Iterable[str],
    ) -> None:
        self.producer = producer
        self.redis = redis
        self.kafka = kafka
        self.output_topics = list(dict.fromkeys(output_topics))
        self.partitions: dict[str, int] = {}
        #: per output partition, an offset <= its current end (refreshed from acks)
        self.ends: dict[TopicPartition, int] = {}
        self._claimed: set[str] = set()
        self._routes: dict[tuple[str, bytes], int] = {}
        self._scanner: AIOKafkaConsumer | None = None
        self._scanner_lock = asyncio.Lock()  # one assignment of the scanner at a time

    async def start(self) -> None:
        """Learn partition counts and end offsets of the output topics."""
        self._scanner = kafka_consumer(
            self.kafka,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=_SCAN_POLL_MS,
        )
        await retry(self._scanner.start, "Kafka scanner start")
        for topic in self.output_topics:
            parts = await retry(lambda t=topic: self.producer.partitions_for(t), f"metadata of {topic}")
            if not parts:
                raise RuntimeError(f"output topic {topic!r} does not exist (create it first)")
            self.partitions[topic] = len(parts)
        tps = [TopicPartition(t, p) for t, n in self.partitions.items() for p in range(n)]
        self.ends.update(await self.end_offsets(tps))

    async def stop(self) -> None:
        if self._scanner is not None:
            await self._scanner.stop()
            self._scanner = None

    def route(self, topic: str, key: bytes, *, repeats: bool = False) -> tuple[int, int]:
        """``(partition, scan_from)`` for a record: the default Kafka partitioner (murmur2 of
        the key, as the Java client and aiokafka do), and that partition's known end offset.
        ``repeats``: the key comes back often (a ticker symbol), so its partition is cached
        (murmur2 is pure Python)."""
        if not repeats:
            partition = (murmur2(key) & 0x7FFFFFFF) % self.partitions[topic]
        elif (partition := self._routes.get((topic, key), -1)) < 0:
            if len(self._routes) >= _MAX_ROUTES:
                self._routes.clear()
            partition = self._routes[(topic, key)] = (murmur2(key) & 0x7FFFFFFF) % self.partitions[topic]
        return partition, self.ends[TopicPartition(topic, partition)]

    def claim(self, entries: Iterable[OutboxEntry]) -> None:
        for e in entries:
            assert e.entry_id is not None
            self._claimed.add(e.entry_id)

    def release(self, entries: Iterable[OutboxEntry]) -> None:
        """Give up claims without deleting (the entries stay for whoever recovers the stream)."""
        for e in entries:
            self._claimed.discard(e.entry_id or "")

    async def produce(self, entries: Sequence[OutboxEntry], *, check_first: bool = False) -> int:
        """Produce ``entries`` and wait until Kafka acknowledged every one.

        Retries forever with backoff; after any failure whose outcome is unknown (or when
        ``check_first``), entries already in Kafka are found by their effect ids and skipped.
        Returns how many were skipped that way.
        """
        pending = list(entries)
        skipped = 0
        delay = 0.1
        attempt = 0
        while pending:
            if check_first:
                found = await self.find_published(pending)
                if found:
                    metrics.OUTBOX_RECOVERED.labels("skipped").inc(len(found))
                    log.info("%d outbox records were already in Kafka; not producing them again", len(found))
                    skipped += len(found)
                pending = [e for e in pending if e.effect_id not in found]
                if not pending:
                    return skipped
            failed: list[OutboxEntry] = []
            error: BaseException | None = None
            acked: Counter[str] = Counter()
            for (topic, partition), chunk, r in await self._send(pending):
                if isinstance(r, BaseException):
                    if not isinstance(r, TRANSIENT_ERRORS):
                        raise r
                    failed.extend(chunk)
                    error = r
                else:  # r: the metadata of the chunk's first record
                    tp = TopicPartition(topic, partition)
                    self.ends[tp] = max(self.ends.get(tp, 0), r.offset + len(chunk))
                    acked[topic] += len(chunk)
            for topic, n in acked.items():
                metrics.MESSAGES_OUT.labels(topic).inc(n)
            pending = failed
            if pending:
                # Some sends may have reached the broker without an ack: check before resending.
                check_first = True
                attempt += 1
                metrics.RETRIES.labels("kafka produce").inc()
                if attempt == 1 or attempt % 10 == 0:
                    log.warning("producing %d records failed (%r); retrying in %.1fs", len(pending), error, delay)
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)
        return skipped

    async def _send(
        self, entries: Sequence[OutboxEntry]
    ) -> list[tuple[tuple[str, int], list[OutboxEntry], Any]]:
        """Produce ``entries`` as record batches, one or more per target partition, and wait for
        them: ``(topic, partition), chunk, metadata or exception`` per batch. Batches, not one
        ``send`` per record: a record's own future and bookkeeping cost more event-loop time
        than its bytes (entries of one partition keep their order)."""
        by_tp: dict[tuple[str, int], list[OutboxEntry]] = {}
        for e in entries:
            by_tp.setdefault((e.topic, e.partition), []).append(e)
        sent: list[tuple[tuple[str, int], list[OutboxEntry], Any]] = []

        async def submit(tp: tuple[str, int], batch: Any, chunk: list[OutboxEntry]) -> None:
            try:
                fut: Any = await self.producer.send_batch(batch, tp[0], partition=tp[1])
            except TRANSIENT_ERRORS as exc:
                fut = exc
            sent.append((tp, chunk, fut))

        for tp, group in by_tp.items():
            batch, chunk = self.producer.create_batch(), []
            for e in group:
                headers = [(EFFECT_HEADER, e.effect_id.encode())]
                if batch.append(key=e.key, value=e.value, timestamp=None, headers=headers) is None:
                    await submit(tp, batch, chunk)  # full: the record opens the next batch
                    batch, chunk = self.producer.create_batch(), []
                    batch.append(key=e.key, value=e.value, timestamp=None, headers=headers)
                chunk.append(e)
            await submit(tp, batch, chunk)
        futures = [f for _, _, f in sent if not isinstance(f, BaseException)]
        results = iter(await asyncio.gather(*futures, return_exceptions=True))
        return [(tp, chunk, f if isinstance(f, BaseException) else next(results)) for tp, chunk, f in sent]

    async def delete(self, entries: Sequence[OutboxEntry]) -> None:
        """XDEL acknowledged entries and release their claims (retries on Redis errors)."""
        by_stream: dict[str, list[str]] = {}
        for e in entries:
            assert e.entry_id is not None
            by_stream.setdefault(e.stream, []).append(e.entry_id)
        if not by_stream:
            return

        async def xdel() -> None:
            async with self.redis.pipeline(transaction=False) as pipe:
                for stream, ids in by_stream.items():
                    pipe.xdel(stream, *ids)
                await pipe.execute()

        await retry(xdel, "outbox XDEL")
        for ids in by_stream.values():
            self._claimed.difference_update(ids)

    async def pending(self, stream: str) -> list[OutboxEntry]:
        """Every entry of ``stream`` not claimed by this process, oldest first."""
        out: list[OutboxEntry] = []
        start = "-"
        while True:
            page = await retry(lambda s=start: self.redis.xrange(stream, s, "+", count=1000), "outbox XRANGE")
            for entry_id, f in page:
                e = OutboxEntry.from_stream(stream, entry_id, f)
                if e.entry_id not in self._claimed:
                    out.append(e)
            if len(page) < 1000:
                return out
            start = "(" + page[-1][0].decode()

    async def recover(self, streams: Iterable[str]) -> int:
        """Publish what earlier runs left in ``streams``: skip records already in Kafka, produce
        the rest, delete all. Returns how many entries were pending. The caller must make sure
        no script is writing to these streams meanwhile (:class:`pipeline.checkpoint.Checkpoint` does)."""
        entries: list[OutboxEntry] = []
        for stream in streams:
            entries.extend(await self.pending(stream))
        if not entries:
            return 0
        self.claim(entries)
        log.info("recovering %d pending outbox entries", len(entries))
        skipped = await self.produce(entries, check_first=True)
        metrics.OUTBOX_RECOVERED.labels("produced").inc(len(entries) - skipped)
        await self.delete(entries)
        log.info("outbox recovery: %d already in Kafka, %d produced", skipped, len(entries) - skipped)
        return len(entries)

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Exact end offsets (high watermarks) of ``tps``.

        Read from a fetch response, not from ListOffsets: Tansu 0.6 answers ListOffsets(latest)
        with the base offset of the partition's last record *batch* plus one, which is below the
        end whenever that batch holds more than one record. Its fetch responses carry the true
        high watermark, and ListOffsets is still a lower bound to start fetching from.
        """
        assert self._scanner is not None, "start() first"
        scanner = self._scanner

        async def read() -> dict[TopicPartition, int]:
            async with self._scanner_lock:
                scanner.assign(list(tps))
                for tp, lower in (await scanner.end_offsets(list(tps))).items():
                    scanner.seek(tp, lower)
                out: dict[TopicPartition, int] = {}
                while len(out) < len(tps):
                    await scanner.getmany(*(tp for tp in tps if tp not in out), timeout_ms=_SCAN_POLL_MS)
                    for tp in tps:
                        high = scanner.highwater(tp)
                        if high is not None:
                            out[tp] = high
                return out

        return await retry(read, "Kafka end offsets")

    async def find_published(self, entries: Sequence[OutboxEntry]) -> set[str]:
        """Effect ids of ``entries`` that are already in Kafka.

        Scans each target partition from the smallest ``scan_from`` of its entries to its
        current end, reading the effect-id header of every record.
        """
        assert self._scanner is not None, "start() first"
        scanner = self._scanner
        wanted: dict[TopicPartition, set[str]] = {}
        start: dict[TopicPartition, int] = {}
        for e in entries:
            tp = e.tp
            wanted.setdefault(tp, set()).add(e.effect_id)
            start[tp] = min(start.get(tp, e.scan_from), e.scan_from)

        async def scan() -> set[str]:
            found: set[str] = set()
            tps = list(wanted)
            async with self._scanner_lock:
                scanner.assign(tps)
                begins = await scanner.beginning_offsets(tps)
                for tp in tps:
                    scanner.seek(tp, max(start[tp], begins[tp]))
                todo = set(tps)
                # Until the position reaches the high watermark of a fetch response (see
                # end_offsets for why not ListOffsets). Nothing of ours can be produced
                # meanwhile: the entries are claimed by this process.
                while todo:
                    batches = await scanner.getmany(*todo, timeout_ms=_SCAN_POLL_MS)
                    for tp, records in batches.items():
                        for r in records:
                            for name, value in r.headers or ():
                                if name == EFFECT_HEADER and value.decode() in wanted[tp]:
                                    found.add(value.decode())
                    for tp in list(todo):
                        high = scanner.highwater(tp)
                        if high is None:
                            continue
                        position = await scanner.position(tp)
                        if position > high:
                            # scan_from past the end: the topic was recreated; scan all of it
                            scanner.seek(tp, begins[tp])
                        elif position == high:
                            todo.discard(tp)
            return found

        return await retry(scan, "Kafka scan for published effect ids")
