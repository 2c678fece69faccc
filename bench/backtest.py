"""Backtest speed next to the engine alone, in one run on this machine.

Both sides score the same texts with the same engine settings (the worker's: ``Settings()``
max batch, exit rule, threads; the shipped model unless ``--model``):

* **engine alone** -- ``predict_texts`` on the engine the backtest uses (one engine object for
  both sides), serving from its own thread as in the worker: tokenisation + model, nothing else.
* **backtest** -- ``pipeline.backtest`` end to end on a JSONL feed of those texts: read and
  validate the file, parse, sort by event time, de-duplicate, link, score, aggregate, and
  write every update to CSV. ``backtest_texts_per_s`` = documents / wall time of all of that.

The two alternate (engine, backtest, engine, ..., engine). ``ratio`` is the median over rounds
of each backtest's texts/s divided by the mean of the engine runs just before and after it, so
drift in the load of this shared machine hits both sides of each ratio; ``ratio_of_means`` is
given too. Goal: ``ratio`` >= 0.9. One-off start-up costs are left out of both sides: the
model load, and the linker's tables (built on first use, about a second). The feed is the
bundled sample feed cycled to ``--texts`` records, one second apart in event time, each with a
unique id.

    python bench/backtest.py --json          # ~1.5 minutes on an idle 2-core box
    python bench/backtest.py --json --quick  # smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):  # first, or bench/pipeline.py would shadow the package
    sys.path.insert(0, str(ROOT))

import orjson

SAMPLE_FEED = ROOT / "pipeline" / "data" / "sample_feed.jsonl"
T0 = 1_710_424_800_000


def log(msg: str) -> None:
    print(f"[bench/backtest {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def write_feed(path: Path, n: int) -> list[str]:
    """The sample feed cycled to n records (unique ids, 1 s apart); returns the texts in order."""
    base = [orjson.loads(line) for line in SAMPLE_FEED.read_bytes().splitlines() if line.strip()]
    texts, lines = [], []
    for i in range(n):
        rec = dict(base[i % len(base)], id=f"bench-{i:06d}", published_at=T0 + i * 1000)
        texts.append(rec["text"])
        lines.append(orjson.dumps(rec))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return texts


def engine_alone(engine, texts: list[str]) -> float:
    t0 = time.perf_counter()
    engine.predict_texts(texts)
    return len(texts) / (time.perf_counter() - t0)


def backtest(settings, engine, feed: Path, out: Path) -> tuple[float, dict]:
    from pipeline.backtest import BacktestReport, feed_records, run_backtest, write_updates

    t0 = time.perf_counter()
    report = BacktestReport()
    result = run_backtest(feed_records(feed, report.bad), settings, engine=engine, report=report)
    write_updates(result.updates, out)
    seconds = time.perf_counter() - t0
    return result.report.documents / seconds, result.report.to_dict()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--texts", type=int, default=3000, help="records in the feed")
    p.add_argument("--rounds", type=int, default=4, help="backtest runs (each between two engine runs)")
    p.add_argument("--model", type=Path, default=None, help="model directory (default: the shipped model)")
    p.add_argument("--quick", action="store_true", help="300 texts, one round (smoke run)")
    args = p.parse_args()
    if args.quick:
        args.texts, args.rounds = 300, 1

    from pipeline.backtest import DEFAULT_CHUNK
    from pipeline.inference import build_engine, load_model
    from pipeline.linking import link
    from pipeline.schemas import InputMessage
    from pipeline.settings import Settings

    training = subprocess.run(["pgrep", "-f", "finsent train"], check=False, capture_output=True, text=True).stdout
    load_start = [round(x, 2) for x in os.getloadavg()]
    settings = Settings(model_dir=args.model)
    model = load_model(settings)
    # one engine for both sides (its queue holds all the texts, so nothing blocks)
    engine = build_engine(settings, model, max_queue=max(args.texts, DEFAULT_CHUNK) + 1).start()
    engine_runs: list[float] = []
    backtest_runs: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        feed, out = Path(tmp) / "feed.jsonl", Path(tmp) / "updates.csv"
        texts = write_feed(feed, args.texts)
        engine.predict_texts(texts[: 2 * settings.max_batch])
        # one-off start-up costs stay out of both figures: the model load, and the linker's
        # tables (built on first use, ~1 s; the worker builds them at start too)
        link(InputMessage(id="warm-up", text="$SPY warm-up", published_at=0))
        report: dict = {}
        engine_runs.append(engine_alone(engine, texts))
        log(f"engine alone {engine_runs[-1]:.0f} texts/s")
        for r in range(args.rounds):
            rate, report = backtest(settings, engine, feed, out)
            backtest_runs.append(rate)
            log(f"round {r + 1}: backtest {rate:.0f} texts/s ({report['updates']} updates)")
            engine_runs.append(engine_alone(engine, texts))
            log(f"engine alone {engine_runs[-1]:.0f} texts/s")
    engine.close()

    engine_mean = sum(engine_runs) / len(engine_runs)
    backtest_mean = sum(backtest_runs) / len(backtest_runs)
    # each backtest against the engine runs just before and after it: load drift on this shared
    # machine moves both, so these ratios are steadier than the ratio of the means
    round_ratios = [b / ((engine_runs[k] + engine_runs[k + 1]) / 2) for k, b in enumerate(backtest_runs)]
    result = {
        "texts": args.texts,
        "rounds": args.rounds,
        "model": model.config.version,
        "max_batch": settings.max_batch,
        "device": settings.device,
        "threads": settings.threads,
        "engine_texts_per_s": round(engine_mean, 1),
        "backtest_texts_per_s": round(backtest_mean, 1),
        "ratio": round(statistics.median(round_ratios), 3),
        "round_ratios": [round(x, 3) for x in round_ratios],
        "ratio_of_means": round(backtest_mean / engine_mean, 3),
        "engine_runs": [round(x, 1) for x in engine_runs],
        "backtest_runs": [round(x, 1) for x in backtest_runs],
        "backtest_report": report,
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_start": load_start,
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "training_running": bool(training),
        },
    }
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        print(f"engine alone {engine_mean:.0f} texts/s, backtest {backtest_mean:.0f} texts/s, "
              f"ratio {result['ratio']:.2f}")


if __name__ == "__main__":
    main()
