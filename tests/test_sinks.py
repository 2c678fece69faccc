"""pipeline.applier and pipeline.outbox against a real Redis and the embedded broker: the commit point and the outbox.

Covers the crash windows of the exactly-once design directly: re-application (``dup``), a
different text under a known id, stale caches (optimistic concurrency, including a stale seq
that happens to match inside one script call), late documents, and outbox recovery after a
crash between the script and the Kafka acks.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgpack
import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from streaming_helpers import T0, read_topic, scored_doc

from pipeline import metrics
from pipeline.aggregate import Aggregator, recompute_states
from pipeline.applier import Applier, Rejected, Scored
from pipeline.infra import EmbeddedBroker, create_topics
from pipeline.keys import Keys, text_hash
from pipeline.novelty import BANDS, SIGNATURE_VERSION
from pipeline.outbox import OutboxPublisher
from pipeline.schemas import DeadLetter, ScoredDocument, TickerScore

pytestmark = pytest.mark.integration

HOUR = 3_600_000


@dataclass
class Env:
    bootstrap: str
    redis: aioredis.Redis
    keys: Keys
    producer: AIOKafkaProducer
    publisher: OutboxPublisher
    docs: str
    scores: str
    dlq: str
    offset: int = 0

    def applier(self, lateness_s: float = 3600.0, novelty_window_s: int | None = None) -> Applier:
        return Applier(
            self.redis, self.keys, Aggregator(3600.0, lateness_s), self.publisher,
            documents_topic=self.docs, scores_topic=self.scores, dlq_topic=self.dlq,
            history_len=3, clock=lambda: T0 + 10 * HOUR, novelty_window_s=novelty_window_s,
            lateness_s=lateness_s,
        )  # fmt: skip

    async def new_publisher(self) -> OutboxPublisher:
        """A publisher as a restarted process would have: no claims, fresh end offsets."""
        pub = OutboxPublisher(self.producer, self.redis, self.bootstrap, [self.docs, self.scores, self.dlq])
        await pub.start()
        return pub

    def scored(self, doc: ScoredDocument) -> Scored:
        self.offset += 1
        assert doc.text is not None
        return Scored(doc, text_hash(doc.text), doc.text.encode(), "in", 0, self.offset)

    async def publish(self, outcomes: list, publisher: OutboxPublisher | None = None) -> None:
        pub = publisher or self.publisher
        entries = [e for o in outcomes for e in o.entries]
        await pub.produce(entries)
        await pub.delete(entries)


@pytest.fixture
async def env(broker: EmbeddedBroker, redis_url: str, ns: str) -> AsyncIterator[Env]:
    docs, scores, dlq = f"{ns}documents", f"{ns}scores", f"{ns}dlq"
    await create_topics(broker.bootstrap, [docs, scores, dlq], partitions=2)
    redis = aioredis.Redis.from_url(redis_url)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False, acks="all")
    await producer.start()
    publisher = OutboxPublisher(producer, redis, broker.bootstrap, [docs, scores, dlq])
    await publisher.start()
    try:
        yield Env(broker.bootstrap, redis, Keys(ns), producer, publisher, docs, scores, dlq)
    finally:
        await publisher.stop()
        await producer.stop()
        await redis.aclose()


def effect_counts(records: list) -> Counter[str]:
    return Counter(r.effect_id for r in records)


async def test_apply_commits_everything_once(env: Env) -> None:
    applier = env.applier()
    doc = scored_doc("d1", T0, ("AAPL", "MSFT"))
    (o,) = await applier.apply([env.scored(doc)])
    assert o.status == "applied" and [u.symbol for u in o.updates] == ["AAPL", "MSFT"]
    assert [e.effect_id for e in o.entries] == ["doc:d1", "score:AAPL:1", "score:MSFT:1"]
    r, k = env.redis, env.keys
    assert int(await r.get(k.applied)) == 1
    assert await r.get(k.doc("d1")) == text_hash("text of d1").encode()
    assert 0 < await r.ttl(k.doc("d1")) <= 30 * 86_400
    assert {s.decode() for s in await r.smembers(k.tickers)} == {"AAPL", "MSFT"}
    latest = await r.hgetall(k.ticker("AAPL"))
    assert latest[b"seq"] == b"1" and latest[b"last_doc_id"] == b"d1"
    (member,) = await r.zrange(k.history("AAPL"), 0, -1)
    assert TickerScore.from_json(member) == o.updates[0]
    assert await r.xlen(k.outbox("in", 0)) == 3

    await env.publish([o])
    assert await r.xlen(k.outbox("in", 0)) == 0
    docs = await read_topic(env.bootstrap, env.docs)
    scores = await read_topic(env.bootstrap, env.scores)
    assert [(d.key, d.effect_id) for d in docs] == [(b"d1", "doc:d1")]
    assert ScoredDocument.from_json(docs[0].value) == doc
    assert sorted((s.key, s.effect_id) for s in scores) == [(b"AAPL", "score:AAPL:1"), (b"MSFT", "score:MSFT:1")]

    # re-delivery: nothing changes anywhere
    (again,) = await applier.apply([env.scored(doc)])
    assert again.status == "duplicate" and again.entries == []
    assert int(await r.get(k.applied)) == 1
    assert await r.xlen(k.outbox("in", 0)) == 0


async def test_history_is_capped(env: Env) -> None:
    applier = env.applier()
    outcomes = await applier.apply([env.scored(scored_doc(f"h{i}", T0 + i, ("AAPL",))) for i in range(5)])
    assert [o.status for o in outcomes] == ["applied"] * 5
    history = await env.redis.zrange(env.keys.history("AAPL"), 0, -1)
    assert [TickerScore.from_json(m).seq for m in history] == [3, 4, 5]  # history_len=3, newest kept


async def test_same_id_other_text_is_dead_lettered_once(env: Env) -> None:
    applier = env.applier()
    await env.publish(await applier.apply([env.scored(scored_doc("x", T0, ("AAPL",)))]))
    imposter = env.scored(scored_doc("x", T0, ("AAPL",), text="a different story"))
    (o,) = await applier.apply([imposter])
    assert o.status == "dead_lettered" and o.dead_letter is not None
    assert o.dead_letter.reason == "duplicate_id" and o.dead_letter.doc_id == "x"
    assert o.dead_letter.raw == b"a different story"
    # the same bad message re-delivered (same topic/partition/offset) is not dead-lettered again
    (o2,) = await applier.apply([imposter])
    assert o2.status == "already_dead_lettered" and o2.entries == []
    await env.publish([o, o2])
    assert int(await env.redis.get(env.keys.applied)) == 1
    dlq = await read_topic(env.bootstrap, env.dlq)
    assert [d.effect_id for d in dlq] == [f"dlq:in:0:{imposter.offset}"]
    assert DeadLetter.from_json(dlq[0].value).reason == "duplicate_id"


async def test_a_resent_copy_in_the_same_call_never_commits_without_its_tickers(env: Env) -> None:
    # Regression (found by bench/reliability.py): a copy prepared behind its original carried no
    # ticker updates (the cache already held the original's events). When the original then
    # failed in the script -- here a conflict, because an imposter earlier in the call tainted
    # MSFT -- the copy committed the document with no ticker updates at all.
    applier = env.applier()
    await env.publish(await applier.apply([env.scored(scored_doc("y", T0, ("AAPL",)))]))
    imposter = env.scored(scored_doc("y", T0 + 1, ("MSFT",), text="another story"))
    x = scored_doc("x", T0 + 2, ("MSFT", "AAPL"))
    outcomes = await applier.apply([imposter, env.scored(x), env.scored(x)])
    assert [o.status for o in outcomes] == ["dead_lettered", "applied", "duplicate"]
    assert [u.symbol for u in outcomes[1].updates] == ["MSFT", "AAPL"]
    await env.publish(outcomes)
    assert int(await env.redis.get(env.keys.applied)) == 2
    want = recompute_states([scored_doc("y", T0, ("AAPL",)), x], half_life_s=3600.0, lateness_s=3600.0)
    for sym in ("AAPL", "MSFT"):
        members = await env.redis.zrange(env.keys.events(sym), 0, -1)
        assert [m.decode().split("|", 1)[1] for m in members] == [e[1] for e in want[sym].events]
        assert int(await env.redis.hget(env.keys.state(sym), "seq")) == want[sym].seq
    scores = await read_topic(env.bootstrap, env.scores)
    assert sorted(s.effect_id for s in scores) == ["score:AAPL:1", "score:AAPL:2", "score:MSFT:1"]


async def test_parse_failures_are_dead_lettered_once(env: Env) -> None:
    applier = env.applier()
    dl = DeadLetter.from_error(b"\xff not json", "not_utf8", "bad bytes", "news.raw", 3, 17, failed_at=T0)
    (o,) = await applier.apply([Rejected(dl)])
    (o2,) = await applier.apply([Rejected(dl)])
    assert (o.status, o2.status) == ("dead_lettered", "already_dead_lettered")
    assert o.entries[0].stream == env.keys.outbox("news.raw", 3)
    await env.publish([o])
    (rec,) = await read_topic(env.bootstrap, env.dlq)
    assert rec.effect_id == "dlq:news.raw:3:17"
    assert DeadLetter.from_json(rec.value) == dl


async def test_another_message_at_dead_lettered_coordinates_gets_its_own_dead_letter(env: Env) -> None:
    # Regression (found by the broker-restart row of bench/reliability.py): a topic recreated
    # (or a broker that lost its log) reuses offsets, and the old guard silenced the new
    # message's dead letter for 30 days.
    applier = env.applier()
    old = DeadLetter.from_error(b"not json", "not_json", "", "news.raw", 0, 5)
    new = DeadLetter.from_error(b"[1, 2]", "not_object", "", "news.raw", 0, 5)
    statuses = [(await applier.apply([Rejected(d)]))[0].status for d in (old, new, new, old)]
    assert statuses == ["dead_lettered", "dead_lettered", "already_dead_lettered", "dead_lettered"]
    # a guard written before guards held fingerprints still means "dead-lettered"
    legacy = DeadLetter.from_error(b"x", "not_json", "", "news.raw", 0, 6)
    await env.redis.set(env.keys.prefix + env.keys.dlq_guard_suffix("news.raw", 0, 6), "1")
    assert (await applier.apply([Rejected(legacy)]))[0].status == "already_dead_lettered"


async def test_state_round_trips_through_redis(env: Env) -> None:
    applier = env.applier()
    docs = [scored_doc(f"s{i}", T0 + (i * 7919) % 600_000, ("AAPL", "TSLA")[: 1 + i % 2],
                       label=("positive", "negative", "neutral")[i % 3], score=((i % 5) - 2) / 2.5)
            for i in range(12)]  # fmt: skip
    await applier.apply([env.scored(d) for d in docs])
    stored = await applier.load_states(["AAPL", "TSLA", "NOPE"])
    assert set(stored) == {"AAPL", "TSLA"}
    for sym in stored:
        assert stored[sym].to_dict() == applier.agg.tickers[sym].to_dict()  # exact, floats included
        ref = recompute_states(docs, half_life_s=3600.0, lateness_s=3600.0)[sym]
        assert stored[sym].seq == ref.seq and stored[sym].events == ref.events
        assert stored[sym].num == pytest.approx(ref.num, rel=1e-12)
        assert stored[sym].den == pytest.approx(ref.den, rel=1e-12)


async def test_concurrent_appliers_conflict_and_converge(env: Env) -> None:
    """Two workers share AAPL. B's cache goes stale; in one call B then sends a doc built on the
    stale state (seq conflict) and one whose expected seq happens to match Redis again -- the
    script must refuse the second as well, or it would overwrite A's update."""
    a, b = env.applier(), env.applier()
    d0, d1 = scored_doc("c0", T0, ("AAPL",)), scored_doc("c1", T0 + 1000, ("AAPL",), label="negative", score=-0.8)
    d2 = scored_doc("c2", T0 + 2000, ("AAPL",))
    d3 = scored_doc("c3", T0 + 3000, ("AAPL", "MSFT"), label="neutral", score=0.0)
    assert (await b.apply([env.scored(d0)]))[0].status == "applied"  # B caches AAPL at seq 1
    assert (await a.apply([env.scored(d1)]))[0].status == "applied"  # A loads seq 1, writes seq 2
    conflicts = metrics.CONFLICTS._value.get()
    outcomes = await b.apply([env.scored(d2), env.scored(d3)])
    assert [o.status for o in outcomes] == ["applied", "applied"]
    assert metrics.CONFLICTS._value.get() - conflicts >= 2
    assert [u.seq for u in outcomes[0].updates] == [3]
    assert [(u.symbol, u.seq) for u in outcomes[1].updates] == [("AAPL", 4), ("MSFT", 1)]
    stored = await b.load_states(["AAPL"])
    ref = recompute_states([d0, d1, d2, d3], half_life_s=3600.0, lateness_s=3600.0)["AAPL"]
    assert stored["AAPL"].events == ref.events and stored["AAPL"].seq == 4
    assert stored["AAPL"].num == pytest.approx(ref.num) and stored["AAPL"].den == pytest.approx(ref.den)


async def test_late_document_applies_the_rest_and_is_dead_lettered(env: Env) -> None:
    applier = env.applier(lateness_s=60)
    await applier.apply([env.scored(scored_doc("new", T0 + 2 * HOUR, ("AAPL",)))])
    late = env.scored(scored_doc("old", T0, ("AAPL", "MSFT")))
    (o,) = await applier.apply([late])
    assert o.status == "applied"
    assert o.doc is not None and [t.symbol for t in o.doc.tickers] == ["MSFT"]  # what the aggregates got
    assert [u.symbol for u in o.updates] == ["MSFT"]
    assert o.dead_letter is not None and o.dead_letter.reason == "late" and "AAPL" in o.dead_letter.detail
    assert [e.effect_id for e in o.entries] == ["doc:old", "score:MSFT:1", f"dlq:in:0:{late.offset}"]
    assert (await applier.apply([late]))[0].status == "duplicate"  # and it counts once
    assert int(await env.redis.get(env.keys.applied)) == 2


async def test_recovery_publishes_only_what_is_missing(env: Env) -> None:
    """Crash after the script, after only some records were acknowledged and none deleted."""
    applier = env.applier()
    outcomes = await applier.apply([env.scored(scored_doc(f"r{i}", T0 + i, ("AAPL", "NVDA"))) for i in range(4)])
    entries = [e for o in outcomes for e in o.entries]
    assert len(entries) == 12
    await env.publisher.produce(entries[:5])  # acked, then "SIGKILL": nothing deleted
    # some unrelated traffic lands on the topics meanwhile (recovery must scan past it)
    for i in range(10):
        await env.producer.send_and_wait(env.docs, orjson.dumps({"other": i}), key=b"other")

    restarted = await env.new_publisher()
    try:
        assert await restarted.recover([env.keys.outbox("in", 0)]) == 12
        assert await restarted.recover([env.keys.outbox("in", 0)]) == 0  # idempotent
    finally:
        await restarted.stop()
    assert await env.redis.xlen(env.keys.outbox("in", 0)) == 0
    records = await read_topic(env.bootstrap, env.docs) + await read_topic(env.bootstrap, env.scores)
    counts = effect_counts([r for r in records if r.effect_id])
    assert set(counts) == {e.effect_id for e in entries}
    assert max(counts.values()) == 1, f"duplicated: {[k for k, v in counts.items() if v > 1]}"


async def test_recovery_skips_claimed_entries(env: Env) -> None:
    """Entries this process is already publishing are not picked up again by a recovery."""
    applier = env.applier()
    (o,) = await applier.apply([env.scored(scored_doc("k1", T0, ("AAPL",)))])
    assert await applier.recover([env.keys.outbox("in", 0)]) == 0  # claimed by the applier
    await env.publish([o])
    records = await read_topic(env.bootstrap, env.docs)
    assert [r.effect_id for r in records] == ["doc:k1"]


async def test_produce_check_first_never_duplicates(env: Env) -> None:
    applier = env.applier()
    (o,) = await applier.apply([env.scored(scored_doc("p1", T0, ("AAPL",)))])
    await env.publisher.produce(o.entries)
    assert await env.publisher.produce(o.entries, check_first=True) == len(o.entries)  # all skipped
    records = await read_topic(env.bootstrap, env.docs) + await read_topic(env.bootstrap, env.scores)
    assert sorted(r.effect_id for r in records) == ["doc:p1", "score:AAPL:1"]


async def test_lost_script_reply_is_recovered_then_retried(env: Env) -> None:
    """The connection drops after Redis ran the script: the worker cannot know it did."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    applier = env.applier()
    real = applier.script
    calls = 0

    async def reply_lost_once(keys: list, args: list) -> object:
        nonlocal calls
        calls += 1
        reply = await real(keys=keys, args=args)
        if calls == 1:
            raise RedisConnectionError("connection reset after the script ran")
        return reply

    applier.script = reply_lost_once  # type: ignore[assignment]
    docs = [scored_doc("l1", T0, ("AAPL",)), scored_doc("l2", T0 + 1, ("AAPL", "MSFT"))]
    outcomes = await applier.apply([env.scored(d) for d in docs])
    # the retry finds both applied; the recovery already published what the lost call wrote
    assert [o.status for o in outcomes] == ["duplicate", "duplicate"] and calls == 2
    assert int(await env.redis.get(env.keys.applied)) == 2
    assert await env.redis.xlen(env.keys.outbox("in", 0)) == 0
    records = await read_topic(env.bootstrap, env.docs) + await read_topic(env.bootstrap, env.scores)
    assert sorted(r.effect_id for r in records) == ["doc:l1", "doc:l2", "score:AAPL:1", "score:AAPL:2", "score:MSFT:1"]
    # and the cache was dropped, so the next document builds on what Redis holds
    (o,) = await applier.apply([env.scored(scored_doc("l3", T0 + 2, ("AAPL",)))])
    assert o.status == "applied" and o.updates[0].seq == 3


async def test_lost_produce_ack_is_checked_before_resending(env: Env) -> None:
    """The broker wrote the records but the acks never arrived (e.g. a timeout)."""
    from aiokafka.errors import KafkaTimeoutError

    applier = env.applier()
    (o,) = await applier.apply([env.scored(scored_doc("a1", T0, ("AAPL", "MSFT")))])
    real = env.producer
    losses = len(o.entries)  # the first attempt loses every ack

    class AckLosingProducer:
        def create_batch(self) -> object:
            return real.create_batch()

        async def send_batch(self, batch: object, topic: str, **kw: object) -> asyncio.Future:
            nonlocal losses
            fut = await real.send_batch(batch, topic, **kw)
            if losses <= 0:
                return fut
            losses -= batch.record_count()  # type: ignore[attr-defined]
            await fut  # written...
            failed: asyncio.Future = asyncio.get_running_loop().create_future()
            failed.set_exception(KafkaTimeoutError("no ack"))  # ...but reported as failed
            return failed

    env.publisher.producer = AckLosingProducer()  # type: ignore[assignment]
    assert await env.publisher.produce(o.entries) == len(o.entries)  # all found on the retry, none resent
    env.publisher.producer = real
    records = await read_topic(env.bootstrap, env.docs) + await read_topic(env.bootstrap, env.scores)
    assert sorted(r.effect_id for r in records) == ["doc:a1", "score:AAPL:1", "score:MSFT:1"]


STORY = "$AAPL recalls 2 million iPhones over a battery defect"
COPIES = [STORY, f"RT @wire: {STORY}", f"BREAKING: {STORY}", f"{STORY} https://t.co/x1", STORY.upper()]


def story_docs() -> list[ScoredDocument]:
    """Copies of one story among other stories, a minute apart."""
    texts = []
    for i in range(15):
        texts.append(COPIES[i % len(COPIES)])
        texts.append(f"$MSFT story number {i}: Microsoft opens its office {i} in a new city")
    return [scored_doc(f"s{i:02d}", T0 + i * 60_000, ("AAPL",), text=t) for i, t in enumerate(texts)]


def one_index_answers(docs: list[ScoredDocument]) -> dict[str, tuple[str, float]]:
    """What one story index, deciding every document in publication order, answers."""
    from pipeline.process import story, story_index, story_signs

    index = story_index(86_400, 3600.0)
    signs = story_signs(docs)
    out = {}
    for d, sig, ks in zip(docs, signs.sigs, signs.keys, strict=True):
        got = story(index, d, sig, ks).doc
        out[d.id] = (got.story, got.novelty)
    return out


def count_reads(applier: Applier) -> list[int]:
    calls = [0]
    lookup = applier.lookup

    async def counted(*args: object, **kw: object) -> object:
        calls[0] += 1
        return await lookup(*args, **kw)

    applier.lookup = counted  # type: ignore[assignment]
    return calls


async def test_stories_this_applier_started_are_decided_without_reading_redis(env: Env) -> None:
    docs = story_docs()
    a = env.applier(novelty_window_s=86_400)
    reads = count_reads(a)
    got = {}
    for chunk in (docs[:7], docs[7:20], docs[20:]):
        for o in await a.apply([env.scored(d) for d in chunk]):
            assert o.status == "applied" and o.doc is not None
            got[o.doc.id] = (o.doc.story, o.doc.novelty)
    assert got == one_index_answers(docs)
    assert reads[0] == 0
    assert got["s28"] == ("s00", pytest.approx(0.75**14))


async def test_appliers_sharing_stories_agree_with_one_index(env: Env) -> None:
    """Two workers take turns on the same stories, then a third starts (a restart): each finds
    what the others wrote, through the commit script's refusal and a read."""
    docs = story_docs()
    a, b, c = (env.applier(novelty_window_s=86_400) for _ in range(3))
    got = {}
    turns = [a, b] * 7 + [c]
    for n, applier in enumerate(turns):
        chunk = docs[n * 2 : n * 2 + 2] if applier is not c else docs[28:]
        for o in await applier.apply([env.scored(d) for d in chunk]):
            assert o.status == "applied" and o.doc is not None
            got[o.doc.id] = (o.doc.story, o.doc.novelty)
    assert len(got) == len(docs)
    assert got == one_index_answers(docs)
    members = await env.redis.zcard(f"{env.keys.stories(SIGNATURE_VERSION)}s:s00")
    assert members == 15  # every copy, once


async def test_band_keys_live_in_per_period_hashes_for_one_to_two_periods(env: Env) -> None:
    """Band keys are fields of a hash per period of Redis time: written to the current one, found
    there or in the previous one, and hashes older than that are unlinked by the next commit."""
    docs = story_docs()
    a = env.applier(novelty_window_s=86_400)
    prefix = f"{env.keys.stories(SIGNATURE_VERSION)}B:{a._story_period_s}:"
    period = int((await env.redis.time())[0]) // a._story_period_s
    await env.redis.hset(f"{prefix}{period - 3}", mapping={b"stale": b"gone"})
    await env.redis.set(f"{prefix}swept", period - 4)
    assert (await a.apply([env.scored(docs[0])]))[0].status == "applied"
    assert await env.redis.exists(f"{prefix}{period - 3}") == 0  # swept
    assert int(await env.redis.get(f"{prefix}swept")) == period - 2
    written = await env.redis.hgetall(f"{prefix}{period}")
    assert len(written) == BANDS and set(written.values()) == {b"s00"}
    # the period turns: the story's keys are now in the previous period's hash
    await env.redis.rename(f"{prefix}{period}", f"{prefix}{period - 1}")
    restarted = env.applier(novelty_window_s=86_400)
    (o,) = await restarted.apply([env.scored(docs[2])])
    assert o.status == "applied" and o.doc is not None
    assert (o.doc.story, o.doc.novelty) == ("s00", 0.75)
    # a worker configured with another window keeps its own hashes and sweeps only those
    other = env.applier(novelty_window_s=3600)
    assert other._story_period_s != a._story_period_s
    assert (await other.apply([env.scored(docs[1])]))[0].status == "applied"
    assert await env.redis.hlen(f"{prefix}{period - 1}") == BANDS


async def test_the_commit_script_reads_band_keys_it_was_not_given_up_front(env: Env) -> None:
    """The script reads a round's band keys in one go from the list the applier sends; a key
    missing from that list is still looked up (and a decision it contradicts refused)."""

    def without_round_keys(applier: Applier) -> None:
        script = applier.script

        async def call(keys: list, args: list) -> object:
            a = msgpack.unpackb(args[0], raw=True)
            at = 8 + int(a[7])  # prefix ... story_period_s, n_fields, fields..., round_keys
            assert len(a[at]) % 8 == 0 and len(a[at]) > 0
            a[at] = b""
            return await script(keys=keys, args=[msgpack.packb(a, use_bin_type=False)])

        applier.script = call  # type: ignore[assignment]

    docs = story_docs()
    first, restarted = env.applier(novelty_window_s=86_400), env.applier(novelty_window_s=86_400)
    without_round_keys(first)
    without_round_keys(restarted)
    assert (await first.apply([env.scored(docs[0])]))[0].status == "applied"
    (o,) = await restarted.apply([env.scored(docs[2])])  # decided alone as new, refused, then read
    assert o.status == "applied" and o.doc is not None
    assert (o.doc.story, o.doc.novelty) == ("s00", 0.75)


async def test_an_own_decision_the_script_refuses_is_forgotten(env: Env) -> None:
    """A stale ticker state makes the script refuse a document this applier decided alone: its
    story leaves the applier's index and the retry, decided on a read, is still right."""
    docs = story_docs()
    a, b = env.applier(novelty_window_s=86_400), env.applier(novelty_window_s=86_400)
    assert (await a.apply([env.scored(docs[0])]))[0].status == "applied"  # A caches AAPL and the story
    other = scored_doc("x", T0 + 30_000, ("AAPL",), text="Apple opens a store in Mumbai")
    assert (await b.apply([env.scored(other)]))[0].status == "applied"  # AAPL moves on in Redis
    conflicts = metrics.CONFLICTS._value.get()
    (o,) = await a.apply([env.scored(docs[2])])  # A's AAPL state is stale: refused once, then read
    assert metrics.CONFLICTS._value.get() > conflicts
    assert o.status == "applied" and o.doc is not None
    assert (o.doc.story, o.doc.novelty) == ("s00", 0.75)
    assert "s00" not in a._own.stories  # Redis knows better from now on
