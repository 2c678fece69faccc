"""Two models on the same labelled texts, paired: is the candidate better, worse, or a tie?

For each model: accuracy and macro-F1 at full depth and under its own default exit rule, mean exit
layer, and expected calibration error per exit. For the candidate minus the baseline: the
difference in texts with both discordant counts and a 95 % paired-bootstrap interval of the
accuracy difference (``models.evaluate.paired_difference``, as ``finsent eval`` compares rules),
and a 95 % paired-bootstrap interval of the macro-F1 difference. A verdict is ``above``/``below``
only when its interval excludes 0.

    FINSENT_DATA_DIR=../shared/data python bench/compare_models.py --candidate runs/new \\
        [--baseline models/artifacts/elbert-minilm-tfns] [--data twitter_financial_news/validation] [--json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from models.datasets import LabelledTexts

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):  # first, or bench/pipeline.py would shadow the package
    sys.path.insert(0, str(ROOT))


def f1_difference(gold: np.ndarray, first: np.ndarray, second: np.ndarray, n_resamples: int = 1000,
                  seed: int = 0) -> dict[str, Any]:
    """Macro-F1 of ``first`` minus ``second`` ([N] label arrays against ``gold``), with a 95 %
    paired-bootstrap percentile interval (the same resampled texts for both)."""
    import numpy as np

    from models.scoring import macro_f1

    rng = np.random.default_rng(seed)
    n, c = len(gold), int(max(gold.max(), first.max(), second.max())) + 1
    diffs = []
    for _ in range(n_resamples):
        i = rng.integers(0, n, n)
        diffs.append(macro_f1(first[i], gold[i], c) - macro_f1(second[i], gold[i], c))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    diff = macro_f1(first, gold, c) - macro_f1(second, gold, c)
    verdict = "above" if lo > 0 else "below" if hi < 0 else "tie"
    return {"difference": round(float(diff), 4), "ci95": [round(float(lo), 4), round(float(hi), 4)], "verdict": verdict}


def side(model_dir: Path, data: LabelledTexts) -> dict[str, Any]:
    """One model's per-exit probabilities on ``data`` and what the comparison needs of them."""
    import torch

    from models.elbert import ElbertClassifier
    from models.exits import make_rule, simulate
    from models.scoring import exit_probabilities, expected_calibration_error, macro_f1

    model = ElbertClassifier.load(model_dir)
    ids, _ = model.encode(data.texts)
    probs = exit_probabilities(model, ids, device="cpu", progress=True)  # [L, N, C]
    gold = torch.tensor(data.labels)
    rule = make_rule(model.config.default_rule["rule"], **model.config.default_rule.get("params", {}))
    sim = simulate(rule, probs)
    full = probs[-1].argmax(-1)
    c = probs.shape[-1]
    return {
        "model": model.config.version,
        "dir": str(model_dir),
        "default_rule": model.config.default_rule,
        "text_normalization": model.config.text_normalization,
        "full_depth": {"accuracy": round(float((full == gold).double().mean()), 4),
                       "macro_f1": round(macro_f1(full.numpy(), gold.numpy(), c), 4)},
        "default_rule_result": {"accuracy": round(float((sim.pred == gold).double().mean()), 4),
                                "macro_f1": round(macro_f1(sim.pred.numpy(), gold.numpy(), c), 4),
                                "mean_exit_layer": round(float(sim.exit_layer.double().mean()), 3)},
        "ece_per_exit": [round(expected_calibration_error(probs[i], gold), 4) for i in range(probs.shape[0])],
        "_full": full, "_rule": sim.pred, "_gold": gold,
    }


def compare(candidate: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    from models.evaluate import paired_difference

    gold = candidate["_gold"].numpy()
    out = {}
    for key in ("_full", "_rule"):
        name = "full_depth" if key == "_full" else "default_rule"
        a, b = candidate[key], baseline[key]
        out[name] = {
            "accuracy": paired_difference(a == candidate["_gold"], b == baseline["_gold"]),
            "macro_f1": f1_difference(gold, a.numpy(), b.numpy()),
        }
    return out


def main() -> None:
    from models.datasets import read_labelled_csv, resolve_data
    from models.elbert import DEFAULT_MODEL_DIR
    from pipeline.settings import Settings

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--candidate", type=Path, required=True, help="model directory to judge")
    ap.add_argument("--baseline", type=Path, default=DEFAULT_MODEL_DIR, help="model to judge it against (shipped)")
    ap.add_argument("--data", default="twitter_financial_news/validation",
                    help="labelled CSV, or a dataset name under FINSENT_DATA_DIR")  # fmt: skip
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    try:
        path = resolve_data(args.data, Settings().data_dir)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    data = read_labelled_csv(path)
    cand, base = side(args.candidate, data), side(args.baseline, data)
    report = {
        "data": str(path), "n": len(data),
        "candidate": {k: v for k, v in cand.items() if not k.startswith("_")},
        "baseline": {k: v for k, v in base.items() if not k.startswith("_")},
        "candidate_minus_baseline": compare(cand, base),
    }
    if args.json:
        import orjson

        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    for name in ("candidate", "baseline"):
        r = report[name]
        print(f"{name:9} {r['model']}: full {r['full_depth']['accuracy']:.4f} / F1 {r['full_depth']['macro_f1']:.4f}; "
              f"default rule {r['default_rule_result']['accuracy']:.4f} / F1 {r['default_rule_result']['macro_f1']:.4f} "
              f"at {r['default_rule_result']['mean_exit_layer']:.2f} layers; ECE per exit {r['ece_per_exit']}")  # fmt: skip
    for name, d in report["candidate_minus_baseline"].items():
        acc, f1 = d["accuracy"], d["macro_f1"]
        print(f"{name}: accuracy {acc['texts']:+d} texts ({acc['verdict']}), "
              f"macro-F1 {f1['difference']:+.4f} {f1['ci95']} ({f1['verdict']})")


if __name__ == "__main__":
    main()
