"""The worker links with the TOKEE tagger when ``settings.tagger`` names one (real broker, real Redis)."""

from __future__ import annotations

import asyncio

import orjson
from streaming_helpers import T0, produce, read_topic, wait_drained

from pipeline.inference import build_engine, build_linker
from pipeline.infra import EmbeddedBroker, create_topics
from pipeline.schemas import ScoredDocument
from pipeline.settings import Settings

# Ambiguous names the shipped tagger marks as organisations (bench/linking.py --tagger default).
# Without the tagger the cue rules leave the first unlinked ("completions" is no cue of theirs).
TEXTS = {
    "psn": ("Persimmon completions rise 7% as mortgage rates ease", {"PSN.L"}),
    "lly": ("Lilly's weight-loss drug sales double", {"LLY"}),
    "cash": ("$AAPL closes at a record", {"AAPL"}),  # explicit: no tagger needed
}


def test_build_linker_uses_the_tagger_only_when_asked() -> None:
    text = TEXTS["psn"][0]
    assert build_linker(Settings()).tagger is None
    assert build_linker(Settings()).link_text(text) == []
    links = build_linker(Settings(tagger="default")).link_text(text)
    assert [(x.symbol, x.method) for x in links] == [("PSN.L", "name")]
    assert links[0].confidence is not None and links[0].confidence >= 0.5


def test_worker_links_ambiguous_names_with_the_tagger(broker: EmbeddedBroker, redis_url: str, ns: str) -> None:
    from pipeline.worker import Worker

    s = Settings(bootstrap=broker.bootstrap, redis_url=redis_url, namespace=ns, group_id=f"{ns}workers",
                 partitions=1, metrics_port=0, max_batch=8, tagger="default")
    messages = [
        ("news", orjson.dumps({"id": key, "text": text, "published_at": T0 + i * 1000}))
        for i, (key, (text, _)) in enumerate(TEXTS.items())
    ]

    async def run() -> list[ScoredDocument]:
        topics = [s.topic(t) for t in (s.news_topic, s.tweets_topic, s.documents_topic, s.scores_topic, s.dlq_topic)]
        await create_topics(s.bootstrap, topics, s.partitions)
        await produce(s, messages)
        engine = build_engine(s).start()
        worker = Worker(s.model_copy(update={"session_timeout_ms": 6000}), engine=engine)
        task = asyncio.create_task(worker.run())
        try:
            await wait_drained(worker, task, 120)
        finally:
            worker.stop()
            await task
            engine.close()
        return [ScoredDocument.from_json(r.value) for r in await read_topic(s.bootstrap, s.topic(s.documents_topic))]

    docs = {d.id: d for d in asyncio.run(run())}
    assert set(docs) == set(TEXTS)
    for key, (_, want) in TEXTS.items():
        assert {t.symbol for t in docs[key].tickers} == want, key
    assert docs["psn"].tickers[0].confidence is not None  # the tagger decided it
    assert docs["cash"].tickers[0].confidence is None  # a cashtag needs no tagger
