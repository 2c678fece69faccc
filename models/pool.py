"""Several early-exit engines over one shared model, each serving from its own thread.

On a CPU the encoder's matrices are small (tens of texts x 384), so splitting one operation
across cores (torch's intra-op threads) scales poorly, and its per-operation barrier stalls
whenever another process takes a core for a moment. Single-threaded replicas run whole layer
calls side by side instead (torch releases the GIL inside each operation). ``bench/pipeline.py``
measures both (bench/results/pipeline_cpu.json against pipeline_cpu_1replica.json).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import fields
from typing import Self

from models.engine import Batch, EarlyExitEngine, Prediction
from models.runner import EngineStats


class EnginePool:
    """``n`` engines over one shared model; provides :class:`models.engine.Engine`.

    A submitted batch goes to the replica with the least work; one large enough to fill several
    replicas' batches is split among them (in input order, contiguously) and comes back as one
    result list. ``stats`` sums the replicas'.
    """

    def __init__(self, engines: Sequence[EarlyExitEngine]) -> None:
        if not engines:
            raise ValueError("an engine pool needs at least one engine")
        if len({id(e.model) for e in engines}) != 1:
            raise ValueError("the engines of a pool must share one model")
        self.engines = list(engines)
        first = self.engines[0]
        self.model = first.model
        self.max_batch = first.max_batch
        self.max_queue = first.max_queue
        self.device = first.device
        self._started = False

    @property
    def mode(self) -> str:
        return self.engines[0].mode

    @property
    def policy(self) -> str:
        return self.engines[0].policy

    @property
    def in_flight(self) -> int:
        return sum(e.in_flight for e in self.engines)

    @property
    def waiting(self) -> int:
        return sum(e.waiting for e in self.engines)

    @property
    def stats(self) -> EngineStats:
        total = EngineStats()
        for e in self.engines:
            for f in fields(EngineStats):
                setattr(total, f.name, getattr(total, f.name) + getattr(e.stats, f.name))  # ints add, lists join
        return total

    def start(self) -> Self:
        for e in self.engines:
            e.start()
        self._started = True
        return self

    def close(self, timeout: float | None = None) -> None:
        for e in self.engines:
            e.close(timeout)
        self._started = False

    def _plan(self, n: int) -> list[tuple[EarlyExitEngine, int, int]]:
        """(replica, start, end) per part: one part per ``max_batch`` texts, at most one per replica."""
        parts = max(1, min(len(self.engines), n // self.max_batch))
        by_load = sorted(self.engines, key=lambda e: e.waiting + e.in_flight)[:parts]
        bounds = [round(i * n / parts) for i in range(parts + 1)]
        return [(e, bounds[i], bounds[i + 1]) for i, e in enumerate(by_load)]

    def submit_ids(self, ids: list[list[int]], truncated: list[bool] | None = None,
                   block: bool = True) -> Future[list[Prediction]]:
        """As :meth:`EarlyExitEngine.submit_ids`: one Future of all predictions, in input order."""
        return self._submit(self._plan(len(ids)), ids, truncated, block)

    def _submit(self, plan: list[tuple[EarlyExitEngine, int, int]], ids: list[list[int]],
                truncated: list[bool] | None, block: bool = True) -> Future[list[Prediction]]:
        if not self._started:
            self.start()
        truncated = truncated or [False] * len(ids)
        batch = Batch(len(ids))  # the replicas fill their parts of one batch
        for e, s, t in plan:
            e.enqueue(ids[s:t], truncated[s:t], batch, s, block)
        return batch.future

    def run(self, ids: list[list[int]], truncated: list[bool] | None = None) -> list[Prediction]:
        """Score token-id lists and return results in input order (a pool not started is started
        for the call and stopped after it, so no engine thread outlives a synchronous use)."""
        if self._started:
            return self.submit_ids(ids, truncated).result()
        self.start()
        try:
            return self.submit_ids(ids, truncated).result()
        finally:
            self.close()

    def predict_texts(self, texts: list[str]) -> list[Prediction]:
        ids, truncated = self.model.encode(texts)
        return self.run(ids, truncated)

    async def predict(self, texts: list[str]) -> list[Prediction]:
        """Score ``texts`` from asyncio code; awaits (never blocks the loop) while queues are full."""
        if not self._started:
            raise RuntimeError("call start() before predict()")
        for e in self.engines:
            if e.error is not None:
                raise RuntimeError("engine thread failed") from e.error
        ids, truncated = self.model.encode(texts)
        plan = self._plan(len(ids))
        if all(e.waiting + (t - s) <= e.max_queue for e, s, t in plan):  # only engine threads take from queues
            future = self._submit(plan, ids, truncated)
        else:
            future = await asyncio.to_thread(self._submit, plan, ids, truncated)
        return await asyncio.wrap_future(future)
