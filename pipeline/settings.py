"""One typed settings object for every finsent process.

Values come from ``FINSENT_*`` environment variables (``FINSENT_MAX_BATCH=64``), then from CLI
options that override them. Nothing else in the code base reads the environment.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FINSENT_", extra="ignore")

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
    fetch_max_wait_ms: int = Field(
        10, ge=0, description="longest a consumer fetch waits for data (aiokafka's 500 ms default adds latency)")

    # --- Redis
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis/Valkey URL")
    history_len: int = Field(10_000, ge=1, description="entries kept per ticker history sorted set")

    # --- micro-batching and the model
    max_batch: int = Field(64, ge=1, description="largest batch handed to the engine")
    max_wait_ms: int = Field(20, ge=0, description="longest wait to fill a batch")
    model_dir: Path | None = Field(None, description="model artifact directory (default: the shipped model)")
    device: str = Field("cpu", description="'cpu', 'cuda' or 'cuda:N'")
    dtype: str = Field("float32", description="float32, float16 or bfloat16 (GPU)")
    threads: int | None = Field(None, ge=1, description="CPU threads for inference (default: torch's)")
    quantize: str | None = Field(None, description="'int8' for dynamic int8 quantization on CPU")
    exit_rule: str | None = Field(None, description="exit rule spec, e.g. 'cwb:threshold=0.2,window=2,margin=0.3'")
    engine_queue: int = Field(4096, ge=1, description="texts waiting in the engine before submitters block")

    # --- aggregation
    half_life_s: float = Field(3600.0, gt=0, description="half-life of the time-decayed ticker score")
    lateness_s: float = Field(3600.0, ge=0, description="how late (event time) a document may arrive")

    # --- operations
    metrics_port: int = Field(9108, ge=0, description="Prometheus metrics HTTP port (0 = off)")

    def topic(self, name: str) -> str:
        return f"{self.namespace}{name}"

    def key(self, name: str) -> str:
        return f"{self.namespace}{name}"
