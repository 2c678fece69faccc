"""``finsent replay`` (pipeline/replay.py): event-time order, time window, pacing, bad lines."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
from streaming_helpers import T0, read_topic
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.infra import EmbeddedBroker, create_topics_sync
from pipeline.replay import parse_speed, plan_replay
from pipeline.schemas import rfc3339

# line numbers (1-based) matter: the bad ones are 3, 5 and 7
FEED = b"\n".join([
    orjson.dumps({"id": "c", "text": "$AAPL third", "published_at": rfc3339(T0 + 2000), "kind": "tweet"}),
    orjson.dumps({"id": "a", "text": "$AAPL first", "published_at": T0}),
    b"{not json",
    orjson.dumps({"id": "b", "text": "$MSFT second", "published_at": rfc3339(T0 + 1000)}),
    orjson.dumps({"id": "x", "text": "no time"}),
    orjson.dumps({"id": "b2", "text": "$MSFT also second (ties keep file order)", "published_at": T0 + 1000}),
    orjson.dumps({"id": "y", "text": "bad time", "published_at": "14/03/2024"}),
    orjson.dumps({"id": "d", "text": "$NVDA fourth", "published_at": rfc3339(T0 + 3000)}),
]) + b"\n"  # fmt: skip


def test_parse_speed() -> None:
    assert parse_speed("1x") == 1.0 and parse_speed("10X") == 10.0 and parse_speed("0.5x") == 0.5
    assert parse_speed("60") == 60.0 and parse_speed("max") is None
    for bad in ("fast", "-2x", "x", "1xx"):
        with pytest.raises(ValueError, match="speed"):
            parse_speed(bad)


def test_plan_orders_by_event_time_and_reports_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    path.write_bytes(FEED)
    plan = plan_replay(path)
    assert [fl.doc_id for fl in plan.lines] == ["a", "b", "b2", "c", "d"]
    assert [(fl.line_no, (fl.error or "").split(":")[0]) for fl in plan.bad] == [
        (3, "not_json"), (5, "missing_field"), (7, "bad_timestamp"),
    ]  # fmt: skip
    assert plan.span_ms == 3000
    window = plan_replay(path, start=T0 + 1000, end=T0 + 3000)
    assert [fl.doc_id for fl in window.lines] == ["b", "b2", "c"] and window.outside == 2


@pytest.mark.integration
def test_replay_command_sends_in_order_paced_and_reports_bad_lines(
    broker: EmbeddedBroker, ns: str, tmp_path: Path
) -> None:
    path = tmp_path / "feed.jsonl"
    path.write_bytes(FEED)
    news, tweets = f"{ns}news.raw", f"{ns}tweets.raw"
    create_topics_sync(broker.bootstrap, [news, tweets], partitions=3)

    # --single-partition: everything, in event-time order, in partition 0 of the news topic;
    # 3 s of event time at 4x takes at least 0.75 s
    t0 = time.monotonic()
    result = CliRunner().invoke(app, ["replay", str(path), "--speed", "4x", "--single-partition",
                                      "--bootstrap", broker.bootstrap, "--namespace", ns])  # fmt: skip
    elapsed = time.monotonic() - t0
    assert result.exit_code == 0, result.output
    for line_no, reason in ((3, "not_json"), (5, "missing_field"), (7, "bad_timestamp")):
        assert f"{path}:{line_no}: skipped: {reason}" in result.output
    assert f"sent 5 to {news}" in result.output and "3 bad lines skipped" in result.output
    assert elapsed >= 0.75
    records = asyncio.run(read_topic(broker.bootstrap, news))
    assert {r.partition for r in records} == {0}
    assert [r.key for r in sorted(records, key=lambda r: r.offset)] == [b"a", b"b", b"b2", b"c", b"d"]
    assert orjson.loads(records[0].value)["text"] == "$AAPL first"  # the line's own JSON is sent

    # default routing by kind, a window, as fast as possible
    forced = f"{ns}forced"
    create_topics_sync(broker.bootstrap, [forced], partitions=1)
    result = CliRunner().invoke(app, ["replay", str(path), "--speed", "max", "--start", rfc3339(T0 + 1000),
                                      "--topic", forced, "--bootstrap", broker.bootstrap])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "sent 4 to" in result.output and "1 outside --start/--end" in result.output
    assert [r.key for r in asyncio.run(read_topic(broker.bootstrap, forced))] == [b"b", b"b2", b"c", b"d"]

    result = CliRunner().invoke(app, ["replay", str(path), "--speed", "fast", "--bootstrap", broker.bootstrap])
    assert result.exit_code == 2 and "speed must be like" in result.output
    result = CliRunner().invoke(app, ["replay", str(path), "--start", "yesterday", "--bootstrap", broker.bootstrap])
    assert result.exit_code == 2 and "--start" in result.output
