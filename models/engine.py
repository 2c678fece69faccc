"""Early-exit inference that keeps large batches full (ELBERT's GPU method), on CPU and GPU.

The engine runs the encoder one layer at a time over an *in-flight set* of samples. After each
layer it applies the exit rule per sample, retires the samples that exit, compacts the tensors
and refills the freed slots with waiting samples, so the batch stays full while work is waiting.

In-flight samples live in *cohorts*: a cohort holds samples that need the same layer weights next
(``Backbone.layer_key``). For ALBERT (one shared layer) every sample is in one cohort whatever
its depth, so samples at different depths share one layer call, exactly as in ELBERT. For BERT-
style backbones (distinct layers) a cohort is a depth; after its layer runs it merges into the
cohort at the next depth. Which cohort runs next is the *policy*:

* ``largest`` (default): the largest cohort, so each layer call does the most work; a cohort
  passed over for ``num_layers`` steps runs next (no starvation).
* ``deepest``: the deepest cohort first (finishes samples soonest; smaller calls).

``bench/engine.py`` measures both. Admission is length-aware: the oldest waiting sample is always
admitted, and the other free slots go to the waiting samples (within a look-ahead window) whose
lengths are closest to it, so little compute goes to padding. Padding never changes results: the
additive attention mask drops padded keys and mean pooling is mask-aware.

Modes (the benchmark's baselines are the same code with features switched off):

* ``static``:  a batch is admitted only when the previous one is done; exited samples keep
  computing until the last one exits (early exit with static batches; with ``FullDepth`` this is
  plain full-depth batching).
* ``compact``: as static, but exited samples leave the batch (no refill).
* ``refill``:  compaction plus refill (the engine).

One host sync per layer call: the exit decision and the exiting samples' probabilities come back
in one small device-to-host copy.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, fields

import torch

from models.backbone import additive_mask
from models.elbert import ElbertClassifier
from models.exits import ExitRule, State, cat_states, index_state

MODES = ("static", "compact", "refill")
POLICIES = ("largest", "deepest")


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


class _Batch:
    """The samples of one submit call: one Future for all their predictions, in input order.

    Per-batch (not per-sample) completion: each completed Future wakes the caller's event loop
    from the engine thread, and under load one wake-up per sample cost the event loop and the
    engine thread measurable time for nothing (the worker needs the whole batch anyway). The
    replicas of an :class:`EnginePool` fill parts of one batch from their own threads, hence
    the lock.
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
    ids: list[int]
    batch: _Batch
    index: int  # position in its batch
    truncated: bool
    t_submit: float
    t_admit: float = 0.0


@dataclass
class _Cohort:
    """Samples that need the same layer weights next. Tensors are on the engine's device."""

    key: int  # depth for distinct layers; 0 for a shared layer
    hidden: torch.Tensor  # [n, T, H]
    attn: torch.Tensor  # [n, T] long
    depth: torch.Tensor  # [n] long, layers done
    state: State  # rule state, rows aligned with samples
    reqs: list[_Request]
    lengths: list[int]
    done: torch.Tensor | None = None  # [n] bool, static mode only (exited rows stay)
    n_done: int = 0
    waited: int = 0

    @property
    def size(self) -> int:
        return len(self.reqs)


@dataclass
class EngineStats:
    layer_calls: int = 0
    sample_layers: int = 0  # sum over calls of rows computed
    token_layers: int = 0  # sum over calls of rows * padded width
    real_token_layers: int = 0  # sum over calls of real (unpadded) tokens
    retired: int = 0
    steps: int = 0
    occupancy_sum: int = 0  # in-flight samples after admission, summed over steps
    exit_layers: list[int] = field(default_factory=list)

    @property
    def mean_occupancy(self) -> float:
        return self.occupancy_sum / max(1, self.steps)

    @property
    def padding_efficiency(self) -> float:
        return self.real_token_layers / max(1, self.token_layers)


def _pad_to(t: torch.Tensor, width: int) -> torch.Tensor:
    """Right-pad dim 1 of [n, T, ...] with zeros to ``width``."""
    if t.shape[1] == width:
        return t
    pad = t.new_zeros((t.shape[0], width - t.shape[1], *t.shape[2:]))
    return torch.cat([t, pad], 1)


class EarlyExitEngine:
    """Per-layer early exit over an in-flight batch with compaction and refill.

    Use it synchronously (``run(ids)`` / ``predict_texts(texts)``) or as a service: ``start()``,
    then ``await predict(texts)`` from asyncio code while the engine runs in its own thread;
    ``close()`` finishes in-flight and waiting work before the thread ends.
    """

    def __init__(self, model: ElbertClassifier, rule: ExitRule, max_batch: int = 64,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 mode: str = "refill", policy: str = "largest", lookahead: int = 4,
                 max_queue: int = 4096, chunk: int | None | str = "auto"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.model = model.eval().to(device=device, dtype=dtype)
        self.rule = rule
        self.max_batch = max_batch
        self.device = torch.device(device)
        self.dtype = dtype
        self.mode = mode
        self.policy = policy
        self.lookahead = lookahead
        self.max_queue = max_queue
        # Refill only: run a cohort's layer in length-sorted chunks of this many rows, each trimmed
        # to its own longest text. On CPU cost grows with padded tokens and ~32-row calls are the
        # most efficient; on GPU one large call wins, so "auto" chunks on CPU only.
        if chunk == "auto":
            chunk = 32 if self.device.type == "cpu" else None
        self.chunk = chunk if mode == "refill" else None
        self.num_layers = model.num_layers
        self.stats = EngineStats()
        self.last_occupancy = 0
        self._waiting: deque[_Request] = deque()
        self._cohorts: list[_Cohort] = []
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._error: BaseException | None = None
        self._pin = self.device.type == "cuda"
        # One cohort for every depth when a single weight set serves all layers (ALBERT);
        # otherwise a cohort is a depth and its key is that depth.
        self._shared = model.backbone.shares_layers

    # ------------------------------------------------------------------ public API
    @property
    def in_flight(self) -> int:
        return sum(c.size for c in self._cohorts)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def submit_ids(self, ids: list[list[int]], truncated: list[bool] | None = None,
                   block: bool = True) -> Future[list[Prediction]]:
        """Queue token-id lists; returns one Future of their predictions, in input order.

        Blocks while the queue is full (``block=False``: raises ``BlockingIOError``).
        """
        batch = _Batch(len(ids))
        self._enqueue(ids, truncated, batch, 0, block)
        return batch.future

    def _enqueue(self, ids: list[list[int]], truncated: list[bool] | None, batch: _Batch, offset: int,
                 block: bool) -> None:
        """Queue ``ids`` as the slots ``offset, offset + 1, ...`` of ``batch``."""
        now = time.perf_counter()
        truncated = truncated or [False] * len(ids)
        reqs = [_Request(x, batch, offset + i, t, now) for i, (x, t) in enumerate(zip(ids, truncated))]
        with self._cv:
            for r in reqs:
                while len(self._waiting) >= self.max_queue and self._thread is not None and not self._closing:
                    if not block:
                        raise BlockingIOError("engine queue is full")
                    self._cv.notify_all()  # the engine must hear about the work before we sleep
                    self._cv.wait()
                if self._closing:
                    raise RuntimeError("engine is closed")
                self._waiting.append(r)
            self._cv.notify_all()

    def run(self, ids: list[list[int]], truncated: list[bool] | None = None) -> list[Prediction]:
        """Score token-id lists and return results in input order."""
        future = self.submit_ids(ids, truncated)
        if self._thread is None:
            while self._waiting or self._cohorts:
                self.step()
        return future.result()

    def predict_texts(self, texts: list[str]) -> list[Prediction]:
        ids, truncated = self.model.encode(texts)
        return self.run(ids, truncated)

    def start(self) -> EarlyExitEngine:
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
        if len(self._waiting) + len(ids) <= self.max_queue:
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
                    while not self._waiting and not self._cohorts and not self._closing:
                        self._cv.wait()
                    if self._closing and not self._waiting and not self._cohorts:
                        return
                self.step()
        except BaseException as exc:  # noqa: BLE001 -- fail every pending future rather than hang callers
            self._error = exc
            with self._cv:
                pending = list(self._waiting) + [r for c in self._cohorts for r in c.reqs]
                self._waiting.clear()
                self._cohorts.clear()
                self._cv.notify_all()
            for r in pending:
                r.batch.fail(exc)

    @torch.inference_mode()
    def step(self) -> None:
        """Admit waiting samples if the mode allows, then run one layer for one cohort."""
        self._admit()
        if not self._cohorts:
            return
        self.last_occupancy = self.in_flight
        self.stats.steps += 1
        self.stats.occupancy_sum += self.last_occupancy
        cohort = self._pick()
        self._run_layer(cohort)

    # ------------------------------------------------------------------ admission
    def _free_slots(self) -> int:
        if self.mode == "refill":
            return self.max_batch - self.in_flight
        return self.max_batch if not self._cohorts else 0

    def _take(self, n: int) -> list[_Request]:
        """The oldest waiting sample plus the n-1 closest in length within the look-ahead window."""
        with self._cv:
            if n >= len(self._waiting) or self.lookahead <= 1:
                taken = [self._waiting.popleft() for _ in range(min(n, len(self._waiting)))]
            else:
                window = [self._waiting.popleft() for _ in range(min(len(self._waiting), n * self.lookahead))]
                head_len = len(window[0].ids)
                rest = sorted(range(1, len(window)), key=lambda i: (abs(len(window[i].ids) - head_len), i))
                chosen = {0, *rest[: n - 1]}
                taken = [r for i, r in enumerate(window) if i in chosen]
                self._waiting.extendleft(reversed([r for i, r in enumerate(window) if i not in chosen]))
            self._cv.notify_all()  # wake blocked submitters
        return taken

    def _admit(self) -> None:
        free = self._free_slots()
        if free <= 0 or not self._waiting:
            return
        reqs = self._take(free)
        if self.chunk:
            reqs.sort(key=lambda r: len(r.ids))
        now = time.perf_counter()
        for r in reqs:
            r.t_admit = now
        lengths = [len(r.ids) for r in reqs]
        input_ids, attn = ElbertClassifier.pad([r.ids for r in reqs], self.model.pad_id)
        if self._pin:
            input_ids, attn = input_ids.pin_memory(), attn.pin_memory()
        input_ids = input_ids.to(self.device, non_blocking=True)
        attn = attn.to(self.device, non_blocking=True)
        hidden = self.model.backbone.embed(input_ids)
        n = len(reqs)
        cohort = _Cohort(
            key=0, hidden=hidden, attn=attn,
            depth=torch.zeros(n, dtype=torch.long, device=self.device),
            state=self.rule.init_state(n, self.device), reqs=reqs, lengths=lengths,
            done=torch.zeros(n, dtype=torch.bool, device=self.device) if self.mode == "static" else None,
        )
        self._add(cohort)

    def _add(self, cohort: _Cohort) -> None:
        """Insert a cohort, merging with one that needs the same weights next."""
        for i, other in enumerate(self._cohorts):
            if other.key == cohort.key:
                self._cohorts[i] = self._merge(other, cohort)
                return
        self._cohorts.append(cohort)

    def _merge(self, a: _Cohort, b: _Cohort) -> _Cohort:
        width = max(a.hidden.shape[1], b.hidden.shape[1])
        merged = _Cohort(
            key=a.key,
            hidden=torch.cat([_pad_to(a.hidden, width), _pad_to(b.hidden, width)]),
            attn=torch.cat([_pad_to(a.attn, width), _pad_to(b.attn, width)]),
            depth=torch.cat([a.depth, b.depth]),
            state=cat_states([a.state, b.state]),
            reqs=a.reqs + b.reqs,
            lengths=a.lengths + b.lengths,
            done=None if a.done is None else torch.cat([a.done, b.done]),
            n_done=a.n_done + b.n_done,
            waited=max(a.waited, b.waited),
        )
        if self.chunk:  # keep rows sorted by length so chunks are contiguous and homogeneous
            order = sorted(range(merged.size), key=merged.lengths.__getitem__)
            idx = torch.tensor(order, device=self.device)
            merged.hidden, merged.attn, merged.depth = merged.hidden[idx], merged.attn[idx], merged.depth[idx]
            merged.state = index_state(merged.state, idx)
            merged.reqs = [merged.reqs[i] for i in order]
            merged.lengths = [merged.lengths[i] for i in order]
        return merged

    # ------------------------------------------------------------------ one layer
    def _pick(self) -> _Cohort:
        starving = [c for c in self._cohorts if c.waited >= self.num_layers]
        if starving:
            chosen = max(starving, key=lambda c: c.waited)
        elif self.policy == "largest":
            chosen = max(self._cohorts, key=lambda c: (c.size, c.key))
        else:
            chosen = max(self._cohorts, key=lambda c: (c.key, c.size))
        self._cohorts.remove(chosen)
        for c in self._cohorts:
            c.waited += 1
        return chosen

    def _run_layer(self, c: _Cohort) -> None:
        model = self.model
        mask = additive_mask(c.attn, c.hidden.dtype)
        weights = 0 if self._shared else model.backbone.layer_key(c.key)
        n, width = c.hidden.shape[:2]
        st = self.stats
        if self.chunk and n > self.chunk:
            for s in range(0, n, self.chunk):
                e = min(n, s + self.chunk)
                w = max(c.lengths[s:e])
                c.hidden[s:e, :w] = model.backbone.run_layer(weights, c.hidden[s:e, :w], mask[s:e, ..., :w])
                st.layer_calls += 1
                st.token_layers += (e - s) * w
        else:
            c.hidden = model.backbone.run_layer(weights, c.hidden, mask)
            st.layer_calls += 1
            st.token_layers += n * width
        c.depth = c.depth + 1
        st.sample_layers += n
        st.real_token_layers += sum(c.lengths)

        depth_arg: int | torch.Tensor = c.depth if self._shared else c.key + 1
        probs = model.exit_logits(c.hidden, c.attn, depth_arg).float().softmax(-1)  # [n, C]
        exit_now, c.state = self.rule.step(c.state, probs)
        exit_now = exit_now | (c.depth >= self.num_layers)
        if c.done is not None:
            exit_now = exit_now & ~c.done
        # The one host sync of this layer: decision + probabilities + depth, in one copy.
        packed = torch.cat([exit_now.float()[:, None], c.depth.float()[:, None], probs], 1).cpu()
        exiting = packed[:, 0].nonzero().flatten().tolist()
        now = time.perf_counter()
        for i in exiting:
            self._retire(c.reqs[i], packed[i, 2:], int(packed[i, 1]), now)

        if c.done is not None:  # static: exited rows keep computing until the batch is done
            c.done = c.done | exit_now
            c.n_done += len(exiting)
            if c.n_done < n:
                c.key = self._key_after(c)
                self._add(c)
            return

        if exiting:
            gone = set(exiting)
            keep = [i for i in range(n) if i not in gone]
            if not keep:
                return
            idx = torch.tensor(keep, device=self.device)
            c.reqs = [c.reqs[i] for i in keep]
            c.lengths = [c.lengths[i] for i in keep]
            width = max(c.lengths)  # drop padding columns nobody needs any more
            c.hidden = c.hidden[idx, :width]
            c.attn = c.attn[idx, :width]
            c.depth = c.depth[idx]
            c.state = index_state(c.state, idx)
        c.key = self._key_after(c)
        c.waited = 0
        self._add(c)

    def _key_after(self, c: _Cohort) -> int:
        """Cohort key after a layer: 0 for a shared layer, else the (uniform) depth reached."""
        return 0 if self._shared else c.key + 1

    def _retire(self, r: _Request, probs: torch.Tensor, exit_layer: int, now: float) -> None:
        p = tuple(float(v) for v in probs)
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
    x = torch.tensor([ids], device=device)
    attn = torch.ones_like(x)
    hidden = model.backbone.embed(x)
    mask = additive_mask(attn, hidden.dtype)
    state = rule.init_state(1, device)
    for depth in range(model.num_layers):
        hidden = model.backbone.run_layer(model.backbone.layer_key(depth), hidden, mask)
        probs = model.exit_logits(hidden, attn, depth + 1).float().softmax(-1)
        exit_now, state = rule.step(state, probs)
        if bool(exit_now[0]) or depth + 1 == model.num_layers:
            p = tuple(float(v) for v in probs[0])
            k = max(range(len(p)), key=p.__getitem__)
            return Prediction(model.labels[k], k, p, depth + 1, 0.0)
    raise AssertionError("unreachable")


class EnginePool:
    """``n`` engines over one shared model, each serving from its own thread.

    On a CPU the encoder's matrices are small (tens of texts x 384), so splitting one operation
    across cores (torch's intra-op threads) scales poorly, and its per-operation barrier stalls
    whenever another process takes a core for a moment. Single-threaded replicas run whole layer
    calls side by side instead (torch releases the GIL inside each operation). On this project's
    2-core box, 2 replicas x 1 thread ran 930-960 texts/s against 620-700 for one engine with 2
    threads, and 730-810 against 530-570 next to a process taking 20% of a core.

    Same interface as :class:`EarlyExitEngine`: a submitted batch goes to the replica with the
    least work; one large enough to fill several replicas' batches is split among them (in input
    order, contiguously) and comes back as one result list. ``stats`` sums the replicas'.
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
        self.mode = first.mode
        self.policy = first.policy
        self._started = False

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

    def start(self) -> EnginePool:
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
        batch = _Batch(len(ids))  # the replicas fill their parts of one batch
        for e, s, t in plan:
            e._enqueue(ids[s:t], truncated[s:t], batch, s, block)
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
            if e._error is not None:
                raise RuntimeError("engine thread failed") from e._error
        ids, truncated = self.model.encode(texts)
        plan = self._plan(len(ids))
        if all(e.waiting + (t - s) <= e.max_queue for e, s, t in plan):  # only engine threads take from queues
            future = self._submit(plan, ids, truncated)
        else:
            future = await asyncio.to_thread(self._submit, plan, ids, truncated)
        return await asyncio.wrap_future(future)


Engine = EarlyExitEngine | EnginePool
