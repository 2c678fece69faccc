"""Joint training of every exit: LoRA on the backbone (peft) plus fully trained exit heads.

Loss over exits l = 1..L with per-exit cross-entropy CE_l:

* ``equal``:   (1/L) * sum_l CE_l
* ``linear``:  sum_l (l / sum_k k) * CE_l        (deeper exits weigh more; DeeBERT/FastBERT-style)
* ``learned``: sum_l exp(-s_l) * CE_l + s_l       (ELBERT learns per-exit weights; this is the
               homoscedastic-uncertainty form, s_l learned with the heads, so no weight can
               collapse to zero for free)

CE_l can weight classes (``class_weighting="sqrt_inverse"``): the data is 65% neutral, and
unweighted training under-predicts the negative class, which costs macro-F1.

``ema`` > 0 evaluates, selects and keeps an exponential moving average of the weights (updated
after every step with that decay, ``torch.optim.swa_utils``) instead of the raw weights: an
average over the last few hundred steps of a noisy small-batch trajectory.

``distill`` > 0 adds FastBERT-style self-distillation: every shallower exit also learns the last
exit's (detached) distribution, which carries more than the one-hot label about borderline texts.

``teachers`` (trained artifacts) turn on ensemble distillation: every exit's target becomes
``(1 - teacher_weight) * one-hot + teacher_weight * p_T``, where p_T is the mean of the teachers'
full-depth probabilities (logit biases off) on that training text. Models that differ only in their
seed disagree on borderline and mislabelled texts; their average tells the student which ones.
``kd_temperature`` T > 1 softens both sides instead, in a separate T^2-scaled term (Hinton et al.).
``cross_fit`` = K instead takes p_T out of fold: K models of the same recipe, each trained on K-1
folds, score the fold they did not see (K + 1 trainings in all).

Batches are length-grouped (sorted within a shuffled window of 50 batches) so little compute goes
to padding; the run is seeded and deterministic on one CPU type for a fixed thread count. Early stopping
watches the dev set: by default the mean accuracy over all exits (every exit serves traffic), or with
``select="full_depth"`` the last exit's accuracy + macro-F1 (what the full-depth model is judged on),
or with ``select="calibrated"`` the same after the last exit's logit biases are tuned on dev, which is
the score candidates are ranked by (distillation at T > 1 shifts the raw decision boundary, so raw
accuracy can fall in an epoch where the calibrated score rises).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from torch import nn
from tqdm.auto import tqdm

from models.base import EarlyExitModel
from models.calibration import calibrate, calibrated_score
from models.datasets import LABELS, LabelledTexts
from models.elbert import ElbertClassifier
from models.scoring import exit_probabilities

FreshModel = TypeVar("FreshModel", bound=EarlyExitModel)  # ElbertClassifier or TokenTagger

WEIGHTINGS = ("equal", "linear", "learned")


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 32
    lr: float = 5e-4  # LoRA
    head_lr: float = 3e-3
    weight_decay: float = 0.01
    warmup: float = 0.06
    weighting: str = "learned"
    class_weighting: str = "none"  # "none" | "sqrt_inverse" | "inverse" (CE weight ~ frequency^-1/2 or ^-1)
    lora_r: int = 16
    lora_alpha: int = 32
    seed: int = 13
    split_seed: int | None = None  # seed of the 10% dev hold-out; None = ``seed`` (set it to vary only the init)
    patience: int = 1  # epochs without dev improvement before stopping
    select: str = "mean_exit"  # "mean_exit": mean dev accuracy over exits | "full_depth": dev accuracy + macro-F1 of the last exit | "calibrated": the same after tuning its biases
    distill: float = 0.0  # weight of self-distillation: KL(last exit || exit l) for l < L, last exit detached
    ema: float = 0.0  # decay of a weight moving average that is evaluated and kept instead (0 = off)
    teachers: tuple[str, ...] = ()  # artifact directories whose mean full-depth probabilities are soft targets
    cross_fit: int = 0  # >= 2: distil out-of-fold probabilities of this many same-recipe models instead
    teacher_weight: float = 0.5  # share of the teachers' distribution in every exit's target
    kd_temperature: float = 1.0  # > 1: Hinton distillation at this temperature (a separate, T^2-scaled term)
    rdrop: float = 0.0  # > 0: R-Drop, each batch twice with independent dropout + this weight * their symmetric KL
    threads: int | None = None
    device: str = "cpu"


class ExitLoss(nn.Module):
    """Combine per-exit losses. logits [L, B, C], target [B] class ids or [B, C] probabilities -> scalar."""

    def __init__(self, num_layers: int, weighting: str, class_weight: torch.Tensor | None = None):
        super().__init__()
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, not {weighting!r}")
        self.weighting = weighting
        self.num_layers = num_layers
        self.log_var = nn.Parameter(torch.zeros(num_layers), requires_grad=weighting == "learned")
        lin = torch.arange(1, num_layers + 1, dtype=torch.float32)
        fixed = lin / lin.sum() if weighting == "linear" else torch.full((num_layers,), 1.0 / num_layers)
        self.register_buffer("fixed", fixed)
        self.class_weight = class_weight

    def per_exit(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of every exit, [L]. target: class ids [B] or class probabilities [B, C]."""
        num_layers, batch, c = logits.shape
        soft = target.dim() == 2
        y = target.repeat(num_layers, 1) if soft else target.repeat(num_layers)
        ce = F.cross_entropy(logits.reshape(-1, c), y, weight=self.class_weight, reduction="none")
        if self.class_weight is not None:  # weighted mean per exit, as cross_entropy's own mean does
            per_sample = target @ self.class_weight if soft else self.class_weight[target]
            return ce.view(num_layers, batch).sum(1) / per_sample.sum()
        return ce.view(num_layers, batch).mean(1)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.combine(self.per_exit(logits, target))

    def combine(self, ce: torch.Tensor) -> torch.Tensor:
        """Per-exit losses [L] -> the weighted joint loss (scalar)."""
        if self.weighting == "learned":
            return (torch.exp(-self.log_var) * ce + self.log_var).sum() / self.num_layers
        return (self.fixed * ce).sum()

    def weights(self) -> list[float]:
        if self.weighting == "learned":
            w = torch.exp(-self.log_var.detach())
            return (w / w.sum()).tolist()
        return self.fixed.tolist()


def class_weights(labels: list[int], num_classes: int, scheme: str) -> torch.Tensor | None:
    """Per-class loss weights ~ frequency^-1/2 (``sqrt_inverse``) or ^-1 (``inverse``); mean 1 over samples."""
    if scheme == "none":
        return None
    powers = {"sqrt_inverse": 0.5, "inverse": 1.0}
    if scheme not in powers:
        raise ValueError(f"class weighting must be 'none' or one of {sorted(powers)}, not {scheme!r}")
    counts = torch.bincount(torch.tensor(labels), minlength=num_classes).float().clamp_min(1)
    w = counts.pow(-powers[scheme])
    return w / (w[torch.tensor(labels)].mean())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fresh_model(model_cls: type[FreshModel], base: str, seed: int, **config: Any) -> FreshModel:
    """``model_cls.from_backbone(base, **config)`` with its heads drawn from ``seed`` alone.

    Loading a backbone draws from the global RNG by an amount that changes from one process to the
    next (it follows Python's per-process hash seed), so heads drawn right after it, as
    ``from_backbone`` does, would differ in every run of the same command.
    """
    model = model_cls.from_backbone(base, **config)
    seed_everything(seed)
    for head in model.heads:
        head.reset_parameters()
    return model


def prepare_for_training(model: nn.Module, seed: int, threads: int | None, lora_r: int, lora_alpha: int,
                         device: str) -> None:
    """Seed, set CPU threads, add a LoRA adapter unless the model has one, move to ``device``."""
    seed_everything(seed)
    if threads:
        torch.set_num_threads(threads)
    if model.config.lora is None and lora_r > 0:
        model.add_lora(r=lora_r, alpha=lora_alpha)
    model.to(device)


def optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer, sched, params: list[nn.Parameter],
                   running: float | None) -> float:
    """Backward, clip to norm 1, step optimizer and schedule. Returns the smoothed loss for the bar."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()
    return loss.item() if running is None else 0.98 * running + 0.02 * loss.item()


def length_grouped_batches(lengths: list[int], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """Shuffle, sort by length inside windows of 50 batches, cut into batches, shuffle the batches."""
    order = rng.permutation(len(lengths))
    window = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window].tolist(), key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def split_dev(data: LabelledTexts, fraction: float, seed: int) -> tuple[LabelledTexts, LabelledTexts]:
    idx = np.random.default_rng(seed).permutation(len(data)).tolist()
    cut = max(1, int(len(idx) * fraction))
    return data.subset(sorted(idx[cut:])), data.subset(sorted(idx[:cut]))


def train(model: ElbertClassifier, data: LabelledTexts, dev: LabelledTexts, cfg: TrainConfig,
          progress: bool = True, teacher_probs: torch.Tensor | None = None) -> dict[str, Any]:
    """Fine-tune ``model`` in place; keeps the weights of the best dev epoch. Returns a history.

    ``teacher_probs`` [N, C] (rows sum to 1; at ``cfg.kd_temperature``) are distilled into every exit
    alongside the labels of ``data``, with share ``cfg.teacher_weight`` (``distillation_per_exit``).
    """
    prepare_for_training(model, cfg.seed, cfg.threads, cfg.lora_r, cfg.lora_alpha, cfg.device)
    loss_fn = ExitLoss(model.num_layers, cfg.weighting, class_weights(data.labels, len(model.labels),
                                                                    cfg.class_weighting)).to(cfg.device)
    backbone_params = [p for p in model.backbone.parameters() if p.requires_grad]
    groups = [
        {"params": backbone_params, "lr": cfg.lr},
        {"params": list(model.heads.parameters()) + list(loss_fn.parameters()), "lr": cfg.head_lr},
    ]
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    params = [p for g in groups for p in g["params"]]
    trainable = set(trainable_state(model))
    ids, _ = model.encode(data.texts)
    dev_ids, _ = model.encode(dev.texts)
    labels = torch.tensor(data.labels)
    rng = np.random.default_rng(cfg.seed)
    steps_per_epoch = math.ceil(len(ids) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[cfg.lr, cfg.head_lr], total_steps=steps_per_epoch * cfg.epochs,
        pct_start=cfg.warmup, anneal_strategy="linear",
    )
    history: list[dict[str, Any]] = []
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    averaged = (
        torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema))
        if cfg.ema > 0 else None
    )  # fmt: skip
    stale = 0
    t0 = time.time()
    for epoch in range(cfg.epochs):
        model.train()
        batches = length_grouped_batches([len(x) for x in ids], cfg.batch_size, rng)
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress)
        running = 0.0
        for step, batch in enumerate(bar):
            if cfg.rdrop > 0:  # both dropout passes in one forward: the batch stacked on itself
                batch = batch + batch
            x, a = model.pad([ids[i] for i in batch], model.pad_id, cfg.device)
            y = labels[batch].to(cfg.device)
            logits = model(x, a)
            if teacher_probs is None:
                loss = loss_fn(logits, y)
            else:
                loss = loss_fn.combine(distillation_per_exit(
                    loss_fn, logits, y, teacher_probs[batch].float().to(cfg.device), cfg.teacher_weight,
                    cfg.kd_temperature))
            if cfg.distill > 0:
                loss = loss + cfg.distill * self_distillation(logits)
            if cfg.rdrop > 0:
                loss = loss + cfg.rdrop * rdrop_consistency(*logits.chunk(2, dim=1))
            running = optimizer_step(loss, opt, sched, params, running if step else None)
            if averaged is not None:
                averaged.update_parameters(model)
            bar.set_postfix(loss=f"{running:.3f}")
        judged: ElbertClassifier = model if averaged is None else averaged.module  # type: ignore[assignment]
        probs = exit_probabilities(judged, dev_ids, device=cfg.device)
        gold = torch.tensor(dev.labels)
        acc = (probs.argmax(-1) == gold).float().mean(1).tolist()
        full_f1 = float(f1_score(gold.numpy(), probs[-1].argmax(-1).numpy(), average="macro", zero_division=0))
        record = {"epoch": epoch + 1, "dev_accuracy_per_exit": [round(v, 4) for v in acc],
                  "dev_mean_accuracy": round(float(np.mean(acc)), 4), "dev_full_macro_f1": round(full_f1, 4),
                  "loss_weights": loss_fn.weights(), "elapsed_s": round(time.time() - t0, 1)}
        if cfg.select == "calibrated":
            record["dev_calibrated_score"] = round(calibrated_score(probs[-1], gold), 4)
        history.append(record)
        if progress:
            tqdm.write(f"epoch {epoch + 1}: dev accuracy per exit {record['dev_accuracy_per_exit']}"
                       + (f", calibrated score {record['dev_calibrated_score']}" if cfg.select == "calibrated" else ""))
        score = {"mean_exit": record["dev_mean_accuracy"], "full_depth": acc[-1] + full_f1,
                 "calibrated": record.get("dev_calibrated_score")}[cfg.select]
        if best is None or score > best[0]:
            best, stale = (score, {k: v.clone() for k, v in judged.state_dict().items() if k in trainable}), 0
        else:
            stale += 1
            if stale > cfg.patience - 1:
                break
    assert best is not None
    model.load_state_dict(best[1], strict=False)
    model.eval()
    return {"history": history, "best_dev_score": best[0], "select": cfg.select, "train_seconds": round(time.time() - t0, 1)}


def self_distillation(logits: torch.Tensor) -> torch.Tensor:
    """Mean over exits l < L of KL(p_L || p_l), p_L detached. logits [L, B, C] -> scalar."""
    teacher = logits[-1].detach().softmax(-1)
    student = logits[:-1].log_softmax(-1)
    return F.kl_div(student, teacher.expand_as(student), reduction="none").sum(-1).mean()


def rdrop_consistency(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """R-Drop (Liang et al., 2021): mean over exits and samples of the symmetric KL
    ``(KL(p1 || p2) + KL(p2 || p1)) / 2`` between two dropout passes over the same batch.

    first, second: logits [L, B, C] -> scalar. Both sides keep their gradients, as in the paper.
    """
    a, b = first.log_softmax(-1), second.log_softmax(-1)
    kl_ab = F.kl_div(b, a, log_target=True, reduction="none").sum(-1)  # KL(p1 || p2), [L, B]
    kl_ba = F.kl_div(a, b, log_target=True, reduction="none").sum(-1)
    return 0.5 * (kl_ab + kl_ba).mean()


def distillation_per_exit(loss_fn: ExitLoss, logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor,
                          weight: float, temperature: float) -> torch.Tensor:
    """Per-exit loss [L] of logits [L, B, C] against labels [B] and teacher probabilities [B, C].

    At temperature 1 the label and teacher terms are one cross-entropy against the mixed target
    ``(1 - weight) * one-hot + weight * teacher``. Above 1 it is Hinton et al.'s form:
    ``(1 - weight) * CE(label, z) + weight * T^2 * CE(teacher, z / T)``, with ``teacher`` already the
    teachers' softmax at T. A teacher that is near-certain on its own training texts says little at
    T = 1; at T > 1 its ranking of the wrong classes and its relative confidence reach the student.
    """
    if temperature == 1.0:
        return loss_fn.per_exit(logits, mix_targets(labels, teacher, weight))
    if temperature <= 0 or not 0.0 <= weight <= 1.0:
        raise ValueError(f"need temperature > 0 and teacher weight in [0, 1], not {temperature} and {weight}")
    return ((1 - weight) * loss_fn.per_exit(logits, labels)
            + weight * temperature**2 * loss_fn.per_exit(logits / temperature, teacher))


def ensemble_probabilities(teachers: list[ElbertClassifier], data: LabelledTexts, labels: list[str],
                           device: str = "cpu", temperature: float = 1.0) -> torch.Tensor:
    """Mean full-depth probabilities [N, C] of trained ``teachers`` on ``data`` (softmax of logits / T),
    logit biases off.

    The biases were tuned for decisions; the student's own biases are tuned on dev after training.
    """
    mean = torch.zeros(len(data), len(labels))
    for teacher in teachers:
        if teacher.labels != labels:
            raise ValueError(f"a teacher has labels {teacher.labels}, the student has {labels}")
        teacher.to(device).set_logit_bias(torch.zeros_like(teacher.logit_bias))
        ids, _ = teacher.encode(data.texts)
        probs = exit_probabilities(teacher, ids, device=device, progress=True, temperature=temperature)
        mean += probs[-1] / len(teachers)
    return mean


def cross_fit_probabilities(make_model: Callable[[], ElbertClassifier], data: LabelledTexts, dev: LabelledTexts,
                            cfg: TrainConfig, progress: bool = True) -> torch.Tensor:
    """Out-of-fold full-depth probabilities [N, C]: ``data`` is cut into ``cfg.cross_fit`` seeded folds,
    and each fold is scored by a model trained with the same recipe on the other folds.

    A model scoring its own training texts is far more certain than its dev accuracy warrants, so
    its targets say little beyond the label; out-of-fold probabilities are as uncertain as on
    unseen text.
    """
    if cfg.cross_fit < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, not {cfg.cross_fit}")
    folds = np.array_split(np.random.default_rng(cfg.seed + 1).permutation(len(data)), cfg.cross_fit)
    fold_cfg = replace(cfg, cross_fit=0)
    scored: list[torch.Tensor] = []
    for j, fold in enumerate(folds):
        if progress:
            tqdm.write(f"cross-fit teacher {j + 1}/{len(folds)}")
        rest = sorted(i for k, other in enumerate(folds) if k != j for i in other.tolist())
        teacher = make_model()
        train(teacher, data.subset(rest), dev, fold_cfg, progress)
        ids, _ = teacher.encode([data.texts[i] for i in fold])
        scored.append(exit_probabilities(teacher, ids, device=cfg.device, temperature=cfg.kd_temperature)[-1])
    out = torch.empty(len(data), scored[0].shape[-1])
    out[torch.from_numpy(np.concatenate(folds))] = torch.cat(scored)
    return out


def mix_targets(labels: list[int] | torch.Tensor, probs: torch.Tensor, weight: float) -> torch.Tensor:
    """Soft targets [N, C] = (1 - weight) * one-hot(labels) + weight * probs [N, C]."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"teacher weight must lie in [0, 1], not {weight}")
    return (1 - weight) * F.one_hot(torch.as_tensor(labels), probs.shape[-1]).float() + weight * probs


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v for k, v in model.state_dict().items() if k in names}


def train_main(data_path: Path, out: Path, valid_path: Path | None, cfg: TrainConfig,
               base: str, pooling: str, shared_head: bool, max_length: int,
               rule_max_loss: float = 0.005, calibrated: bool = True, *, normalization: str | None = None,
               augment_seed: int | None = None, temperature: bool = False) -> dict[str, Any]:
    """``finsent train``: read data, train, calibrate on dev, save the artifact.

    ``normalization`` (e.g. ``models.text.NORMALIZATION``) is stored with the model and applied to
    every text it encodes, in training and inference alike. ``augment_seed`` adds the generated
    emoji/slang/negation rows of :mod:`models.augment` to the training part only, after the dev
    hold-out is split off, so no variant of a dev text is trained on.
    Calibration (dev only): per-exit logit biases (``tune_logit_bias``), optionally a temperature
    per exit, then the default rule = the fastest CWB setting within ``rule_max_loss`` accuracy of
    full depth.
    """
    from models.datasets import read_labelled_csv

    data = read_labelled_csv(data_path)
    if valid_path is not None:
        dev = read_labelled_csv(valid_path)
    else:
        data, dev = split_dev(data, 0.1, cfg.seed if cfg.split_seed is None else cfg.split_seed)
    augmented = 0
    if augment_seed is not None:
        from models.augment import augment

        labels = list(LABELS)
        extra = augment([(t, labels[y]) for t, y in zip(data.texts, data.labels)], seed=augment_seed)
        data = LabelledTexts(data.texts + [t for t, _, _ in extra], data.labels + [labels.index(y) for _, y, _ in extra])
        augmented = len(extra)
    config = {"pooling": pooling, "shared_head": shared_head, "max_length": max_length,
              "text_normalization": normalization}
    model = fresh_model(ElbertClassifier, base, cfg.seed, **config)
    probs = None
    if cfg.teachers:
        probs = ensemble_probabilities([ElbertClassifier.load(path) for path in cfg.teachers], data, model.labels,
                                       cfg.device, cfg.kd_temperature)
    elif cfg.cross_fit:
        probs = cross_fit_probabilities(lambda: fresh_model(ElbertClassifier, base, cfg.seed, **config), data, dev, cfg)
    summary = train(model, data, dev, cfg, teacher_probs=probs)
    if calibrated:
        summary.update(calibrate(model, dev, rule_max_loss, temperature=temperature))
    model.config.version = f"{out.name}-{time.strftime('%Y%m%d')}"
    model.config.info = {
        "train_data": str(data_path), "train_rows": len(data), "augmented_rows": augmented,
        "augment_seed": augment_seed, "dev_rows": len(dev),
        "dev_source": str(valid_path) if valid_path else "10% of train (seeded)",
        "train_config": dict(cfg.__dict__), **summary,
    }
    model.save(out)
    return summary
