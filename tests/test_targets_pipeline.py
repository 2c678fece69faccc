"""Per-ticker sentiment in the pipeline (FINSENT_TARGET_MODEL): a text that links two or more
tickers gets one target-model answer per ticker, on its links (``links[i].score``/``label``)
and in those tickers' aggregates; a one-ticker text keeps its document score. The worker, the
backtest, the client and ``finsent link --score`` agree (real broker, real Redis, the shipped
models: the document model and the research-only target model)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from streaming_helpers import read_topic, wait_drained
from test_backtest import (
    MAX_BATCH,
    assert_same_updates,
    backtest_file,
    feed_records_json,
    live_row,
    write_feed,
)
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.client import SentimentClient
from pipeline.infra import EmbeddedBroker, create_topics
from pipeline.process import message, target_asks
from pipeline.schemas import ScoredDocument, TickerLink, TickerScore
from pipeline.settings import Settings


def test_only_a_text_with_two_or_more_tickers_asks_the_target_model() -> None:
    msg = message("$AAPL beats while Microsoft and $AAPL fans wait", doc_id="d", now_ms=1_700_000_000_000)
    aapl = TickerLink("AAPL", (0, 5), "cashtag")
    msft = TickerLink("MSFT", (18, 27), "name", 0.9)
    assert target_asks(msg, [aapl]) == []  # one ticker: its document score, no extra pass
    assert target_asks(msg, [aapl, TickerLink("AAPL", (33, 38), "cashtag")]) == []  # one symbol twice
    asks = target_asks(msg, [aapl, msft, TickerLink("AAPL", (33, 38), "cashtag"), TickerLink("SPY", None, "feed")])
    # one ask per symbol, in link order; the target as the text writes it, else its cashtag
    assert [(s, t.split(" [SEP] ")[0]) for s, t in asks] == [("AAPL", "$AAPL"), ("MSFT", "Microsoft"), ("SPY", "$SPY")]
    assert all(t.endswith(" [SEP] " + msg.text) for _, t in asks)


@pytest.fixture(scope="module")
def engines() -> Iterator[tuple[object, object]]:
    from pipeline.backtest import DEFAULT_CHUNK
    from pipeline.inference import build_engine, build_target_engine

    s = Settings(max_batch=MAX_BATCH, target_model="default")
    eng = build_engine(s, max_queue=DEFAULT_CHUNK).start()
    target = build_target_engine(s)
    assert target is not None
    target.start()
    yield eng, target
    eng.close()
    target.close()


@pytest.mark.integration
def test_worker_backtest_and_client_use_the_target_aware_scores(
    broker: EmbeddedBroker, redis_url: str, ns: str, tmp_path: Path, engines: tuple[object, object]
) -> None:
    from pipeline.backtest import BacktestReport, feed_records, run_backtest
    from pipeline.worker import Worker

    engine, target_engine = engines
    records = feed_records_json(60, tag="t")
    path = write_feed(tmp_path / "feed.jsonl", records)
    s = Settings(bootstrap=broker.bootstrap, redis_url=redis_url, namespace=ns, group_id=f"{ns}workers",
                 partitions=1, metrics_port=0, max_batch=MAX_BATCH, target_model="default")  # fmt: skip
    report = BacktestReport()
    want = run_backtest(list(feed_records(path, report.bad)), s, engine=engine, target_engine=target_engine,
                        report=report)  # type: ignore[arg-type]
    # without the target model, the same feed: every ticker of a text takes its score
    plain = backtest_file(path, engine, Settings(max_batch=MAX_BATCH))

    async def live() -> tuple[list[TickerScore], list[ScoredDocument]]:
        topics = [s.topic(t) for t in (s.news_topic, s.tweets_topic, s.documents_topic, s.scores_topic, s.dlq_topic)]
        await create_topics(s.bootstrap, topics, s.partitions)
        worker = Worker(s.model_copy(update={"session_timeout_ms": 6000}), engine=engine,  # type: ignore[arg-type]
                        target_engine=target_engine)  # type: ignore[arg-type]
        task = asyncio.create_task(worker.run())
        try:
            result = await asyncio.to_thread(CliRunner().invoke, app, [
                "replay", str(path), "--speed", "max", "--single-partition", "--bootstrap", s.bootstrap, "--namespace", ns])  # fmt: skip
            assert result.exit_code == 0, result.output
            await wait_drained(worker, task, 180, applied_at_least=len(records))
        finally:
            worker.stop()
            await task
        scores = await read_topic(s.bootstrap, s.topic(s.scores_topic))
        docs = await read_topic(s.bootstrap, s.topic(s.documents_topic))
        return [TickerScore.from_json(r.value) for r in scores], [ScoredDocument.from_json(r.value) for r in docs]

    published, docs = asyncio.run(live())
    # backtest == stream, with target-aware scores
    got = sorted((live_row(u) for u in published), key=lambda r: (r["as_of"], r["symbol"], r["seq"]))
    assert_same_updates(got, [live_row(u) for u in want.updates])
    assert [live_row(u)["score"] for u in want.updates] != pytest.approx([live_row(u)["score"] for u in plain.updates])

    # the documents topic: links of multi-ticker texts carry their own score and label
    assert len(docs) == len(records)
    multi = [d for d in docs if len({lk.symbol for lk in d.tickers}) >= 2]
    single = [d for d in docs if len({lk.symbol for lk in d.tickers}) == 1]
    assert multi and single
    assert all(lk.score is not None and lk.label is not None for d in multi for lk in d.tickers)
    assert all(lk.score is None and lk.label is None for d in single for lk in d.tickers)
    assert any(len({lk.score for lk in d.tickers}) == len(d.tickers) for d in multi)  # answered per ticker
    assert all("+elbert-minilm-targets" in d.model_version for d in docs)

    # the client reads the same target-aware aggregates from Redis
    latest: dict[str, TickerScore] = {}
    for u in published:
        if u.symbol not in latest or (u.as_of, u.seq) > (latest[u.symbol].as_of, latest[u.symbol].seq):
            latest[u.symbol] = u
    with SentimentClient(redis_url, namespace=ns) as client:
        for sym, u in latest.items():
            seen = client.latest(sym)
            assert seen is not None and seen.score == pytest.approx(u.score) and seen.seq == u.seq


def test_link_score_shows_the_sentiment_toward_each_ticker() -> None:
    texts = ["$AAPL soars on record iPhone sales while $MSFT sinks after a cloud miss", "$TSLA recalls 2M cars"]
    result = CliRunner().invoke(app, ["link", "--score", *texts])
    assert result.exit_code == 0, result.output
    lines = [orjson.loads(x) for x in result.stdout.splitlines()]
    pair, one = lines
    assert [lk["symbol"] for lk in pair["links"]] == ["AAPL", "MSFT"]
    assert all(lk["target_aware"] for lk in pair["links"])
    assert pair["links"][0]["label"] == "positive" and pair["links"][1]["label"] == "negative"
    assert pair["links"][0]["score"] > 0 > pair["links"][1]["score"]
    # one ticker: the text's own score, marked as such
    assert one["links"][0]["target_aware"] is False and one["links"][0]["score"] == one["score"]
    assert "research only" in result.stderr


def test_a_batchs_target_answers_go_back_to_their_messages() -> None:
    from pipeline.process import split_answers

    asks = [[("A", "a"), ("B", "b")], [], [("C", "c"), ("D", "d"), ("E", "e")]]
    assert split_answers(asks, [1, 2, 3, 4, 5]) == [[1, 2], [], [3, 4, 5]]  # type: ignore[list-item]
    with pytest.raises(ValueError):
        split_answers(asks, [1, 2, 3, 4])  # type: ignore[list-item]
