"""The on-disk layout every finsent model shares, a few MB in all:

    config.json          the model's dataclass config (names the base backbone)
    heads.safetensors    the exit/token heads
    adapter/             the LoRA adapter (peft), when the backbone was fine-tuned
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from peft import PeftModel
from safetensors.torch import load_file, save_file
from torch import nn

from models.backbone import Backbone


def save_artifact(out_dir: str | Path, config: Any, backbone: Backbone, heads: nn.Module) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in heads.state_dict().items()},
              str(out / "heads.safetensors"))
    if isinstance(backbone.model, PeftModel):
        for peft_config in backbone.model.peft_config.values():
            peft_config.base_model_name_or_path = str(config.base)  # the base's name, not this machine's path
        backbone.model.save_pretrained(str(out / "adapter"))
    (out / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    return out


def read_config(path: Path, what: str) -> dict[str, Any]:
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a finsent {what} directory (no config.json)")
    return json.loads((path / "config.json").read_text())


def attach_adapter(backbone: Backbone, path: Path, merge: bool) -> None:
    """Load ``path/adapter`` into the backbone if present; ``merge`` folds it into the weights."""
    if (path / "adapter").is_dir():
        peft_model = PeftModel.from_pretrained(backbone.model, str(path / "adapter"))
        backbone.model = peft_model.merge_and_unload() if merge else peft_model


def load_heads(heads: nn.Module, path: Path) -> None:
    heads.load_state_dict(load_file(str(path / "heads.safetensors")))
