"""bench/targets_eval.py: the per-target evaluation set's rules and its text-free manifest.

Hand-written fixture records (invented texts, no dataset text) for the rules; the tests that read
the shared data skip where FINSENT_DATA_DIR (or ../shared/data) lacks the target-level sets.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_targets_eval", ROOT / "bench" / "targets_eval.py")
te = importlib.util.module_from_spec(_spec)
sys.modules["bench_targets_eval"] = te  # dataclasses look their module up
_spec.loader.exec_module(te)

MB, HL, FH, FP = te.DATASETS


def mb(id_: str, text: str, target: str, score: float, source: str = "stocktwits") -> te.Row:
    return te.Row(id_, text, target, score, source)


def hl(id_: str, text: str, target: str, score: float) -> te.Row:
    return te.Row(id_, text, target, score)


#: Invented records in the layout of the shared files (see te.parse_rows).
FIXTURE = {
    MB: [
        # one StockTwits message, per-cashtag spans: a differing multi item
        mb("101", "$AAA beats estimates", "$AAA", 0.62),
        mb("101", "$BBB misses badly", "$BBB", -0.55),
        # one tweet annotated in train (exact id) and test (id rounded to float64 upstream)
        mb("719904304207962112", "wobbly open today", "$CCC", 0.41, "twitter"),
        mb("719904304207962100", "wobbly open today", "$DDD", -0.05, "twitter"),
        # the same cashtag annotated twice, and a span contained in the other
        mb("102", "nice breakout", "$EEE", 0.4),
        mb("102", "nice breakout forming", "$EEE", 0.6),
        # agreeing multi item: neither multi nor control
        mb("103", "whole sector ripping", "$FFF", 0.5),
        mb("103", "whole sector ripping", "$GGG", 0.45),
        *(mb(str(200 + i), f"single fixture message number {i}", f"$S{i}", 0.3 - 0.1 * (i % 7))
          for i in range(40)),
    ],
    HL: [
        hl("7", "Acme Corp wins contract from Beta Group", "Acme Corp", 0.5),
        hl("8", "Acme Corp wins contract from Beta Group", "Beta Group", -0.3),
        *(hl(str(300 + i), f"Invented headline {i} about Gamma plc", "Gamma plc", -0.4) for i in range(30)),
    ],
    FH: [  # the same headline as above, annotated again: a duplicate of the SemEval item
        hl("1", "Acme Corp wins contract from Beta Group", "Acme Corp", 0.3),
        hl("1", "Acme Corp wins contract from Beta Group", "Beta Group", -0.2),
        hl("2", "Delta Inc names new chief executive", "Delta Inc", 0.1),
    ],
    FP: [hl("14860", "Adding some $ZZZ here, long setup", "ZZZ", 0.45)],
}


def fixture_texts() -> list[str]:
    return [r.text for rows in FIXTURE.values() for r in rows]


# ------------------------------------------------------------------ rules


@pytest.mark.parametrize("score, want", [
    (1.0, "positive"), (0.1, "positive"), (0.0999, "neutral"), (0.0, "neutral"),
    (-0.0999, "neutral"), (-0.1, "negative"), (-1.0, "negative"),
])
def test_label_thresholds(score, want):
    assert te.label(score) == want


@pytest.mark.parametrize("scores, want", [
    ([0.5, -0.5], True),  # opposite signs, far apart
    ([0.35, 0.05], True),  # positive vs neutral, 0.3 apart
    ([0.12, 0.08], False),  # labels differ but the gap is tiny
    ([0.4, 0.9], False),  # same label, however far apart
    ([0.2, -0.05], False),  # labels differ, gap 0.25
    ([0.3, 0.3, -0.2], True),  # any pair counts
    ([0.7], False),  # one target
])
def test_differing_rule(scores, want):
    assert te.differing(scores) is want


def test_opposed_needs_a_positive_and_a_negative():
    assert te.opposed([0.5, -0.5]) and not te.opposed([0.5, 0.0]) and not te.opposed([-0.3, 0.05])


def test_split_is_deterministic_text_based_and_balanced():
    texts = [f"invented text {i} $T{i % 17}" for i in range(2000)]
    first = [te.split_of(t) for t in texts]
    assert first == [te.split_of(t) for t in texts]
    # the split key is the normalised text: case and whitespace do not move an item
    assert all(te.split_of(t) == te.split_of("  " + t.upper().replace(" ", "\t ")) for t in texts[:200])
    share = Counter(first)["heldout"] / len(first)
    assert abs(share - te.HELDOUT_SHARE) < 0.04
    other = [te.split_of(t, seed="another seed") for t in texts]
    assert other != first  # the seed matters


# ------------------------------------------------------------------ items and selection


def test_microblog_message_grouping_and_text():
    items = {it.key: it for it in te.build_items(MB, FIXTURE[MB])}
    msg = items["msg:stocktwits:101"]
    assert msg.text == "$AAA beats estimates $BBB misses badly"
    assert msg.is_differing and te.opposed(msg.scores)
    # float64-rounded test id joins the exact train id; the key keeps the exact one
    tweet = items["msg:twitter:719904304207962112"]
    assert [t.target for t in tweet.targets] == ["$CCC", "$DDD"] and tweet.text == "wobbly open today"
    assert tweet.is_differing and not te.opposed(tweet.scores)
    # a cashtag annotated twice counts once with its mean; a contained span is not repeated
    twice = items["msg:stocktwits:102"]
    assert len(twice.targets) == 1 and twice.targets[0].score == 0.5 and twice.targets[0].rows == ["102", "102"]
    assert twice.text == "nice breakout forming"


def test_headlines_group_by_text_not_id():
    items = te.build_items(HL, FIXTURE[HL])
    acme = [it for it in items if "Acme" in it.text]
    assert len(acme) == 1 and acme[0].key.startswith("text:")
    assert {t.target for t in acme[0].targets} == {"Acme Corp", "Beta Group"}


def test_select_multi_control_and_dedupe():
    sel = te.select(FIXTURE)
    keys = {(it.dataset, it.key) for it in sel.multi}
    assert (MB, "msg:stocktwits:101") in keys and (MB, "msg:twitter:719904304207962112") in keys
    assert not any(it.key == "msg:stocktwits:103" for it in sel.multi + sel.control)  # agreeing: neither
    assert sum(it.dataset == HL for it in sel.multi) == 1
    assert not any(it.dataset == FH for it in sel.multi)  # the FiQA copy of the headline is a duplicate
    assert sel.stats[FH]["duplicates_dropped"] == 1
    assert all(len(it.targets) == 1 for it in sel.control)
    # control: as many single-target items per (dataset, split) as there are multi items
    def per(items):
        return Counter((it.dataset, te.split_of(it.text)) for it in items)
    assert per(sel.control) == per(sel.multi)
    assert not {te.normalise(it.text) for it in sel.control} & {te.normalise(it.text) for it in sel.multi}
    assert te.select(FIXTURE).control == sel.control  # deterministic


def test_row_splits_follow_the_item():
    splits = te.row_splits(MB, FIXTURE[MB])
    by_item: dict[tuple[str, ...], set[str]] = {}
    for row, s in zip(FIXTURE[MB], splits, strict=True):
        by_item.setdefault(te.group_key(MB, row), set()).add(s)
    assert len(by_item[te.group_key(MB, FIXTURE[MB][2])]) == 1  # both ids of the tweet
    assert all(len(v) == 1 for v in by_item.values())
    items = {te.group_key(MB, r): it for it in te.build_items(MB, FIXTURE[MB]) for r in FIXTURE[MB]
             if te.rows_for_key(MB, it.key, [r])}
    assert all(splits[i] == te.split_of(items[te.group_key(MB, r)].text) for i, r in enumerate(FIXTURE[MB]))


# ------------------------------------------------------------------ manifest


def _write_manifest(tmp_path: Path, rows=FIXTURE) -> Path:
    sel = te.select(rows)
    path = tmp_path / "targets_eval.json"
    path.write_text(te.dump_manifest(te.manifest_records(sel), {"x.jsonl": "0" * 64}), encoding="utf-8")
    return path


def test_manifest_round_trip(tmp_path):
    path = _write_manifest(tmp_path)
    manifest = json.loads(path.read_text(encoding="utf-8"))
    sel = te.select(FIXTURE)
    resolved = te.resolve(manifest, FIXTURE)
    assert [r.text for r in resolved] == [it.text for it in sel.multi + sel.control]
    assert [r.set for r in resolved] == ["multi"] * len(sel.multi) + ["control"] * len(sel.control)
    first = resolved[0]
    assert first.targets == [{"target": "$AAA", "score": 0.62, "label": "positive"},
                             {"target": "$BBB", "score": -0.55, "label": "negative"}]


def test_manifest_holds_no_text(tmp_path):
    raw = _write_manifest(tmp_path).read_text(encoding="utf-8")
    manifest = json.loads(raw)
    for item in manifest["items"]:
        assert set(item) <= te.ITEM_FIELDS
        assert all(set(t) <= te.TARGET_FIELDS for t in item["targets"])
    for text in fixture_texts():
        assert text not in raw
        assert json.dumps(text)[1:-1] not in raw


def test_resolve_fails_when_the_data_changed(tmp_path):
    manifest = json.loads(_write_manifest(tmp_path).read_text(encoding="utf-8"))
    edited = {**FIXTURE, MB: [te.Row(r.id, r.text.replace("misses", "beats"), r.target, r.score, r.source)
                              for r in FIXTURE[MB]]}
    with pytest.raises(te.ManifestError, match="rebuilt text differs"):
        te.resolve(manifest, edited)
    rescored = {**FIXTURE, MB: [te.Row(r.id, r.text, r.target, -r.score if r.target == "$BBB" else r.score,
                                       r.source) for r in FIXTURE[MB]]}
    with pytest.raises(te.ManifestError, match=r"\$BBB"):
        te.resolve(manifest, rescored)
    missing = {**FIXTURE, MB: [r for r in FIXTURE[MB] if r.id != "101"]}
    with pytest.raises(te.ManifestError, match="no rows"):
        te.resolve(manifest, missing)


# ------------------------------------------------------------------ the shared data


@pytest.fixture
def target_data(public_data: Path) -> Path:
    missing = [d for d in te.DATASETS if not (public_data / te.REGISTRY[d].path).is_file()]
    if missing:
        pytest.skip(f"target-level datasets absent under {public_data}: {missing}")
    return public_data


def test_shipped_manifest_resolves_and_holds_no_text(target_data):
    rows, _ = te.load_all(target_data)
    raw = te.MANIFEST.read_text(encoding="utf-8")
    manifest = json.loads(raw)
    resolved = te.resolve(manifest, rows)
    assert len(resolved) == len(manifest["items"]) > 0
    assert all(r.set == "control" or te.differing([t["score"] for t in r.targets]) for r in resolved)
    texts = {r.text for rs in rows.values() for r in rs} | {r.text for r in resolved}
    targets = {t["target"] for it in manifest["items"] for t in it["targets"]}
    leaked = [t for t in texts if len(t) >= 12 and t not in targets and (t in raw or json.dumps(t)[1:-1] in raw)]
    assert leaked == []
    # the shipped manifest is what the rules give today
    assert te.manifest_records(te.select(rows)) == manifest["items"]


def test_cli_check(target_data, capsys):
    assert te.main(["--data-dir", str(target_data), "--check", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["total"]["multi_heldout"] > 0
    assert summary["total"]["control_heldout"] == summary["total"]["multi_heldout"]
