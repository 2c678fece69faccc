"""Start-up checks and one-line errors for the commands that talk to Kafka and Redis: wait a
bounded time for each server, then say in one line which one did not answer and why.

aiokafka logs why a connection failed and then raises a generic error; :func:`kafka_log_kept`
keeps that log off the terminal and remembers the reason, so a command can print the reason
once instead of a traceback or a screen of retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Iterator

from pipeline.connections import kafka_admin, redis_client
from pipeline.settings import Settings, redact_url

__all__ = ["KafkaLog", "Unreachable", "kafka_error_line", "kafka_log_kept", "wait_for_kafka", "wait_for_redis"]

log = logging.getLogger(__name__)


def _url(redis: Settings | str) -> str:
    return redis if isinstance(redis, str) else redis.redis_url


class Unreachable(RuntimeError):
    """A server did not answer within the start-up wait; ``str()`` is the one line to show."""


class KafkaLog(logging.Handler):
    """Where aiokafka's log records go while :func:`kafka_log_kept` holds them: nowhere, except
    that the last warning or error is kept. aiokafka logs why a connection failed ('[Errno 111]
    Connect call failed', a TLS or SASL error) and then raises only 'Unable to bootstrap from
    [...]'; the logged reason is the one worth showing."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: str | None = None
        self.last_exc: BaseException | None = None

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        exc = args[-1] if args and isinstance(args[-1], BaseException) else None
        self.last_exc = exc
        self.last = str(exc) if exc is not None else record.getMessage()


@contextlib.contextmanager
def kafka_log_kept() -> Iterator[KafkaLog]:
    """Keep aiokafka's log off the terminal while the block runs (Python prints each warning of
    an unconfigured logger on stderr: one line per failed connection attempt, before the error
    that ends the command says the same) and yield the :class:`KafkaLog` that holds the last one."""
    logger = logging.getLogger("aiokafka")
    handler = KafkaLog()
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def kafka_error_line(exc: BaseException, bootstrap: str, kept: KafkaLog | None = None) -> str:
    """One line for a Kafka client error of a command: for a connection error, the reason
    aiokafka logged (``kept``) rather than its 'Unable to bootstrap from [...]'."""
    from aiokafka.errors import KafkaConnectionError

    if isinstance(exc, KafkaConnectionError):
        return f"cannot reach Kafka at {bootstrap}: {(kept.last if kept else None) or exc}"
    return f"{exc!r} (Kafka at {bootstrap})"


def _credential_errors() -> tuple[type[BaseException], ...]:
    from pipeline.retry import CREDENTIAL_ERRORS  # lazily: it imports redis and aiokafka

    return CREDENTIAL_ERRORS


async def wait_for_kafka(kafka: Settings | str, timeout_s: float, *, interval_s: float = 0.5) -> None:
    """Return once Kafka serves cluster metadata: aiokafka's admin client bootstraps (a metadata
    request to a bootstrap server) and then describes the cluster (a request to a broker as it
    advertises itself, so an unreachable advertised listener counts as unreachable), with the
    settings' TLS and SASL options.

    Raises :class:`Unreachable` once ``timeout_s`` seconds have passed without success (each
    attempt is cut off at that deadline), and a credential error (wrong SASL password, missing
    ACL; :data:`pipeline.retry.CREDENTIAL_ERRORS`) at once: no retry fixes it. Cancelling it
    (Ctrl-C under ``asyncio.run``) ends it at once, clients closed.
    """
    from aiokafka.errors import KafkaError

    bootstrap = kafka if isinstance(kafka, str) else kafka.bootstrap
    fatal = _credential_errors()
    deadline = time.monotonic() + timeout_s
    last: str = "no attempt finished"
    with kafka_log_kept() as kept:
        for attempt in itertools.count(1):
            remaining = deadline - time.monotonic()
            admin = kafka_admin(kafka, request_timeout_ms=int(1000 * min(10.0, max(1.0, remaining))))
            try:
                async with asyncio.timeout(max(0.05, remaining)):
                    try:
                        await admin.start()
                        await admin.describe_cluster()
                    finally:
                        await admin.close()
                return
            except fatal:
                raise
            except (KafkaError, OSError, TimeoutError) as exc:
                if isinstance(kept.last_exc, fatal):  # aiokafka logs a failed SASL handshake, then retries
                    raise kept.last_exc from exc
                last = kept.last or (f"no answer in {remaining:.1f} s" if isinstance(exc, TimeoutError) else repr(exc))
                kept.last = kept.last_exc = None
            if time.monotonic() + interval_s >= deadline:
                raise Unreachable(f"cannot reach Kafka at {bootstrap} within {timeout_s:g} s: {last}")
            if attempt == 1:
                log.info("Kafka at %s is not reachable yet (%s); trying again for up to %g s",
                         bootstrap, last, timeout_s)  # fmt: skip
            await asyncio.sleep(interval_s)
    raise AssertionError("unreachable")


async def wait_for_redis(redis: Settings | str, timeout_s: float, *, interval_s: float = 0.5) -> None:
    """Return once Redis answers PING (with the settings' credentials and TLS); raise
    :class:`Unreachable` after ``timeout_s`` seconds of failures, a credential error at once.
    Cancelling it ends it at once, client closed."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    where = redact_url(_url(redis))
    fatal = _credential_errors()
    deadline = time.monotonic() + timeout_s
    per_try = min(5.0, max(0.5, timeout_s))
    # redis-py's own retries would stretch one attempt past the deadline
    client = redis_client(redis, socket_connect_timeout=per_try, socket_timeout=per_try, retry=Retry(NoBackoff(), 0))
    last = "no attempt finished"
    try:
        for attempt in itertools.count(1):
            remaining = deadline - time.monotonic()
            try:
                async with asyncio.timeout(max(0.05, remaining)):
                    await client.ping()
                return
            except fatal:  # AuthenticationError is a ConnectionError: check it first
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError) as exc:
                timed_out = isinstance(exc, TimeoutError)
                last = f"no answer in {remaining:.1f} s" if timed_out else (str(exc) or repr(exc))
            if time.monotonic() + interval_s >= deadline:
                raise Unreachable(f"cannot reach Redis at {where} within {timeout_s:g} s: {last}")
            if attempt == 1:
                log.info("Redis at %s is not reachable yet (%s); trying again for up to %g s", where, last, timeout_s)
            await asyncio.sleep(interval_s)
    finally:
        await client.aclose()
    raise AssertionError("unreachable")
