"""The streaming driver: Kafka in -> parse -> dedupe -> link -> micro-batch -> engine -> aggregate
-> Redis (commit point) + outbox -> Kafka out -> input offset commit.

The worker owns the lifecycle (start, signals, shutdown deadlines, rebalances), fetching and the
wiring; each message is processed by :mod:`pipeline.process`, applied by
:mod:`pipeline.applier`, published by :mod:`pipeline.outbox`, and committed when
:class:`pipeline.checkpoint.Checkpoint` allows it. The consumer is plain aiokafka (``getmany``,
``enable_auto_commit=False``): exactly-once needs the commit under the pipeline's control while
several batches are in flight, which a stream framework that acks each event as its agent moves
past it does not give.

Flow and back-pressure
----------------------
Five asyncio tasks share one event loop; the engine runs the model in its own thread::

    fetch ──> batcher ──> score (<= max_inflight_batches concurrent engine.predict calls)
      │                        │
      └─ bad / duplicate_id ──>┴──> apply (Checkpoint.apply: one commit script per round)
                                          └──> publish (Checkpoint.publish: produce, acks) ──> commit

* ``fetch`` polls only while fewer than ``max_outstanding`` messages are fetched-but-not-done,
  so a slow engine or an unreachable Redis/Kafka stops consumption instead of growing memory.
* Redis or Kafka unavailable: every call retries with capped exponential backoff
  (:mod:`pipeline.retry`); nothing downstream of a failed step is done, so nothing unsent is
  ever committed.
* SIGTERM/SIGINT: stop fetching, drain what is in flight (bounded by ``drain_timeout_s``), commit,
  close; the whole shutdown ends within ``stop_timeout_s`` (a client step that overruns is
  abandoned, not awaited), inside an orchestrator's grace period. A rebalance drains the revoked
  partitions the same way before giving them up; work that cannot finish in time is abandoned
  uncommitted (its outbox entries stay in Redis and the next owner recovers them before it
  consumes).
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import io
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from pipeline import metrics
from pipeline.aggregate import Aggregator
from pipeline.applier import Applier, Rejected, Scored
from pipeline.batcher import MicroBatcher
from pipeline.checkpoint import Checkpoint, Job, Part
from pipeline.connections import kafka_consumer, kafka_producer, redis_client
from pipeline.infra import create_topics
from pipeline.keys import Keys, text_hash
from pipeline.linking import Linker, default_linker
from pipeline.outbox import OutboxPublisher
from pipeline.process import (
    DUPLICATE_ID,
    dedupe,
    document,
    duplicate_id_detail,
    link,
    model_version,
    parse,
    split_answers,
    target_asks,
    target_scores,
)
from pipeline.retry import retry
from pipeline.schemas import DeadLetter, InputMessage, ParseError, TickerLink
from pipeline.settings import Settings, redact_url

if TYPE_CHECKING:
    from models.engine import Engine

__all__ = ["Worker", "tune_gc", "wall_ms"]

log = logging.getLogger(__name__)

#: Of ``settings.stop_timeout_s``, what a shutdown's drain leaves to committing and closing
#: clients: a quarter, at most this.
CLOSE_RESERVE_S = 10.0
_APPLY_ROUND = 512  # most work items per apply script call
# The outbox sends a round's records of one partition as record batches of up to this size: fewer,
# larger produce requests (half of Kafka's default message.max.bytes, so a broker accepts them).
_PRODUCE_BATCH_BYTES = 512 * 1024


# The worker allocates dozens of short-lived objects per message: with CPython's default
# thresholds (700, 10, 10) a young collection runs every few messages and a full one, which walks
# every tracked object (the model's and the universe's included), every few hundred.
_GC_THRESHOLDS = (20_000, 50, 1_000)


def tune_gc() -> None:
    """Set up this process's garbage collector for a long-running worker: what exists now (the
    model, the company universe, the linker's tables) is frozen out of collections for good, and
    collections run on larger allocation counts. Process-wide, so only for a process that is the
    worker (:meth:`Worker.run` with ``owns_process``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)


def wall_ms() -> int:
    """Wall clock, epoch milliseconds."""
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class _Msg:
    """A parsed input message on its way to the engine."""

    part: Part
    offset: int
    raw: bytes
    ingested_at: int
    msg: InputMessage
    hash: str
    links: list[TickerLink]


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
        settings: everything tunable (topics, Redis, batching, the flow's limits, aggregation).
        engine: a model engine to share (tests); default: built from ``settings`` and closed
            at the end. A given engine is started if needed and left running.
        target_engine: the target model's engine, likewise (used for texts that link two or
            more tickers); default: built when ``settings.target_model`` names one.
        clock: wall clock in epoch ms (injected by tests).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        target_engine: Engine | None = None,
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        self.settings = s = settings
        self.engine = engine
        self._own_engine = engine is None
        self.target_engine = target_engine
        self._own_target_engine = target_engine is None
        # settings.tagger replaces it at start with a tagger-backed linker (pipeline.inference)
        self.linker: Linker = default_linker()
        self.max_outstanding = s.max_outstanding or 16 * s.max_batch
        self.clock = clock
        self.input_topics = {s.topic(s.news_topic): "news", s.topic(s.tweets_topic): "tweet"}
        self.documents_topic = s.topic(s.documents_topic)
        self.scores_topic = s.topic(s.scores_topic)
        self.dlq_topic = s.topic(s.dlq_topic)
        self.keys = Keys(s.namespace)

        self.batcher: MicroBatcher[_Msg] = MicroBatcher(s.max_batch, s.max_wait_ms)
        self.ready = asyncio.Event()  # set once partitions are assigned and recovered
        self.counts: dict[str, int] = {"applied": 0, "duplicates": 0, "dead_lettered": 0}
        self._stop = asyncio.Event()
        self._assigned = asyncio.Event()  # cleared while a rebalance revokes partitions
        self._apply_q: asyncio.Queue[Job] = asyncio.Queue()
        self._batch_slots = asyncio.Semaphore(s.max_inflight_batches)
        self._score_tasks: set[asyncio.Task[None]] = set()
        self._failed: BaseException | None = None
        self._stop_by = float("inf")  # monotonic deadline of the whole shutdown, once it has begun
        self._abandoned: list[asyncio.Task[Any]] = []
        self._redis: aioredis.Redis | None = None
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._publisher: OutboxPublisher | None = None
        self._applier: Applier | None = None
        self._checkpoint: Checkpoint | None = None

    # ------------------------------------------------------------------ public API

    def stop(self) -> None:
        """Ask :meth:`run` to stop: no more fetching, drain, commit, close."""
        self._stop.set()

    @property
    def outstanding(self) -> int:
        """Fetched messages not yet fully done (applied, published, ready to commit)."""
        return self._checkpoint.outstanding if self._checkpoint is not None else 0

    async def drained(self) -> bool:
        """True when every message in the assigned partitions is done and committed and the
        outboxes are empty (the demo's ``--until-drained``)."""
        return self._checkpoint is not None and self.ready.is_set() and await self._checkpoint.drained()

    async def run(self, *, owns_process: bool = False) -> None:
        """Run until :meth:`stop` (or SIGTERM/SIGINT with ``owns_process``), then shut down
        gracefully. Raises the first fatal error of any pipeline task after cleaning up.

        ``owns_process``: the worker is what this process is for (``finsent worker``), so it
        may take process-wide settings: the signal handlers, and a garbage collector tuned for
        it (see :func:`tune_gc`)."""
        loop = asyncio.get_running_loop()
        if owns_process:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
            loop.add_signal_handler(signal.SIGUSR1, self._dump_stacks)
            # the process's own stderr (fd 2): a test runner's replacement has no file descriptor
            faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True, chain=True)
        try:
            await self._start()
            if owns_process:
                tune_gc()
            await self._serve()
        finally:
            await self._close()
            if owns_process:
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
        if s.create_missing_topics:
            await retry(lambda: create_topics(s, all_topics, s.partitions), "create topics")
        self._producer = kafka_producer(
            s, enable_idempotence=False, acks="all", linger_ms=2, max_batch_size=_PRODUCE_BATCH_BYTES
        )
        await retry(self._producer.start, f"Kafka producer start ({s.bootstrap})")
        self._publisher = OutboxPublisher(
            self._producer, self._redis, s, [self.documents_topic, self.scores_topic, self.dlq_topic]
        )
        await self._publisher.start()
        self._applier = applier = Applier(
            self._redis,
            self.keys,
            Aggregator(s.half_life_s, s.lateness_s, s.novelty_weighting),
            self._publisher,
            documents_topic=self.documents_topic,
            scores_topic=self.scores_topic,
            dlq_topic=self.dlq_topic,
            history_len=s.history_len,
            doc_ttl_s=s.doc_ttl_s,
            clock=self.clock,
            novelty_window_s=s.novelty_window_s if s.novelty else None,
            lateness_s=s.lateness_s,
        )
        if self.engine is None:
            from pipeline.inference import build_engine

            self.engine = await asyncio.to_thread(build_engine, s)
        self.engine.start()
        if self.target_engine is None and s.target_model:
            from pipeline.inference import build_target_engine

            self.target_engine = await asyncio.to_thread(build_target_engine, s)
        if self.target_engine is not None:
            self.target_engine.start()
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
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=max(100, s.session_timeout_ms // 3),
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            fetch_min_bytes=s.fetch_min_bytes,
        )
        self._checkpoint = Checkpoint(
            self._consumer, applier, self._publisher, self.keys, max_outstanding=self.max_outstanding
        )
        self._consumer.subscribe(list(self.input_topics), listener=_Rebalance(self))
        await retry(self._consumer.start, f"Kafka consumer start ({s.bootstrap})")
        log.info(
            "worker started: group %s, topics %s -> %s, %s, %s; Redis %s; model %s",
            s.group_id, ", ".join(self.input_topics), self.documents_topic, self.scores_topic,
            self.dlq_topic, redact_url(s.redis_url), self.engine.model.config.version,
        )  # fmt: skip

    async def _serve(self) -> None:
        assert self._checkpoint is not None
        tasks = {
            asyncio.create_task(self._fetch_loop(), name="fetch"),
            asyncio.create_task(self._batch_loop(), name="batch"),
            asyncio.create_task(self._apply_loop(), name="apply"),
            asyncio.create_task(self._checkpoint.publish(), name="publish"),
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
        pending = [*tasks, stopper, *self._score_tasks]
        for t in pending:
            t.cancel()
        # bounded like every other shutdown step: a task that does not finish its cancellation
        # (a client call that ignores it) is named and abandoned, not awaited past the deadline
        finished, stuck = await asyncio.wait(pending, timeout=max(1.0, self._stop_by - time.monotonic()))
        for t in finished:  # what they raised while being cancelled is of no use now; mark it seen
            if not t.cancelled():
                t.exception()
        if stuck:
            self._abandoned.extend(stuck)
            log.warning("tasks still running after cancellation, abandoned: %s",
                        ", ".join(sorted(t.get_name() for t in stuck)))
        # During a rebalance a commit can wait on the group; what it would have committed is
        # re-delivered to the next owner and de-duplicated, so shutdown need not hang on it.
        await self._bounded(self._checkpoint.commit(), "final offset commit (the next owner re-reads and de-duplicates)")

    async def _drain(self, outstanding: Callable[[], int], why: str, until: float = float("inf")) -> bool:
        """Wait until ``outstanding()`` is 0 while the pipeline keeps running; at most
        ``settings.drain_timeout_s``, and never past ``until`` or the shutdown deadline (monotonic)."""
        t0 = time.monotonic()
        deadline = min(self._deadline(self.settings.drain_timeout_s), until)
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
        if self.target_engine is not None and self._own_target_engine:
            await asyncio.to_thread(self.target_engine.close, max(0.5, self._stop_by - time.monotonic()))
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
        assert self._checkpoint is not None

        async def drain(outstanding: Callable[[], int]) -> bool:
            self._assigned.clear()  # fetching more for these partitions would only prolong the drain
            return await self._drain(outstanding, f"revoking {len(revoked)} partitions")

        await self._checkpoint.revoke(revoked, drain)

    async def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        assert self._checkpoint is not None
        n = await self._checkpoint.assign(assigned)
        log.info("assigned %d partitions%s", len(assigned), f"; recovered {n} outbox entries" if n else "")
        self._assigned.set()
        self.ready.set()

    # ------------------------------------------------------------------ the pipeline

    async def _fetch_loop(self) -> None:
        assert self._consumer is not None and self._checkpoint is not None
        room_event = self._checkpoint.room
        delay = 0.1
        while not self._stop.is_set():
            if not self._assigned.is_set():
                await self._assigned.wait()
                continue
            room = self.max_outstanding - self.outstanding
            if room <= 0:
                room_event.clear()
                await room_event.wait()
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
        assert self._applier is not None and self._checkpoint is not None
        now = self.clock()
        fresh: list[_Msg] = []
        for tp, records in batches.items():
            kind = self.input_topics[tp.topic]
            tracked = 0
            for r in records:
                part = self._checkpoint.track(tp, r.offset)
                if part is None:  # revoked while the poll returned
                    break
                tracked += 1
                raw = r.value if r.value is not None else b""
                # ingest time: the record's Kafka timestamp, unless it is in the future (a
                # producer clock ahead of ours, or a producer that stamps event time)
                ingested = r.timestamp if 0 < r.timestamp <= now else now
                try:
                    msg = parse(r.value, now, kind)  # type: ignore[arg-type]
                except ParseError as exc:
                    self._reject(part, r.offset, raw, exc.reason, exc.detail, now, ingested)
                    continue
                fresh.append(_Msg(part, r.offset, raw, ingested, msg, text_hash(msg.text), []))
            metrics.MESSAGES_IN.labels(tp.topic).inc(tracked)
        if not fresh:
            return
        fresh.sort(key=lambda m: m.msg.published_at)  # event-time order across partitions
        stored = await self._applier.seen([(m.msg.id, m.hash) for m in fresh])
        new = [m for m, h in zip(fresh, stored, strict=True) if h is None]
        msgs = [m.msg for m in new]
        # with a tagger, one tagger call for the poll, off the event loop (it runs a model)
        links = link(self.linker, msgs) if self.linker.tagger is None else await asyncio.to_thread(link, self.linker, msgs)
        for m, m_links in zip(new, links, strict=True):
            m.links = m_links
        for m, h in zip(fresh, stored, strict=True):
            seen = dedupe(h, m.hash)
            if seen == "new":
                self.batcher.put(m)
            elif seen == "duplicate":
                metrics.DUPLICATES.labels("precheck").inc()
                self.counts["duplicates"] += 1
                self._checkpoint.duplicate(m.part, m.offset)
            else:
                self._reject(m.part, m.offset, m.raw, DUPLICATE_ID, duplicate_id_detail(m.msg.id), now,
                             m.ingested_at, m.msg.id)

    def _reject(
        self,
        part: Part,
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
        self._apply_q.put_nowait(Job(part, offset, Rejected(dl), ingested_at))

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
        texts = [m.msg.text for m in batch]
        # texts that link two or more tickers: one target model pass per ticker, beside the batch
        asks = [target_asks(m.msg, m.links) for m in batch] if self.target_engine is not None else []
        target_texts = [text for ask in asks for _, text in ask]
        if target_texts:
            assert self.target_engine is not None
            preds, target_preds = await asyncio.gather(self.engine.predict(texts), self.target_engine.predict(target_texts))
        else:
            preds, target_preds = await self.engine.predict(texts), []
        metrics.INFERENCE_LATENCY.observe(time.perf_counter() - t0)
        metrics.BATCH_SIZE.observe(len(batch))
        now = self.clock()
        labels = self.engine.model.labels
        target_labels = labels
        version = self.engine.model.config.version
        if self.target_engine is not None:
            target_labels = self.target_engine.model.labels
            version = model_version(version, self.target_engine.model.config.version)
        if previous is not None:
            await previous
        answers = split_answers(asks, target_preds) if asks else []
        for i, (m, p) in enumerate(zip(batch, preds, strict=True)):
            metrics.EXIT_LAYER.observe(p.exit_layer)
            tp = m.part.tp
            try:
                targets = target_scores(asks[i], answers[i], target_labels) if asks and asks[i] else None
                doc = document(m.msg, m.links, p, labels=labels, model_version=version, ingested_at=m.ingested_at,
                               scored_at=now, languages=self.settings.aggregated_languages, targets=targets)
            except ValueError as exc:  # e.g. NaN probabilities: never let them reach the aggregates
                self._reject(m.part, m.offset, m.raw, "internal", f"scoring: {exc}", now, m.ingested_at, m.msg.id)
                continue
            work = Scored(doc, m.hash, m.raw, tp.topic, tp.partition, m.offset)
            self._apply_q.put_nowait(Job(m.part, m.offset, work, m.ingested_at))

    async def _apply_loop(self) -> None:
        assert self._checkpoint is not None
        while True:
            jobs = [await self._apply_q.get()]
            while len(jobs) < _APPLY_ROUND and not self._apply_q.empty():
                jobs.append(self._apply_q.get_nowait())
            applied = await self._checkpoint.apply(jobs)
            now = self.clock()
            for j, o in applied:
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

    async def _commit_loop(self) -> None:
        assert self._checkpoint is not None
        while True:
            await asyncio.sleep(self.settings.commit_interval_s)
            await self._checkpoint.commit()
            self._checkpoint.update_lag()
