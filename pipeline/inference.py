"""Build the model engine and the linker's tagger from settings: the one place the pipeline
reaches into ``models``."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from models.elbert import ElbertClassifier
from models.engine import EarlyExitEngine, Engine
from models.exits import ExitRule, make_rule, parse_rule
from models.pool import EnginePool
from models.targets import TARGET_MODEL_DIR
from pipeline.linking import Linker, default_linker
from pipeline.settings import Settings

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load_model(settings: Settings) -> ElbertClassifier:
    if settings.threads:
        torch.set_num_threads(settings.threads)
    model = ElbertClassifier.load(settings.model_dir)
    if settings.quantize:
        if settings.quantize != "int8":
            raise ValueError(f"quantize must be 'int8' (or unset), not {settings.quantize!r}")
        if settings.device != "cpu":
            raise ValueError("int8 dynamic quantization runs on CPU only; unset FINSENT_QUANTIZE for GPU")
        model.quantize_int8()
    return model


def exit_rule(settings: Settings, model: ElbertClassifier) -> ExitRule:
    """The configured rule, else the model's tuned default."""
    if settings.exit_rule:
        return parse_rule(settings.exit_rule)
    default = model.config.default_rule
    return make_rule(default["rule"], **default.get("params", {}))


def engine_mode(settings: Settings) -> str:
    """``settings.engine_mode``, with 'auto' resolved: refill on GPU, compact on CPU."""
    if settings.engine_mode != "auto":
        return settings.engine_mode
    return "compact" if settings.device == "cpu" else "refill"


#: Default replicas on CPU: one per core, at most this many (measured on 2 cores only).
MAX_DEFAULT_REPLICAS = 4


def cpu_threads(settings: Settings) -> int:
    """The CPU threads inference may use: ``settings.threads``, else all but one of the CPUs this
    process may run on (at least one). The one left is the event loop's: it fetches, links,
    aggregates and commits while a batch runs, and a message's latency waits on it (not
    ``torch.get_num_threads()``, which an earlier engine may have lowered)."""
    return settings.threads or max(1, len(os.sched_getaffinity(0)) - 1)


def engine_replicas(settings: Settings) -> int:
    """``settings.engine_replicas``, or the default: one per CPU thread (up to 4) on CPU, one on GPU."""
    if settings.engine_replicas:
        return settings.engine_replicas
    if settings.device != "cpu":
        return 1
    return max(1, min(MAX_DEFAULT_REPLICAS, cpu_threads(settings)))


def build_engine(settings: Settings, model: ElbertClassifier | None = None, **overrides) -> Engine:
    """The engine the settings ask for: one :class:`EarlyExitEngine`, or an :class:`EnginePool`
    of ``engine_replicas`` over one model (torch's CPU threads then shared out among them)."""
    model = model or load_model(settings)
    if settings.dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {settings.dtype!r}")
    if settings.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {settings.device!r} requested but CUDA is not available")
    kwargs = {"max_batch": settings.max_batch, "device": settings.device, "dtype": DTYPES[settings.dtype],
              "max_queue": settings.engine_queue, "policy": settings.engine_policy,
              "mode": engine_mode(settings)}
    kwargs.update(overrides)
    rule = exit_rule(settings, model)
    replicas = engine_replicas(settings)
    if settings.device == "cpu":
        torch.set_num_threads(max(1, cpu_threads(settings) // replicas))
    if replicas == 1:
        return EarlyExitEngine(model, rule, **kwargs)
    return EnginePool([EarlyExitEngine(model, rule, **kwargs) for _ in range(replicas)])


def target_model_dir(settings: Settings) -> Path | None:
    """The target model ``settings.target_model`` names ('default': the shipped research-only
    one), or None: no target-aware scores."""
    if not settings.target_model:
        return None
    return TARGET_MODEL_DIR if settings.target_model == "default" else Path(settings.target_model)


def build_target_engine(settings: Settings) -> Engine | None:
    """The engine of the target model (:func:`target_model_dir`), built like the document model's
    (device, dtype, batch, threads) with the target model's own exit rule; None when
    ``settings.target_model`` is unset."""
    model_dir = target_model_dir(settings)
    if model_dir is None:
        return None
    return build_engine(settings.model_copy(update={"model_dir": model_dir, "exit_rule": None}))


def build_linker(settings: Settings) -> Linker:
    """The linker the settings ask for: the default universe, plus the TOKEE ORG tagger when
    ``settings.tagger`` names one ('default' = the shipped artifact), at its tuned exit setting."""
    if not settings.tagger:
        return default_linker()
    from models.tagger import TokenTagger

    if settings.threads:
        torch.set_num_threads(settings.threads)
    tagger = TokenTagger.load(None if settings.tagger == "default" else settings.tagger)
    return Linker(default_linker().universe, tagger.org_spans)
