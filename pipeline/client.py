"""What trading bots import: the latest per-ticker sentiment, its history, and live updates.

Importing this module does not import torch (or the model): a bot needs only redis, aiokafka,
orjson and the finsent schema module. Every value is a :class:`pipeline.schemas.TickerScore`,
the same record the worker writes; key names come from :class:`pipeline.keys.Keys` and topic
names from :class:`pipeline.settings.Settings`, so the client reads exactly what the pipeline
writes. Connection settings (namespace, Kafka SSL/SASL, Redis TLS/ACL) default to the
``FINSENT_*`` environment, like every other finsent process.

Three ways in, from cheapest to most complete:

* :class:`SentimentClient` / :class:`AsyncSentimentClient` -- Redis reads:
  :meth:`~SentimentClient.latest`, :meth:`~SentimentClient.latest_many`,
  :meth:`~SentimentClient.history` (the hash ``finsent:ticker:{SYMBOL}`` and the sorted set
  ``finsent:ticker:{SYMBOL}:history``).
* :func:`listen` -- Redis pub/sub ``finsent:updates``: the lowest latency (the worker publishes
  inside its commit), but fire-and-forget: updates sent while the connection is down are lost.
* :func:`subscribe` -- the Kafka topic ``finsent.ticker-scores``: every update, in order per
  ticker, from ``earliest``, ``latest`` or a point in time, resuming where it was after a
  reconnect.

Example::

    import asyncio
    from pipeline.client import SentimentClient, subscribe

    print(SentimentClient().latest("AAPL"))

    async def main():
        async with subscribe(symbols=["AAPL", "TSLA"], start="earliest") as updates:
            async for u in updates:
                print(u.symbol, u.score, u.label)

    asyncio.run(main())
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pipeline.connections import kafka_consumer, redis_client, redis_sync_client
from pipeline.keys import Keys
from pipeline.schemas import TickerScore, epoch_ms, normalize_symbol
from pipeline.settings import Settings

__all__ = ["AsyncSentimentClient", "Listener", "SentimentClient", "Start", "Subscription", "listen", "subscribe"]

log = logging.getLogger(__name__)

#: Where :func:`subscribe` starts: ``"earliest"`` (everything retained), ``"latest"`` (only
#: updates published after it connected), or a point in time (aware ``datetime``, epoch ms or
#: RFC 3339) compared with the records' Kafka timestamps.
Start = Literal["latest", "earliest"] | datetime | int | str

TimeBound = datetime | int | str | None

_MAX_BACKOFF_S = 5.0


def _settings(settings: Settings | None, **overrides: Any) -> Settings:
    base = settings if settings is not None else Settings()
    updates = {k: v for k, v in overrides.items() if v is not None}
    return base.model_copy(update=updates) if updates else base


def _symbol(symbol: str) -> str:
    s = normalize_symbol(symbol)
    if s is None:
        raise ValueError(f"not a ticker symbol: {symbol!r}")
    return s


def _symbols(symbols: Iterable[str] | None) -> frozenset[str] | None:
    if symbols is None:
        return None
    if isinstance(symbols, str):  # a lone "AAPL" is not the set {"A", "P", "L"}
        symbols = [symbols]
    return frozenset(_symbol(s) for s in symbols)


def _bound(value: TimeBound, default: str) -> str | int:
    return default if value is None else epoch_ms(value)


def _history(raw: list[bytes], limit: int | None) -> list[TickerScore]:
    # Members with the same as_of sort by their JSON in Redis; seq gives the true order.
    out = sorted((TickerScore.from_json(v) for v in raw), key=lambda u: (u.as_of, u.seq))
    return out[-limit:] if limit else out


# ------------------------------------------------------------------------------ Redis reads


class SentimentClient:
    """Blocking reads of the per-ticker aggregates in Redis.

    Args:
        redis_url: Redis URL (default: ``FINSENT_REDIS_URL``, else redis://127.0.0.1:6379/0).
        namespace: the pipeline's namespace prefix (default: ``FINSENT_NAMESPACE``, else none).
        settings: full settings (credentials, TLS); the two arguments above override it.

    Symbols may be given as ``AAPL``, ``aapl``, ``$AAPL`` or ``NASDAQ:AAPL``.
    """

    def __init__(
        self, redis_url: str | None = None, *, namespace: str | None = None, settings: Settings | None = None
    ) -> None:
        s = _settings(settings, redis_url=redis_url, namespace=namespace)
        self.keys = Keys(s.namespace)
        self.redis = redis_sync_client(s)

    def latest(self, symbol: str) -> TickerScore | None:
        """The ticker's latest update, or None if the pipeline has never seen it."""
        fields = self.redis.hgetall(self.keys.ticker(_symbol(symbol)))
        return TickerScore.from_fields(fields) if fields else None

    def latest_many(self, symbols: Iterable[str]) -> dict[str, TickerScore | None]:
        """Symbol -> latest update (None if unseen), read in one round trip."""
        wanted = [_symbol(s) for s in ([symbols] if isinstance(symbols, str) else symbols)]
        with self.redis.pipeline(transaction=False) as pipe:
            for s in wanted:
                pipe.hgetall(self.keys.ticker(s))
            raw = pipe.execute()
        return {s: TickerScore.from_fields(f) if f else None for s, f in zip(wanted, raw, strict=True)}

    def history(
        self, symbol: str, start: TimeBound = None, end: TimeBound = None, *, limit: int | None = None
    ) -> list[TickerScore]:
        """Updates with ``start <= as_of <= end`` (event time; either bound may be None), oldest
        first. ``limit`` keeps the newest ``limit`` of them. Redis keeps the newest
        ``FINSENT_HISTORY_LEN`` updates per ticker; use ``finsent backtest`` for more."""
        key = self.keys.history(_symbol(symbol))
        lo, hi = _bound(start, "-inf"), _bound(end, "+inf")
        if limit:
            raw = self.redis.zrevrangebyscore(key, hi, lo, start=0, num=limit)
        else:
            raw = self.redis.zrangebyscore(key, lo, hi)
        return _history(raw, limit)

    def symbols(self) -> list[str]:
        """Every symbol the pipeline has published, sorted."""
        return sorted(s.decode() for s in self.redis.smembers(self.keys.tickers))

    def close(self) -> None:
        self.redis.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSentimentClient:
    """:class:`SentimentClient` for asyncio code: the same methods, awaitable."""

    def __init__(
        self, redis_url: str | None = None, *, namespace: str | None = None, settings: Settings | None = None
    ) -> None:
        s = _settings(settings, redis_url=redis_url, namespace=namespace)
        self.keys = Keys(s.namespace)
        self.redis = redis_client(s)

    async def latest(self, symbol: str) -> TickerScore | None:
        """The ticker's latest update, or None if the pipeline has never seen it."""
        fields = await self.redis.hgetall(self.keys.ticker(_symbol(symbol)))
        return TickerScore.from_fields(fields) if fields else None

    async def latest_many(self, symbols: Iterable[str]) -> dict[str, TickerScore | None]:
        """Symbol -> latest update (None if unseen), read in one round trip."""
        wanted = [_symbol(s) for s in ([symbols] if isinstance(symbols, str) else symbols)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for s in wanted:
                pipe.hgetall(self.keys.ticker(s))
            raw = await pipe.execute()
        return {s: TickerScore.from_fields(f) if f else None for s, f in zip(wanted, raw, strict=True)}

    async def history(
        self, symbol: str, start: TimeBound = None, end: TimeBound = None, *, limit: int | None = None
    ) -> list[TickerScore]:
        """Updates with ``start <= as_of <= end``, oldest first (see :meth:`SentimentClient.history`)."""
        key = self.keys.history(_symbol(symbol))
        lo, hi = _bound(start, "-inf"), _bound(end, "+inf")
        if limit:
            raw = await self.redis.zrevrangebyscore(key, hi, lo, start=0, num=limit)
        else:
            raw = await self.redis.zrangebyscore(key, lo, hi)
        return _history(raw, limit)

    async def symbols(self) -> list[str]:
        """Every symbol the pipeline has published, sorted."""
        return sorted(s.decode() for s in await self.redis.smembers(self.keys.tickers))

    async def aclose(self) -> None:
        await self.redis.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


# ------------------------------------------------------------------------------ live updates


_READY = object()  # yielded once by a stream's generator when it is connected and positioned


class _Stream:
    """An async iterator over an inner generator that is also an async context manager:
    ``async with subscribe(...) as updates`` returns once connected (so ``"latest"`` means
    "after this line") and closes the connections when the block is left."""

    def __init__(self, gen: AsyncIterator[Any]) -> None:
        self._gen = gen
        self._started = False

    async def start(self) -> Self:
        """Connect now (otherwise the first ``__anext__`` does)."""
        if not self._started:
            first = await self._gen.__anext__()
            assert first is _READY
            self._started = True
        return self

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> TickerScore:
        await self.start()
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        await self._gen.aclose()  # type: ignore[attr-defined]

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class Subscription(_Stream):
    """Updates from ``finsent.ticker-scores`` (see :func:`subscribe`)."""


class Listener(_Stream):
    """Updates from the Redis channel ``finsent:updates`` (see :func:`listen`)."""


def subscribe(
    bootstrap: str | None = None,
    symbols: Iterable[str] | None = None,
    start: Start = "latest",
    *,
    namespace: str | None = None,
    settings: Settings | None = None,
    drop_stale: bool = True,
    poll_timeout_ms: int = 500,
) -> Subscription:
    """Typed updates from the Kafka topic ``finsent.ticker-scores``, as an async iterator.

    Args:
        bootstrap: Kafka bootstrap servers (default: ``FINSENT_BOOTSTRAP``).
        symbols: only these tickers (default: all).
        start: ``"latest"`` (updates published from now on), ``"earliest"`` (everything the
            topic retains) or a time (aware ``datetime``, epoch ms, RFC 3339): the first
            record whose Kafka timestamp -- when the worker produced it -- is at or after it.
        namespace: the pipeline's namespace prefix (default: ``FINSENT_NAMESPACE``).
        settings: full settings (credentials, TLS); the arguments above override it.
        drop_stale: skip an update whose ``seq`` is not above the last one seen for its
            ticker (a repeat after a crash-recovery); per-ticker order is Kafka's, as each
            ticker is one partition's key.
        poll_timeout_ms: how long one fetch waits for new records.

    No consumer group is joined (nothing to wait for, nothing committed): each subscription
    reads every partition itself. Kafka errors close the connection and reopen it after a
    capped backoff, resuming after the last record delivered; if the topic does not exist yet
    the subscription waits for it. Use ``async with subscribe(...) as updates`` (or
    ``await updates.aclose()``) to close the connection when done.
    """
    s = _settings(settings, bootstrap=bootstrap, namespace=namespace)
    if not isinstance(start, (datetime, int, str)):
        raise TypeError(f"start must be 'latest', 'earliest', a datetime, epoch ms or RFC 3339, not {start!r}")
    start_ms = None if start in ("latest", "earliest") else epoch_ms(start)  # fail now, not on first use
    return Subscription(_consume(s, _symbols(symbols), start, start_ms, drop_stale, poll_timeout_ms))


async def _consume(
    s: Settings,
    wanted: frozenset[str] | None,
    start: Start,
    start_ms: int | None,
    drop_stale: bool,
    poll_timeout_ms: int,
) -> AsyncIterator[Any]:
    topic = s.topic(s.scores_topic)
    positions: dict[int, int] = {}  # partition -> next offset to deliver
    last_seq: dict[str, int] = {}
    ready = False
    delay = 0.1
    waited = False
    while True:
        consumer = kafka_consumer(s, enable_auto_commit=False, auto_offset_reset="earliest",
                                  fetch_max_wait_ms=min(poll_timeout_ms, 500))  # fmt: skip
        try:
            await consumer.start()  # a fresh client learns every topic's metadata
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                if not waited:
                    log.info("topic %s does not exist yet; waiting for the worker to create it", topic)
                    waited = True
                await asyncio.sleep(delay)
                delay = min(_MAX_BACKOFF_S, delay * 2)
                continue
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            fresh = [tp for tp in tps if tp.partition not in positions]
            for tp in tps:
                if tp.partition in positions:
                    consumer.seek(tp, positions[tp.partition])
            if fresh:
                for tp, offset in (await _start_offsets(consumer, fresh, start, start_ms)).items():
                    consumer.seek(tp, offset)
                    positions[tp.partition] = offset
            if not ready:
                ready = True
                yield _READY
            delay = 0.1
            while True:
                batches = await consumer.getmany(timeout_ms=poll_timeout_ms)
                for tp, records in sorted(batches.items()):
                    for r in records:
                        positions[tp.partition] = r.offset + 1
                        try:
                            u = TickerScore.from_json(r.value or b"")
                        except ValueError as exc:
                            log.warning("skipping an unreadable record at %s:%d:%d: %s", tp.topic, tp.partition,
                                        r.offset, exc)  # fmt: skip
                            continue
                        if wanted is not None and u.symbol not in wanted:
                            continue
                        if drop_stale:
                            if u.seq <= last_seq.get(u.symbol, 0):
                                continue
                            last_seq[u.symbol] = u.seq
                        yield u
        except KafkaError as exc:
            log.warning("subscription to %s failed (%r); reconnecting in %.1fs", topic, exc, delay)
            await asyncio.sleep(delay)
            delay = min(_MAX_BACKOFF_S, delay * 2)
        finally:
            await consumer.stop()


async def _start_offsets(
    consumer: Any, tps: list[TopicPartition], start: Start, start_ms: int | None
) -> dict[TopicPartition, int]:
    if start == "earliest":
        return await consumer.beginning_offsets(tps)
    ends = await high_watermarks(consumer, tps)
    if start_ms is None:  # latest
        return ends
    found = await consumer.offsets_for_times(dict.fromkeys(tps, start_ms))
    # None, or (Tansu) a timestamp of -1: no record at or after start_ms -> start at the end
    return {tp: o.offset if o is not None and o.timestamp >= 0 else ends[tp] for tp, o in found.items()}


async def high_watermarks(consumer: Any, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    """Exact end offsets of ``tps`` from fetch responses, for an assigned consumer (its
    positions are left anywhere; seek afterwards). ListOffsets(latest) is not used: the
    embedded Tansu broker answers it with the start of the last record batch + 1, which is
    short of the end whenever that batch held several records."""
    await consumer.seek_to_beginning(*tps)
    out: dict[TopicPartition, int] = {}
    while len(out) < len(tps):
        await consumer.getmany(*(tp for tp in tps if tp not in out), timeout_ms=100, max_records=1)
        out.update({tp: h for tp in tps if (h := consumer.highwater(tp)) is not None})
    return out


def listen(
    redis_url: str | None = None,
    symbols: Iterable[str] | None = None,
    *,
    namespace: str | None = None,
    settings: Settings | None = None,
    client_name: str = "finsent-listen",
) -> Listener:
    """Typed updates from the Redis pub/sub channel ``finsent:updates``, as an async iterator.

    The lowest-latency path: the worker publishes inside the Redis commit of each document, so
    an update arrives as soon as it is visible to :meth:`SentimentClient.latest`. Pub/sub keeps
    nothing: updates published while this connection is down are never delivered (after a
    reconnect, :meth:`SentimentClient.latest` has caught up; :func:`subscribe` replays them).
    Connection errors reconnect with a capped backoff. ``client_name`` names the connection
    in ``CLIENT LIST``.
    """
    s = _settings(settings, redis_url=redis_url, namespace=namespace)
    return Listener(_listen(s, _symbols(symbols), client_name))


def _no_inner_retry() -> AsyncRetry:
    """An asyncio retry policy that catches nothing. redis-py >= 6 runs a pub/sub connection's
    failure handler (which reconnects and resubscribes) even with zero retries, before it raises:
    a listener would then hold a second, hidden subscription while its own loop backs off. With no
    supported errors nothing is caught, so the error reaches the listener's loop at once."""
    return AsyncRetry(NoBackoff(), 0, supported_errors=())


async def _listen(s: Settings, wanted: frozenset[str] | None, client_name: str) -> AsyncIterator[Any]:
    channel = Keys(s.namespace).updates
    ready = False
    delay = 0.1
    while True:
        # this loop alone reconnects, resubscribes and logs it, with a capped backoff
        redis = redis_client(s, client_name=client_name, retry=_no_inner_retry())
        pubsub = redis.pubsub()
        failure: BaseException | None = None
        try:
            await pubsub.subscribe(channel)
            # the server's confirmation: from here on every PUBLISH reaches us
            while (msg := await pubsub.get_message(timeout=1.0)) is None or msg["type"] != "subscribe":
                pass
            if not ready:
                ready = True
                yield _READY
            delay = 0.1
            while True:
                msg = await pubsub.get_message(timeout=1.0)
                if msg is None or msg.get("type") != "message":
                    continue
                try:
                    u = TickerScore.from_json(msg["data"])
                except ValueError as exc:
                    log.warning("skipping an unreadable message on %s: %s", channel, exc)
                    continue
                if wanted is None or u.symbol in wanted:
                    yield u
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            failure = exc
        finally:
            # closed before the backoff, so nothing stays connected while we wait
            await pubsub.aclose()
            await redis.aclose()
        log.warning("listening on %s failed (%r); reconnecting in %.1fs", channel, failure, delay)
        await asyncio.sleep(delay)
        delay = min(_MAX_BACKOFF_S, delay * 2)
