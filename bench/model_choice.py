"""Which model a benchmark runs: ``--model``, else the shipped artifact, else ``FINSENT_MODEL_DIR``."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def resolve_model(arg: Path | None) -> tuple[Path, str]:
    from models.elbert import DEFAULT_MODEL_DIR

    if arg is not None:
        return arg, "--model"
    if (DEFAULT_MODEL_DIR / "config.json").exists():
        return DEFAULT_MODEL_DIR, "shipped"
    env = os.environ.get("FINSENT_MODEL_DIR")
    if env and (Path(env) / "config.json").exists():
        return Path(env), "FINSENT_MODEL_DIR (shipped model missing)"
    sys.exit(
        f"error: no model: {DEFAULT_MODEL_DIR}/config.json is missing and FINSENT_MODEL_DIR is not a model "
        "directory (build one with models/artifacts/build_default.sh and pass its folder as --model)"
    )
