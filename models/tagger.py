"""TokenTagger: a BIO token classifier after every encoder layer, with TOKEE token-level exit.

    words -> subwords [B, T] -> embed -> layer 1 -> head 1 -> logits [B, T, C]
                                      -> layer 2 -> head 2 -> logits [B, T, C]
                                      ...   (a halted word's tokens are copied, not computed)
                                      -> layer L -> head L -> logits [B, T, C]

A head is ``dropout -> linear`` on each token's hidden state. The halting rule, the layer math
for active tokens and the cost accounting live in ``models.tokee``.

Words and subwords. A word is one pre-tokenizer word of the fast tokenizer (whitespace and
punctuation split, e.g. ``U.S.`` -> ``U . S .``). Raw text is cut that way by the tokenizer
itself (``word_ids``); a CoNLL token is cut with the same pre-tokenizer into pieces, the first
piece carrying the token's tag and later pieces ``I-X`` (``O`` for ``O``). So training and raw
text see identical words. Only a word's FIRST subword is labelled (-100 elsewhere) and predicts
the word; a CoNLL token's prediction is its first piece's.

Construction on a backbone, LoRA, and the artifact come from :class:`models.base.EarlyExitModel`;
the tagger's ``config.json`` also records its default exit setting and the training data's licence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from models.backbone import DEFAULT_BACKBONE, Backbone, additive_mask
from models.base import EarlyExitModel
from models.conll import BIO_LABELS, IGNORE_TAG
from models.spans import bio_spans
from models.tokee import Cost, active_bert_layer, halting_step, layer_macs, normalized_entropy

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DEFAULT_TAGGER_DIR = Path(__file__).parent / "artifacts" / "tagger-minilm-finer"
IGNORE = -100


@dataclass
class TaggerConfig:
    """Everything needed to rebuild the tagger around its base backbone."""

    base: str = DEFAULT_BACKBONE
    labels: list[str] = field(default_factory=lambda: list(BIO_LABELS))
    dropout: float = 0.1
    max_length: int = 256
    lora: dict[str, Any] | None = None
    window: int = 1  # default TOKEE setting used when a caller gives none
    threshold: float = 0.0  # 0: full depth
    data_license: str = ""
    version: str = "untrained"
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Encoded:
    """One sequence for the tagger.

    ids, units, labels: per subword token [T]. units: the word each token belongs to ([CLS] -> the
    first word, [SEP] -> the last, -1 none). word_pos: per word [W], position of its first subword
    (-1: the word has no subword, e.g. cut by ``max_length``). word_chars: per word, its [start,
    end) characters in the raw text (raw text only).
    """

    ids: list[int]
    units: list[int]
    word_pos: list[int]
    labels: list[int] | None = None
    word_chars: list[tuple[int, int]] | None = None


@dataclass
class TaggerBatch:
    """Padded batch. input_ids/attention_mask/units/labels [B, T]; word_pos/word_valid [B, W]."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    units: torch.Tensor  # -1 on padding
    word_pos: torch.Tensor  # 0 where invalid
    word_valid: torch.Tensor
    labels: torch.Tensor | None = None

    @classmethod
    def collate(cls, items: Sequence[Encoded], pad_id: int = 0, device: torch.device | str = "cpu") -> TaggerBatch:
        b = len(items)
        t = max(len(e.ids) for e in items)
        w = max(max(len(e.word_pos) for e in items), 1)
        ids = torch.full((b, t), pad_id, dtype=torch.long)
        att = torch.zeros((b, t), dtype=torch.long)
        units = torch.full((b, t), -1, dtype=torch.long)
        pos = torch.zeros((b, w), dtype=torch.long)
        valid = torch.zeros((b, w), dtype=torch.bool)
        has_labels = all(e.labels is not None for e in items)
        labels = torch.full((b, t), IGNORE, dtype=torch.long) if has_labels else None
        for i, e in enumerate(items):
            n = len(e.ids)
            ids[i, :n] = torch.tensor(e.ids)
            att[i, :n] = 1
            units[i, :n] = torch.tensor(e.units)
            wp = torch.tensor(e.word_pos, dtype=torch.long)
            if len(wp):
                valid[i, : len(wp)] = wp >= 0
                pos[i, : len(wp)] = wp.clamp_min(0)
            if labels is not None:
                labels[i, :n] = torch.tensor(e.labels)
        return cls(ids.to(device), att.to(device), units.to(device), pos.to(device), valid.to(device),
                   None if labels is None else labels.to(device))


@dataclass
class TokeeOutput:
    """Result of ``forward_tokee``.

    logits [B, T, C]: each token's logits from the layer at which it halted. word_exit [B, W]:
    1-based halting layer (0 for invalid words). word_uncertainty [L, B, W]: what the rule saw
    after each layer (frozen once a word halted). With ``collect``: per layer, logits [B, T, C],
    active [B, T] (tokens computed in that layer) and hidden [B, T, H] (after that layer).
    """

    logits: torch.Tensor
    word_exit: torch.Tensor
    word_uncertainty: torch.Tensor
    cost: Cost
    layer_logits: list[torch.Tensor] | None = None
    layer_active: list[torch.Tensor] | None = None
    layer_hidden: list[torch.Tensor] | None = None


@dataclass
class WordPredictions:
    """One sequence's per-word output: label index (-1: no subword), max-probability, exit layer."""

    labels: list[int]
    confidence: list[float]
    exit_layer: list[int]


class TokenTagger(EarlyExitModel):
    """Backbone + a token-classification head after every layer. Shapes as in ``TaggerBatch``."""

    config_cls = TaggerConfig
    default_dir = DEFAULT_TAGGER_DIR
    artifact_kind = "tagger"
    config: TaggerConfig

    def __init__(self, backbone: Backbone, config: TaggerConfig, tokenizer: PreTrainedTokenizerBase | None):
        if backbone.kind != "bert":
            raise ValueError(f"TokenTagger needs a BERT-family backbone, not {backbone.kind!r}")
        super().__init__(backbone, config, tokenizer, backbone.num_layers)
        self.intermediate_size: int = backbone.model.config.intermediate_size

    # ----------------------------------------------------------------- forward
    def layer_logits(self, hidden: torch.Tensor, depth: int) -> torch.Tensor:
        """hidden [B, T, H] after layer ``depth`` (1-based) -> logits [B, T, C]."""
        return self.heads[depth - 1](self.dropout(hidden))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Full depth through the HF layers (stage-1 training): logits of every layer, [L, B, T, C]."""
        hidden = self.backbone.embed(input_ids)
        mask = additive_mask(attention_mask, hidden.dtype)
        out = []
        for depth in range(self.num_layers):
            hidden = self.backbone.run_layer(depth, hidden, mask)
            out.append(self.layer_logits(hidden, depth + 1))
        return torch.stack(out)

    def forward_tokee(self, batch: TaggerBatch, window: int, threshold: float,
                      collect: bool = False) -> TokeeOutput:
        """Layer by layer with TOKEE halting (see ``models.tokee``); ``threshold <= 0`` = full depth.

        Halting decisions never carry gradients; with ``collect`` the per-layer logits/active
        masks are kept so that training can put a loss on every layer under the resulting masks.
        """
        key_mask = batch.attention_mask.bool()
        units = batch.units
        has_unit = units >= 0
        unit_idx = units.clamp_min(0)
        word_valid = batch.word_valid
        hidden = self.backbone.embed(batch.input_ids)
        bsz, length, _ = hidden.shape
        word_halted = ~word_valid
        tok_halted = ~(key_mask & has_unit)
        word_unc = torch.zeros(word_valid.shape, device=hidden.device)
        word_exit = torch.zeros(word_valid.shape, dtype=torch.long, device=hidden.device)
        final = torch.zeros(bsz, length, len(self.labels), device=hidden.device, dtype=hidden.dtype)
        real = key_mask.sum(1)
        cost = Cost(self.num_layers, tokens=int(real.sum()))
        h, inter = self.backbone.hidden_size, self.intermediate_size
        uncs, layer_logits, layer_active, layer_hidden = [], [], [], []
        for depth in range(self.num_layers):
            active = ~tok_halted
            n_active = active.sum(1)
            hidden = active_bert_layer(self.backbone.encoder_layers[depth], hidden, key_mask, active)
            cost.done += int(n_active.sum())
            cost.per_layer[depth] += int(n_active.sum())
            cost.macs_done += layer_macs(n_active, real, h, inter)
            cost.macs_full += layer_macs(real, real, h, inter)
            logits = self.layer_logits(hidden, depth + 1)
            final = torch.where(active[..., None], logits, final)
            with torch.no_grad():
                tok_unc = normalized_entropy(logits.detach().float().softmax(-1))  # [B, T]
                word_unc = torch.where(word_halted, word_unc, tok_unc.gather(1, batch.word_pos))
                uncs.append(word_unc)
                if depth == self.num_layers - 1:
                    now = torch.ones_like(word_halted)
                else:
                    now = halting_step(word_unc, word_valid, word_halted, window, threshold)
                word_exit[now & ~word_halted & word_valid] = depth + 1
                word_halted = now
                tok_halted = tok_halted | word_halted.gather(1, unit_idx)
            if collect:
                layer_logits.append(logits)
                layer_active.append(active)
                layer_hidden.append(hidden)
        out = TokeeOutput(final, word_exit, torch.stack(uncs), cost)
        if collect:
            out.layer_logits, out.layer_active, out.layer_hidden = layer_logits, layer_active, layer_hidden
        return out

    # ----------------------------------------------------------------- tokenization
    def _require_tokenizer(self) -> PreTrainedTokenizerBase:
        if self.tokenizer is None or not self.tokenizer.is_fast:
            raise RuntimeError("this tagger needs a fast tokenizer (offset mapping, word ids)")
        return self.tokenizer

    @staticmethod
    def _units(word_ids: list[int | None]) -> list[int]:
        units = [-1 if w is None else w for w in word_ids]
        real = [u for u in units if u >= 0]
        if real:
            if word_ids[0] is None:
                units[0] = real[0]
            if word_ids[-1] is None:
                units[-1] = real[-1]
        return units

    @staticmethod
    def _word_pos(word_ids: list[int | None], n_words: int) -> list[int]:
        pos = [-1] * n_words
        for i, w in enumerate(word_ids):
            if w is not None and pos[w] < 0:
                pos[w] = i
        return pos

    def split_words(self, tokens: Sequence[str], tags: Sequence[str] | None = None
                    ) -> tuple[list[str], list[str] | None, list[int]]:
        """CoNLL tokens -> pre-tokenizer words, their tags, and each token's first word (-1: none)."""
        pre = self._require_tokenizer().backend_tokenizer.pre_tokenizer
        words: list[str] = []
        word_tags: list[str] | None = [] if tags is not None else None
        first: list[int] = []
        for i, token in enumerate(tokens):
            pieces = [p for p, _ in pre.pre_tokenize_str(token)] if pre is not None else token.split()
            first.append(len(words) if pieces else -1)
            words += pieces
            if word_tags is not None and tags is not None:
                tag = tags[i]
                inner = tag if tag in ("O", IGNORE_TAG) else "I-" + tag[2:]
                word_tags += [tag] + [inner] * (len(pieces) - 1)
        return words, word_tags, first

    def encode_words(self, words: Sequence[str], tags: Sequence[str] | None = None) -> Encoded:
        """Pre-split words (and their BIO tags) -> Encoded, truncated to ``max_length`` subwords.

        A word tagged ``IGNORE_TAG`` (silver data: label unknown) gets no label (-100).
        """
        tok = self._require_tokenizer()
        enc = tok(list(words), is_split_into_words=True, truncation=True, max_length=self.config.max_length)
        word_ids = enc.word_ids()
        pos = self._word_pos(word_ids, len(words))
        labels = None
        if tags is not None:
            index = {name: i for i, name in enumerate(self.labels)}
            labels = [IGNORE] * len(word_ids)
            for w, p in enumerate(pos):
                if p >= 0 and tags[w] != IGNORE_TAG:
                    labels[p] = index[tags[w]]
        return Encoded(enc["input_ids"], self._units(word_ids), pos, labels)

    def encode_texts(self, texts: Sequence[str]) -> list[Encoded]:
        """Raw texts -> Encoded with character spans per word (pre-tokenizer words, offset mapping)."""
        tok = self._require_tokenizer()
        enc = tok(list(texts), truncation=True, max_length=self.config.max_length, return_offsets_mapping=True)
        out = []
        for i in range(len(texts)):
            word_ids = enc.word_ids(i)
            n_words = max((w for w in word_ids if w is not None), default=-1) + 1
            chars = [(-1, -1)] * n_words
            for w, (s, e) in zip(word_ids, enc["offset_mapping"][i]):
                if w is not None:
                    cs, ce = chars[w]
                    chars[w] = (s if cs < 0 else min(cs, s), max(ce, e))
            out.append(Encoded(enc["input_ids"][i], self._units(word_ids), self._word_pos(word_ids, n_words),
                               word_chars=chars))
        return out

    # ----------------------------------------------------------------- inference
    @torch.no_grad()
    def predict(self, items: Sequence[Encoded], window: int | None = None, threshold: float | None = None,
                batch_size: int = 64, device: str = "cpu") -> tuple[list[WordPredictions], Cost]:
        """Per-word predictions for every sequence (length-sorted batches) and the total cost."""
        window = self.config.window if window is None else window
        threshold = self.config.threshold if threshold is None else threshold
        self.eval()
        order = sorted(range(len(items)), key=lambda i: len(items[i].ids))
        out: list[WordPredictions | None] = [None] * len(items)
        total = Cost(self.num_layers)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = TaggerBatch.collate([items[i] for i in idx], self.pad_id, device)
            res = self.forward_tokee(batch, window, threshold)
            total += res.cost
            probs = res.logits.float().softmax(-1)
            word_probs = probs.gather(1, batch.word_pos[..., None].expand(-1, -1, probs.shape[-1]))  # [B, W, C]
            conf, label = word_probs.max(-1)
            label = label.masked_fill(~batch.word_valid, -1)
            for j, i in enumerate(idx):
                n = len(items[i].word_pos)
                out[i] = WordPredictions(label[j, :n].tolist(), conf[j, :n].tolist(), res.word_exit[j, :n].tolist())
        return [o for o in out if o is not None], total

    def tag_sentences(self, sentences: Sequence[Sequence[str]], window: int | None = None,
                      threshold: float | None = None, batch_size: int = 64) -> tuple[list[list[str]], Cost]:
        """BIO tags for pre-tokenized sentences (e.g. CoNLL tokens): one tag per given token."""
        split = [self.split_words(s) for s in sentences]
        preds, cost = self.predict([self.encode_words(w) for w, _, _ in split], window, threshold, batch_size)
        return [self.token_tags(first, p) for (_, _, first), p in zip(split, preds)], cost

    def token_tags(self, first: Sequence[int], pred: WordPredictions) -> list[str]:
        """Tags of the original tokens from word predictions (``first`` from ``split_words``)."""
        return [self.labels[pred.labels[f]] if f >= 0 and pred.labels[f] >= 0 else "O" for f in first]

    def org_spans(self, texts: list[str], window: int | None = None, threshold: float | None = None,
                  batch_size: int = 64, entity: str = "ORG") -> list[list[tuple[int, int, float]]]:
        """Character spans [start, end) of ``entity`` mentions in each text, with a confidence.

        Confidence = mean max-probability of the entity's words (each at its exit layer). Text
        past ``max_length`` subwords is not tagged. ``window``/``threshold`` default to the
        artifact's tuned setting.
        """
        items = self.encode_texts(texts)
        preds, _ = self.predict(items, window, threshold, batch_size)
        out: list[list[tuple[int, int, float]]] = []
        for item, p in zip(items, preds):
            tags = [self.labels[k] if k >= 0 else "O" for k in p.labels]
            spans = []
            assert item.word_chars is not None
            for kind, s, e in bio_spans(tags):
                if kind == entity:
                    conf = sum(p.confidence[s:e]) / (e - s)
                    spans.append((item.word_chars[s][0], item.word_chars[e - 1][1], round(float(conf), 4)))
            out.append(spans)
        return out
