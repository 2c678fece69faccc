"""One input message's way to the aggregates, as pure steps: parse -> dedupe -> link -> document
-> aggregate.

The streaming worker (:mod:`pipeline.worker`) and ``finsent backtest`` (:mod:`pipeline.backtest`)
both process messages with these functions, so the two compute the same documents and the same
ticker updates from the same input. Nothing here does I/O: where the stored text hash comes from
(Redis for the worker, a dict for the backtest), when the model runs and where the results go
are the callers' business.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

import numpy as np
import orjson

from models.targets import target_input
from models.text import language
from pipeline import novelty
from pipeline.aggregate import Aggregator, Late
from pipeline.keys import text_hash
from pipeline.schemas import (
    InputMessage,
    Kind,
    ScoredDocument,
    TickerLink,
    TickerScore,
    parse_input,
    score_from_probs,
)

if TYPE_CHECKING:
    from pipeline.linking import Linker

__all__ = [
    "DUPLICATE_ID",
    "Folded",
    "Prediction",
    "Seen",
    "StoryDecision",
    "StorySigns",
    "dedupe",
    "document",
    "duplicate_id_detail",
    "fold",
    "link",
    "message",
    "model_version",
    "parse",
    "split_answers",
    "story",
    "story_index",
    "story_signs",
    "target_asks",
    "target_of",
    "target_scores",
    "text_hash",
]

#: The dead-letter reason of a message whose id was already applied with another text.
DUPLICATE_ID = "duplicate_id"

#: What de-duplication decided for a message: ``new`` (process it), ``duplicate`` (the same id
#: and text were applied before: skip it), ``duplicate_id`` (the id was applied with another
#: text: reject it).
Seen = Literal["new", "duplicate", "duplicate_id"]


class Prediction(Protocol):
    """What the engine answers for one text (``models.engine.Prediction``)."""

    @property
    def label(self) -> str: ...
    @property
    def probs(self) -> Sequence[float]: ...
    @property
    def exit_layer(self) -> int: ...
    @property
    def truncated(self) -> bool: ...


def parse(raw: bytes | None, now_ms: int, kind: Kind) -> InputMessage:
    """The message in a raw record read from a ``kind`` topic; raises
    :class:`~pipeline.schemas.ParseError` (with the dead-letter reason) if it is not one."""
    return parse_input(raw, now_ms=now_ms, default_kind=kind)


def message(text: str, *, doc_id: str, now_ms: int) -> InputMessage:
    """A bare text (``finsent score``/``link``) as the message a feed would carry: the same parse
    and text normalisation as a record on the input topics, so a text gets the same links and
    score here as in the worker. Raises :class:`~pipeline.schemas.ParseError` as :func:`parse`
    does (``empty_text`` for a blank text)."""
    return parse_input(orjson.dumps({"id": doc_id, "text": text, "published_at": now_ms}), now_ms=now_ms)


def dedupe(stored_hash: str | None, hash_: str) -> Seen:
    """Decide on a message from the text hash stored under its id (None: id never applied) and
    its own text hash (:func:`text_hash`)."""
    if stored_hash is None:
        return "new"
    return "duplicate" if stored_hash == hash_ else DUPLICATE_ID


def duplicate_id_detail(doc_id: str) -> str:
    """The dead-letter detail of a ``duplicate_id`` message."""
    return f"id {doc_id!r} was already applied with a different text"


def link(linker: Linker, msgs: Sequence[InputMessage]) -> list[list[TickerLink]]:
    """The ticker links of each message. With a tagger, one tagger call for all of them (it runs
    a model: callers on an event loop run this in a thread)."""
    if linker.tagger is None:
        return [linker.link(m) for m in msgs]
    return linker.link_many(msgs)


def model_version(document_model: str, target_model: str | None) -> str:
    """The ``model_version`` a document records: the document model's version, and the target
    model's after a ``+`` when one scores the tickers (both decide its per-ticker scores)."""
    return document_model if target_model is None else f"{document_model}+{target_model}"


def target_of(text: str, link_: TickerLink) -> str:
    """The target a target model reads for ``link_``: the mention as ``text`` writes it
    (``$AAPL``, ``Apple``; the link's span), else (no span, or ``NASDAQ:AAPL``) its cashtag."""
    written = text[link_.span[0]:link_.span[1]].strip() if link_.span and link_.method != "exchange" else ""
    return written or f"${link_.symbol}"


def target_asks(msg: InputMessage, links: Sequence[TickerLink]) -> list[tuple[str, str]]:
    """What a target model must answer for ``msg``: ``(symbol, target model input)`` per distinct
    linked symbol, in link order, when the text links two or more symbols; ``[]`` otherwise (a
    one-ticker text keeps its document score: no extra pass). The target is the symbol's first
    mention (:func:`target_of`)."""
    first: dict[str, TickerLink] = {}
    for link_ in links:
        first.setdefault(link_.symbol, link_)
    if len(first) < 2:
        return []
    return [(sym, target_input(msg.text, target_of(msg.text, link_))) for sym, link_ in first.items()]


def split_answers(asks: Sequence[Sequence[tuple[str, str]]], predictions: Sequence[Prediction]) -> list[list[Prediction]]:
    """Per message of a batch, its share of ``predictions``: the target model's answers to the
    batch's :func:`target_asks`, asked flattened in message order."""
    out, at = [], 0
    for ask in asks:
        out.append(list(predictions[at : at + len(ask)]))
        at += len(ask)
    if at != len(predictions):
        raise ValueError(f"{len(predictions)} target answers for {at} asks")
    return out


def target_scores(
    asks: Sequence[tuple[str, str]], predictions: Sequence[Prediction], labels: Sequence[str]
) -> dict[str, tuple[str, float]]:
    """symbol -> (label, score) from a target model's answers to :func:`target_asks`. Raises
    ValueError on unusable probabilities (e.g. NaN), as :func:`document` does."""
    out = {}
    for (sym, _), p in zip(asks, predictions, strict=True):
        probs = dict(zip(labels, p.probs, strict=True))
        if not all(0.0 <= v <= 1.0 + 1e-6 for v in probs.values()):
            raise ValueError(f"target model probabilities for {sym}: {probs}")
        out[sym] = (p.label, max(-1.0, min(1.0, score_from_probs(probs))))
    return out


def document(
    msg: InputMessage,
    links: Sequence[TickerLink],
    prediction: Prediction,
    *,
    labels: Sequence[str],
    model_version: str,
    ingested_at: int,
    scored_at: int,
    languages: frozenset[str] | None = frozenset({"en"}),
    targets: Mapping[str, tuple[str, float]] | None = None,
) -> ScoredDocument:
    """The scored document for ``msg``, its links and the model's answer, with the text's
    language; a document in a language outside ``languages`` (None: every language) is kept out
    of the aggregates (``aggregated`` False). ``targets`` (:func:`target_scores`): the sentiment
    toward each symbol, set on its links (``score``, ``label``). Raises ValueError on unusable
    probabilities (e.g. NaN), which must never reach the aggregates."""
    p = prediction
    lang = language(msg.text)
    if targets:
        links = [replace(lk, label=targets[lk.symbol][0], score=targets[lk.symbol][1]) if lk.symbol in targets
                 else lk for lk in links]  # fmt: skip
    return ScoredDocument.from_prediction(
        msg, links, label=p.label, probs=dict(zip(labels, p.probs, strict=True)), exit_layer=p.exit_layer,
        truncated=p.truncated, model_version=model_version, ingested_at=ingested_at, scored_at=scored_at,
        lang=lang, aggregated=languages is None or lang in languages,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class StorySigns:
    """What story detection needs of a batch of documents: ``sigs`` (``(n, SIGNATURE_WIDTH)``
    uint32, :func:`pipeline.novelty.signatures` of their texts) and each one's LSH band keys."""

    sigs: np.ndarray
    keys: list[list[int]]


def story_signs(docs: Sequence[ScoredDocument]) -> StorySigns:
    """Signatures and band keys of ``docs`` (one vectorised call for the batch)."""
    sigs = novelty.signatures([d.text or "" for d in docs])
    return StorySigns(sigs, novelty.band_keys_batch(sigs))


def story_index(window_s: int, lateness_s: float) -> novelty.StoryIndex:
    """An empty story index for documents' ``published_at`` (epoch **ms**: the index's window
    and lateness are given in the same unit as the times it is passed, so they are ms here)."""
    return novelty.StoryIndex(window_s=window_s * 1000, max_lateness_s=round(lateness_s * 1000))


class StoryDecision(NamedTuple):
    """One document's story, decided by :func:`story`.

    ``doc``: the document with its ``story_id`` and ``novelty``; ``repeats_before``: its story's
    documents before it inside the window; ``owners_before``: the story each of its band keys
    pointed to before (``""``: none); ``claimed``: the keys that now point to its story and did
    not before. A store that shares the index (the worker's Redis) checks the first two and
    writes the last when it records the document."""

    doc: ScoredDocument
    repeats_before: int
    owners_before: list[str]
    claimed: list[int]


def story(index: novelty.StoryIndex, doc: ScoredDocument, sig: np.ndarray, keys: list[int]) -> StoryDecision:
    """``doc``'s story and novelty, decided by ``index`` and recorded there (point in time: a
    document's novelty counts only its story's documents published before it inside the
    window). ``sig``, ``keys``: its row of :func:`story_signs`."""
    st, owners_before, claimed = index.assign_keys(doc.id, sig, doc.published_at, keys)
    return StoryDecision(doc.with_story(st.story_id, st.novelty), st.repeats_before, owners_before, claimed)


@dataclass(frozen=True, slots=True)
class Folded:
    """A document folded into the aggregates.

    ``doc`` is the document as the aggregates consumed it: without the tickers it was late for
    (``late``), so the aggregates can always be recomputed from the published documents.
    """

    doc: ScoredDocument
    updates: list[TickerScore]
    late: Late | None = None


def fold(agg: Aggregator, doc: ScoredDocument, now: int) -> Folded:
    """Apply ``doc`` to ``agg`` (see :meth:`Aggregator.apply`), keeping the updates of the
    tickers it was not late for."""
    try:
        return Folded(doc, agg.apply(doc, now))
    except Late as exc:
        kept = replace(doc, tickers=tuple(t for t in doc.tickers if t.symbol not in exc.symbols))
        return Folded(kept, exc.updates, exc)
