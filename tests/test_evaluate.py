"""models/evaluate.py: the bootstrap intervals and per-class F1 that ``finsent eval`` reports."""

from __future__ import annotations

import torch
from sklearn.metrics import f1_score
from tinymodels import labelled_ids, tiny_classifier

from models.evaluate import confidence_intervals, evaluate


def _noisy(n: int, accuracy: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    gold = torch.randint(0, 3, (n,), generator=g)
    wrong = torch.rand(n, generator=g) > accuracy
    pred = torch.where(wrong, (gold + 1) % 3, gold)
    return pred, gold


def test_intervals_hold_the_estimate_and_shrink_with_more_texts() -> None:
    widths = []
    for n in (400, 3600):
        pred, gold = _noisy(n, 0.8)
        ci = confidence_intervals(pred, gold)
        acc = float((pred == gold).float().mean())
        f1 = f1_score(gold.numpy(), pred.numpy(), average="macro")
        assert ci["accuracy"][0] < acc < ci["accuracy"][1], (acc, ci)
        assert ci["macro_f1"][0] < f1 < ci["macro_f1"][1], (f1, ci)
        widths.append(ci["accuracy"][1] - ci["accuracy"][0])
    # the width of a proportion's interval goes as 1/sqrt(n): 9x the texts, about a third as wide
    assert 2.3 < widths[0] / widths[1] < 3.9, widths
    assert confidence_intervals(*_noisy(400, 0.8)) == confidence_intervals(*_noisy(400, 0.8))  # seeded


def test_a_perfect_model_has_a_point_interval() -> None:
    gold = torch.tensor([0, 1, 2] * 30)
    assert confidence_intervals(gold, gold) == {"accuracy": [1.0, 1.0], "macro_f1": [1.0, 1.0]}


def test_evaluate_reports_intervals_and_f1_per_class() -> None:
    model = tiny_classifier("bert", layers=2, head_scale=0.1)
    data = labelled_ids(model, 60)
    report = evaluate(model, data)
    assert set(report["f1_per_class"]) == set(model.labels)
    assert abs(sum(report["f1_per_class"].values()) / 3 - report["macro_f1"]) < 1e-3
    lo, hi = report["ci95"]["accuracy"]
    assert lo <= report["accuracy"] <= hi


def test_macro_f1_equals_sklearn_even_with_a_class_never_predicted() -> None:
    from models.train import macro_f1

    for seed in range(5):
        pred, gold = _noisy(200, 0.6, seed)
        if seed == 4:
            pred = torch.where(pred == 2, torch.zeros_like(pred), pred)  # class 2 never predicted
        expected = f1_score(gold.numpy(), pred.numpy(), average="macro", labels=[0, 1, 2], zero_division=0)
        assert abs(macro_f1(pred.numpy(), gold.numpy(), 3) - expected) < 1e-12
