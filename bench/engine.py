"""Engine benchmark: full depth vs early exit with static batches, compaction, and refill.

One run, the same texts (Twitter Financial News validation, repeated to >= --texts) and the same
model, for each batch size:

  full_static   every sample runs all layers, fixed batches in arrival order
  exit_static   early exit, but a batch ends when its last sample exits
  exit_compact  early exit, exited samples leave the batch (no refill)
  refill        the engine: compaction + refill from the waiting queue (length-aware admission)

Static baselines pad each arrival-order batch to its longest text; the refill engine's
length-aware admission is one of its features. Latency is per text, from admission into a batch
to its result (queueing excluded: everything is submitted at once). Prints one JSON object.

    FINSENT_DATA_DIR=/path/to/data python bench/engine.py --json
    python bench/engine.py --json --quantize int8
    python bench/engine.py --json --device cuda --dtype float16 --batch-sizes 32,128,512
    python bench/engine.py --json --batch-sizes 128 --targets default

``--targets MODEL`` ('default': the shipped research-only target model, or a directory) adds the
cost of per-ticker scores, as the worker computes them with ``FINSENT_TARGET_MODEL``: the texts
are linked like the worker links them, and each text with two or more linked tickers gets one
target-model pass per ticker. ``targets`` in the output: the refill engine at the largest batch,
documents only vs documents plus those passes (one run, back to back), and their ratio.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import orjson
import torch

from models.datasets import DataError, resolve_data
from models.engine import EarlyExitEngine
from models.exits import FullDepth, make_rule, parse_rule
from pipeline.inference import DTYPES, load_model
from pipeline.settings import Settings

#: --data default: a dataset of models/datasets.py, under FINSENT_DATA_DIR.
DATA = "twitter_financial_news/validation"


def load_texts(path: Path, n: int) -> tuple[list[str], list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    reps = -(-n // len(rows))
    rows = (rows * reps)[: max(n, len(rows))]
    return [r["text"] for r in rows], [r["label"] for r in rows]


def timed_run(model, rule, mode: str, batch: int, ids, truncated, device, dtype, policy: str):
    """``(engine, predictions, seconds)``: a fresh engine, warmed up on the first ``2 * batch``
    texts, then timed over all of them (its stats count the timed run only)."""
    engine = EarlyExitEngine(model, rule, max_batch=batch, device=device, dtype=dtype, mode=mode,
                             policy=policy, max_queue=len(ids) + 1)
    engine.run(ids[: 2 * batch], truncated[: 2 * batch])  # warm-up
    engine.stats = type(engine.stats)()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    preds = engine.run(ids, truncated)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return engine, preds, time.perf_counter() - t0


def measure(model, rule, mode: str, batch: int, ids, truncated, gold, device, dtype, policy: str) -> dict:
    engine, preds, elapsed = timed_run(model, rule, mode, batch, ids, truncated, device, dtype, policy)
    lat = np.array([p.latency_ms for p in preds])
    method = {"static": "exit_static", "compact": "exit_compact", "refill": "refill"}[mode]
    if isinstance(rule, FullDepth):
        method = "full_static"
    row = {
        "method": method, "batch_size": batch, "texts_per_s": round(len(ids) / elapsed, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2), "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "accuracy": round(float(np.mean([p.label == g for p, g in zip(preds, gold)])), 4),
        "avg_exit_layer": round(float(np.mean([p.exit_layer for p in preds])), 3),
        "layer_calls": engine.stats.layer_calls,
        "padding_efficiency": round(engine.stats.padding_efficiency, 3),
        "mean_occupancy": round(engine.stats.mean_occupancy, 1),
    }
    if mode == "refill":
        row["policy"] = policy
    return row


def measure_targets(model, rule, target_dir: str, texts: list[str], batch: int, device, dtype, policy: str) -> dict:
    """Documents alone vs documents plus the target passes of texts with >= 2 linked tickers, with
    the refill engine at ``batch``, back to back."""
    from pipeline.inference import exit_rule, target_model_dir
    from pipeline.linking import default_linker
    from pipeline.process import message, target_asks

    linker = default_linker()
    msgs = [message(t, doc_id=f"v{i}", now_ms=1_700_000_000_000) for i, t in enumerate(texts)]
    asks = [target_asks(m, linker.link(m)) for m in msgs]
    target_texts = [t for a in asks for _, t in a]
    s = Settings(model_dir=target_model_dir(Settings(target_model=target_dir)), device=device)
    target_model = load_model(s)  # torch's threads as the document model has them
    target_rule = exit_rule(s, target_model)
    ids, truncated = model.encode([m.text for m in msgs])
    t_ids, t_truncated = target_model.encode(target_texts) if target_texts else ([], [])

    def seconds(m, r, i, tr) -> float:
        return timed_run(m, r, "refill", batch, i, tr, device, dtype, policy)[2] if i else 0.0

    documents = seconds(model, rule, ids, truncated)
    targets = seconds(target_model, target_rule, t_ids, t_truncated)
    return {
        "target_model": target_model.config.version, "batch_size": batch, "texts": len(texts),
        "texts_with_2_plus_tickers": sum(1 for a in asks if a), "target_passes": len(target_texts),
        "texts_per_s_targets_off": round(len(texts) / documents, 1),
        "texts_per_s_targets_on": round(len(texts) / (documents + targets), 1),
        "ratio_on_vs_off": round(documents / (documents + targets), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    ap.add_argument("--texts", type=int, default=4000)
    ap.add_argument("--batch-sizes", default="1,8,32,128")
    ap.add_argument("--rule", default=None, help="exit rule spec (default: the model's tuned rule)")
    ap.add_argument("--policies", default="largest,deepest", help="refill policies to compare at the largest batch")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quantize", default=None, choices=["int8"])
    ap.add_argument("--targets", default=None, metavar="MODEL",
                    help="also measure per-ticker target scoring: 'default' (the shipped research-only target "
                    "model) or a target model directory")
    ap.add_argument("--data", default=None,
                    help=f"CSV text,label, or a dataset name under FINSENT_DATA_DIR (default: {DATA})")
    args = ap.parse_args()

    settings = Settings(model_dir=args.model, device=args.device, threads=args.threads, quantize=args.quantize)
    try:
        data = resolve_data(args.data, settings.data_dir, default=DATA)
    except DataError as exc:
        sys.exit(f"error: {exc}")
    model = load_model(settings)
    default = model.config.default_rule
    rule = parse_rule(args.rule) if args.rule else make_rule(default["rule"], **default.get("params", {}))
    texts, gold = load_texts(data, args.texts)
    ids, truncated = model.encode(texts)
    dtype = DTYPES[args.dtype]
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    policies = args.policies.split(",")
    rows = []
    for batch in sizes:
        plan = [(FullDepth(), "static", "largest"), (rule, "static", "largest"), (rule, "compact", "largest")]
        plan += [(rule, "refill", p) for p in (policies if batch == max(sizes) else policies[:1])]
        for r, mode, policy in plan:
            row = measure(model, r, mode, batch, ids, truncated, gold, args.device, dtype, policy)
            rows.append(row)
            if not args.json:
                print(orjson.dumps(row).decode(), file=sys.stderr)

    def tps(method: str, batch: int, policy: str = policies[0]) -> float:
        return next(r["texts_per_s"] for r in rows if r["method"] == method and r["batch_size"] == batch
                    and r.get("policy", policy) == policy)

    big = max(sizes)
    ratios = {
        f"refill_vs_full_static@{big}": round(tps("refill", big) / tps("full_static", big), 3),
        f"refill_vs_exit_static@{big}": round(tps("refill", big) / tps("exit_static", big), 3),
        f"refill_vs_exit_compact@{big}": round(tps("refill", big) / tps("exit_compact", big), 3),
    }
    if len(policies) > 1:
        ratios[f"refill_{policies[1]}_vs_{policies[0]}@{big}"] = round(
            tps("refill", big, policies[1]) / tps("refill", big, policies[0]), 3)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu ({torch.get_num_threads()} threads)"
    out = {"device": device, "dtype": args.dtype, "quantize": args.quantize, "model": model.config.version,
           "texts": len(ids), "rule": rule.describe(), "rows": rows, "ratios": ratios}
    if args.targets:
        out["targets"] = measure_targets(model, rule, args.targets, texts, big, args.device, dtype, policies[0])
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2 if not args.json else 0).decode())


if __name__ == "__main__":
    main()
