"""Exit rules on hand-made probability sequences: first/last exit, ties, windows longer than depth."""

import math

import pytest
import torch

from models.exits import (
    ConfidenceWindow,
    Entropy,
    FullDepth,
    MaxProb,
    Patience,
    make_rule,
    normalized_entropy,
    parse_rule,
    simulate,
)


def seq(*rows):
    """[L, 1, C] from per-layer probability rows of one sample."""
    return torch.tensor(rows, dtype=torch.float32)[:, None, :]


def exit_layer(rule, *rows):
    return int(simulate(rule, seq(*rows)).exit_layer[0])


UNIFORM = (1 / 3, 1 / 3, 1 / 3)
SURE_POS = (0.01, 0.01, 0.98)
SURE_NEG = (0.98, 0.01, 0.01)
LEAN_POS = (0.1, 0.2, 0.7)  # max 0.7 >= 1/3 + 0.3, entropy ~0.73
LEAN_NEG = (0.7, 0.2, 0.1)
WEAK_POS = (0.3, 0.3, 0.4)  # max 0.4 < 1/3 + 0.3


def test_normalized_entropy_bounds():
    assert normalized_entropy(torch.tensor([UNIFORM]))[0] == pytest.approx(1.0, abs=1e-6)
    assert normalized_entropy(torch.tensor([[1.0, 0.0, 0.0]]))[0] == pytest.approx(0.0, abs=1e-6)
    p = torch.tensor([[0.5, 0.5, 0.0]])
    assert normalized_entropy(p)[0] == pytest.approx(math.log(2) / math.log(3), abs=1e-6)


def test_full_depth_always_runs_to_the_last_layer():
    assert exit_layer(FullDepth(), SURE_POS, SURE_POS, SURE_POS) == 3


def test_maxprob_first_and_last_exit():
    assert exit_layer(MaxProb(0.9), SURE_POS, UNIFORM) == 1
    assert exit_layer(MaxProb(0.9), UNIFORM, UNIFORM, LEAN_POS) == 3  # never confident: forced at L
    assert exit_layer(MaxProb(0.98), UNIFORM, (0.0, 0.02, 0.98)) == 2  # >= is inclusive


def test_entropy_threshold_is_strict():
    h = float(normalized_entropy(torch.tensor([LEAN_POS]))[0])
    assert exit_layer(Entropy(h), LEAN_POS, SURE_POS) == 2  # h < h is false
    assert exit_layer(Entropy(h + 1e-4), LEAN_POS, SURE_POS) == 1


def test_patience_counts_consecutive_agreement():
    assert exit_layer(Patience(1), WEAK_POS, SURE_NEG) == 1
    assert exit_layer(Patience(2), WEAK_POS, SURE_NEG, SURE_NEG, UNIFORM) == 3
    assert exit_layer(Patience(3), LEAN_POS, LEAN_POS, LEAN_NEG, LEAN_NEG, LEAN_NEG) == 5
    assert exit_layer(Patience(9), SURE_POS, SURE_POS, SURE_POS) == 3  # longer than depth


def test_patience_ties_resolve_to_lower_index():
    tie = (0.4, 0.4, 0.2)  # argmax -> class 0 (negative) both times
    assert exit_layer(Patience(2), tie, (0.45, 0.1, 0.45), UNIFORM) == 2


def test_cwb_confidence_stage_alone():
    rule = ConfidenceWindow(threshold=0.2, window=99, margin=0.3)
    assert exit_layer(rule, UNIFORM, SURE_NEG, UNIFORM) == 2


def test_cwb_window_stage_needs_w_consecutive_confident_same_class():
    rule = ConfidenceWindow(threshold=0.0, window=2, margin=0.3)
    assert exit_layer(rule, LEAN_POS, LEAN_POS, UNIFORM) == 2
    assert exit_layer(rule, LEAN_POS, LEAN_NEG, LEAN_NEG, UNIFORM) == 3  # class change restarts
    assert exit_layer(rule, LEAN_POS, WEAK_POS, LEAN_POS, LEAN_POS) == 4  # a weak exit breaks the run
    assert exit_layer(rule, WEAK_POS, WEAK_POS, WEAK_POS) == 3  # never confident enough


def test_cwb_window_one_and_window_longer_than_depth():
    assert exit_layer(ConfidenceWindow(0.0, 1, 0.3), LEAN_POS, UNIFORM) == 1
    assert exit_layer(ConfidenceWindow(0.0, 5, 0.3), LEAN_POS, LEAN_POS, LEAN_POS) == 3


def test_cwb_margin_boundary_is_inclusive():
    rule = ConfidenceWindow(threshold=0.0, window=2, margin=0.7 - 1 / 3)
    assert exit_layer(rule, LEAN_POS, LEAN_POS, UNIFORM) == 2
    rule = ConfidenceWindow(threshold=0.0, window=2, margin=0.7 - 1 / 3 + 1e-3)
    assert exit_layer(rule, LEAN_POS, LEAN_POS, UNIFORM) == 3


def test_cwb_binary_matches_elbert_formulation():
    # ELBERT (C=2): window fires when P(class 0) stays above 0.5 + margin (or below 0.5 - margin).
    rule = ConfidenceWindow(threshold=0.0, window=2, margin=0.2)
    probs = seq((0.75, 0.25), (0.71, 0.29), (0.5, 0.5))
    assert int(simulate(rule, probs).exit_layer[0]) == 2
    probs = seq((0.25, 0.75), (0.69, 0.31), (0.75, 0.25), (0.8, 0.2))
    assert int(simulate(rule, probs).exit_layer[0]) == 4


def test_simulate_handles_a_batch_independently():
    all_probs = torch.stack([
        torch.tensor([SURE_POS, UNIFORM]), torch.tensor([SURE_POS, UNIFORM]), torch.tensor([UNIFORM, UNIFORM]),
    ]).float()
    sim = simulate(MaxProb(0.9), all_probs)
    assert sim.exit_layer.tolist() == [1, 3]
    assert sim.pred.tolist() == [2, 0]


def test_parse_and_make_rule():
    assert parse_rule("cwb:threshold=0.1,window=3,margin=0.25") == ConfidenceWindow(0.1, 3, 0.25)
    assert parse_rule("entropy:0.3") == Entropy(0.3)
    assert parse_rule("patience:2") == Patience(2)
    assert isinstance(parse_rule("patience:2").patience, int)
    assert parse_rule("full") == FullDepth()
    with pytest.raises(ValueError, match="unknown exit rule"):
        make_rule("nope")
