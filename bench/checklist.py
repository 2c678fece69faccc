"""CheckList-style behavioural tests (Ribeiro et al. 2020) for the sentiment model.

Hand-written cases in ``bench/data/checklist.jsonl``, one JSON object per line, grouped by the
capability they probe:

  negation    "not bad", "failed to", "no longer", "no sign of", ... in both directions
  emoji       🚀📈💰 bullish, 📉💀🩸 bearish, 📅📰 neutral, alone and with cashtags
  slang       fintwit: to the moon, puts printing, falling knife, bagholders, rekt, BTFD, ...
  contrast    "beats on EPS but guides lower", "misses estimates yet stock rallies"
  neutral     scheduled announcements: earnings dates, filings, unchanged dividends, AGMs
  plain       plain, unambiguous positive/negative headlines
  invariance  a URL, a cashtag, an "RT @user:" prefix or another company must not change the label

Labelled cases: ``{"id", "capability", "text", "label", "split"}``; invariance cases:
``{"id", "capability": "invariance", "text", "variant", "perturbation", "split"}`` and pass when
``text`` and ``variant`` get the same label. ``split`` is ``dev`` or ``heldout``: look at and fix
against ``dev`` only; ``heldout`` is for the before/after comparison.

The model is loaded as ``finsent score`` loads it (``pipeline.inference``: Settings, the
``FINSENT_*`` variables, the model's tuned exit rule unless ``--rule``/``FINSENT_EXIT_RULE``).
All exits' probabilities are computed once, as ``finsent eval`` does: the full-depth prediction
is the last exit's argmax, and the default rule is replayed over them with ``exits.simulate``
(the same ``step`` calls the engine makes). Per capability it reports n, accuracy at full depth
and under the rule (invariance: the share of pairs with equal labels), the wrong answers under the
rule that exited at layer <= 2 with confidence >= 0.9 ("confidently wrong early"), and the mean
exit layer.

    python bench/checklist.py                       # dev split, a table
    python bench/checklist.py --split all --json    # dev, heldout and all in one JSON object
    python bench/checklist.py --model runs/new --data my_cases.jsonl
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson

DATA = Path(__file__).resolve().parent / "data" / "checklist.jsonl"
LABELS = ("negative", "neutral", "positive")
CAPABILITIES = ("negation", "emoji", "slang", "contrast", "neutral", "plain", "invariance")
PERTURBATIONS = ("url", "cashtag", "rt_prefix", "company_swap")
SPLITS = ("dev", "heldout")
#: Minimum cases per capability in the shipped case file (tests/test_checklist.py checks it).
MIN_CASES = {c: 40 if c == "invariance" else 30 for c in CAPABILITIES}
#: "Confidently wrong early": a wrong answer that exited at layer <= EARLY_LAYER with
#: max-probability >= EARLY_CONFIDENCE.
EARLY_LAYER = 2
EARLY_CONFIDENCE = 0.9

LABELLED_FIELDS = {"id", "capability", "text", "label", "split"}
INVARIANCE_FIELDS = {"id", "capability", "text", "variant", "perturbation", "split"}


# ------------------------------------------------------------------ cases


def check_cases(cases: Sequence[Mapping[str, Any]]) -> list[str]:
    """Everything wrong with a list of cases, one line each (empty: well-formed). Checks fields,
    labels, splits, perturbations, unique ids, non-empty texts and variants that differ from
    their texts; not how many cases there are (``coverage_problems``)."""
    problems, seen = [], set()
    for n, case in enumerate(cases, 1):
        where = f"case {n} ({case.get('id', 'no id')})"
        cap = case.get("capability")
        if cap not in CAPABILITIES:
            problems.append(f"{where}: capability {cap!r} is not one of {list(CAPABILITIES)}")
            continue
        want = INVARIANCE_FIELDS if cap == "invariance" else LABELLED_FIELDS
        if set(case) != want:
            problems.append(f"{where}: fields {sorted(case)}, expected {sorted(want)}")
            continue
        if not isinstance(case["id"], str) or not case["id"]:
            problems.append(f"{where}: id must be a non-empty string")
        elif case["id"] in seen:
            problems.append(f"{where}: duplicate id")
        seen.add(case["id"])
        if case["split"] not in SPLITS:
            problems.append(f"{where}: split {case['split']!r} is not one of {list(SPLITS)}")
        texts = [case["text"]] + ([case["variant"]] if cap == "invariance" else [])
        if not all(isinstance(t, str) and t.strip() for t in texts):
            problems.append(f"{where}: empty or non-string text")
            continue
        if cap == "invariance":
            if case["perturbation"] not in PERTURBATIONS:
                problems.append(f"{where}: perturbation {case['perturbation']!r} is not one of {list(PERTURBATIONS)}")
            if case["variant"].strip() == case["text"].strip():
                problems.append(f"{where}: variant equals text")
        elif case["label"] not in LABELS:
            problems.append(f"{where}: label {case['label']!r} is not one of {list(LABELS)}")
    return problems


def coverage_problems(cases: Sequence[Mapping[str, Any]], minimum: Mapping[str, int] = MIN_CASES) -> list[str]:
    """Capabilities with fewer cases than ``minimum`` or without both splits."""
    problems = []
    for cap, least in minimum.items():
        mine = [c for c in cases if c["capability"] == cap]
        if len(mine) < least:
            problems.append(f"{cap}: {len(mine)} cases, at least {least} needed")
        if missing := set(SPLITS) - {c["split"] for c in mine}:
            problems.append(f"{cap}: no {sorted(missing)} cases")
    return problems


def load_cases(path: str | Path) -> list[dict[str, Any]]:
    """The cases of a JSONL file; ValueError naming every problem if it is not well-formed (TypeError
    for a line that is JSON but not an object)."""
    cases = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            case = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n}: not JSON ({exc})") from None
        if not isinstance(case, dict):
            raise TypeError(f"{path}:{n}: not a JSON object")
        cases.append(case)
    if problems := check_cases(cases):
        raise ValueError(f"{path}: " + "; ".join(problems))
    return cases


def case_texts(cases: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every text the cases need scored (texts, then invariance variants), each once, in order."""
    out = dict.fromkeys(c["text"] for c in cases)
    out.update(dict.fromkeys(c["variant"] for c in cases if c["capability"] == "invariance"))
    return list(out)


# ------------------------------------------------------------------ predictions and scoring


@dataclass(frozen=True)
class Pred:
    """One text's answer: its label, the max-probability behind it and the 1-based exit layer."""

    label: str
    confidence: float
    exit_layer: int

    @property
    def confident_early(self) -> bool:
        return self.exit_layer <= EARLY_LAYER and self.confidence >= EARLY_CONFIDENCE


def predict(model: Any, rule: Any, texts: Sequence[str]) -> tuple[dict[str, Pred], dict[str, Pred]]:
    """``texts`` -> (full-depth answers, answers under ``rule``), keyed by text.

    One forward pass through every exit (``train.exit_probabilities``, as ``finsent eval``); the
    rule is replayed over it with ``exits.simulate``, the engine's own ``step``.
    """
    from models.exits import simulate
    from models.train import exit_probabilities

    ids, _ = model.encode(list(texts))
    device = str(next(model.parameters()).device)
    all_probs = exit_probabilities(model, ids, device=device)  # [L, N, C]
    labels = list(model.labels)
    last = all_probs[-1]
    full_conf, full_pred = last.max(-1)
    sim = simulate(rule, all_probs)
    early_conf = sim.probs.max(-1).values
    full, early = {}, {}
    for i, text in enumerate(texts):
        full[text] = Pred(labels[int(full_pred[i])], float(full_conf[i]), all_probs.shape[0])
        early[text] = Pred(labels[int(sim.pred[i])], float(early_conf[i]), int(sim.exit_layer[i]))
    return full, early


def _outcome(case: Mapping[str, Any], preds: Mapping[str, Pred]) -> tuple[bool, bool]:
    """(passed, confidently wrong early) of one case under one set of answers."""
    if case["capability"] == "invariance":
        a, b = preds[case["text"]], preds[case["variant"]]
        passed = a.label == b.label
        return passed, not passed and (a.confident_early or b.confident_early)
    p = preds[case["text"]]
    passed = p.label == case["label"]
    return passed, not passed and p.confident_early


def _share(k: int, n: int) -> float | None:
    return round(k / n, 4) if n else None


def _group(cases: Sequence[Mapping[str, Any]], full: Mapping[str, Pred], early: Mapping[str, Pred]) -> dict[str, Any]:
    full_ok = [_outcome(c, full)[0] for c in cases]
    early_out = [_outcome(c, early) for c in cases]
    wrong = sum(not ok for ok, _ in early_out)
    confident = sum(ce for _, ce in early_out)
    layers = [early[t].exit_layer for c in cases
              for t in ([c["text"], c["variant"]] if c["capability"] == "invariance" else [c["text"]])]
    return {
        "n": len(cases),
        "full_depth": _share(sum(full_ok), len(cases)),
        "default_rule": _share(sum(ok for ok, _ in early_out), len(cases)),
        "wrong": wrong,
        "confidently_wrong_early": confident,
        "confidently_wrong_early_share": _share(confident, wrong),
        "mean_exit_layer": round(sum(layers) / len(layers), 3) if layers else None,
    }


def score(cases: Sequence[Mapping[str, Any]], full: Mapping[str, Pred], early: Mapping[str, Pred]) -> dict[str, Any]:
    """Per-capability and overall results of ``cases`` given full-depth and default-rule answers
    (keyed by text; ``case_texts`` lists the texts needed).

    Per capability: n; ``full_depth`` and ``default_rule`` accuracy (invariance: the share of pairs
    given equal labels); ``wrong`` under the rule; ``confidently_wrong_early``, how many of those
    exited at layer <= 2 with confidence >= 0.9 (an invariance pair: either side did), and its
    share of ``wrong``; ``mean_exit_layer`` under the rule over every text scored (both sides of a
    pair). Labelled capabilities break accuracy down ``by_label``, invariance ``by_perturbation``.
    ``overall`` counts every case once (a pair is one case); ``macro`` averages the capabilities.
    """
    caps: dict[str, Any] = {}
    for cap in CAPABILITIES:
        mine = [c for c in cases if c["capability"] == cap]
        if not mine:
            continue
        row = _group(mine, full, early)
        key, values = ("perturbation", PERTURBATIONS) if cap == "invariance" else ("label", LABELS)
        row[f"by_{key}"] = {
            v: {k: r[k] for k in ("n", "full_depth", "default_rule")}
            for v in values if (r := _group([c for c in mine if c[key] == v], full, early))["n"]
        }
        caps[cap] = row
    out: dict[str, Any] = {"capabilities": caps, "overall": _group(cases, full, early)}
    if caps:
        out["macro"] = {k: round(sum(r[k] for r in caps.values()) / len(caps), 4)
                        for k in ("full_depth", "default_rule")}
    return out


def split_results(cases: Sequence[Mapping[str, Any]], full: Mapping[str, Pred], early: Mapping[str, Pred],
                  split: str) -> dict[str, Any]:
    """``score`` of the cases of ``split`` (``dev``/``heldout``), or of dev, heldout and all (``all``)."""
    names = [*SPLITS, "all"] if split == "all" else [split]
    return {s: score([c for c in cases if s == "all" or c["split"] == s], full, early) for s in names}


# ------------------------------------------------------------------ command line


def table(report: dict[str, Any]) -> str:
    """The compact human-readable form of ``main``'s report."""
    rule = report["rule"]
    params = ",".join(f"{k}={v}" for k, v in rule["params"].items())
    head = f"model {report['model_version']}  rule {rule['rule']}{':' + params if params else ''}"
    lines = [f"{head}  data {report['data']}"]

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}"

    for split in (s for s in (*SPLITS, "all") if s in report):
        res = report[split]
        header = f"{'[' + split + ']':<11} {'n':>4} {'full%':>6} {'rule%':>6} {'wrong':>6} {'conf.early':>12} {'exit':>5}"
        lines += ["", header]
        rows = [*res["capabilities"].items(), ("overall", res["overall"])]
        for name, r in rows:
            early = f"{r['confidently_wrong_early']} ({pct(r['confidently_wrong_early_share']).strip()}%)"
            lines.append(f"{name:<11} {r['n']:>4} {pct(r['full_depth']):>6} {pct(r['default_rule']):>6} "
                         f"{r['wrong']:>6} {early:>12} {r['mean_exit_layer']:>5.2f}")
        if "macro" in res:
            lines.append(f"{'macro':<11} {'':>4} {pct(res['macro']['full_depth']):>6} "
                         f"{pct(res['macro']['default_rule']):>6}")
    lines.append(f"\nconf.early: wrong under the rule, exited at layer <= {EARLY_LAYER} with confidence >= "
                 f"{EARLY_CONFIDENCE}; invariance: a pair is right when both texts get the same label")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="model directory (default: the shipped model)")
    ap.add_argument("--split", default="dev", choices=[*SPLITS, "all"],
                    help="cases to score; 'all' reports dev, heldout and all, from one pass (default: dev)")
    ap.add_argument("--data", type=Path, default=DATA, help=f"case file (default: {DATA.relative_to(ROOT)})")
    ap.add_argument("--rule", default=None, help="exit rule spec (default: FINSENT_EXIT_RULE, else the model's tuned rule)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--cases", action="store_true", help="with --json: add every scored case's answers")
    args = ap.parse_args(argv)

    try:
        cases = load_cases(args.data)
    except (OSError, ValueError, TypeError) as exc:
        sys.exit(f"error: {exc}")
    cases = [c for c in cases if args.split == "all" or c["split"] == args.split]
    if not cases:
        sys.exit(f"error: {args.data} has no {args.split} cases")

    from pipeline.inference import exit_rule, load_model
    from pipeline.settings import Settings

    overrides = {"model_dir": args.model, "threads": args.threads, "exit_rule": args.rule}
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    try:
        model = load_model(settings)
        rule = exit_rule(settings, model)
    except (FileNotFoundError, ValueError) as exc:
        sys.exit(f"error: {exc}")
    full, early = predict(model, rule, case_texts(cases))

    data = args.data.resolve()
    report: dict[str, Any] = {
        "model_version": model.config.version,
        "rule": rule.describe(),
        "num_layers": model.num_layers,
        "data": str(data.relative_to(ROOT)) if data.is_relative_to(ROOT) else str(data),
        "confidently_wrong_early": {"max_exit_layer": EARLY_LAYER, "min_confidence": EARLY_CONFIDENCE},
        **split_results(cases, full, early, args.split),
    }
    if args.json and args.cases:
        report["cases"] = [
            {**c, **{f"{name}_{t}": {"label": p[c[t]].label, "confidence": round(p[c[t]].confidence, 4),
                                     "exit_layer": p[c[t]].exit_layer}
                     for name, p in (("full", full), ("rule", early)) for t in ("text", "variant") if t in c}}
            for c in cases
        ]
    if args.json:
        print(orjson.dumps(report).decode())
    else:
        print(table(report))


if __name__ == "__main__":
    main()
