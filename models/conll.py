"""Word-level NER data in CoNLL form: ``token<TAB>tag`` per line, a blank line between sentences.

Tags are BIO over the entity types of FiNER-ORD (PER, LOC, ORG). A training file may also use
:data:`IGNORE_TAG` for a token whose label is unknown (silver data, ``pipeline.silver``): it is
excluded from the loss. Errors name the file and line, as in ``models.datasets``, so a bad row in
a 100,000-line file is found at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.datasets import DataError

BIO_LABELS: tuple[str, ...] = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG")
#: "no label": the token is excluded from the training loss (never valid in an evaluation file).
IGNORE_TAG = "-"
#: A generated CoNLL file ``X`` may have a sidecar ``X.meta.json`` (sources, licence, statistics).
META_SUFFIX = ".meta.json"


@dataclass
class TaggedSentence:
    tokens: list[str]
    tags: list[str]  # one BIO tag per token

    def __len__(self) -> int:
        return len(self.tokens)


def read_conll(path: str | Path, labels: tuple[str, ...] | list[str] = BIO_LABELS,
               allow_ignore: bool = False) -> list[TaggedSentence]:
    """Read sentences; ``-DOCSTART-`` lines are skipped. Raises DataError naming the first bad line.

    ``allow_ignore``: accept :data:`IGNORE_TAG` (training data only).
    """
    path = Path(path)
    known = [*labels, IGNORE_TAG] if allow_ignore else list(labels)
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
                raise DataError(f"{path}:{number}: unknown tag {tag!r}; expected one of {known}")
            tokens.append(token)
            tags.append(tag)
    if tokens:
        sentences.append(TaggedSentence(tokens, tags))
    if not sentences:
        raise DataError(f"{path}: no sentences")
    return sentences
