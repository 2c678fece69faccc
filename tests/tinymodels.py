"""Test helpers: tiny random BERT/ALBERT early-exit classifiers (no weights, no tokenizer), and the
borderline check that says which engine/reference differences are allowed."""

from __future__ import annotations

import torch
from transformers import AlbertConfig, BertConfig

from models.backbone import Backbone
from models.datasets import LabelledTexts
from models.elbert import ElbertClassifier, ElbertConfig
from models.exits import ConfidenceWindow, Entropy, ExitRule, MaxProb, Patience, normalized_entropy

VOCAB = 120
TOL = 1e-4


def tiny_backbone(kind: str = "bert", layers: int = 4, seed: int = 0) -> Backbone:
    torch.manual_seed(seed)
    common = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": layers, "num_attention_heads": 2,
              "intermediate_size": 64, "max_position_embeddings": 96, "hidden_dropout_prob": 0.1,
              "attention_probs_dropout_prob": 0.1}  # fmt: skip
    if kind == "albert":
        cfg = AlbertConfig(embedding_size=16, classifier_dropout_prob=0.1, **common)
    else:
        cfg = BertConfig(**common)
    return Backbone.from_config(cfg)


def tiny_classifier(kind: str = "bert", layers: int = 4, seed: int = 0, shared_head: bool = False,
                    pooling: str = "mean", head_scale: float = 3.0) -> ElbertClassifier:
    """Heads get large random weights so exit probabilities spread out and rules really fire."""
    model = ElbertClassifier(tiny_backbone(kind, layers, seed),
                             ElbertConfig(base="tiny", pooling=pooling, shared_head=shared_head, max_length=64),
                             tokenizer=None)
    return randomize_heads(model, seed + 1, head_scale)


def randomize_heads(model, seed: int, scale: float):
    """Large random head weights, so exit probabilities spread out and exit rules really fire."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for h in model.heads:
            h.weight.copy_(torch.randn(h.weight.shape, generator=g) * scale)
            h.bias.copy_(torch.randn(h.bias.shape, generator=g))
    return model.eval()


def random_ids(n: int, seed: int, min_len: int = 2, max_len: int = 40) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=g).tolist()
    return [[101 % VOCAB] + torch.randint(5, VOCAB, (k - 1,), generator=g).tolist() for k in lengths]


class IdTokenizer:
    """Texts of space-separated token ids -> those ids: train() and evaluate() tokenize, and the
    tiny models have no vocabulary."""

    pad_token_id = 0

    def __call__(self, batch, **_):
        return {"input_ids": [[int(t) for t in s.split()] for s in batch]}


def labelled_ids(model: ElbertClassifier, n: int, seed: int = 3) -> LabelledTexts:
    """``n`` random id sequences as texts with labels, and ``model`` set to read them."""
    ids = random_ids(n, seed)
    model.tokenizer = IdTokenizer()
    return LabelledTexts([" ".join(map(str, x)) for x in ids], [x[1] % 3 for x in ids])


@torch.no_grad()
def exit_probs_one(model, ids):
    x = torch.tensor([ids])
    return model(x, torch.ones_like(x)).float().softmax(-1)[:, 0]  # [L, C]


def borderline(rule: ExitRule, probs: torch.Tensor) -> bool:
    """True when some layer's deciding quantity is within TOL of its threshold.

    Only such decisions may differ between the engine and the reference: batching changes float
    rounding by ~1e-7, which can flip a comparison that sits on the threshold.
    """
    c = probs.shape[-1]
    maxp = probs.max(-1).values
    ent = normalized_entropy(probs)
    near = torch.zeros(probs.shape[0], dtype=torch.bool)
    if isinstance(rule, MaxProb):
        near = (maxp - rule.threshold).abs() < TOL
    if isinstance(rule, (Entropy, ConfidenceWindow)):
        near = (ent - rule.threshold).abs() < TOL
    if isinstance(rule, ConfidenceWindow):
        near |= (maxp - (1 / c + rule.margin)).abs() < TOL
    if isinstance(rule, (Patience, ConfidenceWindow)):
        top2 = probs.topk(2, -1).values
        near |= (top2[:, 0] - top2[:, 1]).abs() < TOL  # argmax tie
    return bool(near.any())
