"""Non-English texts get an explicit outcome: the document records its language and, outside the
aggregated languages (FINSENT_LANGUAGES, default English), counts in no ticker aggregate -- in
the worker's shared step, the aggregator, the batch recomputation and the schema alike."""

from __future__ import annotations

import orjson
import pytest

from models.engine import Prediction
from pipeline import process
from pipeline.aggregate import Aggregator, recompute
from pipeline.schemas import ScoredDocument
from pipeline.settings import Settings

T0 = 1_710_424_800_000
LABELS = ["negative", "neutral", "positive"]
PRED = Prediction("positive", 2, (0.05, 0.15, 0.8), 2, 1.0)


def doc(text: str, doc_id: str, languages: frozenset[str] | None = frozenset({"en"}), t: int = T0) -> ScoredDocument:
    msg = process.message(text, doc_id=doc_id, now_ms=t)
    (links,) = process.link(_linker(), [msg])
    return process.document(msg, links, PRED, labels=LABELS, model_version="m", ingested_at=t, scored_at=t,
                            languages=languages)  # fmt: skip


def _linker():
    from pipeline.linking import Linker
    from pipeline.universe import load_universe

    return Linker(load_universe(None), None)


GERMAN = "$AAPL: Apple-Aktie fällt nach schwachen Quartalszahlen deutlich"
ENGLISH = "$AAPL shares fall after weak quarterly results"


def test_the_document_carries_its_language_and_only_english_is_aggregated_by_default() -> None:
    de, en = doc(GERMAN, "d1"), doc(ENGLISH, "e1")
    assert (de.lang, de.aggregated) == ("de", False)
    assert (en.lang, en.aggregated) == ("en", True)
    assert [t.symbol for t in de.tickers] == ["AAPL"]  # links are kept: only the aggregates skip it
    assert doc(GERMAN, "d2", languages=frozenset({"en", "de"})).aggregated
    assert doc(GERMAN, "d3", languages=None).aggregated


def test_a_document_kept_out_changes_no_aggregate() -> None:
    agg = Aggregator(3600.0, 3600.0)
    assert agg.apply(doc(GERMAN, "d1"), T0) == []
    (update,) = agg.apply(doc(ENGLISH, "e1", t=T0 + 1000), T0)
    assert (update.symbol, update.n_1h) == ("AAPL", 1)
    rebuilt = recompute([doc(GERMAN, "d1"), doc(ENGLISH, "e1", t=T0 + 1000)], half_life_s=3600.0, lateness_s=3600.0)
    assert rebuilt["AAPL"].n_1h == 1


def test_language_fields_round_trip_and_old_documents_read_as_aggregated() -> None:
    de = doc(GERMAN, "d1")
    assert ScoredDocument.from_json(de.to_json()) == de
    old = orjson.loads(doc(ENGLISH, "e1").to_json())
    del old["lang"], old["aggregated"]
    parsed = ScoredDocument.from_json(orjson.dumps(old))
    assert (parsed.lang, parsed.aggregated) == (None, True)


@pytest.mark.parametrize(("value", "expected"), [("en", {"en"}), ("en,de,fr", {"en", "de", "fr"}), ("*", None)])
def test_languages_setting(value: str, expected: set[str] | None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINSENT_LANGUAGES", value)
    assert Settings().aggregated_languages == (None if expected is None else frozenset(expected))


def test_a_bad_languages_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINSENT_LANGUAGES", "English, German")
    with pytest.raises(ValueError, match="languages"):
        Settings()
