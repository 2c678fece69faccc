"""Early-exit inference that keeps large batches full (ELBERT's GPU method), on CPU and GPU.

The engine runs the encoder one layer at a time over an *in-flight set* of samples. After each
layer it applies the exit rule per sample, retires the samples that exit, compacts the tensors
and refills the freed slots with waiting samples, so the batch stays full while work is waiting.

Three parts: :class:`models.scheduler.Scheduler` decides which samples are in flight and which
cohort runs next (modes, policies, admission); :class:`models.runner.LayerRunner` computes one
layer for a cohort and applies the exit rule; :class:`EarlyExitEngine` here owns the queue, the
thread and the futures, and turns retired samples into :class:`Prediction` s. :class:`Engine` is
what the pipeline needs of an engine (this one or a ``models.pool.EnginePool`` of them).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol, Self

import torch

from models.backbone import additive_mask
from models.elbert import ElbertClassifier
from models.exits import ExitRule
from models.runner import Cohort, EngineStats, LayerRunner
from models.scheduler import DEFAULT_POLICY, Scheduler


@dataclass(frozen=True)
class Prediction:
    """One text's result. ``probs`` follow the model's label order; ``exit_layer`` is 1-based."""

    label: str
    label_index: int
    probs: tuple[float, ...]
    exit_layer: int
    latency_ms: float  # admission into a batch -> result (queueing excluded; see ``queued_ms``)
    queued_ms: float = 0.0
    truncated: bool = False


def _running_future() -> Future[list[Prediction]]:
    """A Future already marked running, so a caller cannot cancel it under the engine thread.

    ``asyncio.wrap_future`` cancels the wrapped Future when its awaiting task is cancelled (a
    worker shutting down); the engine's later ``set_result`` on a cancelled Future would raise
    in the engine thread and kill it with other callers' work in flight.
    """
    future: Future[list[Prediction]] = Future()
    future.set_running_or_notify_cancel()
    return future


class Batch:
    """The samples of one submit call: one Future for all their predictions, in input order.

    Per-batch (not per-sample) completion: each completed Future wakes the caller's event loop
    from the engine thread, and under load one wake-up per sample costs the event loop and the
    engine thread time for nothing (the worker needs the whole batch anyway). The replicas of a
    ``models.pool.EnginePool`` fill parts of one batch from their own threads, hence the lock.
    """

    __slots__ = ("future", "lock", "remaining", "results")

    def __init__(self, n: int) -> None:
        self.future: Future[list[Prediction]] = _running_future()
        self.results: list[Prediction | None] = [None] * n
        self.remaining = n
        self.lock = threading.Lock()
        if n == 0:
            self.future.set_result([])

    def fill(self, index: int, pred: Prediction) -> None:
        with self.lock:
            self.results[index] = pred
            self.remaining -= 1
            last = self.remaining == 0
        if last:
            self._settle(lambda f: f.set_result(self.results))  # type: ignore[arg-type]  # all filled

    def fail(self, exc: BaseException) -> None:
        self._settle(lambda f: f.set_exception(exc))

    def _settle(self, how: Callable[[Future[list[Prediction]]], None]) -> None:
        """Complete the Future once: a replica's failure may race another replica's last fill."""
        with self.lock:
            if not self.future.done():
                how(self.future)



@dataclass
class _Request:
    """One queued sample: its token ids and where its prediction goes."""

    ids: list[int]
    batch: Batch
    index: int  # position in its batch
    truncated: bool
    t_submit: float
    t_admit: float = 0.0


class Engine(Protocol):
    """What the pipeline, the backtest and the benchmarks use of an engine.

    :class:`EarlyExitEngine` and ``models.pool.EnginePool`` both provide it.
    """

    model: ElbertClassifier
    max_batch: int
    max_queue: int
    device: torch.device

    @property
    def mode(self) -> str: ...

    @property
    def policy(self) -> str: ...

    @property
    def stats(self) -> EngineStats: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def waiting(self) -> int: ...

    def start(self) -> Self: ...

    def close(self, timeout: float | None = None) -> None: ...

    def submit_ids(self, ids: list[list[int]], truncated: list[bool] | None = None,
                   block: bool = True) -> Future[list[Prediction]]: ...

    def run(self, ids: list[list[int]], truncated: list[bool] | None = None) -> list[Prediction]: ...

    def predict_texts(self, texts: list[str]) -> list[Prediction]: ...

    async def predict(self, texts: list[str]) -> list[Prediction]: ...


class EarlyExitEngine:
    """Per-layer early exit over an in-flight batch with compaction and refill.

    Use it synchronously (``run(ids)`` / ``predict_texts(texts)``) or as a service: ``start()``,
    then ``await predict(texts)`` from asyncio code while the engine runs in its own thread;
    ``close()`` finishes in-flight and waiting work before the thread ends. ``mode`` and
    ``policy`` are described in ``models.scheduler``; ``mode``, ``policy`` and ``device`` accept
    str-valued enums too.
    """

    def __init__(self, model: ElbertClassifier, rule: ExitRule, max_batch: int = 64,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 mode: str = "refill", policy: str = DEFAULT_POLICY, lookahead: int = 4,
                 max_queue: int = 4096, chunk: int | None | str = "auto"):
        self.device = device if isinstance(device, torch.device) else torch.device(str(device))
        self.scheduler: Scheduler[_Request, Cohort[_Request]] = Scheduler(
            mode, policy, max_batch, lookahead, model.num_layers, model.backbone.shares_layers)
        self.model = model.eval().to(device=self.device, dtype=dtype)
        self.rule = rule
        self.max_batch = max_batch
        self.dtype = dtype
        self.max_queue = max_queue
        # Refill only: run a cohort's layer in length-sorted chunks of this many rows, each trimmed
        # to its own longest text. On CPU cost grows with padded tokens and calls of a few dozen
        # rows are the most efficient; on GPU one large call wins, so "auto" chunks on CPU only.
        if chunk == "auto":
            chunk = 32 if self.device.type == "cpu" else None
        self.chunk: int | None = chunk if self.mode == "refill" else None  # type: ignore[assignment]
        self.runner: LayerRunner[_Request] = LayerRunner(model, rule, self.device, self.chunk,
                                                         keep_exited=self.mode == "static")
        self.num_layers = model.num_layers
        self.stats = EngineStats()
        self.last_occupancy = 0
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._error: BaseException | None = None

    # ------------------------------------------------------------------ public API
    @property
    def mode(self) -> str:
        return self.scheduler.mode

    @property
    def policy(self) -> str:
        return self.scheduler.policy

    @property
    def lookahead(self) -> int:
        return self.scheduler.lookahead

    @property
    def in_flight(self) -> int:
        return self.scheduler.in_flight

    @property
    def waiting(self) -> int:
        return len(self.scheduler.waiting)

    @property
    def error(self) -> BaseException | None:
        """What stopped the engine thread, or None while it serves."""
        return self._error

    def submit_ids(self, ids: list[list[int]], truncated: list[bool] | None = None,
                   block: bool = True) -> Future[list[Prediction]]:
        """Queue token-id lists; returns one Future of their predictions, in input order.

        Blocks while the queue is full (``block=False``: raises ``BlockingIOError``).
        """
        batch = Batch(len(ids))
        self.enqueue(ids, truncated, batch, 0, block)
        return batch.future

    def enqueue(self, ids: list[list[int]], truncated: list[bool] | None, batch: Batch, offset: int,
                block: bool = True) -> None:
        """Queue ``ids`` as the slots ``offset, offset + 1, ...`` of ``batch`` (an engine pool fills
        one batch from several engines)."""
        now = time.perf_counter()
        truncated = truncated or [False] * len(ids)
        reqs = [_Request(x, batch, offset + i, t, now) for i, (x, t) in enumerate(zip(ids, truncated))]
        waiting = self.scheduler.waiting
        with self._cv:
            for r in reqs:
                while len(waiting) >= self.max_queue and self._thread is not None and not self._closing:
                    if not block:
                        raise BlockingIOError("engine queue is full")
                    self._cv.notify_all()  # the engine must hear about the work before we sleep
                    self._cv.wait()
                if self._closing:
                    raise RuntimeError("engine is closed")
                waiting.append(r)
            self._cv.notify_all()

    def run(self, ids: list[list[int]], truncated: list[bool] | None = None) -> list[Prediction]:
        """Score token-id lists and return results in input order."""
        future = self.submit_ids(ids, truncated)
        if self._thread is None:
            while self.scheduler.busy:
                self.step()
        return future.result()

    def predict_texts(self, texts: list[str]) -> list[Prediction]:
        ids, truncated = self.model.encode(texts)
        return self.run(ids, truncated)

    def start(self) -> Self:
        """Run the engine in its own thread (for ``await predict``)."""
        if self._thread is None:
            self._closing = False
            self._thread = threading.Thread(target=self._serve, name="finsent-engine", daemon=True)
            self._thread.start()
        return self

    async def predict(self, texts: list[str]) -> list[Prediction]:
        """Score ``texts`` from asyncio code; awaits (never blocks the loop) while the queue is full."""
        if self._thread is None:
            raise RuntimeError("call start() before predict()")
        if self._error is not None:
            raise RuntimeError("engine thread failed") from self._error
        ids, truncated = self.model.encode(texts)
        if self.waiting + len(ids) <= self.max_queue:
            future = self.submit_ids(ids, truncated)
        else:
            future = await asyncio.to_thread(self.submit_ids, ids, truncated)
        return await asyncio.wrap_future(future)

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting work, finish what is queued and in flight, stop the thread."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # ------------------------------------------------------------------ the loop
    def _serve(self) -> None:
        try:
            while True:
                with self._cv:
                    while not self.scheduler.busy and not self._closing:
                        self._cv.wait()
                    if self._closing and not self.scheduler.busy:
                        return
                self.step()
        except BaseException as exc:  # noqa: BLE001 -- fail every pending future rather than hang callers
            self._error = exc
            with self._cv:
                waiting, cohorts = self.scheduler.drain()
                self._cv.notify_all()
            for r in waiting + [r for c in cohorts for r in c.reqs]:
                r.batch.fail(exc)

    @torch.inference_mode()
    def step(self) -> None:
        """Admit waiting samples if the mode allows, then run one layer for one cohort."""
        self._admit()
        if not self.scheduler.cohorts:
            return
        self.last_occupancy = self.in_flight
        self.stats.steps += 1
        self.stats.occupancy_sum += self.last_occupancy
        cohort = self.scheduler.pick()
        exits, alive = self.runner.run_layer(cohort, self.stats)
        now = time.perf_counter()
        for r, probs, exit_layer in exits:
            self._retire(r, probs, exit_layer, now)
        if alive:
            self.scheduler.after_layer(cohort, self.runner.merge)

    def _admit(self) -> None:
        with self._cv:
            reqs = self.scheduler.take()
            if reqs:
                self._cv.notify_all()  # wake blocked submitters
        if not reqs:
            return
        now = time.perf_counter()
        for r in reqs:
            r.t_admit = now
        self.scheduler.add(self.runner.cohort(reqs), self.runner.merge)

    def _retire(self, r: _Request, p: tuple[float, ...], exit_layer: int, now: float) -> None:
        k = max(range(len(p)), key=p.__getitem__)
        self.stats.retired += 1
        self.stats.exit_layers.append(exit_layer)
        r.batch.fill(r.index, Prediction(
            label=self.model.labels[k], label_index=k, probs=p, exit_layer=exit_layer,
            latency_ms=(now - r.t_admit) * 1000.0, queued_ms=(r.t_admit - r.t_submit) * 1000.0,
            truncated=r.truncated,
        ))


@torch.inference_mode()
def reference_predict(model: ElbertClassifier, ids: list[int], rule: ExitRule) -> Prediction:
    """The semantics the engine must match: one sample, no padding, layer by layer until exit."""
    device = next(model.parameters()).device
    x = torch.tensor([ids], device=device)  # [1, T]
    attn = torch.ones_like(x)
    hidden = model.backbone.embed(x)  # [1, T, H]
    mask = additive_mask(attn, hidden.dtype)
    state = rule.init_state(1, device)
    for depth in range(model.num_layers):
        hidden = model.backbone.run_layer(model.backbone.layer_key(depth), hidden, mask)
        probs = model.exit_logits(hidden, attn, depth + 1).float().softmax(-1)  # [1, C]
        exit_now, state = rule.step(state, probs)
        if bool(exit_now[0]) or depth + 1 == model.num_layers:
            p = tuple(float(v) for v in probs[0])
            k = max(range(len(p)), key=p.__getitem__)
            return Prediction(model.labels[k], k, p, depth + 1, 0.0)
    raise AssertionError("unreachable")
