"""TOKEE: token-level early exit for sequence labelling (Li et al., 2021, "Accelerating BERT
Inference for Sequence Labeling via Early-Exit").

Halting unit. A *word* halts, with all its subword tokens. Words are the fast tokenizer's
pre-tokenizer words (whitespace/punctuation split; see ``models.tagger``), so raw text and training
data are cut the same way. [CLS] belongs to the first word and [SEP] to the last; padding belongs
to none and is halted from the start.

Uncertainty. After layer l, word w's uncertainty u_l(w) is the normalised entropy
(entropy / log C, in [0, 1]) of the layer-l head on the word's first subword. A halted word keeps
the uncertainty (and prediction) of the layer at which it halted.

Window rule. ``window`` = k is the ONE-SIDED radius in words: word w halts after layer l when

    max { u_l(v) : v a real word of the sentence, |v - w| <= k }  <  threshold

so the window holds up to 2k + 1 words (k = 0: the word alone). ``window < 0`` (``SENTENCE``)
means the whole sentence, which makes every word halt together: sentence-level exit (SENTEE) is
the special case. ``threshold <= 0`` never halts (full depth); every word halts after the last
layer.

Halted words. Their hidden states are copied forward unchanged; they stop acting as attention
queries and skip the feed-forward block, but every real token (halted or not) is still a key and
value for the active ones. ``active_bert_layer`` writes that layer math out over the HF BertLayer's
own modules (LoRA-wrapped projections included), computing only the active rows.

Cost. ``Cost.done`` counts layer-token computations actually done (one per active token per
layer: one attention query and one FFN row); ``cost_fraction = done / (tokens * layers)``. Keys
and values are still projected for halted tokens (their copied state is what later queries
read), so ``macs_fraction`` also reports the multiply-accumulates of the encoder layers, done vs
full depth, which is the honest wall-clock proxy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self

import torch
import torch.nn.functional as F
from torch import nn

from models.exits import normalized_entropy

SENTENCE = -1  # window value meaning "the whole sentence" (sentence-level exit)

__all__ = ["SENTENCE", "Cost", "active_bert_layer", "halting_step", "layer_macs", "normalized_entropy",
           "simulate_halting", "window_max"]


def window_max(values: torch.Tensor, valid: torch.Tensor, window: int) -> torch.Tensor:
    """Max of ``values`` over the valid words within ``window`` words either side.

    values [B, W] float, valid [B, W] bool -> [B, W]. Invalid words never enter a window; an
    invalid word's own entry is meaningless (its window may be empty: -inf).
    """
    v = values.masked_fill(~valid, float("-inf"))
    width = v.shape[1]
    if window < 0 or window >= width - 1:
        return v.max(dim=1, keepdim=True).values.expand_as(v)
    if window == 0:
        return v
    return F.max_pool1d(v.unsqueeze(1), kernel_size=2 * window + 1, stride=1, padding=window).squeeze(1)


def halting_step(uncertainty: torch.Tensor, valid: torch.Tensor, halted: torch.Tensor,
                 window: int, threshold: float) -> torch.Tensor:
    """Halted words after one more layer. All [B, W]; returns bool [B, W] (invalid words: True).

    ``uncertainty`` holds this layer's value for active words and the frozen one for halted words.
    Halting is permanent.
    """
    if threshold <= 0:
        return halted | ~valid
    return halted | ~valid | (window_max(uncertainty, valid, window) < threshold)


def simulate_halting(uncertainty: torch.Tensor, valid: torch.Tensor, window: int,
                     threshold: float) -> torch.Tensor:
    """Exit layer (1-based) of every word, given each layer's uncertainties.

    uncertainty [L, B, W] (entry l is what the rule sees after layer l + 1: a halted word's value
    must already be frozen, as ``TokenTagger.forward_tokee`` records it), valid [B, W] ->
    exit layer [B, W] long, 0 for invalid words. The last layer halts everything left.
    """
    num_layers = uncertainty.shape[0]
    halted = ~valid
    exit_layer = torch.zeros(valid.shape, dtype=torch.long, device=valid.device)
    for depth in range(num_layers):
        now = halting_step(uncertainty[depth], valid, halted, window, threshold)
        if depth == num_layers - 1:
            now = torch.ones_like(now)
        exit_layer[now & ~halted] = depth + 1
        halted = now
    return exit_layer.masked_fill(~valid, 0)


@dataclass
class Cost:
    """Layer-token accounting over one or many batches."""

    num_layers: int
    tokens: int = 0  # real (non-padding) tokens seen
    done: int = 0  # layer-token computations done: active attention queries (= FFN rows)
    per_layer: list[int] = field(default_factory=list)  # ``done`` split by layer
    macs_done: float = 0.0
    macs_full: float = 0.0

    def __post_init__(self) -> None:
        if not self.per_layer:
            self.per_layer = [0] * self.num_layers

    @property
    def full(self) -> int:
        return self.tokens * self.num_layers

    @property
    def cost_fraction(self) -> float:
        return self.done / self.full if self.full else 0.0

    @property
    def macs_fraction(self) -> float:
        return self.macs_done / self.macs_full if self.macs_full else 0.0

    def __iadd__(self, other: Cost) -> Self:
        if other.num_layers != self.num_layers:
            raise ValueError("cannot add costs of models with different depths")
        self.tokens += other.tokens
        self.done += other.done
        self.per_layer = [a + b for a, b in zip(self.per_layer, other.per_layer)]
        self.macs_done += other.macs_done
        self.macs_full += other.macs_full
        return self


def layer_macs(active: torch.Tensor, real: torch.Tensor, hidden: int, intermediate: int) -> float:
    """Multiply-accumulates of one BERT layer when only ``active`` rows are queries/FFN rows.

    active/real: per-sentence counts [B] (active queries, real tokens). Q and output projections
    and the FFN scale with active rows, K/V projections with all real tokens, attention with
    active x real.
    """
    a, n = active.double(), real.double()
    h, i = float(hidden), float(intermediate)
    per = a * (2 * h * h + 2 * h * i) + n * (2 * h * h) + a * n * (2 * h)
    return float(per.sum())


def active_bert_layer(layer: nn.Module, hidden: torch.Tensor, key_mask: torch.Tensor,
                      active: torch.Tensor) -> torch.Tensor:
    """One BERT encoder layer for the active tokens only; halted rows are copied unchanged.

    layer: a transformers ``BertLayer`` (its projections may be peft LoRA modules).
    hidden [B, T, H]; key_mask [B, T] bool (real tokens: every one is a key/value);
    active [B, T] bool (tokens that still compute: queries and FFN rows) -> hidden [B, T, H].

    Active queries are packed per sentence ([B, Tq], Tq = most active tokens in one sentence) so
    attention and every dense layer run over active rows only.
    """
    active = active & key_mask
    sa = layer.attention.self
    batch, length, width = hidden.shape
    heads, head_dim = sa.num_attention_heads, sa.attention_head_size
    n_active = active.sum(1)
    tq = int(n_active.max()) if batch else 0
    if tq == 0:
        return hidden
    b_idx, t_idx = active.nonzero(as_tuple=True)  # row-major: ranks within a sentence increase
    rank = (active.cumsum(1) - 1)[b_idx, t_idx]
    x = hidden[b_idx, t_idx]  # [N, H] active rows

    k = sa.key(hidden).view(batch, length, heads, head_dim).transpose(1, 2)  # [B, h, T, d]
    v = sa.value(hidden).view(batch, length, heads, head_dim).transpose(1, 2)
    q_rows = sa.query(x)  # [N, H]
    q = q_rows.new_zeros(batch, tq, width).index_put((b_idx, rank), q_rows)
    q = q.view(batch, tq, heads, head_dim).transpose(1, 2)  # [B, h, Tq, d]
    bias = (~key_mask)[:, None, None, :].to(hidden.dtype) * torch.finfo(hidden.dtype).min  # [B,1,1,T]
    ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=sa.scaling,
                                         dropout_p=sa.dropout.p if sa.training else 0.0)
    ctx = ctx.transpose(1, 2).reshape(batch, tq, width)[b_idx, rank]  # [N, H]

    so = layer.attention.output
    attn = so.LayerNorm(so.dropout(so.dense(ctx)) + x)
    inter = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(attn))
    out = layer.output.LayerNorm(layer.output.dropout(layer.output.dense(inter)) + attn)
    return hidden.index_put((b_idx, t_idx), out)
