"""Which errors are worth retrying, and the retry loop every Redis and Kafka call goes through.

Transient errors (a server unreachable or slow) are retried with capped exponential backoff, so
an outage stops progress instead of losing work; credential and permission errors are not, so
a misconfigured deployment fails visibly instead of retrying forever.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka import errors as kafka_errors
from aiokafka.errors import KafkaError
from redis.exceptions import AuthenticationError as RedisAuthenticationError
from redis.exceptions import AuthorizationError as RedisAuthorizationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pipeline import metrics

__all__ = ["CREDENTIAL_ERRORS", "TRANSIENT_ERRORS", "retry"]

log = logging.getLogger(__name__)

#: Errors worth retrying: the server is unreachable or slow, not wrong.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError, KafkaError, OSError, asyncio.TimeoutError,
)  # fmt: skip
#: Subclasses of those that no retry can fix: wrong credentials or missing ACLs. They stop the
#: process at once, so a misconfigured deployment crash-loops visibly instead of retrying forever.
CREDENTIAL_ERRORS: tuple[type[BaseException], ...] = (
    RedisAuthenticationError, RedisAuthorizationError, kafka_errors.AuthenticationFailedError,
    kafka_errors.AuthenticationMethodNotSupported, kafka_errors.SaslAuthenticationFailed,
    kafka_errors.UnsupportedSaslMechanismError, kafka_errors.IllegalSaslStateError,
    kafka_errors.TopicAuthorizationFailedError, kafka_errors.GroupAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
)  # fmt: skip

_T = TypeVar("_T")


async def retry(
    op: Callable[[], Awaitable[_T]],
    what: str,
    *,
    first_delay: float = 0.1,
    max_delay: float = 5.0,
    max_attempts: int | None = None,
) -> _T:
    """Run ``op`` until it succeeds, sleeping with capped exponential backoff (and jitter)
    after each transient error (:data:`TRANSIENT_ERRORS`); other errors, and
    :data:`CREDENTIAL_ERRORS`, propagate at once. Logs the first failure and every tenth; logs
    the recovery."""
    delay = first_delay
    attempt = 0
    while True:
        try:
            result = await op()
        except CREDENTIAL_ERRORS:
            raise
        except TRANSIENT_ERRORS as exc:
            attempt += 1
            metrics.RETRIES.labels(what).inc()
            if max_attempts is not None and attempt >= max_attempts:
                raise
            if attempt == 1 or attempt % 10 == 0:
                log.warning("%s failed (%r); retrying in %.1fs (attempt %d)", what, exc, delay, attempt)
            await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
            delay = min(max_delay, delay * 2)
            continue
        if attempt:
            log.info("%s succeeded after %d retries", what, attempt)
        return result
