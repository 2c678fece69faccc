"""Labelled sentiment data: a CSV with header ``text,label`` and label names.

Errors name the file and the line so that a bad row in a 10,000-row file is found in seconds.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from models.elbert import LABELS


class DataError(ValueError):
    """A labelled file that cannot be used as it is."""


@dataclass
class LabelledTexts:
    texts: list[str]
    labels: list[int]  # indices into the label list

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: list[int]) -> LabelledTexts:
        return LabelledTexts([self.texts[i] for i in idx], [self.labels[i] for i in idx])


def read_labelled_csv(path: str | Path, labels: tuple[str, ...] | list[str] = LABELS) -> LabelledTexts:
    """Read ``text,label`` rows. Raises DataError naming the line of the first bad row."""
    path = Path(path)
    index = {name: i for i, name in enumerate(labels)}
    texts: list[str] = []
    ys: list[int] = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(f"{path}: empty file (expected a header 'text,label')") from None
        if [h.strip().lower() for h in header[:2]] != ["text", "label"]:
            raise DataError(f"{path}:1: header must start with 'text,label', got {header!r}")
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:{line}: expected {len(header)} fields, got {len(row)}: {row!r}")
            text, label = row[0].strip(), row[1].strip().lower()
            if not text:
                raise DataError(f"{path}:{line}: empty text")
            if label not in index:
                raise DataError(f"{path}:{line}: unknown label {row[1]!r}; expected one of {list(labels)}")
            texts.append(text)
            ys.append(index[label])
    if not texts:
        raise DataError(f"{path}: no rows")
    return LabelledTexts(texts, ys)
