"""Ticker-linking quality and speed on the gold set (tests/fixtures/linking_gold.jsonl).

    python bench/linking.py                 # table: every configuration
    python bench/linking.py --json          # one JSON object
    python bench/linking.py --errors        # also list each wrong or missed link
    python bench/linking.py --tagger DIR    # also a real tagger artifact (models.tagger)

Configurations:
  * ``cues``   -- no tagger; ambiguous names need a context cue (the default ``Linker``);
  * ``none``   -- no tagger; ambiguous names count only when corroborated;
  * ``oracle`` -- a perfect disambiguator: an ``org_spans`` that marks exactly the ambiguous
    name candidates whose company is in the gold set of that text. An upper bound for any tagger
    behind this candidate generator (it cannot recover names the automaton never proposes);
  * ``tagger`` -- a real tagger (``--tagger default`` = the shipped artifact), when asked for:
    the tagger confirms ambiguous names, context cues settle what it did not confirm (what the
    worker runs with ``FINSENT_TAGGER``);
  * ``tagger-only`` -- the same tagger with no cues: ambiguous names count only when it confirms.

Slices: ``per_tag["heldout-cues"]`` (the ``blind`` columns) is 100 texts written blind after the
cue rules (``fallback="cues"``) were fixed; ``development`` is every other text.
``per_tag["heldout-tagger"]`` is the 100 texts written blind after the tagger rules
(``_org_confirms``, ``ORG_THRESHOLD``) were fixed; the cue rules were revised later with them in
view (tests/fixtures/README.md). ``--errors`` lists the development slice's errors only, so that
looking at them does not spoil the blind slice; ``--blind-errors`` lists those too.

Metrics are micro-averaged over links: a link is a (text, symbol) pair; precision = correct /
predicted, recall = correct / gold. Throughput is texts per second of ``Linker.link_texts`` over
the gold texts repeated (single thread), after building the linker.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):  # first, or bench/pipeline.py would shadow the package
    sys.path.insert(0, str(ROOT))

from pipeline.linking import Linker, OrgSpans
from pipeline.universe import Universe, load_universe

GOLD = ROOT / "tests" / "fixtures" / "linking_gold.jsonl"
#: Slices written blind (tests/fixtures/README.md): ``heldout-tagger`` after the tagger rules were
#: fixed (the cue rules were revised afterwards with it in view), ``heldout-cues`` after the cue
#: rules were. ``development`` is everything else.
TAGGER_BLIND = "heldout-tagger"
BLIND = "heldout-cues"


def load_gold(path: Path = GOLD) -> list[dict[str, Any]]:
    """Gold records: ``{"id", "kind", "text", "symbols": [...], "tags": [...]}``."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def oracle_tagger(universe: Universe, gold: list[dict[str, Any]]) -> OrgSpans:
    """An ``org_spans`` that knows the answers: ORG = an alias match whose company is gold."""
    from pipeline.linking import NameMatcher

    matcher = NameMatcher(universe)
    answers = {g["text"]: set(g["symbols"]) for g in gold}

    def org_spans(texts: list[str]) -> list[list[tuple[int, int, float]]]:
        out = []
        for t in texts:
            want = answers.get(t, set())
            out.append([(s, e, 1.0) for s, e, a in matcher.find(t) if a.symbol in want])
        return out

    return org_spans


def evaluate(linker: Linker, gold: list[dict[str, Any]]) -> dict[str, Any]:
    """Micro precision / recall / F1 over (text, symbol) links, overall and per tag."""
    predicted = linker.link_texts([g["text"] for g in gold])
    tp = fp = fn = 0
    per_tag: dict[str, list[int]] = {}
    errors = []
    for g, links in zip(gold, predicted):
        pred = {t.symbol for t in links}
        want = set(g["symbols"])
        t_tp, t_fp, t_fn = len(pred & want), len(pred - want), len(want - pred)
        tp, fp, fn = tp + t_tp, fp + t_fp, fn + t_fn
        for tag in g.get("tags", []):
            c = per_tag.setdefault(tag, [0, 0, 0])
            c[0] += t_tp
            c[1] += t_fp
            c[2] += t_fn
        if t_fp or t_fn:
            errors.append(
                {
                    "id": g["id"],
                    "text": g["text"],
                    "extra": sorted(pred - want),
                    "missed": sorted(want - pred),
                }
            )
    return {
        **_prf(tp, fp, fn),
        "texts": len(gold),
        "per_tag": {tag: _prf(*c) for tag, c in sorted(per_tag.items())},
        "errors": errors,
    }


def _prf(tp: int, fp: int, fn: int) -> dict[str, Any]:
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4), "tp": tp, "fp": fp, "fn": fn}


def throughput(linker: Linker, texts: list[str], seconds: float = 1.0) -> float:
    """Texts per second of ``link_texts`` in batches of 256."""
    batch = (texts * (256 // max(1, len(texts)) + 1))[:256]
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        linker.link_texts(batch)
        n += len(batch)
    return n / elapsed


def run(tagger_dir: str | None = None, measure_speed: bool = True) -> dict[str, Any]:
    gold = load_gold()
    t0 = time.perf_counter()
    universe = load_universe()
    build_s = time.perf_counter() - t0
    configs: dict[str, Linker] = {
        "cues": Linker(universe, fallback="cues"),
        "none": Linker(universe, fallback="none"),
        "oracle": Linker(universe, oracle_tagger(universe, gold), fallback="none"),
    }
    if tagger_dir:
        from models.tagger import TokenTagger

        tagger = TokenTagger.load(None if tagger_dir == "default" else tagger_dir)
        configs["tagger"] = Linker(universe, tagger.org_spans)
        configs["tagger-only"] = Linker(universe, tagger.org_spans, fallback="none")
    out: dict[str, Any] = {
        "gold": str(GOLD.relative_to(ROOT)),
        "texts": len(gold),
        "gold_links": sum(len(g["symbols"]) for g in gold),
        "companies": len(universe),
        "aliases": len(universe.aliases),
        "ambiguous_aliases": sum(a.ambiguous for a in universe.aliases),
        "universe_build_s": round(build_s, 3),
        "configs": {},
    }
    texts = [g["text"] for g in gold]
    development = [g for g in gold if BLIND not in g["tags"]]
    for name, linker in configs.items():
        res = evaluate(linker, gold)
        res["development"] = {k: v for k, v in evaluate(linker, development).items() if k != "errors"}
        if measure_speed and not name.startswith("tagger"):
            res["texts_per_s"] = round(throughput(linker, texts))
        out["configs"][name] = res
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--errors", action="store_true", help="list wrong and missed links (development slice)")
    ap.add_argument("--blind-errors", action="store_true", help="with --errors: the blind slice's too")
    ap.add_argument("--tagger", help="also evaluate a tagger artifact directory ('default': the shipped one)")
    ap.add_argument("--no-speed", action="store_true", help="skip the throughput measurement")
    args = ap.parse_args(argv)
    report = run(args.tagger, measure_speed=not args.no_speed)
    if args.json:
        if not args.errors:
            for res in report["configs"].values():
                res.pop("errors")
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
        return 0
    print(
        f"gold: {report['texts']} texts, {report['gold_links']} links; universe: {report['companies']} "
        f"companies, {report['aliases']} aliases ({report['ambiguous_aliases']} ambiguous), "
        f"built in {report['universe_build_s']} s"
    )
    print(
        f"{'config':11} {'precision':>9} {'recall':>7} {'f1':>7} {'tp':>5} {'fp':>4} {'fn':>4} {'texts/s':>9}"
        f"   {'dev P':>6} {'dev R':>6}   {'blind P':>7} {'blind R':>7}   {'tagger-blind P/R':>16}"
    )
    for name, res in report["configs"].items():
        dev, blind, tb = (
            res["development"],
            res["per_tag"].get(BLIND, {}),
            res["per_tag"].get(TAGGER_BLIND, {}),
        )
        print(
            f"{name:11} {res['precision']:9.4f} {res['recall']:7.4f} {res['f1']:7.4f} {res['tp']:5d} "
            f"{res['fp']:4d} {res['fn']:4d} {res.get('texts_per_s', float('nan')):9.0f}"
            f"   {dev['precision']:6.3f} {dev['recall']:6.3f}   {blind.get('precision', float('nan')):7.3f}"
            f" {blind.get('recall', float('nan')):7.3f}"
            f"   {tb.get('precision', float('nan')):8.3f} {tb.get('recall', float('nan')):.3f}"
        )
    if args.errors:
        blind_ids = {g["id"] for g in load_gold() if BLIND in g["tags"]}
        for name, res in report["configs"].items():
            print(f"\n[{name}] errors:")
            hidden = 0
            for e in res["errors"]:
                if not args.blind_errors and e["id"] in blind_ids:
                    hidden += 1
                    continue
                print(f"  {e['id']} extra={e['extra']} missed={e['missed']}  {e['text']}")
            if hidden:
                print(f"  ({hidden} errors on the blind slice not shown: --blind-errors)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
