"""What training and evaluation both measure: every exit's probabilities and the decision scores.

Training (early stopping, logit-bias calibration) and evaluation (``finsent eval``) import these
from here, so neither module needs the other's internals.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from models.elbert import ElbertClassifier


@torch.no_grad()
def exit_probabilities(model: ElbertClassifier, ids: list[list[int]], batch_size: int = 64,
                       device: str = "cpu", progress: bool = False, temperature: float = 1.0) -> torch.Tensor:
    """Softmax of every exit's logits / ``temperature`` for every text, [L, N, C], in length-sorted batches."""
    model.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = torch.empty(model.num_layers, len(ids), len(model.labels))
    steps = range(0, len(order), batch_size)
    for start in tqdm(steps, desc="scoring", disable=not progress, leave=False):
        idx = order[start : start + batch_size]
        x, a = model.pad([ids[i] for i in idx], model.pad_id, device)
        out[:, idx] = (model(x, a).float() / temperature).softmax(-1).cpu()
    return out


def macro_f1(pred: np.ndarray, gold: np.ndarray, num_classes: int) -> float:
    """Macro-F1 from one confusion matrix (a class never predicted nor present scores 0, as
    sklearn's ``zero_division=0``); fast enough for grid searches and bootstraps. pred, gold [N]."""
    conf = np.bincount(gold * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)
    tp = np.diag(conf)
    return float(np.mean(2 * tp / np.maximum(conf.sum(0) + conf.sum(1), 1)))


def decision_score(pred: np.ndarray, gold: np.ndarray, num_classes: int) -> float:
    """Accuracy + macro-F1 of pred [N] against gold [N]: the dev score biases and candidates are chosen by."""
    return float((pred == gold).mean()) + macro_f1(pred, gold, num_classes)


def expected_calibration_error(probs: torch.Tensor, gold: torch.Tensor, bins: int = 15) -> float:
    """ECE of probs [N, C] against gold [N]: the mean |accuracy - confidence| over equal-width
    confidence bins, weighted by the share of samples in each bin."""
    conf, pred = probs.double().max(-1)
    right = (pred == gold).double()
    # bin b holds confidences in (b/bins, (b+1)/bins]
    idx = (torch.ceil(conf * bins).long() - 1).clamp(0, bins - 1)
    count = torch.bincount(idx, minlength=bins).double()
    gap = (torch.bincount(idx, weights=right, minlength=bins) - torch.bincount(idx, weights=conf, minlength=bins)).abs()
    return float(gap.sum() / count.sum().clamp_min(1.0))
