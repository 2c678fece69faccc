"""``finsent worker --processes N``: N worker processes on one box, members of one consumer group.

One worker process is bounded by its event loop (parsing, linking, aggregation, the commit
script and the outbox run on one thread), however fast its engine is. Kafka already shares a
group's input partitions among its members and moves them when a member comes or goes, so N
processes on one box scale exactly as N boxes do: this module only starts them, forwards
signals and stops them together. There is no partition scheme of its own, and the delivery
guarantee is each worker's own (:mod:`pipeline.checkpoint`): the processes share ticker states
in Redis through the commit script's optimistic concurrency, as workers on several boxes do.

Each child is ``python -m pipeline.cli worker`` with the parent's options, its own engine (the
model loaded once per process, on the same device) and its own Prometheus port
(``metrics_port + i``). Sizing (docs/operations.md): every input topic needs at least as many
partitions as there are processes in the group, on all boxes together (a member without a
partition idles), and the device must hold one model and its activations per process.

A child that exits on its own (a crash, a fatal error) stops the others and the supervisor
exits 1, so the orchestrator restarts the whole set (the uncommitted work is re-read and
de-duplicated, as after any crash). SIGTERM/SIGINT are forwarded to every child, which then
drain and commit as a single worker does; a child still running ``grace_s`` later is killed.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pipeline.infra import _pdeathsig_preexec

__all__ = ["child_args", "run_processes"]

log = logging.getLogger(__name__)

_POLL_S = 0.2


def child_args(argv: Sequence[str], index: int, metrics_port: int) -> list[str]:
    """The command-line arguments of child ``index`` (0-based): ``argv`` (the parent's, starting
    with ``worker``) without ``--processes``, with the child's metrics port and log tag."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--processes":
            skip = True
            continue
        if a.startswith("--processes="):
            continue
        out.append(a)
    out += ["--metrics-port", str(metrics_port + index if metrics_port else 0), "--process-index", str(index)]
    return out


def run_processes(
    n: int, argv: Sequence[str], *, metrics_port: int, grace_s: float, program: Sequence[str] | None = None
) -> int:
    """Run ``n`` worker children until a signal or until one exits; returns the exit status for
    the supervisor (0 after a requested stop in which every child exited 0, else 1). A child runs
    ``program`` (default ``python -m pipeline.cli``) with :func:`child_args`."""
    if n < 1:
        raise ValueError(f"processes must be >= 1, got {n}")
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:
            log.info("%s received: stopping %d worker processes", signal.Signals(signum).name, n)
        stopping = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    root = Path(__file__).resolve().parents[1]
    children: list[subprocess.Popen[bytes]] = []
    status = 0
    try:
        for i in range(n):
            cmd = [*(program or (sys.executable, "-m", "pipeline.cli")), *child_args(argv, i, metrics_port)]
            children.append(subprocess.Popen(cmd, cwd=root, preexec_fn=_pdeathsig_preexec()))  # noqa: PLW1509
        log.info("started %d worker processes: pids %s", n, ", ".join(str(c.pid) for c in children))
        while not stopping:
            ended = [c for c in children if c.poll() is not None]
            if ended:
                c = ended[0]
                log.error("worker process %d exited with status %s: stopping the others", c.pid, c.returncode)
                status = 1
                break
            time.sleep(_POLL_S)
        for c in children:
            if c.poll() is None:
                c.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for c in children:
            try:
                c.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker process %d did not stop within %.0f s: killing it", c.pid, grace_s)
                c.kill()
                c.wait()
            if c.returncode != 0:
                status = 1
        return status
    finally:
        for c in children:  # an exception above (e.g. a failed start) must not orphan children
            if c.poll() is None:
                c.kill()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
