"""``finsent demo --until-drained``: exits 0, leaves the tickers in Redis and no child process;
its closing summary prints whole commands."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import redis
from rich.console import Console

from pipeline.demo import _example_symbol, _print_where
from pipeline.keys import Keys
from pipeline.settings import Settings


@pytest.mark.integration
@pytest.mark.slow
def test_demo_until_drained(redis_url: str, ns: str) -> None:
    before = _tansu_pids()
    env = {**os.environ, "FINSENT_REDIS_URL": redis_url}
    cmd = [sys.executable, "-m", "pipeline.cli", "demo", "--until-drained", "--rate", "0", "--namespace", ns]
    if os.environ.get("FINSENT_TEST_MODEL_DIR"):
        cmd += ["--model", os.environ["FINSENT_TEST_MODEL_DIR"]]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            cwd=Path(__file__).parents[1])  # fmt: skip
    children: set[int] = set()
    try:
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            children = {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
            proc.kill()
            proc.wait()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    assert "drained: everything sent was applied and published" in text
    assert "applied 360" in text and "HGETALL" in text
    keys = Keys(ns)
    r = redis.Redis.from_url(redis_url)
    try:
        assert r.scard(keys.tickers) >= 5
        assert int(r.get(keys.applied)) == 360
        assert r.hget(keys.ticker("AAPL"), "label") is not None
    finally:
        r.close()
    assert not children
    assert not _tansu_pids() - before, "the demo's embedded broker outlived it"


def _tansu_pids() -> set[int]:
    return {p.pid for p in psutil.process_iter(["cmdline"]) if "tansu" in " ".join(p.info["cmdline"] or [])}


def test_the_closing_summary_keeps_each_command_on_one_line() -> None:
    """Piped (not a terminal: 80 columns, here 40), the suggested redis-cli commands and the
    topic list are printed unwrapped, and the keys carry the demo's namespace."""
    s = Settings(namespace="demo.", redis_url="redis://127.0.0.1:6379/0")
    out = io.StringIO()
    _print_where(s, Console(file=out, width=40, force_terminal=False), embedded_redis=False, symbol="NVDA")
    lines = out.getvalue().splitlines()
    assert "  try: redis-cli -u redis://127.0.0.1:6379/0 HGETALL demo.finsent:ticker:NVDA" in lines
    assert "       redis-cli -u redis://127.0.0.1:6379/0 ZREVRANGE demo.finsent:ticker:NVDA:history 0 2" in lines
    (topics,) = [line for line in lines if "Kafka topics:" in line]
    assert all(f"demo.{t}" in topics for t in (s.documents_topic, s.scores_topic, s.dlq_topic)), topics


@pytest.mark.integration
def test_the_redis_cli_examples_use_a_ticker_the_demo_wrote(redis_url: str, ns: str) -> None:
    s = Settings(namespace=ns, redis_url=redis_url)
    assert _example_symbol(s) == "AAPL"  # nothing written yet: the bundled feed's
    r = redis.Redis.from_url(redis_url)
    try:
        r.sadd(Keys(ns).tickers, "NVDA", "MSFT")
        assert _example_symbol(s) == "MSFT"  # a custom feed without AAPL
        r.sadd(Keys(ns).tickers, "AAPL")
        assert _example_symbol(s) == "AAPL"
    finally:
        r.close()
