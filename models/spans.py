"""BIO tags -> entity spans, and entity-level precision / recall / F1 (exact span match).

Chunking follows conlleval / seqeval's default (non-strict) mode: a chunk starts at ``B-X``, or at
``I-X`` when the previous tag is not ``B-X``/``I-X`` of the same type; it ends before ``O``, any
``B-``, or an ``I-`` of another type. A predicted entity counts only when its type, start and end
all match a gold one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Span = tuple[str, int, int]  # (type, start, end) over word indices, end exclusive


def bio_spans(tags: Sequence[str]) -> list[Span]:
    """Entity spans of one sentence's BIO tags."""
    spans: list[Span] = []
    kind: str | None = None
    start = 0
    for i, tag in enumerate([*tags, "O"]):
        if tag != "O" and not tag.startswith(("B-", "I-")):
            raise ValueError(f"not a BIO tag: {tag!r} (position {i})")
        continues = tag.startswith("I-") and tag[2:] == kind
        if continues:
            continue
        if kind is not None:
            spans.append((kind, start, i))
            kind = None
        if tag != "O":
            kind, start = tag[2:], i
    return spans


def _prf(tp: int, n_pred: int, n_gold: int) -> dict[str, float | int]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4), "support": n_gold}


def entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Micro P/R/F1 over all entities, plus the same per type. gold/pred: tags per sentence."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    g: set[tuple[int, str, int, int]] = set()
    p: set[tuple[int, str, int, int]] = set()
    for i, (gs, ps) in enumerate(zip(gold, pred)):
        if len(gs) != len(ps):
            raise ValueError(f"sentence {i}: {len(gs)} gold tags but {len(ps)} predicted")
        g.update((i, *s) for s in bio_spans(gs))
        p.update((i, *s) for s in bio_spans(ps))
    out: dict[str, Any] = _prf(len(g & p), len(p), len(g))
    types = sorted({s[1] for s in g | p})
    out["per_type"] = {
        t: _prf(len({s for s in g & p if s[1] == t}), sum(s[1] == t for s in p), sum(s[1] == t for s in g))
        for t in types
    }
    return out
