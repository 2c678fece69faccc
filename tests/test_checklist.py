"""bench/checklist.py: the case file is well-formed, and the scoring counts what it says it counts.

No shipped model here: scoring runs on hand-made predictions, and the model path (``predict``,
``main``) on a tiny random classifier that reads texts of token ids.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest
from tinymodels import IdTokenizer, borderline, exit_probs_one, random_ids, tiny_classifier

from models.engine import reference_predict
from models.exits import ConfidenceWindow, MaxProb

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_checklist", ROOT / "bench" / "checklist.py")
checklist = importlib.util.module_from_spec(_spec)
sys.modules["bench_checklist"] = checklist  # dataclasses look their module up while building Pred
_spec.loader.exec_module(checklist)
Pred = checklist.Pred


# ------------------------------------------------------------------ the shipped case file


@pytest.fixture(scope="module")
def cases():
    return checklist.load_cases(checklist.DATA)


def test_case_file_is_well_formed(cases):
    assert checklist.check_cases(cases) == []
    assert checklist.coverage_problems(cases) == []
    assert len(cases) >= 240
    assert len({c["id"] for c in cases}) == len(cases)
    counts = Counter(c["capability"] for c in cases)
    assert set(counts) == set(checklist.CAPABILITIES)
    assert all(counts[c] >= 30 for c in checklist.CAPABILITIES) and counts["invariance"] >= 40


def test_every_capability_has_both_splits_about_half_each(cases):
    for cap in checklist.CAPABILITIES:
        splits = Counter(c["split"] for c in cases if c["capability"] == cap)
        assert set(splits) == {"dev", "heldout"}, cap
        assert abs(splits["dev"] - splits["heldout"]) <= 2, (cap, splits)


def test_labels_and_perturbations_are_spread_over_both_splits(cases):
    for split in checklist.SPLITS:
        mine = [c for c in cases if c["split"] == split]
        for cap in ("negation", "slang", "contrast", "plain"):  # both directions in each half
            assert {c["label"] for c in mine if c["capability"] == cap} >= {"negative", "positive"}, (cap, split)
        assert {c["label"] for c in mine if c["capability"] == "emoji"} == set(checklist.LABELS)
        assert {c["label"] for c in mine if c["capability"] == "neutral"} == {"neutral"}
        assert {c["perturbation"] for c in mine if c["capability"] == "invariance"} == set(checklist.PERTURBATIONS)


def test_invariance_variants_differ_and_texts_are_unique(cases):
    pairs = [c for c in cases if c["capability"] == "invariance"]
    assert all(c["variant"] != c["text"] for c in pairs)
    labelled = [c["text"] for c in cases if c["capability"] != "invariance"]
    assert len(set(labelled)) == len(labelled)
    assert len({(c["text"], c["variant"]) for c in pairs}) == len(pairs)


def test_case_file_lines_are_json_objects_with_known_fields():
    for line in checklist.DATA.read_text(encoding="utf-8").splitlines():
        case = orjson.loads(line)
        assert set(case) in (checklist.LABELLED_FIELDS, checklist.INVARIANCE_FIELDS)


# ------------------------------------------------------------------ validation


def _case(id_, cap="negation", text="t", label="negative", split="dev", **extra):
    if cap == "invariance":
        return {"id": id_, "capability": cap, "text": text, "variant": extra.get("variant", text + " x"),
                "perturbation": extra.get("perturbation", "url"), "split": split}
    return {"id": id_, "capability": cap, "text": text, "label": label, "split": split}


@pytest.mark.parametrize("bad, fragment", [
    (_case("a", label="bullish"), "label 'bullish'"),
    (_case("a", split="test"), "split 'test'"),
    (_case("a", cap="sarcasm"), "capability 'sarcasm'"),
    (_case("a", cap="invariance", variant="t"), "variant equals text"),
    (_case("a", cap="invariance", perturbation="typo"), "perturbation 'typo'"),
    ({k: v for k, v in _case("a").items() if k != "split"}, "fields"),
    ({**_case("a"), "variant": "u"}, "fields"),
    (_case("a", text="  "), "empty"),
])
def test_check_cases_names_each_problem(bad, fragment):
    problems = checklist.check_cases([_case("ok"), bad])
    assert len(problems) == 1 and fragment in problems[0], problems


def test_duplicate_ids_and_thin_capabilities_are_reported():
    assert "duplicate id" in checklist.check_cases([_case("a"), _case("a", text="u")])[0]
    problems = checklist.coverage_problems([_case("a"), _case("b")], {"negation": 3, "emoji": 1})
    assert any("negation: 2 cases" in p for p in problems)
    assert any("negation: no ['heldout']" in p for p in problems)
    assert any("emoji: 0 cases" in p for p in problems)


def test_load_cases_rejects_bad_lines(tmp_path):
    path = tmp_path / "cases.jsonl"
    path.write_text(orjson.dumps(_case("a")).decode() + "\n{not json\n")
    with pytest.raises(ValueError, match=":2: not JSON"):
        checklist.load_cases(path)
    path.write_text(orjson.dumps(_case("a")).decode() + "\n" + orjson.dumps(_case("a", label="up")).decode())
    with pytest.raises(ValueError, match="label 'up'"):
        checklist.load_cases(path)


# ------------------------------------------------------------------ scoring on fake predictions

TOY = [
    _case("n1", text="n1", label="positive"),
    _case("n2", text="n2", label="negative"),
    _case("n3", text="n3", label="negative", split="heldout"),
    _case("i1", cap="invariance", text="a", variant="a2", perturbation="url"),
    _case("i2", cap="invariance", text="b", variant="b2", perturbation="cashtag", split="heldout"),
]
FULL = {"n1": Pred("positive", 0.8, 6), "n2": Pred("neutral", 0.7, 6), "n3": Pred("negative", 0.6, 6),
        "a": Pred("positive", 0.9, 6), "a2": Pred("positive", 0.9, 6),
        "b": Pred("negative", 0.9, 6), "b2": Pred("neutral", 0.9, 6)}
EARLY = {"n1": Pred("positive", 0.95, 1),  # right
         "n2": Pred("neutral", 0.97, 1),  # wrong, confidently early
         "n3": Pred("positive", 0.95, 3),  # wrong, not early
         "a": Pred("positive", 0.5, 6), "a2": Pred("neutral", 0.91, 2),  # pair broken, one side confidently early
         "b": Pred("negative", 0.6, 4), "b2": Pred("negative", 0.6, 4)}  # pair holds


def test_case_texts_lists_texts_then_variants_once():
    assert checklist.case_texts(TOY + [_case("n4", text="n1", label="positive")]) == \
        ["n1", "n2", "n3", "a", "b", "a2", "b2"]


def test_confidently_early_bounds():
    assert Pred("neutral", 0.9, 2).confident_early
    assert not Pred("neutral", 0.9, 3).confident_early
    assert not Pred("neutral", 0.8999, 1).confident_early


def test_score_per_capability():
    res = checklist.score(TOY, FULL, EARLY)
    neg, inv = res["capabilities"]["negation"], res["capabilities"]["invariance"]
    assert list(res["capabilities"]) == ["negation", "invariance"]
    assert neg["n"] == 3 and neg["full_depth"] == pytest.approx(2 / 3, abs=1e-4)
    assert neg["default_rule"] == pytest.approx(1 / 3, abs=1e-4)
    assert (neg["wrong"], neg["confidently_wrong_early"], neg["confidently_wrong_early_share"]) == (2, 1, 0.5)
    assert neg["mean_exit_layer"] == pytest.approx(5 / 3, abs=1e-3)
    assert neg["by_label"] == {"negative": {"n": 2, "full_depth": 0.5, "default_rule": 0.0},
                               "positive": {"n": 1, "full_depth": 1.0, "default_rule": 1.0}}
    assert (inv["n"], inv["full_depth"], inv["default_rule"]) == (2, 0.5, 0.5)
    assert (inv["wrong"], inv["confidently_wrong_early"], inv["confidently_wrong_early_share"]) == (1, 1, 1.0)
    assert inv["mean_exit_layer"] == 4.0  # both sides of both pairs: (6 + 2 + 4 + 4) / 4
    assert inv["by_perturbation"] == {"url": {"n": 1, "full_depth": 1.0, "default_rule": 0.0},
                                      "cashtag": {"n": 1, "full_depth": 0.0, "default_rule": 1.0}}
    overall = res["overall"]
    assert (overall["n"], overall["full_depth"], overall["default_rule"]) == (5, 0.6, 0.4)
    assert (overall["wrong"], overall["confidently_wrong_early"]) == (3, 2)
    assert overall["confidently_wrong_early_share"] == pytest.approx(2 / 3, abs=1e-4)
    assert overall["mean_exit_layer"] == pytest.approx(21 / 7)
    assert res["macro"]["full_depth"] == pytest.approx((2 / 3 + 0.5) / 2, abs=1e-4)
    assert res["macro"]["default_rule"] == pytest.approx((1 / 3 + 0.5) / 2, abs=1e-4)


def test_all_right_has_no_confidently_wrong_share():
    res = checklist.score(TOY[:1], FULL, EARLY)
    assert res["overall"]["wrong"] == 0 and res["overall"]["confidently_wrong_early_share"] is None


def test_split_results_score_each_split_from_the_same_answers():
    res = checklist.split_results(TOY, FULL, EARLY, "all")
    assert list(res) == ["dev", "heldout", "all"]
    assert res["dev"]["overall"]["n"] == 3 and res["heldout"]["overall"]["n"] == 2
    assert res["all"] == checklist.score(TOY, FULL, EARLY)
    assert res["heldout"]["capabilities"]["negation"]["default_rule"] == 0.0  # n3: positive, gold negative
    assert list(checklist.split_results(TOY, FULL, EARLY, "dev")) == ["dev"]


# ------------------------------------------------------------------ the model path, on a tiny model


def _tiny():
    model = tiny_classifier(layers=4, seed=0)
    model.tokenizer = IdTokenizer()
    return model


def test_predict_is_full_depth_argmax_and_the_engines_rule():
    model = _tiny()
    ids = random_ids(24, seed=5)
    texts = [" ".join(map(str, x)) for x in ids]
    rule = ConfidenceWindow(threshold=0.05, window=2, margin=0.4)
    full, early = checklist.predict(model, rule, texts)
    layers = set()
    for x, text in zip(ids, texts):
        probs = exit_probs_one(model, x)
        k = int(probs[-1].argmax())
        assert (full[text].label, full[text].exit_layer) == (model.labels[k], 4)
        assert full[text].confidence == pytest.approx(float(probs[-1, k]), abs=1e-4)
        if borderline(rule, probs):
            continue
        ref = reference_predict(model, x, rule)
        assert (early[text].label, early[text].exit_layer) == (ref.label, ref.exit_layer)
        assert early[text].confidence == pytest.approx(max(ref.probs), abs=1e-4)
        layers.add(ref.exit_layer)
    assert len(layers) > 1  # the rule really exits at different depths


def test_main_prints_json_and_table(tmp_path, monkeypatch, capsys):
    import pipeline.inference

    model = _tiny()
    monkeypatch.setattr(pipeline.inference, "load_model", lambda settings: model)
    ids = [" ".join(map(str, x)) for x in random_ids(6, seed=9)]
    cases = [_case(f"n{i}", text=t, label=("negative", "neutral", "positive")[i % 3],
                   split=("dev", "heldout")[i % 2]) for i, t in enumerate(ids[:4])]
    cases.append(_case("i1", cap="invariance", text=ids[4], variant=ids[5], split="heldout"))
    data = tmp_path / "cases.jsonl"
    data.write_text("\n".join(orjson.dumps(c).decode() for c in cases) + "\n")

    checklist.main(["--data", str(data), "--split", "all", "--json", "--rule", "maxprob:0.6", "--cases"])
    out = orjson.loads(capsys.readouterr().out)
    assert out["model_version"] == model.config.version
    assert out["rule"] == MaxProb(0.6).describe() and out["num_layers"] == 4
    assert out["dev"]["overall"]["n"] == 2 and out["heldout"]["overall"]["n"] == 3 and out["all"]["overall"]["n"] == 5
    assert set(out["heldout"]["capabilities"]) == {"negation", "invariance"}
    assert len(out["cases"]) == 5 and {"full_variant", "rule_variant"} <= set(out["cases"][-1])
    right = sum(c["rule_text"]["label"] == c["label"] for c in out["cases"][:4])
    assert out["all"]["capabilities"]["negation"]["default_rule"] == right / 4

    checklist.main(["--data", str(data), "--split", "heldout"])
    text = capsys.readouterr().out
    assert "[heldout]" in text and "[dev]" not in text and "invariance" in text and "overall" in text
