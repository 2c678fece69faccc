"""Shared fixtures: one embedded Kafka broker per session, Redis with a per-test key namespace."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

# First, before a test module imports transformers: tests must never reach the network.
from models.backbone import hub_offline
from pipeline.infra import (
    DEFAULT_REDIS_URL,
    EmbeddedBroker,
    delete_keys_with_prefix,
    redis_server,
)

hub_offline()  # already done by the import; explicit for subprocesses, which inherit os.environ


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """An embedded Tansu broker shared by the whole session (``broker.bootstrap``).

    Tests share it, so they must use topic names and group ids derived from ``ns``.
    """
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """URL of the Redis at 127.0.0.1:6379 if it answers, else of an embedded Valkey (session-wide)."""
    with redis_server(DEFAULT_REDIS_URL) as url:
        yield url


@pytest.fixture
def ns() -> str:
    """A unique namespace for one test, e.g. ``"t3f9a0c12b7de."``.

    Ends in ``.`` rather than ``:`` because it also prefixes Kafka topic names, where ``:`` is
    not a legal character; ``.`` is fine in both topic names and Redis keys.
    """
    return f"t{uuid.uuid4().hex[:12]}."


@pytest.fixture
def redis_url(redis_server_url: str, ns: str) -> Iterator[str]:
    """Redis URL for one test; keys must start with ``ns``, and those are deleted afterwards.

    The server may be shared with other users, so teardown deletes only this test's keys and
    never flushes a database.
    """
    yield redis_server_url
    delete_keys_with_prefix(redis_server_url, ns)
