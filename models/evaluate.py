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
from models.exits import ExitRule, default_sweep, make_rule, simulate
from models.scoring import exit_probabilities, expected_calibration_error, macro_f1

COST_POINTS = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0)


def _metrics(pred: torch.Tensor, gold: torch.Tensor) -> tuple[float, float]:
    acc = float((pred == gold).float().mean())
    return round(acc, 4), round(macro_f1(pred.numpy(), gold.numpy(), 3), 4)


def _percentile_interval(stat: Any, *samples: np.ndarray, n_resamples: int, seed: int) -> list[float]:
    """95% percentile-bootstrap interval of ``stat`` over texts (samples resampled in pairs, seeded)."""
    res = bootstrap(samples, stat, paired=True, vectorized=False, n_resamples=n_resamples,
                    method="percentile", random_state=np.random.default_rng(seed))  # fmt: skip
    return [round(float(res.confidence_interval.low), 4), round(float(res.confidence_interval.high), 4)]


def confidence_intervals(pred: torch.Tensor, gold: torch.Tensor, n_resamples: int = 1000,
                         seed: int = 0) -> dict[str, list[float]]:
    """95% percentile-bootstrap intervals of accuracy and macro-F1 over the texts (resampled in
    pairs, seeded). pred, gold [N]. On an evaluation set of a few thousand texts macro-F1's
    interval spans a few points: two models closer than that are not told apart by it."""
    p, g = pred.numpy(), gold.numpy()
    return {
        "accuracy": _percentile_interval(lambda a, b: float((a == b).mean()), p, g,
                                         n_resamples=n_resamples, seed=seed),
        "macro_f1": _percentile_interval(lambda a, b: macro_f1(a, b, 3), p, g, n_resamples=n_resamples, seed=seed),
    }


def paired_difference(first_correct: torch.Tensor, second_correct: torch.Tensor, n_resamples: int = 1000,
                      seed: int = 0) -> dict[str, Any]:
    """How much more accurate the first of two predictors is than the second on the same texts.

    first_correct, second_correct: [N] bool. Only the texts where they disagree move the difference,
    so it is reported in texts, as the two discordant counts, and as an accuracy difference with a
    95% paired-bootstrap interval; ``verdict`` is ``above``/``below`` only when that interval
    excludes 0, else ``tie``.
    """
    a, b = first_correct.numpy().astype(bool), second_correct.numpy().astype(bool)
    ci = _percentile_interval(lambda x, y: float(x.mean() - y.mean()), a.astype(float), b.astype(float),
                              n_resamples=n_resamples, seed=seed)
    verdict = "above" if ci[0] > 0 else "below" if ci[1] < 0 else "tie"
    return {"texts": int(a.sum()) - int(b.sum()), "first_only": int((a & ~b).sum()),
            "second_only": int((~a & b).sum()), "diff": round(float(a.mean() - b.mean()), 4), "ci95": ci,
            "verdict": verdict}


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


def frontier_row(rows: list[dict[str, Any]], rule: str, cost: float) -> dict[str, Any] | None:
    """The setting of ``rule`` with the best accuracy at average exit layer <= ``cost`` (the cheaper
    one on a tie); None if no setting is that cheap."""
    fits = [r for r in rows if r["rule"] == rule and r["avg_exit_layer"] <= cost + 1e-9]
    return max(fits, key=lambda r: (r["accuracy"], -r["avg_exit_layer"]), default=None)


def frontier_at(rows: list[dict[str, Any]], rule: str, cost: float) -> float | None:
    """Best accuracy a rule reaches with average exit layer <= ``cost`` (None if it cannot)."""
    row = frontier_row(rows, rule, cost)
    return None if row is None else row["accuracy"]


def comparison(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Accuracy of every rule's frontier at equal average exit layer."""
    names = sorted({r["rule"] for r in rows} - {"full"})
    return [{"avg_exit_layer": c, **{n: frontier_at(rows, n, c) for n in names}} for c in COST_POINTS]


def cwb_against_rivals(all_probs: torch.Tensor, gold: torch.Tensor, rows: list[dict[str, Any]],
                       rivals: tuple[str, ...] = ("entropy", "maxprob", "patience")) -> list[dict[str, Any]]:
    """At every cost point, CWB's frontier setting against each rival's, on the same texts.

    all_probs [L, N, C], gold [N], rows from ``rule_rows`` over the same data. A frontier is a
    maximum over a sweep, so a one-text lead either way is noise; ``paired_difference`` says which
    leads are not.
    """
    correct: dict[ExitRule, torch.Tensor] = {}

    def is_correct(row: dict[str, Any]) -> torch.Tensor:
        rule = make_rule(row["rule"], **row["params"])
        if rule not in correct:
            correct[rule] = simulate(rule, all_probs).pred == gold
        return correct[rule]

    def setting(row: dict[str, Any]) -> dict[str, Any]:
        return {k: row[k] for k in ("params", "accuracy", "avg_exit_layer")}

    out = []
    for cost in COST_POINTS:
        cwb = frontier_row(rows, "cwb", cost)
        for rival in rivals:
            other = frontier_row(rows, rival, cost)
            if cwb is None or other is None:
                continue
            diff = paired_difference(is_correct(cwb), is_correct(other))
            out.append({"avg_exit_layer": cost, "rival": rival, "cwb": setting(cwb), "rival_setting": setting(other),
                        "texts": diff["texts"], "cwb_only": diff["first_only"], "rival_only": diff["second_only"],
                        "diff": diff["diff"], "ci95": diff["ci95"], "verdict": diff["verdict"]})
    return out


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
    conf = all_probs.max(-1).values  # [L, N]
    right = all_probs.argmax(-1) == gold  # [L, N]
    confident = [int((conf[i] >= 0.9).sum()) for i in range(model.num_layers)]
    return {
        "n": len(data), "model": model.config.version, "accuracy": acc, "macro_f1": f1,
        "ci95": confidence_intervals(pred, gold),
        "f1_per_class": {label: round(float(v), 4) for label, v in zip(model.labels, per_class)},
        "accuracy_per_exit": per_exit,
        "ece_per_exit": [round(expected_calibration_error(all_probs[i], gold), 4) for i in range(model.num_layers)],
        # how often an exit that is >= 90 % sure is right (None: never that sure)
        "accuracy_when_confident_per_exit": [
            round(float(right[i][conf[i] >= 0.9].double().mean()), 4) if confident[i] else None
            for i in range(model.num_layers)],
        "share_confident_per_exit": [round(c / len(data), 4) for c in confident],
        "rules": rows, "comparison": comparison(rows),
        "cwb_against_rivals": cwb_against_rivals(all_probs, gold, rows),
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
