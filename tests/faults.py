"""Fault injection for the streaming worker, shared by tests/test_reliability.py (small runs) and
bench/reliability.py (the full table).

Every scenario sends a known stream to a real Kafka-protocol broker (Tansu) and a real Redis,
runs ``finsent worker`` child processes against them, injects its fault, waits until the dust
has settled (every input offset committed, every outbox empty) and then judges the result from
the outputs alone -- the three output topics and Redis -- never from the worker's own counters:

* **accepted**: distinct valid documents sent. A re-sent copy (same id, same text) is not a new
  document; an id re-used with another text must be dead-lettered ``duplicate_id``.
* **lost**: an accepted document missing from ``finsent.documents`` or from Redis (no doc key);
  a bad message without its dead letter; a ticker update missing from ``finsent.ticker-scores``
  (fewer distinct ``score:SYMBOL:seq`` effects than the recomputed seq of the ticker).
* **duplicated**: a document, dead letter or ticker update on its topic more than once (by
  effect id, i.e. by what it is, whatever the worker logged), or Redis' ``applied`` counter above
  the number of accepted documents.

Also checked, reported under ``checks``: every ticker hash in Redis equals
``pipeline.aggregate.recompute`` over the documents topic (score, window counts, seq, as_of);
dead-letter reasons are the expected ones; no unexpected document or dead letter; the group's
committed offsets, sampled every 0.2 s while the scenario runs, never passed an input whose
output record was produced after the sample (``commit_violations``, from the records' Kafka
create timestamps, same host clock).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import os
import random
import re
import shutil
import signal
import subprocess
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from streaming_helpers import (
    MALFORMED,
    PHRASES,
    SYMBOLS,
    T0,
    produce,
    read_topic,
    spawn_worker,
    valid_message,
)

from pipeline.aggregate import recompute
from pipeline.infra import EmbeddedBroker, create_topics, delete_keys_with_prefix, free_port, wait_for_port
from pipeline.keys import Keys
from pipeline.linking import MAX_LINKS
from pipeline.schemas import MAX_TICKERS, DeadLetter, ScoredDocument, TickerScore
from pipeline.settings import Settings

__all__ = ["HOSTILE", "SCENARIOS", "Env", "PrivateRedis", "build_fast_model"]

SAMPLE_EVERY_S = 0.2


# ============================================================================ the stream


@dataclass(frozen=True, slots=True)
class Item:
    """One input message and what must come of it.

    expect: ``doc`` (a new accepted document ``doc_id``), ``resent`` (a copy of ``doc_id``: no new
    effect), ``dlq`` (a dead letter with ``reason``), ``hostile`` (accepted ``doc_id``, whose
    document must pass the named check).
    """

    kind: str
    value: bytes | None
    expect: str
    doc_id: str | None = None
    reason: str | None = None
    check: str | None = None
    key: bytes | None = None

    @property
    def partition_key(self) -> bytes | None:
        # keyed by id, as feeds do: copies and re-used ids land in the partition of the original
        return self.doc_id.encode() if self.doc_id else self.key


@dataclass(frozen=True, slots=True)
class Sent:
    item: Item
    topic: str
    partition: int
    offset: int

    @property
    def effect(self) -> str | None:
        """The output effect this input must produce (None: none of its own)."""
        if self.item.expect in ("doc", "hostile"):
            return f"doc:{self.item.doc_id}"
        if self.item.expect == "dlq":
            return f"dlq:{self.topic}:{self.partition}:{self.offset}"
        return None


def valid_items(n: int, tag: str, *, start: int = 0, spacing_ms: int = 1000) -> list[Item]:
    out = []
    for i in range(start, start + n):
        kind, value = valid_message(i, tag, spacing_ms=spacing_ms)
        out.append(Item(kind, value, "doc", doc_id=orjson.loads(value)["id"]))
    return out


def mixed_items(n_valid: int, tag: str, *, bad_every: int = 20, resend_every: int = 50, start: int = 0,
                salt: bytes = b"") -> list[Item]:  # fmt: skip
    """Valid messages with a malformed one after every ``bad_every``-th, a re-sent copy after every
    ``resend_every``-th and an id re-used with another text after every ``4 * resend_every``-th.
    A copy and a re-used id follow their original in the same partition (keyed by id), later
    in event time, so the original is always the one applied. ``salt`` is appended to the
    malformed payloads (trailing whitespace keeps their reason)."""
    out: list[Item] = []
    for j, it in enumerate(valid_items(n_valid, tag, start=start)):
        i = start + j
        out.append(it)
        if i % bad_every == bad_every - 1:
            raw, reason = MALFORMED[(i // bad_every) % len(MALFORMED)]
            out.append(Item(it.kind, raw + salt, "dlq", reason=reason))
        if i % resend_every == resend_every - 1:
            out.append(Item(it.kind, it.value, "resent", doc_id=it.doc_id))
        if i % (4 * resend_every) == 2 * resend_every - 1:
            d = orjson.loads(it.value)  # type: ignore[arg-type]
            d["text"] += " (edited)"
            d["published_at"] += 1
            out.append(Item(it.kind, orjson.dumps(d), "dlq", doc_id=it.doc_id, reason="duplicate_id"))
    return out


# ---------------------------------------------------------------------------- hostile input


def _msg(doc_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": doc_id, "text": "Nvidia shares rise", "published_at": T0, **fields}


def _nest(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


#: (name, build(doc_id) -> raw bytes or None, expected outcome): a dead-letter reason, or
#: ``accepted:CHECK`` -- accepted with the documented safe handling that CHECK verifies.
HOSTILE: tuple[tuple[str, Callable[[str], bytes | None], str], ...] = (
    ("invalid UTF-8", lambda i: b'{"id": "' + i.encode() + b'", "text": "\xff\xfe caf\xe9", "published_at": 1}', "not_utf8"),
    ("not JSON", lambda i: b"<html><body>502 Bad Gateway</body></html>", "not_json"),
    ("JSON array", lambda i: orjson.dumps([_msg(i)]), "not_object"),
    ("JSON string", lambda i: b'"just a string"', "not_object"),
    ("null value (tombstone)", lambda i: None, "wrong_type"),
    ("empty value", lambda i: b"", "not_json"),
    ("missing text", lambda i: orjson.dumps({"id": i, "published_at": T0}), "missing_field"),
    ("text is a number", lambda i: orjson.dumps(_msg(i, text=42)), "wrong_type"),
    ("published_at is a bool", lambda i: orjson.dumps(_msg(i, published_at=True)), "wrong_type"),
    ("tickers is a string", lambda i: orjson.dumps(_msg(i, tickers="AAPL")), "bad_tickers"),
    ("id of 300 characters", lambda i: orjson.dumps(_msg("x" * 300)), "bad_value"),
    ("message over 1 MB", lambda i: orjson.dumps(_msg(i, text="A" * 1_200_000)), "too_large"),
    ("900 KB text", lambda i: orjson.dumps(_msg(i, text="Tesla shares fall. " * 47_000)), "accepted:truncated"),
    ("2,000-deep nesting", lambda i: orjson.dumps(_msg(i))[:-1] + b', "x": ' + _nest(2000) + b"}", "not_json"),
    ("500-deep nesting in an unknown field", lambda i: orjson.dumps(_msg(i))[:-1] + b', "x": ' + _nest(500) + b"}", "accepted:plain"),
    ("NaN", lambda i: orjson.dumps(_msg(i))[:-1] + b', "published_at": NaN}', "not_json"),
    ("Infinity", lambda i: orjson.dumps(_msg(i))[:-1] + b', "score": -Infinity}', "not_json"),
    ("year 2999", lambda i: orjson.dumps(_msg(i, published_at="2999-01-01T00:00:00Z")), "future_timestamp"),
    ("epoch 10**30 ms", lambda i: orjson.dumps(_msg(i))[:-1] + b', "published_at": 1000000000000000000000000000000}', "future_timestamp"),
    ("year 1900", lambda i: orjson.dumps(_msg(i, published_at="1900-01-01T00:00:00Z")), "too_old"),
    ("epoch seconds", lambda i: orjson.dumps(_msg(i, published_at=T0 // 1000)), "too_old"),
    ("only control characters", lambda i: orjson.dumps(_msg(i, text="\x00\x01\x07\x1b\x7f")), "empty_text"),
    ("control characters", lambda i: orjson.dumps(_msg(i, text="$AMD\x00 beats\x07 estimates\x1b[31m")), "accepted:clean"),
    ("right-to-left override", lambda i: orjson.dumps(_msg(i, text="\u202e$TSLA stock\u202c falls \u200f\u2067x\u2069")), "accepted:clean"),
    ("10,000 cashtags", lambda i: orjson.dumps(_msg(i, text=" ".join("$" + _tag(n) for n in range(10_000)))), "accepted:capped"),
    ("10,000 feed tickers", lambda i: orjson.dumps(_msg(i, tickers=[_tag(n) for n in range(10_000)])), "accepted:capped"),
)


def _tag(n: int) -> str:
    """A made-up symbol per n: AAAA, AAAB, ..."""
    letters = ""
    for _ in range(4):
        n, r = divmod(n, 26)
        letters = chr(65 + r) + letters
    return letters


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def check_hostile_doc(check: str, doc: ScoredDocument) -> bool:
    """The documented safe handling of an accepted hostile message."""
    text = doc.text or ""
    if check == "truncated":
        return doc.truncated and len(text) <= 20_000
    if check == "clean":
        return not _CONTROL.search(text) and any(t.method == "cashtag" for t in doc.tickers)
    if check == "capped":
        return len(doc.tickers) <= max(MAX_LINKS, MAX_TICKERS)
    return check == "plain"


def poison_items(n: int, tag: str, share: float = 0.2) -> list[Item]:
    """``n`` messages, ``share`` of them hostile (every :data:`HOSTILE` kind in turn), plus an id
    re-used with another text per 50 valid messages."""
    out: list[Item] = []
    n_bad = round(n * share)
    step = n / max(1, n_bad)
    valid = iter(valid_items(n, tag))
    h = 0
    for k in range(n):
        if n_bad and int(k / step) != int((k + 1) / step) and h < n_bad:
            name, build, expect = HOSTILE[h % len(HOSTILE)]
            doc_id = f"{tag}-h{h:05d}"
            kind = "tweet" if h % 2 else "news"
            if expect.startswith("accepted:"):
                out.append(Item(kind, build(doc_id), "hostile", doc_id=doc_id, check=expect.split(":", 1)[1]))
            else:
                out.append(Item(kind, build(doc_id), "dlq", reason=expect, check=name, key=doc_id.encode()))
            h += 1
        else:
            it = next(valid)
            out.append(it)
            if len(out) % 50 == 0:
                d = orjson.loads(it.value)  # type: ignore[arg-type]
                d["text"] += " (a different text under the same id)"
                d["published_at"] += 1
                out.append(Item(it.kind, orjson.dumps(d), "dlq", doc_id=it.doc_id, reason="duplicate_id"))
    return out


# ============================================================================ infrastructure


class PrivateRedis:
    """A ``redis-server`` child on its own port, persisting with AOF ``appendfsync always``
    (what the README asks of production: Redis is the commit point). Never the shared one."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / f"redis-{uuid.uuid4().hex[:6]}"
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        from pipeline.infra import _pdeathsig_preexec

        binary = shutil.which("redis-server") or shutil.which("valkey-server")
        if binary is None:
            raise RuntimeError("no redis-server (or valkey-server) on PATH")
        cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
               "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no", "--protected-mode", "no"]  # fmt: skip
        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     preexec_fn=_pdeathsig_preexec())  # fmt: skip  # noqa: PLW1509
        log.close()
        wait_for_port("127.0.0.1", self.port, timeout=10)
        return self.url

    def kill(self) -> None:
        """SIGKILL: no shutdown save; only what the AOF fsynced survives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def build_fast_model(out: Path) -> Path:
    """A tiny random early-exit model (BERT, 2 layers, 64 wide) with the shipped tokenizer, for
    the soak only: its scores mean nothing, it only makes 200,000 messages fit the time budget.
    Its ``model_version`` says so (``soak-tiny-random``)."""
    import torch
    from transformers import BertConfig, BertModel

    from models.backbone import DEFAULT_BACKBONE, Backbone, load_tokenizer
    from models.elbert import ElbertClassifier, ElbertConfig

    base = out / "base"
    tok = load_tokenizer(DEFAULT_BACKBONE)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=128, max_position_embeddings=512)  # fmt: skip
    BertModel(cfg, add_pooling_layer=False).save_pretrained(base)
    tok.save_pretrained(base)
    config = ElbertConfig(base=str(base), max_length=128, version="soak-tiny-random",
                          default_rule={"rule": "full", "params": {}})  # fmt: skip
    model = ElbertClassifier(Backbone.from_pretrained(base), config, tok)
    with torch.no_grad():
        for h in model.heads:
            h.weight.normal_(0, 1.0)
    return model.save(out / "model")


@dataclass
class Env:
    """Where scenarios run: a broker, a Redis, a scratch directory, the worker's model."""

    bootstrap: str
    redis_url: str
    workdir: Path
    model_dir: str | None = None
    rule: str | None = None
    partitions: int = 3
    max_batch: int = 32
    session_timeout_ms: int = 6000
    log: Callable[[str], None] = lambda msg: None


class WorkerProc:
    """One ``finsent worker`` child: signals, liveness, RSS, metrics."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path, metrics_port: int) -> None:
        self.proc = proc
        self.log_path = log_path
        self.metrics_port = metrics_port

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_mb(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def metrics(self) -> dict[str, float]:
        """Prometheus samples: ``name{labels}`` -> value."""
        out: dict[str, float] = {}
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line and line[0] != "#":
                    name, _, value = line.rpartition(" ")
                    out[name] = float(value)
        return out

    def log_text(self) -> str:
        """What this process logged."""
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    async def stop(self, timeout: float = 60) -> int:
        """SIGTERM (drain, commit, exit); SIGKILL after ``timeout``, once SIGUSR1 has had the
        worker log its stacks (where it was stuck). Returns the exit status."""
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return await asyncio.to_thread(self.proc.wait, timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGUSR1)
                await asyncio.sleep(2)
                self.kill()
        return self.proc.wait()

    def log_tail(self, lines: int = 60) -> list[str]:
        """The last ``lines`` lines this process logged (a failed check carries them)."""
        return self.log_text().splitlines()[-lines:]


class Failed(AssertionError):
    """A scenario could not reach its next step in time (the row then reports what it saw)."""


class Run:
    """One scenario: a namespace, the stream sent so far, worker children, a commit sampler."""

    def __init__(self, env: Env, name: str, *, bootstrap: str | None = None, redis_url: str | None = None,
                 lateness_s: float = 3600.0) -> None:  # fmt: skip
        self.env = env
        self.name = name
        ns = f"rel{uuid.uuid4().hex[:8]}."
        self.s = Settings(bootstrap=bootstrap or env.bootstrap, redis_url=redis_url or env.redis_url, namespace=ns,
                          group_id=f"{ns}workers", partitions=env.partitions, max_batch=env.max_batch,
                          metrics_port=0, lateness_s=lateness_s)  # fmt: skip
        self.keys = Keys(ns)
        self.sent: list[Sent] = []
        self.ends: dict[TopicPartition, int] = {}
        self.workers: list[WorkerProc] = []
        self.log_path = env.workdir / f"{name}-{ns.rstrip('.')}.log"
        self.samples: list[tuple[int, TopicPartition, int]] = []
        self.redis = aioredis.Redis.from_url(self.s.redis_url, socket_timeout=2, socket_connect_timeout=1)
        self._sampler: asyncio.Task[None] | None = None
        self._group: AIOKafkaConsumer | None = None
        self.t0 = time.monotonic()
        # what earlier phases on another broker published (broker_restart): counted towards the
        # aggregates and ticker updates, not judged again
        self.prior_docs: list[ScoredDocument] = []
        self.prior_scores: Counter[str | None] = Counter()
        self.applied_base = 0

    # ---- set-up and tear-down

    @property
    def input_tps(self) -> list[TopicPartition]:
        s = self.s
        return [TopicPartition(s.topic(t), p) for t in (s.news_topic, s.tweets_topic) for p in range(s.partitions)]

    async def setup(self) -> None:
        s = self.s
        topics = [s.topic(t) for t in (s.news_topic, s.tweets_topic, s.documents_topic, s.scores_topic, s.dlq_topic)]
        await create_topics(s.bootstrap, topics, s.partitions)
        await self.start_sampler()

    async def start_sampler(self) -> None:
        self._group = AIOKafkaConsumer(bootstrap_servers=self.s.bootstrap, group_id=self.s.group_id,
                                       enable_auto_commit=False, request_timeout_ms=5000)  # fmt: skip
        await self._group.start()
        self._sampler = asyncio.create_task(self._sample_loop(self._group))

    async def stop_sampler(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(BaseException):
                await self._sampler
            self._sampler = None
        if self._group is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._group.stop(), 10)
            self._group = None

    async def _sample_loop(self, group: AIOKafkaConsumer) -> None:
        while True:
            with contextlib.suppress(Exception):
                for tp in self.input_tps:
                    offset = await asyncio.wait_for(group.committed(tp), 2)
                    if offset is not None:
                        self.samples.append((time.time_ns() // 1_000_000, tp, offset))
            await asyncio.sleep(SAMPLE_EVERY_S)

    async def close(self) -> None:
        for w in self.workers:
            if w.alive:
                await w.stop(30)
        await self.stop_sampler()
        await self.redis.aclose()
        with contextlib.suppress(Exception):
            delete_keys_with_prefix(self.s.redis_url, self.s.namespace)

    # ---- inputs and workers

    async def send(self, items: Sequence[Item], chunk: int = 20_000) -> None:
        for i in range(0, len(items), chunk):
            part = items[i : i + chunk]
            metas = await produce(self.s, [(it.kind, it.value) for it in part], keys=[it.partition_key for it in part],
                                  max_request_size=4_000_000)  # fmt: skip
            for it, md in zip(part, metas, strict=True):
                self.sent.append(Sent(it, md.topic, md.partition, md.offset))
                tp = TopicPartition(md.topic, md.partition)
                self.ends[tp] = max(self.ends.get(tp, 0), md.offset + 1)

    def spawn(self, *, metrics_port: int = 0, model_dir: str | None = None, rule: str | None = None,
              threads: int | None = None) -> WorkerProc:  # fmt: skip
        log_path = self.log_path.with_suffix(f".{len(self.workers)}.log")
        proc = spawn_worker(self.s, log_path, model_dir=model_dir or self.env.model_dir,
                            rule=rule or self.env.rule, session_timeout_ms=self.env.session_timeout_ms,
                            metrics_port=metrics_port, threads=threads)  # fmt: skip
        w = WorkerProc(proc, log_path, metrics_port)
        self.workers.append(w)
        return w

    @property
    def n_accepted(self) -> int:
        return len({x.item.doc_id for x in self.sent if x.item.expect in ("doc", "hostile")})

    # ---- observing

    async def applied(self) -> int | None:
        try:
            return int(await self.redis.get(self.keys.applied) or 0)
        except Exception:  # noqa: BLE001 - Redis down is one of the faults
            return None

    async def outbox_pending(self) -> int | None:
        try:
            return sum([await self.redis.xlen(self.keys.outbox(tp.topic, tp.partition)) for tp in self.input_tps])
        except Exception:  # noqa: BLE001
            return None

    def committed(self) -> dict[TopicPartition, int]:
        """The latest sampled committed offset per input partition."""
        out: dict[TopicPartition, int] = {}
        for _, tp, offset in self.samples:
            out[tp] = offset
        return out

    def lag(self) -> int:
        committed = self.committed()
        return sum(end - committed.get(tp, 0) for tp, end in self.ends.items())

    async def until(self, cond: Callable[[], Awaitable[bool]], timeout: float, what: str,
                    watch: Sequence[WorkerProc] = ()) -> float:  # fmt: skip
        """Wait for ``cond``; returns the seconds waited. Raises :class:`Failed` on timeout or
        when a watched worker exits."""
        t0 = time.monotonic()
        while not await cond():
            for w in watch:
                if not w.alive:
                    raise Failed(f"{self.name}: worker exited ({w.proc.returncode}) waiting for {what}:\n"
                                 + w.log_text()[-2000:])  # fmt: skip
            if time.monotonic() - t0 > timeout:
                raise Failed(f"{self.name}: timed out after {timeout:.0f}s waiting for {what} "
                             f"(applied {await self.applied()}, lag {self.lag()})")  # fmt: skip
            await asyncio.sleep(0.1)
        return time.monotonic() - t0

    async def wait_applied(self, n: int, timeout: float, watch: Sequence[WorkerProc] = ()) -> float:
        async def cond() -> bool:
            a = await self.applied()
            return a is not None and a >= n

        return await self.until(cond, timeout, f"{n} applied", watch)

    async def settled(self, timeout: float, watch: Sequence[WorkerProc] = ()) -> float:
        """Wait until every input offset is committed and every outbox is empty."""

        async def cond() -> bool:
            return self.lag() == 0 and await self.outbox_pending() == 0

        return await self.until(cond, timeout, "every offset committed and the outboxes empty", watch)

    # ---- the verdict

    async def verdict(self, fault: str, checks: dict[str, Any] | None = None, error: str | None = None) -> dict[str, Any]:
        """The row: counts from the output topics and Redis (see the module docstring)."""
        s = self.s
        await self.stop_sampler()
        docs_raw = await read_topic(s.bootstrap, s.topic(s.documents_topic))
        scores_raw = await read_topic(s.bootstrap, s.topic(s.scores_topic))
        dlq_raw = await read_topic(s.bootstrap, s.topic(s.dlq_topic))
        accepted = {x.item.doc_id for x in self.sent if x.item.expect in ("doc", "hostile")}
        applied = int(await self.redis.get(self.keys.applied) or 0) - self.applied_base
        ids = sorted(accepted)
        in_redis: set[str] = set()
        for i in range(0, len(ids), 5000):
            vals = await self.redis.mget([self.keys.doc(d) for d in ids[i : i + 5000]])
            in_redis.update(d for d, v in zip(ids[i : i + 5000], vals, strict=True) if v is not None)

        docs = [ScoredDocument.from_json(r.value) for r in docs_raw]
        doc_count = Counter(d.id for d in docs)
        first_doc = {}
        for d in docs:
            first_doc.setdefault(d.id, d)
        lost_docs = sorted(d for d in accepted if doc_count[d] == 0 or d not in in_redis)
        dup_docs = sum(c - 1 for c in doc_count.values() if c > 1)
        unexpected_docs = sorted(set(doc_count) - accepted)

        want_dlq = {x.effect: x for x in self.sent if x.item.expect == "dlq"}
        dlq_count = Counter(r.effect_id for r in dlq_raw)
        letters = {r.effect_id: DeadLetter.from_json(r.value) for r in dlq_raw}
        lost_dlq = sorted(e for e in want_dlq if dlq_count[e] == 0)
        dup_dlq = sum(c - 1 for c in dlq_count.values() if c > 1)
        wrong_reason = sorted(
            f"{x.item.check or ''} {e}: {letters[e].reason} != {x.item.reason}"
            for e, x in want_dlq.items() if e in letters and letters[e].reason != x.item.reason
        )  # fmt: skip
        unexpected_dlq = sorted(f"{e} ({letters[e].reason})" for e in set(dlq_count) - set(want_dlq))

        score_count = Counter(r.effect_id for r in scores_raw)
        dup_scores = sum(c - 1 for c in score_count.values() if c > 1)
        expected = recompute([*self.prior_docs, *first_doc.values()], half_life_s=s.half_life_s, lateness_s=s.lateness_s)
        per_symbol = Counter(e.split(":")[1] for e in score_count + self.prior_scores if e)
        lost_scores = sum(max(0, ts.seq - per_symbol[sym]) for sym, ts in expected.items())
        mismatches = await self._compare_aggregates(expected)

        hostile_bad = sorted(
            f"{x.item.doc_id} ({x.item.check})" for x in self.sent
            if x.item.expect == "hostile" and x.item.doc_id in first_doc
            and not check_hostile_doc(x.item.check or "", first_doc[x.item.doc_id])
        )  # fmt: skip

        lost = len(lost_docs) + len(lost_dlq) + lost_scores
        duplicated = dup_docs + dup_dlq + dup_scores + max(0, applied - len(accepted))
        row: dict[str, Any] = {
            "fault": fault,
            "sent": len(self.sent),
            "accepted": len(accepted),
            "dlq": len(dlq_count),
            "applied": applied,
            "lost": lost,
            "duplicated": duplicated,
        }
        timestamps = {r.effect_id: r.timestamp for r in (*docs_raw, *dlq_raw) if r.effect_id}
        violations = self._commit_violations(timestamps)
        row["checks"] = {
            "document_records": len(docs_raw),
            "score_records": len(scores_raw),
            "lost_documents": lost_docs[:5],
            "lost_dead_letters": lost_dlq[:5],
            "lost_score_updates": lost_scores,
            "aggregate_mismatches": mismatches[:5],
            "wrong_dlq_reasons": wrong_reason[:5],
            "unexpected_documents": unexpected_docs[:5],
            "unexpected_dead_letters": unexpected_dlq[:5],
            "hostile_not_safely_handled": hostile_bad[:5],
            "commit_samples": len(self.samples),
            "commit_violations": violations,
            "outbox_left": await self.outbox_pending(),
            "uncommitted_at_end": self.lag(),
            **(checks or {}),
        }
        row["ok"] = not (
            lost or duplicated or mismatches or wrong_reason or unexpected_docs or unexpected_dlq or hostile_bad
            or violations or row["checks"]["outbox_left"] or error
        )  # fmt: skip
        if error:
            row["error"] = error
        row["seconds"] = round(time.monotonic() - self.t0, 1)
        self.last_docs, self.last_scores = list(first_doc.values()), score_count
        return row

    async def _compare_aggregates(self, expected: dict[str, TickerScore]) -> list[str]:
        out = []
        stored = {x.decode() for x in await self.redis.smembers(self.keys.tickers)}
        if stored != set(expected):
            out.append(f"tickers: {len(stored)} in Redis, {len(expected)} recomputed")
        for sym, want in expected.items():
            h = await self.redis.hgetall(self.keys.ticker(sym))
            if not h:
                out.append(f"{sym}: no hash")
                continue
            got = {k.decode(): v.decode() for k, v in h.items()}
            if not math.isclose(float(got["score"]), want.score, abs_tol=1e-9):
                out.append(f"{sym}: score {got['score']} != {want.score}")
            for f in ("seq", "as_of", "n_5m", "n_1h", "n_24h", "bullish_24h", "bearish_24h", "neutral_24h",
                      "bullish_1h", "bearish_1h", "neutral_1h", "bullish_5m", "bearish_5m", "neutral_5m",
                      "stories_1h"):  # fmt: skip
                if int(got[f]) != getattr(want, f):
                    out.append(f"{sym}: {f} {got[f]} != {getattr(want, f)}")
        return out

    def _commit_violations(self, timestamps: dict[str, int]) -> int:
        """Samples whose committed offset passed an input whose output was produced later."""
        by_tp: dict[TopicPartition, list[Sent]] = {}
        for x in self.sent:
            by_tp.setdefault(TopicPartition(x.topic, x.partition), []).append(x)
        violations = 0
        for tp, xs in by_tp.items():
            xs.sort(key=lambda x: x.offset)
            offsets = [x.offset for x in xs]
            prefix_max, m = [], 0
            for x in xs:  # latest output time among inputs at or before each offset
                if x.effect is not None:
                    m = max(m, timestamps.get(x.effect, 0))
                prefix_max.append(m)
            for t, stp, committed in self.samples:
                if stp != tp:
                    continue
                k = bisect.bisect_left(offsets, committed)  # inputs with offset < committed
                if k and prefix_max[k - 1] > t:
                    violations += 1
        return violations


@contextlib.asynccontextmanager
async def running(env: Env, name: str, **kw: Any) -> AsyncIterator[Run]:
    run = Run(env, name, **kw)
    try:
        await run.setup()
        yield run
    finally:
        await run.close()


def _errors(w: WorkerProc) -> list[str]:
    return [line for line in w.log_text().splitlines() if " WARNING " in line or " ERROR " in line]


def _log_summary(lines: list[str], top: int = 4) -> list[str]:
    """The most frequent warning/error messages (numbers and addresses masked), with counts."""
    kinds = Counter(re.sub(r"\d+", "N", line.split(" ", 2)[-1])[:150] for line in lines)
    return [f"{n}x {msg}" for msg, n in kinds.most_common(top)]


# ============================================================================ scenarios


async def sigkill_loop(env: Env, *, kills: int = 20, chunk: int = 200, seed: int = 7) -> dict[str, Any]:
    """One stream, one worker at a time, SIGKILLed ``kills`` times at random points: each run is
    killed once it has applied a random number of this round's documents, after a random
    0-300 ms more. A final run drains the rest."""
    rnd = random.Random(seed)
    items = mixed_items(chunk * (kills + 1), "kill")
    per_round = math.ceil(len(items) / (kills + 1))
    fault = f"worker SIGKILL x{kills} at random points, restarted each time"
    async with running(env, "sigkill") as run:
        points: list[dict[str, Any]] = []
        error = None
        try:
            for k in range(kills):
                await run.send(items[k * per_round : (k + 1) * per_round])
                base = await run.applied() or 0
                w = run.spawn(metrics_port=free_port())
                target = base + rnd.randint(1, chunk)
                await run.wait_applied(target, 120, [w])
                await asyncio.sleep(rnd.uniform(0, 0.3))
                in_flight = await asyncio.to_thread(_in_flight, w)
                w.kill()
                points.append({"in_flight": in_flight, **await _kill_point(run)})
                env.log(f"kill {k + 1}/{kills}: {points[-1]}")
            await run.send(items[kills * per_round :])
            error = await _last_worker_drains(run)
        except Failed as exc:
            error = str(exc)
        logs = "".join(w.log_text() for w in run.workers)
        recovered = sum(int(m) for m in re.findall(r"recovered (\d+) outbox entries", logs))
        checks = {
            "kills": len(points),
            "kills_with_messages_in_flight": sum(1 for p in points if p["in_flight"]),
            "kills_with_outbox_pending": sum(1 for p in points if p["outbox_pending"]),
            "kills_with_applied_uncommitted": sum(1 for p in points if p["applied_uncommitted"]),
            "outbox_entries_recovered": recovered,
        }
        return await run.verdict(fault, checks, error)


FLOOD_SHAPES = ("{s}", "RT @desk{k}: {s}", "BREAKING: {s}", "{s} https://t.co/f{k}", "{S}", "(Reuters) - {s}",
                "{s} via @wire{k}", "RT @t{k}: BREAKING: {s} https://t.co/z{k}")  # fmt: skip


def flood_items(stories: int, copies: int, tag: str) -> list[Item]:
    """``stories`` headlines, each repeated ``copies`` times the way feeds repeat one (retweets,
    wire tags, links, upper case) under its own id, interleaved in event time."""
    out = []
    for c in range(copies):
        for k in range(stories):
            sym = SYMBOLS[k % len(SYMBOLS)]
            story = f"${sym} {PHRASES[k % len(PHRASES)]} (desk note {k} on plant {k * 7 + 3})"
            text = FLOOD_SHAPES[c % len(FLOOD_SHAPES)].format(s=story, S=story.upper(), k=c)
            doc_id = f"{tag}-{k:03d}-{c:03d}"
            value = orjson.dumps({"id": doc_id, "text": text, "published_at": T0 + (c * stories + k) * 200, "kind": "tweet"})
            out.append(Item("tweet", value, "doc", doc_id=doc_id))
    return out


async def flood(env: Env, *, stories: int = 20, copies: int = 40, seed: int = 11) -> dict[str, Any]:
    """Near-duplicate floods (``stories`` x ``copies``, ids spread over the partitions), the worker
    SIGKILLed once mid-flood and restarted: nothing lost or doubled, and each flood one story
    with each of its copies in it once (story state is committed with the aggregates)."""
    rnd = random.Random(seed)
    items = flood_items(stories, copies, "flood")
    fault = f"near-duplicate floods ({stories} stories x {copies} copies), worker SIGKILLed mid-flood"
    async with running(env, "flood") as run:
        error = None
        checks: dict[str, Any] = {}
        try:
            await run.send(items)
            w = run.spawn()
            await run.wait_applied(rnd.randint(len(items) // 4, len(items) // 2), 120, [w])
            w.kill()
            error = await _last_worker_drains(run)
        except Failed as exc:
            error = str(exc)
        row = await run.verdict(fault, checks, error)
        by_flood: dict[str, set[str]] = {}
        for d in run.last_docs:
            by_flood.setdefault(d.id.rsplit("-", 1)[0], set()).add(d.story)
        split = sorted(f for f, ss in by_flood.items() if len(ss) != 1)
        novelties = sorted(d.novelty for d in run.last_docs)
        row["checks"].update({
            "floods": len(by_flood), "floods_split_into_several_stories": split[:5],
            "novelty_min_median": [round(novelties[0], 6), round(novelties[len(novelties) // 2], 6)] if novelties else None,
        })  # fmt: skip
        row["ok"] = row["ok"] and not split and len(by_flood) == stories
        return row


async def _last_worker_drains(run: Run) -> str | None:
    """A fresh worker applies everything accepted and stops cleanly; what went wrong if not."""
    w = run.spawn()
    await run.wait_applied(run.n_accepted, 180, [w])
    await run.settled(60, [w])
    if await w.stop() != 0:
        return f"the last worker did not stop cleanly:\n{w.log_text()[-1500:]}"
    return None


def _in_flight(w: WorkerProc) -> float | None:
    """Messages the worker fetched and has not finished (not applied, not a duplicate, not
    dead-lettered), from its metrics; None if they could not be read."""
    try:
        m = w.metrics()
    except OSError:
        return None
    def total(name: str, unless: str = "\0") -> float:
        return sum(v for k, v in m.items() if k.split("{", 1)[0] == name and unless not in k)

    # a late document is applied (for its other tickers) and dead-lettered: count it once
    done = (total("finsent_ingest_to_redis_seconds_count") + total("finsent_duplicates_total")
            + total("finsent_dead_letters_total", unless='reason="late"'))  # fmt: skip
    return total("finsent_messages_in_total") - done


async def _kill_point(run: Run) -> dict[str, Any]:
    """What a SIGKILL left behind: outbox entries and applied documents past the commit."""
    await asyncio.sleep(2 * SAMPLE_EVERY_S)  # a fresh sample of the committed offsets
    committed = run.committed()
    past = [x.item.doc_id for x in run.sent
            if x.item.expect == "doc" and x.offset >= committed.get(TopicPartition(x.topic, x.partition), 0)]  # fmt: skip
    vals = await run.redis.mget([run.keys.doc(d) for d in past]) if past else []
    return {
        "applied": await run.applied(),
        "outbox_pending": await run.outbox_pending(),
        "applied_uncommitted": sum(v is not None for v in vals),
    }


async def redis_outage(env: Env, *, n: int = 4000, down_s: float = 10.0) -> dict[str, Any]:
    """A private Redis (AOF, fsync always) is SIGKILLed mid-stream and restarted on the same port
    ``down_s`` later. The worker must retry, keep running, commit nothing unsent, and finish."""
    private = PrivateRedis(env.workdir)
    private.start()
    fault = f"Redis down {down_s:g} s mid-stream (SIGKILL, restart; AOF fsync always)"
    try:
        async with running(env, "redis", redis_url=private.url) as run:
            error = None
            checks: dict[str, Any] = {}
            try:
                await run.send(mixed_items(n, "redis"))
                w = run.spawn()
                await run.wait_applied(n // 4, 120, [w])
                # Nothing is applied while Redis is down, so any count above this one later on is
                # progress made after the restart. (The count read once Redis answers again can be
                # final already: a fast worker's retry may finish the stream before the first poll.)
                at_kill = await run.applied() or 0
                if at_kill >= run.n_accepted:
                    raise Failed(f"the stream was done ({at_kill} applied) before the fault: raise n")
                private.kill()
                killed_at = time.monotonic()
                committed_before = dict(run.committed())
                while time.monotonic() - killed_at < down_s:
                    if not w.alive:
                        raise Failed(f"worker exited while Redis was down:\n{w.log_text()[-2000:]}")
                    await asyncio.sleep(0.2)
                committed_during = sum(o - committed_before.get(tp, 0) for tp, o in run.committed().items())
                errors = _errors(w)
                private.start()
                back = time.monotonic()
                await run.until(lambda: _gt(run.applied(), -1), 10, "Redis to answer", [w])
                await run.until(lambda: _gt(run.applied(), at_kill), 60, "progress after Redis is back", [w])
                checks = {
                    "down_s": round(back - killed_at, 1),
                    "worker_stayed_up": w.alive,
                    "log_lines_while_down": len(errors),
                    "log_while_down": _log_summary(errors),
                    "offsets_committed_while_down": committed_during,
                    "resumed_after_s": round(time.monotonic() - back, 1),
                }
                await run.wait_applied(run.n_accepted, 180, [w])
                await run.settled(60, [w])
                await w.stop()
            except Failed as exc:
                error = str(exc)
            return await run.verdict(fault, checks, error)
    finally:
        private.close()


async def _gt(value: Awaitable[int | None], n: int) -> bool:
    v = await value
    return v is not None and v > n


async def broker_pause(env: Env, *, n: int = 3000, down_s: float = 10.0) -> dict[str, Any]:
    """The broker process is frozen (SIGSTOP) ``down_s`` mid-stream, then resumed (SIGCONT): no
    answers, connections stay open -- a network partition or a stalled broker."""
    fault = f"broker unreachable {down_s:g} s mid-stream (SIGSTOP/SIGCONT)"
    with EmbeddedBroker() as broker:
        async with running(env, "broker-pause", bootstrap=broker.bootstrap) as run:
            error = None
            checks: dict[str, Any] = {}
            try:
                await run.send(mixed_items(n, "pause"))
                w = run.spawn()
                await run.wait_applied(n // 8, 120, [w])
                assert broker.pid is not None
                os.killpg(broker.pid, signal.SIGSTOP)
                t0 = time.monotonic()
                try:
                    a0 = await run.applied()
                    while time.monotonic() - t0 < down_s:
                        if not w.alive:
                            raise Failed(f"worker exited while the broker was frozen:\n{w.log_text()[-2000:]}")
                        await asyncio.sleep(0.2)
                    a1 = await run.applied()
                finally:
                    os.killpg(broker.pid, signal.SIGCONT)
                back = time.monotonic()
                await run.until(lambda: _gt(run.applied(), min(a1 or 0, run.n_accepted - 1)), 90,
                                "progress after the broker is back", [w])  # fmt: skip
                errors = _errors(w)
                checks = {
                    "down_s": round(back - t0, 1),
                    "worker_stayed_up": w.alive,
                    "applied_while_down": (a1 or 0) - (a0 or 0),
                    "log_lines": len(errors),
                    "log": _log_summary(errors),
                    "resumed_after_s": round(time.monotonic() - back, 1),
                }
                await run.wait_applied(run.n_accepted, 180, [w])
                await run.settled(90, [w])
                await w.stop()
            except Failed as exc:
                error = str(exc)
            return await run.verdict(fault, checks, error)


async def two_workers(env: Env, *, n: int = 3000, how: str = "sigterm") -> dict[str, Any]:
    """Workers A and B share the group; once a third is applied, B stops (``sigterm``: drains,
    commits, leaves) or dies (``sigkill``: A takes over after the session timeout and recovers
    B's outboxes). A finishes."""
    fault = {"sigterm": "2 workers, one stops mid-stream (SIGTERM, rebalance)",
             "sigkill": "2 workers, one killed mid-stream (SIGKILL, rebalance)"}[how]  # fmt: skip
    async with running(env, f"two-{how}") as run:
        error = None
        checks: dict[str, Any] = {}
        try:
            a = run.spawn()
            b = run.spawn()
            await run.until(lambda: _assigned(a, b), 120, "both workers to get partitions", [a, b])
            await run.send(mixed_items(n, f"two{how}"))
            await run.wait_applied(n // 3, 120, [a, b])
            checks["applied_when_b_left"] = await run.applied()
            if how == "sigterm":
                checks["stopped_worker_exit_status"] = status = await b.stop()
                if status != 0:
                    checks["stopped_worker_log_tail"] = b.log_tail()
            else:
                b.kill()
            await run.wait_applied(run.n_accepted, 240, [a])
            await run.settled(60, [a])
            await a.stop()
            checks["a_recovered_outbox_entries"] = sum(
                int(m) for m in re.findall(r"recovered (\d+) outbox entries", a.log_text()))  # fmt: skip
        except Failed as exc:
            error = str(exc)
        return await run.verdict(fault, checks, error)


async def _count_above(w: WorkerProc, text: str, n: int) -> bool:
    return w.log_text().count(text) > n


async def _assigned(*workers: WorkerProc) -> bool:
    return all("assigned" in w.log_text() for w in workers)


async def poison(env: Env, *, n: int = 2500, share: float = 0.2) -> dict[str, Any]:
    """``share`` of the traffic hostile (:data:`HOSTILE`, each kind in turn); worker RSS sampled."""
    items = poison_items(n, "poison", share)
    fault = f"{share:.0%} poison and hostile input ({len(HOSTILE)} kinds)"
    async with running(env, "poison") as run:
        error = None
        rss: list[float] = []
        checks: dict[str, Any] = {}
        try:
            w = run.spawn()
            await run.send(valid_items(2 * env.max_batch, "poisonwarm"))
            await run.wait_applied(2 * env.max_batch, 120, [w])
            baseline = w.rss_mb()
            await run.send(items)

            async def done() -> bool:
                if (m := w.rss_mb()) is not None:
                    rss.append(m)
                a = await run.applied()
                return a is not None and a >= run.n_accepted

            await run.until(done, 240, "all accepted documents applied", [w])
            await run.settled(60, [w])
            checks = {
                "hostile_sent": sum(1 for it in items if it.check and it.reason != "duplicate_id"),
                "rss_mb_before": round(baseline or 0, 1),
                "rss_mb_peak": round(max(rss, default=0), 1),
                "rss_mb_end": round(w.rss_mb() or 0, 1),
                "max_message_bytes": max(len(it.value or b"") for it in items),
            }
            await w.stop()
        except Failed as exc:
            error = str(exc)
        return await run.verdict(fault, checks, error)


async def broker_restart(env: Env, *, n: int = 1500, down_s: float = 10.0) -> dict[str, Any]:
    """The memory-only broker is stopped ``down_s`` and started again on the same port, empty.
    Phase 1's results are read before the stop; the worker must stay up, say clearly that Kafka
    is unreachable, reconnect by itself once the (recreated) topics are back, and process phase 2
    exactly. The row counts both phases: phase 1 judged on the old broker's topics, phase 2 on
    the new one's, Redis across both."""
    fault = f"broker restart, {down_s:g} s away (memory-only broker: its log is lost)"
    port = free_port()
    broker = EmbeddedBroker(port=port).start()
    try:
        async with running(env, "broker-restart", bootstrap=broker.bootstrap) as run:
            error = None
            checks: dict[str, Any] = {}
            phase1: dict[str, Any] | None = None
            try:
                await run.send(mixed_items(n, "restart1"))
                w = run.spawn()
                await run.wait_applied(run.n_accepted, 180, [w])
                await run.settled(60, [w])
                phase1 = await run.verdict("phase 1")
                assignments = w.log_text().count("assigned ")
                broker.stop()
                t0 = time.monotonic()
                while time.monotonic() - t0 < down_s:
                    if not w.alive:
                        raise Failed(f"worker exited while the broker was down:\n{w.log_text()[-2000:]}")
                    await asyncio.sleep(0.2)
                errors = _errors(w)
                broker = EmbeddedBroker(port=port).start()
                back = time.monotonic()
                # a new, empty cluster: the topics are created again, as on a fresh deployment
                run.prior_docs, run.prior_scores = run.last_docs, run.last_scores
                run.applied_base = phase1["applied"]
                run.sent, run.ends, run.samples = [], {}, []
                await run.setup()
                # Offsets of the lost log mean nothing in the new one: only once the worker has
                # rejoined the (new) group are its positions taken afresh. Traffic that reaches
                # the new log before that can be skipped (see docs/reliability.md).
                await run.until(lambda: _count_above(w, "assigned ", assignments), 120,
                                "the worker to rejoin the group", [w])  # fmt: skip
                rejoined = time.monotonic() - back
                # Not byte-identical to phase 1's bad messages: one of those at the same
                # topic/partition/offset would be taken for a re-delivery (docs/reliability.md).
                await run.send(mixed_items(n, "restart2", start=n, salt=b" "))
                await run.wait_applied(phase1["applied"] + run.n_accepted, 240, [w])
                await run.settled(90, [w])
                checks = {
                    "worker_stayed_up": w.alive,
                    "log_lines_while_down": len(errors),
                    "log_while_down": _log_summary(errors),
                    "rejoined_after_s": round(rejoined, 1),
                    "caught_up_after_s": round(time.monotonic() - back, 1),
                }
                await w.stop()
            except Failed as exc:
                error = str(exc)
            row = await run.verdict(fault, checks, error)
            if phase1 is not None:  # both phases in one row
                for k in ("sent", "accepted", "dlq", "applied", "lost", "duplicated"):
                    row[k] += phase1[k]
                row["checks"]["phase_1"] = {k: phase1[k] for k in ("sent", "accepted", "dlq", "applied", "lost",
                                                                  "duplicated", "ok")}  # fmt: skip
                row["ok"] = row["ok"] and phase1["ok"]
            return row
    finally:
        broker.stop()


async def soak(env: Env, *, n: int = 200_000, model_dir: str, rule: str | None = None,
               sample_s: float = 2.0) -> dict[str, Any]:  # fmt: skip
    """``n`` messages (event times 1 s apart, so the 24 h windows fill and then slide: state
    stops growing after 24 h + lateness of event time) through one worker; RSS and in-flight
    state sampled every ``sample_s``.

    Draining the backlog replays ~55 h of event time in a few minutes, a backfill: the default
    1 h lateness is then ~3 s of processing, and partitions drifting further apart than that
    make documents ``late`` (36,395 of 200,000 in a first run). As docs/operations.md advises for
    backfills, the soak raises the lateness, to 6 h."""
    fault = f"soak {n:,} messages (fast model: tiny random, flagged; not the shipped model)"
    port = free_port()
    async with running(env, "soak", lateness_s=6 * 3600.0) as run:
        error = None
        series: list[dict[str, float]] = []
        checks: dict[str, Any] = {}
        try:
            # one torch thread: the tiny model's ops are so small that a second thread only
            # adds synchronisation (engine alone: ~5,000 texts/s on one thread, ~1,100 on two
            # while another process holds a core)
            w = run.spawn(metrics_port=port, model_dir=model_dir, rule=rule, threads=1)
            await run.send(valid_items(n, "soak"))
            t0 = time.monotonic()

            async def sample() -> bool:
                a = await run.applied() or 0
                with contextlib.suppress(Exception):
                    series.append({
                        "t": round(time.monotonic() - t0, 1),
                        "applied": a,
                        "rss_mb": round(w.rss_mb() or 0, 1),
                        "in_flight": await asyncio.to_thread(_in_flight, w),
                        "outbox": await run.outbox_pending() or 0,
                        "commit_lag": run.lag(),
                    })  # fmt: skip
                if a >= run.n_accepted:
                    return True
                await asyncio.sleep(sample_s)
                return False

            await run.until(sample, 900, "all soak documents applied", [w])
            seconds = time.monotonic() - t0
            await run.settled(120, [w])
            checks = soak_summary(series, n, seconds, steady_from=0.6)
            await w.stop()
        except Failed as exc:
            error = str(exc)
        row = await run.verdict(fault, checks, error)
        row["series"] = series
        return row


def soak_summary(series: list[dict[str, float]], n: int, seconds: float, steady_from: float = 0.5) -> dict[str, Any]:
    """RSS slope (MB per 10k messages, least squares over the samples from ``steady_from`` of
    the run on) and the in-flight state over time."""
    half = [p for p in series if p["applied"] >= steady_from * n]
    slope = None
    if len(half) >= 3:
        xs = [p["applied"] / 10_000 for p in half]
        ys = [p["rss_mb"] for p in half]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = round(sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx, 3) if sxx else None
    rss = [p["rss_mb"] for p in series if p["rss_mb"]]
    inflight = [p["in_flight"] for p in series if p["in_flight"] is not None]

    def at(frac: float) -> dict[str, float] | None:
        pts = [p for p in series if p["applied"] >= frac * n]
        return pts[0] if pts else None

    return {
        "model": "tiny random BERT (2 layers, 64 wide) + the shipped tokenizer, built at run time; 1 torch thread",
        "messages_per_s": round(n / seconds, 1),
        "rss_mb_slope_per_10k": slope,
        "rss_slope_from": f"{steady_from:.0%} of the messages on",
        "rss_mb_at": {f"{int(f * 100)}%": (p or {}).get("rss_mb") for f in (0.1, 0.25, 0.5, 0.75, 1.0) for p in [at(f)]},
        "rss_mb_max": max(rss, default=None),
        "in_flight_max": max(inflight, default=None),
        "in_flight_at": {f"{int(f * 100)}%": (p or {}).get("in_flight") for f in (0.1, 0.25, 0.5, 0.75, 1.0) for p in [at(f)]},
        "outbox_max": max((p["outbox"] for p in series), default=None),
        "samples": len(series),
    }


SCENARIOS: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "sigkill": sigkill_loop,
    "redis": redis_outage,
    "broker_pause": broker_pause,
    "broker_restart": broker_restart,
    "two_sigterm": lambda env, **kw: two_workers(env, how="sigterm", **kw),
    "two_sigkill": lambda env, **kw: two_workers(env, how="sigkill", **kw),
    "poison": poison,
    "flood": flood,
    "soak": soak,
}
