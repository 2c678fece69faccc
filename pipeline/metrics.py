"""Prometheus metrics of the streaming worker (``prometheus-client``, default registry).

Defined once at import so several workers in one process (tests, the demo) share them; served
over HTTP by :func:`serve` on ``settings.metrics_port`` (0 = off).
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

__all__ = [
    "BATCH_SIZE",
    "CONFLICTS",
    "CONSUMER_LAG",
    "DEAD_LETTERS",
    "DUPLICATES",
    "E2E_INGEST",
    "E2E_PUBLISHED",
    "EXIT_LAYER",
    "INFERENCE_LATENCY",
    "MESSAGES_IN",
    "MESSAGES_OUT",
    "OUTBOX_RECOVERED",
    "RETRIES",
    "serve",
]

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

MESSAGES_IN = Counter("finsent_messages_in_total", "Messages consumed, by input topic", ["topic"])
MESSAGES_OUT = Counter("finsent_messages_out_total", "Records acknowledged by Kafka, by output topic", ["topic"])
DEAD_LETTERS = Counter("finsent_dead_letters_total", "Dead letters written, by reason", ["reason"])
DUPLICATES = Counter(
    "finsent_duplicates_total", "Re-delivered or re-sent ids skipped (same id, same text)", ["stage"]
)
CONFLICTS = Counter("finsent_state_conflicts_total", "Optimistic-concurrency conflicts on ticker state")
RETRIES = Counter("finsent_retries_total", "Retries after Redis or Kafka errors", ["what"])
OUTBOX_RECOVERED = Counter(
    "finsent_outbox_recovered_total",
    "Outbox entries found pending during recovery: already in Kafka (skipped) or produced",
    ["result"],
)
BATCH_SIZE = Histogram(
    "finsent_batch_size", "Texts per micro-batch handed to the engine", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
INFERENCE_LATENCY = Histogram(
    "finsent_inference_seconds", "Wall time of one engine.predict call (a micro-batch)", buckets=_LATENCY_BUCKETS
)
EXIT_LAYER = Histogram(
    "finsent_exit_layer", "Encoder layer at which documents exited", buckets=tuple(range(1, 25))
)
CONSUMER_LAG = Gauge(
    "finsent_consumer_lag", "High watermark minus committed offset", ["topic", "partition"]
)
E2E_INGEST = Histogram(
    "finsent_ingest_to_redis_seconds", "Ingest time (Kafka) to the document's Redis commit", buckets=_LATENCY_BUCKETS
)
E2E_PUBLISHED = Histogram(
    "finsent_published_to_redis_seconds",
    "Event time (published_at) to the document's Redis commit",
    buckets=_LATENCY_BUCKETS + (300, 3600, 86400),
)


_serving: set[int] = set()


def serve(port: int) -> None:
    """Expose the metrics on ``http://0.0.0.0:port/metrics``; no-op for port 0 or a port this
    process already serves (several workers in one process share the registry)."""
    if port and port not in _serving:
        try:
            start_http_server(port)
        except OSError as exc:
            raise OSError(f"cannot serve metrics on port {port} ({exc}); pick another with "
                          "--metrics-port / FINSENT_METRICS_PORT, or 0 to turn them off") from exc
        _serving.add(port)
        log.info("metrics on :%d/metrics", port)
