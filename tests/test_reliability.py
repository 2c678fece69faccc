"""Reliability under faults and hostile input, at small sizes: the scenarios of bench/reliability.py
(tests/faults.py) against the real embedded broker, real Redis and ``finsent worker`` children.

Each scenario judges itself from the outputs alone (documents, ticker-scores and dlq topics,
Redis): nothing lost, nothing duplicated, aggregates equal to an offline recomputation, every
dead letter with its expected reason, no committed offset ahead of unpublished output. The full
sizes (20 SIGKILLs, 10 s outages, the 200,000-message soak) run in the bench.

The model comes from ``FINSENT_TEST_MODEL_DIR`` (default: the shipped model).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from faults import HOSTILE, SCENARIOS, Env, poison_items, soak_summary

from pipeline.infra import EmbeddedBroker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL_DIR = os.environ.get("FINSENT_TEST_MODEL_DIR") or None


@pytest.fixture
def run_scenario(broker: EmbeddedBroker, redis_server_url: str, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    env = Env(bootstrap=broker.bootstrap, redis_url=redis_server_url, workdir=tmp_path, model_dir=MODEL_DIR,
              partitions=3, max_batch=32)  # fmt: skip

    def run(name: str, **kw: Any) -> dict[str, Any]:
        scenario: Callable[..., Awaitable[dict[str, Any]]] = SCENARIOS[name]
        row = asyncio.run(scenario(env, **kw))
        print(f"\n{row}")
        return row

    return run


def assert_exact(row: dict[str, Any]) -> None:
    c = row["checks"]
    assert "error" not in row, row["error"]
    assert (row["lost"], row["duplicated"]) == (0, 0), c
    assert row["applied"] == row["accepted"] > 0
    assert c["aggregate_mismatches"] == [] and c["wrong_dlq_reasons"] == [], c
    assert c["unexpected_documents"] == [] and c["unexpected_dead_letters"] == [], c
    assert c["commit_violations"] == 0 and c["commit_samples"] > 0
    assert c["outbox_left"] == 0 and c["uncommitted_at_end"] == 0
    assert row["ok"]


def test_worker_sigkilled_three_times_ends_exact(run_scenario: Callable[..., dict[str, Any]]) -> None:
    row = run_scenario("sigkill", kills=3, chunk=50)
    assert_exact(row)
    assert row["checks"]["kills"] == 3
    assert row["dlq"] > 0  # malformed messages were part of the stream


def test_near_duplicate_floods_with_a_sigkill_stay_one_story_each_and_exact(
    run_scenario: Callable[..., dict[str, Any]],
) -> None:
    row = run_scenario("flood", stories=6, copies=25)
    assert_exact(row)
    c = row["checks"]
    assert c["floods"] == 6 and c["floods_split_into_several_stories"] == [], c
    assert c["novelty_min_median"][0] < 0.01  # the later copies count next to nothing


def test_redis_down_mid_stream_worker_retries_and_ends_exact(run_scenario: Callable[..., dict[str, Any]]) -> None:
    row = run_scenario("redis", n=600, down_s=3.0)
    assert_exact(row)
    c = row["checks"]
    assert c["worker_stayed_up"] and c["down_s"] >= 3.0
    assert any("Redis" in line and "retrying" in line for line in c["log_while_down"]), c["log_while_down"]


def test_broker_frozen_mid_stream_ends_exact(run_scenario: Callable[..., dict[str, Any]]) -> None:
    row = run_scenario("broker_pause", n=1000, down_s=3.0)
    assert_exact(row)
    assert row["checks"]["worker_stayed_up"]


def test_broker_restart_worker_reconnects_and_both_phases_are_exact(run_scenario: Callable[..., dict[str, Any]]) -> None:
    row = run_scenario("broker_restart", n=300, down_s=3.0)
    assert_exact(row)
    c = row["checks"]
    assert c["worker_stayed_up"] and c["log_while_down"], c
    assert c["phase_1"]["ok"] and row["accepted"] == 600


def test_second_worker_stopping_mid_stream_hands_over_exactly(run_scenario: Callable[..., dict[str, Any]]) -> None:
    row = run_scenario("two_sigterm", n=900)
    assert_exact(row)
    assert row["checks"]["stopped_worker_exit_status"] == 0


def test_poison_and_hostile_input_are_dead_lettered_or_handled_safely(
    run_scenario: Callable[..., dict[str, Any]],
) -> None:
    row = run_scenario("poison", n=400)
    assert_exact(row)
    c = row["checks"]
    assert c["hostile_not_safely_handled"] == []
    assert c["hostile_sent"] == 80 and c["max_message_bytes"] > 1_000_000
    # bounded: at most max_outstanding (16 x 32) messages of <= ~1 MB are held at once
    assert c["rss_mb_peak"] - c["rss_mb_before"] < 400, c


def test_poison_stream_has_every_hostile_kind_at_the_requested_share() -> None:
    items = poison_items(1000, "p", 0.2)
    hostile = [it for it in items if it.check and it.reason != "duplicate_id"]
    assert len(hostile) == 200
    assert {it.check for it in hostile if it.expect == "dlq"} == {n for n, _, e in HOSTILE if not e.startswith("accepted")}
    assert sum(it.expect == "hostile" for it in hostile) == sum(200 // len(HOSTILE) + (i < 200 % len(HOSTILE))
                                                                for i, (_, _, e) in enumerate(HOSTILE)
                                                                if e.startswith("accepted"))  # fmt: skip


def test_soak_summary_reports_the_rss_slope_of_the_second_half() -> None:
    n = 100_000
    series = [{"t": float(i), "applied": i * 1000, "rss_mb": 500.0 + (i * 1000 / 10_000) * (0.0 if i < 50 else 2.0),
               "in_flight": 512.0, "outbox": 3.0, "commit_lag": 0} for i in range(101)]  # fmt: skip
    s = soak_summary(series, n, seconds=100.0)
    assert s["rss_mb_slope_per_10k"] == pytest.approx(2.0)
    assert s["messages_per_s"] == 1000.0 and s["in_flight_max"] == 512.0 and s["outbox_max"] == 3.0
    assert s["rss_mb_at"]["10%"] == 500.0
