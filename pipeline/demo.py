"""``finsent demo``: the whole pipeline on one machine, with nothing installed beforehand.

Starts the embedded Tansu broker, uses the Redis at ``settings.redis_url`` if it answers (else an
embedded Valkey), creates the topics, runs a worker in this process, replays the bundled feed
(``pipeline/data/sample_feed.jsonl``) into the input topics and shows a live table of per-ticker
sentiment read back from Redis. Stops on Ctrl-C, after ``duration`` seconds, or once everything
sent was applied and published (``until_drained``); every child process is stopped on the way out.

The demo owns its Redis namespace (``demo.`` by default) and clears it first: the broker is new
and in-memory, so anything left there from an earlier run refers to records that no longer exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pipeline.connections import redis_client, redis_sync_client
from pipeline.feed import ProduceReport, produce_feed
from pipeline.infra import EmbeddedBroker, create_topics, delete_keys_with_prefix, redis_server
from pipeline.keys import Keys
from pipeline.schemas import rfc3339
from pipeline.settings import Settings, redact_url
from pipeline.worker import Worker, wall_ms

__all__ = ["SAMPLE_FEED", "run_demo"]

SAMPLE_FEED = Path(__file__).parent / "data" / "sample_feed.jsonl"
_SESSION_TIMEOUT_MS = 6000  # Tansu holds a fresh group's first join for half of this


def run_demo(
    settings: Settings,
    *,
    feed: Path = SAMPLE_FEED,
    duration: float | None = None,
    until_drained: bool = False,
    rate: float | None = 100.0,
    console: Console | None = None,
) -> int:
    """Run the demo; returns the process exit code (0 = clean stop)."""
    console = console or Console()
    if not settings.namespace:
        raise ValueError("the demo clears its Redis namespace first, so it needs a non-empty one")
    with EmbeddedBroker() as broker, redis_server(settings) as redis_url:
        embedded_redis = redis_url != settings.redis_url
        # The embedded broker and Valkey speak plaintext without credentials; a Redis of the
        # user's keeps its configured credentials and TLS.
        update: dict[str, object] = {"bootstrap": broker.bootstrap, "kafka_security_protocol": "PLAINTEXT"}
        if embedded_redis:
            update |= {"redis_url": redis_url, "redis_username": None, "redis_password": None}
        s = settings.model_copy(update=update)
        console.print(f"Kafka (embedded Tansu): {broker.bootstrap}   Redis: {redact_url(redis_url)}"
                      f"{' (embedded Valkey, gone after exit)' if embedded_redis else ''}")
        delete_keys_with_prefix(s, s.namespace)
        code = asyncio.run(_demo(s, feed, duration, until_drained, rate, console))
        _print_where(s, console, embedded_redis, "AAPL" if embedded_redis else _example_symbol(s))
        return code


async def _demo(
    s: Settings, feed: Path, duration: float | None, until_drained: bool, rate: float | None, console: Console
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    topics = [s.topic(t) for t in (s.news_topic, s.tweets_topic, s.documents_topic, s.scores_topic, s.dlq_topic)]
    await create_topics(s, topics, s.partitions)
    worker = Worker(s.model_copy(update={"session_timeout_ms": _SESSION_TIMEOUT_MS, "drain_timeout_s": 15.0}))
    worker_task = asyncio.create_task(worker.run(), name="worker")
    producer_task: asyncio.Task[ProduceReport] | None = None
    redis = redis_client(s)
    keys = Keys(s.namespace)
    t0 = time.monotonic()
    reason = "stopped"
    try:
        with Live(Text("starting the worker (loading the model, joining the group) ..."), console=console,
                  refresh_per_second=4) as live:  # fmt: skip
            while True:
                if worker.ready.is_set() and producer_task is None:
                    producer_task = asyncio.create_task(produce_feed(s, feed, rate=rate), name="produce")
                if producer_task is not None:
                    live.update(await _view(redis, keys, worker, producer_task))
                if stop.is_set():
                    reason = "interrupted"
                    break
                if worker_task.done():
                    reason = "worker exited"
                    break
                if duration is not None and time.monotonic() - t0 >= duration:
                    reason = f"{duration:g} s elapsed"
                    break
                if until_drained and producer_task is not None and producer_task.done():
                    producer_task.result()  # a failed replay is an error, not "drained"
                    if await worker.drained():
                        live.update(await _view(redis, keys, worker, producer_task))
                        reason = "drained: everything sent was applied and published"
                        break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.25)
    finally:
        if producer_task is not None and not producer_task.done():
            producer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer_task
        worker.stop()
        failed = None
        try:
            await worker_task
        except Exception as exc:  # noqa: BLE001 - reported below, turned into the exit code
            failed = exc
        await redis.aclose()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    console.print(f"\n[bold]{reason}[/]; worker: " + ", ".join(f"{k} {v}" for k, v in worker.counts.items()))
    if failed is not None:
        console.print(f"[red]worker failed: {failed!r}[/]")
        return 1
    return 0


async def _view(redis: aioredis.Redis, keys: Keys, worker: Worker, producer: asyncio.Task[ProduceReport]) -> Group:
    symbols = sorted(s.decode() for s in await redis.smembers(keys.tickers))
    async with redis.pipeline(transaction=False) as pipe:
        for sym in symbols:
            pipe.hgetall(keys.ticker(sym))
        pipe.get(keys.applied)
        rows = await pipe.execute()
    applied = int(rows.pop() or 0)
    now = wall_ms()
    table = Table(title="finsent: per-ticker sentiment (from Redis)", expand=False)
    for col, justify in (("ticker", "left"), ("score", "right"), ("label", "left"), ("n 1h", "right"),
                         ("n 24h", "right"), ("as of (UTC)", "left"), ("updated", "right")):  # fmt: skip
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for sym, h in zip(symbols, rows, strict=True):
        if not h:
            continue
        score = float(h[b"score"])
        color = "green" if score >= 0.15 else "red" if score <= -0.15 else "white"
        table.add_row(
            sym,
            Text(f"{score:+.3f}", style=color),
            Text(h[b"label"].decode(), style=color),
            h[b"n_1h"].decode(),
            h[b"n_24h"].decode(),
            rfc3339(int(h[b"as_of"]))[5:19].replace("T", " "),  # MM-DD HH:MM:SS, event time
            f"{max(0, now - int(h[b'updated_at'])) / 1000:.1f}s ago",
        )
    sent = "replaying" if not producer.done() else f"sent {sum(producer.result().sent.values())}"
    footer = Text(f"{sent} | applied {applied} | dead letters {worker.counts['dead_lettered']} | "
                  f"duplicates {worker.counts['duplicates']} | in flight {worker.outstanding}")  # fmt: skip
    return Group(table, footer)


def _example_symbol(s: Settings) -> str:
    """A ticker the demo wrote to Redis, for the redis-cli examples: AAPL if it is one (the
    bundled feed), else the first in order; AAPL if Redis cannot tell."""
    client = redis_sync_client(s, socket_connect_timeout=2, socket_timeout=2)
    try:
        symbols = sorted(x.decode() for x in client.smembers(Keys(s.namespace).tickers))
    except (RedisError, OSError):
        symbols = []
    finally:
        client.close()
    return "AAPL" if "AAPL" in symbols or not symbols else symbols[0]


def _print_where(s: Settings, console: Console, embedded_redis: bool, symbol: str = "AAPL") -> None:
    """Where the results are, and commands to look at them. soft_wrap: a line longer than the
    console (80 columns when piped) stays one line, so a command can be copied whole."""
    keys = Keys(s.namespace)
    url = redact_url(s.redis_url)  # never print a password
    console.print("\n[bold]Where the results live[/]")
    console.print(f"  Kafka topics: {s.topic(s.documents_topic)} (scored documents), "
                  f"{s.topic(s.scores_topic)} (ticker scores), {s.topic(s.dlq_topic)} (dead letters); "
                  "the embedded broker is gone after exit", soft_wrap=True)  # fmt: skip
    console.print(f"  Redis: {keys.ticker('SYMBOL')} (latest, hash), {keys.history('SYMBOL')} (sorted set), "
                  f"{keys.tickers} (set), {keys.applied} (counter), channel {keys.updates}", soft_wrap=True)  # fmt: skip
    if embedded_redis:
        console.print("  (the embedded Valkey has stopped; run a Redis at 127.0.0.1:6379 to keep the results)",
                      soft_wrap=True)  # fmt: skip
    else:
        console.print(f"  try: redis-cli -u {url} HGETALL {keys.ticker(symbol)}", soft_wrap=True, markup=False)
        console.print(f"       redis-cli -u {url} ZREVRANGE {keys.history(symbol)} 0 2", soft_wrap=True, markup=False)
