"""``finsent demo --until-drained``: exits 0, leaves the tickers in Redis and no child process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import redis

from pipeline.keys import Keys

pytestmark = [pytest.mark.integration, pytest.mark.slow]


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
