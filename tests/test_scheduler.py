"""The engine's scheduling decisions on toy requests and cohorts (no tensors, no model)."""

from __future__ import annotations

import inspect
from collections import deque
from dataclasses import dataclass

import pytest

from models.scheduler import (
    DEFAULT_POLICY,
    Scheduler,
    chunk_bounds,
    length_order,
    survivors,
    take_closest,
)


@dataclass
class Req:
    name: str
    length: int

    @property
    def ids(self) -> list[int]:
        return [0] * self.length


@dataclass
class Toy:
    key: int
    n: int
    waited: int = 0

    @property
    def size(self) -> int:
        return self.n


def merge(a: Toy, b: Toy) -> Toy:
    return Toy(a.key, a.n + b.n, max(a.waited, b.waited))


def queue(*lengths: int) -> deque[Req]:
    return deque(Req(f"r{i}", n) for i, n in enumerate(lengths))


def test_take_closest_admits_the_oldest_and_its_nearest_lengths_and_keeps_the_rest_in_order():
    waiting = queue(10, 50, 12, 90, 9, 11)
    taken = take_closest(waiting, 3, lookahead=2)  # window: the first 6
    assert [r.name for r in taken] == ["r0", "r4", "r5"]  # 10, then 9 and 11 (distance 1) before 12 (2)
    assert [r.name for r in waiting] == ["r1", "r2", "r3"]


def test_take_closest_without_lookahead_or_with_room_for_all_is_fifo():
    waiting = queue(10, 50, 12)
    assert [r.name for r in take_closest(waiting, 2, lookahead=1)] == ["r0", "r1"]
    assert [r.name for r in take_closest(waiting, 5, lookahead=4)] == ["r2"]
    assert not waiting


def test_take_closest_only_looks_within_the_window():
    waiting = queue(10, 80, 70, 60, 11)
    taken = take_closest(waiting, 2, lookahead=2)  # window of 4: r4 (length 11) is outside it
    assert [r.name for r in taken] == ["r0", "r3"]
    assert [r.name for r in waiting] == ["r1", "r2", "r4"]


@pytest.mark.parametrize(("mode", "in_flight", "free"), [
    ("refill", 0, 8), ("refill", 5, 3), ("compact", 0, 8), ("compact", 5, 0), ("static", 1, 0),
])
def test_free_slots_by_mode(mode, in_flight, free):
    s: Scheduler[Req, Toy] = Scheduler(mode, "largest", 8, 4, num_layers=4, shared=False)
    if in_flight:
        s.add(Toy(0, in_flight), merge)
    assert s.free_slots() == free
    s.waiting.extend(queue(*[5] * 20))
    assert len(s.take()) == free
    assert len(s.waiting) == 20 - free


def test_add_merges_cohorts_that_need_the_same_weights():
    s: Scheduler[Req, Toy] = Scheduler("refill", "largest", 64, 4, num_layers=6, shared=False)
    s.add(Toy(2, 3), merge)
    s.add(Toy(0, 4), merge)
    s.add(Toy(2, 5, waited=2), merge)
    assert s.cohorts == [Toy(2, 8, 2), Toy(0, 4)]
    assert s.in_flight == 12 and s.busy


@pytest.mark.parametrize(("policy", "first"), [("largest", 1), ("deepest", 3)])
def test_pick_follows_the_policy_and_ages_the_rest(policy, first):
    s: Scheduler[Req, Toy] = Scheduler("refill", policy, 64, 4, num_layers=6, shared=False)
    for c in (Toy(1, 10), Toy(3, 2), Toy(2, 4)):
        s.add(c, merge)
    chosen = s.pick()
    assert chosen.key == first and chosen not in s.cohorts
    assert all(c.waited == 1 for c in s.cohorts)


def test_a_cohort_passed_over_for_num_layers_steps_runs_next():
    s: Scheduler[Req, Toy] = Scheduler("refill", "largest", 64, 4, num_layers=3, shared=False)
    s.add(Toy(0, 1), merge)  # small: "largest" keeps passing it over
    for _ in range(3):
        s.add(Toy(5, 50), merge)
        assert s.pick().key == 5
    assert s.cohorts[0].waited == 3
    s.add(Toy(5, 50), merge)
    assert s.pick().key == 0  # starving: it goes first despite its size


@pytest.mark.parametrize(("mode", "shared", "key", "waited"), [
    ("refill", False, 3, 0), ("refill", True, 0, 0), ("static", False, 3, 2),
])
def test_after_layer_moves_a_cohort_to_its_next_weights(mode, shared, key, waited):
    s: Scheduler[Req, Toy] = Scheduler(mode, "deepest", 64, 4, num_layers=6, shared=shared)
    s.after_layer(Toy(2 if not shared else 0, 4, waited=2), merge)
    assert s.cohorts == [Toy(key, 4, waited)]


def test_drain_empties_queue_and_cohorts():
    s: Scheduler[Req, Toy] = Scheduler("refill", "deepest", 4, 4, num_layers=6, shared=False)
    s.waiting.extend(queue(1, 2))
    s.add(Toy(0, 3), merge)
    waiting, cohorts = s.drain()
    assert [r.name for r in waiting] == ["r0", "r1"] and cohorts == [Toy(0, 3)]
    assert not s.busy


def test_row_helpers():
    assert survivors(5, [1, 3]) == [0, 2, 4]
    assert length_order([7, 3, 5, 3]) == [1, 3, 2, 0]
    assert chunk_bounds([1, 2, 3], None) == [(0, 3, None)]
    assert chunk_bounds([1, 2, 3], 3) == [(0, 3, None)]
    assert chunk_bounds([1, 2, 3, 8, 9], 2) == [(0, 2, 2), (2, 4, 8), (4, 5, 9)]


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="mode"):
        Scheduler("dynamic", "largest", 4, 4, 6, False)
    with pytest.raises(ValueError, match="policy"):
        Scheduler("refill", "random", 4, 4, 6, False)
    with pytest.raises(ValueError, match="max_batch"):
        Scheduler("refill", "largest", 0, 4, 6, False)


def test_one_default_policy_for_the_engine_and_the_settings():
    from models.engine import EarlyExitEngine
    from pipeline.settings import Settings

    assert inspect.signature(EarlyExitEngine).parameters["policy"].default == DEFAULT_POLICY
    assert Settings().engine_policy == DEFAULT_POLICY


def test_str_valued_enums_are_accepted_for_mode_policy_and_device():
    from enum import StrEnum

    from tinymodels import tiny_classifier

    from models.engine import EarlyExitEngine
    from models.exits import FullDepth

    Mode = StrEnum("Mode", {"REFILL": "refill"})
    Policy = StrEnum("Policy", {"LARGEST": "largest"})
    Device = StrEnum("Device", {"CPU": "cpu"})
    engine = EarlyExitEngine(tiny_classifier("bert"), FullDepth(), mode=Mode.REFILL, policy=Policy.LARGEST,
                             device=Device.CPU)
    assert (engine.mode, engine.policy, engine.device.type) == ("refill", "largest", "cpu")
    assert type(engine.mode) is str and len(engine.run([[101, 7, 102]])) == 1
