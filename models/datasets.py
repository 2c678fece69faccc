"""Labelled sentiment data: a CSV with header ``text,label`` and label names; and where the public
datasets live.

Errors name the file and the line so that a bad row in a 10,000-row file is found in seconds.

The datasets are not in the repository. They sit in one data folder (``FINSENT_DATA_DIR``, the
``data_dir`` setting of ``pipeline.settings``) in the layout of :data:`DATASETS`, e.g.
``$FINSENT_DATA_DIR/twitter_financial_news/validation.csv``. :func:`resolve_data` turns a
``--data`` value (a path, or a dataset name such as ``twitter_financial_news/validation``) into a
file, and says where to get a dataset that is missing. This module reads no environment variable:
callers pass the data folder in.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

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


# ------------------------------------------------------------------ where the public datasets live

#: The environment variable (setting ``data_dir``) naming the data folder; named in error messages.
DATA_DIR_ENV: Final[str] = "FINSENT_DATA_DIR"

_SENTIMENT_CSV = "CSV with header text,label; labels negative|neutral|positive"
_SCORED_JSONL = "JSONL, one object per line with id, text, target, score in [-1, 1]"
_CONLL = "CoNLL: token<TAB>BIO tag (PER/LOC/ORG), a blank line between sentences"


@dataclass(frozen=True)
class Dataset:
    """One file of a public dataset, at ``path`` under the data folder."""

    name: str  # what --data accepts: the path without its suffix, e.g. "twitter_financial_news/validation"
    path: str  # under the data folder, e.g. "twitter_financial_news/validation.csv"
    title: str
    source: str  # public dataset id / URL, and how the file was made from it
    licence: str
    format: str

    def where_to_get(self) -> str:
        return (f"{self.title} is public: {self.source}; licence: {self.licence}; store it as "
                f"<data folder>/{self.path} ({self.format})")


def _registry() -> dict[str, Dataset]:
    tfns = ("Hugging Face zeroshot/twitter-financial-news-sentiment "
            "(https://huggingface.co/datasets/zeroshot/twitter-financial-news-sentiment), file {0}, "
            "labels mapped 0 -> negative, 1 -> positive, 2 -> neutral")
    fpb = ("Financial PhraseBank v1.0 (Malo et al. 2014, JASIST 65(4)), file {0} (sentence@label, Latin-1), "
           "e.g. from GitHub {1}")
    fpb_licence = "CC BY-NC-SA 3.0 (non-commercial)"
    semeval_licence = "CC BY-NC-SA 4.0 annotations (non-commercial); texts under Twitter/StockTwits terms"
    fiqa = ("FiQA 2018 Task 1 training release (Maia et al. 2018), GitHub elinsky/fiqa, "
            "data/task1_{0}_ABSA_train.json + task1_{0}_ABSA_test.json merged")
    fiqa_licence = "none stated (research use only)"
    finer = ("Hugging Face gtfintechlab/finer-ord (GitHub gtfintechlab/FiNER-ORD, {0}), labels 0-6 -> "
             "O, B-PER, I-PER, B-LOC, I-LOC, B-ORG, I-ORG")
    finer_licence = "CC BY-NC 4.0 (non-commercial)"
    entries = [
        Dataset("twitter_financial_news/train", "twitter_financial_news/train.csv",
                "Twitter Financial News Sentiment, train split", tfns.format("sent_train.csv"), "MIT",
                _SENTIMENT_CSV),
        Dataset("twitter_financial_news/validation", "twitter_financial_news/validation.csv",
                "Twitter Financial News Sentiment, validation split", tfns.format("sent_valid.csv"), "MIT",
                _SENTIMENT_CSV),
        *(Dataset(f"financial_phrasebank/sentences_{level.lower()}",
                  f"financial_phrasebank/sentences_{level.lower()}.csv", f"Financial PhraseBank ({level})",
                  fpb.format(f"Sentences_{level}.txt", repo), fpb_licence, _SENTIMENT_CSV)
          for level, repo in [("AllAgree", "Josiel1998/Research_Skyskraper_Josiel"),
                              ("75Agree", "chiuyuwen91/Forecast-stock-price"),
                              ("66Agree", "chiuyuwen91/Forecast-stock-price"),
                              ("50Agree", "chiuyuwen91/Forecast-stock-price")]),
        Dataset("semeval2017_task5/headlines", "semeval2017_task5/headlines.jsonl",
                "SemEval-2017 Task 5 headlines (subtask 2)",
                "SemEval-2017 Task 5 (Cortis et al. 2017) headline training data and test data with gold "
                "scores, e.g. GitHub codingFerryman/Social-Sentiment-Analysis "
                "data/en/SemEval2017Task5Headlines.json",
                semeval_licence, _SCORED_JSONL),
        Dataset("semeval2017_task5/microblogs", "semeval2017_task5/microblogs.jsonl",
                "SemEval-2017 Task 5 microblogs (subtask 1)",
                "SemEval-2017 Task 5 (Cortis et al. 2017) microblog training data and test data with gold "
                "scores, e.g. GitHub louisowen6/NLP_Stacking_Ensemble 'Raw Data/Microblog_Trainingdata.json'",
                semeval_licence, _SCORED_JSONL),
        Dataset("fiqa2018_task1/headlines", "fiqa2018_task1/headlines.jsonl", "FiQA 2018 Task 1 headlines",
                fiqa.format("headline"), fiqa_licence, _SCORED_JSONL),
        Dataset("fiqa2018_task1/posts", "fiqa2018_task1/posts.jsonl", "FiQA 2018 Task 1 posts",
                fiqa.format("post"), fiqa_licence, _SCORED_JSONL),
        *(Dataset(f"finer_ord/{split}", f"finer_ord/{split}.conll", f"FiNER-ORD, {split} split",
                  finer.format(src), finer_licence, _CONLL)
          for split, src in [("train", "data/train/train.csv"), ("validation", "data/train/val.csv"),
                             ("test", "data/test/test.csv")]),
    ]
    return {d.name: d for d in entries}


#: Every dataset file the code uses, by name (see each entry's ``source`` and ``licence``).
DATASETS: Final[dict[str, Dataset]] = _registry()


class MissingDataError(DataError):
    """A --data value that names no file: says what was looked for and where to get it."""


def find_dataset(value: str | Path) -> Dataset | None:
    """The registry entry ``value`` names: its name, its path under the data folder, or any path
    ending in that path (``../shared/data/twitter_financial_news/validation.csv``)."""
    key = str(value).replace("\\", "/").strip()
    if key in DATASETS:
        return DATASETS[key]
    parts = PurePosixPath(key).parts
    for ds in DATASETS.values():
        tail = PurePosixPath(ds.path).parts
        if parts[-len(tail):] == tail:
            return ds
    return None


def resolve_data(value: str | Path | None, data_dir: str | Path | None, default: str | None = None,
                 option: str = "--data") -> Path:
    """The file a ``--data`` value means.

    An existing file is used as is. Otherwise a dataset name (``twitter_financial_news/validation``)
    or a path relative to the data folder (``twitter_financial_news/validation.csv``) is looked up
    under ``data_dir`` (the ``FINSENT_DATA_DIR`` setting). ``default``: the dataset name used when
    ``value`` is empty. Raises :class:`MissingDataError` (one line: what was looked for, that
    ``FINSENT_DATA_DIR`` or ``option`` say where, and for a known dataset its public source and licence).
    """
    if value is None or not str(value).strip():
        if default is None:
            raise MissingDataError(f"no data given: pass {option} PATH, or a dataset name under "
                                   f"{DATA_DIR_ENV}")
        value = default
    path = Path(value).expanduser()
    if path.is_file():
        return path
    if path.exists():
        raise MissingDataError(f"{option} {value}: {path} is not a file")
    ds = find_dataset(value)
    named = ds is not None and str(value).replace("\\", "/").strip() in (ds.name, ds.path)
    folder = None if data_dir is None else Path(data_dir).expanduser()
    if named or (not path.is_absolute() and ".." not in path.parts):  # a path under the data folder
        rel = ds.path if named and ds is not None else str(value)
        if folder is None:
            unset = f"{DATA_DIR_ENV} is not set"
            where = (f"{unset}, so there is no data folder to look for {rel} in" if named
                     else f"no file {path} here, and {unset}, so no data folder was searched")
        elif (folder / rel).is_file():
            return folder / rel
        else:
            where = (f"no file {folder / rel} ({DATA_DIR_ENV}={folder}"
                     f"{'' if folder.is_dir() else ', which is not a folder'})")
    else:
        where = f"no file {path}"
    what = f"dataset {ds.name}" if named and ds is not None else f"{option} {value}"
    how = (f"set {DATA_DIR_ENV} to the folder holding the datasets "
           f"({ds.path if ds is not None else 'e.g. twitter_financial_news/validation.csv'} under it) "
           f"or pass {option} PATH to the file")
    if ds is None:
        raise MissingDataError(f"{what} not found: {where}; {how}; dataset names: {', '.join(DATASETS)}")
    if not named:
        how += f" (this path is the dataset {ds.name}: with {DATA_DIR_ENV} set, pass {option} {ds.name})"
    raise MissingDataError(f"{what} not found: {where}; {how}. {ds.where_to_get()}")


def require_data_dir(data_dir: str | Path | None, option: str = "--data-dir") -> Path:
    """The data folder, or :class:`MissingDataError` saying how to set it."""
    if data_dir is None or not str(data_dir).strip():
        raise MissingDataError(f"no data folder: set {DATA_DIR_ENV} (or {option}) to the folder holding the "
                               "public datasets, e.g. twitter_financial_news/train.csv under it")
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise MissingDataError(f"data folder {folder} not found: set {DATA_DIR_ENV} (or {option}) to the "
                               "folder holding the public datasets, e.g. twitter_financial_news/train.csv "
                               "under it")
    return folder
