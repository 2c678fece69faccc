"""The Redis key schema shared by the worker (which writes) and :mod:`pipeline.client` (which reads).

Deliberately light: no imports beyond the standard library, so a trading bot that imports the
client does not load the worker's modules.

Under a namespace ``{ns}`` (``Settings.namespace``):

=====================================  ======================================================
``{ns}finsent:ticker:{SYM}``           hash: the latest :class:`~pipeline.schemas.TickerScore`
``{ns}finsent:ticker:{SYM}:history``   sorted set (score = as_of): its history, capped
``{ns}finsent:tickers``                set: every symbol with a score
``{ns}finsent:updates``                pub/sub channel: every update as it is committed
``{ns}finsent:state:{SYM}``            hash: the aggregator's state of a ticker (with ``seq``)
``{ns}finsent:state:{SYM}:events``     sorted set: the events inside the aggregation window
``{ns}finsent:doc:{id}``               string: the text hash of an applied document
``{ns}finsent:dlq:{topic}:{p}:{off}``  string: a dead-lettered input message's fingerprint
``{ns}finsent:outbox:{topic}:{p}``     stream: output records of an input partition, not yet
                                       acknowledged by Kafka
``{ns}finsent:applied``                counter: documents applied
=====================================  ======================================================
"""

from __future__ import annotations

import hashlib

__all__ = ["DEFAULT_DOC_TTL_S", "Keys", "text_hash"]

#: How long a doc key (and a dead-letter guard) lives: the window in which re-deliveries and
#: re-sends of a document are recognised.
DEFAULT_DOC_TTL_S = 30 * 86_400


def text_hash(text: str) -> str:
    """Fingerprint of a document's text, stored under its doc key to tell re-sends apart."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


class Keys:
    """Redis key names under a namespace (the prefix of every key, like the topics')."""

    def __init__(self, namespace: str = "") -> None:
        self.prefix = f"{namespace}finsent:"
        self.applied = self.prefix + "applied"
        self.tickers = self.prefix + "tickers"
        self.updates = self.prefix + "updates"

    def doc(self, doc_id: str) -> str:
        return f"{self.prefix}doc:{doc_id}"

    def state(self, symbol: str) -> str:
        return f"{self.prefix}state:{symbol}"

    def events(self, symbol: str) -> str:
        return f"{self.prefix}state:{symbol}:events"

    def ticker(self, symbol: str) -> str:
        return f"{self.prefix}ticker:{symbol}"

    def history(self, symbol: str) -> str:
        return f"{self.prefix}ticker:{symbol}:history"

    def outbox(self, topic: str, partition: int) -> str:
        return f"{self.prefix}outbox:{topic}:{partition}"

    def stories(self, version: str) -> str:
        """Prefix of the story index's keys for signatures of ``version`` (the scripts add
        ``b:{band key}`` -> story id, ``s:{story id}`` -> its documents by event time,
        ``r:{story id}`` -> its representative signature)."""
        return f"{self.prefix}story:{version}:"

    def dlq_guard_suffix(self, topic: str, partition: int, offset: int) -> str:
        """Guard key without the prefix (the script adds it)."""
        return f"dlq:{topic}:{partition}:{offset}"
