"""The streaming worker end to end: real embedded broker, real Redis, the real model.

* 1,000 mixed news/tweet messages, 5% malformed, plus re-sent ids -> every valid message scored
  and counted exactly once, every malformed one dead-lettered with its reason, aggregates in Redis
  equal to an offline recomputation from the documents topic.
* A worker subprocess SIGKILLed mid-stream and restarted in the same group -> totals still exact
  in Redis and on every output topic (by effect id).

The model comes from ``FINSENT_TEST_MODEL_DIR`` (default: the shipped model).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import redis
from streaming_helpers import (
    MALFORMED,
    SYMBOLS,
    Record,
    high_watermarks,
    produce,
    read_topic,
    spawn_worker,
    valid_message,
    wait_drained,
)

from pipeline.aggregate import recompute, recompute_states
from pipeline.infra import EmbeddedBroker, create_topics, delete_keys_with_prefix
from pipeline.keys import Keys
from pipeline.schemas import DeadLetter, ScoredDocument, TickerScore
from pipeline.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL_DIR = os.environ.get("FINSENT_TEST_MODEL_DIR") or None
@dataclass
class Outputs:
    documents: list[Record]
    scores: list[Record]
    dlq: list[Record]
    applied: int
    tickers: dict[str, dict[bytes, bytes]]
    history_lengths: dict[str, int]
    outbox_backlog: int


async def collect(settings: Settings) -> Outputs:
    s = settings
    keys = Keys(s.namespace)
    r = redis.Redis.from_url(s.redis_url)
    try:
        symbols = sorted(x.decode() for x in r.smembers(keys.tickers))
        backlog = sum(
            r.xlen(keys.outbox(t, p)) for t in (s.topic(s.news_topic), s.topic(s.tweets_topic)) for p in range(s.partitions)
        )
        return Outputs(
            documents=await read_topic(s.bootstrap, s.topic(s.documents_topic)),
            scores=await read_topic(s.bootstrap, s.topic(s.scores_topic)),
            dlq=await read_topic(s.bootstrap, s.topic(s.dlq_topic)),
            applied=int(r.get(keys.applied) or 0),
            tickers={sym: r.hgetall(keys.ticker(sym)) for sym in symbols},
            history_lengths={sym: r.zcard(keys.history(sym)) for sym in symbols},
            outbox_backlog=backlog,
        )
    finally:
        r.close()


def assert_exactly_once(out: Outputs, n_valid: int) -> None:
    """Documents, scores and dead letters each appear once per effect; counts add up."""
    doc_ids = [ScoredDocument.from_json(d.value).id for d in out.documents]
    assert len(doc_ids) == n_valid, f"{len(doc_ids)} document records for {n_valid} valid messages"
    assert len(set(doc_ids)) == n_valid, "a document was published twice"
    assert out.applied == n_valid
    for name, records in (("documents", out.documents), ("ticker-scores", out.scores), ("dlq", out.dlq)):
        effects = Counter(r.effect_id for r in records)
        assert None not in effects, f"a {name} record without an effect id"
        dupes = [e for e, c in effects.items() if c > 1]
        assert not dupes, f"{name}: duplicated effects {dupes[:5]}"
    # effect ids name what the record is
    assert all(r.effect_id == f"doc:{r.key.decode()}" for r in out.documents)
    for r in out.scores:
        ts = TickerScore.from_json(r.value)
        assert (r.key.decode(), r.effect_id) == (ts.symbol, f"score:{ts.symbol}:{ts.seq}"), r
    # one score record per applied (document, ticker): the final seqs add up to them
    assert len(out.scores) == sum(int(h[b"seq"]) for h in out.tickers.values())
    assert out.outbox_backlog == 0


@pytest.fixture(scope="module")
def engine() -> Iterator[object]:
    from pipeline.inference import build_engine

    eng = build_engine(Settings(model_dir=MODEL_DIR, max_batch=32)).start()
    yield eng
    eng.close()


def make_settings(bootstrap: str, redis_url: str, ns: str, **kw: object) -> Settings:
    return Settings(bootstrap=bootstrap, redis_url=redis_url, namespace=ns, group_id=f"{ns}workers",
                    partitions=3, metrics_port=0, max_batch=32, model_dir=MODEL_DIR, **kw)  # fmt: skip


# ---------------------------------------------------------------------------- in-process worker

N_MIXED = 1000
N_BAD = N_MIXED // 20
N_RESENT = 20  # valid messages sent a second time, unchanged
N_REUSED_ID = 5  # a known id with a different text


@dataclass
class MixedRun:
    settings: Settings
    n_valid: int
    bad_reasons: Counter[str]
    out: Outputs
    counts: dict[str, int]
    committed_lag: int
    seconds: float


@pytest.fixture(scope="module")
def mixed_run(broker: EmbeddedBroker, redis_server_url: str, engine: object) -> Iterator[MixedRun]:
    from pipeline.worker import Worker

    ns = f"t{os.urandom(6).hex()}."
    s = make_settings(broker.bootstrap, redis_server_url, ns)
    n_valid = N_MIXED - N_BAD
    valid = [valid_message(i, "mix") for i in range(n_valid)]
    bad = [("tweet" if i % 2 else "news", MALFORMED[i % len(MALFORMED)][0]) for i in range(N_BAD)]
    messages = valid[: n_valid // 2] + bad[: N_BAD // 2] + valid[n_valid // 2 :] + bad[N_BAD // 2 :]
    messages += valid[:N_RESENT]
    reused = []
    for i in range(N_REUSED_ID):
        kind, raw = valid[100 + i]
        d = orjson.loads(raw)
        d["text"] += " (edited)"
        reused.append((kind, orjson.dumps(d)))
    messages += reused
    bad_reasons = Counter(MALFORMED[i % len(MALFORMED)][1] for i in range(N_BAD)) + Counter(
        {"duplicate_id": N_REUSED_ID}
    )

    async def run() -> MixedRun:
        topics = [s.topic(t) for t in (s.news_topic, s.tweets_topic, s.documents_topic, s.scores_topic, s.dlq_topic)]
        await create_topics(s.bootstrap, topics, s.partitions)
        await produce(s, messages)
        worker = Worker(s.model_copy(update={"session_timeout_ms": 6000}), engine=engine)  # type: ignore[arg-type]
        t0 = time.monotonic()
        task = asyncio.create_task(worker.run())
        try:
            await wait_drained(worker, task, 240)
        finally:
            worker.stop()
            await task
        seconds = time.monotonic() - t0
        lag = await _group_lag(s)
        return MixedRun(s, n_valid, bad_reasons, await collect(s), dict(worker.counts), lag, seconds)

    try:
        yield asyncio.run(run())
    finally:
        delete_keys_with_prefix(redis_server_url, ns)


async def _group_lag(s: Settings) -> int:
    """Sum over input partitions of end offset minus the group's committed offset."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, group_id=s.group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(s.topic(t), p) for t in (s.news_topic, s.tweets_topic) for p in range(s.partitions)]
        ends = await high_watermarks(s.bootstrap, tps)
        return sum([ends[tp] - ((await consumer.committed(tp)) or 0) for tp in tps])
    finally:
        await consumer.stop()


def test_every_valid_message_scored_exactly_once(mixed_run: MixedRun) -> None:
    r = mixed_run
    assert_exactly_once(r.out, r.n_valid)
    assert r.counts["applied"] == r.n_valid
    assert r.counts["duplicates"] == N_RESENT
    assert r.committed_lag == 0, "every input offset is committed once drained"
    docs = [ScoredDocument.from_json(d.value) for d in r.out.documents]
    assert all(-1.0 <= d.score <= 1.0 and d.model_version and d.exit_layer >= 1 for d in docs)
    assert {d.kind for d in docs} == {"news", "tweet"}
    print(f"\n{r.n_valid + N_BAD + N_RESENT + N_REUSED_ID} messages drained in {r.seconds:.1f}s")


def test_malformed_messages_are_dead_lettered_with_reasons(mixed_run: MixedRun) -> None:
    r = mixed_run
    letters = [DeadLetter.from_json(d.value) for d in r.out.dlq]
    assert Counter(dl.reason for dl in letters) == r.bad_reasons
    bad_payloads = {raw for raw, _ in MALFORMED}
    for dl in letters:
        assert dl.topic in (r.settings.topic(r.settings.news_topic), r.settings.topic(r.settings.tweets_topic))
        assert dl.partition is not None and dl.offset is not None and dl.failed_at
        if dl.reason == "duplicate_id":
            assert dl.doc_id is not None and b"(edited)" in dl.raw
        else:
            assert dl.raw in bad_payloads
    assert len({(dl.topic, dl.partition, dl.offset) for dl in letters}) == len(letters)


def test_aggregates_equal_offline_recomputation(mixed_run: MixedRun) -> None:
    r = mixed_run
    s = r.settings
    docs = [ScoredDocument.from_json(d.value) for d in r.out.documents]
    expected = recompute(docs, half_life_s=s.half_life_s, lateness_s=s.lateness_s)
    assert set(expected) == set(r.out.tickers) >= set(SYMBOLS)
    for sym, h in r.out.tickers.items():
        got = TickerScore.from_json(orjson.dumps({k.decode(): _num(v) for k, v in h.items()}))
        want = expected[sym]
        assert got.score == pytest.approx(want.score, abs=1e-9)
        for f in ("label", "n_5m", "n_1h", "n_24h", "bullish_24h", "bearish_24h", "neutral_24h",
                  "bullish_1h", "bearish_1h", "neutral_1h", "bullish_5m", "bearish_5m", "neutral_5m",
                  "as_of", "seq", "model_version"):  # fmt: skip
            assert getattr(got, f) == getattr(want, f), (sym, f)
        # last_doc_id is the last document *applied*; the topic does not keep that order
        assert got.last_doc_id in {d.id for d in docs if any(t.symbol == sym for t in d.tickers)}
        assert r.out.history_lengths[sym] == min(got.seq, s.history_len)
    # and the persisted state (what a restarted worker resumes from) matches too
    states = recompute_states(docs, half_life_s=s.half_life_s, lateness_s=s.lateness_s)
    stored = _stored_states(s, list(states))
    for sym, st in states.items():
        assert stored[sym].events == st.events and stored[sym].seq == st.seq
        assert stored[sym].num == pytest.approx(st.num, rel=1e-9) and stored[sym].den == pytest.approx(st.den, rel=1e-9)


def _num(v: bytes) -> object:
    text = v.decode()
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _stored_states(s: Settings, symbols: list[str]) -> dict:
    from pipeline.aggregate import Aggregator
    from pipeline.applier import Applier

    async def load() -> dict:
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(s.redis_url)
        try:
            applier = Applier(r, Keys(s.namespace), Aggregator(s.half_life_s, s.lateness_s), None,  # type: ignore[arg-type]
                              documents_topic="", scores_topic="", dlq_topic="", history_len=1, clock=lambda: 0)  # fmt: skip
            return await applier.load_states(symbols)
        finally:
            await r.aclose()

    return asyncio.run(load())


# ---------------------------------------------------------------------------- SIGKILL mid-stream

N_KILL_FIRST = 400  # sent before the first worker starts
N_KILL_SECOND = 150  # sent while the worker is dead


def _wait(cond, timeout: float, what: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"worker exited ({proc.returncode}) while waiting for {what}:\n{log_path.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.05)


def test_sigkill_mid_stream_then_restart_is_exact(
    broker: EmbeddedBroker, redis_url: str, ns: str, tmp_path: Path
) -> None:
    s = make_settings(broker.bootstrap, redis_url, ns)
    keys = Keys(ns)
    r = redis.Redis.from_url(redis_url)
    first = [valid_message(i, "kill") for i in range(N_KILL_FIRST)]
    second = [valid_message(i, "kill") for i in range(N_KILL_FIRST, N_KILL_FIRST + N_KILL_SECOND)]
    bad = [("news", MALFORMED[i][0]) for i in range(len(MALFORMED))]
    topics = [s.topic(t) for t in (s.news_topic, s.tweets_topic, s.documents_topic, s.scores_topic, s.dlq_topic)]
    asyncio.run(create_topics(s.bootstrap, topics, s.partitions))
    asyncio.run(produce(s, first[:200] + bad + first[200:]))
    log_path = tmp_path / "worker.log"
    applied = lambda: int(r.get(keys.applied) or 0)

    proc = spawn_worker(s, log_path, model_dir=MODEL_DIR)
    try:
        _wait(lambda: applied() >= 120, 90, "the first documents", proc, log_path)
        proc.send_signal(signal.SIGKILL)  # mid-stream: scripts, produces and commits all in flight
        proc.wait(10)
        killed_at = applied()
        assert killed_at < N_KILL_FIRST, "killed too late to test anything"
        asyncio.run(produce(s, second))

        proc = spawn_worker(s, log_path, model_dir=MODEL_DIR)  # same group: rejoins once the dead member's session expires
        total = N_KILL_FIRST + N_KILL_SECOND
        _wait(lambda: applied() >= total, 120, "all documents after the restart", proc, log_path)
        # applied is the Redis commit point; wait for the outboxes to drain into Kafka as well
        out_keys = [keys.outbox(t, p) for t in topics[:2] for p in range(s.partitions)]
        _wait(lambda: sum(r.xlen(k) for k in out_keys) == 0, 30, "empty outboxes", proc, log_path)
        time.sleep(1.5)  # > commit interval: the last offsets get committed
        proc.send_signal(signal.SIGUSR1)  # an operator asking where it is: threads' and tasks' stacks
        _wait(lambda: "name='fetch'" in log_path.read_text(), 10, "the stack dump", proc, log_path)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, f"graceful stop failed:\n{log_path.read_text()[-3000:]}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        r.close()

    out = asyncio.run(collect(s))
    assert_exactly_once(out, N_KILL_FIRST + N_KILL_SECOND)
    assert Counter(DeadLetter.from_json(d.value).reason for d in out.dlq) == Counter(reason for _, reason in MALFORMED)
    assert asyncio.run(_group_lag(s)) == 0
    log = log_path.read_text()
    assert "worker stopped" in log  # the second run shut down cleanly
    assert "most recent call first" in log and "Stack for <Task" in log  # faulthandler's threads, then tasks
    print(f"\nkilled after {killed_at} applied; restart log: "
          + "; ".join(line.split(": ", 1)[-1] for line in log.splitlines() if "recover" in line or "assigned" in line))


# ---------------------------------------------------------------------------- --processes N

N_PROCESSES_MSGS = 400


def _run_to_completion(s: Settings, msgs: list[tuple[str, bytes]], log_path: Path, processes: int) -> Outputs:
    """``finsent worker [--processes N]`` over ``msgs`` in a fresh namespace until every message is
    applied and published, then SIGTERM; the outputs."""
    keys = Keys(s.namespace)
    r = redis.Redis.from_url(s.redis_url)
    topics = [s.topic(t) for t in (s.news_topic, s.tweets_topic, s.documents_topic, s.scores_topic, s.dlq_topic)]
    asyncio.run(create_topics(s.bootstrap, topics, s.partitions))
    asyncio.run(produce(s, msgs))
    proc = spawn_worker(s, log_path, model_dir=MODEL_DIR, processes=processes)
    try:
        _wait(lambda: int(r.get(keys.applied) or 0) >= len(msgs), 180, "every document", proc, log_path)
        out_keys = [keys.outbox(t, p) for t in topics[:2] for p in range(s.partitions)]
        _wait(lambda: sum(r.xlen(k) for k in out_keys) == 0, 30, "empty outboxes", proc, log_path)
        time.sleep(1.5)  # > commit interval
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, f"graceful stop failed:\n{log_path.read_text()[-3000:]}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        r.close()
    assert asyncio.run(_group_lag(s)) == 0
    return asyncio.run(collect(s))


def test_two_processes_share_the_stream_and_equal_one_worker(
    broker: EmbeddedBroker, redis_server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``finsent worker --processes 2``: both processes consume (Kafka splits the partitions), no
    message is lost or applied twice, and every ticker ends where one worker leaves it."""
    import uuid

    # Story novelty depends on the order in which near-duplicates from different partitions are
    # applied (docs/novelty.md), which differs between any two runs; the aggregation does not.
    monkeypatch.setenv("FINSENT_NOVELTY", "false")

    msgs = [valid_message(i, "procs") for i in range(N_PROCESSES_MSGS)]
    runs: dict[int, tuple[Outputs, str]] = {}
    for processes in (2, 1):
        ns = f"test.procs{processes}.{uuid.uuid4().hex[:8]}."
        # one text per engine batch: a float32 score depends on the batch it ran in (~1e-7), and
        # the two runs batch differently; alone, a text scores the same bits in both
        s = make_settings(broker.bootstrap, redis_server_url, ns).model_copy(update={"max_batch": 1})
        log_path = tmp_path / f"worker{processes}.log"
        try:
            runs[processes] = (_run_to_completion(s, msgs, log_path, processes), log_path.read_text())
        finally:
            delete_keys_with_prefix(redis_server_url, ns)
    (two, log2), (one, _) = runs[2], runs[1]
    assert_exactly_once(two, N_PROCESSES_MSGS)
    assert_exactly_once(one, N_PROCESSES_MSGS)
    # both processes applied documents: "worker stopped (applied N, ...)" per tagged process
    applied = {}
    for line in log2.splitlines():
        if "worker stopped (applied" in line:
            tag = next(w for w in line.split() if w.startswith("worker-"))
            applied[tag] = int(line.split("worker stopped (applied ")[1].split(",")[0])
    assert set(applied) == {"worker-0", "worker-1"} and all(applied.values()), applied
    assert sum(applied.values()) == N_PROCESSES_MSGS
    # the same documents (scores included) and the same per-ticker results as one worker
    def by_id(out: Outputs) -> dict[str, tuple]:
        docs = (ScoredDocument.from_json(d.value) for d in out.documents)
        return {d.id: (d.label, d.score, tuple(t.symbol for t in d.tickers)) for d in docs}

    assert by_id(two) == by_id(one)
    assert set(two.tickers) == set(one.tickers) >= set(SYMBOLS)
    for sym, h in one.tickers.items():
        got, want = TickerScore.from_fields(two.tickers[sym]), TickerScore.from_fields(h)
        assert got.score == pytest.approx(want.score, abs=1e-9), sym  # summed in another order
        for f in ("label", "n_5m", "n_1h", "n_24h", "bullish_24h", "bearish_24h", "neutral_24h",
                  "as_of", "seq", "model_version"):  # fmt: skip
            assert getattr(got, f) == getattr(want, f), (sym, f)


def test_a_failing_process_stops_the_others(broker: EmbeddedBroker, redis_url: str, ns: str, tmp_path: Path) -> None:
    """Child 1 cannot serve its metrics (its port is taken): the supervisor stops child 0 and exits 1,
    so an orchestrator restarts the set instead of running at half strength unnoticed."""
    import socket

    from pipeline.supervisor import child_args

    assert child_args(["worker", "--processes", "3", "--namespace", "x"], 2, 9100) == [
        "worker", "--namespace", "x", "--metrics-port", "9102", "--process-index", "2"]  # fmt: skip
    assert child_args(["worker", "--processes=2"], 0, 0)[-4:] == ["--metrics-port", "0", "--process-index", "0"]
    s = make_settings(broker.bootstrap, redis_url, ns)
    for _ in range(100):  # a taken port whose predecessor is free (child 0 serves there)
        taken = socket.socket()
        taken.bind(("0.0.0.0", 0))  # prometheus-client serves on every interface
        taken.listen()
        port = taken.getsockname()[1]
        try:
            with socket.socket() as free:
                free.bind(("0.0.0.0", port - 1))
            break
        except OSError:
            taken.close()
    else:
        pytest.fail("no free port below a free port in 100 tries")
    log_path = tmp_path / "procs.log"
    proc = spawn_worker(s, log_path, model_dir=MODEL_DIR, processes=2, metrics_port=port - 1)
    try:
        assert proc.wait(120) == 1, log_path.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        taken.close()
    log = log_path.read_text()
    assert f"cannot serve metrics on port {port}" in log
    assert "stopping the others" in log


# ---------------------------------------------------------------------------- a rebalance


def test_second_worker_joining_rebalances_without_loss_or_duplicates(
    broker: EmbeddedBroker, redis_url: str, ns: str, engine: object
) -> None:
    """Worker B joins while A is busy: A drains and commits its revoked partitions, both then
    share the partitions -- and the tickers, whose states they update optimistically."""
    from pipeline.worker import Worker

    s = make_settings(broker.bootstrap, redis_url, ns)
    first = [valid_message(i, "rb") for i in range(300)]
    second = [valid_message(i, "rb") for i in range(300, 500)]
    keys = Keys(ns)
    r = redis.Redis.from_url(redis_url)
    applied = lambda: int(r.get(keys.applied) or 0)

    async def until(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, f"timed out waiting for {what} (applied {applied()})"
            await asyncio.sleep(0.1)

    async def run() -> tuple[dict[str, int], dict[str, int]]:
        topics = [s.topic(t) for t in (s.news_topic, s.tweets_topic, s.documents_topic, s.scores_topic, s.dlq_topic)]
        await create_topics(s.bootstrap, topics, s.partitions)
        await produce(s, first)
        a = Worker(s.model_copy(update={"session_timeout_ms": 6000}), engine=engine)  # type: ignore[arg-type]
        b = Worker(s.model_copy(update={"session_timeout_ms": 6000}), engine=engine)  # type: ignore[arg-type]
        ta = asyncio.create_task(a.run())
        tb: asyncio.Task[None] | None = None
        try:
            await until(lambda: applied() >= 60, 60, "worker A to start")
            tb = asyncio.create_task(b.run())
            await until(lambda: b.ready.is_set(), 60, "worker B to get partitions")
            await produce(s, second)
            await until(lambda: applied() >= len(first) + len(second), 120, "all documents")
            await until(lambda: a.outstanding == b.outstanding == 0, 30, "both to finish")
            await asyncio.sleep(1.0)  # > commit interval
        finally:
            a.stop()
            b.stop()
            await asyncio.gather(ta, *([tb] if tb else []))
        assert await _group_lag(s) == 0
        return a.counts, b.counts

    try:
        counts_a, counts_b = asyncio.run(run())
    finally:
        r.close()
    out = asyncio.run(collect(s))
    assert_exactly_once(out, len(first) + len(second))
    assert counts_a["applied"] > 0 and counts_b["applied"] > 0, (counts_a, counts_b)
    docs = [ScoredDocument.from_json(d.value) for d in out.documents]
    expected = recompute(docs, half_life_s=s.half_life_s, lateness_s=s.lateness_s)
    for sym, h in out.tickers.items():
        assert int(h[b"seq"]) == expected[sym].seq
        assert float(h[b"score"]) == pytest.approx(expected[sym].score, abs=1e-9)


def test_a_client_stuck_in_its_stop_cannot_hold_the_shutdown_past_its_deadline(
    broker: EmbeddedBroker, redis_url: str, ns: str, engine: object, caplog: pytest.LogCaptureFixture
) -> None:
    """A consumer whose stop() hangs and ignores cancellation (as one leaving a group during a
    rebalance can): the worker abandons that step and returns within ``stop_timeout_s``, so an
    orchestrator's grace period is never hit. ``asyncio.wait_for`` would wait for it forever."""
    from pipeline.worker import Worker

    s = make_settings(broker.bootstrap, redis_url, ns, stop_timeout_s=3.0)

    async def run() -> bool:
        topics = [s.topic(t) for t in (s.news_topic, s.tweets_topic, s.documents_topic, s.scores_topic, s.dlq_topic)]
        await create_topics(s.bootstrap, topics, s.partitions)
        await produce(s, [valid_message(i, "stuck") for i in range(20)])
        worker = Worker(s.model_copy(update={"session_timeout_ms": 6000}), engine=engine)  # type: ignore[arg-type]
        task = asyncio.create_task(worker.run())
        await wait_drained(worker, task, 120, applied_at_least=20)
        release = asyncio.Event()
        assert worker._consumer is not None
        real_stop = worker._consumer.stop

        async def stuck_stop() -> None:
            try:
                await release.wait()
            except asyncio.CancelledError:  # swallowed: the stop goes on waiting
                await release.wait()
            await real_stop()

        worker._consumer.stop = stuck_stop  # type: ignore[method-assign]
        worker.stop()
        done, _ = await asyncio.wait({task}, timeout=30)
        release.set()  # let the abandoned stop finish, so the loop can close
        if task in done:
            task.result()
        return task in done

    with caplog.at_level("WARNING", logger="pipeline.worker"):
        finished = asyncio.run(run())
    assert finished, f"the worker's run() did not return within 30 s of stop() (stop_timeout_s {s.stop_timeout_s})"
    assert any("Kafka consumer stop did not finish before the shutdown deadline" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]  # fmt: skip


def test_a_worker_process_freezes_what_it_built_out_of_garbage_collection() -> None:
    # process-wide, so in a child: pytest's own collector stays as it is
    code = (
        "import gc, orjson; from pipeline.worker import tune_gc; before = gc.get_threshold(); tune_gc(); "
        "print(orjson.dumps([before, gc.get_threshold(), gc.get_freeze_count()]).decode())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    before, after, frozen = orjson.loads(out.stdout)
    assert before == [700, 10, 10]
    assert after[0] > before[0] * 10
    assert frozen > 10_000  # the worker's modules and everything they built, out of every collection
