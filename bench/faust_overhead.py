"""How many messages/s can the consumer layer deliver before any model work? faust vs aiokafka.

Produces N messages (default 20,000, realistic ~250-byte input JSON) to one topic on the
embedded Tansu broker (or ``--bootstrap``), then consumes all of them three ways, each in a fresh
consumer group, and reports messages/s measured from the first message received to the last
(group join time excluded, and reported separately):

* ``aiokafka_getmany`` -- the hot path finsent uses: ``getmany`` batch polling, manual commit.
* ``faust_agent`` -- a trivial faust-streaming agent (``async for value in stream: n += 1``),
  concurrency 1; faust acks and commits each event itself.
* ``faust_take`` -- the same agent consuming ``stream.take(500, within=0.05)`` (faust's batching).

faust runs in a child process (a faust ``Worker`` owns its event loop and signal handlers).

    python bench/faust_overhead.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):  # first, or bench/pipeline.py would shadow the package
    sys.path.insert(0, str(ROOT))

SESSION_TIMEOUT_MS = 6000  # Tansu holds a fresh group's first JoinGroup for half of this


def _payload(i: int) -> bytes:
    return orjson.dumps(
        {
            "id": f"bench-{i:06d}",
            "text": f"$AAPL shares rise {i % 97}% after the company beats revenue estimates and raises guidance",
            "published_at": 1_710_423_000_000 + i,
            "kind": "news",
            "source": "Bench Wire",
            "url": f"https://news.example.com/bench/{i}",
            "lang": "en",
        }
    )


async def produce(bootstrap: str, topic: str, n: int) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, _payload(i), key=str(i).encode()) for i in range(n)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def consume_aiokafka(bootstrap: str, topic: str, n: int) -> dict[str, float]:
    from aiokafka import AIOKafkaConsumer

    t0 = time.perf_counter()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-aiokafka-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=2000,
    )
    await consumer.start()
    seen = 0
    t_first = 0.0
    try:
        while seen < n:
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            for records in batches.values():
                if records and not t_first:
                    t_first = time.perf_counter()
                seen += len(records)
            if batches:
                await consumer.commit()  # what the worker does: a manual commit per poll
        t_last = time.perf_counter()
    finally:
        await consumer.stop()
    return _result(n, t0, t_first, t_last)


def _result(n: int, t0: float, t_first: float, t_last: float) -> dict[str, float]:
    return {
        "msgs_per_s": round((n - 1) / max(t_last - t_first, 1e-9), 1),
        "consume_s": round(t_last - t_first, 3),
        "join_s": round(t_first - t0, 3),
    }


def faust_child(bootstrap: str, topic: str, n: int, mode: str, result_path: Path) -> None:
    """Run a faust worker until it has seen ``n`` events; write the JSON result to ``result_path``.

    Not stdout: a faust worker redirects stdout into its logger.
    """
    import logging

    import faust

    logging.disable(logging.WARNING)  # faust logs every rebalance step at WARNING
    t0 = time.perf_counter()
    app = faust.App(
        f"bench-faust-{mode}-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=str(result_path.parent / "faust-data"),  # not the current directory
        web_enabled=False,
        topic_disable_leader=True,
        broker_session_timeout=SESSION_TIMEOUT_MS / 1000,
        broker_heartbeat_interval=2,
        consumer_auto_offset_reset="earliest",
    )
    src = app.topic(topic, value_serializer="raw", key_serializer="raw")
    state = {"seen": 0, "t_first": 0.0}

    def count(k: int) -> None:
        if not state["t_first"]:
            state["t_first"] = time.perf_counter()
        state["seen"] += k
        if state["seen"] >= n:
            t_last = time.perf_counter()
            result_path.write_bytes(orjson.dumps(_result(n, t0, state["t_first"], t_last)))
            os.kill(os.getpid(), signal.SIGTERM)  # mode's Worker shuts down cleanly on SIGTERM

    if mode == "agent":

        @app.agent(src)
        async def agent(stream):  # type: ignore[no-untyped-def]
            async for _ in stream:
                count(1)

    else:

        @app.agent(src)
        async def agent(stream):  # type: ignore[no-untyped-def]
            async for values in stream.take(500, within=0.05):
                count(len(values))

    faust.Worker(app, loglevel="ERROR", quiet=True).execute_from_commandline()


def run_faust(bootstrap: str, topic: str, n: int, mode: str, timeout: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="finsent-bench-") as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--child", mode, "--bootstrap", bootstrap, "--topic", topic,
               "-n", str(n), "--result", str(result)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False)
        if result.exists():
            return orjson.loads(result.read_bytes())
    raise RuntimeError(f"faust child ({mode}) produced no result; rc={proc.returncode}\n{proc.stderr[-2000:]}")


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    from pipeline.infra import EmbeddedBroker, create_topics

    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        broker = EmbeddedBroker().start()
        bootstrap = broker.bootstrap
    try:
        topic = f"bench.faust-overhead.{uuid.uuid4().hex[:8]}"
        await create_topics(bootstrap, [topic], partitions=args.partitions)
        t = time.perf_counter()
        await produce(bootstrap, topic, args.n)
        produce_s = time.perf_counter() - t
        results: dict[str, object] = {
            "messages": args.n,
            "partitions": args.partitions,
            "produce_s": round(produce_s, 3),
            "aiokafka_getmany": await consume_aiokafka(bootstrap, topic, args.n),
        }
        for mode in ("agent", "take"):
            results[f"faust_{mode}"] = await asyncio.to_thread(
                run_faust, bootstrap, topic, args.n, mode, args.timeout
            )
        return results
    finally:
        if broker is not None:
            broker.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=20_000, help="messages to produce and consume")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--bootstrap", help="use this Kafka instead of an embedded Tansu broker")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds each faust run may take")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--child", choices=("agent", "take"), help=argparse.SUPPRESS)
    p.add_argument("--topic", help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        faust_child(args.bootstrap, args.topic, args.n, args.child, args.result)
        return
    results = asyncio.run(main_async(args))
    if args.json:
        print(orjson.dumps(results).decode())
        return
    for name in ("aiokafka_getmany", "faust_agent", "faust_take"):
        r = results[name]
        print(f"{name:18s} {r['msgs_per_s']:>10,.0f} msgs/s  (consume {r['consume_s']} s, join {r['join_s']} s)")


if __name__ == "__main__":
    main()
