"""End-to-end pipeline benchmark: texts/s and ingest -> Redis latency at several offered loads,
next to the engine alone, in one run on this machine.

Set-up: the embedded Tansu broker, the Redis at ``FINSENT_REDIS_URL`` / 127.0.0.1:6379 if it
answers (else an embedded Valkey), a fresh namespace ``bench.<random>.`` (its Redis keys are
deleted at the end), and one ``finsent worker`` child process with the shipped model (or
``--model``; if the shipped artifact is missing, ``FINSENT_MODEL_DIR``). The JSON names the
model used. Input: the bundled ``pipeline/data/sample_feed.jsonl`` cycled, each message with a
unique id and ``published_at`` = its send time. Every message links to at least one ticker (a
feed ticker ``SPY`` is added to the few market-wide texts that link nothing), so every applied
document publishes at least one update.

Phases (same process, same texts, same engine settings -- max batch, exit rule, threads):

1. **engine alone** -- the engine built like the worker builds it, fed the texts directly
   (``predict_texts``: tokenisation + model), measured before the worker starts and again after
   it stopped; ``engine_texts_per_s`` is the mean of the two.
2. **warm-up** -- start the worker, send ``2 * max_batch`` messages, wait until all are applied
   (model loaded, group joined, code paths warm).
3. **backlog** -- send ``--backlog`` messages as fast as possible and time until the last one is
   applied: ``max_sustainable_per_s = backlog / (last apply - first send)`` (ramp-up and tail
   included, so it is a slight under-estimate; ``steady_per_s`` is the rate between the 10th
   and 90th percentile of apply times). ``cpu_ms_per_msg`` splits the machine's CPU time over
   the drain by process (worker -- model included --, broker, Redis when local, this bench), and
   ``engine.cpu_ms_per_text`` is the engine-alone figure: on a box this small, the other
   processes' share is what the pipeline cannot give the model. ``cpu_budget`` puts the two
   together: the rate all cores could sustain at that CPU cost per message, the best
   end-to-end / engine ratio it allows, and what the non-model work may cost for 0.85x.
4. **offered loads** -- for each fraction of ``max_sustainable_per_s`` (default 25/50/75/90%),
   an open-loop producer sends for ``--duration`` seconds: message ``i`` is due at
   ``t0 + i / rate`` and sent then (a late send does not shift later ones), then the phase waits
   for stragglers. ``achieved_per_s`` = (applied - 1) / (last apply - first apply).

Latency = (time this process *received* the document's first ``PUBLISH finsent:updates``
message) - (time this process handed the record to the Kafka producer), both from
``time.perf_counter`` in this process, so no clock skew. The worker publishes inside its Redis
commit script, so the update is visible in Redis when the message arrives: that is the
ingest -> Redis latency a strategy reading Redis sees (produce + broker + fetch + parse + link +
micro-batch wait + model + aggregation + the commit script + pub/sub delivery). The worker is
not modified or instrumented. ``ingest_to_scored`` percentiles come from the documents topic
(``scored_at - ingested_at``, the worker's own ms clock; the record timestamp is set to the send
time): the share spent before the commit step.

The producer and the subscriber share this machine (and its cores) with the worker, the broker
and Redis -- as does whatever else runs (the JSON records the load average and whether a
``finsent train`` was running).

``--engine null`` (benchmark only) runs the same worker with a stand-in engine that returns a
fixed prediction at no cost (:class:`NullEngine`, injected through ``Worker(settings, engine=...)``
in a child process of this script): no model is loaded, the engine-alone phases are skipped, and
the JSON says ``"engine_kind": "null (stand-in: ...)"``. The backlog rate is then what one worker
process sustains with the real broker, Redis, linking, aggregation, outbox and commits, and its
CPU per message is all non-model. ``worker_cpu`` (both engines) splits the worker's CPU over the
drain into its event-loop (main) thread and its other threads (engine, executor); with the model
the event loop also tokenises (``engine.encode``). ``--profile-worker FILE`` runs the worker's
event loop under cProfile during the backlog drain only and writes the top functions to FILE
(profiling slows the worker: take rates from a run without it).

    python bench/pipeline.py --json             # ~2 minutes on an idle 2-core box (126 s), under 5
    python bench/pipeline.py --json --quick     # smoke run, under a minute
    python bench/pipeline.py --json --engine null   # the worker without the model
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):  # first, or bench/pipeline.py would shadow the package
    sys.path.insert(0, str(ROOT))

import numpy as np
import orjson
from model_choice import resolve_model

SAMPLE_FEED = ROOT / "pipeline" / "data" / "sample_feed.jsonl"
SESSION_TIMEOUT_MS = 6000  # Tansu holds a fresh group's first JoinGroup for half of this
FALLBACK_TICKER = "SPY"  # for market-wide texts that link no ticker
RATIO_GOAL = 0.85  # the goal: end-to-end >= this share of the engine-alone throughput
NULL_ENGINE = "null (stand-in: a fixed prediction at no cost; not the model)"
PROFILE_TOP = 40  # functions listed per ordering in the --profile-worker report


def log(msg: str) -> None:
    print(f"[bench/pipeline {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


# --------------------------------------------------------------------------- inputs


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads), or None if unreadable."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int | None) -> float | None:
    """CPU seconds of the main thread of ``pid`` (the worker's event loop), or None."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int | None) -> dict[int, list[int]]:
    """``pid`` and its descendants (``finsent worker --processes N``: the supervisor and its N
    workers), each with its child pids, from /proc; {} when ``pid`` is None."""
    tree: dict[int, list[int]] = {}
    todo = [] if pid is None else [pid]
    while todo:
        p = todo.pop()
        try:
            tree[p] = [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            tree[p] = []
        todo += tree[p]
    return tree


def tree_cpu_seconds(pid: int | None) -> tuple[float | None, float | None]:
    """(CPU seconds of ``pid``'s process tree, CPU seconds of the event-loop threads in it): the
    main thread of every worker process (the tree's leaves; with one process, ``pid`` itself)."""
    tree = process_tree(pid)
    if not tree:
        return None, None
    total = [cpu_seconds(p) for p in tree]
    loops = [thread_cpu_seconds(p) for p, children in tree.items() if not children]
    if None in total or None in loops:
        return None, None
    return sum(total), sum(loops)  # type: ignore[arg-type]


def redis_pid(url: str) -> int | None:
    """The pid of the Redis server at ``url`` when it runs on this machine (INFO server)."""
    import redis

    try:
        return int(redis.Redis.from_url(url, socket_timeout=1).info("server")["process_id"])
    except Exception:  # noqa: BLE001 - a remote or unreachable server: no CPU accounting
        return None


def sample_messages(texts: str | None = None) -> list[dict]:
    """The bundled feed's records (or, with ``texts``, a labelled ``text,label`` CSV or a dataset
    name such as ``twitter_financial_news/train`` as tweets), each guaranteed to link at least
    one ticker with the linker the worker builds from the same settings (``FINSENT_TAGGER``
    included)."""
    from pipeline.inference import build_linker
    from pipeline.schemas import parse_input
    from pipeline.settings import Settings

    now = time.time_ns() // 1_000_000
    if texts is None:
        recs = [orjson.loads(line) for line in SAMPLE_FEED.read_bytes().splitlines() if line.strip()]
    else:
        from models.datasets import read_labelled_csv, resolve_data
        from models.text import language

        rows = read_labelled_csv(resolve_data(texts, Settings().data_dir, option="--texts")).texts
        # only texts the aggregates take (English): every applied document must publish an update
        rows = [t for t in dict.fromkeys(rows) if language(t) == "en"]
        recs = [{"id": f"t{i}", "text": t, "kind": "tweet"} for i, t in enumerate(rows)]
    for rec in recs:
        rec["published_at"] = now
    links = build_linker(Settings()).link_many([parse_input(orjson.dumps(r), now_ms=now) for r in recs])
    for rec, rec_links in zip(recs, links, strict=True):
        if not rec_links:
            rec["tickers"] = [FALLBACK_TICKER]
    return recs


# --------------------------------------------------------------------------- engine alone


def engine_alone(settings, model, texts: list[str]) -> tuple[float, float]:
    """(texts/s, CPU ms per text) of the engine as the worker builds and runs it, fed ``texts``.

    The engine serves from its own thread (``start()``), as in the worker: torch's intra-op
    threading differs between the main thread and others, and on this busy 2-core box the
    main-thread ``run()`` measured ~40% slower than the same engine in its thread.
    """
    from pipeline.inference import build_engine

    engine = build_engine(settings, model, max_queue=len(texts) + 1).start()
    try:
        engine.predict_texts(texts[: 2 * settings.max_batch])  # warm-up
        t0, c0 = time.perf_counter(), cpu_seconds(os.getpid()) or 0.0
        engine.predict_texts(texts)
        t1, c1 = time.perf_counter(), cpu_seconds(os.getpid()) or 0.0
        return len(texts) / (t1 - t0), (c1 - c0) * 1000 / len(texts)
    finally:
        engine.close()


def encode_ms_per_text(model, texts: list[str]) -> float:
    """CPU ms per text of ``model.encode`` (normalise + tokenise), which the engine's ``predict``
    runs on the caller's thread -- in the worker, the event loop."""
    model.encode(texts[:64])
    c0 = time.process_time()
    model.encode(texts)
    return (time.process_time() - c0) * 1000 / len(texts)


# --------------------------------------------------------------------------- null engine


class NullEngine:
    """Benchmark stand-in for the model engine (``--engine null``; never used by the pipeline).

    The :class:`models.engine.Engine` interface, answering every text at once with the same
    prediction: no tokenisation, no model, no thread. What the worker does around it -- Kafka,
    parsing, linking, batching, aggregation, the Redis commit script, outbox, offset commits --
    is unchanged, so a worker built on it measures the pipeline's own cost per message.
    """

    mode = "null"
    policy = "null"
    device = "cpu"
    in_flight = 0
    waiting = 0

    def __init__(self, max_batch: int, max_queue: int = 1 << 20) -> None:
        from types import SimpleNamespace

        from models.elbert import LABELS
        from models.engine import Prediction
        from models.runner import EngineStats

        self.model = SimpleNamespace(labels=list(LABELS), config=SimpleNamespace(version="null-engine"))
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.stats = EngineStats()
        self.prediction = Prediction(
            label="neutral", label_index=1, probs=(0.1, 0.8, 0.1), exit_layer=1, latency_ms=0.0
        )

    def start(self) -> NullEngine:
        return self

    def close(self, timeout: float | None = None) -> None:
        pass

    def run(self, ids: list, truncated: list[bool] | None = None) -> list:
        self.stats.retired += len(ids)
        return [self.prediction] * len(ids)

    def submit_ids(self, ids: list, truncated: list[bool] | None = None, block: bool = True) -> Future:
        future: Future = Future()
        future.set_result(self.run(ids))
        return future

    def predict_texts(self, texts: list[str]) -> list:
        return self.run(texts)

    async def predict(self, texts: list[str]) -> list:
        return self.run(texts)


def null_worker(settings_json: str, profile_out: str | None, processes: int = 1) -> None:
    """The child process of ``--engine null``: ``Worker(settings, engine=NullEngine(...))`` until
    SIGTERM. With ``profile_out``, SIGUSR2 starts cProfile on the event-loop thread and a second
    SIGUSR2 stops it and writes the stats there (the bench brackets the backlog drain with them).
    With ``processes`` > 1, the supervisor of ``finsent worker --processes`` runs that many."""
    import logging

    from pipeline.settings import Settings
    from pipeline.worker import Worker

    if processes > 1:
        from pipeline.supervisor import run_processes

        program = [sys.executable, str(Path(__file__).resolve())]
        sys.exit(run_processes(processes, ["--null-worker", settings_json], metrics_port=0, grace_s=60,
                               program=program))  # fmt: skip

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(**orjson.loads(settings_json))
    worker = Worker(settings, engine=NullEngine(settings.max_batch))
    if profile_out:
        import cProfile

        prof = cProfile.Profile()
        state = {"on": False}

        def toggle(*_) -> None:
            if not state["on"]:
                state["on"] = True
                prof.enable()
            else:
                prof.disable()
                state["on"] = False
                prof.dump_stats(profile_out)

        signal.signal(signal.SIGUSR2, toggle)
    asyncio.run(worker.run(owns_process=True))


def profile_report(prof_file: Path, out: Path, header: str, messages: int) -> None:
    """The top functions of a cProfile dump, by cumulative and by self time, as text."""
    import pstats

    buf = io.StringIO()
    stats = pstats.Stats(str(prof_file), stream=buf)
    buf.write(
        f"{header}\ncProfile total: {stats.total_tt:.3f} s over {messages} messages "
        f"= {stats.total_tt * 1000 / max(1, messages):.3f} ms/message (profiler overhead included)\n"
    )
    # self time summed by package: which code (ours, the clients, asyncio) the loop spends itself in
    by_package: dict[str, float] = {}
    for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        by_package[_package(filename)] = by_package.get(_package(filename), 0.0) + tottime
    buf.write("\n===== self time by package (us/message, profiled) =====\n")
    for name, tt in sorted(by_package.items(), key=lambda kv: -kv[1])[:PROFILE_TOP]:
        buf.write(f"{tt * 1e6 / max(1, messages):9.1f}  {name}\n")
    stats.strip_dirs()
    for order in ("cumulative", "tottime"):
        buf.write(f"\n===== top {PROFILE_TOP} by {order} =====\n")
        stats.sort_stats(order).print_stats(PROFILE_TOP)
    out.write_text(buf.getvalue())


def _package(filename: str) -> str:
    """``pipeline.worker``, ``aiokafka``, ``asyncio``, ``<built-in>`` ... for a profiled file name."""
    path = Path(filename)
    if filename.startswith(("~", "<")):
        return "<built-in>"
    parts = path.with_suffix("").parts
    if str(ROOT) in filename and parts[-2] in ("pipeline", "models"):
        return f"{parts[-2]}.{parts[-1]}"
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    stdlib = [i for i, part in enumerate(parts) if part.startswith("python3")]
    if stdlib and stdlib[-1] + 1 < len(parts):  # .../lib/python3.11/asyncio/events -> asyncio
        return parts[stdlib[-1] + 1]
    return parts[-1]


# --------------------------------------------------------------------------- end to end


@dataclass
class Tracker:
    """Send and first-apply times (perf_counter seconds) per document id."""

    sent: dict[str, float] = field(default_factory=dict)
    lag: dict[str, float] = field(default_factory=dict)  # send time - due time (open-loop producer)
    applied: dict[str, float] = field(default_factory=dict)
    updates: int = 0


class Bench:
    def __init__(
        self,
        settings,
        messages: list[dict],
        worker_cmd: list[str],
        env: dict[str, str],
        pids: dict[str, int | None],
        profile: bool = False,
        profile_load: float | None = None,
    ) -> None:
        self.s = settings
        self.profile = profile  # SIGUSR2 the worker before and after the backlog (null_worker)
        self.profile_load = profile_load  # ... or the paced phase at this fraction instead
        self.profiled_messages = 0
        self.pids = pids  # other processes whose CPU the backlog phase accounts: broker, redis
        self.messages = messages
        self.worker_cmd = worker_cmd
        self.env = env
        self.t = Tracker()
        self.n = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.producer = None
        self.topics = {
            "news": settings.topic(settings.news_topic),
            "tweet": settings.topic(settings.tweets_topic),
        }

    # ---- producing

    async def send(self, tag: str, due: float | None = None):
        """Send the next message (id ``tag-n``); returns the produce future."""
        rec = dict(self.messages[self.n % len(self.messages)])
        doc_id = f"{tag}-{self.n:07d}"
        self.n += 1
        rec["id"] = doc_id
        wall = time.time_ns() // 1_000_000
        rec["published_at"] = wall
        value = orjson.dumps(rec)
        topic = self.topics["tweet" if rec.get("kind") == "tweet" else "news"]
        now = time.perf_counter()
        self.t.sent[doc_id] = now
        if due is not None:
            self.t.lag[doc_id] = now - due
        fut = await self.producer.send(topic, value, key=doc_id.encode(), timestamp_ms=wall)
        return doc_id, fut

    async def burst(self, tag: str, n: int) -> list[str]:
        ids, futures = [], []
        for _ in range(n):
            doc_id, fut = await self.send(tag)
            ids.append(doc_id)
            futures.append(fut)
        await asyncio.gather(*futures)
        return ids

    async def paced(self, tag: str, rate: float, duration: float) -> list[str]:
        """Open loop: message i is due at t0 + i / rate, whatever happened to earlier sends."""
        n = max(1, round(rate * duration))
        ids, futures = [], []
        t0 = time.perf_counter() + 0.01
        for i in range(n):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            doc_id, fut = await self.send(tag, due)
            ids.append(doc_id)
            futures.append(fut)
        await asyncio.gather(*futures)
        return ids

    # ---- observing

    async def subscribe(self, redis, ready: asyncio.Event) -> None:
        from pipeline.keys import Keys

        pubsub = redis.pubsub()
        await pubsub.subscribe(Keys(self.s.namespace).updates)
        ready.set()
        applied = self.t.applied
        try:
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if msg is None:
                    continue
                now = time.perf_counter()
                self.t.updates += 1
                doc_id = orjson.loads(msg["data"])["last_doc_id"]
                if doc_id not in applied:
                    applied[doc_id] = now
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def wait_applied(self, ids: list[str], timeout: float, what: str) -> int:
        """Wait until every id is applied (or ``timeout``); returns how many were."""
        deadline = time.perf_counter() + timeout
        applied = self.t.applied
        while True:
            self.check_worker()
            done = sum(1 for i in ids if i in applied)
            if done == len(ids):
                return done
            if time.perf_counter() >= deadline:
                log(f"{what}: only {done}/{len(ids)} applied after {timeout:.0f}s; going on")
                return done
            await asyncio.sleep(0.05)

    def check_worker(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"the worker exited with status {self.proc.returncode}")

    # ---- the worker process

    def start_worker(self) -> None:
        from pipeline.infra import _pdeathsig_preexec

        self.proc = subprocess.Popen(
            self.worker_cmd,
            env=self.env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            process_group=0,  # Ctrl-C reaches only us; we stop the worker in order
            preexec_fn=_pdeathsig_preexec(),  # noqa: PLW1509 - and it dies with us if we are killed
        )

    async def stop_worker(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # drains, commits, exits
            try:
                await asyncio.to_thread(proc.wait, 40)
            except subprocess.TimeoutExpired:
                log("worker did not stop within 40s of SIGTERM; killing it")
                proc.kill()
                await asyncio.to_thread(proc.wait)
        else:
            proc.wait()

    # ---- phases

    def apply_rate(self, done: list[str]) -> float:
        """Applies per second: (n - 1) / (last apply - first apply)."""
        times = [self.t.applied[i] for i in done]
        span = max(times) - min(times) if times else 0.0
        return round((len(times) - 1) / span, 1) if span > 0 else 0.0

    def stats(self, ids: list[str]) -> dict:
        sent, applied = self.t.sent, self.t.applied
        done = [i for i in ids if i in applied]
        lat = [(applied[i] - sent[i]) * 1000 for i in done]
        lags = [self.t.lag[i] * 1000 for i in ids if i in self.t.lag]
        return {
            "sent": len(ids),
            "applied": len(done),
            "achieved_per_s": self.apply_rate(done),
            "p50_ms": pct(lat, 50),
            "p99_ms": pct(lat, 99),
            "max_ms": round(max(lat), 1) if lat else None,
            "producer_lag_p99_ms": pct(lags, 99),
        }

    async def run(self, backlog: int, fractions: list[float], duration: float) -> dict:
        import redis.asyncio as aioredis
        from aiokafka import AIOKafkaProducer

        from pipeline.infra import create_topics

        s = self.s
        topics = [
            s.topic(t) for t in (s.news_topic, s.tweets_topic, s.documents_topic, s.scores_topic, s.dlq_topic)
        ]
        await create_topics(s.bootstrap, topics, s.partitions)
        redis = aioredis.Redis.from_url(s.redis_url)
        subscribed = asyncio.Event()
        sub = asyncio.create_task(self.subscribe(redis, subscribed), name="subscribe")
        self.producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap, enable_idempotence=False, acks="all")
        await self.producer.start()
        out: dict = {}
        try:
            await subscribed.wait()
            t_start = time.perf_counter()
            self.start_worker()
            log("worker started; warming up (model load, group join, first batches)")
            warm = await self.burst("warm", 2 * s.max_batch)
            if await self.wait_applied(warm, 180, "warm-up") < len(warm):
                raise RuntimeError("the worker did not apply the warm-up messages")
            out["worker_ready_s"] = round(time.perf_counter() - t_start, 1)
            log(f"worker ready after {out['worker_ready_s']}s; backlog of {backlog}")

            procs = {**self.pids, "worker": self.proc.pid if self.proc else None, "bench": os.getpid()}
            profile_backlog = self.profile and self.proc is not None and self.profile_load is None
            if profile_backlog:
                self.proc.send_signal(signal.SIGUSR2)  # profiling on
            cpu0 = {k: cpu_seconds(pid) for k, pid in procs.items()}
            cpu0["worker"], loop0 = tree_cpu_seconds(procs["worker"])
            ids = await self.burst("backlog", backlog)
            await self.wait_applied(ids, max(60.0, backlog / 20), "backlog")
            cpu1 = {k: cpu_seconds(pid) for k, pid in procs.items()}
            cpu1["worker"], loop1 = tree_cpu_seconds(procs["worker"])
            if profile_backlog:
                self.proc.send_signal(signal.SIGUSR2)  # profiling off, stats written
                self.profiled_messages = backlog
            times = sorted(self.t.applied[i] for i in ids if i in self.t.applied)
            span = times[-1] - min(self.t.sent[i] for i in ids) if times else 0.0
            max_rate = round(len(times) / span, 1) if span > 0 else 0.0
            steady = None
            if len(times) >= 10:
                lo, hi = times[len(times) // 10], times[(len(times) * 9) // 10]
                steady = round((len(times) * 8 // 10) / (hi - lo), 1) if hi > lo else None
            out["backlog"] = {
                "messages": backlog,
                "applied": len(times),
                "seconds": round(span, 2),
                "per_s": max_rate,
                "steady_per_s": steady,
                # where the machine's CPU went while the backlog drained (the worker's share
                # includes the model): CPU milliseconds per message, by process
                "cpu_ms_per_msg": {
                    k: round((cpu1[k] - cpu0[k]) * 1000 / backlog, 3)
                    for k in procs
                    if cpu0[k] is not None and cpu1[k] is not None
                },
            }
            if None not in (loop0, loop1, cpu0["worker"], cpu1["worker"]):
                loop_ms = (loop1 - loop0) * 1000 / backlog
                all_ms = (cpu1["worker"] - cpu0["worker"]) * 1000 / backlog
                out["backlog"]["worker_cpu_ms_per_msg"] = {
                    "event_loop_thread": round(loop_ms, 3),
                    "other_threads": round(max(0.0, all_ms - loop_ms), 3),  # clock ticks: >= -0.01
                }
            if max_rate <= 0:
                raise RuntimeError("nothing of the backlog was applied")
            log(f"backlog drained at {max_rate}/s (steady {steady}/s)")

            loads = []
            for f in fractions:
                rate = f * max_rate
                await asyncio.sleep(1.0)
                profile_here = self.profile and self.proc is not None and self.profile_load == f
                if profile_here:
                    self.proc.send_signal(signal.SIGUSR2)
                all0, loop0 = tree_cpu_seconds(procs["worker"])
                ids = await self.paced(f"load{round(f * 100)}", rate, duration)
                await self.wait_applied(ids, max(10.0, 2 * duration), f"load {f:.0%}")
                all1, loop1 = tree_cpu_seconds(procs["worker"])
                if profile_here:
                    self.proc.send_signal(signal.SIGUSR2)
                    self.profiled_messages = len(ids)
                row = {"fraction": f, "offered_per_s": round(rate, 1), **self.stats(ids), "ids": ids}
                if None not in (all0, all1, loop0, loop1) and ids:
                    # paced: the worker's CPU per message at this rate, idle wake-ups included
                    row["worker_cpu_ms_per_msg"] = {"all": round((all1 - all0) * 1000 / len(ids), 3),
                                                    "event_loop_thread": round((loop1 - loop0) * 1000 / len(ids), 3)}  # fmt: skip
                loads.append(row)
                log(
                    f"offered {row['offered_per_s']}/s: achieved {row['achieved_per_s']}/s, "
                    f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms"
                )
            out["loads"] = loads
            out["updates_received"] = self.t.updates
        finally:
            await self.stop_worker()
            sub.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sub
            await self.producer.stop()
            await redis.aclose()
        await self.add_breakdown(out["loads"])
        return out

    async def add_breakdown(self, loads: list[dict]) -> None:
        """Per load: ``scored_at - ingested_at`` percentiles from the documents topic."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        wanted = {i: row for row in loads for i in row["ids"]}
        found: dict[str, int] = {}
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.s.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
        )
        await consumer.start()
        try:
            topic = self.s.topic(self.s.documents_topic)
            tps = [TopicPartition(topic, p) for p in range(self.s.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            deadline = time.perf_counter() + 30
            while len(found) < len(wanted) and time.perf_counter() < deadline:
                batches = await consumer.getmany(timeout_ms=500, max_records=5000)
                if not batches:
                    at_end = [
                        (h := consumer.highwater(tp)) is not None and await consumer.position(tp) >= h
                        for tp in tps
                    ]
                    if all(at_end):
                        break
                for records in batches.values():
                    for r in records:
                        d = orjson.loads(r.value)
                        if d["id"] in wanted:
                            found[d["id"]] = d["scored_at"] - d["ingested_at"]
        finally:
            await consumer.stop()
        for row in loads:
            ms = [float(found[i]) for i in row.pop("ids") if i in found]
            row["ingest_to_scored_p50_ms"] = pct(ms, 50)
            row["ingest_to_scored_p99_ms"] = pct(ms, 99)


def novelty_comparison(on: list[dict], off: list[dict]) -> dict:
    """The worker's CPU per message and drain rate with story detection on and off, from pairs of
    backlog drains of the same messages (the first "on" drain is the main backlog), and their
    ratios: one per pair, and the median of those. A single pair's ratio moves by +-0.2 on a
    shared 2-core host (the batch sizes the worker settles on change its per-message overhead),
    so ``--novelty-pairs`` repeats the pairs in alternating order."""

    def pick(b: dict) -> dict:
        return {"per_s": b["per_s"], "worker_cpu_ms_per_msg": b["cpu_ms_per_msg"].get("worker"),
                "redis_cpu_ms_per_msg": b["cpu_ms_per_msg"].get("redis")}  # fmt: skip

    pairs = []
    for a, b in zip(map(pick, on), map(pick, off), strict=True):
        pairs.append({"on": a, "off": b, "on_over_off": {k: round(a[k] / b[k], 3) for k in a if a[k] and b[k]}})
    keys = pairs[0]["on_over_off"].keys()
    median = {k: round(statistics.median(p["on_over_off"][k] for p in pairs), 3) for k in keys}
    return {"pairs": len(pairs), "on": pairs[0]["on"], "off": pairs[0]["off"], "on_over_off": median,
            "each_pair": pairs}  # fmt: skip


def cpu_budget(cpu_ms_per_msg: dict[str, float], engine_ms_per_text: float, goal: float = RATIO_GOAL) -> dict:
    """What the CPU sums allow on this machine: every process's CPU per message during the backlog
    against the engine's own CPU per text. ``cpu_bound_per_s`` is the end-to-end rate if every
    core were busy; ``e2e_vs_engine_bound`` the best ratio to the engine alone at that cost (the
    engine alone has every core); ``non_model_ms_allowed`` what all the non-model work (worker
    event loop, broker, Redis, this bench) may cost per message for the ``goal`` ratio."""
    total = sum(cpu_ms_per_msg.values())
    cores = len(os.sched_getaffinity(0))
    return {
        "ms_per_msg_all_processes": round(total, 3),
        "cpu_bound_per_s": round(1000 * cores / total, 1) if total else None,
        "e2e_vs_engine_bound": round(engine_ms_per_text / total, 3) if total else None,
        "non_model_ms_per_msg": round(total - engine_ms_per_text, 3),
        "non_model_ms_allowed": round(engine_ms_per_text / goal - engine_ms_per_text, 3),
    }


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one compact JSON object (default: indented)")
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: small backlog, two short loads (< 1 minute)"
    )
    ap.add_argument(
        "--backlog", type=int, default=None, help="messages in the backlog phase (default 3000; quick 300)"
    )
    ap.add_argument(
        "--duration", type=float, default=None, help="seconds per offered load (default 20; quick 3)"
    )
    ap.add_argument(
        "--loads",
        default=None,
        help="fractions of the max sustainable rate (default 0.25,0.5,0.75,0.9; quick 0.5,0.9)",
    )
    ap.add_argument(
        "--engine-texts", type=int, default=None, help="texts for the engine-alone run (default: --backlog)"
    )
    ap.add_argument("--model", type=Path, default=None, help="model directory (default: the shipped model)")
    ap.add_argument("--rule", default=None, help="exit rule spec (default: the model's tuned rule)")
    ap.add_argument(
        "--max-batch", type=int, default=None, help="micro-batch / engine batch (default: settings)"
    )
    ap.add_argument("--threads", type=int, default=None, help="torch threads, engine alone and worker alike")
    ap.add_argument(
        "--engine",
        choices=("model", "null"),
        default="model",
        help="'null': a stand-in engine answering at no cost (benchmark only; measures the worker without the model)",
    )
    ap.add_argument(
        "--profile-worker",
        type=Path,
        default=None,
        help="with --engine null: cProfile the worker's event loop during the backlog drain; top functions to this file",
    )
    ap.add_argument(
        "--profile-load", type=float, default=None, metavar="FRACTION",
        help="with --profile-worker: profile the paced phase at this fraction of --loads instead of the backlog",
    )  # fmt: skip
    ap.add_argument(
        "--processes", type=int, default=1,
        help="worker processes in the group (finsent worker --processes N); CPU figures sum them",
    )  # fmt: skip
    ap.add_argument(
        "--texts", default=None,
        help="texts to send instead of the bundled sample feed: a text,label CSV or a dataset name "
        "(e.g. twitter_financial_news/train, under FINSENT_DATA_DIR), cycled like the feed",
    )  # fmt: skip
    ap.add_argument(
        "--compare-novelty", action="store_true",
        help="drain the backlog a second time with story detection off (FINSENT_NOVELTY=false): CPU per "
        "message with novelty on vs off, from one run",
    )  # fmt: skip
    ap.add_argument(
        "--novelty-pairs", type=int, default=1,
        help="with --compare-novelty: this many on/off pairs of backlog drains, the later ones in "
        "alternating order (off first, then on first, ...); the JSON gives each pair's ratios and their median",
    )  # fmt: skip
    ap.add_argument("--null-worker", default=None, help=argparse.SUPPRESS)  # the --engine null child
    ap.add_argument("--profile-out", default=None, help=argparse.SUPPRESS)
    # what the supervisor passes each child (unused by the null child: no metrics, one log)
    ap.add_argument("--metrics-port", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--process-index", default=None, help=argparse.SUPPRESS)
    ap.add_argument(
        "--e2e-timeout",
        type=float,
        default=None,
        help="give up (and clean up) if the end-to-end phases take longer (default 360 s; quick 150 s)",
    )
    args = ap.parse_args()
    if args.null_worker is not None:
        null_worker(args.null_worker, args.profile_out, args.processes)
        return
    null = args.engine == "null"
    if args.profile_worker and not null:
        ap.error("--profile-worker needs --engine null")
    if args.novelty_pairs < 1:
        ap.error("--novelty-pairs must be at least 1")
    if args.profile_worker and args.processes > 1:
        ap.error("--profile-worker profiles one process: leave --processes at 1")
    backlog = args.backlog or (300 if args.quick else 3000)
    duration = args.duration or (3.0 if args.quick else 20.0)
    fractions = [
        float(x) for x in (args.loads or ("0.5,0.9" if args.quick else "0.25,0.5,0.75,0.9")).split(",")
    ]
    if args.profile_load is not None and (not args.profile_worker or args.profile_load not in fractions):
        ap.error("--profile-load needs --profile-worker and one of the --loads fractions")
    n_engine = args.engine_texts or backlog

    # SIGTERM -> SystemExit, so the finally blocks stop the worker, the broker and clean Redis
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t_begin = time.perf_counter()
    model_dir, model_source = (None, None) if null else resolve_model(args.model)
    env = dict(os.environ)
    if args.threads:
        env["FINSENT_THREADS"] = str(args.threads)

    from pipeline.inference import engine_mode, engine_replicas, exit_rule, load_model
    from pipeline.infra import EmbeddedBroker, delete_keys_with_prefix, redis_server
    from pipeline.settings import Settings

    overrides = {
        "metrics_port": 0,
        "namespace": f"bench.{uuid.uuid4().hex[:8]}.",
        "group_id": "finsent-bench",
    }
    if model_dir is not None:
        overrides["model_dir"] = model_dir
    if args.max_batch:
        overrides["max_batch"] = args.max_batch
    if args.rule:
        overrides["exit_rule"] = args.rule
    if args.threads:
        overrides["threads"] = args.threads
    settings = Settings(**overrides)
    training = subprocess.run(
        ["pgrep", "-f", "finsent train"], check=False, capture_output=True, text=True
    ).stdout.split()
    load_start = [round(x, 2) for x in os.getloadavg()]
    messages = sample_messages(args.texts)

    engine_runs: list[float] = []
    engine_cpu: list[float] = []
    if null:
        log(f"engine: {NULL_ENGINE}; no engine-alone phase")
        model = rule = texts = None
    else:
        log(f"model {model_dir} ({model_source}); engine alone on {n_engine} texts")
        model = load_model(settings)
        rule = exit_rule(settings, model)
        texts = [messages[i % len(messages)]["text"] for i in range(n_engine)]
        tps, cpu = engine_alone(settings, model, texts)
        engine_runs, engine_cpu = [tps], [cpu]
        log(f"engine alone: {engine_runs[0]:.1f} texts/s")

    prof_file: Path | None = None
    with EmbeddedBroker() as broker, redis_server(settings.redis_url) as redis_url:
        s = settings.model_copy(update={"bootstrap": broker.bootstrap, "redis_url": redis_url})

        def worker_cmd(s: Settings, profile_out: Path | None = None) -> list[str]:
            """The worker child's command line for settings ``s`` (namespace, group)."""
            if null:
                child = {
                    "bootstrap": s.bootstrap,
                    "redis_url": redis_url,
                    "namespace": s.namespace,
                    "group_id": s.group_id,
                    "max_batch": s.max_batch,
                    "max_wait_ms": s.max_wait_ms,
                    "metrics_port": 0,
                    "session_timeout_ms": SESSION_TIMEOUT_MS,
                }
                cmd = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--null-worker",
                    orjson.dumps(child).decode(),
                ]
                if args.processes > 1:
                    cmd += ["--processes", str(args.processes)]
                if profile_out is not None:
                    cmd += ["--profile-out", str(profile_out)]
            else:
                cmd = [
                    sys.executable,
                    "-m",
                    "pipeline.cli",
                    "worker",
                    "--bootstrap",
                    s.bootstrap,
                    "--redis-url",
                    redis_url,
                    "--namespace",
                    s.namespace,
                    "--group-id",
                    s.group_id,
                    "--max-batch",
                    str(s.max_batch),
                    "--max-wait-ms",
                    str(s.max_wait_ms),
                    "--metrics-port",
                    "0",
                    "--model",
                    str(model_dir),
                    "--session-timeout-ms",
                    str(SESSION_TIMEOUT_MS),
                    "--log-level",
                    "WARNING",
                ]
                if args.rule:
                    cmd += ["--rule", args.rule]
                if args.processes > 1:
                    cmd += ["--processes", str(args.processes)]
            return cmd

        if args.profile_worker:
            prof_file = args.profile_worker.with_suffix(".prof.tmp")
            prof_file.unlink(missing_ok=True)
        pids = {"broker": broker.pid, "redis": redis_pid(redis_url)}
        timeout = args.e2e_timeout or (150 if args.quick else 360)
        try:
            bench = Bench(s, messages, worker_cmd(s, prof_file), env, pids, profile=prof_file is not None,
                          profile_load=args.profile_load)
            e2e = asyncio.run(asyncio.wait_for(bench.run(backlog, fractions, duration), timeout))
        finally:
            delete_keys_with_prefix(redis_url, s.namespace)
        novelty_on: list[dict] = [e2e["backlog"]]
        novelty_off: list[dict] = []

        def drain(on: bool, tag: str) -> dict:
            """The backlog again in a fresh namespace and group, story detection on or off."""
            sx = s.model_copy(update={"namespace": f"{s.namespace}{tag}.", "group_id": f"{s.group_id}-{tag}"})
            try:
                bench = Bench(sx, messages, worker_cmd(sx), {**env, "FINSENT_NOVELTY": str(on).lower()}, pids)
                return asyncio.run(asyncio.wait_for(bench.run(backlog, [], duration), timeout))["backlog"]
            finally:
                delete_keys_with_prefix(redis_url, sx.namespace)

        if args.compare_novelty:  # the same backlog again, a second worker without story detection
            log("backlog again with story detection off (FINSENT_NOVELTY=false)")
            novelty_off.append(drain(False, "off0"))
            for i in range(1, args.novelty_pairs):
                order = (False, True) if i % 2 else (True, False)
                for on in order:
                    log(f"pair {i + 1}/{args.novelty_pairs}: backlog with story detection {'on' if on else 'off'}")
                    (novelty_on if on else novelty_off).append(drain(on, f"{'on' if on else 'off'}{i}"))
        external_redis = redis_url == settings.redis_url
        bootstrap = s.bootstrap

    max_rate = e2e["backlog"]["per_s"]
    worker_ms = e2e["backlog"]["cpu_ms_per_msg"].get("worker")
    loop_ms = e2e["backlog"].get("worker_cpu_ms_per_msg", {}).get("event_loop_thread")
    loads = e2e["loads"]
    half = min(loads, key=lambda r: abs(r["fraction"] - 0.5))
    p99_half = half["p99_ms"] if abs(half["fraction"] - 0.5) < 1e-9 else None
    if null:
        engine_tps = engine_ms = None
        engine_block = {"kind": NULL_ENGINE, "cpu_ms_per_text": 0.0, "max_batch": settings.max_batch}
        encode_ms = 0.0
    else:
        tps, cpu = engine_alone(settings, model, texts)
        engine_runs.append(tps)
        engine_cpu.append(cpu)
        log(f"engine alone (after): {engine_runs[1]:.1f} texts/s")
        engine_tps = sum(engine_runs) / len(engine_runs)
        engine_ms = sum(engine_cpu) / len(engine_cpu)
        encode_ms = encode_ms_per_text(model, texts)
        engine_block = {
            "kind": "model",
            "runs_texts_per_s": [round(x, 1) for x in engine_runs],
            "cpu_ms_per_text": round(engine_ms, 3),
            "encode_cpu_ms_per_text": round(encode_ms, 3),  # part of it; runs on the worker's event loop
            "texts": n_engine,
            "max_batch": settings.max_batch,
            "mode": engine_mode(settings),
            "policy": settings.engine_policy,
            "rule": rule.describe(),
            "device": settings.device,
            "replicas": engine_replicas(settings),
            "threads_per_replica": __import__("torch").get_num_threads(),
        }
    out = {
        "engine_kind": NULL_ENGINE if null else "model",
        "engine_texts_per_s": None if null else round(engine_tps, 1),
        "max_sustainable_per_s": max_rate,
        "e2e_vs_engine": None if null else round(max_rate / engine_tps, 3),
        "p99_ms_at_half_max": p99_half,
        "goals": {
            f"e2e_vs_engine>={RATIO_GOAL}": None if null else max_rate / engine_tps >= RATIO_GOAL,
            "p99_at_half_max<=250ms": None if p99_half is None else p99_half <= 250,
        },
        "loads": loads,
        "backlog": e2e["backlog"],
        # the worker's own (non-model) CPU per message during the backlog: with the null engine all
        # of the worker; with the model, the worker minus the engine-alone CPU per text (an
        # estimate: the engine alone ran with every core to itself). The event loop is one thread,
        # so 1000 / its ms per message is the most one worker process can apply per second with
        # a free engine (a GPU); tokenisation (encode) runs on it too with the model.
        "worker_non_model": {
            "cpu_ms_per_msg": None
            if worker_ms is None
            else round(worker_ms if null else worker_ms - engine_ms, 3),
            "event_loop_ms_per_msg": loop_ms,
            "event_loop_ms_per_msg_excluding_encode": None
            if loop_ms is None
            else round(loop_ms - encode_ms, 3),
            "event_loop_bound_per_s": round(1000 / (loop_ms - encode_ms), 1)
            if loop_ms and loop_ms > encode_ms
            else None,
        },
        "cpu_budget": None if null else cpu_budget(e2e["backlog"]["cpu_ms_per_msg"], engine_ms),
        "novelty": novelty_comparison(novelty_on, novelty_off) if novelty_off else None,
        "engine": engine_block,
        "model": None
        if null
        else {"version": model.config.version, "dir": str(model_dir), "source": model_source},
        "setup": {
            "latency": "first PUBLISH finsent:updates for the doc received by the bench - producer send, same process",
            "worker": ("one `finsent worker` child process" if not null
                       else "one child process running pipeline.worker.Worker(settings, engine=NullEngine(...))"),
            "processes": args.processes,  # > 1: a supervisor (pipeline/supervisor.py) and this many workers
            "texts": args.texts or "pipeline/data/sample_feed.jsonl (360 texts)",
            "distinct_texts": len(messages),
            "namespace": settings.namespace,
            "bootstrap": bootstrap,
            "partitions": settings.partitions,
            "max_wait_ms": settings.max_wait_ms,
            "duration_s_per_load": duration,
            "redis": "external" if external_redis else "embedded valkey",
            "cpus": os.cpu_count(),
            "loadavg_start": load_start,
            "training_running": bool(training),
            "quick": args.quick,
            "worker_ready_s": e2e["worker_ready_s"],
            "updates_received": e2e["updates_received"],
        },
        "seconds": round(time.perf_counter() - t_begin, 1),
    }
    if prof_file is not None:
        if prof_file.exists():
            phase = (f"a backlog drain of {backlog} messages" if args.profile_load is None
                     else f"the paced load at {args.profile_load:.0%} ({bench.profiled_messages} messages, idle wake-ups included)")  # fmt: skip
            header = (
                f"cProfile of the worker's event-loop thread during {phase}, "
                f"engine {NULL_ENGINE} (bench/pipeline.py --engine null --profile-worker)"
            )
            profile_report(prof_file, args.profile_worker, header, max(1, bench.profiled_messages))
            prof_file.replace(args.profile_worker.with_suffix(".prof"))  # for pstats/snakeviz
            out["profile"] = str(args.profile_worker)
        else:
            log(f"no profile written by the worker ({prof_file})")
    print(orjson.dumps(out, option=0 if args.json else orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
