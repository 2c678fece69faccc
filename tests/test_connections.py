"""Security settings reach the real clients: Kafka SSL/SASL options on aiokafka's producer,
consumer and admin client; Redis TLS + ACL user against a private TLS-only redis-server; and no
secret ever shows in a settings repr or in the worker's log."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Iterator

import orjson
import pytest
import redis
from pydantic import SecretStr, ValidationError
from streaming_helpers import wait_drained
from tls_helpers import Certs, TlsRedis, make_certs, tls_redis

from pipeline.connections import (
    kafka_admin,
    kafka_consumer,
    kafka_options,
    kafka_producer,
    redis_client,
    redis_options,
    redis_sync_client,
)
from pipeline.settings import Settings

SASL_PASSWORD = "sasl-secret-91c2"
REDIS_PASSWORD = "redis-secret-5d0e"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def secured(certs: Certs, **kw: object) -> Settings:
    """Every secret set: SASL_SSL with SCRAM-SHA-512, mutual TLS, Redis TLS + ACL user."""
    base: dict[str, object] = {
        "bootstrap": "kafka-1:9093,kafka-2:9093",
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "finsent",
        "kafka_sasl_password": SASL_PASSWORD,
        "kafka_ssl_cafile": certs.ca,
        "kafka_ssl_certfile": certs.client_cert,
        "kafka_ssl_keyfile": certs.client_key_encrypted,
        "kafka_ssl_key_password": certs.key_password,
        "redis_url": "rediss://redis.internal:6380/2",
        "redis_username": "finsent-app",
        "redis_password": REDIS_PASSWORD,
        "redis_ssl_cafile": certs.ca,
        "redis_ssl_certfile": certs.client_cert,
        "redis_ssl_keyfile": certs.client_key,
    }
    return Settings(**(base | kw))


# ------------------------------------------------------------------ settings


def test_settings_never_print_secrets(certs: Certs) -> None:
    s = secured(certs)
    url_pw = Settings(redis_url="redis://app:url-secret-33@redis:6379/0")
    for text in (repr(s), str(s), s.model_dump_json(), repr(url_pw), str(url_pw)):
        for secret in (SASL_PASSWORD, REDIS_PASSWORD, certs.key_password, "url-secret-33"):
            assert secret not in text
    assert "redis://app:***@redis:6379/0" in repr(url_pw)
    assert isinstance(s.kafka_sasl_password, SecretStr)
    assert s.kafka_sasl_password.get_secret_value() == SASL_PASSWORD


def test_validation_errors_do_not_echo_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINSENT_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")  # no user: invalid
    monkeypatch.setenv("FINSENT_KAFKA_SASL_PASSWORD", SASL_PASSWORD)
    monkeypatch.setenv("FINSENT_REDIS_URL", "redis://:url-secret-33@h:6379/0")
    monkeypatch.setenv("FINSENT_REDIS_PASSWORD", REDIS_PASSWORD)  # given twice: invalid
    with pytest.raises(ValidationError) as err:
        Settings()
    assert "FINSENT_KAFKA_SASL_USERNAME" in str(err.value)
    for secret in (SASL_PASSWORD, REDIS_PASSWORD, "url-secret-33"):
        assert secret not in str(err.value)
    monkeypatch.delenv("FINSENT_KAFKA_SECURITY_PROTOCOL")
    with pytest.raises(ValidationError, match="given twice") as err:
        Settings()
    for secret in (SASL_PASSWORD, REDIS_PASSWORD, "url-secret-33"):
        assert secret not in str(err.value)


def test_security_settings_come_from_finsent_env(monkeypatch: pytest.MonkeyPatch, certs: Certs) -> None:
    monkeypatch.setenv("FINSENT_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("FINSENT_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("FINSENT_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("FINSENT_KAFKA_SASL_PASSWORD", SASL_PASSWORD)
    monkeypatch.setenv("FINSENT_REDIS_URL", "rediss://r:6380/0")
    monkeypatch.setenv("FINSENT_REDIS_PASSWORD", REDIS_PASSWORD)
    monkeypatch.setenv("FINSENT_REDIS_SSL_CAFILE", str(certs.ca))
    s = Settings()
    opts = kafka_options(s)
    assert (opts["security_protocol"], opts["sasl_mechanism"], opts["sasl_plain_username"]) == (
        "SASL_PLAINTEXT", "SCRAM-SHA-256", "svc")  # fmt: skip
    assert opts["sasl_plain_password"] == SASL_PASSWORD
    assert "ssl_context" not in opts  # SASL_PLAINTEXT: no TLS
    assert redis_options(s)["password"] == REDIS_PASSWORD
    assert redis_options(s)["ssl_ca_certs"] == str(certs.ca)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "FINSENT_KAFKA_SASL_USERNAME"),
        ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "u"}, "FINSENT_KAFKA_SASL_PASSWORD"),
        ({"kafka_ssl_cafile": "CA"}, "use SSL or SASL_SSL"),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "KEY"}, "without FINSENT_KAFKA_SSL_CERTFILE"),
        ({"redis_ssl_cafile": "CA"}, "not rediss://"),
        ({"redis_url": "redis://:pw@h:6379/0", "redis_password": "pw2"}, "given twice"),
        ({"redis_url": "http://h:6379"}, "must start with redis://"),
        ({"namespace": "prod:"}, "FINSENT_NAMESPACE"),
        ({"kafka_sasl_mechanism": "GSSAPI"}, "kafka_sasl_mechanism"),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/no/such/ca.pem"}, "kafka_ssl_cafile"),
    ],
)
def test_insecure_or_inconsistent_settings_are_rejected(certs: Certs, kw: dict[str, str], message: str) -> None:
    files = {"CA": str(certs.ca), "KEY": str(certs.client_key)}
    with pytest.raises(ValidationError, match=message):
        Settings(**{k: files.get(v, v) for k, v in kw.items()})


def test_namespace_prefixes_topics_and_keys() -> None:
    from pipeline.keys import Keys

    s = Settings(namespace="staging.")
    assert s.topic(s.news_topic) == "staging.news.raw"
    assert s.topic(s.scores_topic) == "staging.finsent.ticker-scores"
    assert Keys(s.namespace).ticker("AAPL") == "staging.finsent:ticker:AAPL"
    assert Keys(s.namespace).outbox(s.topic(s.news_topic), 3) == "staging.finsent:outbox:staging.news.raw:3"


# ------------------------------------------------------------------ Kafka clients


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    assert kafka_options(Settings(bootstrap="b:9092")) == {"bootstrap_servers": "b:9092",
                                                           "security_protocol": "PLAINTEXT"}  # fmt: skip
    assert kafka_options("127.0.0.1:1") == {"bootstrap_servers": "127.0.0.1:1"}


def test_ssl_context_verifies_with_the_given_ca_and_loads_the_client_key(certs: Certs) -> None:
    ctx = kafka_options(secured(certs))["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert [dict(x[0] for x in c["subject"])["commonName"] for c in ctx.get_ca_certs()] == ["finsent test CA"]
    ctx = kafka_options(secured(certs, kafka_security_protocol="SSL", kafka_ssl_check_hostname=False,
                                kafka_ssl_cafile=None))["ssl_context"]  # fmt: skip
    assert ctx.verify_mode == ssl.CERT_REQUIRED and not ctx.check_hostname
    # the encrypted client key is really opened with the configured password
    with pytest.raises(ssl.SSLError):
        kafka_options(secured(certs, kafka_ssl_key_password="wrong"))


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_producer_consumer_and_admin_carry_the_security_options(certs: Certs, mechanism: str) -> None:
    s = secured(certs, kafka_sasl_mechanism=mechanism)
    producer = kafka_producer(s, acks="all", enable_idempotence=False)
    consumer = kafka_consumer(s, "t1", group_id="g")
    admin = kafka_admin(s, request_timeout_ms=1000)
    for client in (producer.client, consumer._client, admin._client):
        assert client._bootstrap_servers == "kafka-1:9093,kafka-2:9093"
        assert client._security_protocol == "SASL_SSL"
        assert isinstance(client._ssl_context, ssl.SSLContext)
        assert client._sasl_mechanism == mechanism
        assert client._sasl_plain_username == "finsent"
        assert client._sasl_plain_password == SASL_PASSWORD
    await producer.client.close()
    await consumer._client.close()
    await admin._client.close()


# ------------------------------------------------------------------ Redis clients


async def test_redis_client_uses_tls_and_the_acl_user(certs: Certs) -> None:
    s = secured(certs, redis_ssl_check_hostname=False)
    for client in (redis_client(s), redis_sync_client(s)):
        pool = client.connection_pool
        kw = pool.connection_kwargs
        assert "SSL" in pool.connection_class.__name__
        assert (kw["host"], kw["port"], kw["db"]) == ("redis.internal", 6380, 2)
        assert (kw["username"], kw["password"]) == ("finsent-app", REDIS_PASSWORD)
        assert (kw["ssl_ca_certs"], kw["ssl_certfile"], kw["ssl_keyfile"]) == (
            str(certs.ca), str(certs.client_cert), str(certs.client_key))  # fmt: skip
        assert kw["ssl_cert_reqs"] == "required" and kw["ssl_check_hostname"] is False
    plain = redis_sync_client(Settings(redis_url="redis://h:6379/0"))
    assert "SSL" not in plain.connection_pool.connection_class.__name__
    assert "password" not in plain.connection_pool.connection_kwargs


@pytest.fixture(scope="module")
def secure_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    try:
        with tls_redis(tmp_path_factory.mktemp("tls-redis")) as server:
            yield server
    except (FileNotFoundError, RuntimeError) as exc:
        pytest.skip(f"no TLS-capable redis-server here: {exc}")


def tls_settings(server: TlsRedis, **kw: object) -> Settings:
    base: dict[str, object] = {
        "redis_url": server.url, "redis_username": server.username, "redis_password": server.password,
        "redis_ssl_cafile": server.certs.ca, "redis_ssl_certfile": server.certs.client_cert,
        "redis_ssl_keyfile": server.certs.client_key,
    }  # fmt: skip
    return Settings(**(base | kw))


@pytest.mark.integration
def test_real_redis_over_tls_as_an_acl_user(secure_redis: TlsRedis) -> None:
    client = redis_sync_client(tls_settings(secure_redis))
    try:
        assert client.ping()
        assert client.acl_whoami() == secure_redis.username
    finally:
        client.close()
    failures = {
        "wrong password": tls_settings(secure_redis, redis_password="not-it"),
        "no user (default is off)": tls_settings(secure_redis, redis_username=None, redis_password=None),
        "no client certificate": tls_settings(secure_redis, redis_ssl_certfile=None, redis_ssl_keyfile=None),
        "plaintext": Settings(redis_url=secure_redis.url.replace("rediss://", "redis://"),
                              redis_username=secure_redis.username, redis_password=secure_redis.password),
    }  # fmt: skip
    for why, s in failures.items():
        c = redis_sync_client(s, socket_timeout=2, socket_connect_timeout=2)
        try:
            c.ping()
        except redis.RedisError:
            pass
        else:
            pytest.fail(f"{why}: PING succeeded")
        finally:
            c.close()


# ------------------------------------------------------------------ the worker's log


@pytest.mark.integration
@pytest.mark.slow
def test_worker_over_tls_redis_logs_no_secret(
    secure_redis: TlsRedis, broker, ns: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A real worker with the shipped model: Kafka (embedded, plaintext) in, the TLS + ACL
    Redis as commit point; one document is applied, and no log line (any logger, DEBUG)
    contains a password -- neither Redis's nor an unused SASL password present in the settings."""
    from pipeline.infra import create_topics
    from pipeline.worker import Worker

    s = tls_settings(secure_redis, bootstrap=broker.bootstrap, namespace=ns, group_id=f"{ns}g", partitions=1,
                     metrics_port=0, kafka_sasl_username="unused", kafka_sasl_password=SASL_PASSWORD)  # fmt: skip
    doc = {"id": f"{ns}doc-1", "text": "$AAPL beats on revenue, raises guidance",
           "published_at": int(time.time() * 1000), "kind": "news"}  # fmt: skip

    async def run() -> None:
        topics = [s.topic(t) for t in (s.news_topic, s.tweets_topic, s.documents_topic, s.scores_topic, s.dlq_topic)]
        await create_topics(s, topics, s.partitions)
        producer = kafka_producer(s, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(s.topic(s.news_topic), orjson.dumps(doc), key=doc["id"].encode())
        finally:
            await producer.stop()
        worker = Worker(s.model_copy(update={"session_timeout_ms": 6000}))
        task = asyncio.create_task(worker.run())
        try:
            await wait_drained(worker, task, 120)
        finally:
            worker.stop()
            await task
        assert worker.counts["applied"] == 1

    with caplog.at_level(logging.DEBUG):
        asyncio.run(run())
    client = redis_sync_client(s)
    try:
        assert client.hget(f"{ns}finsent:ticker:AAPL", "last_doc_id") == doc["id"].encode()
    finally:
        client.close()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "worker started" in text and secure_redis.url in text
    for secret in (secure_redis.password, SASL_PASSWORD):
        assert secret not in text


@pytest.mark.integration
def test_worker_with_wrong_credentials_stops_with_a_clear_error(
    secure_redis: TlsRedis, broker, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused password is not retried forever: ``finsent worker`` exits 1 at once, says why,
    and prints no password."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    wrong = "wrong-secret-0b1d"
    for name, value in {
        "FINSENT_REDIS_URL": secure_redis.url, "FINSENT_REDIS_USERNAME": secure_redis.username,
        "FINSENT_REDIS_PASSWORD": wrong, "FINSENT_REDIS_SSL_CAFILE": str(secure_redis.certs.ca),
        "FINSENT_REDIS_SSL_CERTFILE": str(secure_redis.certs.client_cert),
        "FINSENT_REDIS_SSL_KEYFILE": str(secure_redis.certs.client_key),
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    t0 = time.monotonic()
    result = CliRunner().invoke(app, ["worker", "--bootstrap", broker.bootstrap, "--namespace", ns,
                                      "--metrics-port", "0"])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert time.monotonic() - t0 < 30
    assert "refused the credentials" in result.output
    assert wrong not in result.output and secure_redis.password not in result.output
