"""Shared fixtures: one embedded Kafka broker per session, Redis with a per-test key namespace, and
the public datasets where they are present."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture
def public_data() -> Path:
    """The public datasets: FINSENT_DATA_DIR, else ``../shared/data`` beside the checkout (the
    development workspace, and CI's copy of it); skips where neither holds Twitter Financial News."""
    env = os.environ.get("FINSENT_DATA_DIR")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (root / "twitter_financial_news").is_dir():
        pytest.skip(f"public datasets absent: no twitter_financial_news under {root} (set FINSENT_DATA_DIR)")
    return root
