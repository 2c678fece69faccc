"""``finsent backtest`` (pipeline/backtest.py): point in time, bad lines, outputs, and equality
with what the streaming worker publishes for the same feed (real embedded broker, real Redis,
the shipped model).

Scores are compared to 1e-5, everything else exactly: the engine's float results depend on
which texts share a batch (~1e-6, see tests/tinymodels.borderline), and the worker's batches
depend on timing. A label may differ only where the score sits within that tolerance of a
label cut-off.
"""

from __future__ import annotations

import asyncio
import csv
import random
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from streaming_helpers import T0, read_topic, wait_drained
from typer.testing import CliRunner

from pipeline.backtest import COLUMNS, Backtest, BacktestReport, feed_records, run_backtest, write_updates
from pipeline.cli import app
from pipeline.infra import EmbeddedBroker, create_topics
from pipeline.schemas import BEARISH_MAX, BULLISH_MIN, TickerScore, epoch_ms, rfc3339
from pipeline.settings import Settings

SYMBOLS = ("AAPL", "MSFT", "NVDA", "TSLA", "AMZN")
PHRASES = (
    "beats revenue estimates and raises full-year guidance",
    "shares slump after the company cuts its outlook",
    "to present at an industry conference next week",
    "misses on earnings as margins shrink",
    "announces a $10 billion share buyback",
    "faces a regulatory probe into its accounting",
)
MALFORMED = (b"not json at all", b'{"id": "m1", "published_at": "2024-03-14T14:00:00Z"}',
             b'{"id": "m2", "text": "hi", "published_at": "yesterday"}')  # fmt: skip
CUTOFFS = (BEARISH_MAX, -0.15, 0.15, BULLISH_MIN)
TOL = 1e-5
MAX_BATCH = 16


def feed_records_json(n: int, tag: str = "d") -> list[dict]:
    """n valid inputs over ~n/2 * 30 s: two documents per timestamp (ties), cashtags, feed tickers,
    several tickers per text, tweets and news."""
    out = []
    for i in range(n):
        sym, other = SYMBOLS[i % len(SYMBOLS)], SYMBOLS[(i * 2 + 1) % len(SYMBOLS)]
        phrase = PHRASES[(i * 7) % len(PHRASES)]
        text = (f"${sym} {phrase}", f"${sym} and ${other}: {phrase}", f"Company {phrase}")[i % 3]
        rec = {"id": f"{tag}-{i:04d}", "text": text, "published_at": rfc3339(T0 + (i // 2) * 30_000),
               "kind": "tweet" if i % 4 == 1 else "news"}  # fmt: skip
        if i % 3 == 2:
            rec["tickers"] = [sym]
        out.append(rec)
    return out


def write_feed(path: Path, records: list[dict], *, shuffle: int | None = 7, bad: bool = False) -> Path:
    lines = [orjson.dumps(r) for r in records]
    if shuffle is not None:
        random.Random(shuffle).shuffle(lines)
    if bad:
        for j, raw in enumerate(MALFORMED):
            lines.insert(3 + 5 * j, raw)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def read_csv(path: Path) -> list[dict]:
    """Backtest CSV rows, typed like the live records (as_of back to epoch ms)."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        rows = []
        for r in reader:
            row: dict = dict(r)
            row["as_of"] = epoch_ms(r["as_of"])
            row["score"] = float(r["score"])
            for c in COLUMNS:
                if c.startswith(("n_", "bull", "bear", "neut", "stories")) or c == "seq":
                    row[c] = int(r[c])
            rows.append(row)
        return rows


def live_row(u: TickerScore) -> dict:
    row = {c: getattr(u, c) for c in COLUMNS if c != "doc_id"}
    row["doc_id"] = u.last_doc_id
    return row


def assert_same_updates(got: list[dict], want: list[dict]) -> None:
    """Row by row: every column equal, scores to TOL (labels may differ only on a cut-off)."""
    assert len(got) == len(want), f"{len(got)} rows vs {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        exact = [c for c in COLUMNS if c not in ("score", "label")]
        assert {c: g[c] for c in exact} == {c: w[c] for c in exact}, f"row {i}"
        assert g["score"] == pytest.approx(w["score"], abs=TOL), f"row {i}: {g} vs {w}"
        if g["label"] != w["label"]:
            assert min(abs(w["score"] - c) for c in CUTOFFS) < TOL, f"row {i}: label {g['label']} vs {w['label']}"


@pytest.fixture(scope="module")
def engine() -> Iterator[object]:
    from pipeline.backtest import DEFAULT_CHUNK
    from pipeline.inference import build_engine

    eng = build_engine(Settings(max_batch=MAX_BATCH), max_queue=DEFAULT_CHUNK).start()
    yield eng
    eng.close()


def backtest_file(path: Path, engine: object, settings: Settings | None = None) -> Backtest:
    report = BacktestReport()
    records = list(feed_records(path, report.bad))
    return run_backtest(records, settings or Settings(max_batch=MAX_BATCH), engine=engine, report=report)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- offline


def test_updates_are_point_in_time_and_sorted(tmp_path: Path, engine: object) -> None:
    records = feed_records_json(60)
    bt = backtest_file(write_feed(tmp_path / "feed.jsonl", records), engine)
    published = {r["id"]: epoch_ms(r["published_at"]) for r in records}
    assert bt.report.documents == 60 and not bt.report.bad
    keys = [(u.as_of, u.symbol, u.seq) for u in bt.updates]
    assert keys == sorted(keys)
    # every update is stamped with its own document's event time, and per ticker the documents
    # counted so far (seq) are exactly those published up to then
    for u in bt.updates:
        assert u.as_of == published[u.last_doc_id]
    for sym in SYMBOLS:
        seqs = [u.seq for u in bt.updates if u.symbol == sym]
        assert seqs == list(range(1, len(seqs) + 1)), sym


def test_a_future_document_cannot_change_an_earlier_update(tmp_path: Path, engine: object) -> None:
    records = feed_records_json(60)
    base = backtest_file(write_feed(tmp_path / "base.jsonl", records), engine)
    t_mid = T0 + 15 * 30_000 + 10_000  # between two event times, inside the feed
    shock = {"id": "future-shock", "text": "$AAPL plunges after fraud charges, CEO arrested, guidance withdrawn",
             "published_at": rfc3339(t_mid), "kind": "news"}  # fmt: skip
    # first line of the file: only its event time may decide where it counts
    path = tmp_path / "shock.jsonl"
    path.write_bytes(orjson.dumps(shock) + b"\n" + write_feed(tmp_path / "tmp.jsonl", records).read_bytes())
    with_shock = backtest_file(path, engine)

    before = [live_row(u) for u in base.updates if u.as_of < t_mid]
    assert len(before) > 20
    assert_same_updates([live_row(u) for u in with_shock.updates if u.as_of < t_mid], before)
    # ... and it does count from its own event time on (so the check above could fail)
    (row,) = [u for u in with_shock.updates if u.last_doc_id == "future-shock"]
    prev = [u for u in with_shock.updates if u.symbol == "AAPL" and u.as_of < t_mid][-1]
    assert row.as_of == t_mid and row.seq == prev.seq + 1 and row.score < prev.score - 0.05
    after_base = [u for u in base.updates if u.symbol == "AAPL" and u.as_of > t_mid]
    after_shock = [u for u in with_shock.updates if u.symbol == "AAPL" and u.as_of > t_mid]
    assert [u.seq for u in after_shock] == [u.seq + 1 for u in after_base]


def test_same_input_gives_a_bit_identical_file(tmp_path: Path, engine: object) -> None:
    path = write_feed(tmp_path / "feed.jsonl", feed_records_json(40))
    outs = []
    for k in range(2):
        out = tmp_path / f"run{k}.csv"
        write_updates(backtest_file(path, engine).updates, out)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and outs[0].count(b"\n") > 40


def test_duplicates_and_reused_ids_are_counted_not_applied(tmp_path: Path, engine: object) -> None:
    records = feed_records_json(20)
    resent = dict(records[3])
    reused = dict(records[5], text=records[5]["text"] + " (edited)")
    # both later in event time than the originals, like a re-delivery
    resent["published_at"] = reused["published_at"] = rfc3339(T0 + 3_600_000)
    path = write_feed(tmp_path / "feed.jsonl", [*records, resent, reused], shuffle=None)
    bt = backtest_file(path, engine)
    assert bt.report.documents == 20 and bt.report.duplicates == 1
    assert [w for w, _ in bt.report.duplicate_ids] == [f"{path}:22"]
    assert not any(u.as_of == T0 + 3_600_000 for u in bt.updates)


def test_worker_and_backtest_share_one_processing_step(tmp_path: Path, engine: object) -> None:
    """Both modules call pipeline.process's functions (the very same objects), and the backtest's
    updates are exactly those steps applied in event-time order."""
    import pipeline.applier
    import pipeline.backtest
    import pipeline.worker
    from pipeline import process
    from pipeline.aggregate import Aggregator
    from pipeline.inference import build_linker

    for name in ("parse", "dedupe", "duplicate_id_detail", "link", "document"):
        assert getattr(pipeline.worker, name) is getattr(pipeline.backtest, name) is getattr(process, name), name
    assert pipeline.applier.fold is pipeline.backtest.fold is process.fold
    for name in ("story", "story_index", "story_signs"):
        assert getattr(pipeline.applier, name) is getattr(pipeline.backtest, name) is getattr(process, name), name
    assert pipeline.applier.duplicate_id_detail is process.duplicate_id_detail

    records = feed_records_json(24)
    reused = dict(records[4], text=records[4]["text"] + " (edited)", published_at=rfc3339(T0 + 3_600_000))
    path = write_feed(tmp_path / "feed.jsonl", [*records, reused], shuffle=None)  # ties keep file order
    bt = backtest_file(path, engine)
    assert [d for _, d in bt.report.duplicate_ids] == [process.duplicate_id_detail(reused["id"])]

    now = time.time_ns() // 1_000_000
    msgs = sorted((process.parse(orjson.dumps(r), now, r["kind"]) for r in records), key=lambda m: m.published_at)
    assert {process.dedupe(None, process.text_hash(m.text)) for m in msgs} == {"new"}
    assert process.dedupe(process.text_hash(msgs[0].text), process.text_hash("other")) == "duplicate_id"
    links = process.link(build_linker(Settings()), msgs)
    preds = engine.predict_texts([m.text for m in msgs])  # type: ignore[attr-defined]
    labels, version = engine.model.labels, engine.model.config.version  # type: ignore[attr-defined]
    agg = Aggregator(Settings().half_life_s, Settings().lateness_s)
    index = process.story_index(Settings().novelty_window_s, Settings().lateness_s)
    want = []
    for m, m_links, p in zip(msgs, links, preds, strict=True):
        doc = process.document(m, m_links, p, labels=labels, model_version=version, ingested_at=now, scored_at=now)
        signs = process.story_signs([doc])
        doc = process.story(index, doc, signs.sigs[0], signs.keys[0]).doc
        want.extend(process.fold(agg, doc, doc.published_at).updates)
    assert len(index) < len(msgs), "the feed repeats stories: some documents must share one"
    want.sort(key=lambda u: (u.as_of, u.symbol, u.seq))
    assert_same_updates([live_row(u) for u in bt.updates], [live_row(u) for u in want])


def test_cli_reports_bad_lines_and_writes_csv_parquet_and_plot(tmp_path: Path, engine: object) -> None:
    pa = pytest.importorskip("pyarrow.parquet")
    records = feed_records_json(30)
    path = write_feed(tmp_path / "feed.jsonl", records, bad=True)
    out = tmp_path / "updates.parquet"
    end = rfc3339(T0 + 10 * 30_000)
    result = CliRunner().invoke(app, ["backtest", str(path), "--out", str(out), "--plot", "aapl",
                                      "--max-batch", str(MAX_BATCH), "--end", end])  # fmt: skip
    assert result.exit_code == 0, result.output
    bad_lines = sorted(int(line.split(":")[1]) for line in result.output.splitlines() if ": skipped: " in line)
    assert bad_lines == [4, 9, 14], result.output  # 1-based lines of the three malformed records
    assert "not_json" in result.output and "missing_field" in result.output and "bad_timestamp" in result.output
    assert "10 outside --start/--end" in result.output
    assert (tmp_path / "updates.AAPL.png").stat().st_size > 10_000

    table = pa.read_table(out)
    assert tuple(table.column_names) == COLUMNS
    got = table.to_pylist()
    for row in got:
        row["as_of"] = epoch_ms(row["as_of"])
    want = [live_row(u) for u in backtest_file(path, engine).updates if u.as_of < epoch_ms(end)]
    assert_same_updates(got, want)

    for bad_out, message in (("updates.xlsx", ".csv or .parquet"), ("missing/u.csv", "does not exist")):
        result = CliRunner().invoke(app, ["backtest", str(path), "--out", str(tmp_path / bad_out)])
        assert result.exit_code == 2 and message in result.output


def test_cli_fails_when_no_line_of_the_feed_is_valid(tmp_path: Path) -> None:
    """Every line bad: each is reported, then one line says there was nothing to backtest, exit 1
    and no (empty) output file. (A feed with some good lines exits 0: the test above.)"""
    path = tmp_path / "feed.jsonl"
    path.write_bytes(b"\n".join(MALFORMED) + b"\n")
    out = tmp_path / "updates.csv"
    result = CliRunner().invoke(app, ["backtest", str(path), "--out", str(out)])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert [line.split(": skipped: ")[0] for line in lines[:-1]] == [f"{path}:{n}" for n in (1, 2, 3)]
    assert lines[-1] == f"error: no valid document in {path} (3 bad); nothing written to {out}"
    assert not out.exists()


# ---------------------------------------------------------------------------- against the worker


@pytest.mark.integration
@pytest.mark.slow
def test_backtest_equals_what_the_worker_publishes(
    broker: EmbeddedBroker, redis_url: str, ns: str, tmp_path: Path, engine: object
) -> None:
    """The same feed, once through `finsent replay --single-partition` + a streaming worker and
    once through the backtest: the worker's finsent.ticker-scores records equal the backtest
    file row by row. Then `--from-kafka` re-scores the replayed topic to the same file."""
    from pipeline.worker import Worker

    path = write_feed(tmp_path / "feed.jsonl", feed_records_json(150), bad=True)
    s = Settings(bootstrap=broker.bootstrap, redis_url=redis_url, namespace=ns, group_id=f"{ns}workers",
                 partitions=2, metrics_port=0, max_batch=MAX_BATCH)  # fmt: skip
    out = tmp_path / "backtest.csv"
    write_updates(backtest_file(path, engine, s).updates, out)
    want = read_csv(out)

    async def live() -> list[TickerScore]:
        topics = [s.topic(t) for t in (s.news_topic, s.tweets_topic, s.documents_topic, s.scores_topic, s.dlq_topic)]
        await create_topics(s.bootstrap, topics, s.partitions)  # 2 partitions: --single-partition must cope
        worker = Worker(s.model_copy(update={"session_timeout_ms": 6000}), engine=engine)  # type: ignore[arg-type]
        task = asyncio.create_task(worker.run())
        try:
            # replay while the worker runs, so it sees the feed in several polls and batches
            result = await asyncio.to_thread(CliRunner().invoke, app, [
                "replay", str(path), "--speed", "max", "--single-partition",
                "--bootstrap", s.bootstrap, "--namespace", ns])  # fmt: skip
            assert result.exit_code == 0, result.output
            assert "sent 150 to" in result.output and "3 bad lines skipped" in result.output
            await wait_drained(worker, task, 180, applied_at_least=150)
        finally:
            worker.stop()
            await task
        records = await read_topic(s.bootstrap, s.topic(s.scores_topic))
        return [TickerScore.from_json(r.value) for r in records]

    t_before = time.time_ns() // 1_000_000 - 1000
    published = asyncio.run(live())
    got = sorted((live_row(u) for u in published), key=lambda r: (r["as_of"], r["symbol"], r["seq"]))
    assert len(want) > 150
    assert_same_updates(got, want)

    # --from-kafka: the retained input topic, re-scored, gives the file's backtest exactly
    kafka_out = tmp_path / "from_kafka.csv"
    args = ["backtest", "--from-kafka", "--since", str(t_before), "--bootstrap", s.bootstrap,
            "--namespace", ns, "--out", str(kafka_out), "--max-batch", str(MAX_BATCH)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert kafka_out.read_bytes() == out.read_bytes()
    # nothing is that recent: a clear error, not an empty file
    args[args.index("--since") + 1] = str(time.time_ns() // 1_000_000 + 3_600_000)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "no records at or after --since" in result.output


class _SlowFirstEngine:
    """An engine stand-in that answers texts containing "slow" a second late, so the worker's
    second batch is scored before its first (as a real engine does when the first batch holds a
    text that runs to the last layer and the second only early exits)."""

    model = SimpleNamespace(labels=("negative", "neutral", "positive"), config=SimpleNamespace(version="stub"))

    def start(self) -> _SlowFirstEngine:
        return self

    async def predict(self, texts: list[str]) -> list[object]:
        from models.engine import Prediction

        if any("slow" in t for t in texts):
            await asyncio.sleep(1.0)
        return [Prediction("positive", 2, (0.1, 0.2, 0.7), 6 if "slow" in t else 1, 0.0) for t in texts]


@pytest.mark.integration
def test_worker_applies_batches_in_fetch_order_even_when_scored_out_of_order(
    broker: EmbeddedBroker, redis_url: str, ns: str
) -> None:
    from aiokafka import AIOKafkaProducer

    from pipeline.worker import Worker

    s = Settings(bootstrap=broker.bootstrap, redis_url=redis_url, namespace=ns, group_id=f"{ns}workers",
                 partitions=1, metrics_port=0, max_batch=1, max_wait_ms=0)  # fmt: skip
    docs = [{"id": "first", "text": "$AAPL slow to answer", "published_at": T0},
            {"id": "second", "text": "$AAPL quick to answer", "published_at": T0 + 1000}]  # fmt: skip

    async def run() -> list[TickerScore]:
        topics = [s.topic(t) for t in (s.news_topic, s.tweets_topic, s.documents_topic, s.scores_topic, s.dlq_topic)]
        await create_topics(s.bootstrap, topics, 1)
        producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap, enable_idempotence=False)
        await producer.start()
        try:  # one produce batch, so one poll fetches both and they become batches 1 and 2
            futures = [await producer.send(s.topic(s.news_topic), orjson.dumps(d)) for d in docs]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        worker = Worker(s.model_copy(update={"session_timeout_ms": 6000}), engine=_SlowFirstEngine())  # type: ignore[arg-type]
        task = asyncio.create_task(worker.run())
        t0 = time.monotonic()
        try:
            while worker.counts["applied"] < 2 or not await worker.drained():
                assert not task.done() and time.monotonic() - t0 < 60, worker.counts
                await asyncio.sleep(0.1)
        finally:
            worker.stop()
            await task
        return [TickerScore.from_json(r.value) for r in await read_topic(s.bootstrap, s.topic(s.scores_topic))]

    updates = sorted(asyncio.run(run()), key=lambda u: u.seq)
    # in event-time order, as the backtest applies them: each update at its own document's time
    assert [(u.seq, u.last_doc_id, u.as_of) for u in updates] == [(1, "first", T0), (2, "second", T0 + 1000)]
