"""The streaming driver: Kafka in -> parse -> dedupe -> link -> micro-batch -> engine -> aggregate
-> Redis (commit point) + outbox -> Kafka out -> input offset commit.

Why aiokafka and not faust
--------------------------
``bench/faust_overhead.py --json`` consumed the same 20,000 input-sized messages (6 partitions,
embedded Tansu broker, this 2-core machine while a training job used both cores), timed from
the first record to the last, three runs:

=====================  =================  ==============================================
consumer               messages/s         per message
=====================  =================  ==============================================
aiokafka ``getmany``   375,000-660,000    ~2 us (batch poll, one manual commit per poll)
faust agent            8,400-9,100        ~110 us (per-event ack/commit bookkeeping)
faust ``stream.take``  8,300-8,800        ~115 us (batching does not remove it)
=====================  =================  ==============================================

faust alone would not cap throughput below 2x the engine (400-600 texts/s), so throughput is not
the reason. The reasons are: (1) exactly-once needs the commit under our control -- an offset may
be committed only after its document's Redis script succeeded and its outbox records were
acknowledged by Kafka, while several batches are in flight; faust acks an event when the agent
moves past it, and with concurrency > 1 commits past in-flight events (faust-streaming issue
#606). (2) On a 2-core box, ~120 us of CPU per message is CPU the model does not get.
(3) faust's extra machinery (leader topic, assignor, changelogs) buys nothing here. So the hot
path is aiokafka: ``getmany`` batch polling, ``enable_auto_commit=False``, explicit commits.

Flow and back-pressure
----------------------
Five asyncio tasks share one event loop; the engine runs the model in its own thread::

    fetch ──> batcher ──> score (<= max_inflight_batches concurrent engine.predict calls)
      │                        │
      └─ bad / duplicate_id ──>┴──> apply (one Lua script per round, pipeline/sinks.py)
                                          └──> publish (produce, await acks) ──> done ──> commit

* ``fetch`` polls only while fewer than ``max_outstanding`` messages are fetched-but-not-done,
  so a slow engine or an unreachable Redis/Kafka stops consumption instead of growing memory.
* Every fetched offset is tracked (pipeline/offsets.py); the ``commit`` task commits per
  partition the end of the contiguous done prefix, so a commit never passes a message in flight.
* Redis or Kafka unavailable: every call retries with capped exponential backoff (sinks.retry);
  nothing downstream of a failed step is marked done, so nothing unsent is ever committed.
* SIGTERM/SIGINT: stop fetching, drain what is in flight (bounded by ``drain_timeout_s``), commit,
  close; the whole shutdown ends within ``settings.stop_timeout_s`` (a client step that overruns
  is abandoned, not awaited), inside an orchestrator's grace period. A rebalance drains the
  revoked partitions the same way before giving them up; work that cannot finish in time is
  abandoned uncommitted (its outbox entries stay in Redis and the next owner recovers them
  before it consumes).
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import io
import logging
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from pipeline import metrics
from pipeline.aggregate import Aggregator
from pipeline.batcher import MicroBatcher
from pipeline.connections import kafka_consumer, kafka_producer, redis_client
from pipeline.infra import create_topics
from pipeline.linking import Linker, default_linker
from pipeline.offsets import OffsetTracker, PartitionOffsets
from pipeline.schemas import (
    DeadLetter,
    InputMessage,
    ParseError,
    ScoredDocument,
    TickerLink,
    parse_input,
)
from pipeline.settings import Settings, redact_url
from pipeline.sinks import (
    DEFAULT_DOC_TTL_S,
    Applier,
    Keys,
    OutboxEntry,
    OutboxPublisher,
    Rejected,
    Scored,
    Work,
    retry,
    text_hash,
)

if TYPE_CHECKING:
    from models.engine import Engine

__all__ = ["Worker", "wall_ms"]

log = logging.getLogger(__name__)

#: Of ``settings.stop_timeout_s``, what a shutdown's drain leaves to committing and closing
#: clients: a quarter, at most this.
CLOSE_RESERVE_S = 10.0
_APPLY_ROUND = 512  # most work items per apply script call
_PUBLISH_ROUND = 2048  # most records per produce round


def wall_ms() -> int:
    """Wall clock, epoch milliseconds."""
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class _Msg:
    """A parsed input message on its way to the engine."""

    part: PartitionOffsets[TopicPartition]
    offset: int
    raw: bytes
    ingested_at: int
    msg: InputMessage
    hash: str
    links: list[TickerLink]


@dataclass(slots=True)
class _Job:
    """A work item on its way to Redis and Kafka; ``part``/``offset`` identify the input message."""

    part: PartitionOffsets[TopicPartition]
    offset: int
    work: Work
    ingested_at: int
    entries: list[OutboxEntry] | None = None


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    # aiokafka logs and swallows a listener's exception and goes on consuming; a failed drain or
    # recovery must stop the worker instead (uncommitted work is then re-read by the next owner).

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        try:
            await self.worker._on_revoked(list(revoked))
        except Exception as exc:  # noqa: BLE001 - handed to the worker, which fails with it
            self.worker._fatal(exc, "revoking partitions")

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        try:
            await self.worker._on_assigned(list(assigned))
        except Exception as exc:  # noqa: BLE001
            self.worker._fatal(exc, "recovering assigned partitions")


class Worker:
    """One streaming worker (a member of consumer group ``settings.group_id``).

    Args:
        settings: topics, Redis URL, batching, aggregation, metrics port.
        engine: a model engine to share (tests); default: built from ``settings`` and closed
            at the end. A given engine is started if needed and left running.
        session_timeout_ms: Kafka consumer session timeout (short in tests: a member that died
            uncleanly blocks its group's rebalance until this expires).
        max_outstanding: most fetched-but-not-done messages (back-pressure); default
            ``16 * max_batch`` (deep enough that the engine is not starved while the sinks catch up).
        max_inflight_batches: most micro-batches inside ``engine.predict`` at once.
        commit_interval_s: how often done offsets are committed.
        drain_timeout_s: how long shutdown and rebalances wait for in-flight work; a shutdown's
            drain also leaves part of ``settings.stop_timeout_s`` to closing (``CLOSE_RESERVE_S``).
        doc_ttl_s: how long document ids are remembered for de-duplication.
        create_missing_topics: create the input and output topics if they do not exist.
        clock: wall clock in epoch ms.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        session_timeout_ms: int = 10_000,
        max_outstanding: int | None = None,
        max_inflight_batches: int = 4,
        commit_interval_s: float = 0.5,
        drain_timeout_s: float = 30.0,
        doc_ttl_s: int = DEFAULT_DOC_TTL_S,
        create_missing_topics: bool = True,
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self._own_engine = engine is None
        # settings.tagger replaces it at start with a tagger-backed linker (pipeline.inference)
        self.linker: Linker = default_linker()
        self.session_timeout_ms = session_timeout_ms
        self.max_outstanding = max_outstanding or 16 * settings.max_batch
        self.max_inflight_batches = max_inflight_batches
        self.commit_interval_s = commit_interval_s
        self.drain_timeout_s = drain_timeout_s
        self.doc_ttl_s = doc_ttl_s
        self.create_missing_topics = create_missing_topics
        self.clock = clock

        s = settings
        self.input_topics = {s.topic(s.news_topic): "news", s.topic(s.tweets_topic): "tweet"}
        self.documents_topic = s.topic(s.documents_topic)
        self.scores_topic = s.topic(s.scores_topic)
        self.dlq_topic = s.topic(s.dlq_topic)
        self.keys = Keys(s.namespace)

        self.tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self.batcher: MicroBatcher[_Msg] = MicroBatcher(s.max_batch, s.max_wait_ms)
        self.ready = asyncio.Event()  # set once partitions are assigned and recovered
        self.counts: dict[str, int] = {"applied": 0, "duplicates": 0, "dead_lettered": 0}
        self._stop = asyncio.Event()
        self._room = asyncio.Event()  # set while outstanding < max_outstanding
        self._assigned = asyncio.Event()  # cleared while a rebalance revokes partitions
        self._apply_q: asyncio.Queue[_Job] = asyncio.Queue()
        self._publish_q: deque[_Job] = deque()
        self._publish_wake = asyncio.Event()
        self._publish_lock = asyncio.Lock()
        self._commit_lock = asyncio.Lock()
        self._batch_slots = asyncio.Semaphore(max_inflight_batches)
        self._score_tasks: set[asyncio.Task[None]] = set()
        self._failed: BaseException | None = None
        self._stop_by = float("inf")  # monotonic deadline of the whole shutdown, once it has begun
        self._abandoned: list[asyncio.Task[Any]] = []
        self._redis: aioredis.Redis | None = None
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._publisher: OutboxPublisher | None = None
        self._applier: Applier | None = None

    # ------------------------------------------------------------------ public API

    def stop(self) -> None:
        """Ask :meth:`run` to stop: no more fetching, drain, commit, close."""
        self._stop.set()

    @property
    def outstanding(self) -> int:
        """Fetched messages not yet fully done (applied, published, ready to commit)."""
        return self.tracker.outstanding

    async def drained(self) -> bool:
        """True when every message in the assigned partitions is done and committed and the
        outboxes are empty (the demo's ``--until-drained``)."""
        consumer, redis, publisher = self._consumer, self._redis, self._publisher
        if consumer is None or redis is None or publisher is None or not self.ready.is_set() or self.outstanding:
            return False
        assignment = sorted(consumer.assignment())
        if not assignment:
            return False
        ends = await publisher.end_offsets(assignment)
        for tp in assignment:
            if ((await consumer.committed(tp)) or 0) < ends[tp]:
                return False
        lengths = await asyncio.gather(*(redis.xlen(self.keys.outbox(tp.topic, tp.partition)) for tp in assignment))
        return not any(lengths)

    async def run(self, *, handle_signals: bool = False) -> None:
        """Run until :meth:`stop` (or SIGTERM/SIGINT with ``handle_signals``), then shut down
        gracefully. Raises the first fatal error of any pipeline task after cleaning up."""
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
            loop.add_signal_handler(signal.SIGUSR1, self._dump_stacks)
            # the process's own stderr (fd 2): a test runner's replacement has no file descriptor
            faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True, chain=True)
        try:
            await self._start()
            await self._serve()
        finally:
            await self._close()
            if handle_signals:
                faulthandler.unregister(signal.SIGUSR1)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
                    loop.remove_signal_handler(sig)
        if self._failed is not None:
            raise self._failed

    # ------------------------------------------------------------------ lifecycle

    def _fatal(self, exc: BaseException, what: str) -> None:
        """Stop the worker because of ``exc`` (the first fatal error is re-raised by run())."""
        if self._failed is None:
            self._failed = exc
            log.error("%s failed: %r; shutting down without draining", what, exc)
        self._stop.set()

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("%s received: stopping (draining in-flight work first)", sig.name)
        # A last resort for a shutdown stuck where no timeout reaches (a thread that never
        # returns): dump every thread's stack to the log and exit 1 past the budget.
        faulthandler.dump_traceback_later(self.settings.stop_timeout_s + 10, exit=True, file=sys.__stderr__)
        self.stop()

    def _dump_stacks(self) -> None:
        """SIGUSR1: log every asyncio task's stack (faulthandler writes the threads' to stderr)."""
        for task in asyncio.all_tasks():
            buf = io.StringIO()
            task.print_stack(file=buf)
            log.warning("%s", buf.getvalue().rstrip())

    def _begin_stop(self) -> None:
        if self._stop_by == float("inf"):
            self._stop_by = time.monotonic() + self.settings.stop_timeout_s

    def _deadline(self, seconds: float) -> float:
        """``seconds`` from now, but never past the shutdown deadline."""
        return min(time.monotonic() + seconds, self._stop_by)

    async def _start(self) -> None:
        s = self.settings
        metrics.serve(s.metrics_port)
        self._redis = redis_client(s)
        await retry(self._redis.ping, f"Redis ping {redact_url(s.redis_url)}")
        all_topics = [*self.input_topics, self.documents_topic, self.scores_topic, self.dlq_topic]
        if self.create_missing_topics:
            await retry(lambda: create_topics(s, all_topics, s.partitions), "create topics")
        self._producer = kafka_producer(s, enable_idempotence=False, acks="all", linger_ms=2)
        await retry(self._producer.start, f"Kafka producer start ({s.bootstrap})")
        self._publisher = OutboxPublisher(
            self._producer, self._redis, s, [self.documents_topic, self.scores_topic, self.dlq_topic]
        )
        await self._publisher.start()
        self._applier = Applier(
            self._redis,
            self.keys,
            Aggregator(s.half_life_s, s.lateness_s),
            self._publisher,
            documents_topic=self.documents_topic,
            scores_topic=self.scores_topic,
            dlq_topic=self.dlq_topic,
            history_len=s.history_len,
            doc_ttl_s=self.doc_ttl_s,
            clock=self.clock,
        )
        if self.engine is None:
            from pipeline.inference import build_engine

            self.engine = await asyncio.to_thread(build_engine, s)
        self.engine.start()
        if s.tagger:
            from pipeline.inference import build_linker

            self.linker = await asyncio.to_thread(build_linker, s)
        # The linker builds its tables on first use; do that here, not on the event loop later.
        await asyncio.to_thread(self.linker.link, InputMessage(id="warm-up", text="$SPY warm-up", published_at=0))
        self._consumer = kafka_consumer(
            s,
            group_id=s.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=max(100, self.session_timeout_ms // 3),
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            fetch_min_bytes=s.fetch_min_bytes,
        )
        self._consumer.subscribe(list(self.input_topics), listener=_Rebalance(self))
        await retry(self._consumer.start, f"Kafka consumer start ({s.bootstrap})")
        log.info(
            "worker started: group %s, topics %s -> %s, %s, %s; Redis %s; model %s",
            s.group_id, ", ".join(self.input_topics), self.documents_topic, self.scores_topic,
            self.dlq_topic, redact_url(s.redis_url), self.engine.model.config.version,
        )  # fmt: skip

    async def _serve(self) -> None:
        self._room.set()
        tasks = {
            asyncio.create_task(self._fetch_loop(), name="fetch"),
            asyncio.create_task(self._batch_loop(), name="batch"),
            asyncio.create_task(self._apply_loop(), name="apply"),
            asyncio.create_task(self._publish_loop(), name="publish"),
            asyncio.create_task(self._commit_loop(), name="commit"),
        }
        stopper = asyncio.create_task(self._stop.wait(), name="stop")
        done, _ = await asyncio.wait({*tasks, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t is not stopper and not t.cancelled() and (exc := t.exception()) is not None:
                self._fatal(exc, f"pipeline task {t.get_name()}")
        self._stop.set()
        self._begin_stop()
        if self._failed is None:
            reserve = min(CLOSE_RESERVE_S, self.settings.stop_timeout_s / 4)
            await self._drain(lambda: self.outstanding, "shutdown", self._stop_by - reserve)
        for t in [*tasks, stopper, *self._score_tasks]:
            t.cancel()
        await asyncio.gather(*tasks, stopper, *self._score_tasks, return_exceptions=True)
        # During a rebalance a commit can wait on the group; what it would have committed is
        # re-delivered to the next owner and de-duplicated, so shutdown need not hang on it.
        await self._bounded(self._commit(), "final offset commit (the next owner re-reads and de-duplicates)")

    async def _drain(self, outstanding: Callable[[], int], why: str, until: float = float("inf")) -> bool:
        """Wait until ``outstanding()`` is 0 while the pipeline keeps running; at most
        ``drain_timeout_s``, and never past ``until`` or the shutdown deadline (monotonic)."""
        t0 = time.monotonic()
        deadline = min(self._deadline(self.drain_timeout_s), until)
        while outstanding() and self._failed is None:
            if time.monotonic() >= deadline:
                log.warning("%s: %d messages still in flight after %.1fs; leaving them uncommitted "
                            "(they will be re-delivered and de-duplicated)", why, outstanding(), time.monotonic() - t0)
                return False
            await asyncio.sleep(0.02)
        return self._failed is None

    async def _close(self) -> None:
        # Every step shares the shutdown deadline: a consumer stopped while its group rebalances
        # (a second worker joining as this one is told to stop) was seen to hang on leaving the
        # group. Nothing is lost by moving on: the group drops a silent member after the session
        # timeout, and the outbox recovery of the next start publishes what was not acknowledged.
        self._begin_stop()  # a failed start
        if self._consumer is not None:
            await self._bounded(self._consumer.stop(), "Kafka consumer stop")
        if self._publisher is not None:
            await self._bounded(self._publisher.stop(), "outbox publisher stop")
        if self._producer is not None:
            await self._bounded(self._producer.stop(), "Kafka producer stop")
        if self.engine is not None and self._own_engine:
            await asyncio.to_thread(self.engine.close, max(0.5, self._stop_by - time.monotonic()))
            st = self.engine.stats
            log.info(
                "engine: %d texts in %d layer calls, mean in-flight %.1f of %d, mean exit layer %.2f",
                st.retired, st.layer_calls, st.mean_occupancy, self.engine.max_batch,
                sum(st.exit_layers) / max(1, len(st.exit_layers)),
            )  # fmt: skip
        if self._redis is not None:
            await self._bounded(self._redis.aclose(), "Redis close")
        log.info("worker stopped (%s)", ", ".join(f"{k} {v}" for k, v in self.counts.items()))

    async def _bounded(self, step: Awaitable[Any], what: str) -> None:
        """Run one shutdown step until the shutdown deadline. One that overruns is cancelled
        and abandoned, not awaited: ``asyncio.wait_for`` would wait for the cancellation to
        finish, and a client that is stuck may not finish it."""
        task = asyncio.ensure_future(step)
        # at least a second each, so that one overrunning step does not leave the next (a producer
        # flush taking milliseconds) no time at all; a handful of steps stay well inside the watchdog
        await asyncio.wait({task}, timeout=max(1.0, self._stop_by - time.monotonic()))
        if not task.done():
            task.cancel()
            self._abandoned.append(task)  # keep a reference until the loop ends
            log.warning("%s did not finish before the shutdown deadline; going on with the shutdown", what)
        elif not task.cancelled() and (exc := task.exception()) is not None:
            # a failing client must not stop the others from closing
            log.warning("%s failed: %r", what, exc)

    # ------------------------------------------------------------------ rebalances

    async def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        parts = [p for tp in revoked if (p := self.tracker.get(tp)) is not None]
        if not parts:
            return
        self._assigned.clear()  # fetching more for these partitions would only prolong the drain
        drained = await self._drain(lambda: sum(p.outstanding for p in parts), f"revoking {len(parts)} partitions")
        if drained:
            await self._commit()
        log.info("revoked %d partitions (%s)", len(parts), "drained and committed" if drained else "abandoned")
        for tp in revoked:
            self.tracker.revoke(tp)
            with contextlib.suppress(KeyError):  # not ours any more: its lag is the new owner's to report
                metrics.CONSUMER_LAG.remove(tp.topic, str(tp.partition))
        # No script call or produce for these partitions may outlive the revocation: wait for
        # the ones running, and release the claims of abandoned records so that the next owner
        # (maybe us, right after) recovers them. (The apply loop queues a call's records before
        # it next yields, so once we hold the applier lock they are in the publish queue.)
        assert self._applier is not None and self._publisher is not None
        async with self._applier.lock, self._publish_lock:
            abandoned = [j for j in self._publish_q if not j.part.active]
            for j in abandoned:
                self._publish_q.remove(j)
                self._publisher.release(j.entries or ())

    async def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        assert self._applier is not None and self._consumer is not None
        for tp in assigned:
            part = self.tracker.assign(tp)
            committed = await self._consumer.committed(tp)
            if committed is not None:
                part.committed(committed)
        # Before consuming: finish what earlier owners (or a crashed run of ours) left behind.
        n = await self._applier.recover(self.keys.outbox(tp.topic, tp.partition) for tp in assigned)
        log.info("assigned %d partitions%s", len(assigned), f"; recovered {n} outbox entries" if n else "")
        self._room.set()
        self._assigned.set()
        self.ready.set()

    # ------------------------------------------------------------------ the pipeline

    def _done(self, part: PartitionOffsets[TopicPartition], offset: int) -> None:
        part.done(offset)
        if self.outstanding < self.max_outstanding:
            self._room.set()

    async def _fetch_loop(self) -> None:
        assert self._consumer is not None
        delay = 0.1
        while not self._stop.is_set():
            if not self._assigned.is_set():
                await self._assigned.wait()
                continue
            room = self.max_outstanding - self.outstanding
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                batches = await self._poll(min(room, 1000))
            except KafkaError as exc:
                log.warning("Kafka fetch failed (%r); retrying in %.1fs", exc, delay)
                metrics.RETRIES.labels("kafka fetch").inc()
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)
                continue
            delay = 0.1
            if batches and not self._stop.is_set():
                await self._ingest(batches)

    async def _poll(self, room: int) -> dict[TopicPartition, list[Any]]:
        """Up to ``room`` records, shared fairly among the assigned partitions.

        Aggregation runs in event time, and a document more than ``lateness_s`` behind its
        ticker's latest one is late. aiokafka's ``getmany`` drains one partition before the
        next, so during a catch-up one partition's hours would run ahead of the others' and
        make their documents late. Taking an equal share from each partition keeps partitions
        roughly level in event time (records are also sorted by event time before scoring).
        """
        assert self._consumer is not None
        assignment = sorted(self._consumer.assignment())
        share = max(1, room // max(1, len(assignment)))
        # Wait (briefly) for anything; one fetch response carries many partitions, so the
        # others' records are buffered by then: take an equal share of each of those too.
        batches = await self._consumer.getmany(timeout_ms=100, max_records=share)
        if batches:
            for tp in assignment:
                if tp not in batches:
                    batches.update(await self._consumer.getmany(tp, timeout_ms=0, max_records=share))
        return batches

    async def _ingest(self, batches: dict[TopicPartition, list[Any]]) -> None:
        """Track, parse and pre-dedupe one poll's records; hand them on."""
        assert self._applier is not None
        now = self.clock()
        fresh: list[_Msg] = []
        for tp, records in batches.items():
            part = self.tracker.get(tp)
            if part is None:  # revoked while the poll returned
                continue
            kind = self.input_topics[tp.topic]
            metrics.MESSAGES_IN.labels(tp.topic).inc(len(records))
            for r in records:
                part.add(r.offset)
                raw = r.value if r.value is not None else b""
                # ingest time: the record's Kafka timestamp, unless it is in the future (a
                # producer clock ahead of ours, or a producer that stamps event time)
                ingested = r.timestamp if 0 < r.timestamp <= now else now
                try:
                    msg = parse_input(r.value, now_ms=now, default_kind=kind)  # type: ignore[arg-type]
                except ParseError as exc:
                    self._reject(part, r.offset, raw, exc.reason, exc.detail, now, ingested)
                    continue
                fresh.append(_Msg(part, r.offset, raw, ingested, msg, text_hash(msg.text), []))
        if not fresh:
            return
        fresh.sort(key=lambda m: m.msg.published_at)  # event-time order across partitions
        stored = await self._applier.seen([(m.msg.id, m.hash) for m in fresh])
        new = [m for m, h in zip(fresh, stored, strict=True) if h is None]
        if self.linker.tagger is None:
            links = [self.linker.link(m.msg) for m in new]
        else:  # one tagger call for the poll, off the event loop (it runs a model)
            links = await asyncio.to_thread(self.linker.link_many, [m.msg for m in new])
        for m, m_links in zip(new, links, strict=True):
            m.links = m_links
        for m, h in zip(fresh, stored, strict=True):
            if h is None:
                self.batcher.put(m)
            elif h == m.hash:
                metrics.DUPLICATES.labels("precheck").inc()
                self.counts["duplicates"] += 1
                self._done(m.part, m.offset)
            else:
                detail = f"id {m.msg.id!r} was already applied with a different text"
                self._reject(m.part, m.offset, m.raw, "duplicate_id", detail, now, m.ingested_at, m.msg.id)

    def _reject(
        self,
        part: PartitionOffsets[TopicPartition],
        offset: int,
        raw: bytes,
        reason: str,
        detail: str,
        now: int,
        ingested_at: int,
        doc_id: str | None = None,
    ) -> None:
        tp = part.tp
        dl = DeadLetter.from_error(raw, reason, detail, tp.topic, tp.partition, offset, failed_at=now, doc_id=doc_id)
        self._apply_q.put_nowait(_Job(part, offset, Rejected(dl), ingested_at))

    async def _batch_loop(self) -> None:
        # Batches are scored concurrently, but each hands its documents to the aggregator only
        # after the batch before it did: the engine may finish a later batch first, and applying
        # in fetch (event-time) order is what makes the aggregates reproducible by
        # `finsent backtest` on the same input.
        handed: asyncio.Future[None] | None = None
        while True:
            # A slot first, then the batch: while every slot is busy the batcher keeps filling,
            # so under load the engine gets full batches instead of many max_wait slivers.
            await self._batch_slots.acquire()
            batch = await self.batcher.get()
            previous, handed = handed, asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._score(batch, previous), name="score")
            self._score_tasks.add(task)
            task.add_done_callback(self._score_done)
            # also when the task fails or is cancelled: the batches after it must not hang
            task.add_done_callback(lambda _, h=handed: h.done() or h.set_result(None))

    def _score_done(self, task: asyncio.Task[None]) -> None:
        self._score_tasks.discard(task)
        self._batch_slots.release()
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._fatal(exc, "scoring")

    async def _score(self, batch: list[_Msg], previous: asyncio.Future[None] | None) -> None:
        assert self.engine is not None
        t0 = time.perf_counter()
        preds = await self.engine.predict([m.msg.text for m in batch])
        metrics.INFERENCE_LATENCY.observe(time.perf_counter() - t0)
        metrics.BATCH_SIZE.observe(len(batch))
        now = self.clock()
        labels = self.engine.model.labels
        version = self.engine.model.config.version
        if previous is not None:
            await previous
        for m, p in zip(batch, preds, strict=True):
            metrics.EXIT_LAYER.observe(p.exit_layer)
            tp = m.part.tp
            try:
                doc = ScoredDocument.from_prediction(
                    m.msg, m.links, label=p.label, probs=dict(zip(labels, p.probs, strict=True)),
                    exit_layer=p.exit_layer, truncated=p.truncated, model_version=version,
                    ingested_at=m.ingested_at, scored_at=now,
                )  # fmt: skip
            except ValueError as exc:  # e.g. NaN probabilities: never let them reach the aggregates
                self._reject(m.part, m.offset, m.raw, "internal", f"scoring: {exc}", now, m.ingested_at, m.msg.id)
                continue
            work = Scored(doc, m.hash, m.raw, tp.topic, tp.partition, m.offset)
            self._apply_q.put_nowait(_Job(m.part, m.offset, work, m.ingested_at))

    async def _apply_loop(self) -> None:
        assert self._applier is not None
        while True:
            jobs = [await self._apply_q.get()]
            while len(jobs) < _APPLY_ROUND and not self._apply_q.empty():
                jobs.append(self._apply_q.get_nowait())
            # work of a partition we no longer own is dropped unapplied: the new owner re-reads it
            jobs = [j for j in jobs if j.part.active]
            if not jobs:
                continue
            outcomes = await self._applier.apply([j.work for j in jobs])
            now = self.clock()
            for j, o in zip(jobs, outcomes, strict=True):
                if o.status == "applied":
                    self.counts["applied"] += 1
                    assert o.doc is not None
                    metrics.E2E_INGEST.observe(max(0, now - j.ingested_at) / 1000)
                    metrics.E2E_PUBLISHED.observe(max(0, now - o.doc.published_at) / 1000)
                elif o.status == "duplicate":
                    self.counts["duplicates"] += 1
                    metrics.DUPLICATES.labels("apply").inc()
                if o.dead_letter is not None and o.status != "already_dead_lettered":
                    self.counts["dead_lettered"] += 1
                    metrics.DEAD_LETTERS.labels(o.dead_letter.reason).inc()
                if o.entries:
                    j.entries = o.entries
                    self._publish_q.append(j)
                    self._publish_wake.set()
                else:
                    self._done(j.part, j.offset)

    async def _publish_loop(self) -> None:
        assert self._publisher is not None
        publisher = self._publisher
        while True:
            await self._publish_wake.wait()
            self._publish_wake.clear()
            while self._publish_q:
                async with self._publish_lock:
                    jobs: list[_Job] = []
                    n = 0
                    while self._publish_q and n < _PUBLISH_ROUND:
                        j = self._publish_q.popleft()
                        if not j.part.active:  # revoked: its records stay for the next owner
                            publisher.release(j.entries or ())
                            continue
                        jobs.append(j)
                        n += len(j.entries or ())
                    entries = [e for j in jobs for e in j.entries or ()]
                    await publisher.produce(entries)
                    for j in jobs:
                        self._done(j.part, j.offset)
                    await publisher.delete(entries)

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.commit_interval_s)
            await self._commit()
            self._update_lag()

    async def _commit(self) -> None:
        """Commit every partition's contiguous done prefix (never an offset still in flight)."""
        consumer = self._consumer
        if consumer is None:
            return
        async with self._commit_lock:
            offsets = self.tracker.committable()
            if not offsets:
                return
            try:
                await consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                # a rebalance is under way: the revoke handler commits what is done
                log.info("commit skipped during a rebalance (%r)", exc)
                return
            except KafkaError as exc:
                metrics.RETRIES.labels("kafka commit").inc()
                log.warning("offset commit failed (%r); will retry", exc)
                return
            for tp, offset in offsets.items():
                part = self.tracker.get(tp)
                if part is not None:
                    part.committed(offset)

    def _update_lag(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        for tp, part in list(self.tracker.partitions.items()):
            high = consumer.highwater(tp)
            if high is not None:
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(high - (part.last_committed or 0))
