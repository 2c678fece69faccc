"""pipeline.client against the real Redis and the embedded broker.

The data is written by the pipeline's own commit point (``pipeline.applier.Applier`` and the
outbox publisher, as the worker uses them) under the test's namespace, so the client is tested
on exactly what the worker writes: the ``finsent:ticker:{SYMBOL}`` hash, the history sorted set,
the ``finsent:updates`` channel and the ``finsent.ticker-scores`` topic.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
import redis as sync_redis
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from streaming_helpers import T0, scored_doc

from pipeline.aggregate import Aggregator
from pipeline.applier import Applier, Scored
from pipeline.client import AsyncSentimentClient, SentimentClient, listen, subscribe
from pipeline.infra import EmbeddedBroker, create_topics
from pipeline.keys import Keys, text_hash
from pipeline.outbox import OutboxPublisher
from pipeline.schemas import TickerScore, epoch_ms
from pipeline.settings import Settings

MINUTE = 60_000
WAIT_S = 30


def test_client_imports_without_torch() -> None:
    code = "import sys, pipeline.client; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_client_import_loads_none_of_the_worker() -> None:
    """A bot's process gets the key schema, not the aggregator, the metrics or the worker."""
    code = "import pipeline.client, sys; print(' '.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split())
    assert "pipeline.keys" in loaded
    heavy = {"pipeline.aggregate", "pipeline.metrics", "pipeline.worker", "torch", "prometheus_client"}
    assert not heavy & loaded, sorted(heavy & loaded)


def test_ticker_score_reads_back_from_redis_hash_fields() -> None:
    u = TickerScore("AAPL", 0.1234567890123, "neutral", 1, 2, 3, 1, 0, 0, 1, 1, 0, 2, 1, 0, "d1", T0, T0 + 5,
                    "m", 7)  # fmt: skip
    fields = {k.encode(): (repr(v) if isinstance(v, float) else str(v)).encode() for k, v in u.to_dict().items()}
    assert TickerScore.from_fields(fields) == u
    with pytest.raises(ValueError, match="TickerScore"):
        TickerScore.from_fields({b"symbol": b"AAPL"})


def test_times_must_be_aware_or_explicit() -> None:
    assert epoch_ms(datetime(2024, 3, 14, 14, tzinfo=UTC)) == T0 == epoch_ms("2024-03-14T10:00:00-04:00")
    assert epoch_ms(str(T0)) == T0
    with pytest.raises(ValueError, match="naive"):
        epoch_ms(datetime(2024, 3, 14, 14))
    with pytest.raises(ValueError, match="not a time"):
        epoch_ms("yesterday")


@dataclass
class Writer:
    """The worker's commit point (Redis script + outbox -> Kafka) under one namespace."""

    settings: Settings
    applier: Applier
    publisher: OutboxPublisher
    written: list[TickerScore] = field(default_factory=list)
    offset: int = 0

    async def apply(self, docs: Sequence) -> list[TickerScore]:
        works = []
        for d in docs:
            self.offset += 1
            works.append(Scored(d, text_hash(d.text), d.text.encode(), "in", 0, self.offset))
        outcomes = await self.applier.apply(works)
        assert all(o.status == "applied" for o in outcomes)
        entries = [e for o in outcomes for e in o.entries]
        await self.publisher.produce(entries)
        await self.publisher.delete(entries)
        updates = [u for o in outcomes for u in o.updates]
        self.written.extend(updates)
        return updates


@pytest.fixture
async def writer(broker: EmbeddedBroker, redis_url: str, ns: str) -> AsyncIterator[Writer]:
    s = Settings(bootstrap=broker.bootstrap, redis_url=redis_url, namespace=ns)
    topics = [s.topic(s.documents_topic), s.topic(s.scores_topic), s.topic(s.dlq_topic)]
    await create_topics(broker.bootstrap, topics, partitions=3)
    redis = aioredis.Redis.from_url(redis_url)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False, acks="all")
    await producer.start()
    publisher = OutboxPublisher(producer, redis, broker.bootstrap, topics)
    await publisher.start()
    applier = Applier(redis, Keys(ns), Aggregator(s.half_life_s, s.lateness_s), publisher,
                      documents_topic=topics[0], scores_topic=topics[1], dlq_topic=topics[2],
                      history_len=s.history_len, clock=lambda: T0)  # fmt: skip
    try:
        yield Writer(s, applier, publisher)
    finally:
        await publisher.stop()
        await producer.stop()
        await redis.aclose()


def docs(tag: str, n: int, symbols: tuple[str, ...], start: int = T0) -> list:
    """n documents one minute apart, cycling through ``symbols``, alternating sentiment."""
    return [scored_doc(f"{tag}{i}", start + i * MINUTE, (symbols[i % len(symbols)],),
                       label="positive" if i % 3 else "negative", score=0.6 if i % 3 else -0.7)
            for i in range(n)]  # fmt: skip


async def test_latest_many_and_history_bounds(writer: Writer, redis_url: str, ns: str) -> None:
    aapl = await writer.apply(docs("a", 5, ("AAPL",)))
    (msft,) = await writer.apply([scored_doc("m0", T0, ("MSFT",), score=0.2)])
    times = [u.as_of for u in aapl]
    assert times == [T0 + i * MINUTE for i in range(5)]

    with SentimentClient(redis_url, namespace=ns) as client:
        assert client.latest("aapl") == aapl[-1]
        assert client.latest("$MSFT") == msft and client.latest("NASDAQ:MSFT") == msft
        assert client.latest("ZZZZ") is None
        assert client.latest_many(["AAPL", "MSFT", "ZZZZ"]) == {"AAPL": aapl[-1], "MSFT": msft, "ZZZZ": None}
        assert client.symbols() == ["AAPL", "MSFT"]
        assert client.history("AAPL") == aapl
        assert client.history("AAPL", times[1], times[3]) == aapl[1:4]  # both bounds inclusive
        assert client.history("AAPL", start=times[3]) == aapl[3:]
        assert client.history("AAPL", end=times[0]) == aapl[:1]
        assert client.history("AAPL", datetime.fromtimestamp(times[2] / 1000, tz=UTC), "2099-01-01T00:00:00Z") == aapl[2:]
        assert client.history("AAPL", limit=2) == aapl[3:]  # the newest two, oldest first
        assert client.history("AAPL", times[0], times[2], limit=2) == aapl[1:3]
        assert client.history("AAPL", times[4] + 1) == []
        with pytest.raises(ValueError, match="naive"):
            client.history("AAPL", datetime(2024, 3, 14))
        with pytest.raises(ValueError, match="not a ticker symbol"):
            client.latest("not a symbol")

    async with AsyncSentimentClient(redis_url, namespace=ns) as aclient:
        assert await aclient.latest("AAPL") == aapl[-1]
        assert await aclient.latest_many(["MSFT", "ZZZZ"]) == {"MSFT": msft, "ZZZZ": None}
        assert await aclient.history("AAPL", times[1], times[3]) == aapl[1:4]
        assert await aclient.history("AAPL", limit=1) == aapl[4:]
        assert await aclient.symbols() == ["AAPL", "MSFT"]

    # another namespace sees nothing of this one
    with SentimentClient(redis_url, namespace=f"{ns}other.") as other:
        assert other.latest("AAPL") is None


async def _take(stream: AsyncIterator[TickerScore], n: int) -> list[TickerScore]:
    out: list[TickerScore] = []

    async def run() -> None:
        async for u in stream:
            out.append(u)
            if len(out) == n:
                return

    await asyncio.wait_for(run(), WAIT_S)
    return out


@pytest.mark.integration
async def test_subscribe_from_earliest_gets_every_update_in_order(writer: Writer, broker: EmbeddedBroker,
                                                                  ns: str) -> None:
    symbols = ("AAPL", "MSFT", "NVDA", "TSLA")
    written = await writer.apply(docs("e", 40, symbols))
    written += await writer.apply([scored_doc("both", T0 + 41 * MINUTE, ("AAPL", "MSFT"))])

    async with subscribe(broker.bootstrap, start="earliest", namespace=ns) as updates:
        got = await _take(updates, len(written))
    assert sorted(got, key=lambda u: (u.symbol, u.seq)) == sorted(written, key=lambda u: (u.symbol, u.seq))
    for sym in symbols:  # per ticker, in the order the pipeline applied them
        assert [u for u in got if u.symbol == sym] == [u for u in written if u.symbol == sym]

    async with subscribe(broker.bootstrap, symbols=["aapl"], start="earliest", namespace=ns) as updates:
        only = await _take(updates, 11)
    assert only == [u for u in written if u.symbol == "AAPL"]

    # a time before everything = earliest
    since = datetime.fromtimestamp(0, tz=UTC) + timedelta(days=365)
    async with subscribe(broker.bootstrap, symbols=["TSLA"], start=since, namespace=ns) as updates:
        assert await _take(updates, 10) == [u for u in written if u.symbol == "TSLA"]


@pytest.mark.integration
async def test_subscribe_latest_sees_only_what_comes_after(writer: Writer, broker: EmbeddedBroker, ns: str) -> None:
    await writer.apply(docs("old", 12, ("AAPL", "MSFT", "NVDA")))
    async with subscribe(broker.bootstrap, namespace=ns) as updates:  # start="latest"
        new = await writer.apply(docs("new", 6, ("AAPL", "MSFT", "NVDA"), start=T0 + 20 * MINUTE))
        got = await _take(updates, len(new))
    assert sorted(got, key=lambda u: (u.symbol, u.seq)) == sorted(new, key=lambda u: (u.symbol, u.seq))
    assert all(u.last_doc_id.startswith("new") for u in got)


def test_subscribe_rejects_a_bad_start() -> None:
    with pytest.raises(ValueError, match="not a time"):
        subscribe("127.0.0.1:1", start="yesterday")
    with pytest.raises(ValueError, match="naive"):
        subscribe("127.0.0.1:1", start=datetime(2024, 1, 1))


async def test_listen_gets_updates_and_survives_a_dropped_connection(writer: Writer, redis_url: str,
                                                                     ns: str) -> None:
    name = f"{ns}listen".replace(".", "-")
    admin = sync_redis.Redis.from_url(redis_url)

    def connection_ids() -> list[int]:
        return [c["id"] for c in admin.client_list() if c.get("name") == name]

    async with listen(redis_url, symbols=["AAPL", "MSFT"], namespace=ns, client_name=name) as updates:
        first = await writer.apply([scored_doc("l1", T0, ("AAPL", "NVDA"))])  # NVDA filtered out
        assert await _take(updates, 1) == first[:1]

        (old_id,) = connection_ids()
        pending = asyncio.create_task(_take(updates, 1))
        admin.client_kill_filter(_id=old_id)
        for _ in range(WAIT_S * 10):  # until it reconnected and subscribed again
            ids = connection_ids()
            subscribed = [c for c in admin.client_list() if c.get("name") == name and c.get("sub") == "1"]
            if ids and old_id not in ids and subscribed:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the listener did not reconnect")
        # one connection, subscribed once: no hidden reconnect inside redis-py (>= 6 does one)
        ((_, subscribers),) = admin.pubsub_numsub(f"{ns}finsent:updates")
        assert (subscribers, len(connection_ids())) == (1, 1)
        second = await writer.apply([scored_doc("l2", T0 + MINUTE, ("MSFT",))])
        assert await pending == second
    admin.close()


@pytest.mark.integration
async def test_subscribe_waits_for_the_topic_to_exist(writer: Writer, broker: EmbeddedBroker) -> None:
    # a subscription started before the worker ever ran: no topic yet under this namespace
    ns = writer.settings.namespace + "late."
    stream = subscribe(broker.bootstrap, start="earliest", namespace=ns)
    connect = asyncio.create_task(stream.start())
    await asyncio.sleep(1.0)
    assert not connect.done()
    topic = f"{ns}finsent.ticker-scores"
    await create_topics(broker.bootstrap, [topic], partitions=1)
    u = TickerScore("AAPL", 0.5, "bullish", 1, 1, 1, 1, 0, 0, 1, 0, 0, 1, 0, 0, "d", T0, T0, "m", 1)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        await (await producer.send(topic, u.to_json(), key=b"AAPL"))
    finally:
        await producer.stop()
    await asyncio.wait_for(connect, WAIT_S)
    async with stream as updates:
        assert await _take(updates, 1) == [u]
