"""Two-stage training of the TOKEE tagger: LoRA on the backbone (peft) plus one head per layer.

Stage 1, joint training, full depth through the HF layers:

    loss = sum_l CE_l,   CE_l = mean cross-entropy of head l over the labelled tokens

(labelled = each word's first subword; every other token is -100). Early stopping keeps the
epoch with the best mean dev entity F1 over the layers, since every layer's head may decide.

Stage 2, self-sampling fine-tuning (TOKEE). Per batch one exit setting is drawn:

* with probability ``p_full``: no exit (threshold 0);
* with probability ``p_aggressive``: the most aggressive setting (window 0, threshold ``t_max``);
* otherwise window uniform over ``windows`` (sentence-level included) and threshold ~ U(0, t_max).

The batch then runs layer by layer with the model's own (detached, dropout-on) predictions
deciding which words halt, and the loss is put on every layer under the resulting masks:

    loss = sum_l  sum_{labelled tokens active at layer l} CE(head_l) / #labelled tokens

so each head learns from the mix of fresh and copied-forward hidden states it will see at
inference, and a halted token contributes up to (and including) its exit layer.

Afterwards the default setting stored in the artifact is the cheapest one on the dev set whose
F1 is within ``select_loss`` of full depth (chosen on dev, never on test).
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from models.conll import IGNORE_TAG, META_SUFFIX, TaggedSentence, read_conll
from models.evaluate_tagger import PreparedSet, cheapest_within, evaluate_tagger, run_setting
from models.tagger import IGNORE, Encoded, TaggerBatch, TokenTagger
from models.tokee import SENTENCE
from models.train import (
    fresh_model,
    length_grouped_batches,
    optimizer_step,
    prepare_for_training,
    trainable_state,
)

FINER_LICENSE = ("FiNER-ORD (Shah et al. 2023), CC BY-NC 4.0: non-commercial; a model trained on it is a "
                 "research artifact")


@dataclass
class TaggerTrainConfig:
    epochs: int = 3  # stage 1 (upper bound; early stopping on dev)
    stage2_epochs: int = 1
    batch_size: int = 16
    lr: float = 1e-3  # LoRA
    head_lr: float = 3e-3
    stage2_lr_scale: float = 0.5  # stage-2 learning rates = stage-1 ones times this
    weight_decay: float = 0.01
    warmup: float = 0.06
    lora_r: int = 16
    lora_alpha: int = 32
    windows: tuple[int, ...] = (0, 1, 2, 3, SENTENCE)
    t_max: float = 0.5
    p_full: float = 0.1
    p_aggressive: float = 0.1
    select_loss: float = 0.005  # dev F1 loss allowed when choosing the artifact's default setting
    seed: int = 13
    patience: int = 1
    threads: int | None = None
    device: str = "cpu"


def encode_sentences(model: TokenTagger, sentences: list[TaggedSentence]) -> list[Encoded]:
    """CoNLL sentences -> labelled Encoded items (words = pre-tokenizer pieces of the tokens)."""
    out = []
    for s in sentences:
        words, tags, _ = model.split_words(s.tokens, s.tags)
        out.append(model.encode_words(words, tags))
    return out


def joint_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Stage 1: logits [L, B, T, C], labels [B, T] (-100 ignored) -> sum over layers of mean CE."""
    num_layers, _, _, c = logits.shape
    ce = F.cross_entropy(logits.reshape(-1, c), labels.reshape(-1).repeat(num_layers),
                         ignore_index=IGNORE, reduction="none").view(num_layers, -1)
    n = (labels != IGNORE).sum().clamp_min(1)
    return ce.sum(1).div(n).sum()


def masked_layer_loss(layer_logits: list[torch.Tensor], layer_active: list[torch.Tensor],
                      labels: torch.Tensor) -> torch.Tensor:
    """Stage 2: per layer, CE over labelled tokens active in that layer; / #labelled, summed."""
    labelled = labels != IGNORE
    n = labelled.sum().clamp_min(1)
    safe = labels.clamp_min(0)
    total = layer_logits[0].new_zeros(())
    for logits, active in zip(layer_logits, layer_active):
        ce = F.cross_entropy(logits.transpose(1, 2), safe, reduction="none")  # [B, T]
        total = total + (ce * (labelled & active)).sum() / n
    return total


def draw_setting(cfg: TaggerTrainConfig, rng: random.Random) -> tuple[int, float]:
    u = rng.random()
    if u < cfg.p_full:
        return 0, 0.0
    if u < cfg.p_full + cfg.p_aggressive:
        return 0, cfg.t_max
    return rng.choice(cfg.windows), rng.uniform(0.0, cfg.t_max)


@torch.no_grad()
def dev_layer_f1(model: TokenTagger, dev: PreparedSet, batch_size: int = 64) -> list[float]:
    """Entity F1 of every layer's head at full depth on the dev set."""
    from models.spans import entity_scores

    model.eval()
    per_layer: list[list[list[str]]] = [[None] * len(dev.items) for _ in range(model.num_layers)]  # type: ignore[list-item]
    order = sorted(range(len(dev.items)), key=lambda i: len(dev.items[i].ids))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        b = TaggerBatch.collate([dev.items[i] for i in idx], model.pad_id)
        logits = model(b.input_ids, b.attention_mask)  # [L, B, T, C]
        pred = logits.argmax(-1).gather(2, b.word_pos[None].expand(model.num_layers, -1, -1))  # [L, B, W]
        pred = pred.masked_fill(~b.word_valid[None], -1)
        for layer in range(model.num_layers):
            for j, i in enumerate(idx):
                labels = pred[layer, j].tolist()
                tags = ["O" if f < 0 or labels[f] < 0 else model.labels[labels[f]] for f in dev.first[i]]
                per_layer[layer][i] = tags
    return [entity_scores(dev.gold, tags)["f1"] for tags in per_layer]


def _optimizer(model: TokenTagger, lr: float, head_lr: float, weight_decay: float,
               total_steps: int, warmup: float) -> tuple[torch.optim.Optimizer, Any, list[torch.nn.Parameter]]:
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    heads = list(model.heads.parameters())
    opt = torch.optim.AdamW([{"params": backbone, "lr": lr}, {"params": heads, "lr": head_lr}],
                            weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[lr, head_lr], total_steps=max(total_steps, 1),
                                                pct_start=warmup, anneal_strategy="linear")
    return opt, sched, backbone + heads


def train_tagger(model: TokenTagger, train_sents: list[TaggedSentence], dev_sents: list[TaggedSentence],
                 cfg: TaggerTrainConfig, progress: bool = True) -> dict[str, Any]:
    """Both stages, in place. Returns a history; keeps the best stage-1 epoch, then stage 2 on top."""
    prepare_for_training(model, cfg.seed, cfg.threads, cfg.lora_r, cfg.lora_alpha, cfg.device)
    items = encode_sentences(model, train_sents)
    dev = PreparedSet(model, dev_sents)
    rng = np.random.default_rng(cfg.seed)
    prng = random.Random(cfg.seed)
    lengths = [len(x.ids) for x in items]
    steps = math.ceil(len(items) / cfg.batch_size)
    history: list[dict[str, Any]] = []
    t0 = time.time()

    # ------------------------------------------------------------- stage 1: joint
    opt, sched, params = _optimizer(model, cfg.lr, cfg.head_lr, cfg.weight_decay, steps * cfg.epochs, cfg.warmup)
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    stale = 0
    for epoch in range(cfg.epochs):
        model.train()
        bar = tqdm(length_grouped_batches(lengths, cfg.batch_size, rng), desc=f"stage 1 epoch {epoch + 1}/{cfg.epochs}",
                   disable=not progress)
        running = 0.0
        for step, idx in enumerate(bar):
            b = TaggerBatch.collate([items[i] for i in idx], model.pad_id, cfg.device)
            assert b.labels is not None
            loss = joint_loss(model(b.input_ids, b.attention_mask), b.labels)
            running = optimizer_step(loss, opt, sched, params, running if step else None)
            bar.set_postfix(loss=f"{running:.3f}")
        f1s = dev_layer_f1(model, dev)
        record = {"stage": 1, "epoch": epoch + 1, "dev_f1_per_layer": f1s, "dev_mean_f1": round(float(np.mean(f1s)), 4),
                  "elapsed_s": round(time.time() - t0, 1)}
        history.append(record)
        if progress:
            tqdm.write(f"stage 1 epoch {epoch + 1}: dev entity F1 per layer {f1s}")
        if best is None or record["dev_mean_f1"] > best[0]:
            best, stale = (record["dev_mean_f1"], copy.deepcopy(trainable_state(model))), 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    assert best is not None
    model.load_state_dict(best[1], strict=False)

    # ------------------------------------------------------------- stage 2: self-sampling
    opt, sched, params = _optimizer(model, cfg.lr * cfg.stage2_lr_scale, cfg.head_lr * cfg.stage2_lr_scale,
                                    cfg.weight_decay, steps * cfg.stage2_epochs, cfg.warmup)
    for epoch in range(cfg.stage2_epochs):
        model.train()
        bar = tqdm(length_grouped_batches(lengths, cfg.batch_size, rng),
                   desc=f"stage 2 epoch {epoch + 1}/{cfg.stage2_epochs}", disable=not progress)
        running = 0.0
        for step, idx in enumerate(bar):
            b = TaggerBatch.collate([items[i] for i in idx], model.pad_id, cfg.device)
            assert b.labels is not None
            window, threshold = draw_setting(cfg, prng)
            out = model.forward_tokee(b, window, threshold, collect=True)
            assert out.layer_logits is not None and out.layer_active is not None
            loss = masked_layer_loss(out.layer_logits, out.layer_active, b.labels)
            running = optimizer_step(loss, opt, sched, params, running if step else None)
            bar.set_postfix(loss=f"{running:.3f}", cost=f"{out.cost.cost_fraction:.2f}")
        model.eval()
        f1s = dev_layer_f1(model, dev)
        probe = run_setting(model, dev, 1, 0.2)
        record = {"stage": 2, "epoch": epoch + 1, "dev_f1_per_layer": f1s,
                  "dev_tokee_w1_t0.2": {"f1": probe["f1"], "cost_fraction": probe["cost_fraction"]},
                  "elapsed_s": round(time.time() - t0, 1)}
        history.append(record)
        if progress:
            tqdm.write(f"stage 2 epoch {epoch + 1}: dev F1 per layer {f1s}; window 1 threshold 0.2: "
                       f"F1 {probe['f1']} at cost {probe['cost_fraction']}")
    model.eval()

    # ------------------------------------------------------------- default setting, chosen on dev
    report = evaluate_tagger(model, dev_sents, progress=progress)
    choice = cheapest_within(report, cfg.select_loss)
    if choice is not None:
        model.config.window, model.config.threshold = int(choice["window"]), float(choice["threshold"])
    return {"history": history, "dev_f1_full": report["f1_full"],
            "dev_default_setting": None if choice is None else
            {k: choice[k] for k in ("window", "threshold", "f1", "cost_fraction")},
            "train_seconds": round(time.time() - t0, 1)}


def data_license(path: Path) -> str | None:
    """The licence a training file carries: FiNER-ORD by name, a silver file by its sidecar."""
    meta = Path(str(path) + META_SUFFIX)
    if meta.is_file():
        return str(orjson.loads(meta.read_bytes()).get("license") or "") or None
    return FINER_LICENSE if "finer" in str(path).lower() else None


def train_tagger_main(data_path: Path | Sequence[Path], out: Path, valid_path: Path | None,
                      cfg: TaggerTrainConfig, base: str, max_length: int, progress: bool = True) -> dict[str, Any]:
    """``finsent train-tagger``: read CoNLL (one or several files, concatenated; silver files may
    hold ignore tags), train both stages, save the artifact; returns the summary."""
    paths = [Path(data_path)] if isinstance(data_path, (str, Path)) else [Path(p) for p in data_path]
    train_sents = [s for p in paths for s in read_conll(p, allow_ignore=True)]
    if valid_path is not None:
        dev_sents = read_conll(valid_path)
        dev_source = str(valid_path)
    else:  # scored sentences need gold tags everywhere: silver sentences with ignore tags stay in train
        idx = np.random.default_rng(cfg.seed).permutation(len(train_sents)).tolist()
        clean = [i for i in idx if IGNORE_TAG not in train_sents[i].tags]
        if not clean:
            raise ValueError("every training sentence has ignore tags: give a --valid file")
        held = set(clean[: max(1, len(idx) // 10)])
        dev_sents = [train_sents[i] for i in sorted(held)]
        train_sents = [s for i, s in enumerate(train_sents) if i not in held]
        dev_source = "10% of train (seeded)"
    model = fresh_model(TokenTagger, base, cfg.seed, max_length=max_length)
    summary = train_tagger(model, train_sents, dev_sents, cfg, progress=progress)
    model.config.version = f"{out.name}-{time.strftime('%Y%m%d')}"
    model.config.data_license = "; ".join(dict.fromkeys(lic for p in paths if (lic := data_license(p))))
    model.config.info = {
        "train_data": [p.name for p in paths] if len(paths) > 1 else paths[0].name,
        "train_sentences": len(train_sents), "dev_sentences": len(dev_sents),
        "dev_source": Path(dev_source).name if valid_path else dev_source,
        "train_config": dict(cfg.__dict__), **summary,
    }
    model.save(out)
    return summary
