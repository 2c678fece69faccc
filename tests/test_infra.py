"""Integration tests of pipeline.infra against the real Tansu broker and a real Redis/Valkey."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import defaultdict

import psutil
import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.infra import (
    BrokerStartError,
    EmbeddedBroker,
    create_topics,
    delete_keys_with_prefix,
    kafka_metadata_brokers,
    redis_ping,
    redis_server,
    redis_url_or_embedded,
)

pytestmark = pytest.mark.integration


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- Kafka


async def test_produce_consume_round_trip(broker: EmbeddedBroker, ns: str) -> None:
    topic = f"{ns}roundtrip"
    assert await create_topics(broker.bootstrap, [topic], partitions=3) == [topic]
    # idempotent: a second call succeeds and creates nothing
    assert await create_topics(broker.bootstrap, [topic], partitions=3) == []

    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert described["error_code"] == 0
    assert sorted(p["partition"] for p in described["partitions"]) == [0, 1, 2]

    sent = {(f"k{i % 7}".encode(), f"v{i}".encode()) for i in range(42)}
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False, acks="all")
    await producer.start()
    try:
        metas = await asyncio.gather(*[producer.send_and_wait(topic, value=v, key=k) for k, v in sent])
    finally:
        await producer.stop()
    assert {m.partition for m in metas} == {0, 1, 2}, "7 keys should spread over all 3 partitions"

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        group_id=f"{ns}group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        # Tansu holds a fresh group's first JoinGroup for session_timeout/2: 3 s instead of 5 s
        session_timeout_ms=6000,
        heartbeat_interval_ms=2000,
    )
    await consumer.start()
    received: list[tuple[bytes, bytes, int]] = []
    try:
        deadline = time.monotonic() + 30
        while len(received) < len(sent) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                received.extend((r.key, r.value, r.partition) for r in records)
        assert consumer.assignment() == {TopicPartition(topic, p) for p in range(3)}
        await consumer.commit()
        committed = {p: await consumer.committed(TopicPartition(topic, p)) for p in range(3)}
    finally:
        await consumer.stop()

    assert len(received) == len(sent), "every message exactly once"
    assert {(k, v) for k, v, _ in received} == sent
    partitions_per_key: dict[bytes, set[int]] = defaultdict(set)
    for k, _, p in received:
        partitions_per_key[k].add(p)
    assert all(len(ps) == 1 for ps in partitions_per_key.values()), "a key must stick to one partition"
    per_partition = defaultdict(int)
    for _, _, p in received:
        per_partition[p] += 1
    assert committed == {p: per_partition[p] for p in range(3)}


def test_stop_leaves_no_child_process() -> None:
    me = psutil.Process()
    with EmbeddedBroker() as b:
        pid = b.pid
        host, port = b.host, b.port
        assert pid is not None and b.running
        assert pid in {c.pid for c in me.children(recursive=True)}
        # own process group, so a terminal's Ctrl-C does not hit the broker directly
        assert os.getpgid(pid) == pid != os.getpgid(0)
        assert kafka_metadata_brokers(host, port)[0][1:] == (host, port)
    assert not b.running and b.pid is None
    assert pid not in {c.pid for c in me.children(recursive=True)}
    assert not psutil.pid_exists(pid), "the broker was reaped, not left as zombie or orphan"
    assert not _port_open(host, port)
    b.stop()  # a second stop is a no-op


def test_start_failure_reports_log_and_cleans_up() -> None:
    me = psutil.Process()
    before = {c.pid for c in me.children(recursive=True)}
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        b = EmbeddedBroker(port=port, startup_timeout=10)
        with pytest.raises(BrokerStartError, match="Address in use"):
            b.start()
    assert not b.running
    assert {c.pid for c in me.children(recursive=True)} <= before


# --------------------------------------------------------------------------- Redis


def test_redis_fixture_ping_set_get(redis_url: str, ns: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.ping() is True
        client.set(f"{ns}greeting", "hello")
        client.hset(f"{ns}ticker:AAPL", mapping={"score": "0.25"})
        assert client.get(f"{ns}greeting") == b"hello"
        assert client.hget(f"{ns}ticker:AAPL", "score") == b"0.25"
    finally:
        client.close()


def test_delete_keys_with_prefix_only_touches_namespace(redis_url: str, ns: str) -> None:
    other = f"{ns[:-1]}x."  # a sibling namespace sharing all but the last character
    client = redis.Redis.from_url(redis_url)
    try:
        client.mset({f"{ns}a": 1, f"{ns}b": 2, f"{other}keep": 3})
        assert delete_keys_with_prefix(redis_url, ns) == 2
        assert client.exists(f"{ns}a", f"{ns}b") == 0
        assert client.get(f"{other}keep") == b"3"
        assert delete_keys_with_prefix(redis_url, other) == 1
        with pytest.raises(ValueError):
            delete_keys_with_prefix(redis_url, "")
    finally:
        client.close()


def test_reachable_redis_is_used_as_is(redis_server_url: str) -> None:
    url, server = redis_url_or_embedded(redis_server_url)
    assert url == redis_server_url
    assert server is None


def test_embedded_valkey_when_url_unreachable() -> None:
    unreachable = "redis://127.0.0.1:1/3"
    t0 = time.monotonic()
    assert redis_ping(unreachable) is False
    assert time.monotonic() - t0 < 2
    with redis_server(unreachable) as url:
        assert url != unreachable and url.endswith("/3"), "the database number is kept"
        client = redis.Redis.from_url(url)
        try:
            assert client.ping() is True
            client.set("k", "v")
            assert client.get("k") == b"v"
            assert client.connection_pool.connection_kwargs["db"] == 3
        finally:
            client.close()
    assert redis_ping(url) is False, "the embedded server is stopped on exit"
