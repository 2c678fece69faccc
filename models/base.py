"""What every finsent model shares: a backbone, one linear head per exit, LoRA, and the artifact.

``ElbertClassifier`` (a sequence label after every layer) and ``TokenTagger`` (a BIO tag per token
after every layer) differ in their heads' inputs and in how they decide to stop; how they are
built on a backbone, fine-tuned with LoRA, saved and loaded is the same and lives here.

An artifact directory, a few MB in all:

    config.json          the model's dataclass config (names the base backbone)
    heads.safetensors    the exit/token heads
    adapter/             the LoRA adapter (peft), when the backbone was fine-tuned
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

from safetensors.torch import load_file, save_file
from torch import nn

from models.backbone import DEFAULT_BACKBONE, Backbone, load_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class EarlyExitModel(nn.Module):
    """Backbone + ``n_heads`` linear heads (hidden size -> number of labels) behind one dropout.

    Subclasses set ``config_cls`` (a dataclass with at least ``base``, ``labels``, ``dropout`` and
    ``lora``), ``default_dir`` (the shipped artifact) and ``artifact_kind`` (named in errors).
    """

    config_cls: ClassVar[type]
    default_dir: ClassVar[Path]
    artifact_kind: ClassVar[str]

    def __init__(self, backbone: Backbone, config: Any, tokenizer: PreTrainedTokenizerBase | None, n_heads: int):
        super().__init__()
        self.backbone = backbone
        self.config = config
        self.tokenizer = tokenizer
        self.labels = list(config.labels)
        self.num_layers = backbone.num_layers
        self.heads = nn.ModuleList(nn.Linear(backbone.hidden_size, len(self.labels)) for _ in range(n_heads))
        self.dropout = nn.Dropout(config.dropout)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_backbone(cls, base: str | Path = DEFAULT_BACKBONE, **overrides: Any) -> Self:
        """A fresh model (untrained heads) on a local backbone; ``overrides`` set config fields."""
        config = cls.config_cls(base=str(base), **overrides)
        return cls(Backbone.from_pretrained(base), config, load_tokenizer(base))  # type: ignore[call-arg]

    def add_lora(self, r: int = 16, alpha: int = 32, dropout: float = 0.05,
                 targets: tuple[str, ...] = ("query", "key", "value", "dense")) -> None:
        """Freeze the backbone and train low-rank adapters on ``targets`` (peft)."""
        self.config.lora = self.backbone.add_lora(r, alpha, dropout, targets)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id or 0) if self.tokenizer is not None else 0

    # ----------------------------------------------------------------- persistence
    def save(self, out_dir: str | Path) -> Path:
        """Write the artifact (config.json, heads.safetensors, adapter/ when LoRA is on)."""
        from peft import PeftModel

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.heads.state_dict().items()},
                  str(out / "heads.safetensors"))
        if isinstance(self.backbone.model, PeftModel):
            for peft_config in self.backbone.model.peft_config.values():
                # the base's name, not this machine's path, so the artifact loads anywhere
                peft_config.base_model_name_or_path = str(self.config.base)
            self.backbone.model.save_pretrained(str(out / "adapter"))
        (out / "config.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        return out

    @classmethod
    def load(cls, model_dir: str | Path | None = None, merge: bool = True, backbone: Backbone | None = None,
             tokenizer: PreTrainedTokenizerBase | None = None) -> Self:
        """Load an artifact (default: the shipped one). ``merge`` folds the LoRA adapter into the
        weights (faster inference).

        ``backbone``/``tokenizer`` override the base named in config.json (tests use tiny random
        backbones); with a given backbone and no tokenizer the model has none.
        """
        path = Path(model_dir) if model_dir is not None else cls.default_dir
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a finsent {cls.artifact_kind} directory (no config.json)")
        config = cls.config_cls(**json.loads((path / "config.json").read_text()))
        if backbone is None:
            backbone = Backbone.from_pretrained(config.base)
            tokenizer = tokenizer or load_tokenizer(config.base)
        if (path / "adapter").is_dir():
            from peft import PeftModel

            with warnings.catch_warnings():
                # peft asks transformers >= 5.2x for a deprecated property while loading; nothing
                # of ours to change, and every `finsent score` printed it
                warnings.filterwarnings("ignore", r"`is_gradient_checkpointing` is deprecated", FutureWarning)
                peft_model = PeftModel.from_pretrained(backbone.model, str(path / "adapter"))
            backbone.model = peft_model.merge_and_unload() if merge else peft_model
        model = cls(backbone, config, tokenizer)  # type: ignore[call-arg]
        model.heads.load_state_dict(load_file(str(path / "heads.safetensors")))
        return model.eval()
