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
    assert {v["rival"] for v in report["cwb_against_rivals"]} <= {"entropy", "maxprob", "patience"}


def test_macro_f1_equals_sklearn_even_with_a_class_never_predicted() -> None:
    from models.scoring import macro_f1

    for seed in range(5):
        pred, gold = _noisy(200, 0.6, seed)
        if seed == 4:
            pred = torch.where(pred == 2, torch.zeros_like(pred), pred)  # class 2 never predicted
        expected = f1_score(gold.numpy(), pred.numpy(), average="macro", labels=[0, 1, 2], zero_division=0)
        assert abs(macro_f1(pred.numpy(), gold.numpy(), 3) - expected) < 1e-12


def test_paired_difference_counts_only_the_texts_where_two_predictors_disagree() -> None:
    from models.evaluate import paired_difference

    first = torch.tensor([True] * 50 + [True] * 30 + [False] * 10 + [False] * 10)
    second = torch.tensor([True] * 50 + [False] * 30 + [True] * 10 + [False] * 10)
    d = paired_difference(first, second)
    assert (d["texts"], d["first_only"], d["second_only"], d["diff"]) == (20, 30, 10, 0.2)
    assert 0 < d["ci95"][0] < 0.2 < d["ci95"][1] and d["verdict"] == "above"
    assert paired_difference(second, first)["verdict"] == "below"
    one_apart = paired_difference(torch.ones(80, dtype=torch.bool), torch.arange(80) > 0)
    assert one_apart["texts"] == 1 and one_apart["verdict"] == "tie", one_apart
    same = paired_difference(first, first)
    assert (same["texts"], same["ci95"], same["verdict"]) == (0, [0.0, 0.0], "tie")


def _random_exit_probs(layers: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exits that grow more confident and more often right with depth: [L, N, C], gold [N]."""
    g = torch.Generator().manual_seed(seed)
    gold = torch.randint(0, 3, (n,), generator=g)
    logits = torch.stack([torch.randn(n, 3, generator=g) + (1 + layer) * torch.nn.functional.one_hot(gold, 3)
                          for layer in range(layers)])
    return logits.softmax(-1), gold


def test_cwb_against_rivals_pits_each_frontier_setting_against_the_other_on_the_same_texts() -> None:
    from models.evaluate import cwb_against_rivals, frontier_at, frontier_row, rule_rows
    from models.exits import default_sweep, make_rule, simulate

    probs, gold = _random_exit_probs(6, 400, seed=3)
    rows = rule_rows(probs, gold, default_sweep(6))
    entries = cwb_against_rivals(probs, gold, rows)
    assert {e["rival"] for e in entries} == {"entropy", "maxprob", "patience"}
    for e in entries:
        cost, rival = e["avg_exit_layer"], e["rival"]
        assert e["cwb"]["accuracy"] == frontier_at(rows, "cwb", cost)
        assert e["rival_setting"] == {k: frontier_row(rows, rival, cost)[k] for k in ("params", "accuracy", "avg_exit_layer")}
        assert e["rival_setting"]["avg_exit_layer"] <= cost and e["cwb"]["avg_exit_layer"] <= cost
        right = {name: simulate(make_rule(name, **s["params"]), probs).pred == gold
                 for name, s in (("cwb", e["cwb"]), (rival, e["rival_setting"]))}
        assert e["texts"] == int(right["cwb"].sum() - right[rival].sum()) == e["cwb_only"] - e["rival_only"]
        assert e["cwb_only"] == int((right["cwb"] & ~right[rival]).sum())


def test_the_frontier_setting_is_the_most_accurate_within_the_cost_and_the_cheaper_on_a_tie() -> None:
    from models.evaluate import frontier_row

    rows = [{"rule": "x", "params": {"k": k}, "accuracy": acc, "avg_exit_layer": cost}
            for k, (acc, cost) in enumerate([(0.80, 1.2), (0.85, 2.4), (0.85, 1.9), (0.90, 3.1)])]
    assert frontier_row(rows, "x", 1.0) is None
    assert frontier_row(rows, "x", 1.5)["params"] == {"k": 0}
    assert frontier_row(rows, "x", 3.0)["params"] == {"k": 2}
    assert frontier_row(rows, "x", 3.1)["params"] == {"k": 3}
    assert frontier_row(rows, "y", 6.0) is None
