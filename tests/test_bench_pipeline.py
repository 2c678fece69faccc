"""Smoke test of bench/pipeline.py: ``--quick`` runs end to end and prints the documented JSON.

No timing assertions (the numbers depend on the machine and on what else runs on it). The model
comes from ``FINSENT_TEST_MODEL_DIR`` (default: the shipped model, else ``FINSENT_MODEL_DIR``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from models.elbert import DEFAULT_MODEL_DIR

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


def _model_args() -> list[str]:
    if test_dir := os.environ.get("FINSENT_TEST_MODEL_DIR"):
        return ["--model", test_dir]
    if (DEFAULT_MODEL_DIR / "config.json").exists():
        return []
    env_dir = os.environ.get("FINSENT_MODEL_DIR")
    if env_dir and (Path(env_dir) / "config.json").exists():
        return []  # the bench falls back to it itself
    pytest.skip(
        "no model: the shipped artifact is missing and neither FINSENT_TEST_MODEL_DIR nor FINSENT_MODEL_DIR is set"
    )


def _listening(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def _bench(args: list[str], timeout: float) -> dict:
    """Run ``bench/pipeline.py ARGS``; its stdout parsed as one JSON object (killed past ``timeout``)."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "pipeline.py"), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr.decode(errors="replace")[-3000:]
    return orjson.loads(stdout)


@pytest.mark.timeout(240)
def test_quick_run_prints_the_json_and_leaves_no_process() -> None:
    out = _bench(["--json", "--quick", *_model_args()], timeout=200)  # one JSON object, nothing else on stdout

    assert out["engine_texts_per_s"] > 0
    assert out["max_sustainable_per_s"] > 0
    assert out["e2e_vs_engine"] > 0
    assert set(out["goals"]) == {"e2e_vs_engine>=0.85", "p99_at_half_max<=250ms"}
    assert out["model"]["version"] and out["model"]["source"]
    # where the CPU went during the backlog: every process of this machine's pipeline is accounted
    cpu = out["backlog"]["cpu_ms_per_msg"]
    assert {"worker", "broker", "bench"} <= set(cpu) and cpu["worker"] > 0, cpu
    assert out["engine"]["cpu_ms_per_text"] > 0
    budget = out["cpu_budget"]
    assert budget["ms_per_msg_all_processes"] == pytest.approx(sum(cpu.values()), abs=0.01)
    assert budget["e2e_vs_engine_bound"] == pytest.approx(
        out["engine"]["cpu_ms_per_text"] / budget["ms_per_msg_all_processes"], abs=0.002
    )
    assert budget["non_model_ms_allowed"] == pytest.approx(
        out["engine"]["cpu_ms_per_text"] * (1 / 0.85 - 1), abs=0.002
    )
    assert out["loads"], out
    for row in out["loads"]:
        assert {"offered_per_s", "achieved_per_s", "p50_ms", "p99_ms"} <= set(row)
        assert row["offered_per_s"] > 0
        assert row["achieved_per_s"] > 0
        assert row["applied"] == row["sent"] > 0
        assert 0 < row["p50_ms"] <= row["p99_ms"]
    assert any(row["fraction"] == 0.5 for row in out["loads"])
    assert out["p99_ms_at_half_max"] is not None
    # the worker child (its command line names the namespace) and the broker are gone
    ns = out["setup"]["namespace"]
    assert ns.startswith("bench.")
    assert (
        subprocess.run(
            ["pgrep", "-f", "--", f"--namespace {ns}"], check=False, capture_output=True
        ).returncode
        == 1
    )
    assert not _listening(out["setup"]["bootstrap"])


@pytest.mark.timeout(150)
def test_null_engine_run_labels_itself_and_needs_no_model() -> None:
    """``--engine null``: the worker with a stand-in engine (no model loaded), labelled as such."""
    out = _bench(["--json", "--quick", "--engine", "null", "--backlog", "200", "--loads", "0.5", "--duration", "2"],
                 timeout=120)

    assert out["engine_kind"].startswith("null (stand-in") and "not the model" in out["engine_kind"]
    assert out["engine"]["kind"] == out["engine_kind"]
    assert out["model"] is None and out["engine_texts_per_s"] is None and out["e2e_vs_engine"] is None
    assert out["backlog"]["applied"] == 200
    assert out["max_sustainable_per_s"] > 0
    worker = out["worker_non_model"]
    assert worker["cpu_ms_per_msg"] == out["backlog"]["cpu_ms_per_msg"]["worker"] > 0
    # /proc counts CPU in clock ticks: the thread's and the process's differences may each be a
    # tick off, two ticks over 200 messages (0.1 ms a message at 100 ticks/s)
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    assert 0 < worker["event_loop_ms_per_msg"] <= worker["cpu_ms_per_msg"] + 2 * tick_ms / 200
    assert [row["applied"] == row["sent"] > 0 for row in out["loads"]] == [True]
    ns = out["setup"]["namespace"]
    assert subprocess.run(["pgrep", "-f", "--", ns], check=False, capture_output=True).returncode == 1
    assert not _listening(out["setup"]["bootstrap"])
