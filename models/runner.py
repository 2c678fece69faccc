"""How the early-exit engine computes: cohorts as tensors, one layer for one cohort, exits, compaction.

``models.scheduler`` decides which samples are in flight and which cohort runs next; this module
turns admitted samples into tensors, runs one encoder layer for a cohort, applies the exit rule
per sample, and drops the exited rows. One host sync per layer call: the exit decision, the
depths and the probabilities come back in one small device-to-host copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import torch

from models.backbone import additive_mask
from models.elbert import ElbertClassifier
from models.exits import ExitRule, State, cat_states, index_state
from models.scheduler import Waiting, chunk_bounds, length_order, survivors

R = TypeVar("R", bound=Waiting)


@dataclass
class EngineStats:
    """Work counters, summed over the engine's life (``bench/engine.py`` reports them)."""

    layer_calls: int = 0
    sample_layers: int = 0  # sum over calls of rows computed
    token_layers: int = 0  # sum over calls of rows * padded width
    real_token_layers: int = 0  # sum over calls of real (unpadded) tokens
    retired: int = 0
    steps: int = 0
    occupancy_sum: int = 0  # in-flight samples after admission, summed over steps
    exit_layers: list[int] = field(default_factory=list)

    @property
    def mean_occupancy(self) -> float:
        return self.occupancy_sum / max(1, self.steps)

    @property
    def padding_efficiency(self) -> float:
        return self.real_token_layers / max(1, self.token_layers)


@dataclass
class Cohort(Generic[R]):
    """In-flight samples that need the same layer weights next. Tensors are on the engine's device;
    rows are aligned with ``reqs`` and ``lengths``."""

    key: int  # depth for distinct layers; 0 for a shared layer
    hidden: torch.Tensor  # [n, T, H]
    attn: torch.Tensor  # [n, T] long
    depth: torch.Tensor  # [n] long, layers done
    state: State  # rule state, rows aligned with samples
    reqs: list[R]
    lengths: list[int]
    done: torch.Tensor | None = None  # [n] bool, static mode only (exited rows stay)
    n_done: int = 0
    waited: int = 0

    @property
    def size(self) -> int:
        return len(self.reqs)


#: One retired sample: its request, class probabilities (model label order), 1-based exit layer.
Exit = tuple[R, tuple[float, ...], int]


def _pad_to(t: torch.Tensor, width: int) -> torch.Tensor:
    """Right-pad dim 1 of [n, T, ...] with zeros to ``width``."""
    if t.shape[1] == width:
        return t
    pad = t.new_zeros((t.shape[0], width - t.shape[1], *t.shape[2:]))
    return torch.cat([t, pad], 1)


class LayerRunner(Generic[R]):
    """Computes layers for cohorts of one model under one exit rule.

    ``chunk``: run a cohort's layer in length-sorted chunks of this many rows, each trimmed to its
    own longest text (None: one call). ``keep_exited`` (static mode): exited rows keep computing
    until the whole cohort is done, as a static batch would.
    """

    def __init__(self, model: ElbertClassifier, rule: ExitRule, device: torch.device, chunk: int | None,
                 keep_exited: bool) -> None:
        self.model = model
        self.rule = rule
        self.device = device
        self.chunk = chunk
        self.keep_exited = keep_exited
        self.num_layers = model.num_layers
        self.shared = model.backbone.shares_layers
        self._pin = device.type == "cuda"

    def cohort(self, reqs: Sequence[R]) -> Cohort[R]:
        """Embed admitted samples into a new cohort at depth 0 (rows sorted by length when chunking)."""
        reqs = sorted(reqs, key=lambda r: len(r.ids)) if self.chunk else list(reqs)
        input_ids, attn = ElbertClassifier.pad([r.ids for r in reqs], self.model.pad_id)
        if self._pin:
            input_ids, attn = input_ids.pin_memory(), attn.pin_memory()
        input_ids = input_ids.to(self.device, non_blocking=True)
        attn = attn.to(self.device, non_blocking=True)
        n = len(reqs)
        return Cohort(
            key=0, hidden=self.model.backbone.embed(input_ids), attn=attn,
            depth=torch.zeros(n, dtype=torch.long, device=self.device),
            state=self.rule.init_state(n, self.device), reqs=reqs, lengths=[len(r.ids) for r in reqs],
            done=torch.zeros(n, dtype=torch.bool, device=self.device) if self.keep_exited else None,
        )

    def merge(self, a: Cohort[R], b: Cohort[R]) -> Cohort[R]:
        """One cohort of ``a``'s and ``b``'s rows, padded to the wider of the two (kept length-sorted
        when chunking, so chunks stay contiguous and homogeneous)."""
        width = max(a.hidden.shape[1], b.hidden.shape[1])
        merged = Cohort(
            key=a.key,
            hidden=torch.cat([_pad_to(a.hidden, width), _pad_to(b.hidden, width)]),
            attn=torch.cat([_pad_to(a.attn, width), _pad_to(b.attn, width)]),
            depth=torch.cat([a.depth, b.depth]),
            state=cat_states([a.state, b.state]),
            reqs=a.reqs + b.reqs,
            lengths=a.lengths + b.lengths,
            done=None if a.done is None or b.done is None else torch.cat([a.done, b.done]),
            n_done=a.n_done + b.n_done,
            waited=max(a.waited, b.waited),
        )
        if self.chunk:
            order = length_order(merged.lengths)
            self._keep_rows(merged, order)
        return merged

    def run_layer(self, c: Cohort[R], stats: EngineStats) -> tuple[list[Exit[R]], bool]:
        """Run the next layer for every row of ``c``, retire the rows that exit.

        Returns the exits and whether ``c`` still has rows to compute; ``c`` is updated in place
        (hidden states, depth, rule state; exited rows removed unless ``keep_exited``).
        """
        backbone = self.model.backbone
        mask = additive_mask(c.attn, c.hidden.dtype)  # [n, 1, 1, T]
        weights = 0 if self.shared else backbone.layer_key(c.key)
        n, width = c.hidden.shape[:2]
        for s, e, w in chunk_bounds(c.lengths, self.chunk):
            if w is None:
                c.hidden = backbone.run_layer(weights, c.hidden, mask)
                stats.token_layers += n * width
            else:
                c.hidden[s:e, :w] = backbone.run_layer(weights, c.hidden[s:e, :w], mask[s:e, ..., :w])
                stats.token_layers += (e - s) * w
            stats.layer_calls += 1
        c.depth = c.depth + 1
        stats.sample_layers += n
        stats.real_token_layers += sum(c.lengths)

        depth_arg: int | torch.Tensor = c.depth if self.shared else c.key + 1
        probs = self.model.exit_logits(c.hidden, c.attn, depth_arg).float().softmax(-1)  # [n, C]
        exit_now, c.state = self.rule.step(c.state, probs)
        exit_now = exit_now | (c.depth >= self.num_layers)
        if c.done is not None:
            exit_now = exit_now & ~c.done
        # The one host sync of this layer: decision + depth + probabilities, in one copy. [n, 2 + C]
        packed = torch.cat([exit_now.float()[:, None], c.depth.float()[:, None], probs], 1).cpu()
        exiting = packed[:, 0].nonzero().flatten().tolist()
        exits: list[Exit[R]] = [(c.reqs[i], tuple(float(v) for v in packed[i, 2:]), int(packed[i, 1]))
                                for i in exiting]

        if c.done is not None:  # static: exited rows keep computing until the batch is done
            c.done = c.done | exit_now
            c.n_done += len(exiting)
            return exits, c.n_done < n
        if exiting:
            keep = survivors(n, exiting)
            if not keep:
                return exits, False
            self._keep_rows(c, keep)
            width = max(c.lengths)  # drop padding columns nobody needs any more
            c.hidden, c.attn = c.hidden[:, :width], c.attn[:, :width]
        return exits, True

    def _keep_rows(self, c: Cohort[R], rows: list[int]) -> None:
        """Keep ``rows`` of ``c`` (in that order), dropping the others."""
        idx = torch.tensor(rows, device=self.device)
        c.hidden, c.attn, c.depth = c.hidden[idx], c.attn[idx], c.depth[idx]
        c.state = index_state(c.state, idx)
        c.reqs = [c.reqs[i] for i in rows]
        c.lengths = [c.lengths[i] for i in rows]
        if c.done is not None:
            c.done = c.done[idx]
