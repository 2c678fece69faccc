"""Engine latency under a steady stream, per mode and scheduling policy, side by side in one run.

A producer submits ``--every-ms`` micro-batches at an offered rate (texts/s), the way the worker's
micro-batcher feeds the engine, and records each text's submit -> result latency. Every configuration
runs the same schedule on the same model right after the other, so the comparison holds on a
shared, noisy machine; compare within one run, not across runs.

    python bench/engine_latency.py --json                  # rates 150,250,300; ~1.5 minutes
    python bench/engine_latency.py --rates 200 --seconds 20

Output: ``{"rows": [{"mode", "policy", "offered_per_s", "achieved_per_s", "p50_ms", "p99_ms", "steps"}], ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):  # first, or bench/pipeline.py would shadow the package
    sys.path.insert(0, str(ROOT))

from pipeline.inference import build_engine, load_model
from pipeline.settings import Settings

FEED = ROOT / "pipeline" / "data" / "sample_feed.jsonl"


async def paced(settings: Settings, model, texts: list[str], mode: str, policy: str, rate: float, every_ms: float,
                seconds: float) -> dict:
    """Offer ``rate`` texts/s in batches every ``every_ms`` for ``seconds``; latency percentiles."""
    engine = build_engine(settings, model=model, mode=mode, policy=policy).start()
    try:
        await engine.predict(texts[: settings.max_batch])  # warm
        latencies: list[float] = []
        per_batch = max(1, round(rate * every_ms / 1000))

        async def one(batch: list[str], t_submit: float) -> None:
            await engine.predict(batch)
            latencies.extend([time.perf_counter() - t_submit] * len(batch))

        tasks, t0, k, i = [], time.perf_counter(), 0, 0
        while time.perf_counter() - t0 < seconds:
            await asyncio.sleep(max(0.0, t0 + k * every_ms / 1000 - time.perf_counter()))
            batch = [texts[(i + j) % len(texts)] for j in range(per_batch)]
            i, k = i + per_batch, k + 1
            tasks.append(asyncio.create_task(one(batch, time.perf_counter())))
        steps0 = engine.stats.steps
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
    finally:
        engine.close()
    ms = np.array(latencies) * 1000
    return {"mode": mode, "policy": policy, "offered_per_s": rate, "achieved_per_s": round(len(ms) / elapsed, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "steps": steps0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="one compact JSON object")
    ap.add_argument("--rates", default="150,250,300", help="offered texts/s, comma separated")
    ap.add_argument("--every-ms", type=float, default=20.0, help="micro-batch interval (the worker's max_wait_ms)")
    ap.add_argument("--seconds", type=float, default=12.0, help="seconds per (rate, policy)")
    ap.add_argument("--configs", default="refill/largest,refill/deepest,compact/deepest",
                    help="engine mode/policy pairs to compare")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    settings = Settings(threads=args.threads) if args.threads else Settings()
    model = load_model(settings)
    texts = [orjson.loads(line)["text"] for line in FEED.read_bytes().splitlines() if line.strip()]
    rows = []
    for rate in (float(r) for r in args.rates.split(",")):
        for config in args.configs.split(","):
            mode, policy = config.split("/")
            row = asyncio.run(paced(settings, model, texts, mode, policy, rate, args.every_ms, args.seconds))
            rows.append(row)
            print(f"[engine_latency] {row}", file=sys.stderr, flush=True)
    out = {"rows": rows, "every_ms": args.every_ms, "seconds_per_row": args.seconds,
           "max_batch": settings.max_batch, "model": model.config.version, "loadavg_start": os.getloadavg()}
    print(orjson.dumps(out, option=0 if args.json else orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
