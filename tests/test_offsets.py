"""pipeline.offsets: a commit never passes a message in flight."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.offsets import OffsetTracker, PartitionOffsets


def test_commit_point_is_the_end_of_the_done_prefix() -> None:
    p: PartitionOffsets[str] = PartitionOffsets("t-0")
    for o in range(10, 15):
        p.add(o)
    assert p.committable() is None  # nothing done yet
    p.done(11)
    assert p.committable() is None  # 10 still in flight
    p.done(10)
    assert p.committable() == 12
    p.done(13)
    assert p.committable() == 12  # 12 in flight: 13 waits behind it
    p.committed(12)
    assert p.committable() is None  # nothing new since the commit
    p.done(12)
    assert p.committable() == 14
    p.done(14)
    assert p.committable() == 15 and p.outstanding == 0


def test_gaps_in_offsets_are_fine() -> None:
    p: PartitionOffsets[str] = PartitionOffsets("t-0")
    for o in (3, 7, 8, 20):  # compacted topic: offsets with holes
        p.add(o)
    p.done(7)
    p.done(3)
    assert p.committable() == 8
    p.done(20)
    p.done(8)
    assert p.committable() == 21


def test_offsets_must_ascend() -> None:
    p: PartitionOffsets[str] = PartitionOffsets("t-0")
    p.add(5)
    with pytest.raises(ValueError):
        p.add(5)
    p.done(5)
    with pytest.raises(ValueError):
        p.add(4)


def test_found_committed_offset_is_not_recommitted() -> None:
    p: PartitionOffsets[str] = PartitionOffsets("t-0")
    p.committed(100)  # the group had committed 100 before we got the partition
    p.add(100)
    p.done(100)
    assert p.committable() == 101
    p.committed(101)
    assert p.last_committed == 101
    p.committed(50)  # an older commit landing late never moves the point back
    assert p.last_committed == 101


def test_tracker_revoke_detaches_and_reassign_starts_fresh() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    a = t.assign("a")
    b = t.assign("b")
    a.add(1)
    b.add(1)
    b.done(1)
    assert t.outstanding == 1
    assert t.committable() == {"b": 2}
    revoked = t.revoke("a")
    assert revoked is a and not a.active
    a.done(1)  # a completion arriving after revocation is harmless
    assert t.committable() == {"b": 2}
    assert t.revoke("a") is None
    a2 = t.assign("a")
    assert a2 is not a and a2.active and a2.outstanding == 0
    assert t.get("a") is a2
    a3 = t.assign("a")  # re-assigning without a revoke also detaches the old object
    assert not a2.active and a3.active


@given(st.lists(st.integers(0, 3), min_size=1, max_size=60), st.randoms(use_true_random=False))
def test_commit_never_passes_an_unfinished_offset(gaps: list[int], rnd: random.Random) -> None:
    offsets = []
    o = 0
    for g in gaps:
        o += g + 1
        offsets.append(o)
    p: PartitionOffsets[str] = PartitionOffsets("t-0")
    for o in offsets:
        p.add(o)
    order = offsets[:]
    rnd.shuffle(order)
    finished: set[int] = set()
    for o in order:
        p.done(o)
        finished.add(o)
        c = p.committable()
        if c is not None:
            assert all(x in finished for x in offsets if x < c), "committed past an unfinished offset"
            # and it is the furthest such point
            nxt = [x for x in offsets if x >= c]
            assert not nxt or nxt[0] not in finished
            p.committed(c)
    assert p.committable() is None and p.last_committed == offsets[-1] + 1
