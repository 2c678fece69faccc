"""``finsent replay``: a historical feed file -> the input topics, in event-time order and pace.

The file is read by :func:`pipeline.feed.read_feed` (JSONL or CSV in the input schema; a bad
line is reported with its line number and reason, and skipped). Valid records are sorted by
``published_at`` (stable: equal times keep their file order), cut to ``[start, end)``, and sent
so that record ``i`` leaves ``(published_at[i] - published_at[0]) / speed`` seconds after the
first one (``speed=None``: as fast as possible).

Ordering: Kafka keeps order only within a partition, and the worker interleaves partitions.
``single_partition`` sends everything to partition 0 of one topic, so a worker applies the feed
in exactly this order -- the order ``finsent backtest`` applies it in.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.feed import FeedLine, ProduceReport, read_feed, send_lines
from pipeline.settings import Settings

__all__ = ["ReplayPlan", "ReplayReport", "parse_speed", "plan_replay", "replay_feed"]

_SPEED = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*x?", re.IGNORECASE)


def parse_speed(text: str) -> float | None:
    """``"1x"`` -> 1.0, ``"10x"`` / ``"10"`` -> 10.0, ``"0.5x"`` -> 0.5, ``"max"`` -> None."""
    t = text.strip().lower()
    if t in ("max", "inf", "0", "0x"):
        return None
    m = _SPEED.fullmatch(t)
    if m is None or float(m.group(1)) <= 0:
        raise ValueError(f"speed must be like 1x, 10x, 0.5x or max, not {text!r}")
    return float(m.group(1))


@dataclass(slots=True)
class ReplayPlan:
    """What a replay will send: valid records in event-time order, and what it will not."""

    lines: list[FeedLine]  # valid, sorted by published_at, inside [start, end)
    bad: list[FeedLine]  # unusable lines (error set), in file order
    outside: int  # valid records outside [start, end)

    @property
    def span_ms(self) -> int:
        """Event time from the first record to the last."""
        return self.lines[-1].published_at - self.lines[0].published_at if self.lines else 0  # type: ignore[operator]


@dataclass(slots=True)
class ReplayReport:
    sent: dict[str, int]
    bad: list[tuple[int, str]]  # (line number, reason)
    outside: int
    seconds: float


def plan_replay(path: Path, *, start: int | None = None, end: int | None = None) -> ReplayPlan:
    """Read ``path`` and order its valid records by ``published_at`` within ``[start, end)``."""
    good: list[FeedLine] = []
    bad: list[FeedLine] = []
    outside = 0
    for fl in read_feed(path):
        if fl.value is None or fl.published_at is None:
            bad.append(fl)
        elif (start is not None and fl.published_at < start) or (end is not None and fl.published_at >= end):
            outside += 1
        else:
            good.append(fl)
    good.sort(key=lambda fl: fl.published_at)  # type: ignore[arg-type, return-value]
    return ReplayPlan(good, bad, outside)


async def replay_feed(
    settings: Settings,
    plan: ReplayPlan,
    *,
    speed: float | None = 1.0,
    topic: str | None = None,
    single_partition: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Send ``plan``'s records (valid ones; bad lines are reported in the result).

    Args:
        speed: event time runs this many times faster than wall time (None: no pacing).
        topic: send everything to this topic (already namespaced); default: kind=tweet ->
            the tweets topic, else the news topic.
        single_partition: everything to partition 0 of one topic (``topic``, default the news
            topic), so that a worker applies the records in this order.
        on_progress: called with the number of records sent so far.
    """
    if single_partition and topic is None:
        topic = settings.topic(settings.news_topic)
    due: Callable[[int, FeedLine], float] | None = None
    if speed is not None and plan.lines:
        t0, rate = plan.lines[0].published_at or 0, speed

        def due(_i: int, fl: FeedLine) -> float:
            return ((fl.published_at or t0) - t0) / 1000.0 / rate
    report: ProduceReport = await send_lines(
        settings, plan.lines, topic=topic, partition=0 if single_partition else None, due=due,
        on_progress=on_progress,
    )  # fmt: skip
    bad = [(fl.line_no, fl.error or "unreadable") for fl in plan.bad]
    return ReplayReport(sent=report.sent, bad=bad, outside=plan.outside, seconds=report.seconds)
