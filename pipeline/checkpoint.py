"""When an input offset may be committed: the one owner of the worker's delivery guarantee.

The invariant
-------------
**An input offset is committed only after Redis applied its message and Kafka acknowledged
every output record of it.** "Applied" means the commit script (:mod:`pipeline.applier`) wrote
the document, found it applied before, or wrote its dead letter; the script also wrote the
message's output records to its partition's outbox (:mod:`pipeline.outbox`) in the same atomic
step. Each offset moves through :class:`Checkpoint`'s verbs in this order::

    track ──> apply (script; entries claimed and queued) ──> publish (produce, acks) ──> done ──> commit
       └──> duplicate (applied before it was scored: nothing to apply or publish) ──────┘

and a partition's commit point is the end of its contiguous done prefix
(:class:`pipeline.offsets.PartitionOffsets`), so a commit never passes a message in flight.

Crash points (SIGKILL anywhere)
-------------------------------
* before the script: nothing happened; the message is re-delivered and applied.
* after the script, before/while producing: the entries are in the outbox. On (re)assignment,
  before consuming, :meth:`Checkpoint.assign` recovers every entry of the partition's outbox
  (:meth:`OutboxPublisher.recover`: scan each target partition from the smallest ``scan_from``
  to its end collecting effect-id headers, produce only the entries not found, XDEL all of
  them). The re-delivered message is ``dup`` in the script: applied once.
* after the acks, before XDEL: recovery finds every record in Kafka and only deletes entries.
* after XDEL, before the offset commit: re-delivery -> ``dup``; nothing is written twice.
* a Redis call whose outcome is unknown (connection lost mid-script): the applier invalidates
  its cached states, recovers the affected outboxes (as above) and retries; already-applied
  documents come back ``dup`` with their records already published.
* a produce whose outcome is unknown (timeout): before retrying, the publisher scans for the
  effect ids, as in recovery, and re-produces only what is missing.

Within one process
------------------
Entries are *claimed* before they are produced: fresh ones by the applier right after its script
wrote them, old ones by recovery; a recovery skips claimed entries. Two locks keep the steps
apart: the *apply lock* is held from a script call until its entries are queued for publishing,
and by recovery, so a recovery never sees entries a running script wrote but nobody claimed yet;
the *publish lock* is held by a produce round until its offsets are done. :meth:`Checkpoint.revoke`
takes both, so no script call or produce for a revoked partition outlives the revocation; the
records of work it abandons are released for the next owner (maybe this process, right after)
to recover.

Limits: a worker stalled past the session timeout while the group moved its partition on (a
"zombie") can race the new owner on the entries it already held -- Kafka fences zombies with
producer epochs, which Tansu lacks; consumers can drop repeats by the effect-id header.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from pipeline import metrics
from pipeline.applier import Applier, Outcome, Work
from pipeline.keys import Keys
from pipeline.offsets import OffsetTracker, PartitionOffsets
from pipeline.outbox import OutboxEntry, OutboxPublisher

__all__ = ["Checkpoint", "Job", "Part"]

log = logging.getLogger(__name__)

#: A partition during one assignment; doubles as the ownership token of work in flight.
Part = PartitionOffsets[TopicPartition]

_PUBLISH_ROUND = 2048  # most records per produce round


@dataclass(slots=True)
class Job:
    """A work item on its way to Redis and Kafka; ``part``/``offset`` identify the input message."""

    part: Part
    offset: int
    work: Work
    ingested_at: int
    entries: list[OutboxEntry] | None = None


class Checkpoint:
    """Tracks every fetched offset of one consumer and commits only what the invariant allows.

    Args:
        consumer: the group consumer whose offsets are committed.
        applier: the commit point (its script calls run under the apply lock).
        publisher: the outbox publisher (produces, deletes, releases claims).
        keys: Redis key names (outbox streams).
        max_outstanding: most tracked-but-not-done messages; :attr:`room` is set below it.
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        applier: Applier,
        publisher: OutboxPublisher,
        keys: Keys,
        *,
        max_outstanding: int,
    ) -> None:
        self.consumer = consumer
        self.applier = applier
        self.publisher = publisher
        self.keys = keys
        self.max_outstanding = max_outstanding
        self.tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        #: set while fewer than ``max_outstanding`` messages are in flight (back-pressure)
        self.room = asyncio.Event()
        self.room.set()
        self._apply_lock = asyncio.Lock()
        self._publish_lock = asyncio.Lock()
        self._commit_lock = asyncio.Lock()
        self._publish_q: deque[Job] = deque()
        self._publish_wake = asyncio.Event()

    @property
    def outstanding(self) -> int:
        """Tracked messages not yet done (applied and published)."""
        return self.tracker.outstanding

    # ------------------------------------------------------------------ assignment

    async def assign(self, tps: Sequence[TopicPartition]) -> int:
        """Track ``tps`` afresh from their committed offsets, then publish what earlier owners (or
        a crashed run of ours) left in their outboxes -- before any of their messages is fetched.
        Returns how many outbox entries were recovered."""
        for tp in tps:
            part = self.tracker.assign(tp)
            committed = await self.consumer.committed(tp)
            if committed is not None:
                part.committed(committed)
        async with self._apply_lock:
            n = await self.publisher.recover(self.keys.outbox(tp.topic, tp.partition) for tp in tps)
        self.room.set()
        return n

    async def revoke(self, tps: Iterable[TopicPartition], drain: Callable[[Callable[[], int]], Awaitable[bool]]) -> None:
        """Give up ``tps``: ``drain(outstanding)`` waits (bounded) for their work in flight; if it
        all finished, commit it. Then stop tracking them, wait for any script call or produce
        still running, and release the records of abandoned work for the next owner."""
        tps = list(tps)
        parts = [p for tp in tps if (p := self.tracker.get(tp)) is not None]
        if not parts:
            return
        drained = await drain(lambda: sum(p.outstanding for p in parts))
        if drained:
            await self.commit()
        log.info("revoked %d partitions (%s)", len(parts), "drained and committed" if drained else "abandoned")
        for tp in tps:
            self.tracker.revoke(tp)
            with contextlib.suppress(KeyError):  # not ours any more: its lag is the new owner's to report
                metrics.CONSUMER_LAG.remove(tp.topic, str(tp.partition))
        # apply() queues a call's records before it releases the apply lock, so once both locks
        # are held every record of a revoked partition is in the publish queue or published.
        async with self._apply_lock, self._publish_lock:
            for j in [j for j in self._publish_q if not j.part.active]:
                self._publish_q.remove(j)
                self.publisher.release(j.entries or ())

    # ------------------------------------------------------------------ one message's way

    def track(self, tp: TopicPartition, offset: int) -> Part | None:
        """A fetched message; returns its partition's token, or None if ``tp`` was revoked
        meanwhile (the message is then not ours to process)."""
        part = self.tracker.get(tp)
        if part is not None:
            part.add(offset)
        return part

    def duplicate(self, part: Part, offset: int) -> None:
        """A message found applied before (same id and text) ahead of scoring: its outputs were
        published by whoever applied it, so it is done."""
        self._done(part, offset)

    async def apply(self, jobs: Sequence[Job]) -> list[tuple[Job, Outcome]]:
        """Apply ``jobs`` (one script round; work of revoked partitions is dropped unapplied, the
        new owner re-reads it). Jobs with records are queued for :meth:`publish`; the others
        are done. Returns each applied job with its outcome."""
        jobs = [j for j in jobs if j.part.active]
        if not jobs:
            return []
        async with self._apply_lock:
            outcomes = await self.applier.apply([j.work for j in jobs])
            for j, o in zip(jobs, outcomes, strict=True):
                if o.entries:
                    j.entries = o.entries
                    self._publish_q.append(j)
                    self._publish_wake.set()
                else:
                    self._done(j.part, j.offset)
        return list(zip(jobs, outcomes, strict=True))

    async def publish(self) -> None:
        """Forever: produce the queued records in rounds; once Kafka acknowledged a round, its
        offsets are done and its outbox entries deleted."""
        while True:
            await self._publish_wake.wait()
            self._publish_wake.clear()
            while self._publish_q:
                async with self._publish_lock:
                    await self._publish_round()

    async def _publish_round(self) -> None:
        jobs: list[Job] = []
        n = 0
        while self._publish_q and n < _PUBLISH_ROUND:
            j = self._publish_q.popleft()
            if not j.part.active:  # revoked: its records stay for the next owner
                self.publisher.release(j.entries or ())
                continue
            jobs.append(j)
            n += len(j.entries or ())
        entries = [e for j in jobs for e in j.entries or ()]
        await self.publisher.produce(entries)
        for j in jobs:
            self._done(j.part, j.offset)
        await self.publisher.delete(entries)

    def _done(self, part: Part, offset: int) -> None:
        part.done(offset)
        # counting the outstanding messages walks every partition: only while the fetcher waits
        if not self.room.is_set() and self.outstanding < self.max_outstanding:
            self.room.set()

    # ------------------------------------------------------------------ commits

    async def commit(self) -> None:
        """Commit every partition's contiguous done prefix (never an offset still in flight)."""
        async with self._commit_lock:
            offsets = self.tracker.committable()
            if not offsets:
                return
            try:
                await self.consumer.commit(offsets)
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

    def update_lag(self) -> None:
        """Set the consumer-lag gauge of every tracked partition (high watermark - committed)."""
        for tp, part in list(self.tracker.partitions.items()):
            high = self.consumer.highwater(tp)
            if high is not None:
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(high - (part.last_committed or 0))

    async def drained(self) -> bool:
        """True when every message in the assigned partitions is done and committed and their
        outboxes are empty."""
        if self.outstanding:
            return False
        assignment = sorted(self.consumer.assignment())
        if not assignment:
            return False
        ends = await self.publisher.end_offsets(assignment)
        for tp in assignment:
            if ((await self.consumer.committed(tp)) or 0) < ends[tp]:
                return False
        redis = self.publisher.redis
        lengths = await asyncio.gather(*(redis.xlen(self.keys.outbox(tp.topic, tp.partition)) for tp in assignment))
        return not any(lengths)
