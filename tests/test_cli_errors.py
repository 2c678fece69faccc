"""The CLI commands that connect to Kafka or Redis fail with one line on stderr and a non-zero
exit when a server is unreachable: no traceback, no endless retrying, Ctrl-C honoured at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.infra import EmbeddedBroker, free_port

ROOT = Path(__file__).parents[1]
FEED = ROOT / "pipeline" / "data" / "sample_feed.jsonl"


def _default_sigint() -> None:
    # a shell without job control starts background jobs with SIGINT ignored, and a child
    # inherits that; Ctrl-C is what the tests below send, so give the child the default
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _finsent(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pipeline.cli ARGS`` (killed if it outlives ``timeout``: a hang guard)."""
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=timeout, check=False)  # fmt: skip


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("command", [
    ["produce", str(FEED)],
    ["replay", str(FEED), "--speed", "max"],
    ["create-topics"],
    ["backtest", "--from-kafka", "--since", "2024-03-14T00:00:00Z", "--out", "{tmp}/updates.csv"],
], ids=lambda c: c[0])  # fmt: skip
def test_kafka_commands_without_a_broker_print_one_line(command: list[str], tmp_path: Path) -> None:
    port = free_port()  # nobody listens there
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    proc = _finsent(*args, "--bootstrap", f"127.0.0.1:{port}")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = _lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    # the reason aiokafka logged (connection refused), not only "Unable to bootstrap from [...]"
    assert lines[0].startswith(f"error: cannot reach Kafka at 127.0.0.1:{port}: "), lines[0]
    assert "Connect call failed" in lines[0]


@pytest.mark.integration
def test_worker_without_kafka_gives_up_after_the_startup_timeout(redis_server_url: str) -> None:
    port = free_port()
    proc = _finsent("worker", "--bootstrap", f"127.0.0.1:{port}", "--redis-url", redis_server_url,
                    "--startup-timeout", "1", "--metrics-port", "0", "--log-level", "WARNING")  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = _lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: cannot reach Kafka at 127.0.0.1:{port} within 1 s: "), lines[0]
    assert "Connect call failed" in lines[0]


@pytest.mark.integration
def test_worker_without_redis_gives_up_after_the_startup_timeout_from_the_environment(
    broker: EmbeddedBroker,
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    proc = _finsent("worker", "--bootstrap", broker.bootstrap, "--redis-url", url, "--metrics-port", "0",
                    "--log-level", "WARNING", env={"FINSENT_STARTUP_TIMEOUT_S": "1.5"})  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = _lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: cannot reach Redis at {url} within 1.5 s: "), lines[0]


def test_worker_startup_timeout_must_be_positive() -> None:
    proc = _finsent("worker", "--startup-timeout", "0", "--metrics-port", "0")
    assert proc.returncode == 2, proc.stderr
    assert "startup_timeout_s" in proc.stderr and "Traceback" not in proc.stderr


def test_ctrl_c_while_the_worker_waits_for_kafka_exits_130_at_once() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "worker", "--bootstrap", f"127.0.0.1:{port}",
                             "--startup-timeout", "600", "--metrics-port", "0", "--log-level", "INFO"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=_default_sigint)  # noqa: PLW1509 - one signal() call in the child  # fmt: skip
    try:
        first = proc.stderr.readline()  # logged once the first attempt has failed: it is waiting now
        assert f"Kafka at 127.0.0.1:{port} is not reachable yet" in first, first
        proc.send_signal(signal.SIGINT)
        # a hang guard far below the 600 s wait, not a timing assertion
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert _lines(err) == ["interrupted while waiting for Kafka and Redis"], err
    assert "Traceback" not in out + err


def test_score_and_link_reject_a_blank_text_like_the_worker_and_go_on() -> None:
    # the texts go through the worker's parse step (pipeline.process.message): a blank text gets
    # the dead-letter reason the pipeline would give it, the others are answered, exit 1
    import orjson

    for command in ("score", "link"):
        proc = _finsent(command, "$AAPL beats estimates", " \u200b ", "Tesla shares slump")
        assert proc.returncode == 1, proc.stderr
        rows = [orjson.loads(line) for line in _lines(proc.stdout)]
        assert [r.get("error") for r in rows] == [None, "empty_text", None], rows
        assert all(("label" in r) if command == "score" else ("links" in r) for r in (rows[0], rows[2]))
        assert _lines(proc.stderr) == ['error: 1 of 3 texts rejected (text 2): see their "error"']


def test_link_answers_for_the_text_the_worker_would_link() -> None:
    # a zero-width space and a right-to-left mark are removed by the parse step, as in the
    # worker; the spans index the printed (normalised) text
    import orjson

    from pipeline import process
    from pipeline.linking import Linker
    from pipeline.universe import load_universe

    text = "Shares of \u200bApple jump; $MSFT\u200f slips"
    (row,) = [orjson.loads(line) for line in _lines(_finsent("link", text).stdout)]
    msg = process.message(text, doc_id="x", now_ms=1_710_424_800_000)
    assert row["text"] == msg.text != text
    (links,) = process.link(Linker(load_universe(None), None), [msg])
    assert [(r["symbol"], tuple(r["span"])) for r in row["links"]] == [(t.symbol, t.span) for t in links]
    assert {r["symbol"] for r in row["links"]} == {"AAPL", "MSFT"}
    for r in row["links"]:
        assert row["text"][r["span"][0]:r["span"][1]] in ("Apple", "$MSFT")


def test_score_toward_targets_answers_each_target_with_the_target_model() -> None:
    import orjson

    text = "$AAPL soars on record iPhone sales while $MSFT sinks after a cloud miss"
    proc = _finsent("score", "--target", "$AAPL", "--target", "$MSFT", text, " ")
    assert proc.returncode == 1, proc.stderr  # the blank text is rejected, the other answered
    rows = [orjson.loads(line) for line in _lines(proc.stdout)]
    assert [r.get("target") for r in rows] == ["$AAPL", "$MSFT", None]
    assert rows[2]["error"] == "empty_text"
    aapl, msft = rows[0], rows[1]
    assert aapl["label"] == "positive" and msft["label"] == "negative"
    assert aapl["score"] > 0.3 > -0.3 > msft["score"]
    assert "research only" in proc.stderr
    blank = _finsent("score", "--target", " ", text)
    assert blank.returncode != 0 and "--target must name a ticker" in blank.stderr
