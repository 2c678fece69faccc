"""The one place Kafka and Redis clients are built from :class:`~pipeline.settings.Settings`.

Every client in the pipeline (the worker's consumer and producer, the outbox scanner, topic
creation, ``finsent produce``, the demo) comes from here, so the security settings -- Kafka
SSL and SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), Redis TLS (``rediss://``) and ACL
user/password -- apply to all of them or to none.

Each builder also takes a plain string (a bootstrap list or a Redis URL): that means "no
security", which is what the embedded broker and Redis of the demo, benchmarks and tests need.

Secrets stay inside the client objects: nothing here logs, and :class:`Settings` prints its
passwords as ``**********`` (the Redis URL's password as ``***``).
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from pipeline.settings import Settings

if TYPE_CHECKING:
    import redis as sync_redis
    import redis.asyncio as aioredis
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

__all__ = [
    "kafka_admin",
    "kafka_consumer",
    "kafka_options",
    "kafka_producer",
    "kafka_ssl_context",
    "redis_client",
    "redis_options",
    "redis_sync_client",
]

Target = Settings | str


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext:
    """TLS context for the brokers: the CA bundle (system CAs if none), the optional client
    certificate for mutual TLS, certificate and host-name verification on (host names can be
    turned off for brokers addressed by IP)."""
    ctx = ssl.create_default_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    )
    ctx.check_hostname = settings.kafka_ssl_check_hostname
    if settings.kafka_ssl_certfile:
        key_password = settings.kafka_ssl_key_password
        ctx.load_cert_chain(
            str(settings.kafka_ssl_certfile),
            str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
            key_password.get_secret_value() if key_password else None,
        )
    return ctx


def kafka_options(target: Target) -> dict[str, Any]:
    """Connection and security keyword arguments shared by aiokafka's producer, consumer and
    admin client: ``bootstrap_servers``, ``security_protocol``, plus ``ssl_context`` for SSL /
    SASL_SSL and ``sasl_mechanism`` / ``sasl_plain_username`` / ``sasl_plain_password`` for
    SASL_* (aiokafka uses the ``sasl_plain_*`` pair for SCRAM too)."""
    if isinstance(target, str):
        return {"bootstrap_servers": target}
    s = target
    opts: dict[str, Any] = {"bootstrap_servers": s.bootstrap, "security_protocol": s.kafka_security_protocol}
    if s.kafka_security_protocol in ("SSL", "SASL_SSL"):
        opts["ssl_context"] = kafka_ssl_context(s)
    if s.kafka_security_protocol.startswith("SASL_"):
        password = s.kafka_sasl_password  # Settings requires user and password for SASL_*
        opts["sasl_mechanism"] = s.kafka_sasl_mechanism
        opts["sasl_plain_username"] = s.kafka_sasl_username
        opts["sasl_plain_password"] = password.get_secret_value() if password else None
    return opts


def kafka_producer(target: Target, **kwargs: Any) -> AIOKafkaProducer:
    """An (unstarted) producer; ``kwargs`` set behaviour (acks, linger_ms, ...), not connection."""
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(**kafka_options(target), **kwargs)


def kafka_consumer(target: Target, *topics: str, **kwargs: Any) -> AIOKafkaConsumer:
    """An (unstarted) consumer of ``topics`` (none: assign or subscribe later)."""
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(*topics, **kafka_options(target), **kwargs)


def kafka_admin(target: Target, **kwargs: Any) -> AIOKafkaAdminClient:
    """An (unstarted) admin client (topic creation)."""
    from aiokafka.admin import AIOKafkaAdminClient

    return AIOKafkaAdminClient(**kafka_options(target), **kwargs)


def redis_options(target: Target) -> dict[str, Any]:
    """Keyword arguments for ``Redis.from_url(settings.redis_url, ...)``: the ACL user and
    password, and for a ``rediss://`` URL the TLS files and checks (certificates are always
    required; redis-py's own default)."""
    if isinstance(target, str):
        return {}
    s = target
    opts: dict[str, Any] = {}
    if s.redis_username:
        opts["username"] = s.redis_username
    if s.redis_password is not None:
        opts["password"] = s.redis_password.get_secret_value()
    if s.redis_url.startswith("rediss://"):
        opts["ssl_cert_reqs"] = "required"
        opts["ssl_check_hostname"] = s.redis_ssl_check_hostname
        for key, path in (
            ("ssl_ca_certs", s.redis_ssl_cafile),
            ("ssl_certfile", s.redis_ssl_certfile),
            ("ssl_keyfile", s.redis_ssl_keyfile),
        ):
            if path:
                opts[key] = str(path)
    return opts


def _redis_url(target: Target) -> str:
    return target if isinstance(target, str) else target.redis_url


def redis_client(target: Target, **kwargs: Any) -> aioredis.Redis:
    """An asyncio Redis client; ``kwargs`` set behaviour (timeouts, retry), not credentials."""
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(_redis_url(target), **redis_options(target), **kwargs)


def redis_sync_client(target: Target, **kwargs: Any) -> sync_redis.Redis:
    """A blocking Redis client, configured like :func:`redis_client`."""
    import redis as sync_redis

    return sync_redis.Redis.from_url(_redis_url(target), **redis_options(target), **kwargs)
