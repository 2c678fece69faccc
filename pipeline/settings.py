"""One typed settings object for every finsent process.

Values come from ``FINSENT_*`` environment variables (``FINSENT_MAX_BATCH=64``), then from CLI
options that override them. Nothing else in the code base reads the environment.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, FilePath, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.scheduler import DEFAULT_POLICY
from pipeline.keys import DEFAULT_DOC_TTL_S


class DType(StrEnum):
    """Floating-point type the model runs in (half precision is for GPUs)."""

    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


class Quantize(StrEnum):
    """Post-training quantization of the model (CPU only)."""

    int8 = "int8"


# Kafka topic names allow [a-zA-Z0-9._-]; the namespace prefixes topics and Redis keys alike.
_NAMESPACE = re.compile(r"[A-Za-z0-9._-]*")


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, for logs and reprs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, host = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{host}"))


class Settings(BaseSettings):
    # hide_input_in_errors: a validation error would otherwise print the inputs, passwords included
    model_config = SettingsConfigDict(env_prefix="FINSENT_", extra="ignore", hide_input_in_errors=True)

    # --- Kafka
    bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma separated")
    namespace: str = Field("", description="prefix for every topic and Redis key (per environment)")
    news_topic: str = "news.raw"
    tweets_topic: str = "tweets.raw"
    documents_topic: str = "finsent.documents"
    scores_topic: str = "finsent.ticker-scores"
    dlq_topic: str = "finsent.dlq"
    group_id: str = "finsent-worker"
    partitions: int = Field(6, ge=1, description="partitions per topic when finsent creates topics")
    replication_factor: int = Field(
        1, ge=1, description="replicas per partition when finsent creates topics (3 on a production cluster)")
    fetch_max_wait_ms: int = Field(
        10, ge=0, description="longest a consumer fetch waits for data (aiokafka's 500 ms default adds latency)")
    fetch_min_bytes: int = Field(
        8192, ge=1, description="bytes a worker fetch waits for (up to fetch_max_wait_ms): fewer, fuller fetches "
        "leave more CPU to the model")
    session_timeout_ms: int = Field(
        10_000, ge=1, description="Kafka consumer session timeout: how long the group waits for a worker that died "
        "uncleanly before handing its partitions to another (a restarted worker waits this long too)")
    create_missing_topics: bool = Field(
        True, description="a worker creates its input and output topics if they do not exist")

    # --- the worker's flow (pipeline/worker.py)
    max_outstanding: int | None = Field(
        None, ge=1, description="most fetched-but-not-done messages per worker (back-pressure: fetching pauses "
        "above it); default 16 x max_batch, deep enough that the engine is not starved while Redis and Kafka catch up")
    max_inflight_batches: int = Field(
        4, ge=1, description="most micro-batches being scored at once (later ones wait, filling up meanwhile)")
    commit_interval_s: float = Field(
        0.5, gt=0, description="how often a worker commits the offsets that are done (a shorter interval means "
        "less re-delivered after a crash, more commit requests)")
    drain_timeout_s: float = Field(
        30.0, ge=0, description="how long a shutdown or rebalance waits for work in flight before leaving it "
        "uncommitted (it is then re-delivered and de-duplicated)")
    stop_timeout_s: float = Field(
        40.0, ge=1.0, description="longest a worker takes to shut down after SIGTERM, draining included (a "
        "quarter of it, at most 10 s, kept for committing and closing clients); keep it below the orchestrator's "
        "grace period (docker-compose 45 s, Kubernetes 60 s). Past it plus 10 s the worker dumps its stacks and "
        "exits 1")
    startup_timeout_s: float = Field(
        30.0, gt=0, description="longest `finsent worker` waits at start-up for Kafka (cluster metadata) and "
        "Redis (PING) to answer before it exits 1 saying which one it could not reach; once started, it "
        "retries outages without a limit")

    # --- Kafka security (applied to every Kafka client by pipeline/connections.py)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism when the protocol is SASL_*")
    kafka_sasl_username: str | None = Field(None, description="SASL user (required for SASL_*)")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (required for SASL_*)")
    kafka_ssl_cafile: FilePath | None = Field(None, description="CA bundle for the brokers (default: system CAs)")
    kafka_ssl_certfile: FilePath | None = Field(None, description="client certificate (mutual TLS)")
    kafka_ssl_keyfile: FilePath | None = Field(None, description="client private key (mutual TLS)")
    kafka_ssl_key_password: SecretStr | None = Field(None, description="password of the client private key")
    kafka_ssl_check_hostname: bool = Field(True, description="verify the brokers' certificate host names")

    # --- Redis
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis/Valkey URL; rediss://... for TLS")
    redis_username: str | None = Field(None, description="Redis ACL user (default: the 'default' user)")
    redis_password: SecretStr | None = Field(None, description="Redis password (ACL user's or requirepass)")
    redis_ssl_cafile: FilePath | None = Field(None, description="CA bundle for a rediss:// server (default: system CAs)")
    redis_ssl_certfile: FilePath | None = Field(None, description="client certificate for rediss:// (mutual TLS)")
    redis_ssl_keyfile: FilePath | None = Field(None, description="client private key for rediss:// (mutual TLS)")
    redis_ssl_check_hostname: bool = Field(True, description="verify the Redis server's certificate host name")
    history_len: int = Field(10_000, ge=1, description="entries kept per ticker history sorted set")
    doc_ttl_s: int = Field(
        DEFAULT_DOC_TTL_S, ge=1, description="how long Redis remembers a document id (and a dead-lettered "
        "message) to de-duplicate re-deliveries and re-sends; longer than any replay or redelivery window")

    # --- micro-batching and the model
    max_batch: int = Field(64, ge=1, description="largest batch handed to the engine")
    max_wait_ms: int = Field(20, ge=0, description="longest wait to fill a batch")
    model_dir: Path | None = Field(None, description="model artifact directory (default: the shipped model)")
    device: str = Field("cpu", description="torch device the model runs on: 'cpu', 'cuda' or 'cuda:N'")
    dtype: DType = Field(DType.float32, description="float32, float16 or bfloat16 (half precision on GPU)")
    threads: int | None = Field(
        None, ge=1, description="CPU threads for inference (default: the CPUs less one, at least one)"
    )
    quantize: Quantize | None = Field(None, description="'int8' for dynamic int8 quantization on CPU")
    exit_rule: str | None = Field(None, description="exit rule spec, e.g. 'cwb:threshold=0.2,window=2,margin=0.3'")
    tagger: str | None = Field(
        None,
        description="ORG tagger that settles ambiguous company names ('Apple', 'Target') in ticker linking: "
        "'default' (the shipped TOKEE tagger, research licence), a tagger artifact directory, or unset for "
        "the context-cue rules",
    )
    target_model: str | None = Field(
        None,
        description="per-ticker sentiment for texts that link two or more tickers ('AAPL beats, MSFT misses'): "
        "'default' (the shipped target model, research licence: trained on non-commercial data) or a target "
        "model directory; one extra pass per ticker of such texts. Unset: every ticker of a text takes the "
        "text's score",
    )
    engine_queue: int = Field(4096, ge=1, description="texts waiting in the engine before submitters block")
    engine_replicas: int | None = Field(
        None,
        ge=1,
        description="engines over the one model, each in its own thread (default: one per CPU thread on CPU, "
        "torch then single-threaded in each; 1 on GPU)",
    )
    engine_mode: Literal["auto", "refill", "compact", "static"] = Field(
        "refill",
        description="'refill' (exited texts leave the batch, waiting ones take their slots: the default, as it "
        "keeps batches full), 'compact' (exited texts leave; a new batch starts when the last one is done), "
        "'static', or 'auto' = refill on GPU, compact on CPU",
    )
    engine_policy: Literal["deepest", "largest"] = Field(
        DEFAULT_POLICY,
        description="which in-flight cohort the engine runs next: 'deepest' finishes started texts first (low "
        "tail latency under a steady stream); 'largest' makes each layer call as big as possible (more "
        "throughput on a backlog)",
    )

    # --- aggregation
    half_life_s: float = Field(3600.0, gt=0, description="half-life of the time-decayed ticker score")
    lateness_s: float = Field(3600.0, ge=0, description="how late (event time) a document may arrive")
    novelty: bool = Field(
        True, description="cluster near-duplicate documents into stories (retweets, wire copies, prefixes); off: "
        "every document is its own story with novelty 1")
    novelty_window_s: int = Field(
        86_400, ge=1, description="how long (event time) a story stays open: a near-duplicate published within "
        "this window of the story's documents is a repeat")
    novelty_weighting: bool = Field(
        True, description="scale each document's weight in the ticker aggregates by its novelty (a story's "
        "repeats count less)")
    languages: str = Field(
        "en", pattern=r"^(\*|[a-z]{2,3}(,[a-z]{2,3})*)$",
        description="comma-separated ISO 639-1 codes of the languages whose documents count in ticker "
        "aggregates, or '*' for all; other documents are published, marked aggregated=false (the model "
        "reads English only)")

    # --- data (training, evaluation, benchmarks; not the streaming worker)
    data_dir: Path | None = Field(
        None,
        description="folder holding the public datasets (not in the repository), in the layout of the data "
        "README, e.g. twitter_financial_news/validation.csv and finer_ord/test.conll under it; --data then "
        "also takes a dataset name such as twitter_financial_news/validation (list and sources: "
        "models/datasets.py DATASETS). Unset: --data must be a path",
    )

    # --- operations
    metrics_port: int = Field(9108, ge=0, description="Prometheus metrics HTTP port (0 = off)")

    @model_validator(mode="after")
    def _check_security(self) -> Self:
        """Reject a namespace that is not a legal topic-name prefix, and combinations that would
        silently connect without the security asked for."""
        if not _NAMESPACE.fullmatch(self.namespace):
            raise ValueError(f"FINSENT_NAMESPACE {self.namespace!r} may hold only letters, digits, '.', '_' and "
                             "'-' (it prefixes Kafka topic names), e.g. 'prod.' or 'staging-'")
        kafka_tls = self.kafka_security_protocol in ("SSL", "SASL_SSL")
        if not kafka_tls and (self.kafka_ssl_cafile or self.kafka_ssl_certfile or self.kafka_ssl_keyfile):
            raise ValueError("FINSENT_KAFKA_SSL_* files are set but FINSENT_KAFKA_SECURITY_PROTOCOL is "
                             f"{self.kafka_security_protocol}; use SSL or SASL_SSL")
        if self.kafka_security_protocol.startswith("SASL_") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(f"FINSENT_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                             "FINSENT_KAFKA_SASL_USERNAME and FINSENT_KAFKA_SASL_PASSWORD")
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise ValueError("FINSENT_KAFKA_SSL_KEYFILE is set without FINSENT_KAFKA_SSL_CERTFILE")
        url = urlsplit(self.redis_url)
        if url.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"FINSENT_REDIS_URL must start with redis://, rediss:// or unix://, got "
                             f"{redact_url(self.redis_url)!r}")
        if url.scheme != "rediss" and (self.redis_ssl_cafile or self.redis_ssl_certfile or self.redis_ssl_keyfile):
            raise ValueError("FINSENT_REDIS_SSL_* files are set but FINSENT_REDIS_URL is not rediss://")
        if self.redis_ssl_keyfile and not self.redis_ssl_certfile:
            raise ValueError("FINSENT_REDIS_SSL_KEYFILE is set without FINSENT_REDIS_SSL_CERTFILE")
        if url.password is not None and self.redis_password is not None:
            raise ValueError("the Redis password is given twice (in FINSENT_REDIS_URL and FINSENT_REDIS_PASSWORD); "
                             "keep it in FINSENT_REDIS_PASSWORD only")
        return self

    def __repr_args__(self) -> Any:
        # SecretStr fields already print as '**********'; a password inside the URL needs this.
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name == "redis_url" else value

    @property
    def aggregated_languages(self) -> frozenset[str] | None:
        """:attr:`languages` as a set; None means every language."""
        return None if self.languages == "*" else frozenset(self.languages.split(","))

    def topic(self, name: str) -> str:
        return f"{self.namespace}{name}"
