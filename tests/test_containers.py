"""A real Kafka and a password-protected Redis in containers (testcontainers), one worker end to
end: the bundled sample feed in, every valid message applied once, per-ticker aggregates in Redis.

Runs wherever a Docker daemon is reachable; skipped, with the reason, where none is (this
project's development machines have none: tests/test_deploy.py covers the files offline there).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from streaming_helpers import wait_drained

from pipeline.connections import redis_sync_client
from pipeline.demo import SAMPLE_FEED
from pipeline.feed import produce_feed, read_feed
from pipeline.infra import create_topics
from pipeline.keys import Keys
from pipeline.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.0"
REDIS_IMAGE = "redis:7.4-alpine"
REDIS_PASSWORD = "containers-secret-4e1"


def _docker_unreachable() -> str | None:
    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means: no daemon to run containers on
        return f"no Docker daemon reachable ({type(exc).__name__}: {exc})"
    return None


@pytest.fixture(scope="module")
def containers() -> Iterator[tuple[str, str]]:
    """(Kafka bootstrap, Redis URL) of freshly started containers."""
    if (reason := _docker_unreachable()) is not None:
        pytest.skip(reason)
    from testcontainers.community.kafka import KafkaContainer
    from testcontainers.community.redis import RedisContainer

    with KafkaContainer(KAFKA_IMAGE).with_kraft() as kafka, RedisContainer(REDIS_IMAGE, password=REDIS_PASSWORD) as redis:
        host, port = redis.get_container_host_ip(), redis.get_exposed_port(6379)
        yield kafka.get_bootstrap_server(), f"redis://{host}:{port}/0"


def test_worker_end_to_end_on_real_kafka_and_redis(containers: tuple[str, str]) -> None:
    bootstrap, redis_url = containers
    s = Settings(bootstrap=bootstrap, redis_url=redis_url, redis_password=REDIS_PASSWORD, namespace="tc.",
                 group_id="tc.workers", partitions=3, metrics_port=0)  # fmt: skip
    valid = [fl for fl in read_feed(SAMPLE_FEED) if fl.value is not None]

    async def run() -> dict[str, int]:
        from pipeline.worker import Worker

        topics = [s.topic(t) for t in (s.news_topic, s.tweets_topic, s.documents_topic, s.scores_topic, s.dlq_topic)]
        await create_topics(s, topics, s.partitions)
        report = await produce_feed(s, SAMPLE_FEED)
        assert sum(report.sent.values()) == len(valid)
        worker = Worker(s)  # the default session timeout, 10 s
        task = asyncio.create_task(worker.run())
        try:
            await wait_drained(worker, task, 300)
        finally:
            worker.stop()
            await task
        return dict(worker.counts)

    counts = asyncio.run(run())
    assert counts["applied"] == len(valid)
    keys = Keys(s.namespace)
    client = redis_sync_client(s)
    try:
        assert int(client.get(keys.applied)) == len(valid)
        symbols = {m.decode() for m in client.smembers(keys.tickers)}
        assert symbols, "no ticker aggregates"
        for symbol in symbols:
            latest = client.hgetall(keys.ticker(symbol))
            assert -1.0 <= float(latest[b"score"]) <= 1.0 and int(latest[b"seq"]) >= 1
    finally:
        client.close()
