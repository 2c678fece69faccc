"""Story novelty in the stream: a flood of near-duplicates is one story, exactly once, equal to
the backtest. Real embedded broker, real Redis, the shipped model."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import redis
from streaming_helpers import T0, produce, read_topic, wait_drained

from pipeline.aggregate import recompute
from pipeline.infra import EmbeddedBroker, create_topics, delete_keys_with_prefix
from pipeline.keys import Keys
from pipeline.novelty import DECAY, SIGNATURE_VERSION
from pipeline.schemas import ScoredDocument, TickerScore, rfc3339
from pipeline.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STORY = "$TSLA recalls 2 million cars over an autopilot defect"
COPIES = [  # what feeds and retweets do to one headline
    STORY,
    f"RT @tesla_watch: {STORY}",
    f"BREAKING: {STORY}",
    f"{STORY} https://t.co/Xy12abCD",
    STORY.upper(),
    f"(Reuters) - {STORY}",
    f"{STORY} via @Reuters",
    f"RT @trader42: BREAKING: {STORY} https://t.co/Zz99",
]
N_FLOOD = 40  # copies of the story, cycling COPIES
OTHERS = [  # same ticker, other events: each its own story
    "$TSLA beats delivery estimates for the quarter",
    "$TSLA opens a new factory in Mexico",
    "$TSLA cuts Model Y prices in China by 5%",
    "$TSLA shareholders approve the pay package",
    "$GM recalls 2 million cars over an autopilot defect",  # the template, another company
    "$TSLA https://t.co/only-a-link",  # nothing left after normalising: its own story
]


def _messages() -> list[tuple[str, bytes]]:
    out = []
    for i in range(N_FLOOD):
        d = {"id": f"flood-{i:03d}", "text": COPIES[i % len(COPIES)], "published_at": T0 + 60_000 + i * 5_000,
             "kind": "tweet"}  # fmt: skip
        out.append(("tweet", orjson.dumps(d)))
    for j, text in enumerate(OTHERS):
        d = {"id": f"other-{j}", "text": text, "published_at": T0 + j * 7_000, "kind": "news"}
        out.append(("news", orjson.dumps(d)))
    return sorted(out, key=lambda m: orjson.loads(m[1])["published_at"])


@dataclass
class FloodRun:
    settings: Settings
    docs: dict[str, ScoredDocument]
    tsla: TickerScore
    story_members: int
    duplicates: int


@pytest.fixture(scope="module")
def engine() -> Iterator[object]:
    from pipeline.inference import build_engine

    eng = build_engine(Settings(max_batch=16)).start()
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def flood_run(broker: EmbeddedBroker, redis_server_url: str, engine: object) -> Iterator[FloodRun]:
    from pipeline.worker import Worker

    ns = f"t{os.urandom(6).hex()}."
    s = Settings(bootstrap=broker.bootstrap, redis_url=redis_server_url, namespace=ns, group_id=f"{ns}workers",
                 partitions=3, metrics_port=0, max_batch=16, lateness_s=3600)  # fmt: skip
    msgs = _messages()

    async def run() -> FloodRun:
        topics = [s.topic(t) for t in (s.news_topic, s.tweets_topic, s.documents_topic, s.scores_topic, s.dlq_topic)]
        await create_topics(s.bootstrap, topics, s.partitions)
        # one key, one partition: the copies arrive in publication order. (Out of order, a copy
        # applied before an earlier-published one keeps the novelty it was given; docs/novelty.md)
        await produce(s, msgs, keys=[b"tsla"] * len(msgs))
        await produce(s, msgs[:10], keys=[b"tsla"] * 10)  # re-sent: never a second story or a lower novelty
        worker = Worker(s.model_copy(update={"session_timeout_ms": 6000}), engine=engine)  # type: ignore[arg-type]
        task = asyncio.create_task(worker.run())
        try:
            await wait_drained(worker, task, 180, applied_at_least=len(msgs))
        finally:
            worker.stop()
            await task
        records = await read_topic(s.bootstrap, s.topic(s.documents_topic))
        docs = [ScoredDocument.from_json(r.value) for r in records]
        assert len(docs) == len(msgs), "one document record per message"
        r = redis.Redis.from_url(s.redis_url)
        try:
            keys = Keys(ns)
            tsla = TickerScore.from_fields(r.hgetall(keys.ticker("TSLA")))
            first = min((d for d in docs if d.id.startswith("flood")), key=lambda d: d.published_at)
            members = r.zcard(f"{keys.stories(SIGNATURE_VERSION)}s:{first.story}")
        finally:
            r.close()
        return FloodRun(s, {d.id: d for d in docs}, tsla, members, worker.counts["duplicates"])

    try:
        yield asyncio.run(run())
    finally:
        delete_keys_with_prefix(redis_server_url, ns)


def test_a_flood_is_one_story_with_decaying_novelty(flood_run: FloodRun) -> None:
    flood = sorted((d for d in flood_run.docs.values() if d.id.startswith("flood")), key=lambda d: d.published_at)
    assert {d.story_id for d in flood} == {"flood-000"}, "every copy joins the first one's story"
    assert [d.novelty for d in flood] == pytest.approx([DECAY**k for k in range(N_FLOOD)])
    others = [flood_run.docs[f"other-{j}"] for j in range(len(OTHERS))]
    assert [d.story_id for d in others] == [d.id for d in others], "other events are stories of their own"
    assert all(d.novelty == 1.0 for d in others)
    # exactly once: the re-sent copies were skipped, the story holds each document once
    assert flood_run.duplicates == 10
    assert flood_run.story_members == N_FLOOD


def test_the_flood_counts_as_one_story_in_the_aggregate(flood_run: FloodRun) -> None:
    s, u = flood_run.settings, flood_run.tsla
    tsla_docs = [d for d in flood_run.docs.values() if any(t.symbol == "TSLA" for t in d.tickers)]
    assert u.n_1h == len(tsla_docs) and u.stories_1h == 1 + sum(1 for d in tsla_docs if d.id.startswith("other"))
    weighted = recompute(flood_run.docs.values(), half_life_s=s.half_life_s, lateness_s=s.lateness_s)["TSLA"]
    unweighted = recompute(flood_run.docs.values(), half_life_s=s.half_life_s, lateness_s=s.lateness_s,
                           novelty_weighting=False)["TSLA"]  # fmt: skip
    assert u.score == pytest.approx(weighted.score, abs=1e-9)
    assert abs(u.score - unweighted.score) > 0.05, "novelty weighting changed nothing"


def test_the_backtest_finds_the_same_stories(flood_run: FloodRun, engine: object, tmp_path: Path) -> None:
    from pipeline.backtest import BacktestReport, feed_records, run_backtest

    path = tmp_path / "feed.jsonl"
    lines = []
    for _, raw in _messages():
        d = orjson.loads(raw)
        lines.append(orjson.dumps(dict(d, published_at=rfc3339(d["published_at"]))))
    path.write_bytes(b"\n".join(lines) + b"\n")
    report = BacktestReport()
    bt = run_backtest(list(feed_records(path, report.bad)), flood_run.settings, engine=engine, report=report)  # type: ignore[arg-type]
    final = {u.symbol: u for u in bt.updates}  # updates are in as_of order: the last one per symbol
    assert final["TSLA"].stories_1h == flood_run.tsla.stories_1h
    assert final["TSLA"].score == pytest.approx(flood_run.tsla.score, abs=1e-5)
