"""The commit point: one Redis Lua script applies scored documents and dead letters atomically.

Kafka without transactions or idempotent producers (Tansu) cannot make "update the state, write
the outputs, commit the input offset" atomic. So the one atomic step is a Redis Lua script
(``pipeline/commit.lua``, EVALSHA), and everything else is made idempotent around it.

For a round of work items :class:`Applier` runs the script once. Per scored document, atomically:

1. ``{ns}finsent:doc:{id}`` exists? -> ``dup`` (same text hash: a re-delivery, nothing changes)
   or ``dupid`` (another text under the same id: it is dead-lettered, ``duplicate_id``).
2. Every ticker's stored ``seq`` equals the seq the applier computed from (optimistic
   concurrency: several workers share tickers) and no earlier item of this call failed on that
   ticker -> otherwise ``conflict``: the applier reloads those tickers from Redis, recomputes,
   retries.
3. Write, per ticker: the state (hash ``finsent:state:{SYM}`` with ``seq``, events in the sorted
   set ``finsent:state:{SYM}:events`` -- an event is added and old ones pruned, so a write costs
   O(log n) instead of re-writing the 24 h window), the latest aggregate (hash
   ``finsent:ticker:{SYM}``), its history (``finsent:ticker:{SYM}:history``, score = as_of,
   capped at ``history_len``), ``SADD finsent:tickers``, ``PUBLISH finsent:updates``; then the
   doc key (value = text hash, long TTL), ``INCR finsent:applied``, and ``XADD`` of the item's
   Kafka records to its outbox stream (:mod:`pipeline.outbox`).

A dead letter is an item of the same script, guarded by ``finsent:dlq:{topic}:{partition}:{offset}``
(holding the message's fingerprint) so a re-delivered bad message is dead-lettered once, while
another message at the same coordinates -- the topic was recreated -- gets its own.

The doc keys remember ids for ``doc_ttl_s``. The script touches keys of many tickers, so it
needs a standalone (or Sentinel) Redis, not Redis Cluster. The ordering around the script (what
is produced and committed when) is :class:`pipeline.checkpoint.Checkpoint`'s.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from operator import attrgetter
from typing import Any, Literal

import msgpack
import numpy as np
import redis.asyncio as aioredis

from pipeline import metrics
from pipeline.aggregate import Aggregator, TickerState
from pipeline.keys import DEFAULT_DOC_TTL_S, Keys, text_hash
from pipeline.novelty import SIGNATURE_VERSION, StoryIndex, pack_keys
from pipeline.outbox import OutboxEntry, OutboxPublisher
from pipeline.process import (
    DUPLICATE_ID,
    duplicate_id_detail,
    fold,
    story,
    story_index,
    story_signs,
)
from pipeline.retry import TRANSIENT_ERRORS, retry
from pipeline.schemas import DeadLetter, ScoredDocument, TickerScore

__all__ = ["DEFAULT_DOC_TTL_S", "Applier", "Outcome", "Rejected", "Scored", "Work", "commit_script"]

log = logging.getLogger(__name__)

# Conflicts come from other workers writing the same tickers; each retry reloads and makes
# progress, so hitting this bound means a bug, not contention.
_MAX_CONFLICT_ROUNDS = 100
_TICKER_FIELDS: tuple[str, ...] = TickerScore.__slots__  # type: ignore[attr-defined]
_ticker_values = attrgetter(*_TICKER_FIELDS)
_STORY_SEP = "\x1f"  # between doc id and story id in an event member (the ASCII unit separator)
_NO_STORY: list[Any] = ["", 0, 0, b"", 0, 1, ""]  # story detection off: the script skips the story
# Bounds of the applier's own story index (about 2 KB a story) and of the band keys it knows it
# must read (about 150 bytes each): past them the oldest go, and a document that needed them is
# refused by the commit script once and then decided on a read.
_MAX_OWN_STORIES = 50_000
_MAX_READ_KEYS = 500_000


def commit_script() -> str:
    """The source of the commit script (``pipeline/commit.lua``, shipped as package data)."""
    return files("pipeline").joinpath("commit.lua").read_text(encoding="utf-8")


def _story_lookup_script() -> str:
    return files("pipeline").joinpath("stories.lua").read_text(encoding="utf-8")


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


@dataclass(slots=True)
class _Decided:
    """A document's story as :meth:`Applier._stories` decided it: the document with its story,
    the commit script's story arguments, its band keys, and whether the applier's own index
    decided it (else a read of Redis)."""

    doc: ScoredDocument
    block: list[Any]
    keys: list[int]
    own: bool


class Applier:
    """Applies work items to Redis through the commit script and hands their records to Kafka.

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
        novelty_window_s: story detection's window (``FINSENT_NOVELTY_WINDOW_S``); None: off
            (every document its own story, novelty 1).
        lateness_s: how late a document may be (how long a story's documents are kept past
            the window).
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
        novelty_window_s: int | None = None,
        lateness_s: float = 3600.0,
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
        self.script = redis.register_script(commit_script())
        self.lookup = redis.register_script(_story_lookup_script())
        self.novelty_window_s = novelty_window_s
        self.lateness_s = lateness_s
        self.story_prefix = keys.stories(SIGNATURE_VERSION)
        self._story_window_ms = (novelty_window_s or 0) * 1000
        keep_ms = self._story_window_ms + round(lateness_s * 1000)
        # band keys are kept per period of this many seconds, for one to two periods (commit.lua)
        self._story_period_s = keep_ms // 1000 + 3600
        self._story_header = [self.story_prefix, self._story_window_ms, keep_ms, self._story_period_s]
        self._keep_ms = keep_ms
        # Stories this applier started and wrote alone, as far as it knows: decided here with no
        # read, and the commit script refuses any decision that Redis contradicts (see _stories).
        self._own = story_index(novelty_window_s or 0, lateness_s)
        # Band keys that point to stories in Redis this applier does not hold (started by another
        # worker or before a restart, or demoted): documents with one of them are decided on a
        # read. Key -> newest publication time (ms) of a document that had it.
        self._read_keys: dict[int, int] = {}

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
        """Publish what is pending in ``streams`` (see :meth:`OutboxPublisher.recover`)."""
        return await self.publisher.recover(streams)

    async def apply(self, works: Sequence[Work]) -> list[Outcome]:
        """Apply ``works`` (in order) exactly once; one outcome per item, same order.

        Entries of the outcomes are written and claimed; the caller produces them
        (``publisher.produce``), then commits, then ``publisher.delete``s them. Calls of
        :meth:`apply` and :meth:`recover` must not overlap (:class:`pipeline.checkpoint.Checkpoint`
        serializes them): a recovery must never see entries a running script wrote but nobody
        claimed yet.
        """
        results: list[Outcome | None] = [None] * len(works)
        todo: list[tuple[int, Work]] = list(enumerate(works))
        rounds = 0
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
        decided_at: dict[int, _Decided] = {}
        if self.novelty_window_s is not None:
            scored = [k for k, (_, w) in enumerate(items) if isinstance(w, Scored)]
            if scored:
                decided = await self._stories([items[k][1].doc for k in scored])  # type: ignore[union-attr]
                for k, dec in zip(scored, decided, strict=True):
                    i, w = items[k]
                    items[k] = (i, Scored(dec.doc, w.text_hash, w.raw, w.topic, w.partition, w.offset))  # type: ignore[union-attr]
                    decided_at[k] = dec
        # the round's band keys, which the script reads in one go before it checks any document
        round_keys = b"".join(dec.block[3] for dec in decided_at.values())
        args: list[Any] = [self.keys.prefix, self.history_len, self.doc_ttl_s, *self._story_header,
                           len(_TICKER_FIELDS), *_TICKER_FIELDS, round_keys, len(items)]  # fmt: skip
        prepared: list[Outcome] = []
        touched: set[str] = set()
        for k, (_, w) in enumerate(items):
            if isinstance(w, Scored):
                dec = decided_at.get(k)
                outcome, item_args = self._prepare_doc(w, now, _NO_STORY if dec is None else dec.block)
                touched.update(u.symbol for u in outcome.updates)
            else:
                outcome, item_args = self._prepare_dead_letter(w.dead_letter)
            prepared.append(outcome)
            args.extend(item_args)
        try:
            # one packed argument: redis-py encodes each argument in Python, dozens per document
            replies = await self.script(keys=[], args=[msgpack.packb(args, use_bin_type=False)])
        except TRANSIENT_ERRORS as exc:
            # Unknown whether the script ran. Forget the states it may have changed, publish
            # whatever it may have written (recovery checks Kafka first), then run it again:
            # whatever did apply comes back "dup".
            log.warning("Redis apply failed (%r): recovering the outbox and retrying", exc)
            metrics.RETRIES.labels("redis apply").inc()
            for s in touched:
                self.agg.tickers.pop(s, None)
            for dec in decided_at.values():
                self._settle(dec, None)
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
                    w.raw, DUPLICATE_ID, duplicate_id_detail(w.doc.id), w.topic, w.partition, w.offset,
                    failed_at=now, doc_id=w.doc.id,
                )  # fmt: skip
                again.append((i, Rejected(dl)))
            else:
                raise RuntimeError(f"apply script returned {status!r} for {w!r}")
        for k, dec in decided_at.items():
            self._settle(dec, statuses[k])
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
        partition, scan_from = self.publisher.route(topic, kb, repeats=topic == self.scores_topic)
        return OutboxEntry(stream, effect_id, topic, partition, kb, value, scan_from)

    def _dead_letter_entry(self, stream: str, dl: DeadLetter) -> OutboxEntry:
        where = f"{dl.topic}:{dl.partition}:{dl.offset}"
        return self._entry(stream, f"dlq:{where}", self.dlq_topic, dl.doc_id or where, dl.to_json())

    async def _stories(self, docs: Sequence[ScoredDocument]) -> list[_Decided]:
        """Each document with its story and novelty, decided in order, and the commit script's
        story arguments, with which it checks that what the decision rested on still holds in
        Redis when it commits (the owners of the document's band keys, its story's documents
        before it).

        A document whose band keys lead only to stories this applier started and wrote alone
        (or nowhere) is decided on its own index, with no read: the common case, a story seen
        for the first time. The others, whose keys lead to stories that another worker (or this
        one before a restart) wrote, or to stories no longer live here, are decided on what one
        read of Redis returns for them. If the script refuses an own decision (another worker
        wrote that story or those keys meanwhile), the story leaves the own index and its keys
        are read from then on."""
        signs = story_signs(docs)
        own = self._own
        own_rows = [not self._needs_read(ks, d.published_at) for d, ks in zip(docs, signs.keys, strict=True)]
        read_index = own  # unused unless some document needs a read
        if not all(own_rows):
            read_index = await self._read_stories([d for d, o in zip(docs, own_rows, strict=True) if not o], [
                ks for ks, o in zip(signs.keys, own_rows, strict=True) if not o
            ])  # fmt: skip
        reps = signs.sigs.astype("<u4")
        out = []
        for d, sig, rep, ks, is_own in zip(docs, signs.sigs, reps, signs.keys, own_rows, strict=True):
            decided = story(own if is_own else read_index, d, sig, ks)
            sid = decided.doc.story
            before = decided.owners_before
            claimed: Any = 1
            if len(decided.claimed) != len(ks):
                mine = set(decided.claimed)
                claimed = [b for b, k in enumerate(ks, 1) if k in mine]  # 1-based band numbers
            block = [sid, decided.repeats_before, d.published_at, pack_keys(ks), before if any(before) else 0,
                     claimed, rep.tobytes() if sid == d.id else ""]  # fmt: skip
            out.append(_Decided(decided.doc, block, ks, is_own))
        self._bound_story_memory()
        return out

    def _needs_read(self, keys: list[int], t: int) -> bool:
        """Whether a document's story must be decided on a read of Redis."""
        if self._read_keys and not self._read_keys.keys().isdisjoint(keys):
            return True
        own = self._own
        owners = set(map(own.band_to_story.get, keys))
        owners.discard(None)
        # a story no longer live here may have been kept alive by another worker
        return not all(own.live(sid, t) for sid in owners)

    async def _read_stories(self, docs: list[ScoredDocument], keys_of: list[list[int]]) -> StoryIndex:
        """A story index for deciding ``docs``: the stories their band keys lead to in Redis, as
        far as the documents' windows reach (one script call)."""
        index = story_index(self.novelty_window_s or 0, self.lateness_s)
        keys = sorted({k for ks in keys_of for k in ks})
        if not keys:
            return index
        times = [d.published_at for d in docs]
        packed = msgpack.packb(
            [self.story_prefix, min(times), max(times), self._story_window_ms, self._story_period_s, pack_keys(keys)],
            use_bin_type=False,
        )
        raw = await retry(lambda: self.lookup(keys=[], args=[packed]), "Redis story lookup")
        owners, found = msgpack.unpackb(raw, raw=True)
        index.load(
            {k: o.decode() for k, o in zip(keys, owners, strict=True) if o},
            {
                sid.decode(): (
                    np.frombuffer(rep, dtype="<u4").copy(),
                    [(int(score), member.decode()) for member, score in zip(flat[::2], flat[1::2], strict=True)],
                    count,
                )
                for sid, rep, flat, count in found
            },
        )
        return index

    def _settle(self, decided: _Decided, status: str | None) -> None:
        """Keep the own index true to Redis once the script answered for ``decided`` (``None``:
        unknown whether it committed)."""
        t = decided.doc.published_at
        if not decided.own:  # its keys lead to stories written elsewhere: read them next time too
            self._mark_read(decided.keys, t)
        elif status != "ok":  # not written as decided here: Redis knows better from now on
            self._mark_read([*decided.keys, *self._own.forget(decided.doc.story)], t)

    def _mark_read(self, keys: Iterable[int], t: int) -> None:
        read = self._read_keys
        for k in keys:
            if read.get(k, t) <= t:
                read[k] = t

    def _bound_story_memory(self) -> None:
        own = self._own
        while len(own) > _MAX_OWN_STORIES:
            own.forget(next(iter(own.stories)))  # the oldest story
        if len(self._read_keys) > _MAX_READ_KEYS:
            horizon = max(self._read_keys.values()) - self._keep_ms
            self._read_keys = {k: t for k, t in self._read_keys.items() if t >= horizon}
            for k in list(itertools.islice(self._read_keys, max(0, len(self._read_keys) - _MAX_READ_KEYS // 2))):
                del self._read_keys[k]

    def _prepare_doc(self, w: Scored, now: int, story: list[Any]) -> tuple[Outcome, list[Any]]:
        """Fold the document into the cached states; the script arguments that commit it
        (``story``: its story arguments, see commit.lua)."""
        stream = self._stream(w)
        # finsent.documents carries exactly what the aggregates consumed (folded.doc), so they can
        # always be recomputed from it; the dead letter names the tickers it was late for.
        folded = fold(self.agg, w.doc, now)
        doc, updates, late = folded.doc, folded.updates, folded.late
        entries = [self._entry(stream, f"doc:{doc.id}", self.documents_topic, doc.id, doc.to_json())]
        ticks: list[Any] = []
        for u in updates:
            st = self.agg.tickers[u.symbol]
            cls = st.events[bisect_left(st.events, (doc.published_at, doc.id))][2]
            # the member: "class|doc id", then "\x1fstory id" for a repeat (ids may hold "|")
            member = f"{cls}|{doc.id}" if doc.story == doc.id else f"{cls}|{doc.id}{_STORY_SEP}{doc.story}"
            ts_json = u.to_json()
            ticks += [
                u.symbol, u.seq - 1, st.as_of, repr(st.num), repr(st.den), st.seq, st.last_doc_id,
                st.model_version, doc.published_at, member, str(st.as_of - self.agg.retention_ms),
                u.as_of, ts_json, *_redis_values(u),
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
        args.extend(story)
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
    cls, _, rest = member.decode().partition("|")
    doc_id, _, story = rest.partition(_STORY_SEP)
    return [int(score), doc_id, int(cls), story or doc_id]


def _redis_values(u: TickerScore) -> list[str | int]:
    """The ticker hash's values in ``_TICKER_FIELDS`` order. Floats go as ``repr`` (an exact round
    trip; a Lua number would be written with 17 digits); integers as integers, which Redis writes
    exactly."""
    return [repr(v) if v.__class__ is float else v for v in _ticker_values(u)]
