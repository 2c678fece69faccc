"""Entity F1 against layer-token cost for the TOKEE tagger.

Every setting is a real layer-by-layer run (halted tokens change what later layers compute, so
settings cannot be replayed from one full-depth pass as the sentence classifier's rules are).
F1 is seqeval-style exact span match over the original CoNLL tokens (``models.spans``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from models.conll import TaggedSentence
from models.spans import entity_scores
from models.tagger import Encoded, TokenTagger
from models.tokee import SENTENCE

DEFAULT_SETTINGS: tuple[tuple[int, float], ...] = tuple(
    (w, t) for w in (0, 1, 2, SENTENCE) for t in (0.05, 0.1, 0.2, 0.3, 0.4)
)


def parse_settings(spec: str) -> list[tuple[int, float]]:
    """``"0:0.1,1:0.2,-1:0.3"`` -> [(0, 0.1), (1, 0.2), (-1, 0.3)] (window:threshold pairs)."""
    out = []
    for part in spec.split(","):
        w, sep, t = part.strip().partition(":")
        if not sep:
            raise ValueError(f"setting {part!r} is not WINDOW:THRESHOLD")
        out.append((int(w), float(t)))
    return out


class PreparedSet:
    """CoNLL sentences split into tokenizer words and encoded once, reused by every setting."""

    def __init__(self, model: TokenTagger, sentences: Sequence[TaggedSentence]):
        self.gold = [s.tags for s in sentences]
        split = [model.split_words(s.tokens) for s in sentences]
        self.first = [f for _, _, f in split]
        self.items: list[Encoded] = [model.encode_words(w) for w, _, _ in split]


def run_setting(model: TokenTagger, data: PreparedSet, window: int, threshold: float,
                batch_size: int = 64) -> dict[str, Any]:
    """F1 (all types and ORG) and cost of one TOKEE setting; ``threshold`` 0 = full depth."""
    preds, cost = model.predict(data.items, window, threshold, batch_size)
    tags = [model.token_tags(f, p) for f, p in zip(data.first, preds)]
    scores = entity_scores(data.gold, tags)
    return {"window": window, "threshold": threshold, "f1": scores["f1"],
            "f1_org": scores["per_type"].get("ORG", {}).get("f1", 0.0),
            "cost_fraction": round(cost.cost_fraction, 4), "macs_fraction": round(cost.macs_fraction, 4),
            "per_layer_fraction": [round(n / cost.tokens, 4) for n in cost.per_layer] if cost.tokens else [],
            "scores": scores}


def evaluate_tagger(model: TokenTagger, sentences: Sequence[TaggedSentence],
                    settings: Sequence[tuple[int, float]] = DEFAULT_SETTINGS, batch_size: int = 64,
                    progress: bool = False) -> dict[str, Any]:
    """The ``finsent eval-tagger`` report (one JSON-able dict)."""
    data = PreparedSet(model, sentences)
    full = run_setting(model, data, 0, 0.0, batch_size)
    rows = []
    for w, t in tqdm(settings, desc="settings", disable=not progress):
        row = run_setting(model, data, w, t, batch_size)
        row.pop("scores")
        rows.append(row)
    s = full["scores"]
    return {"n_sentences": len(sentences), "f1_full": s["f1"], "precision_full": s["precision"],
            "recall_full": s["recall"], "per_type_full": s["per_type"], "settings": rows}


def cheapest_within(report: dict[str, Any], max_loss: float) -> dict[str, Any] | None:
    """The setting with the lowest cost_fraction whose F1 is within ``max_loss`` of full depth.

    Choose on a dev set, never on the set you report.
    """
    ok = [r for r in report["settings"] if r["f1"] >= report["f1_full"] - max_loss - 1e-9]
    return min(ok, key=lambda r: (r["cost_fraction"], -r["f1"])) if ok else None
