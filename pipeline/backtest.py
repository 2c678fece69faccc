"""``finsent backtest``: the streaming path's parse -> link -> model -> aggregation, offline.

A feed file (or a retained Kafka input topic) goes in; every per-ticker update comes out, with
its event time, to CSV or Parquet. No broker or Redis is needed for a file. The steps are the
worker's own functions from :mod:`pipeline.process` (parse with the same ``now`` check and the
default kind of the topic the record would be read from; de-duplication by id and text
fingerprint, first wins, a reused id reported like the worker's ``duplicate_id`` dead letter;
link; document; fold into the aggregates), with the linker and the engine built by
:mod:`pipeline.inference` (``build_linker``, ``build_engine``).

Order and point in time: documents are applied in ``published_at`` order (stable: equal times
keep their input order), so every update at event time ``t`` is computed from documents with
``published_at <= t`` only. The worker applies documents in the order it reads them (batches are
handed to the aggregator in fetch order), so the two agree whenever the worker reads the feed in
``published_at`` order from a single partition -- ``finsent replay --single-partition``.

Determinism: the engine's float results depend slightly (~1e-7) on which texts share a batch.
The backtest submits documents to the engine in fixed chunks and waits for each chunk, so the
same input and settings give bit-identical output on the same machine; the streaming worker's
batches depend on timing, so its scores can differ from the backtest's in about the 7th digit.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from aiokafka import TopicPartition

from pipeline.aggregate import Aggregator
from pipeline.feed import read_feed
from pipeline.process import (
    dedupe,
    document,
    duplicate_id_detail,
    fold,
    link,
    model_version,
    parse,
    split_answers,
    story,
    story_index,
    story_signs,
    target_asks,
    target_scores,
    text_hash,
)
from pipeline.schemas import InputMessage, Kind, ParseError, TickerScore, rfc3339
from pipeline.settings import Settings

if TYPE_CHECKING:
    from models.engine import Engine

__all__ = [
    "COLUMNS",
    "DEFAULT_CHUNK",
    "Backtest",
    "BacktestReport",
    "SourceRecord",
    "check_output",
    "feed_records",
    "kafka_records",
    "plot_symbol",
    "run_backtest",
    "update_row",
    "write_updates",
]

#: Output columns, in order. ``as_of`` is the update's event time (RFC 3339 UTC in CSV, a UTC
#: timestamp in Parquet); ``doc_id`` is the document whose application produced the update.
COLUMNS: Final[tuple[str, ...]] = (
    "symbol", "as_of", "score", "label", "n_5m", "n_1h", "n_24h", "bullish_1h", "bearish_1h", "doc_id",
    "model_version", "neutral_1h", "bullish_5m", "bearish_5m", "neutral_5m", "bullish_24h", "bearish_24h",
    "neutral_24h", "seq", "stories_1h",
)  # fmt: skip
_INT_COLUMNS: Final[frozenset[str]] = frozenset(
    c for c in COLUMNS if c.startswith(("n_", "bull", "bear", "neut", "stories"))
)

#: Texts handed to the engine at once (and waited for): large enough that the engine's batch
#: stays full, fixed so that results do not depend on timing.
DEFAULT_CHUNK: Final[int] = 4096

OUTPUT_SUFFIXES: Final[tuple[str, ...]] = (".csv", ".parquet")


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One raw input: where it came from (``file:line`` or ``topic:partition:offset``), its
    bytes, and the kind of the topic it is (or would be) read from."""

    where: str
    value: bytes
    kind: Kind


@dataclass(slots=True)
class BacktestReport:
    """What a backtest read, applied and skipped (nothing is skipped silently)."""

    records: int = 0  # raw records read, good or bad
    documents: int = 0  # documents scored and applied
    updates: int = 0  # per-ticker updates written
    bad: list[tuple[str, str]] = field(default_factory=list)  # (where, reason): not a valid input
    duplicates: int = 0  # same id and text as an earlier record: skipped, as the worker does
    duplicate_ids: list[tuple[str, str]] = field(default_factory=list)  # (where, detail): id reused
    late: list[tuple[str, str]] = field(default_factory=list)  # (where, detail): see Aggregator
    outside: int = 0  # valid records outside [start, end)
    seconds: float = 0.0
    texts_per_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records, "documents": self.documents, "updates": self.updates,
            "bad": len(self.bad), "duplicates": self.duplicates, "duplicate_ids": len(self.duplicate_ids),
            "late": len(self.late), "outside": self.outside, "seconds": round(self.seconds, 3),
            "texts_per_s": round(self.texts_per_s, 1),
        }  # fmt: skip


@dataclass(slots=True)
class Backtest:
    updates: list[TickerScore]  # sorted by (as_of, symbol, seq)
    report: BacktestReport


# ------------------------------------------------------------------------------ sources


def feed_records(path: Path, bad: list[tuple[str, str]]) -> Iterator[SourceRecord]:
    """The records of a feed file (read by :func:`pipeline.feed.read_feed`). Unusable lines go
    to ``bad`` as ``("FILE:LINE", reason)``. Kind = the topic ``finsent replay`` would use."""
    for fl in read_feed(path):
        where = f"{path}:{fl.line_no}"
        if fl.value is None:
            bad.append((where, fl.error or "unreadable"))
        else:
            yield SourceRecord(where, fl.value, "tweet" if fl.kind == "tweet" else "news")


async def kafka_records(settings: Settings, since_ms: int) -> list[SourceRecord]:
    """Every record of the input topics (news and tweets, namespaced) from the first one whose
    Kafka timestamp is at or after ``since_ms`` (``offsets_for_times``) to the current end.

    Needs a broker that indexes record timestamps (Kafka). The embedded Tansu broker answers
    ``offsets_for_times`` from append times at record-batch granularity, and with offset 0 when
    no record is that recent; the latter is read here as "nothing since".
    """
    from pipeline.client import high_watermarks
    from pipeline.connections import kafka_consumer

    s = settings
    kinds: dict[str, Kind] = {s.topic(s.news_topic): "news", s.topic(s.tweets_topic): "tweet"}
    consumer = kafka_consumer(s, enable_auto_commit=False, fetch_max_wait_ms=100)
    try:
        await consumer.start()
        await consumer.topics()
        tps = [TopicPartition(t, p) for t in kinds for p in sorted(consumer.partitions_for_topic(t) or ())]
        if not tps:
            raise ValueError(f"none of the input topics {', '.join(kinds)} exists on {s.bootstrap}")
        consumer.assign(tps)
        ends = await high_watermarks(consumer, tps)
        found = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
        pending: dict[TopicPartition, int] = {}
        for tp in tps:
            o = found.get(tp)
            begin = o.offset if o is not None and o.timestamp >= 0 else ends[tp]
            if begin < ends[tp]:
                consumer.seek(tp, begin)
                pending[tp] = ends[tp]
        out: list[SourceRecord] = []
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=500)
            for tp, records in batches.items():
                for r in records:
                    if r.offset < pending.get(tp, 0):
                        out.append(SourceRecord(f"{tp.topic}:{tp.partition}:{r.offset}", r.value or b"", kinds[tp.topic]))
            for tp in list(pending):
                if await consumer.position(tp) >= pending[tp]:
                    del pending[tp]
        return out
    finally:
        await consumer.stop()


# ------------------------------------------------------------------------------ the run


def run_backtest(
    records: Iterable[SourceRecord],
    settings: Settings,
    *,
    engine: Engine | None = None,
    target_engine: Engine | None = None,
    start: int | None = None,
    end: int | None = None,
    now_ms: int | None = None,
    chunk: int = DEFAULT_CHUNK,
    report: BacktestReport | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Backtest:
    """Score and aggregate ``records`` the way the worker does, in ``published_at`` order.

    Args:
        settings: model, exit rule, batch size, half-life and lateness (as for the worker).
        engine: an engine to use (started here if needed, left running); default: built from
            ``settings`` and closed at the end.
        target_engine: the target model's engine, likewise (default: built when
            ``settings.target_model`` names one): per-ticker scores of texts that link two or
            more tickers, as the worker computes them.
        start, end: only documents with ``start <= published_at < end`` (epoch ms).
        now_ms: the wall clock for the future-timestamp check (default: now, as the worker).
        report: a report to fill (e.g. one already holding the file's bad lines).
        on_progress: called with (documents scored, documents to score).

    Each update's ``updated_at`` is its event time (``as_of``): a backtest has no wall clock.
    """
    t0 = time.perf_counter()
    report = report if report is not None else BacktestReport()
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000

    accepted: list[tuple[InputMessage, str]] = []
    for rec in records:
        report.records += 1
        try:
            msg = parse(rec.value, now, rec.kind)
        except ParseError as exc:
            report.bad.append((rec.where, str(exc)))
            continue
        if (start is not None and msg.published_at < start) or (end is not None and msg.published_at >= end):
            report.outside += 1
            continue
        accepted.append((msg, rec.where))
    accepted.sort(key=lambda a: a[0].published_at)

    todo: list[tuple[InputMessage, str]] = []
    stored: dict[str, str] = {}  # id -> text hash of the first message with it (the worker: Redis)
    for msg, where in accepted:
        h = text_hash(msg.text)
        seen = dedupe(stored.get(msg.id), h)
        if seen == "new":
            stored[msg.id] = h
            todo.append((msg, where))
        elif seen == "duplicate":
            report.duplicates += 1
        else:
            report.duplicate_ids.append((where, duplicate_id_detail(msg.id)))
    if not todo:  # nothing to score (every record bad or outside [start, end)): no model to load
        report.seconds = time.perf_counter() - t0
        return Backtest([], report)

    from pipeline.inference import build_engine, build_linker, build_target_engine

    linker = build_linker(settings)  # the worker's: FINSENT_TAGGER adds the ORG tagger
    own = engine is None
    if engine is None:
        engine = build_engine(settings, max_queue=max(chunk, settings.max_batch))
    engine.start()
    own_target = target_engine is None
    if target_engine is None:
        target_engine = build_target_engine(settings)
    chunk = max(1, min(chunk, engine.max_queue))
    labels = engine.model.labels
    version = engine.model.config.version
    if target_engine is not None:
        target_engine.start()
        version = model_version(version, target_engine.model.config.version)
    agg = Aggregator(settings.half_life_s, settings.lateness_s, settings.novelty_weighting)
    index = story_index(settings.novelty_window_s, settings.lateness_s) if settings.novelty else None
    updates: list[TickerScore] = []
    done = 0
    t_score = time.perf_counter()
    try:
        for c in range(0, len(todo), chunk):
            part = todo[c : c + chunk]
            ids, truncated = engine.model.encode([m.text for m, _ in part])
            future = engine.submit_ids(ids, truncated)  # all at once: the batches do not depend on timing
            # while the engine works; with a tagger, one call per chunk (the worker: per poll)
            links = link(linker, [m for m, _ in part])
            asks, answers = [], []
            if target_engine is not None:
                asks = [target_asks(m, ls) for (m, _), ls in zip(part, links, strict=True)]
                answers = split_answers(asks, target_engine.predict_texts([t for a in asks for _, t in a]))
            docs, wheres = [], []
            for i, ((msg, where), msg_links, p) in enumerate(zip(part, links, future.result(), strict=True)):
                done += 1
                if on_progress is not None and (done % 256 == 0 or done == len(todo)):
                    on_progress(done, len(todo))
                try:
                    targets = None
                    if asks and asks[i]:
                        assert target_engine is not None
                        targets = target_scores(asks[i], answers[i], target_engine.model.labels)
                    docs.append(document(msg, msg_links, p, labels=labels, model_version=version, ingested_at=now,
                                         scored_at=now, languages=settings.aggregated_languages, targets=targets))
                except ValueError as exc:  # the worker dead-letters these as "internal"
                    report.bad.append((where, f"internal: scoring: {exc}"))
                    continue
                wheres.append(where)
            if index is not None and docs:  # the worker's applier does the same, one round at a time
                signs = story_signs(docs)
                docs = [story(index, d, sig, ks).doc for d, sig, ks in zip(docs, signs.sigs, signs.keys, strict=True)]
            for doc, where in zip(docs, wheres, strict=True):
                folded = fold(agg, doc, doc.published_at)
                if folded.late is not None:  # impossible in event-time order
                    report.late.append((where, str(folded.late)))
                report.documents += 1
                updates.extend(folded.updates)
    finally:
        if own:
            engine.close()
        if own_target and target_engine is not None:
            target_engine.close()
    scoring = time.perf_counter() - t_score
    updates.sort(key=lambda u: (u.as_of, u.symbol, u.seq))
    report.updates = len(updates)
    report.seconds = time.perf_counter() - t0
    report.texts_per_s = report.documents / scoring if scoring > 0 else 0.0
    return Backtest(updates, report)


# ------------------------------------------------------------------------------ output


def update_row(u: TickerScore) -> dict[str, Any]:
    """One output row (``as_of`` as epoch ms; writers format it)."""
    row = {c: getattr(u, c) for c in COLUMNS if c != "doc_id"}
    row["doc_id"] = u.last_doc_id
    return row


def check_output(path: Path) -> None:
    """Raise ValueError now, before any work, if ``path`` cannot be written as requested."""
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"output file must end in .csv or .parquet, not {path.name!r}")
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ValueError(
                "writing .parquet needs pyarrow: pip install 'finsent[parquet]' (or pyarrow), or write .csv"
            ) from None
    if not path.parent.exists():
        raise ValueError(f"directory {path.parent} does not exist")


def write_updates(updates: Sequence[TickerScore], path: Path) -> None:
    """Write ``updates`` (in the order given) to CSV or Parquet, chosen by the suffix."""
    check_output(path)
    rows = [update_row(u) for u in updates]
    if path.suffix.lower() == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            for row in rows:
                row["as_of"] = rfc3339(row["as_of"])
                w.writerow(row)  # floats via repr: they read back exactly
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    def column(name: str) -> pa.Array:
        values = [r[name] for r in rows]
        if name == "as_of":
            return pa.array(values, type=pa.timestamp("ms", tz="UTC"))
        if name == "score":
            return pa.array(values, type=pa.float64())
        if name == "seq" or name in _INT_COLUMNS:
            return pa.array(values, type=pa.int64())
        return pa.array(values, type=pa.string())

    pq.write_table(pa.table({c: column(c) for c in COLUMNS}), path)


def plot_symbol(updates: Sequence[TickerScore], symbol: str, png: Path) -> None:
    """Draw one ticker's score (top) and document volume per time bucket (bottom) to ``png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = [u for u in updates if u.symbol == symbol]
    if not mine:
        raise ValueError(f"no updates for {symbol} in this backtest")
    times = [datetime.fromtimestamp(u.as_of / 1000, tz=UTC) for u in mine]
    span_ms = max(1, mine[-1].as_of - mine[0].as_of)
    bucket_ms = next((b for b in _BUCKETS_MS if span_ms / b <= 120), _BUCKETS_MS[-1])
    counts: dict[int, int] = {}
    for u in mine:
        b = u.as_of // bucket_ms * bucket_ms
        counts[b] = counts.get(b, 0) + 1
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(10, 6), height_ratios=(3, 1))
    ax1.step(times, [u.score for u in mine], where="post", lw=1.2)
    for y, style in ((0.35, "--"), (0.15, ":"), (-0.15, ":"), (-0.35, "--")):
        ax1.axhline(y, color="grey", lw=0.8, ls=style)
    ax1.set_ylim(-1.05, 1.05)
    ax1.set_ylabel("score")
    ax1.set_title(f"{symbol}: decayed sentiment score and documents per {_bucket_name(bucket_ms)}")
    ax2.bar([datetime.fromtimestamp(b / 1000, tz=UTC) for b in counts], list(counts.values()),
            width=bucket_ms / 86_400_000, align="edge")  # fmt: skip
    ax2.set_ylabel("documents")
    ax2.set_xlabel("event time (UTC)")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


_BUCKETS_MS: Final[tuple[int, ...]] = (60_000, 300_000, 900_000, 3_600_000, 14_400_000, 86_400_000, 604_800_000)


def _bucket_name(ms: int) -> str:
    return {60_000: "minute", 300_000: "5 minutes", 900_000: "15 minutes", 3_600_000: "hour",
            14_400_000: "4 hours", 86_400_000: "day", 604_800_000: "week"}[ms]  # fmt: skip
