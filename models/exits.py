"""Exit rules: decide, per sample and after every layer, whether the prediction is final.

Every rule is *stateful and streaming*: it sees one exit's probabilities at a time and keeps a small
per-sample state (a dict of tensors whose first dimension is the batch). This is what lets the
inference engine retire, compact and refill samples that sit at different depths: the state rows
travel with their samples (``index_state`` / ``cat_states``).

    state = rule.init_state(batch, device)
    for layer in 1..L:
        probs = softmax(exit_head_layer(h))            # [B, C]
        exit_now, state = rule.step(state, probs)       # [B] bool

The caller forces an exit at the last layer; rules never need to know the depth.
Ties between classes resolve to the lower class index (``torch.argmax`` semantics).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar

import torch

State = dict[str, torch.Tensor]


def normalized_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy / log(C), in [0, 1]. probs: [B, C] -> [B]."""
    c = probs.shape[-1]
    ent = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
    return ent / math.log(c)


@dataclass(frozen=True)
class ExitRule:
    """Base class. Subclasses set ``name`` and implement ``step``."""

    name: ClassVar[str] = "base"

    def init_state(self, batch: int, device: torch.device | str = "cpu") -> State:
        return {}

    def step(self, state: State, probs: torch.Tensor) -> tuple[torch.Tensor, State]:
        """probs: [B, C] float. Returns (exit [B] bool, new state)."""
        raise NotImplementedError

    def params(self) -> dict[str, float | int]:
        return asdict(self)

    def describe(self) -> dict[str, object]:
        return {"rule": self.name, "params": self.params()}


@dataclass(frozen=True)
class FullDepth(ExitRule):
    """Never exits early: every sample runs all layers (the baseline)."""

    name: ClassVar[str] = "full"

    def step(self, state: State, probs: torch.Tensor) -> tuple[torch.Tensor, State]:
        return torch.zeros(probs.shape[0], dtype=torch.bool, device=probs.device), state


@dataclass(frozen=True)
class MaxProb(ExitRule):
    """Exit when the largest class probability is >= ``threshold``."""

    threshold: float = 0.9
    name: ClassVar[str] = "maxprob"

    def step(self, state: State, probs: torch.Tensor) -> tuple[torch.Tensor, State]:
        return probs.max(-1).values >= self.threshold, state


@dataclass(frozen=True)
class Entropy(ExitRule):
    """DeeBERT: exit when normalised entropy (entropy / log C) is < ``threshold``."""

    threshold: float = 0.3
    name: ClassVar[str] = "entropy"

    def step(self, state: State, probs: torch.Tensor) -> tuple[torch.Tensor, State]:
        return normalized_entropy(probs) < self.threshold, state


@dataclass(frozen=True)
class Patience(ExitRule):
    """PABEE: exit once the last ``patience`` exits all predicted the same class.

    ``patience=1`` exits at the first layer; a patience larger than the depth never fires
    (the caller's forced exit at the last layer then applies).
    """

    patience: int = 2
    name: ClassVar[str] = "patience"

    def init_state(self, batch: int, device: torch.device | str = "cpu") -> State:
        return {
            "prev": torch.full((batch,), -1, dtype=torch.long, device=device),
            "run": torch.zeros(batch, dtype=torch.long, device=device),
        }

    def step(self, state: State, probs: torch.Tensor) -> tuple[torch.Tensor, State]:
        pred = probs.argmax(-1)
        run = torch.where(pred == state["prev"], state["run"] + 1, torch.ones_like(state["run"]))
        return run >= self.patience, {"prev": pred, "run": run}


@dataclass(frozen=True)
class ConfidenceWindow(ExitRule):
    """ELBERT's confidence-window-based (CWB) rule, generalised to C classes.

    Two stages, checked after every layer; the sample exits when either fires:

    1. confidence: normalised entropy of this exit's probabilities < ``threshold``;
    2. window: the last ``window`` exits (this one included) all predicted the same class, each
       with max-probability >= 1/C + ``margin``.

    ELBERT's public code is binary and compares P(class 0) with 0.5 +/- margin; for C = 2 the
    window stage here is exactly that. ``window`` longer than the depth means stage 2 never fires.
    ``margin >= 1 - 1/C`` disables stage 2 (the rule becomes the entropy rule).
    """

    threshold: float = 0.2
    window: int = 2
    margin: float = 0.3
    name: ClassVar[str] = "cwb"

    def init_state(self, batch: int, device: torch.device | str = "cpu") -> State:
        return {
            "prev": torch.full((batch,), -1, dtype=torch.long, device=device),
            "run": torch.zeros(batch, dtype=torch.long, device=device),
        }

    def step(self, state: State, probs: torch.Tensor) -> tuple[torch.Tensor, State]:
        c = probs.shape[-1]
        maxp, pred = probs.max(-1)
        confident = maxp >= (1.0 / c + self.margin)
        extend = confident & (pred == state["prev"])
        run = torch.where(extend, state["run"] + 1, confident.long())
        exit_now = (normalized_entropy(probs) < self.threshold) | (run >= self.window)
        # A non-confident exit breaks the window: remember no class so the next one restarts it.
        prev = torch.where(confident, pred, torch.full_like(pred, -1))
        return exit_now, {"prev": prev, "run": run}


RULES: dict[str, type[ExitRule]] = {
    cls.name: cls for cls in (FullDepth, MaxProb, Entropy, Patience, ConfidenceWindow)
}


def make_rule(rule_name: str, **params: float) -> ExitRule:
    """Build a rule by name (``full``, ``maxprob``, ``entropy``, ``patience``, ``cwb``)."""
    try:
        cls = RULES[rule_name]
    except KeyError:
        raise ValueError(f"unknown exit rule {rule_name!r}; choose from {sorted(RULES)}") from None
    known = {f.name for f in fields(cls)}
    if unknown := set(params) - known:
        raise ValueError(f"exit rule {rule_name!r} has no knob {sorted(unknown)}; its knobs: {sorted(known)}")
    return cls(**params)  # type: ignore[arg-type]


def parse_rule(spec: str) -> ExitRule:
    """Parse ``"cwb:threshold=0.2,window=2,margin=0.3"`` or ``"entropy:0.3"`` or ``"full"``."""
    name, _, rest = spec.partition(":")
    params: dict[str, float | int] = {}
    if rest:
        knobs = {f.name: f.type for f in fields(RULES.get(name, FullDepth))}
        for part in rest.split(","):
            key, eq, val = part.partition("=")
            if not eq:  # positional: the rule's first knob
                key, val = next(iter(knobs), ""), key
            try:
                num = float(val)
            except ValueError:
                raise ValueError(f"exit rule spec {spec!r}: {val!r} is not a number") from None
            params[key.strip()] = int(num) if knobs.get(key.strip()) in (int, "int") else num
    return make_rule(name, **params)


def index_state(state: State, idx: torch.Tensor) -> State:
    """Select rows of a rule state (compaction)."""
    return {k: v[idx] for k, v in state.items()}


def cat_states(states: list[State]) -> State:
    """Concatenate rule states along the batch (merging cohorts)."""
    if not states or not states[0]:
        return {}
    return {k: torch.cat([s[k] for s in states]) for k in states[0]}


@dataclass
class Simulation:
    """Result of replaying a rule over precomputed per-exit probabilities."""

    exit_layer: torch.Tensor  # [N] long, 1-based
    pred: torch.Tensor  # [N] long
    probs: torch.Tensor = field(repr=False)  # [N, C] at the exit layer


def simulate(rule: ExitRule, all_probs: torch.Tensor) -> Simulation:
    """Apply ``rule`` to every exit's probabilities. all_probs: [L, N, C] -> per-sample exit.

    The same ``step`` calls the engine makes, one layer at a time, so the evaluation and the
    engine agree by construction. The last layer always exits.
    """
    n_layers, n, _ = all_probs.shape
    state = rule.init_state(n, all_probs.device)
    exit_layer = torch.full((n,), n_layers, dtype=torch.long, device=all_probs.device)
    done = torch.zeros(n, dtype=torch.bool, device=all_probs.device)
    for layer in range(n_layers):
        exit_now, state = rule.step(state, all_probs[layer])
        newly = exit_now & ~done
        exit_layer[newly] = layer + 1
        done |= newly
    chosen = all_probs[exit_layer - 1, torch.arange(n, device=all_probs.device)]
    return Simulation(exit_layer=exit_layer, pred=chosen.argmax(-1), probs=chosen)


def default_sweep(num_layers: int) -> list[ExitRule]:
    """The knob sweep ``finsent eval`` reports for every rule."""
    rules: list[ExitRule] = [FullDepth()]
    rules += [MaxProb(t) for t in (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)]
    rules += [Entropy(t) for t in (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)]
    rules += [Patience(p) for p in range(1, num_layers + 1)]
    rules += [
        ConfidenceWindow(t, w, m)
        for t in (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
        for w in (2, 3)
        for m in (0.2, 0.3, 0.4, 0.5)
    ]
    return rules
