"""The shipped default model: CLI scoring and engine == one-at-a-time reference on 500 texts."""

import os
import random
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from tinymodels import borderline, exit_probs_one

from models.elbert import DEFAULT_MODEL_DIR, ElbertClassifier
from models.engine import EarlyExitEngine, reference_predict
from models.exits import make_rule
from models.text import NORMALIZATION, normalize

FEED = Path(__file__).resolve().parents[1] / "pipeline" / "data" / "sample_feed.jsonl"

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "config.json").is_file(), reason="no shipped model")


@pytest.fixture(scope="module")
def model():
    return ElbertClassifier.load()


def our_texts(n: int) -> list[str]:
    """Texts from the bundled (project-written) sample feed, plus cut variants to reach n."""
    texts = [orjson.loads(line)["text"] for line in FEED.read_text().splitlines() if line.strip()]
    rng = random.Random(0)
    while len(texts) < n:
        t = rng.choice(texts).split()
        texts.append(" ".join(t[: rng.randint(2, len(t))]))
    return texts[:n]


def test_cli_score_bullish_and_bearish_headlines():
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "score",
         "Apple shares surge to record high after blowout earnings and raised guidance",
         "Tesla stock plunges after massive recall and profit warning"],
        capture_output=True, text=True, check=True, timeout=180,
    )
    lines = [orjson.loads(x) for x in out.stdout.splitlines()]
    assert [x["label"] for x in lines] == ["positive", "negative"]
    for x in lines:
        assert set(x) >= {"text", "label", "probs", "score", "exit_layer"}
        assert abs(sum(x["probs"].values()) - 1) < 1e-4
        assert x["score"] == pytest.approx(x["probs"]["positive"] - x["probs"]["negative"])
        assert 1 <= x["exit_layer"] <= 6
    assert lines[0]["score"] > 0.5 > -0.5 > lines[1]["score"]


def test_engine_equals_reference_on_500_texts(model):
    rule_cfg = model.config.default_rule
    rule = make_rule(rule_cfg["rule"], **rule_cfg["params"])
    texts = our_texts(500)
    ids, truncated = model.encode(texts)
    got = EarlyExitEngine(model, rule, max_batch=64).run(ids, truncated)
    for x, pred in zip(ids, got):
        ref = reference_predict(model, x, rule)
        same = pred.exit_layer == ref.exit_layer and pred.label == ref.label
        if same:
            assert max(abs(a - b) for a, b in zip(pred.probs, ref.probs)) < 1e-4
        else:  # allowed only where the deciding quantity is within 1e-4 of its threshold
            layers = max(pred.exit_layer, ref.exit_layer)
            assert borderline(rule, exit_probs_one(model, x)[:layers]), (pred, ref)
    assert len({p.exit_layer for p in got}) > 1  # early exit really happens


def test_encode_equals_the_transformers_tokenizer(model):
    """``encode`` calls the Rust tokenizer directly on the model's normalised text; its ids must be
    the wrapper's on that text, truncation aside."""
    texts = [orjson.loads(line)["text"] for line in FEED.read_bytes().splitlines()[:200]]
    texts += ["", "Ünïcödé — “quotes” $AAPL 🚀 über", "a\tb\nc  d", "word " * 300, "[CLS] [SEP] [PAD]"]
    ids, truncated = model.encode(texts)
    assert model.config.text_normalization == NORMALIZATION
    want = model.tokenizer([normalize(t) for t in texts], truncation=False, add_special_tokens=True)["input_ids"]
    assert model.tokenizer.unk_token_id not in ids[201]  # the rocket is read as a word
    limit = model.config.max_length
    assert truncated == [len(w) > limit for w in want] and sum(truncated) == 1
    assert ids == [w if len(w) <= limit else w[: limit - 1] + w[-1:] for w in want]
    x, attn = ElbertClassifier.pad(ids[:3], pad_id=model.pad_id)
    assert x.shape == attn.shape == (3, max(map(len, ids[:3])))
    assert [int(a.sum()) for a in attn] == [len(i) for i in ids[:3]]
    assert x[0, : len(ids[0])].tolist() == ids[0] and not x[attn == 0].any()


def test_cli_eval_reports_every_rule_and_cwb_against_each_rival(tmp_path):
    rows = [("Apple shares surge to record high after blowout earnings", "positive"),
            ("Nvidia beats estimates and raises guidance", "positive"),
            ("Amazon stock jumps as cloud sales accelerate", "positive"),
            ("Tesla stock plunges after massive recall and profit warning", "negative"),
            ("Boeing shares sink on new safety probe", "negative"),
            ("Intel slashes forecast, shares tumble", "negative"),
            ("Microsoft to hold annual shareholder meeting on Dec. 5", "neutral"),
            ("Walmart announces quarterly dividend of $0.57", "neutral"),
            ("Pfizer to present at healthcare conference next week", "neutral")] * 2
    data = tmp_path / "tiny.csv"
    data.write_text("text,label\n" + "".join(f'"{t}",{label}\n' for t, label in rows))
    cmd = [sys.executable, "-m", "pipeline.cli", "eval", "--data", str(data)]
    report = orjson.loads(subprocess.run(cmd + ["--json"], capture_output=True, text=True, check=True,
                                         timeout=180).stdout)
    assert report["n"] == len(rows) and {r["rule"] for r in report["rules"]} == {"full", "maxprob", "entropy",
                                                                               "patience", "cwb"}
    versus = report["cwb_against_rivals"]
    assert versus and {v["rival"] for v in versus} <= {"entropy", "maxprob", "patience"}
    for v in versus:
        assert v["texts"] == round((v["cwb"]["accuracy"] - v["rival_setting"]["accuracy"]) * len(rows))
    table = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=180,
                           env={**os.environ, "COLUMNS": "120"}).stdout
    assert "CWB against each rival" in table and "verdict" in table
