"""The examples run as written (as README.md and docs/clients.md show them): the toy trading bot against the real
broker and the real Redis, the backtest example on a feed with the shipped model."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import redis
from aiokafka import AIOKafkaProducer

from pipeline.infra import EmbeddedBroker, create_topics_sync
from pipeline.schemas import TickerScore, rfc3339, score_label

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
T0 = 1_710_424_800_000
SCORES = (0.1, 0.5, 0.6, 0.2, -0.4, -0.5, 0.4)  # crossings: BUY at 0.5, SELL at -0.4, BUY at 0.4
EXPECTED = [("BUY", "+0.500"), ("SELL", "-0.400"), ("BUY", "+0.400")]


def update(i: int, score: float, symbol: str = "AAPL") -> TickerScore:
    return TickerScore(symbol, score, score_label(score), 1, i + 1, i + 1, 0, 0, 1, 0, 0, i + 1, 0, 0, i + 1,
                       f"doc{i}", T0 + i * 60_000, T0 + i * 60_000, "m", i + 1)  # fmt: skip


def signals(stdout: str) -> list[tuple[str, str]]:
    """(side, score) of each signal line of the bot's output."""
    out = []
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) > 4 and parts[1] in ("BUY", "SELL"):
            out.append((parts[1], parts[4]))
    return out


@pytest.fixture
def bot() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Starts ``examples/trading_bot.py`` with the given arguments; every process it started is
    ended at teardown, also when the test failed before reading its output."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, str(EXAMPLES / "trading_bot.py"), *args], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


@pytest.mark.integration
def test_trading_bot_on_kafka(broker: EmbeddedBroker, ns: str, bot: Callable[..., subprocess.Popen[str]]) -> None:
    topic = f"{ns}finsent.ticker-scores"
    create_topics_sync(broker.bootstrap, [topic], partitions=2)

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            futures = [await producer.send(topic, update(i, s).to_json(), key=b"AAPL") for i, s in enumerate(SCORES)]
            futures.append(await producer.send(topic, update(0, 0.9, "MSFT").to_json(), key=b"MSFT"))
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(produce())
    proc = bot("--bootstrap", broker.bootstrap, "--namespace", ns, "--start", "earliest", "--symbols", "AAPL",
               "--max-updates", str(len(SCORES)))  # fmt: skip
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert signals(out) == EXPECTED, out
    assert f"{rfc3339(T0 + 60_000)}  BUY   AAPL" in out and "MSFT" not in out.split("\n", 1)[1]


@pytest.mark.integration
def test_trading_bot_on_redis_pubsub(redis_url: str, ns: str, bot: Callable[..., subprocess.Popen[str]]) -> None:
    proc = bot("--redis-url", redis_url, "--namespace", ns, "--max-updates", str(len(SCORES)))
    assert proc.stdout is not None
    first = proc.stdout.readline()  # printed once subscribed
    assert first.startswith("listening to Redis pub/sub"), first
    r = redis.Redis.from_url(redis_url)
    for i, s in enumerate(SCORES):
        r.publish(f"{ns}finsent:updates", update(i, s).to_json())
    r.close()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert signals(out) == EXPECTED, out


@pytest.mark.slow
def test_backtest_example(tmp_path: Path) -> None:
    feed = tmp_path / "feed.jsonl"
    texts = ["$AAPL soars after record iPhone sales and a raised outlook",
             "$AAPL beats estimates, raises dividend, shares jump",
             "$TSLA plunges after recall of 2 million cars and a guidance cut",
             "$TSLA shares crash as deliveries miss badly"]  # fmt: skip
    feed.write_bytes(b"\n".join(orjson.dumps({"id": f"e{i}", "text": t, "published_at": T0 + i * 60_000})
                                for i, t in enumerate(texts)) + b"\nnot json\n")  # fmt: skip
    out = tmp_path / "updates.csv"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(EXAMPLES / "backtest_strategy.py"), str(feed), "--out", str(out)],
                          check=False, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"skipped {feed}:5: not_json" in proc.stdout
    assert "4 documents, 4 updates" in proc.stdout
    assert ("BUY", "AAPL") in [(ln.split()[1], ln.split()[2]) for ln in proc.stdout.splitlines() if "score" in ln]
    assert ("SELL", "TSLA") in [(ln.split()[1], ln.split()[2]) for ln in proc.stdout.splitlines() if "score" in ln]
    assert out.read_text().count("\n") == 5
    print(f"backtest example ran in {time.monotonic() - t0:.1f}s")
