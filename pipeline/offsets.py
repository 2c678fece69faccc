"""Which input offsets may be committed: per-partition *contiguous* completion.

Messages finish out of order (batches run concurrently, a duplicate finishes at once, a document
waits for inference), but a Kafka commit means "everything before this offset is done". So the
commit point of a partition is one past the last offset of the longest done prefix of what was
fetched, never past a message still in flight:

    fetched  10 11 12 13 14
    done      x  x     x        -> commit 12  (12 is in flight; 14 waits for it)

Offsets need not be consecutive integers (compacted topics, transaction markers): only fetched
offsets are tracked, and committing ``last_done + 1`` makes the consumer resume at the next
offset that exists.

Pure bookkeeping, no I/O. One :class:`PartitionOffsets` per partition *per assignment*: a revoked
partition's object is detached (``active`` False), so late completions for it are harmless and
the object doubles as an ownership token for work in flight.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

__all__ = ["OffsetTracker", "PartitionOffsets"]

TP = TypeVar("TP")  # a partition identifier, e.g. aiokafka's TopicPartition


class PartitionOffsets(Generic[TP]):
    """In-flight offsets of one partition during one assignment."""

    def __init__(self, tp: TP) -> None:
        self.tp = tp
        self.active = True
        self._inflight: deque[int] = deque()  # fetched, not yet part of the done prefix; ascending
        self._done: set[int] = set()  # done offsets still waiting for an earlier one
        self._next: int | None = None  # one past the done prefix: what a commit would send
        self._committed: int | None = None  # what was last committed (or found committed)

    def __repr__(self) -> str:
        return (
            f"<PartitionOffsets {self.tp} in_flight={len(self._inflight)} next={self._next} "
            f"committed={self._committed}{'' if self.active else ' revoked'}>"
        )

    @property
    def outstanding(self) -> int:
        """Fetched messages not yet done (including done ones waiting behind an earlier one)."""
        return len(self._inflight)

    def add(self, offset: int) -> None:
        """Track a fetched message. Offsets must arrive in ascending order per partition."""
        if self._inflight and offset <= self._inflight[-1]:
            raise ValueError(f"{self.tp}: offset {offset} fetched after {self._inflight[-1]}")
        if self._next is not None and offset < self._next:
            raise ValueError(f"{self.tp}: offset {offset} is before the done prefix ({self._next})")
        self._inflight.append(offset)

    def done(self, offset: int) -> None:
        """Mark a tracked message finished; advances the commit point over the done prefix."""
        self._done.add(offset)
        inflight, done = self._inflight, self._done
        while inflight and inflight[0] in done:
            o = inflight.popleft()
            done.discard(o)
            self._next = o + 1

    def committable(self) -> int | None:
        """The offset to commit now, or None if nothing new is done since the last commit."""
        if self._next is None or (self._committed is not None and self._next <= self._committed):
            return None
        return self._next

    def committed(self, offset: int) -> None:
        """Record that ``offset`` was committed (by us, or found committed at assignment)."""
        if self._committed is None or offset > self._committed:
            self._committed = offset

    @property
    def last_committed(self) -> int | None:
        return self._committed


class OffsetTracker(Generic[TP]):
    """All assigned partitions of one consumer."""

    def __init__(self) -> None:
        self.partitions: dict[TP, PartitionOffsets[TP]] = {}

    def assign(self, tp: TP) -> PartitionOffsets[TP]:
        """Start tracking ``tp`` afresh (a new assignment never inherits old in-flight state)."""
        old = self.partitions.get(tp)
        if old is not None:
            old.active = False
        part = self.partitions[tp] = PartitionOffsets(tp)
        return part

    def revoke(self, tp: TP) -> PartitionOffsets[TP] | None:
        """Stop tracking ``tp``; its object is detached and returned (None if unknown)."""
        part = self.partitions.pop(tp, None)
        if part is not None:
            part.active = False
        return part

    def get(self, tp: TP) -> PartitionOffsets[TP] | None:
        return self.partitions.get(tp)

    @property
    def outstanding(self) -> int:
        return sum(p.outstanding for p in self.partitions.values())

    def committable(self) -> dict[TP, int]:
        """``{tp: offset}`` for every partition whose commit point advanced."""
        out: dict[TP, int] = {}
        for tp, part in self.partitions.items():
            offset = part.committable()
            if offset is not None:
                out[tp] = offset
        return out
