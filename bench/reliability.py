"""Reliability under faults, bad input and load: nothing lost, nothing counted twice.

Each row is one scenario of ``tests/faults.py`` (the same code ``tests/test_reliability.py``
runs at small sizes): a known stream goes to the embedded Tansu broker, ``finsent worker`` child
processes consume it against Redis, a fault is injected, and once every input offset is committed
and every outbox is empty the row is judged from the outputs alone -- ``finsent.documents``,
``finsent.ticker-scores``, ``finsent.dlq`` and Redis -- never from the worker's counters:

* ``sent`` input records; ``accepted`` distinct valid documents among them; ``dlq`` distinct dead
  letters on ``finsent.dlq``; ``applied`` Redis' ``finsent:applied`` counter;
* ``lost``: accepted documents missing from the documents topic or from Redis, bad messages
  without a dead letter, ticker updates missing from the ticker-scores topic;
* ``duplicated``: a document, dead letter or ticker update published more than once (by effect
  id), or ``applied`` above ``accepted``.

``checks`` carries the rest: aggregates in Redis equal to ``pipeline.aggregate.recompute`` over
the documents topic, dead-letter reasons, committed offsets sampled every 0.2 s never ahead of
unpublished output (``commit_violations``), fault-specific observations. ``ok`` is true when
every check passed.

Scenarios (full size; ``--quick``: small and short, ~3 minutes):

* ``sigkill``    one stream, the worker SIGKILLed 20 times at random points, restarted each time
* ``redis``      a private redis-server (AOF, fsync always) SIGKILLed for 10 s mid-stream
* ``broker_pause``   the broker frozen (SIGSTOP) for 10 s mid-stream
* ``broker_restart`` the memory-only broker stopped for 10 s and started again, empty
* ``two_sigterm`` / ``two_sigkill``  two workers in one group, one leaves mid-stream
* ``poison``     20% hostile input (26 kinds), worker RSS sampled
* ``soak``       200,000 messages through one worker with a **fast model** (a tiny random BERT
  with the shipped tokenizer, built at run time, flagged in the row): RSS slope and in-flight
  state over time; the soak's scores mean nothing, only its counts

Every other row uses the shipped model (or ``--model``). The shared Redis at
``FINSENT_REDIS_URL`` / 127.0.0.1:6379 is only used under a fresh namespace (deleted afterwards);
the Redis outage runs against a private server.

    python bench/reliability.py --json                  # the table, ~12 minutes on 2 cores
    python bench/reliability.py --json --only poison,redis --quick
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# runnable as a plain script; the scenarios live with the tests. The root goes first, or
# bench/pipeline.py (the script's own folder is sys.path[0]) would shadow the package.
for p in (ROOT / "tests", ROOT):
    sys.path.insert(0, str(p))

import orjson
from model_choice import resolve_model

ORDER = ("poison", "flood", "redis", "broker_pause", "broker_restart", "two_sigterm", "two_sigkill", "sigkill", "soak")
FULL = {
    "sigkill": {"kills": 20, "chunk": 200},
    "redis": {"n": 4000, "down_s": 10.0},
    "broker_pause": {"n": 3000, "down_s": 10.0},
    "broker_restart": {"n": 1500, "down_s": 10.0},
    "two_sigterm": {"n": 3000},
    "two_sigkill": {"n": 3000},
    "poison": {"n": 2500},
    "flood": {"stories": 20, "copies": 40},
    "soak": {"n": 200_000},
}
QUICK = {
    "sigkill": {"kills": 3, "chunk": 100},
    "redis": {"n": 600, "down_s": 3.0},
    "broker_pause": {"n": 1000, "down_s": 3.0},
    "broker_restart": {"n": 300, "down_s": 3.0},
    "two_sigterm": {"n": 1200},
    "two_sigkill": {"n": 1200},
    "poison": {"n": 400},
    "flood": {"stories": 6, "copies": 25},
    "soak": {"n": 5000},
}


def log(msg: str) -> None:
    print(f"[bench/reliability {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


async def run_all(names: list[str], sizes: dict[str, dict], env, workdir: Path) -> tuple[list[dict], dict]:
    from faults import SCENARIOS, build_fast_model

    rows: list[dict] = []
    extra: dict = {}
    for name in names:
        kw = dict(sizes[name])
        if name == "soak":
            log("building the soak's fast model (tiny random BERT + the shipped tokenizer)")
            kw["model_dir"] = str(await asyncio.to_thread(build_fast_model, workdir / "soak-model"))
        log(f"{name}: {kw}")
        t0 = time.perf_counter()
        try:
            row = await SCENARIOS[name](env, **kw)
        except Exception as exc:  # noqa: BLE001 - one broken scenario must not hide the others' rows
            log(f"{name} failed: {exc!r}")
            row = {"fault": name, "sent": None, "accepted": None, "dlq": None, "applied": None, "lost": None,
                   "duplicated": None, "ok": False, "error": repr(exc)}  # fmt: skip
        if "series" in row:
            extra["soak_series"] = row.pop("series")
        rows.append(row)
        status = "ok" if row["ok"] else f"NOT OK: {row.get('error', '')[:300]}"
        log(f"{name}: sent {row['sent']}, accepted {row['accepted']}, dlq {row['dlq']}, applied {row['applied']}, "
            f"lost {row['lost']}, duplicated {row['duplicated']} in {time.perf_counter() - t0:.0f}s -- {status}")
    return rows, extra


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one compact JSON object (default: indented)")
    ap.add_argument("--quick", action="store_true", help="small sizes and short outages (a smoke run)")
    ap.add_argument("--only", default=None, help=f"comma-separated scenarios (default: all of {','.join(ORDER)})")
    ap.add_argument("--kills", type=int, default=None, help="SIGKILLs in the sigkill scenario (default 20)")
    ap.add_argument("--soak", type=int, default=None, help="messages in the soak (default 200000)")
    ap.add_argument("--model", type=Path, default=None, help="model of every row but the soak (default: shipped)")
    args = ap.parse_args()
    names = [n.strip() for n in (args.only or ",".join(ORDER)).split(",") if n.strip()]
    unknown = sorted(set(names) - set(ORDER))
    if unknown:
        sys.exit(f"error: unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(ORDER)}")
    sizes = {k: dict(v) for k, v in (QUICK if args.quick else FULL).items()}
    if args.kills is not None:
        sizes["sigkill"]["kills"] = args.kills
    if args.soak is not None:
        sizes["soak"]["n"] = args.soak

    # SIGTERM -> SystemExit, so the finally blocks stop workers, brokers and clean Redis
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t_begin = time.perf_counter()
    model_dir, model_source = resolve_model(args.model)
    def training() -> bool:
        return bool(subprocess.run(["pgrep", "-f", "finsent train"], check=False, capture_output=True).stdout.split())

    training_at_start = training()

    from faults import Env

    from pipeline.infra import EmbeddedBroker, redis_server
    from pipeline.settings import Settings

    settings = Settings()
    with tempfile.TemporaryDirectory(prefix="finsent-reliability-") as tmp, EmbeddedBroker() as broker, \
            redis_server(settings.redis_url) as redis_url:  # fmt: skip
        env = Env(bootstrap=broker.bootstrap, redis_url=redis_url, workdir=Path(tmp), model_dir=str(model_dir),
                  partitions=6, max_batch=64, log=log)  # fmt: skip
        rows, extra = asyncio.run(run_all(names, sizes, env, Path(tmp)))
        external_redis = redis_url == settings.redis_url

    out = {
        "rows": rows,
        "all_ok": all(r["ok"] for r in rows),
        "model": {"dir": str(model_dir), "source": model_source, "soak": "tiny random BERT, built at run time"},
        "setup": {
            "broker": "embedded Tansu (memory only)",
            "redis": "external (namespaced)" if external_redis else "embedded valkey",
            "partitions": 6,
            "max_batch": 64,
            "session_timeout_ms": env.session_timeout_ms,
            "cpus": os.cpu_count(),
            "training_running": {"at_start": training_at_start, "at_end": training()},
            "quick": args.quick,
        },
        **extra,
        "seconds": round(time.perf_counter() - t_begin, 1),
    }
    print(orjson.dumps(out, option=0 if args.json else orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
