"""Every third-party import of the code, tests, benchmarks and examples is declared in
pyproject.toml, so a fresh virtualenv with the README's set-up has what they need.

Packages installed by hand (or pulled in by another package) hide a missing declaration on a
developer's machine; this test reads the imports from the source instead, so it fails wherever
a declaration is missing, whatever happens to be installed.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("pipeline", "models", "tests", "bench", "examples", "deploy")
FIRST_PARTY = {"pipeline", "models", "bench", "tests"}
#: import name -> distribution, for declared optional extras that the dev install leaves out
#: (packages_distributions() only knows installed packages)
NOT_INSTALLED_BY_DEV = {"faust": "faust-streaming", "datasketch": "datasketch"}


def _dist(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(spec: str) -> str:
    return _dist(re.split(r"[\s<>=!~;\[(@]", spec.strip(), maxsplit=1)[0])


def declared(pyproject: Path) -> tuple[set[str], set[str]]:
    """(runtime dependencies, dependencies of any extra), as normalised distribution names."""
    project = tomllib.loads(pyproject.read_text())["project"]
    runtime = {_requirement_name(r) for r in project["dependencies"]}
    extras = {_requirement_name(r) for reqs in project.get("optional-dependencies", {}).values() for r in reqs}
    return runtime, extras


def imports(path: Path) -> list[tuple[str, bool]]:
    """(top-level module, imported inside a function) for each absolute import in ``path``."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((a.name.split(".")[0], lazy) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module.split(".")[0], lazy))
            visit(child, lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    visit(ast.parse(path.read_text(), str(path)), False)
    return found


def undeclared(root: Path, pyproject: Path) -> list[str]:
    """One line per third-party import that pyproject.toml does not declare where it is needed:
    the package code (pipeline/, models/) needs a runtime dependency, unless the import sits in a
    function (an optional feature, e.g. Parquet output), which an extra may serve; tests,
    benchmarks and examples may use any extra."""
    runtime, extras = declared(pyproject)
    by_module = packages_distributions()
    problems = []
    helpers = {p.stem for p in (root / "tests").glob("*.py")}  # bench/reliability.py runs tests/faults.py
    for folder in SCANNED:
        for path in sorted((root / folder).rglob("*.py")):
            local = {p.stem for p in path.parent.glob("*.py")} | {p.name for p in path.parent.iterdir() if p.is_dir()}
            for module, lazy in imports(path):
                if module in sys.stdlib_module_names or module in FIRST_PARTY | helpers | local:
                    continue
                dists = {_dist(d) for d in by_module.get(module, [])}
                if module in NOT_INSTALLED_BY_DEV:
                    dists.add(NOT_INSTALLED_BY_DEV[module])
                allowed = runtime if folder in ("pipeline", "models") and not lazy else runtime | extras
                if not dists & allowed:
                    where = "a runtime dependency" if allowed is runtime else "a dependency or an extra"
                    names = ", ".join(sorted(dists)) or "not installed here"
                    problems.append(f"{path.relative_to(root)}: import {module} ({names}) is not {where}")
    return problems


def test_every_import_is_declared() -> None:
    problems = undeclared(ROOT, ROOT / "pyproject.toml")
    assert not problems, "\n".join(problems)


def test_a_missing_declaration_is_caught(tmp_path: Path) -> None:
    # the same check on a copy of pyproject.toml without one test-only dependency
    text = (ROOT / "pyproject.toml").read_text()
    trimmed = re.sub(r'^\s*"cryptography[^"]*",\n', "", text, flags=re.MULTILINE)
    assert trimmed != text
    (tmp_path / "pyproject.toml").write_text(trimmed)
    problems = undeclared(ROOT, tmp_path / "pyproject.toml")
    assert problems and all("import cryptography" in p for p in problems), problems


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import a.b\nfrom c import d\nfrom . import e\n", [("a", False), ("c", False)]),
        ("def f():\n    import g\nclass K:\n    def m(self):\n        from h.i import j\n", [("g", True), ("h", True)]),
    ],
)
def test_imports_reads_absolute_imports_and_marks_lazy_ones(tmp_path: Path, source: str, expected: list) -> None:
    path = tmp_path / "m.py"
    path.write_text(source)
    assert imports(path) == expected
