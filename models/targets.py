"""Sentiment toward one target in a text: the input a target model reads, and where the
research-only target model lives.

A target model is an ordinary early-exit classifier (:mod:`models.elbert`) trained on
``"{target} [SEP] {text}"``: the target as written (``$AAPL``, ``Ford``), the tokenizer's separator
(the BERT tokenizer turns the literal ``[SEP]`` into its separator token), the text. Its three
classes are the sentiment toward that target. The one shipped here is trained on non-commercial
data (SemEval-2017 Task 5, FiQA 2018): a research artifact, never the default model
(``TARGET_MODEL_DIR/README.md``, docs/targets.md).
"""

from __future__ import annotations

from pathlib import Path

TARGET_MODEL_DIR = Path(__file__).parent / "artifacts" / "elbert-minilm-targets"


def target_input(text: str, target: str) -> str:
    """A target model's input for the sentiment toward ``target`` in ``text``."""
    return f"{target} [SEP] {text}"
