"""README.md's set-up, run and test commands are what CI runs, word for word, and the README
stays the front door (at most 8 KB; the rest lives in docs/)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("Set up", "Run", "Test")
#: the README makes its virtualenv in ./.venv; CI makes a brand-new one in a temporary folder
VENV_LINE = "python3 -m venv .venv && . .venv/bin/activate"


def commands(readme: str, section: str) -> list[str]:
    """The lines of the ```bash blocks under the ``## section`` heading, comments dropped."""
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", readme, flags=re.MULTILINE | re.DOTALL)
    assert match, f"README.md has no '## {section}' section"
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", match.group(1), flags=re.DOTALL):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def ci_commands() -> set[str]:
    return {line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()}


def test_ci_runs_the_readme_commands_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = ci_commands()
    for section in SECTIONS:
        wanted = [c for c in commands(readme, section) if c != VENV_LINE]
        assert wanted, f"no command under '## {section}'"
        missing = [c for c in wanted if c not in ci]
        assert not missing, f"README '{section}' commands that .ci/run does not run: {missing}"
    assert VENV_LINE in commands(readme, "Set up")
    assert "python3 -m venv" in (ROOT / ".ci" / "run").read_text()


def test_commands_reads_only_its_section() -> None:
    readme = "## Set up\n```bash\npip install x  # why\n# a comment\n```\n## Run\n```bash\nrun me\n```\n"
    assert commands(readme, "Set up") == ["pip install x"]
    assert commands(readme, "Run") == ["run me"]


def test_readme_is_the_front_door() -> None:
    size = len((ROOT / "README.md").read_bytes())
    assert size <= 8192, f"README.md is {size} bytes; move detail to docs/"
