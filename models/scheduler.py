"""Which samples the early-exit engine computes next: admission, cohort placement, cohort policy.

Pure bookkeeping over the waiting queue and the in-flight *cohorts*; no tensors are touched here
(``models.runner`` computes layers), so every decision can be tested on toy objects.

A cohort holds in-flight samples that need the same layer weights next (``Backbone.layer_key``).
For ALBERT (one shared layer) every sample is in one cohort whatever its depth, so samples at
different depths share one layer call, as in ELBERT. For BERT-style backbones (distinct layers) a
cohort is a depth; after its layer runs it merges into the cohort at the next depth.

Modes (the benchmark's baselines are the same engine with features switched off):

* ``static``:  a batch is admitted only when the previous one is done; exited samples keep
  computing until the last one exits (with ``FullDepth``: plain full-depth batching).
* ``compact``: as static, but exited samples leave the batch (no refill).
* ``refill``:  compaction plus refill: freed slots go to waiting samples at once, so the batch
  stays full while work waits (ELBERT's GPU method).

Which cohort runs next is the *policy*:

* ``deepest`` (:data:`DEFAULT_POLICY`): the deepest cohort first; started samples finish soonest,
  which keeps tail latency low under a steady stream.
* ``largest``: the largest cohort, so each layer call does the most work (more throughput when a
  backlog keeps every cohort large).

Either way a cohort passed over for ``num_layers`` steps runs next, so none starves.

Admission is length-aware: the oldest waiting sample is always admitted, and the other free slots
go to the waiting samples (within a look-ahead window) whose lengths are closest to it, so little
compute goes to padding. Padding never changes results (mask-aware attention and pooling).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

MODES = ("static", "compact", "refill")
POLICIES = ("largest", "deepest")
#: The engine's and the settings' default policy (``pipeline.settings`` reads it from here).
DEFAULT_POLICY = "deepest"


class Waiting(Protocol):
    """A queued sample: its token ids (only their count matters here)."""

    ids: list[int]


class Slot(Protocol):
    """A cohort as the scheduler sees it: the weights it needs next, its size, steps passed over."""

    key: int
    waited: int

    @property
    def size(self) -> int: ...


R = TypeVar("R", bound=Waiting)
C = TypeVar("C", bound=Slot)


def take_closest(waiting: deque[R], n: int, lookahead: int) -> list[R]:
    """Pop the oldest waiting sample plus the ``n - 1`` closest to it in length among the next
    ``n * lookahead``; the rest go back in their order. Returned in queue order."""
    if n >= len(waiting) or lookahead <= 1:
        return [waiting.popleft() for _ in range(min(n, len(waiting)))]
    window = [waiting.popleft() for _ in range(min(len(waiting), n * lookahead))]
    head_len = len(window[0].ids)
    rest = sorted(range(1, len(window)), key=lambda i: (abs(len(window[i].ids) - head_len), i))
    chosen = {0, *rest[: n - 1]}
    waiting.extendleft(reversed([r for i, r in enumerate(window) if i not in chosen]))
    return [r for i, r in enumerate(window) if i in chosen]


def survivors(n: int, exiting: list[int]) -> list[int]:
    """Rows of an n-row cohort that keep computing after ``exiting`` rows left, in order."""
    gone = set(exiting)
    return [i for i in range(n) if i not in gone]


def length_order(lengths: list[int]) -> list[int]:
    """Row order that sorts a cohort by length (stable), so chunks are contiguous and homogeneous."""
    return sorted(range(len(lengths)), key=lengths.__getitem__)


def chunk_bounds(lengths: list[int], chunk: int | None) -> list[tuple[int, int, int | None]]:
    """(start, end, width) per layer call over a cohort whose rows are sorted by length.

    Without ``chunk``, or when the cohort fits one chunk: one call over all rows at the cohort's
    padded width (width None). Otherwise calls of ``chunk`` rows, each trimmed to its own longest
    row: on CPU the cost grows with padded tokens.
    """
    n = len(lengths)
    if not chunk or n <= chunk:
        return [(0, n, None)]
    return [(s, min(n, s + chunk), max(lengths[s : s + chunk])) for s in range(0, n, chunk)]


class Scheduler(Generic[R, C]):
    """The waiting queue, the in-flight cohorts, and the decisions over them.

    Not thread-safe: the engine holds its lock around every call that touches ``waiting``.
    """

    def __init__(self, mode: str, policy: str, max_batch: int, lookahead: int, num_layers: int,
                 shared: bool) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.mode = str(mode)  # a str-valued enum (settings) becomes its plain value
        self.policy = str(policy)
        self.max_batch = max_batch
        self.lookahead = lookahead
        self.num_layers = num_layers
        self.shared = shared  # one weight set for every depth: one cohort whatever the depth
        self.waiting: deque[R] = deque()
        self.cohorts: list[C] = []

    @property
    def in_flight(self) -> int:
        return sum(c.size for c in self.cohorts)

    @property
    def busy(self) -> bool:
        """True while anything waits or is in flight."""
        return bool(self.waiting or self.cohorts)

    # ------------------------------------------------------------------ admission
    def free_slots(self) -> int:
        """How many waiting samples may be admitted now: refill fills every free slot; static and
        compact admit a whole batch only when nothing is in flight."""
        if self.mode == "refill":
            return self.max_batch - self.in_flight
        return self.max_batch if not self.cohorts else 0

    def take(self) -> list[R]:
        """The waiting samples to admit now (possibly none), removed from the queue."""
        free = self.free_slots()
        if free <= 0 or not self.waiting:
            return []
        return take_closest(self.waiting, free, self.lookahead)

    # ------------------------------------------------------------------ cohorts
    def add(self, cohort: C, merge: Callable[[C, C], C]) -> None:
        """Place a cohort, merged (``merge(existing, cohort)``) into one that needs the same weights."""
        for i, other in enumerate(self.cohorts):
            if other.key == cohort.key:
                self.cohorts[i] = merge(other, cohort)
                return
        self.cohorts.append(cohort)

    def pick(self) -> C:
        """Remove and return the cohort to run next; every other cohort has waited one more step."""
        starving = [c for c in self.cohorts if c.waited >= self.num_layers]
        if starving:
            chosen = max(starving, key=lambda c: c.waited)
        elif self.policy == "largest":
            chosen = max(self.cohorts, key=lambda c: (c.size, c.key))
        else:
            chosen = max(self.cohorts, key=lambda c: (c.key, c.size))
        self.cohorts.remove(chosen)
        for c in self.cohorts:
            c.waited += 1
        return chosen

    def after_layer(self, cohort: C, merge: Callable[[C, C], C]) -> None:
        """Put back a cohort whose layer ran and that still has rows to compute: it now needs the
        next layer's weights (0 for a shared layer, else the uniform depth reached) and has not
        waited (in static mode there is only ever one cohort, so its count is left alone)."""
        cohort.key = 0 if self.shared else cohort.key + 1
        if self.mode != "static":
            cohort.waited = 0
        self.add(cohort, merge)

    def drain(self) -> tuple[list[R], list[C]]:
        """Empty the queue and the in-flight set (the engine failed); returns what they held."""
        waiting, cohorts = list(self.waiting), list(self.cohorts)
        self.waiting.clear()
        self.cohorts.clear()
        return waiting, cohorts
