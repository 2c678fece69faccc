"""Accuracy against cost for every exit rule, and how far the full-depth figures can be trusted.

All exits' probabilities are computed once ([L, N, C]); each rule setting is then replayed over
them with ``exits.simulate`` (the same ``step`` the engine calls), so a sweep of 60 settings
costs one forward pass. Cost is the average exit layer; ``speedup = L / avg_exit_layer``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import bootstrap
from sklearn.metrics import f1_score

from models.datasets import LabelledTexts
from models.elbert import ElbertClassifier
from models.exits import ExitRule, default_sweep, simulate
from models.train import exit_probabilities, macro_f1

COST_POINTS = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0)


def _metrics(pred: torch.Tensor, gold: torch.Tensor) -> tuple[float, float]:
    acc = float((pred == gold).float().mean())
    return round(acc, 4), round(macro_f1(pred.numpy(), gold.numpy(), 3), 4)


def confidence_intervals(pred: torch.Tensor, gold: torch.Tensor, n_resamples: int = 1000,
                         seed: int = 0) -> dict[str, list[float]]:
    """95% percentile-bootstrap intervals of accuracy and macro-F1 over the texts (resampled in
    pairs, seeded). pred, gold [N]. On ~1,800 texts macro-F1's interval is about +-1.7 points:
    two models closer than that are not told apart by one evaluation set."""
    p, g = pred.numpy(), gold.numpy()

    def interval(stat: Any) -> list[float]:
        res = bootstrap((p, g), stat, paired=True, vectorized=False, n_resamples=n_resamples,
                        method="percentile", random_state=np.random.default_rng(seed))  # fmt: skip
        return [round(float(res.confidence_interval.low), 4), round(float(res.confidence_interval.high), 4)]

    return {
        "accuracy": interval(lambda a, b: float((a == b).mean())),
        "macro_f1": interval(lambda a, b: macro_f1(a, b, 3)),
    }


def rule_rows(all_probs: torch.Tensor, gold: torch.Tensor, rules: list[ExitRule]) -> list[dict[str, Any]]:
    """One row per rule setting: accuracy, macro-F1, average exit layer, speedup."""
    num_layers = all_probs.shape[0]
    rows = []
    for rule in rules:
        sim = simulate(rule, all_probs)
        acc, f1 = _metrics(sim.pred, gold)
        avg = float(sim.exit_layer.float().mean())
        rows.append({"rule": rule.name, "params": rule.params(), "accuracy": acc, "macro_f1": f1,
                     "avg_exit_layer": round(avg, 4), "speedup": round(num_layers / avg, 4)})
    return rows


def frontier_at(rows: list[dict[str, Any]], rule: str, cost: float) -> float | None:
    """Best accuracy a rule reaches with average exit layer <= ``cost`` (None if it cannot)."""
    accs = [r["accuracy"] for r in rows if r["rule"] == rule and r["avg_exit_layer"] <= cost + 1e-9]
    return max(accs) if accs else None


def comparison(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Accuracy of every rule's frontier at equal average exit layer."""
    names = sorted({r["rule"] for r in rows} - {"full"})
    return [{"avg_exit_layer": c, **{n: frontier_at(rows, n, c) for n in names}} for c in COST_POINTS]


def fastest_within(rows: list[dict[str, Any]], full_accuracy: float, loss: float) -> dict[str, Any]:
    """Per rule, the fastest setting whose accuracy is within ``loss`` of full depth."""
    out: dict[str, Any] = {}
    for r in rows:
        if r["rule"] == "full" or r["accuracy"] < full_accuracy - loss - 1e-9:
            continue
        if r["rule"] not in out or r["speedup"] > out[r["rule"]]["speedup"]:
            out[r["rule"]] = {"params": r["params"], "accuracy": r["accuracy"], "speedup": r["speedup"],
                              "avg_exit_layer": r["avg_exit_layer"]}
    return out


def choose_default_rule(report: dict[str, Any], max_loss: float = 0.005, rule: str = "cwb") -> dict[str, Any]:
    """The fastest ``rule`` setting whose accuracy is within ``max_loss`` of full depth.

    Run it on a dev split, never on the set you report: the chosen rule is part of the model.
    """
    best = fastest_within(report["rules"], report["accuracy"], max_loss).get(rule)
    if best is None:
        return {"rule": "full", "params": {}}
    return {"rule": rule, "params": best["params"]}


def evaluate(model: ElbertClassifier, data: LabelledTexts, rules: list[ExitRule] | None = None,
             progress: bool = False) -> dict[str, Any]:
    """The ``finsent eval`` report (one JSON-able dict)."""
    ids, _ = model.encode(data.texts)
    device = str(next(model.parameters()).device)
    all_probs = exit_probabilities(model, ids, device=device, progress=progress)
    gold = torch.tensor(data.labels)
    pred = all_probs[-1].argmax(-1)
    acc, f1 = _metrics(pred, gold)
    per_class = f1_score(gold.numpy(), pred.numpy(), average=None, labels=[0, 1, 2], zero_division=0)
    rows = rule_rows(all_probs, gold, rules or default_sweep(model.num_layers))
    per_exit = [_metrics(all_probs[i].argmax(-1), gold)[0] for i in range(model.num_layers)]
    return {
        "n": len(data), "model": model.config.version, "accuracy": acc, "macro_f1": f1,
        "ci95": confidence_intervals(pred, gold),
        "f1_per_class": {label: round(float(v), 4) for label, v in zip(model.labels, per_class)},
        "accuracy_per_exit": per_exit, "rules": rows, "comparison": comparison(rows),
        "fastest_within_1pt": fastest_within(rows, acc, 0.01),
    }


def plot(report: dict[str, Any], path: str | Path) -> Path:
    """Accuracy against average exit layer for every rule, one chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, name in enumerate(sorted({r["rule"] for r in report["rules"]} - {"full"})):
        pts = sorted((r["avg_exit_layer"], r["accuracy"]) for r in report["rules"] if r["rule"] == name)
        frontier, best = [], -1.0  # the upper envelope: best accuracy at or below each cost
        for x, y in pts:
            if y > best:
                frontier.append((x, y))
                best = y
        color = f"C{i}"
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=10, color=color, alpha=0.35)
        ax.plot([p[0] for p in frontier], [p[1] for p in frontier], "-", color=color, label=f"{name} (frontier)",
                lw=2.2 if name == "cwb" else 1.4)
    ax.axhline(report["accuracy"], color="grey", ls="--", lw=1, label="full depth")
    ax.axhline(report["accuracy"] - 0.01, color="grey", ls=":", lw=1, label="full - 1 pt")
    ax.set_xlabel("average exit layer")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{report['model']}: accuracy vs cost (n={report['n']})")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
