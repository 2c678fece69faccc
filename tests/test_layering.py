"""The package layering: ``pipeline`` may import ``models``, never the reverse; no import cycles
inside ``models``; Hugging Face offline mode is set in one place, before the hub is imported."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted((ROOT / "models").glob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` in ``path`` names, at any depth (lazy imports included)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_models_import_nothing_from_pipeline():
    offenders = {p.name: sorted(m for m in imported_modules(p) if m == "pipeline" or m.startswith("pipeline."))
                 for p in MODELS}
    assert not {k: v for k, v in offenders.items() if v}


def test_models_modules_import_each_other_without_cycles():
    graph = {f"models.{p.stem}": {m for m in imported_modules(p) if m.startswith("models.")} for p in MODELS}
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, " -> ".join((*path, node))
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, (*path, node))
        done.add(node)

    for node in sorted(graph):
        visit(node, ())


def test_hub_offline_is_set_in_one_place_before_the_hub_is_imported():
    mentions = [p.relative_to(ROOT).as_posix() for d in ("models", "pipeline", "bench", "tests")
                for p in sorted((ROOT / d).rglob("*.py"))
                if "HF_HUB_OFFLINE" in p.read_text() and p != Path(__file__).resolve()]
    assert mentions == ["models/backbone.py"]
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["PYTHONPATH"] = str(ROOT)
    code = ("import models.elbert, models.tagger, models.pool, models.train, models.train_tagger\n"
            "import huggingface_hub.constants as c\n"
            "assert c.HF_HUB_OFFLINE, 'huggingface_hub was imported before models.backbone set offline mode'\n")
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True, timeout=120)
