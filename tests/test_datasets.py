"""Where the public datasets live: the registry (models/datasets.py), ``--data`` resolution under
FINSENT_DATA_DIR, its one-line errors in the CLI and the benchmark, and the ``data_dir`` setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from models.datasets import (
    DATA_DIR_ENV,
    DATASETS,
    MissingDataError,
    find_dataset,
    read_labelled_csv,
    resolve_data,
)
from pipeline.cli import app
from pipeline.settings import Settings
from pipeline.silver import SOURCES

REPO = Path(__file__).resolve().parents[1]
TINY_CSV = "text,label\nNvidia beats estimates and raises guidance,positive\nBoeing shares sink,negative\n"


@pytest.fixture
def no_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data folder with one dataset in the shared layout: TFNS validation (two rows)."""
    root = tmp_path / "data"
    (root / "twitter_financial_news").mkdir(parents=True)
    (root / "twitter_financial_news" / "validation.csv").write_text(TINY_CSV)
    return root


# ------------------------------------------------------------------ registry


def test_registry_names_every_file_the_code_reads_with_source_and_licence():
    used = [rel for _, rel in SOURCES] + ["twitter_financial_news/validation.csv", "finer_ord/train.conll",
                                          "finer_ord/validation.conll", "finer_ord/test.conll"]
    for rel in used:
        ds = find_dataset(rel)
        assert ds is not None and ds.path == rel, rel
    for name, ds in DATASETS.items():
        assert name == ds.name == ds.path.rsplit(".", 1)[0]
        assert ds.source and ds.licence and ds.format
    assert DATASETS["twitter_financial_news/train"].licence == "MIT"
    assert "zeroshot/twitter-financial-news-sentiment" in DATASETS["twitter_financial_news/validation"].source
    assert "gtfintechlab/finer-ord" in DATASETS["finer_ord/test"].source
    assert "CC BY-NC 4.0" in DATASETS["finer_ord/test"].licence
    assert "CC BY-NC-SA 3.0" in DATASETS["financial_phrasebank/sentences_allagree"].licence
    # a path that ends in a registry path is that dataset, wherever it points
    tfns_train = DATASETS["twitter_financial_news/train"]
    assert find_dataset("../shared/data/twitter_financial_news/train.csv") is tfns_train
    assert find_dataset("my/train.csv") is None and find_dataset("nonexistent") is None


# ------------------------------------------------------------------ resolution


def test_existing_path_is_used_as_is_without_a_data_dir(tmp_path):
    own = tmp_path / "twitter_financial_news" / "validation.csv"  # even when it looks like a registry path
    own.parent.mkdir()
    own.write_text(TINY_CSV)
    assert resolve_data(own, None) == own
    assert resolve_data(str(own), tmp_path / "elsewhere") == own


def test_name_or_relative_path_resolves_under_the_data_dir(data_dir, tmp_path, monkeypatch):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # where the names are no paths
    want = data_dir / "twitter_financial_news" / "validation.csv"
    assert resolve_data("twitter_financial_news/validation", data_dir) == want
    assert resolve_data("twitter_financial_news/validation.csv", data_dir) == want
    assert resolve_data(None, data_dir, default="twitter_financial_news/validation") == want
    assert resolve_data("", str(data_dir), default="twitter_financial_news/validation") == want
    assert read_labelled_csv(resolve_data("twitter_financial_news/validation", data_dir)).labels == [2, 0]
    (data_dir / "mine.csv").write_text(TINY_CSV)  # a file of one's own in the data folder
    assert resolve_data("mine.csv", data_dir) == data_dir / "mine.csv"


def test_missing_known_dataset_says_where_it_looked_and_where_to_get_it(data_dir):
    with pytest.raises(MissingDataError) as err:
        resolve_data("finer_ord/test", data_dir)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("dataset finer_ord/test not found")
    assert str(data_dir / "finer_ord" / "test.conll") in msg  # what was looked for
    assert DATA_DIR_ENV in msg and "--data" in msg  # what sets where
    assert "gtfintechlab/finer-ord" in msg and "CC BY-NC 4.0" in msg  # where to get it, on what terms


def test_missing_known_dataset_without_a_data_dir(no_data_dir):
    with pytest.raises(MissingDataError) as err:
        resolve_data(None, None, default="twitter_financial_news/validation")
    msg = str(err.value)
    assert "\n" not in msg and f"{DATA_DIR_ENV} is not set" in msg
    assert "twitter_financial_news/validation.csv" in msg
    assert "zeroshot/twitter-financial-news-sentiment" in msg and "licence: MIT" in msg


def test_missing_path_to_a_known_dataset_suggests_its_name(tmp_path):
    old = tmp_path / "gone" / "twitter_financial_news" / "train.csv"
    with pytest.raises(MissingDataError) as err:
        resolve_data(old, tmp_path)
    msg = str(err.value)
    assert f"no file {old}" in msg and "pass --data twitter_financial_news/train" in msg
    assert "zeroshot/twitter-financial-news-sentiment" in msg and "MIT" in msg


def test_missing_unknown_file_lists_the_dataset_names(data_dir):
    with pytest.raises(MissingDataError) as err:
        resolve_data("nonexistent.csv", data_dir, option="--valid")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("--valid nonexistent.csv not found")
    assert str(data_dir / "nonexistent.csv") in msg and DATA_DIR_ENV in msg
    assert "twitter_financial_news/validation" in msg and "finer_ord/test" in msg
    with pytest.raises(MissingDataError, match="not a file"):
        resolve_data(data_dir, None)  # a folder is no data file


# ------------------------------------------------------------------ setting


def test_settings_read_the_data_dir_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert Settings().data_dir is None
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert Settings().data_dir == tmp_path
    assert "twitter_financial_news/validation.csv" in (Settings.model_fields["data_dir"].description or "")


# ------------------------------------------------------------------ CLI and benchmark


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # typer.Exit, not an exception escaping
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("args", [["eval"], ["eval-tagger"], ["train", "--out", "OUT"],
                                  ["train-tagger", "--out", "OUT"]])
def test_cli_data_commands_fail_in_one_line_for_missing_data(args, no_data_dir, tmp_path):
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    line = _one_error_line(CliRunner().invoke(app, [*args, "--data", "nonexistent"]))
    assert "--data nonexistent not found" in line and DATA_DIR_ENV in line
    assert not (tmp_path / "out").exists()


def test_cli_eval_names_the_source_of_a_missing_dataset(data_dir, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir))
    res = CliRunner().invoke(app, ["eval", "--data", "financial_phrasebank/sentences_allagree"])
    line = _one_error_line(res)
    assert str(data_dir / "financial_phrasebank" / "sentences_allagree.csv") in line
    assert "Malo et al. 2014" in line and "CC BY-NC-SA 3.0" in line


def test_cli_eval_of_a_dataset_name_reads_it_under_the_data_dir(data_dir, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(data_dir))
    res = CliRunner().invoke(app, ["eval", "--data", "twitter_financial_news/validation", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["n"] == 2


def test_cli_silver_ner_needs_a_data_dir(no_data_dir, tmp_path):
    line = _one_error_line(CliRunner().invoke(app, ["silver-ner", "--out", str(tmp_path / "s.conll")]))
    assert f"set {DATA_DIR_ENV}" in line and "--data-dir" in line


@pytest.mark.parametrize("cmd", [[sys.executable, "-m", "pipeline.cli", "eval", "--data", "nonexistent"],
                                 [sys.executable, str(REPO / "bench" / "engine.py"), "--json"]],
                         ids=["finsent-eval", "bench-engine"])
def test_a_real_process_prints_one_line_and_no_traceback(cmd, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != DATA_DIR_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and DATA_DIR_ENV in lines[0], proc.stderr
    if "engine.py" in cmd[1]:  # the benchmark's default data: TFNS validation
        assert "dataset twitter_financial_news/validation" in lines[0]
        assert "zeroshot/twitter-financial-news-sentiment" in lines[0]


# ------------------------------------------------------------------ the real data, where present


def test_registry_matches_the_real_data_folder(public_data):
    sums = public_data / "SHA256SUMS"  # the published copy lists every file
    listed = {line.split(maxsplit=1)[1].strip() for line in sums.read_text().splitlines() if line.strip()} \
        if sums.is_file() else None
    for name, ds in DATASETS.items():
        if listed is not None:
            assert ds.path in listed, f"{ds.path} is not in {sums}"
        elif not (public_data / ds.path).is_file():
            continue  # a folder of one's own may hold only some datasets
        path = resolve_data(name, public_data)
        first = path.read_text(encoding="utf-8").split("\n", 1)[0]
        if path.suffix == ".csv":
            assert first == "text,label", path
        elif path.suffix == ".jsonl":
            assert {"id", "text", "target", "score"} <= set(json.loads(first)), path
        else:
            assert len(first.split("\t")) == 2, path


def test_a_missing_silver_source_says_where_to_get_it(tmp_path):
    from pipeline.silver import read_sources

    with pytest.raises(FileNotFoundError) as err:
        read_sources(tmp_path)  # the first source, TFNS train, is missing
    msg = str(err.value)
    assert msg.startswith("silver source tfns-train:") and "zeroshot/twitter-financial-news-sentiment" in msg
    assert "licence: MIT" in msg
