"""Exactly-once application of scored documents: Redis is the commit point, Kafka gets an outbox.

Tansu (and any Kafka without transactions/idempotent producers) cannot make "update the state,
write the outputs, commit the input offset" atomic. So the one atomic step is a Redis Lua script,
and everything else is made idempotent around it.

The commit point
----------------
For a batch of work items the worker runs ONE script (:data:`APPLY_LUA`, EVALSHA). Per scored
document, atomically:

1. ``{ns}finsent:doc:{id}`` exists? -> ``dup`` (same text hash: a re-delivery, nothing changes)
   or ``dupid`` (another text under the same id: the worker dead-letters it, ``duplicate_id``).
2. Every ticker's stored ``seq`` equals the seq the worker computed from (optimistic concurrency:
   several workers share tickers) and no earlier item of this call failed on that ticker ->
   otherwise ``conflict``: the worker reloads those tickers from Redis, recomputes, retries.
3. Write, per ticker: the state (hash ``finsent:state:{SYM}`` with ``seq``, events in the sorted
   set ``finsent:state:{SYM}:events`` -- an event is added and old ones pruned, so a write costs
   O(log n) instead of re-writing the 24 h window), the latest aggregate (hash
   ``finsent:ticker:{SYM}``), its history (``finsent:ticker:{SYM}:history``, score = as_of,
   capped at ``history_len``), ``SADD finsent:tickers``, ``PUBLISH finsent:updates``; then the
   doc key (value = text hash, long TTL), ``INCR finsent:applied``, and ``XADD`` of the item's
   Kafka records to its **outbox** stream.

A dead letter is an item of the same script, guarded by ``finsent:dlq:{topic}:{partition}:{offset}``
(holding the message's fingerprint) so a re-delivered bad message is dead-lettered once, while
another message at the same coordinates -- the topic was recreated -- gets its own.

The outbox
----------
There is one outbox stream per *input* partition, ``finsent:outbox:{topic}:{partition}``: the
consumer that owns the input partition owns its outbox, so ownership of pending outputs moves
with Kafka's partition assignment and no two workers ever publish the same stream. Each entry
holds the record (topic, partition, key, value), an **effect id** (``doc:{id}``,
``score:{SYM}:{seq}``, ``dlq:{topic}:{partition}:{offset}``), and ``scan_from``: an end offset of
the target partition known before the entry was written, so the record, if ever produced, lies
at or after it.

:class:`OutboxPublisher` produces entries (the effect id goes into the ``finsent-effect-id``
header), awaits the acks, and XDELs them. The worker commits an input offset only after its
message's script succeeded AND its records were acknowledged.

Crash points (SIGKILL anywhere)
-------------------------------
* before the script: nothing happened; the message is re-delivered and applied.
* after the script, before/while producing: the entries are in the outbox. On (re)assignment,
  before consuming, :meth:`OutboxPublisher.recover` reads every entry of the partition's outbox,
  scans each target partition from the smallest ``scan_from`` to its end collecting effect-id
  headers, produces only the entries not found, and XDELs all of them. The re-delivered message
  is ``dup`` in the script: applied once.
* after the acks, before XDEL: recovery finds every record in Kafka and only deletes entries.
* after XDEL, before the offset commit: re-delivery -> ``dup``; nothing is written twice.
* a Redis call whose outcome is unknown (connection lost mid-script): the worker invalidates its
  cached states, recovers the affected outboxes (as above) and retries; already-applied documents
  come back ``dup`` with their records already published.
* a produce whose outcome is unknown (timeout): before retrying, the publisher scans for the
  effect ids, as in recovery, and re-produces only what is missing.

Limits: the doc keys remember ids for ``doc_ttl_s`` (30 days by default); a worker stalled past
the session timeout while the group moved its partition on (a "zombie") can race the new owner
on the entries it already held -- Kafka fences zombies with producer epochs, which Tansu lacks;
consumers can drop repeats by the effect-id header. The script touches keys of many tickers, so
it needs a standalone (or Sentinel) Redis, not Redis Cluster.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2
from redis.exceptions import AuthenticationError as RedisAuthenticationError
from redis.exceptions import AuthorizationError as RedisAuthorizationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pipeline import metrics
from pipeline.aggregate import Aggregator, Late, TickerState
from pipeline.connections import kafka_consumer
from pipeline.schemas import DeadLetter, ScoredDocument, TickerScore
from pipeline.settings import Settings

__all__ = [
    "APPLY_LUA",
    "CREDENTIAL_ERRORS",
    "EFFECT_HEADER",
    "TRANSIENT_ERRORS",
    "Applier",
    "Keys",
    "OutboxEntry",
    "OutboxPublisher",
    "Outcome",
    "Rejected",
    "Scored",
    "retry",
    "text_hash",
]

log = logging.getLogger(__name__)

#: Kafka header carrying an output record's effect id.
EFFECT_HEADER = "finsent-effect-id"
#: How long a document id (and a dead-letter guard) is remembered for de-duplication.
DEFAULT_DOC_TTL_S = 30 * 86_400
#: Errors worth retrying: the server is unreachable or slow, not wrong.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, KafkaError, OSError, asyncio.TimeoutError,
)  # fmt: skip
#: Subclasses of those that no retry can fix: wrong credentials or missing ACLs. They stop the
#: process at once, so a misconfigured deployment crash-loops visibly instead of retrying forever.
CREDENTIAL_ERRORS: tuple[type[BaseException], ...] = (
    RedisAuthenticationError, RedisAuthorizationError, kafka_errors.AuthenticationFailedError,
    kafka_errors.AuthenticationMethodNotSupported, kafka_errors.SaslAuthenticationFailed,
    kafka_errors.UnsupportedSaslMechanismError, kafka_errors.IllegalSaslStateError,
    kafka_errors.TopicAuthorizationFailedError, kafka_errors.GroupAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
)  # fmt: skip
# Conflicts come from other workers writing the same tickers; each retry reloads and makes
# progress, so hitting this bound means a bug, not contention.
_MAX_CONFLICT_ROUNDS = 100
_TICKER_FIELDS: tuple[str, ...] = TickerScore.__slots__  # type: ignore[attr-defined]
# The scanner stops at the high watermark of a fetch response; for a partition with nothing new
# that answer comes only when the broker's long poll ends, so keep both waits short.
_SCAN_POLL_MS = 50

_T = TypeVar("_T")


def text_hash(text: str) -> str:
    """Fingerprint of a document's text, stored under its doc key to tell re-sends apart."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


async def retry(
    op: Callable[[], Awaitable[_T]],
    what: str,
    *,
    first_delay: float = 0.1,
    max_delay: float = 5.0,
    max_attempts: int | None = None,
) -> _T:
    """Run ``op`` until it succeeds, sleeping with capped exponential backoff (and jitter)
    after each transient error (:data:`TRANSIENT_ERRORS`); other errors, and
    :data:`CREDENTIAL_ERRORS`, propagate at once. Logs the first failure and every tenth; logs
    the recovery."""
    delay = first_delay
    attempt = 0
    while True:
        try:
            result = await op()
        except CREDENTIAL_ERRORS:
            raise
        except TRANSIENT_ERRORS as exc:
            attempt += 1
            metrics.RETRIES.labels(what).inc()
            if max_attempts is not None and attempt >= max_attempts:
                raise
            if attempt == 1 or attempt % 10 == 0:
                log.warning("%s failed (%r); retrying in %.1fs (attempt %d)", what, exc, delay, attempt)
            await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
            delay = min(max_delay, delay * 2)
            continue
        if attempt:
            log.info("%s succeeded after %d retries", what, attempt)
        return result


# ------------------------------------------------------------------------------ keys and records


class Keys:
    """Redis key names under a namespace (``settings.key``-style prefix)."""

    def __init__(self, namespace: str = "") -> None:
        self.prefix = f"{namespace}finsent:"
        self.applied = self.prefix + "applied"
        self.tickers = self.prefix + "tickers"
        self.updates = self.prefix + "updates"

    def doc(self, doc_id: str) -> str:
        return f"{self.prefix}doc:{doc_id}"

    def state(self, symbol: str) -> str:
        return f"{self.prefix}state:{symbol}"

    def events(self, symbol: str) -> str:
        return f"{self.prefix}state:{symbol}:events"

    def ticker(self, symbol: str) -> str:
        return f"{self.prefix}ticker:{symbol}"

    def history(self, symbol: str) -> str:
        return f"{self.prefix}ticker:{symbol}:history"

    def outbox(self, topic: str, partition: int) -> str:
        return f"{self.prefix}outbox:{topic}:{partition}"

    def dlq_guard_suffix(self, topic: str, partition: int, offset: int) -> str:
        """Guard key without the prefix (the script adds it)."""
        return f"dlq:{topic}:{partition}:{offset}"


@dataclass(slots=True)
class OutboxEntry:
    """One Kafka record waiting in (or written to) an outbox stream."""

    stream: str
    effect_id: str
    topic: str
    partition: int
    key: bytes
    value: bytes
    scan_from: int
    entry_id: str | None = None  # the stream entry id, once written

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    def fields(self) -> list[bytes | str | int]:
        """The six script arguments of an entry, in :data:`APPLY_LUA`'s order."""
        return [self.effect_id, self.topic, self.partition, self.key, self.value, self.scan_from]

    @classmethod
    def from_stream(cls, stream: str, entry_id: bytes | str, f: dict[bytes, bytes]) -> OutboxEntry:
        return cls(
            stream=stream,
            effect_id=f[b"e"].decode(),
            topic=f[b"t"].decode(),
            partition=int(f[b"p"]),
            key=f[b"k"],
            value=f[b"v"],
            scan_from=int(f[b"o"]),
            entry_id=entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
        )


@dataclass(slots=True)
class Scored:
    """A scored document to apply, with where it came from (for dead letters and its outbox)."""

    doc: ScoredDocument  # with every link the linker found
    text_hash: str
    raw: bytes
    topic: str
    partition: int
    offset: int


@dataclass(slots=True)
class Rejected:
    """A dead letter to write (its topic/partition/offset name the input message)."""

    dead_letter: DeadLetter


Work = Scored | Rejected


@dataclass(slots=True)
class Outcome:
    """What applying one work item did.

    status:
        ``applied`` -- the document was committed to Redis (possibly only for some tickers and
        dead-lettered ``late`` for the others: see ``dead_letter``);
        ``duplicate`` -- already applied before (same id and text): nothing changed;
        ``dead_lettered`` -- a dead letter was written (including ``duplicate_id``);
        ``already_dead_lettered`` -- this input message was dead-lettered before.
    """

    status: Literal["applied", "duplicate", "dead_lettered", "already_dead_lettered"]
    entries: list[OutboxEntry] = field(default_factory=list)
    doc: ScoredDocument | None = None
    updates: list[TickerScore] = field(default_factory=list)
    dead_letter: DeadLetter | None = None


# ------------------------------------------------------------------------------ the script

#: The commit point. ARGV layout (all strings):
#:   prefix, history_len, doc_ttl_s, n_fields, field_1..field_n, n_items, items...
#: item "D" (document): doc_id, text_hash, n_ticks, n_late, n_entries, stream,
#:   ticks: symbol, expected_seq, as_of, num, den, seq, last_doc_id, model_version,
#:          event_t, event_member, prune_cutoff, history_score, ticker_score_json, field values...
#:   late symbols (the document was late for them: checked against this call's failures only)
#:   entries: effect_id, topic, partition, key, value, scan_from
#: item "L" (dead letter): guard_suffix, stream, message fingerprint, one entry
#: Returns per item {status, entry ids...}; status: ok | dup | dupid | conflict.
APPLY_LUA = """
local P = ARGV[1]
local hist_len = tonumber(ARGV[2])
local ttl = ARGV[3]
local nf = tonumber(ARGV[4])
local fields = {}
for i = 1, nf do fields[i] = ARGV[4 + i] end
local pos = 5 + nf
local nitems = tonumber(ARGV[pos])
pos = pos + 1
local tick_size = 13 + nf
local tainted = {}
local out = {}

local function xadd(stream, i)
  return redis.call('XADD', stream, '*', 'e', ARGV[i], 't', ARGV[i + 1], 'p', ARGV[i + 2],
                    'k', ARGV[i + 3], 'v', ARGV[i + 4], 'o', ARGV[i + 5])
end

for it = 1, nitems do
  local kind = ARGV[pos]
  if kind == 'D' then
    local doc_key = P .. 'doc:' .. ARGV[pos + 1]
    local hash = ARGV[pos + 2]
    local nt = tonumber(ARGV[pos + 3])
    local nl = tonumber(ARGV[pos + 4])
    local ne = tonumber(ARGV[pos + 5])
    local stream = ARGV[pos + 6]
    local tpos = pos + 7
    local lpos = tpos + nt * tick_size
    local epos = lpos + nl
    local status = 'ok'
    local stored = redis.call('GET', doc_key)
    if stored then
      if stored == hash then status = 'dup' else status = 'dupid' end
    else
      for t = 0, nt - 1 do
        local b = tpos + t * tick_size
        local sym = ARGV[b]
        if tainted[sym] then status = 'conflict' break end
        local cur = tonumber(redis.call('HGET', P .. 'state:' .. sym, 'seq') or '0')
        if cur ~= tonumber(ARGV[b + 1]) then status = 'conflict' break end
      end
      -- "late" was decided on the cached state, which a failed earlier item may have advanced
      for l = 0, nl - 1 do
        if tainted[ARGV[lpos + l]] then status = 'conflict' break end
      end
    end
    if status == 'ok' then
      for t = 0, nt - 1 do
        local b = tpos + t * tick_size
        local sym = ARGV[b]
        local sk = P .. 'state:' .. sym
        redis.call('HSET', sk, 'symbol', sym, 'as_of', ARGV[b + 2], 'num', ARGV[b + 3], 'den', ARGV[b + 4],
                   'seq', ARGV[b + 5], 'last_doc_id', ARGV[b + 6], 'model_version', ARGV[b + 7])
        redis.call('ZADD', sk .. ':events', ARGV[b + 8], ARGV[b + 9])
        redis.call('ZREMRANGEBYSCORE', sk .. ':events', '-inf', '(' .. ARGV[b + 10])
        local hk = P .. 'ticker:' .. sym
        local hv = {}
        for f = 1, nf do
          hv[2 * f - 1] = fields[f]
          hv[2 * f] = ARGV[b + 12 + f]
        end
        redis.call('HSET', hk, unpack(hv))
        redis.call('ZADD', hk .. ':history', ARGV[b + 11], ARGV[b + 12])
        redis.call('ZREMRANGEBYRANK', hk .. ':history', 0, -hist_len - 1)
        redis.call('SADD', P .. 'tickers', sym)
        redis.call('PUBLISH', P .. 'updates', ARGV[b + 12])
      end
      redis.call('SET', doc_key, hash, 'EX', ttl)
      redis.call('INCR', P .. 'applied')
      local res = {'ok'}
      for e = 0, ne - 1 do res[#res + 1] = xadd(stream, epos + 6 * e) end
      out[it] = res
    else
      -- this call's later items must not build on a state this item did not write
      for t = 0, nt - 1 do tainted[ARGV[tpos + t * tick_size]] = true end
      out[it] = {status}
    end
    pos = epos + 6 * ne
  elseif kind == 'L' then
    local stream = ARGV[pos + 2]
    local guard = P .. ARGV[pos + 1]
    local seen = redis.call('GET', guard)
    -- '1': a guard written before guards held the message's fingerprint
    if seen == ARGV[pos + 3] or seen == '1' then
      out[it] = {'dup'}
    else
      redis.call('SET', guard, ARGV[pos + 3], 'EX', ttl)
      out[it] = {'ok', xadd(stream, pos + 4)}
    end
    pos = pos + 10
  else
    return redis.error_reply('finsent apply: unknown item kind ' .. tostring(kind))
  end
end
return out
"""


# ------------------------------------------------------------------------------ publisher


class OutboxPublisher:
    """Moves outbox entries to Kafka exactly once (see the module docstring).

    Entries are *claimed* by this process before it produces them: fresh ones by the applier
    right after its script wrote them (they cannot be in Kafka yet), old ones by :meth:`recover`
    (they may be, so they are checked first). A claimed entry is never picked up twice.

    Args:
        producer: a started producer (``enable_idempotence=False`` on Tansu).
        redis: asyncio Redis client.
        kafka: the settings (connection and security) of the scanning consumer, or a bare
            bootstrap string for an unsecured broker.
        output_topics: every topic entries may target (partition counts are read at start).
    """

    def __init__(
        self,
        producer: AIOKafkaProducer,
        redis: aioredis.Redis,
        kafka: Settings | str,
        output_topics: Iterable[str],
    ) -> None:
        self.producer = producer
        self.redis = redis
        self.kafka = kafka
        self.output_topics = list(dict.fromkeys(output_topics))
        self.partitions: dict[str, int] = {}
        #: per output partition, an offset <= its current end (refreshed from acks)
        self.ends: dict[TopicPartition, int] = {}
        self._claimed: set[str] = set()
        self._scanner: AIOKafkaConsumer | None = None
        self._scanner_lock = asyncio.Lock()  # one assignment of the scanner at a time

    async def start(self) -> None:
        """Learn partition counts and end offsets of the output topics."""
        self._scanner = kafka_consumer(
            self.kafka,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=_SCAN_POLL_MS,
        )
        await retry(self._scanner.start, "Kafka scanner start")
        for topic in self.output_topics:
            parts = await retry(lambda t=topic: self.producer.partitions_for(t), f"metadata of {topic}")
            if not parts:
                raise RuntimeError(f"output topic {topic!r} does not exist (create it first)")
            self.partitions[topic] = len(parts)
        tps = [TopicPartition(t, p) for t, n in self.partitions.items() for p in range(n)]
        self.ends.update(await self.end_offsets(tps))

    async def stop(self) -> None:
        if self._scanner is not None:
            await self._scanner.stop()
            self._scanner = None

    def route(self, topic: str, key: bytes) -> tuple[int, int]:
        """``(partition, scan_from)`` for a record: the default Kafka partitioner (murmur2 of
        the key, as the Java client and aiokafka do), and that partition's known end offset."""
        partition = (murmur2(key) & 0x7FFFFFFF) % self.partitions[topic]
        return partition, self.ends[TopicPartition(topic, partition)]

    def claim(self, entries: Iterable[OutboxEntry]) -> None:
        for e in entries:
            assert e.entry_id is not None
            self._claimed.add(e.entry_id)

    def release(self, entries: Iterable[OutboxEntry]) -> None:
        """Give up claims without deleting (the entries stay for whoever recovers the stream)."""
        for e in entries:
            self._claimed.discard(e.entry_id or "")

    async def produce(self, entries: Sequence[OutboxEntry], *, check_first: bool = False) -> int:
        """Produce ``entries`` and wait until Kafka acknowledged every one.

        Retries forever with backoff; after any failure whose outcome is unknown (or when
        ``check_first``), entries already in Kafka are found by their effect ids and skipped.
        Returns how many were skipped that way.
        """
        pending = list(entries)
        skipped = 0
        delay = 0.1
        attempt = 0
        while pending:
            if check_first:
                found = await self.find_published(pending)
                if found:
                    metrics.OUTBOX_RECOVERED.labels("skipped").inc(len(found))
                    log.info("%d outbox records were already in Kafka; not producing them again", len(found))
                    skipped += len(found)
                pending = [e for e in pending if e.effect_id not in found]
                if not pending:
                    return skipped
            futures: list[asyncio.Future[Any] | BaseException] = []
            for e in pending:
                try:
                    headers = [(EFFECT_HEADER, e.effect_id.encode())]
                    futures.append(
                        await self.producer.send(e.topic, e.value, key=e.key, partition=e.partition, headers=headers)
                    )
                except TRANSIENT_ERRORS as exc:
                    futures.append(exc)
            results = await asyncio.gather(
                *(f for f in futures if not isinstance(f, BaseException)), return_exceptions=True
            )
            it = iter(results)
            failed: list[OutboxEntry] = []
            error: BaseException | None = None
            for e, f in zip(pending, futures, strict=True):
                r = f if isinstance(f, BaseException) else next(it)
                if isinstance(r, BaseException):
                    if not isinstance(r, TRANSIENT_ERRORS):
                        raise r
                    failed.append(e)
                    error = r
                else:
                    tp = TopicPartition(e.topic, e.partition)
                    self.ends[tp] = max(self.ends.get(tp, 0), r.offset + 1)
                    metrics.MESSAGES_OUT.labels(e.topic).inc()
            pending = failed
            if pending:
                # Some sends may have reached the broker without an ack: check before resending.
                check_first = True
                attempt += 1
                metrics.RETRIES.labels("kafka produce").inc()
                if attempt == 1 or attempt % 10 == 0:
                    log.warning("producing %d records failed (%r); retrying in %.1fs", len(pending), error, delay)
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)
        return skipped

    async def delete(self, entries: Sequence[OutboxEntry]) -> None:
        """XDEL acknowledged entries and release their claims (retries on Redis errors)."""
        by_stream: dict[str, list[str]] = {}
        for e in entries:
            assert e.entry_id is not None
            by_stream.setdefault(e.stream, []).append(e.entry_id)
        if not by_stream:
            return

        async def xdel() -> None:
            async with self.redis.pipeline(transaction=False) as pipe:
                for stream, ids in by_stream.items():
                    pipe.xdel(stream, *ids)
                await pipe.execute()

        await retry(xdel, "outbox XDEL")
        for ids in by_stream.values():
            self._claimed.difference_update(ids)

    async def pending(self, stream: str) -> list[OutboxEntry]:
        """Every entry of ``stream`` not claimed by this process, oldest first."""
        out: list[OutboxEntry] = []
        start = "-"
        while True:
            page = await retry(lambda s=start: self.redis.xrange(stream, s, "+", count=1000), "outbox XRANGE")
            for entry_id, f in page:
                e = OutboxEntry.from_stream(stream, entry_id, f)
                if e.entry_id not in self._claimed:
                    out.append(e)
            if len(page) < 1000:
                return out
            start = "(" + page[-1][0].decode()

    async def recover(self, streams: Iterable[str]) -> int:
        """Publish what earlier runs left in ``streams``: skip records already in Kafka, produce
        the rest, delete all. Returns how many entries were pending. The caller must make sure
        no script is writing to these streams meanwhile (:meth:`Applier.recover` does)."""
        entries: list[OutboxEntry] = []
        for stream in streams:
            entries.extend(await self.pending(stream))
        if not entries:
            return 0
        self.claim(entries)
        log.info("recovering %d pending outbox entries", len(entries))
        skipped = await self.produce(entries, check_first=True)
        metrics.OUTBOX_RECOVERED.labels("produced").inc(len(entries) - skipped)
        await self.delete(entries)
        log.info("outbox recovery: %d already in Kafka, %d produced", skipped, len(entries) - skipped)
        return len(entries)

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Exact end offsets (high watermarks) of ``tps``.

        Read from a fetch response, not from ListOffsets: Tansu 0.6 answers ListOffsets(latest)
        with the base offset of the partition's last record *batch* plus one, which is below the
        end whenever that batch holds more than one record. Its fetch responses carry the true
        high watermark, and ListOffsets is still a lower bound to start fetching from.
        """
        assert self._scanner is not None, "start() first"
        scanner = self._scanner

        async def read() -> dict[TopicPartition, int]:
            async with self._scanner_lock:
                scanner.assign(list(tps))
                for tp, lower in (await scanner.end_offsets(list(tps))).items():
                    scanner.seek(tp, lower)
                out: dict[TopicPartition, int] = {}
                while len(out) < len(tps):
                    await scanner.getmany(*(tp for tp in tps if tp not in out), timeout_ms=_SCAN_POLL_MS)
                    for tp in tps:
                        high = scanner.highwater(tp)
                        if high is not None:
                            out[tp] = high
                return out

        return await retry(read, "Kafka end offsets")

    async def find_published(self, entries: Sequence[OutboxEntry]) -> set[str]:
        """Effect ids of ``entries`` that are already in Kafka.

        Scans each target partition from the smallest ``scan_from`` of its entries to its
        current end, reading the effect-id header of every record.
        """
        assert self._scanner is not None, "start() first"
        scanner = self._scanner
        wanted: dict[TopicPartition, set[str]] = {}
        start: dict[TopicPartition, int] = {}
        for e in entries:
            tp = e.tp
            wanted.setdefault(tp, set()).add(e.effect_id)
            start[tp] = min(start.get(tp, e.scan_from), e.scan_from)

        async def scan() -> set[str]:
            found: set[str] = set()
            tps = list(wanted)
            async with self._scanner_lock:
                scanner.assign(tps)
                begins = await scanner.beginning_offsets(tps)
                for tp in tps:
                    scanner.seek(tp, max(start[tp], begins[tp]))
                todo = set(tps)
                # Until the position reaches the high watermark of a fetch response (see
                # end_offsets for why not ListOffsets). Nothing of ours can be produced
                # meanwhile: the entries are claimed by this process.
                while todo:
                    batches = await scanner.getmany(*todo, timeout_ms=_SCAN_POLL_MS)
                    for tp, records in batches.items():
                        for r in records:
                            for name, value in r.headers or ():
                                if name == EFFECT_HEADER and value.decode() in wanted[tp]:
                                    found.add(value.decode())
                    for tp in list(todo):
                        high = scanner.highwater(tp)
                        if high is None:
                            continue
                        position = await scanner.position(tp)
                        if position > high:
                            # scan_from past the end: the topic was recreated; scan all of it
                            scanner.seek(tp, begins[tp])
                        elif position == high:
                            todo.discard(tp)
            return found

        return await retry(scan, "Kafka scan for published effect ids")


# ------------------------------------------------------------------------------ applier


class Applier:
    """Applies work items to Redis through :data:`APPLY_LUA` and hands their records to Kafka.

    Owns the in-memory cache of ticker states (an :class:`Aggregator` whose tickers are loaded
    from Redis on first use and dropped whenever Redis may know better).

    Args:
        redis: asyncio Redis client.
        keys: key names.
        aggregator: the state cache (``Aggregator(half_life_s, lateness_s)``; starts empty).
        publisher: the started outbox publisher (routes records and claims fresh entries).
        documents_topic, scores_topic, dlq_topic: output topic names.
        history_len: entries kept per ticker history.
        doc_ttl_s: how long doc ids / dead-letter guards are remembered.
        clock: wall clock in epoch ms (injected for tests).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        aggregator: Aggregator,
        publisher: OutboxPublisher,
        *,
        documents_topic: str,
        scores_topic: str,
        dlq_topic: str,
        history_len: int,
        doc_ttl_s: int = DEFAULT_DOC_TTL_S,
        clock: Callable[[], int],
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.agg = aggregator
        self.publisher = publisher
        self.documents_topic = documents_topic
        self.scores_topic = scores_topic
        self.dlq_topic = dlq_topic
        self.history_len = history_len
        self.doc_ttl_s = doc_ttl_s
        self.clock = clock
        self.script = redis.register_script(APPLY_LUA)
        # Held from a script call until its entries are claimed, and by recovery: recovery must
        # never see entries a running script wrote but the publisher has not claimed yet.
        self.lock = asyncio.Lock()

    # ---- reads

    async def seen(self, docs: Sequence[tuple[str, str]]) -> list[str | None]:
        """Pre-inference de-dup: per ``(doc_id, text_hash)``, the stored text hash or None.
        One MGET; the script stays the authority (this only saves model time)."""
        if not docs:
            return []
        keys = [self.keys.doc(doc_id) for doc_id, _ in docs]
        values = await retry(lambda: self.redis.mget(keys), "Redis MGET doc keys")
        return [None if v is None else v.decode() for v in values]

    async def load_states(self, symbols: Iterable[str]) -> dict[str, TickerState]:
        """Read tickers' states from Redis (absent tickers are left out)."""
        symbols = list(dict.fromkeys(symbols))
        if not symbols:
            return {}

        async def read() -> list[Any]:
            async with self.redis.pipeline(transaction=True) as pipe:  # one consistent snapshot
                for s in symbols:
                    pipe.hgetall(self.keys.state(s))
                    pipe.zrange(self.keys.events(s), 0, -1, withscores=True)
                return await pipe.execute()

        raw = await retry(read, "Redis load ticker states")
        out: dict[str, TickerState] = {}
        for i, s in enumerate(symbols):
            h, events = raw[2 * i], raw[2 * i + 1]
            if not h:
                continue
            out[s] = TickerState.from_dict(
                {
                    "symbol": s,
                    "as_of": int(h[b"as_of"]),
                    "num": float(h[b"num"]),
                    "den": float(h[b"den"]),
                    "seq": int(h[b"seq"]),
                    "last_doc_id": h[b"last_doc_id"].decode(),
                    "model_version": h[b"model_version"].decode(),
                    "events": [_parse_event(m, t) for m, t in events],
                }
            )
        return out

    # ---- the commit point

    async def recover(self, streams: Iterable[str]) -> int:
        """Publish what is pending in ``streams`` (on partition assignment)."""
        async with self.lock:
            return await self.publisher.recover(streams)

    async def apply(self, works: Sequence[Work]) -> list[Outcome]:
        """Apply ``works`` (in order) exactly once; one outcome per item, same order.

        Entries of the outcomes are written and claimed; the caller produces them
        (``publisher.produce``), then commits, then ``publisher.delete``s them.
        """
        results: list[Outcome | None] = [None] * len(works)
        todo: list[tuple[int, Work]] = list(enumerate(works))
        rounds = 0
        async with self.lock:
            while todo:
                rounds += 1
                if rounds > _MAX_CONFLICT_ROUNDS:
                    raise RuntimeError(f"ticker state conflicts did not resolve in {_MAX_CONFLICT_ROUNDS} rounds")
                await self._load_missing(w.doc for _, w in todo if isinstance(w, Scored))
                todo = await self._round(todo, results)
        return [r for r in results if r is not None]

    async def _load_missing(self, docs: Iterable[ScoredDocument]) -> None:
        missing = {link.symbol for d in docs for link in d.tickers} - self.agg.tickers.keys()
        self.agg.tickers.update(await self.load_states(missing))

    async def _round(self, todo: list[tuple[int, Work]], results: list[Outcome | None]) -> list[tuple[int, Work]]:
        """One script call over ``todo``; returns the items to try again."""
        now = self.clock()
        # One item per document id per call. A re-sent copy prepared behind its original finds
        # the original's events in the cache and carries no ticker updates; had the original then
        # failed (a conflict), the script would commit the copy with its tickers missing. So a
        # copy waits for its original's outcome.
        items: list[tuple[int, Work]] = []
        copies: list[tuple[int, Scored]] = []
        first_of: dict[str, int] = {}  # doc id -> index of its first item in items
        for i, w in todo:
            if isinstance(w, Scored):
                if w.doc.id in first_of:
                    copies.append((i, w))
                    continue
                first_of[w.doc.id] = len(items)
            items.append((i, w))
        args: list[Any] = [self.keys.prefix, self.history_len, self.doc_ttl_s, len(_TICKER_FIELDS), *_TICKER_FIELDS]
        args.append(len(items))
        prepared: list[Outcome] = []
        touched: set[str] = set()
        for _, w in items:
            if isinstance(w, Scored):
                outcome, item_args = self._prepare_doc(w, now)
                touched.update(u.symbol for u in outcome.updates)
            else:
                outcome, item_args = self._prepare_dead_letter(w.dead_letter)
            prepared.append(outcome)
            args.extend(item_args)
        try:
            replies = await self.script(keys=[], args=args)
        except TRANSIENT_ERRORS as exc:
            # Unknown whether the script ran. Forget the states it may have changed, publish
            # whatever it may have written (recovery checks Kafka first), then run it again:
            # whatever did apply comes back "dup".
            log.warning("Redis apply failed (%r): recovering the outbox and retrying", exc)
            metrics.RETRIES.labels("redis apply").inc()
            for s in touched:
                self.agg.tickers.pop(s, None)
            streams = {self._stream(w) for _, w in items}
            await asyncio.sleep(0.1)
            await retry(lambda: self.publisher.recover(streams), "outbox recovery after a failed apply")
            return todo

        again: list[tuple[int, Work]] = []
        statuses: list[str] = []
        for (i, w), outcome, reply in zip(items, prepared, replies, strict=True):
            status = reply[0].decode()
            statuses.append(status)
            if status == "ok":
                for e, entry_id in zip(outcome.entries, reply[1:], strict=True):
                    e.entry_id = entry_id.decode()
                self.publisher.claim(outcome.entries)
                results[i] = outcome
                continue
            # The script did not write this item: states the cache derived from it are wrong.
            for u in outcome.updates:
                self.agg.tickers.pop(u.symbol, None)
            if status == "conflict":
                metrics.CONFLICTS.inc()
                again.append((i, w))
            elif status == "dup" and isinstance(w, Scored):
                results[i] = Outcome("duplicate", doc=w.doc)
            elif status == "dup":
                results[i] = Outcome("already_dead_lettered", dead_letter=outcome.dead_letter)
            elif status == "dupid" and isinstance(w, Scored):
                dl = DeadLetter.from_error(
                    w.raw, "duplicate_id", f"id {w.doc.id!r} was already applied with a different text",
                    w.topic, w.partition, w.offset, failed_at=now, doc_id=w.doc.id,
                )  # fmt: skip
                again.append((i, Rejected(dl)))
            else:
                raise RuntimeError(f"apply script returned {status!r} for {w!r}")
        for i, w in copies:
            k = first_of[w.doc.id]
            first = items[k][1]
            assert isinstance(first, Scored)
            if statuses[k] in ("ok", "dup") and w.text_hash == first.text_hash:
                results[i] = Outcome("duplicate", doc=w.doc)
            else:  # decided next round, against the stored doc key
                again.append((i, w))
        return sorted(again, key=lambda x: x[0])

    def _stream(self, w: Work) -> str:
        if isinstance(w, Scored):
            return self.keys.outbox(w.topic, w.partition)
        dl = w.dead_letter
        return self.keys.outbox(dl.topic or "", dl.partition or 0)

    def _entry(self, stream: str, effect_id: str, topic: str, key: str, value: bytes) -> OutboxEntry:
        kb = key.encode()
        partition, scan_from = self.publisher.route(topic, kb)
        return OutboxEntry(stream, effect_id, topic, partition, kb, value, scan_from)

    def _dead_letter_entry(self, stream: str, dl: DeadLetter) -> OutboxEntry:
        where = f"{dl.topic}:{dl.partition}:{dl.offset}"
        return self._entry(stream, f"dlq:{where}", self.dlq_topic, dl.doc_id or where, dl.to_json())

    def _prepare_doc(self, w: Scored, now: int) -> tuple[Outcome, list[Any]]:
        """Fold the document into the cached states; the script arguments that commit it."""
        doc = w.doc
        stream = self._stream(w)
        late: Late | None = None
        try:
            updates = self.agg.apply(doc, now)
        except Late as exc:
            late = exc
            updates = exc.updates
            # finsent.documents carries exactly what the aggregates consumed, so they can always
            # be recomputed from it; the dead letter names the tickers it was late for.
            doc = replace(doc, tickers=tuple(t for t in doc.tickers if t.symbol not in exc.symbols))
        entries = [self._entry(stream, f"doc:{doc.id}", self.documents_topic, doc.id, doc.to_json())]
        ticks: list[Any] = []
        for u in updates:
            st = self.agg.tickers[u.symbol]
            cls = st.events[bisect_left(st.events, (doc.published_at, doc.id))][2]
            ts_json = u.to_json()
            ticks += [
                u.symbol, u.seq - 1, st.as_of, repr(st.num), repr(st.den), st.seq, st.last_doc_id,
                st.model_version, doc.published_at, f"{cls}|{doc.id}", st.as_of - self.agg.retention_ms,
                u.as_of, ts_json, *(_redis_value(getattr(u, f)) for f in _TICKER_FIELDS),
            ]  # fmt: skip
            entries.append(self._entry(stream, f"score:{u.symbol}:{u.seq}", self.scores_topic, u.symbol, ts_json))
        dead_letter = None
        if late is not None:
            dead_letter = DeadLetter.from_error(
                w.raw, "late", str(late), w.topic, w.partition, w.offset, failed_at=now, doc_id=doc.id
            )
            entries.append(self._dead_letter_entry(stream, dead_letter))
        late_symbols = late.symbols if late is not None else ()
        args: list[Any] = ["D", doc.id, w.text_hash, len(updates), len(late_symbols), len(entries), stream, *ticks]
        args.extend(late_symbols)
        for e in entries:
            args.extend(e.fields())
        return Outcome("applied", entries=entries, doc=doc, updates=updates, dead_letter=dead_letter), args

    def _prepare_dead_letter(self, dl: DeadLetter) -> tuple[Outcome, list[Any]]:
        stream = self.keys.outbox(dl.topic or "", dl.partition or 0)
        entry = self._dead_letter_entry(stream, dl)
        guard = self.keys.dlq_guard_suffix(dl.topic or "", dl.partition or 0, dl.offset or 0)
        # The guard holds the message's fingerprint: a re-delivery is the same message, while
        # another message at the same coordinates (a recreated topic, a broker that lost its
        # log) still gets its dead letter.
        fingerprint = text_hash(f"{dl.raw_size}:{dl.raw_b64}")
        args = ["L", guard, stream, fingerprint, *entry.fields()]
        return Outcome("dead_lettered", entries=[entry], dead_letter=dl), args


def _parse_event(member: bytes, score: float) -> list[Any]:
    cls, _, doc_id = member.decode().partition("|")
    return [int(score), doc_id, int(cls)]


def _redis_value(v: object) -> str | int | float:
    # floats via repr: exact round trip (redis-py would use repr too; explicit is clearer)
    return repr(v) if isinstance(v, float) else v  # type: ignore[return-value]
