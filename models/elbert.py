"""ELBERT: an encoder with an exit classifier after every layer.

    text -> tokens [B, T] -> embed -> layer 1 -> head 1 -> logits [B, C]
                                   -> layer 2 -> head 2 -> logits [B, C]
                                   ...
                                   -> layer L -> head L -> logits [B, C]

A head is ``pool -> dropout -> linear``. ``pooling`` is ``"cls"`` (first token, as in ELBERT) or
``"mean"`` (mask-aware mean over tokens; all-MiniLM-L6-v2 was trained as a mean-pooling sentence
encoder, so its shallow layers carry far more signal in the mean than in [CLS]). ``shared_head``
uses ONE head for every layer as ELBERT does (no extra parameters per layer); otherwise each layer
has its own head.

Construction on a backbone, LoRA, and the artifact (``config.json``, ``heads.safetensors``,
``adapter/``) come from :class:`models.base.EarlyExitModel`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tokenizers import Tokenizer
from torch import nn

from models.backbone import DEFAULT_BACKBONE, Backbone, additive_mask
from models.base import EarlyExitModel
from models.text import NORMALIZATION, normalize

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
DEFAULT_MODEL_DIR = Path(__file__).parent / "artifacts" / "elbert-minilm-tfns"


@dataclass
class ElbertConfig:
    """Everything needed to rebuild the classifier around its base backbone."""

    base: str = DEFAULT_BACKBONE
    labels: list[str] = field(default_factory=lambda: list(LABELS))
    pooling: str = "mean"
    shared_head: bool = False
    dropout: float = 0.1
    max_length: int = 128
    lora: dict[str, Any] | None = None
    default_rule: dict[str, Any] = field(default_factory=lambda: {"rule": "full", "params": {}})
    # Per-exit additive logit bias [L][C], tuned on dev after training (None: no bias). Shifts
    # decisions towards the minority classes, which the joint loss under-predicts.
    logit_bias: list[list[float]] | None = None
    # Per-exit temperature [L], fitted on dev after the biases (None: 1). Scaling leaves every
    # exit's argmax alone and makes its confidence honest, which is what confidence-based exit
    # rules (CWB) read.
    temperature: list[float] | None = None
    # Text normalisation applied before tokenising (models/text.py): "finsent-v1" turns emoji
    # into words; None for models trained on raw text. Recorded with the model, so training and
    # every inference path read the same text.
    text_normalization: str | None = None
    version: str = "untrained"
    info: dict[str, Any] = field(default_factory=dict)


class ElbertClassifier(EarlyExitModel):
    """Backbone + per-layer exit heads. Shapes: tokens [B, T]; hidden [B, T, H]; logits [B, C]."""

    config_cls = ElbertConfig
    default_dir = DEFAULT_MODEL_DIR
    artifact_kind = "model"
    config: ElbertConfig

    def __init__(self, backbone: Backbone, config: ElbertConfig, tokenizer: PreTrainedTokenizerBase | None):
        if config.pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', not {config.pooling!r}")
        super().__init__(backbone, config, tokenizer, 1 if config.shared_head else backbone.num_layers)
        bias = torch.tensor(config.logit_bias) if config.logit_bias else torch.zeros(self.num_layers, len(self.labels))
        self.register_buffer("logit_bias", bias.float(), persistent=False)
        temp = torch.tensor(config.temperature) if config.temperature else torch.ones(self.num_layers)
        self.register_buffer("inv_temperature", 1.0 / temp.float(), persistent=False)
        if config.text_normalization not in (None, NORMALIZATION):
            raise ValueError(f"unknown text_normalization {config.text_normalization!r} (this version: {NORMALIZATION!r})")

    def set_logit_bias(self, bias: torch.Tensor) -> None:
        """bias [L, C]: added to each exit's logits (calibration; stored in config.json)."""
        self.config.logit_bias = [[round(float(v), 4) for v in row] for row in bias]
        self.logit_bias.copy_(torch.tensor(self.config.logit_bias))

    def set_temperature(self, temperature: torch.Tensor) -> None:
        """temperature [L]: each exit's (biased) logits are divided by it (stored in config.json)."""
        self.config.temperature = [round(float(v), 4) for v in temperature]
        self.inv_temperature.copy_(1.0 / torch.tensor(self.config.temperature))

    # ----------------------------------------------------------------- forward pieces
    def head_index(self, depth: int) -> int:
        """Head used after layer ``depth`` (1-based)."""
        return 0 if self.config.shared_head else depth - 1

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """hidden [B, T, H], attention_mask [B, T] -> [B, H]."""
        if self.config.pooling == "cls":
            return hidden[:, 0]
        m = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)

    def exit_logits(self, hidden: torch.Tensor, attention_mask: torch.Tensor, depth: int | torch.Tensor) -> torch.Tensor:
        """Logits [B, C] of the exit after layer ``depth`` (an int, or a [B] tensor of 1-based depths)."""
        pooled = self.dropout(self.pool(hidden, attention_mask))
        if isinstance(depth, int):
            logits = self.heads[self.head_index(depth)](pooled) + self.logit_bias[depth - 1].to(pooled.dtype)
            return logits * self.inv_temperature[depth - 1].to(pooled.dtype)
        calib = self.logit_bias[depth - 1].to(pooled.dtype)  # [B, C]
        scale = self.inv_temperature[depth - 1].to(pooled.dtype).unsqueeze(-1)  # [B, 1]
        if self.config.shared_head:
            return (self.heads[0](pooled) + calib) * scale
        weight = torch.stack([h.weight for h in self.heads])[depth - 1]  # [B, C, H]
        bias = torch.stack([h.bias for h in self.heads])[depth - 1]  # [B, C]
        return (torch.einsum("bh,bch->bc", pooled, weight) + bias + calib) * scale

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Training forward: logits of every exit, [L, B, C]."""
        hidden = self.backbone.embed(input_ids)
        mask = additive_mask(attention_mask, hidden.dtype)
        out = []
        for depth in range(self.num_layers):
            hidden = self.backbone.run_layer(self.backbone.layer_key(depth), hidden, mask)
            out.append(self.exit_logits(hidden, attention_mask, depth + 1))
        return torch.stack(out)

    # ----------------------------------------------------------------- tokenization
    def encode(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
        """Token ids per text (truncated to ``max_length``) and whether each one was truncated."""
        if self.tokenizer is None:
            raise RuntimeError("this classifier has no tokenizer")
        if self.config.text_normalization == NORMALIZATION:
            texts = [normalize(t) for t in texts]
        raw = self._raw_tokenizer()
        if raw is not None:
            enc = [e.ids for e in raw.encode_batch(list(texts), add_special_tokens=True)]
        else:
            enc = self.tokenizer(list(texts), truncation=False, add_special_tokens=True)["input_ids"]
        limit = self.config.max_length
        ids = [e if len(e) <= limit else e[: limit - 1] + e[-1:] for e in enc]
        return ids, [len(e) > limit for e in enc]

    def _raw_tokenizer(self) -> Tokenizer | None:
        """The fast tokenizer's Rust core, without truncation or padding, or None (slow tokenizer).

        Calling it directly skips the transformers wrapper's per-text Python conversion, the bulk
        of the tokenisation cost on the worker's event loop; the ids are the same.
        """
        cached = self.__dict__.get("_raw")
        if cached is None or cached[0] is not self.tokenizer:
            backend = getattr(self.tokenizer, "backend_tokenizer", None)
            raw = None
            if isinstance(backend, Tokenizer):
                raw = Tokenizer.from_str(backend.to_str())
                raw.no_truncation()
                raw.no_padding()
            cached = (self.tokenizer, raw)
            self.__dict__["_raw"] = cached
        return cached[1]

    @staticmethod
    def pad(ids: list[list[int]], pad_id: int = 0, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad token lists -> input_ids [B, T], attention_mask [B, T]."""
        width = max(len(x) for x in ids)
        # one tensor from nested lists: much cheaper than filling rows one by one, on the engine thread
        input_ids = torch.tensor([x + [pad_id] * (width - len(x)) for x in ids], dtype=torch.long)
        attention = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], dtype=torch.long)
        return input_ids.to(device), attention.to(device)

    def quantize_int8(self) -> ElbertClassifier:
        """Dynamic int8 quantization of every Linear (CPU inference only); returns self."""
        import warnings

        # torch deprecates torch.ao.quantization (import and quantize_dynamic: DeprecationWarning)
        # and the quantized-tensor constructors it calls (quantize_per_tensor: UserWarning, which
        # `finsent score --quantize int8` printed). Its replacement is the separate torchao package;
        # torch itself (2.13) has no other dynamic int8 Linear for CPU. Silence exactly those
        # warnings, here only; the quantized model itself runs without any.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r"torch\.ao\.quantization is deprecated", DeprecationWarning)
            warnings.filterwarnings("ignore", r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other "
                                    r"quantized tensor creation functions .* are deprecated", UserWarning)
            from torch.ao.quantization import quantize_dynamic

            quantize_dynamic(self, {nn.Linear}, dtype=torch.qint8, inplace=True)
        self.config.version += "+int8"
        return self
