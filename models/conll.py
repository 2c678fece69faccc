"""Word-level NER data in CoNLL form: ``token<TAB>tag`` per line, a blank line between sentences.

Tags are BIO over the entity types of FiNER-ORD (PER, LOC, ORG). Errors name the file and line,
as in ``models.datasets``, so a bad row in a 100,000-line file is found at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.datasets import DataError

BIO_LABELS: tuple[str, ...] = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG")


@dataclass
class TaggedSentence:
    tokens: list[str]
    tags: list[str]  # one BIO tag per token

    def __len__(self) -> int:
        return len(self.tokens)


def read_conll(path: str | Path, labels: tuple[str, ...] | list[str] = BIO_LABELS) -> list[TaggedSentence]:
    """Read sentences; ``-DOCSTART-`` lines are skipped. Raises DataError naming the first bad line."""
    path = Path(path)
    known = set(labels)
    sentences: list[TaggedSentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    with path.open(encoding="utf-8") as fh:
        for number, raw in enumerate(fh, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                if tokens:
                    sentences.append(TaggedSentence(tokens, tags))
                    tokens, tags = [], []
                continue
            if line.startswith("-DOCSTART-"):
                continue
            fields = line.split("\t")
            if len(fields) != 2:
                raise DataError(f"{path}:{number}: expected 'token<TAB>tag', got {line!r}")
            token, tag = fields[0], fields[1].strip()
            if not token.strip():
                raise DataError(f"{path}:{number}: empty token")
            if tag not in known:
                raise DataError(f"{path}:{number}: unknown tag {tag!r}; expected one of {list(labels)}")
            tokens.append(token)
            tags.append(tag)
    if tokens:
        sentences.append(TaggedSentence(tokens, tags))
    if not sentences:
        raise DataError(f"{path}: no sentences")
    return sentences
