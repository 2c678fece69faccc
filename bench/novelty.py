"""Story novelty: does "same story" (pipeline/novelty.py) hold for the copies a real feed shows,
and not for different stories that look alike? And what does a signature cost?

    FINSENT_DATA_DIR=/path/to/data python bench/novelty.py --json > bench/results/novelty.json

Texts: Twitter Financial News (train + validation), Financial PhraseBank (50% agreement),
SemEval-2017 Task 5 headlines and microblogs, FiQA 2018 headlines (under ``FINSENT_DATA_DIR``,
see models/datasets.py). Texts are de-duplicated by their normalised form and split *first*, by a
seeded hash of that form, into a tuning half and a held-back half; pairs are then built inside
each half, so no held-back text was seen while tuning.

Pairs (label: same story or not):

* positives -- a text and a copy as a feed shows it: ``retweet`` (``RT @user: ``), ``url``
  (appended or swapped), ``wire`` (``BREAKING: ``, ``(Reuters) - ``, ``- Bloomberg``, ...),
  ``truncated`` (texts of 8+ words: 70-99% of the words, then ``...``/``…``, half of them cut
  inside a word),
  ``case`` (upper, lower, Title), ``handles_hashtags`` (trailing handles or hashtags, ``via
  @user``, a leading handle), ``punctuation`` (minor edits), ``combined`` (two of these on each
  side);
* negatives -- ``same_ticker`` (two different texts with a common cashtag or target company),
  ``swap_cashtag`` / ``swap_company`` / ``swap_number`` (a real text and the same text with one
  cashtag, company name or number replaced by one the text does not have), ``swap_order`` (two
  cashtags change places: "$A to buy $B" / "$B to buy $A"); half of the swapped copies also get a
  positive transformation, if the swap survives it; ``random`` (two random texts).

Tuned on the tuning pairs only: the shingles (1-grams, 2-grams, both), the threshold, num_perm
and the LSH bands x rows. The module's defaults are then scored on the held-back pairs once.
"Full" decides by the full-signature similarity; "lsh" as the stream does: a candidate only when
the two share a band key, then the same similarity check. Cost: microseconds per document
(mean over a batch of 512 tweets, median of repeats) of ``normalize`` alone and of
``signatures`` + ``band_keys_batch`` (which include normalising), next to datasketch's MinHash.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import random
import re
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):  # first, or bench/pipeline.py would shadow the package
    sys.path.insert(0, str(ROOT))

import numpy as np
import orjson
import xxhash

from models.datasets import require_data_dir, resolve_data
from pipeline import novelty as nv
from pipeline.settings import Settings

SEED = 20240611
SOURCES = {
    "twitter_financial_news/train": "csv",
    "twitter_financial_news/validation": "csv",
    "financial_phrasebank/sentences_50agree": "csv",
    "semeval2017_task5/headlines": "jsonl",
    "semeval2017_task5/microblogs": "jsonl",
    "fiqa2018_task1/headlines": "jsonl",
}
POSITIVE = ("retweet", "url", "wire", "truncated", "case", "handles_hashtags", "punctuation", "combined")
NEGATIVE = ("same_ticker", "swap_cashtag", "swap_company", "swap_number", "swap_order", "random")
PER_KIND = 700
#: A length limit cuts long texts: a text is truncated only if it has this many words
TRUNCATE_MIN_WORDS = 8  # pairs per kind and slice (fewer where a slice has too few texts for a kind)

CASHTAG = re.compile(r"\$[A-Za-z][A-Za-z.]{0,6}\b")
NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?(?![\w.]*\d)")
HANDLES = ["@markets", "@Reuters", "@ReutersBiz", "@business", "@CNBC", "@WSJmarkets", "@zerohedge",
           "@DeItaone", "@FirstSquawk", "@unusual_whales", "@stocktwits", "@jimcramer", "@tradertom"]
HASHTAGS = ["#stocks", "#markets", "#investing", "#trading", "#news", "#finance", "#earnings", "#economy"]
WIRE_PREFIXES = ["BREAKING: ", "BREAKING NEWS: ", "JUST IN: ", "UPDATE 1-", "UPDATE 2-", "RPT-", "(Reuters) - ",
                 "NEW YORK (Reuters) - ", "LONDON, June 3 (Reuters) - ", "Reuters: ", "🚨 ", "🚨 BREAKING: ", "* ",
                 "*BREAKING* ", "EXCLUSIVE-", "ALERT: ", "FLASH: "]
WIRE_SUFFIXES = [" - Bloomberg", " | Reuters", " (Reuters)", " - CNBC", " via @Reuters", " - MarketWatch"]


# ------------------------------------------------------------------ texts


def load_texts(data_dir: Path) -> list[dict[str, Any]]:
    """Every source text once (by normalised form): ``{"text", "source", "target"}``."""
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    for name, fmt in SOURCES.items():
        path = resolve_data(name, data_dir)
        if fmt == "csv":
            with path.open(newline="", encoding="utf-8") as fh:
                items = [(r["text"], None) for r in csv.DictReader(fh)]
        else:
            items = [(o["text"], o.get("target")) for o in map(orjson.loads, path.read_bytes().splitlines())]
        for text, target in items:
            key = nv.normalize(text)
            if len(key.split()) < 3 or key in seen:
                continue
            seen.add(key)
            is_company = target and not str(target).startswith("$") and target in text
            rows.append({"text": text, "source": name, "target": target if is_company else None, "key": key})
    return rows


def split(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(tuning, held back): half each, by a seeded hash of the normalised text."""
    tuning, held = [], []
    for r in rows:
        (tuning if xxhash.xxh64_intdigest(r["key"].encode(), seed=SEED) % 2 == 0 else held).append(r)
    return tuning, held


# ------------------------------------------------------------------ transformations a feed shows


def t_retweet(rng: random.Random, t: str) -> str:
    return f"RT {rng.choice(HANDLES)}: {t}"


def t_url(rng: random.Random, t: str) -> str:
    link = "https://t.co/" + "".join(rng.choice("abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ0123456789")
                                     for _ in range(10))
    if "http" in t and rng.random() < 0.7:
        return re.sub(r"https?://\S+", link, t)
    return f"{t} {link}"


def t_wire(rng: random.Random, t: str) -> str:
    if rng.random() < 0.75:
        return rng.choice(WIRE_PREFIXES) + t
    return t + rng.choice(WIRE_SUFFIXES)


def t_truncated(rng: random.Random, t: str) -> str | None:
    words = t.split()
    n = len(words)
    lo = math.ceil(0.7 * n)
    if n < TRUNCATE_MIN_WORDS:
        return None
    k = rng.randint(lo, n - 1)
    cut = " ".join(words[:k])
    nxt = words[k]
    if rng.random() < 0.5 and len(nxt) >= 3:  # cut inside the next word, as a length limit does
        cut += " " + nxt[: rng.randint(1, len(nxt) - 1)]
    ellipsis = rng.choice(["...", "…"])
    return cut + (" " + ellipsis if rng.random() < 0.15 else ellipsis)


def t_case(rng: random.Random, t: str) -> str:
    return rng.choice([str.upper, str.lower, str.title])(t)


def t_handles(rng: random.Random, t: str) -> str:
    r = rng.random()
    if r < 0.3:
        return f"{t} via {rng.choice(HANDLES)}"
    if r < 0.6:
        return t + " " + " ".join(rng.sample(HASHTAGS, rng.randint(1, 3)))
    if r < 0.8:
        return t + " " + " ".join(rng.sample(HANDLES, rng.randint(1, 2)))
    return f"{rng.choice(HANDLES)} {t}"


def t_punctuation(rng: random.Random, t: str) -> str:
    edits: list[Callable[[str], str]] = [
        lambda s: s.rstrip(".!? ") + rng.choice([".", "!", "!!", ""]),
        lambda s: s.replace(" - ", ": ", 1) if " - " in s else s.replace(": ", " - ", 1),
        lambda s: s.replace(",", "", 1) if "," in s else s + ".",
        lambda s: s.replace("'", "\u2019"),
        lambda s: f'"{s}"',
        lambda s: s.replace(" ", "  ", 2),
    ]
    out = t
    for edit in rng.sample(edits, rng.randint(1, 2)):
        out = edit(out)
    return out if out != t else t + "."


SIMPLE: dict[str, Callable[[random.Random, str], str | None]] = {
    "retweet": t_retweet, "url": t_url, "wire": t_wire, "truncated": t_truncated, "case": t_case,
    "handles_hashtags": t_handles, "punctuation": t_punctuation,
}


def transform(rng: random.Random, kind: str, t: str) -> str | None:
    if kind != "combined":
        return SIMPLE[kind](rng, t)
    out: str | None = t
    for k in rng.sample(list(SIMPLE), 2):
        out = SIMPLE[k](rng, out) if out is not None else None
    return out


def copy_of(rng: random.Random, t: str) -> str:
    """A random positive transformation of ``t`` (one that applies)."""
    for _ in range(5):
        out = transform(rng, rng.choice(list(SIMPLE)), t)
        if out is not None:
            return out
    return t


# ------------------------------------------------------------------ pairs


# A swap puts a *new* value into the text: one the text does not have already (else the copy only
# lost information, like a truncation). Each returns (the new text, the new value) or None.


def swap_cashtag(rng: random.Random, t: str, pool: list[str]) -> tuple[str, str] | None:
    tags = sorted(set(CASHTAG.findall(t)))
    if not tags:
        return None
    old = rng.choice(tags)
    present = {c.upper() for c in tags}
    new = rng.choice([p for p in rng.sample(pool, min(50, len(pool))) if p.upper() not in present] or ["$ZZZZ"])
    return re.sub(re.escape(old) + r"\b", new, t), new


def swap_company(rng: random.Random, row: dict[str, Any], pool: list[str]) -> tuple[str, str] | None:
    old, t = row["target"], row["text"]
    if not old:
        return None
    options = [p for p in rng.sample(pool, min(20, len(pool))) if p.lower() not in t.lower()]
    if not options:
        return None
    new = rng.choice(options)
    return t.replace(old, new), new


def swap_number(rng: random.Random, t: str) -> tuple[str, str] | None:
    found = list(NUMBER.finditer(t))
    if not found:
        return None
    m = rng.choice(found)
    s = m.group()
    digits = [i for i, c in enumerate(s) if c.isdigit()]
    chars = list(s)
    for i in rng.sample(digits, min(len(digits), rng.randint(1, 2))):
        chars[i] = rng.choice([d for d in "0123456789" if d != chars[i] and not (i == 0 and d == "0")] or ["7"])
    new = "".join(chars)
    if new == s or re.search(rf"(?<![\d.]){re.escape(new)}(?![\d.]*\d)", t):
        return None
    return t[: m.start()] + new + t[m.end():], new


def swap_order(rng: random.Random, t: str) -> tuple[str, str] | None:
    """Two different cashtags change places: "$AAPL to buy $SHAZ" -> "$SHAZ to buy $AAPL",
    "Upgrades: $A $B" -> "Upgrades: $B $A". (Names in a Title Case headline cannot be told from
    other capitalised words, and swapping those makes nonsense rather than another story.) The
    new value: the first of them in its new place, as a two-word phrase (so that a cut copy must
    still show the swap)."""
    words = t.split()
    spots = [i for i, w in enumerate(words) if i > 0 and CASHTAG.fullmatch(w)]
    pairs = [(i, j) for i in spots for j in spots if i < j and words[i] != words[j]]
    if not pairs:
        return None
    i, j = rng.choice(pairs)
    words[i], words[j] = words[j], words[i]
    return " ".join(words), " ".join(words[i - 1: i + 1])


def build_pairs(rows: list[dict[str, Any]], seed: int) -> list[tuple[str, str, str, bool]]:
    """(kind, text a, text b, same story) for one slice."""
    rng = random.Random(seed)
    pairs: list[tuple[str, str, str, bool]] = []
    order = rows[:]
    rng.shuffle(order)
    for kind in POSITIVE:
        made = 0
        for r in order:
            if made >= PER_KIND:
                break
            if kind == "combined":
                a, b = transform(rng, "combined", r["text"]), copy_of(rng, r["text"])
            else:
                a, b = r["text"], transform(rng, kind, r["text"])
            if a is None or b is None:
                continue
            pairs.append((kind, a, b, True))
            made += 1
        rng.shuffle(order)
    # same ticker: texts grouped by a cashtag or a target company
    groups: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        for tag in sorted({c.upper() for c in CASHTAG.findall(r["text"])}):
            groups[tag].append(r["text"])
        if r["target"]:
            groups[r["target"].lower()].append(r["text"])
    keys = [k for k, v in groups.items() if len(v) >= 2]
    made = 0
    while keys and made < PER_KIND:
        a, b = rng.sample(groups[rng.choice(keys)], 2)
        if nv.normalize(a) != nv.normalize(b):
            pairs.append(("same_ticker", a, b, False))
            made += 1
    tag_pool = sorted({c for r in rows for c in CASHTAG.findall(r["text"])})
    company_pool = sorted({r["target"] for r in rows if r["target"]})
    for kind in ("swap_cashtag", "swap_company", "swap_number", "swap_order"):
        made = 0
        for r in order:
            if made >= PER_KIND:
                break
            if kind == "swap_cashtag":
                swapped = swap_cashtag(rng, r["text"], tag_pool)
            elif kind == "swap_company":
                swapped = swap_company(rng, r, company_pool)
            elif kind == "swap_number":
                swapped = swap_number(rng, r["text"])
            else:
                swapped = swap_order(rng, r["text"])
            if swapped is None:
                continue
            b, new = swapped
            if rng.random() < 0.5:
                b = copy_of(rng, b)
            # the copy must still carry the new value (a truncation may have cut it off)
            if f" {nv.normalize(new)} " not in f" {nv.normalize(b)} ":
                continue
            pairs.append((kind, r["text"], b, False))
            made += 1
        rng.shuffle(order)
    for _ in range(PER_KIND):
        a, b = rng.sample(rows, 2)
        pairs.append(("random", a["text"], b["text"], False))
    return pairs


# ------------------------------------------------------------------ scoring


def pair_signatures(pairs: list[tuple[str, str, str, bool]], num_perm: int, ngrams: tuple[int, ...],
                    linker: Any = None) -> tuple[np.ndarray, np.ndarray]:
    texts = [p[1] for p in pairs] + [p[2] for p in pairs]
    entities = None
    if linker is not None:  # the symbols a linker finds in each text, as the worker would pass them
        entities = [[link.symbol for link in links] for links in linker.link_texts(texts)]
    sigs = nv.signatures(texts, num_perm=num_perm, ngrams=ngrams, entities=entities)
    return sigs[: len(pairs)], sigs[len(pairs):]


def similarities(sa: np.ndarray, sb: np.ndarray, num_perm: int, use_anchors: bool = True) -> np.ndarray:
    if use_anchors:
        return np.array([nv.similarity(a, b, num_perm) for a, b in zip(sa, sb, strict=True)])
    a, b = sa[:, :num_perm], sb[:, :num_perm]
    sim = (a == b).mean(axis=1)
    sim[(a == nv.EMPTY).all(axis=1) | (b == nv.EMPTY).all(axis=1)] = 0.0
    return sim


def candidates(sa: np.ndarray, sb: np.ndarray, bands: int, rows: int) -> np.ndarray:
    ha, hb = nv.band_hashes(sa, bands, rows), nv.band_hashes(sb, bands, rows)
    empty = (sa[:, : bands * rows] == nv.EMPTY).all(axis=1) | (sb[:, : bands * rows] == nv.EMPTY).all(axis=1)
    return (ha == hb).any(axis=1) & ~empty


def scores(kinds: list[str], labels: np.ndarray, same: np.ndarray) -> dict[str, Any]:
    tp = int((same & labels).sum())
    fp = int((same & ~labels).sum())
    fn = int((~same & labels).sum())
    per_kind = {}
    for k in dict.fromkeys(kinds):
        m = np.array([x == k for x in kinds])
        per_kind[k] = {"pairs": int(m.sum()), "judged_same": round(float(same[m].mean()), 4)}
    return {
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / (tp + fn), 4) if tp + fn else None,
        "tp": tp, "fp": fp, "fn": fn,
        "per_kind": per_kind,
    }


def best_threshold(sim: np.ndarray, labels: np.ndarray, min_precision: float) -> float:
    """The lowest threshold whose precision on these pairs is >= min_precision (the most recall)."""
    for th in np.round(np.arange(0.2, 0.951, 0.025), 3):
        same = sim >= th
        tp, fp = int((same & labels).sum()), int((same & ~labels).sum())
        if tp and tp / (tp + fp) >= min_precision:
            return float(th)
    return 0.95


def tune(pairs: list[tuple[str, str, str, bool]], log: Callable[[str], None]) -> dict[str, Any]:
    kinds = [p[0] for p in pairs]
    labels = np.array([p[3] for p in pairs])
    grid = []
    for num_perm in (64, 128):
        for ngrams in ((1,), (2,), (1, 2)):
            sa, sb = pair_signatures(pairs, num_perm, ngrams)
            sim = similarities(sa, sb, num_perm)
            for th in (0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7):
                s = scores(kinds, labels, sim >= th)
                grid.append({"num_perm": num_perm, "ngrams": list(ngrams), "threshold": th,
                             "precision": s["precision"], "recall": s["recall"]})
            log(f"tuning: num_perm={num_perm} ngrams={ngrams}: "
                f"{[(g['threshold'], g['precision'], g['recall']) for g in grid[-7:]]}")
    # the module's shingles and num_perm: bands x rows and the effect of anchors
    sa, sb = pair_signatures(pairs, nv.NUM_PERM, (1, 2))
    sim = similarities(sa, sb, nv.NUM_PERM)
    th_099 = best_threshold(sim, labels, 0.99)
    lsh = []
    for bands, rows in ((32, 2), (21, 3), (16, 4), (12, 5), (10, 6), (8, 8)):
        if bands * rows > nv.NUM_PERM:
            continue
        cand = candidates(sa, sb, bands, rows)
        s = scores(kinds, labels, cand & (sim >= nv.THRESHOLD))
        lsh.append({"bands": bands, "rows": rows, "precision": s["precision"], "recall": s["recall"],
                    "candidate_rate_negatives": round(float(cand[~labels].mean()), 4),
                    "candidate_rate_positives": round(float(cand[labels].mean()), 4)})
    full_recall = scores(kinds, labels, sim >= nv.THRESHOLD)["recall"]
    # the rule: the fewest bands whose LSH recall is within half a point of the full signature's
    fewest = min((g for g in lsh if g["recall"] >= full_recall - 0.005), key=lambda g: g["bands"])
    best_f1 = {}
    for g in grid:
        key = f"num_perm={g['num_perm']} ngrams={g['ngrams']}"
        f1 = 2 * g["precision"] * g["recall"] / (g["precision"] + g["recall"])
        if f1 > best_f1.get(key, {}).get("f1", 0):
            best_f1[key] = {"f1": round(f1, 4), "threshold": g["threshold"]}
    no_anchor = similarities(sa, sb, nv.NUM_PERM, use_anchors=False)
    ablation = {f"threshold_{th}": scores(kinds, labels, no_anchor >= th) for th in (0.5, 0.6, 0.7, 0.8)}
    for v in ablation.values():
        v["per_kind"] = {k: x for k, x in v["per_kind"].items() if k in NEGATIVE}
    return {"grid": grid, "best_f1_per_shingling": best_f1, "lowest_threshold_with_precision_0.99": th_099,
            "lsh": lsh, "lsh_rule": "the fewest bands whose recall is within 0.005 of the full signature's",
            "lsh_by_rule": {"bands": fewest["bands"], "rows": fewest["rows"],
                            "module_matches": (fewest["bands"], fewest["rows"]) == (nv.BANDS, nv.ROWS)},
            "without_anchors": ablation}


def evaluate(pairs: list[tuple[str, str, str, bool]], linker: Any = None) -> dict[str, Any]:
    kinds = [p[0] for p in pairs]
    labels = np.array([p[3] for p in pairs])
    sa, sb = pair_signatures(pairs, nv.NUM_PERM, (1, 2), linker)
    sim = similarities(sa, sb, nv.NUM_PERM)
    cand = candidates(sa, sb, nv.BANDS, nv.ROWS)
    full = scores(kinds, labels, sim >= nv.THRESHOLD)
    lsh = scores(kinds, labels, cand & (sim >= nv.THRESHOLD))
    lsh["candidate_rate_negatives"] = round(float(cand[~labels].mean()), 4)
    counts = {k: kinds.count(k) for k in dict.fromkeys(kinds)}
    return {"pairs": len(pairs), "positives": int(labels.sum()), "negatives": int((~labels).sum()),
            "pairs_per_kind": counts, "full": full, "lsh": lsh}


def errors(pairs: list[tuple[str, str, str, bool]], limit: int = 40) -> list[dict[str, Any]]:
    sa, sb = pair_signatures(pairs, nv.NUM_PERM, (1, 2))
    sim = similarities(sa, sb, nv.NUM_PERM)
    out = []
    for (kind, a, b, label), s in zip(pairs, sim, strict=True):
        if (s >= nv.THRESHOLD) != label:
            out.append({"kind": kind, "similarity": round(float(s), 3), "a": a, "b": b})
    return out[:limit]


# ------------------------------------------------------------------ cost


def timed(fn: Callable[[], object], repeats: int, best: bool = False) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs (the fastest with ``best``)."""
    fn()  # warm-up
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return min(runs) if best else statistics.median(runs)


def cost(texts: list[str], batch: int = 512, repeats: int = 21) -> dict[str, Any]:
    """Microseconds per document (mean over a batch, median over repeats)."""
    docs = texts[:batch]
    per = 1e6 / len(docs)
    norm = timed(lambda: [nv.normalize(t) for t in docs], repeats) * per
    norm_batch = timed(lambda: nv.normalize_many(docs), repeats) * per
    sig = timed(lambda: nv.signatures(docs), repeats) * per
    sig_uni = timed(lambda: nv.signatures(docs, ngrams=(1,)), repeats) * per
    sigs = nv.signatures(docs)
    keys = timed(lambda: nv.band_keys_batch(sigs), repeats) * per
    both = timed(lambda: nv.band_keys_batch(nv.signatures(docs)), repeats) * per
    both_best = timed(lambda: nv.band_keys_batch(nv.signatures(docs)), repeats, best=True) * per
    out = {"batch": len(docs), "normalize_us": round(norm, 2), "normalize_many_us": round(norm_batch, 2),
           "signatures_us": round(sig, 2), "signatures_1grams_only_us": round(sig_uni, 2),
           "band_keys_us": round(keys, 2), "signatures_plus_band_keys_us": round(both, 2),
           "signatures_plus_band_keys_fastest_run_us": round(both_best, 2),
           "mean_words": round(statistics.mean(len(nv.normalize(t).split()) for t in docs), 1)}
    try:
        from datasketch import MinHash
    except ImportError:  # bench-only comparison
        return out
    words = [nv.normalize(t).split() for t in docs]
    shingles = [[w.encode() for w in ws] + [f"{x} {y}".encode() for x, y in itertools.pairwise(ws)]
                for ws in words]
    for num_perm in (64, 128):
        def per_doc(num_perm: int = num_perm) -> None:
            for s in shingles:
                m = MinHash(num_perm=num_perm, hashfunc=xxhash.xxh32_intdigest)
                m.update_batch(s)
        out[f"datasketch_minhash_{num_perm}_us"] = round(timed(per_doc, 5) * per, 2)
        out[f"datasketch_bulk_{num_perm}_us"] = round(
            timed(lambda n=num_perm: MinHash.bulk(shingles, num_perm=n, hashfunc=xxhash.xxh32_intdigest), 5) * per, 2)
    return out


# ------------------------------------------------------------------ main


def run(data_dir: Path, log: Callable[[str], None], show_errors: bool = False) -> dict[str, Any]:
    rows = load_texts(data_dir)
    tuning_rows, held_rows = split(rows)
    log(f"{len(rows)} distinct texts: {len(tuning_rows)} tuning, {len(held_rows)} held back")
    tuning_pairs = build_pairs(tuning_rows, SEED)
    held_pairs = build_pairs(held_rows, SEED + 1)
    log(f"pairs: {len(tuning_pairs)} tuning, {len(held_pairs)} held back")
    tuned = tune(tuning_pairs, log)
    tuning_scores = evaluate(tuning_pairs)
    log(f"tuning: full {tuning_scores['full']['precision']}/{tuning_scores['full']['recall']}, "
        f"lsh {tuning_scores['lsh']['precision']}/{tuning_scores['lsh']['recall']}")
    held_scores = evaluate(held_pairs)  # once, with the module's defaults
    log(f"held back: full {held_scores['full']['precision']}/{held_scores['full']['recall']}, "
        f"lsh {held_scores['lsh']['precision']}/{held_scores['lsh']['recall']}")
    from pipeline.linking import default_linker

    linker = default_linker()
    linked = {"tuning": evaluate(tuning_pairs, linker), "held_back": evaluate(held_pairs, linker)}
    log(f"with linked entities: held back lsh {linked['held_back']['lsh']['precision']}/"
        f"{linked['held_back']['lsh']['recall']}")
    tweets_path = resolve_data("twitter_financial_news/validation", data_dir)
    with tweets_path.open(newline="", encoding="utf-8") as fh:
        tweets = [r["text"] for r in csv.DictReader(fh)]
    fpb_path = resolve_data("financial_phrasebank/sentences_50agree", data_dir)
    with fpb_path.open(newline="", encoding="utf-8") as fh:
        sentences = [r["text"] for r in csv.DictReader(fh)]
    if show_errors:  # development only: the tuning slice's errors, to stderr (texts stay out of results)
        for e in errors(tuning_pairs):
            log(f"error {e['kind']} sim={e['similarity']}: {e['a']!r} | {e['b']!r}")
    log("cost ...")
    costs = {"tweets": cost(tweets), "phrasebank_sentences": cost(sentences)}
    log(f"cost: {costs}")
    return {
        "what": "story novelty (pipeline/novelty.py): same-story precision/recall on labelled pairs built "
                "from real headlines and tweets, tuned on one half of the texts and scored on the other; "
                "cost per document",
        "command": "FINSENT_DATA_DIR=/path/to/data python bench/novelty.py --json",
        "machine": "2-core AMD EPYC VM (CPython 3.11, one thread), other jobs running at the same time: "
                   "medians of 21 runs, and the fastest run",
        "parameters": {"num_perm": nv.NUM_PERM, "ngrams": [1, 2], "bands": nv.BANDS, "rows": nv.ROWS,
                       "threshold": nv.THRESHOLD, "anchor_bits": nv.ANCHOR_COLUMNS * 32,
                       "anchor_hashes": nv.ANCHOR_HASHES, "version": nv.SIGNATURE_VERSION},
        "texts": {"distinct": len(rows), "tuning": len(tuning_rows), "held_back": len(held_rows),
                  "by_source": {s: sum(r["source"] == s for r in rows) for s in SOURCES}},
        "tuning": {**tuning_scores, "search": tuned},
        "held_back": held_scores,
        "with_linked_entities": {
            "what": "the same pairs, the same parameters, with signatures(..., entities=the symbols "
                    "pipeline.linking.default_linker() finds in each text)",
            **linked},
        "cost_us_per_doc": costs,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object (else a summary)")
    ap.add_argument("--data-dir", type=Path, default=None, help="the datasets folder (default: FINSENT_DATA_DIR)")
    ap.add_argument("--errors", action="store_true", help="print the tuning pairs judged wrong to stderr")
    args = ap.parse_args(argv)
    data_dir = require_data_dir(args.data_dir or Settings().data_dir)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    report = run(data_dir, log, show_errors=args.errors)
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    for part in ("tuning", "held_back", "linked-held_back"):
        r = report["with_linked_entities"]["held_back"] if part.startswith("linked") else report[part]
        print(f"{part}: {r['pairs']} pairs; full P {r['full']['precision']} R {r['full']['recall']}; "
              f"lsh P {r['lsh']['precision']} R {r['lsh']['recall']}")
        for k, v in r["lsh"]["per_kind"].items():
            print(f"  {k:18} {v['pairs']:5d} judged same {v['judged_same']:.3f}")
    print(f"cost: {report['cost_us_per_doc']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
