"""Evaluation set for per-target sentiment: real texts whose targets' gold sentiments differ.

Groundwork for per-ticker sentiment inside one text ("$AAPL beats, $MSFT misses" must not give both
tickers the same score). Reads the target-level sets of ``models/datasets.py`` under
``FINSENT_DATA_DIR`` (SemEval-2017 Task 5 microblogs and headlines, FiQA 2018 Task 1 headlines and
posts; one JSONL row per (text, target), score in [-1, 1]) and selects

  multi    items with >= 2 targets whose gold labels differ by a clear margin (:func:`differing`)
  control  single-target items, as many per (dataset, split) as there are multi items there

The manifest ``bench/data/targets_eval.json`` holds no text (several sets are non-commercial or
research-only, docs/targets.md): per item the dataset, a key into the shared file, a hash of the
rebuilt text, the targets as given with their gold score and label, and the split. The texts are
rebuilt from the shared files at run time (:func:`load_eval`).

Rules (fixed before anything was scored; change them only with a new manifest ``version``):

* An **item** is one text: a SemEval microblog message (``source`` + ``id``; the test file's
  Twitter ids lost precision upstream, so ids are compared as float64), a SemEval headline (rows
  with the same normalised headline: the file's ids are per row and not unique), a FiQA headline
  or post (its ``id``). A microblog row's text is only the annotated spans for that cashtag, so
  a message's text is its rows' distinct texts in file order, less any contained in another
  (normalised), joined by one space -- the corpus's own convention for joining spans.
* Several rows for one (item, target) -- the same cashtag annotated twice -- count once, with
  the mean score.
* **Label** of a gold score s: positive if s >= 0.1, negative if s <= -0.1, else neutral.
* **Differing** (a multi item): two of its targets have different labels and scores at least
  0.3 apart. ``opposed`` marks the stricter subset with a positive and a negative target.
* **Duplicates**: an item whose normalised text (NFKC, whitespace collapsed, case-folded) was
  already taken -- from an earlier dataset in :data:`DATASETS` order, or earlier in the same
  one, differing items first -- is dropped (434 of FiQA's 436 headlines are SemEval headlines).
* **Split**: ``heldout`` when sha256(seed + normalised text) falls in the first
  :data:`HELDOUT_SHARE` of the hash range, else ``dev`` -- the same text always lands in the
  same part. Look at and tune on ``dev`` only.

    FINSENT_DATA_DIR=/path/to/data python bench/targets_eval.py            # summary table
    python bench/targets_eval.py --json                                     # summary, one JSON object
    python bench/targets_eval.py --write                                    # (re)write the manifest
    python bench/targets_eval.py --check                                    # manifest resolves?
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):  # first, or bench/pipeline.py would shadow the package
    sys.path.insert(0, str(ROOT))

from models.datasets import DATASETS as REGISTRY
from models.datasets import DataError, resolve_data

MANIFEST = ROOT / "bench" / "data" / "targets_eval.json"
VERSION = 1
SEED = "finsent-targets-eval-v1"

#: The target-level sets, in dedupe priority order (an earlier set keeps a shared text).
DATASETS: tuple[str, ...] = (
    "semeval2017_task5/microblogs",
    "semeval2017_task5/headlines",
    "fiqa2018_task1/headlines",
    "fiqa2018_task1/posts",
)
MICROBLOGS = "semeval2017_task5/microblogs"
SEMEVAL_HEADLINES = "semeval2017_task5/headlines"

POSITIVE_MIN = 0.1  # s >= 0.1: positive
NEGATIVE_MAX = -0.1  # s <= -0.1: negative; in between: neutral
MIN_GAP = 0.3  # differing targets' scores are at least this far apart
HELDOUT_SHARE = 0.5
SPLITS = ("dev", "heldout")
LABELS = ("negative", "neutral", "positive")
#: The only fields an item of the manifest may have, and those of its targets (no text).
ITEM_FIELDS = frozenset({"dataset", "key", "set", "split", "text_sha256", "opposed", "targets"})
TARGET_FIELDS = frozenset({"target", "score", "label", "rows"})


class ManifestError(DataError):
    """A manifest item that does not resolve against the shared data."""


# ------------------------------------------------------------------ rules


def normalise(text: str) -> str:
    """The comparison key of a text (as the data README's held-back key): NFKC, whitespace runs
    collapsed, case-folded."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip().casefold()


def label(score: float) -> str:
    if score >= POSITIVE_MIN:
        return "positive"
    if score <= NEGATIVE_MAX:
        return "negative"
    return "neutral"


def differing(scores: Sequence[float]) -> bool:
    """Two of the scores have different labels and are at least :data:`MIN_GAP` apart."""
    return any(label(a) != label(b) and abs(a - b) >= MIN_GAP - 1e-9 for a, b in combinations(scores, 2))


def opposed(scores: Sequence[float]) -> bool:
    """One score is positive and another negative."""
    labels = {label(s) for s in scores}
    return "positive" in labels and "negative" in labels


def text_hash(text: str) -> str:
    return hashlib.sha256(normalise(text).encode()).hexdigest()[:16]


def split_of(text: str, seed: str = SEED) -> str:
    """``heldout`` or ``dev``, from a seeded hash of the normalised text (deterministic)."""
    h = int(hashlib.sha256(f"{seed}\x00{normalise(text)}".encode()).hexdigest()[:12], 16)
    return "heldout" if h < HELDOUT_SHARE * 16**12 else "dev"


# ------------------------------------------------------------------ rows and items


@dataclass(frozen=True)
class Row:
    id: str
    text: str
    target: str
    score: float
    source: str = ""  # microblogs: twitter | stocktwits


@dataclass
class Target:
    target: str  # as given (the first spelling)
    scores: list[float] = field(default_factory=list)
    rows: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        return round(sum(self.scores) / len(self.scores), 4)


@dataclass
class Item:
    dataset: str
    key: str
    text: str
    targets: list[Target]
    order: int = 0  # position of the item's first row in the file

    @property
    def scores(self) -> list[float]:
        return [t.score for t in self.targets]

    @property
    def is_differing(self) -> bool:
        return len(self.targets) >= 2 and differing(self.scores)


def parse_rows(lines: Iterable[str | bytes]) -> list[Row]:
    rows = []
    for line in lines:
        if not line.strip():
            continue
        r = json.loads(line)
        rows.append(Row(str(r["id"]), r["text"], str(r["target"]).strip(), float(r["score"]),
                        str(r.get("source", ""))))
    return rows


def read_rows(path: Path) -> list[Row]:
    with path.open(encoding="utf-8") as fh:
        return parse_rows(fh)


def _twitter_id(value: str) -> float:
    return float(value)  # the test file's ids are float64-rounded: compare at that precision


def group_key(dataset: str, row: Row) -> tuple[str, ...]:
    if dataset == MICROBLOGS:
        if row.source == "twitter":
            return ("msg", row.source, repr(_twitter_id(row.id)))
        return ("msg", row.source, row.id)
    if dataset == SEMEVAL_HEADLINES:
        return ("text", text_hash(row.text))
    return ("id", row.id)


def compose_text(texts: Sequence[str]) -> str:
    """One text from several rows' texts: distinct texts in order, less any contained in another."""
    distinct: list[str] = []
    for t in texts:
        if normalise(t) not in {normalise(d) for d in distinct}:
            distinct.append(t)
    keep = [t for t in distinct
            if not any(normalise(t) != normalise(o) and normalise(t) in normalise(o) for o in distinct)]
    return " ".join(keep)


def _item_key(dataset: str, rows: Sequence[Row]) -> str:
    gk = group_key(dataset, rows[0])
    if gk[0] == "msg":  # the most precise id of the message (train ids are exact)
        return f"msg:{rows[0].source}:{max((r.id for r in rows), key=lambda i: (not i.endswith('00'), len(i)))}"
    return f"{gk[0]}:{gk[1]}"


def build_items(dataset: str, rows: Sequence[Row]) -> list[Item]:
    """Every item of one dataset, in file order."""
    groups: dict[tuple[str, ...], list[tuple[int, Row]]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[group_key(dataset, row)].append((i, row))
    items = []
    for members in groups.values():
        rs = [r for _, r in members]
        targets: dict[str, Target] = {}
        for r in rs:
            t = targets.setdefault(r.target.upper(), Target(r.target))
            t.scores.append(r.score)
            t.rows.append(r.id)
        items.append(Item(dataset, _item_key(dataset, rs), compose_text([r.text for r in rs]),
                          list(targets.values()), members[0][0]))
    return items


def rows_for_key(dataset: str, key: str, rows: Sequence[Row]) -> list[Row]:
    """The rows of the item a manifest key names."""
    kind, _, rest = key.partition(":")
    if kind == "msg":
        source, _, mid = rest.partition(":")
        if source == "twitter":
            want = _twitter_id(mid)
            return [r for r in rows if r.source == source and _twitter_id(r.id) == want]
        return [r for r in rows if r.source == source and r.id == mid]
    if kind == "text":
        return [r for r in rows if text_hash(r.text) == rest]
    if kind == "id":
        return [r for r in rows if r.id == rest]
    raise ManifestError(f"{dataset}: unknown key kind in {key!r}")


def row_splits(dataset: str, rows: Sequence[Row], seed: str = SEED) -> list[str]:
    """Each row's split: that of its item's text. Training for the target-level work must leave
    out every ``heldout`` row (the cosine metric on held-out SemEval microblogs uses these)."""
    split_by_group = {group_key(dataset, it_rows[0]): split_of(compose_text([r.text for r in it_rows]), seed)
                      for it_rows in _groups(dataset, rows).values()}
    return [split_by_group[group_key(dataset, r)] for r in rows]


def _groups(dataset: str, rows: Sequence[Row]) -> dict[tuple[str, ...], list[Row]]:
    groups: dict[tuple[str, ...], list[Row]] = defaultdict(list)
    for r in rows:
        groups[group_key(dataset, r)].append(r)
    return groups


# ------------------------------------------------------------------ selection


@dataclass
class Selection:
    multi: list[Item]
    control: list[Item]
    stats: dict[str, dict[str, int]]  # per dataset: items, single, multi, differing, opposed, duplicates


def select(rows_by_dataset: Mapping[str, Sequence[Row]], seed: str = SEED) -> Selection:
    """Multi-target differing items and the matched single-target control, deduplicated by text."""
    taken: set[str] = set()
    multi: list[Item] = []
    singles: dict[tuple[str, str], list[Item]] = defaultdict(list)
    stats: dict[str, dict[str, int]] = {}
    for name in [d for d in DATASETS if d in rows_by_dataset] + \
            [d for d in rows_by_dataset if d not in DATASETS]:
        items = build_items(name, rows_by_dataset[name])
        items.sort(key=lambda it: (not it.is_differing, it.order))
        st = Counter(items=len(items))
        for it in items:
            st["multi_target"] += len(it.targets) >= 2
            st["single_target"] += len(it.targets) == 1
            norm = normalise(it.text)
            if norm in taken:
                st["duplicates_dropped"] += 1
                continue
            taken.add(norm)
            if it.is_differing:
                multi.append(it)
                st["differing"] += 1
                st["opposed"] += opposed(it.scores)
            elif len(it.targets) == 1:
                singles[(name, split_of(it.text, seed))].append(it)
        st.update(f"rows_{s}" for s in row_splits(name, rows_by_dataset[name], seed))
        stats[name] = dict(st)
    multi.sort(key=lambda it: (DATASETS.index(it.dataset) if it.dataset in DATASETS else 99, it.order))
    need = Counter((it.dataset, split_of(it.text, seed)) for it in multi)
    control: list[Item] = []
    for (name, split), n in sorted(need.items()):
        pool = sorted(singles[(name, split)],
                      key=lambda it: hashlib.sha256(f"{seed}\x00control\x00{it.key}".encode()).hexdigest())
        control.extend(sorted(pool[:n], key=lambda it: it.order))
    return Selection(multi, control, stats)


# ------------------------------------------------------------------ manifest


def item_record(it: Item, kind: str, seed: str = SEED) -> dict[str, Any]:
    return {
        "dataset": it.dataset, "key": it.key, "set": kind, "split": split_of(it.text, seed),
        "text_sha256": text_hash(it.text), "opposed": opposed(it.scores),
        "targets": [{"target": t.target, "score": t.score, "label": label(t.score), "rows": t.rows}
                    for t in it.targets],
    }


def manifest_records(sel: Selection, seed: str = SEED) -> list[dict[str, Any]]:
    return [item_record(it, "multi", seed) for it in sel.multi] + \
        [item_record(it, "control", seed) for it in sel.control]


def dump_manifest(records: Sequence[Mapping[str, Any]], files: Mapping[str, str], seed: str = SEED) -> str:
    """The manifest as JSON text, one item per line (readable diffs)."""
    head = {
        "version": VERSION, "seed": seed,
        "rules": {"positive_min": POSITIVE_MIN, "negative_max": NEGATIVE_MAX, "min_gap": MIN_GAP,
                  "heldout_share": HELDOUT_SHARE, "doc": "bench/targets_eval.py, docs/targets.md"},
        "files": dict(files),
    }
    lines = json.dumps(head, ensure_ascii=False)[:-1]
    body = ",\n".join("  " + json.dumps(r, ensure_ascii=False, sort_keys=True) for r in records)
    return f'{lines}, "items": [\n{body}\n]}}\n'


@dataclass
class Resolved:
    dataset: str
    key: str
    set: str
    split: str
    text: str
    targets: list[dict[str, Any]]  # target, score, label
    opposed: bool


def resolve(manifest: Mapping[str, Any], rows_by_dataset: Mapping[str, Sequence[Row]]) -> list[Resolved]:
    """Rebuild every manifest item's text from the rows; ManifestError on the first that does not
    resolve (missing rows, another text, a target or score that is not in the data)."""
    out = []
    for n, rec in enumerate(manifest["items"]):
        name, key = rec["dataset"], rec["key"]
        where = f"item {n} ({name} {key})"
        if name not in rows_by_dataset:
            raise ManifestError(f"{where}: dataset not loaded")
        rows = rows_for_key(name, key, rows_by_dataset[name])
        if not rows:
            raise ManifestError(f"{where}: no rows with this key")
        items = build_items(name, rows)
        if len(items) != 1:
            raise ManifestError(f"{where}: key matches {len(items)} items")
        it = items[0]
        if text_hash(it.text) != rec["text_sha256"]:
            raise ManifestError(f"{where}: the rebuilt text differs (hash {text_hash(it.text)})")
        have = {t.target.upper(): t for t in it.targets}
        for t in rec["targets"]:
            got = have.get(t["target"].upper())
            if got is None:
                raise ManifestError(f"{where}: target {t['target']!r} not in the data")
            if abs(got.score - t["score"]) > 1e-4 or label(got.score) != t["label"]:
                raise ManifestError(f"{where}: target {t['target']!r} scores {got.score} in the data, "
                                    f"{t['score']} ({t['label']}) in the manifest")
        if len(have) != len(rec["targets"]):
            raise ManifestError(f"{where}: {len(have)} targets in the data, {len(rec['targets'])} listed")
        if split_of(it.text, manifest.get("seed", SEED)) != rec["split"]:
            raise ManifestError(f"{where}: split {rec['split']!r} is not the hash rule's")
        out.append(Resolved(name, key, rec["set"], rec["split"], it.text,
                            [{k: t[k] for k in ("target", "score", "label")} for t in rec["targets"]],
                            rec["opposed"]))
    return out


# ------------------------------------------------------------------ files


def data_dir() -> Path | None:
    from pipeline.settings import Settings

    return Settings().data_dir


def dataset_paths(folder: str | Path | None) -> dict[str, Path]:
    return {name: resolve_data(name, folder) for name in DATASETS}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_all(folder: str | Path | None) -> tuple[dict[str, list[Row]], dict[str, str]]:
    paths = dataset_paths(folder)
    return ({n: read_rows(p) for n, p in paths.items()},
            {REGISTRY[n].path: file_sha256(p) for n, p in paths.items()})


def load_eval(folder: str | Path | None = None, manifest: Path = MANIFEST) -> list[Resolved]:
    """The evaluation items with their texts, rebuilt from the shared data (for the model work)."""
    rows, _ = load_all(folder if folder is not None else data_dir())
    return resolve(json.loads(manifest.read_text(encoding="utf-8")), rows)


# ------------------------------------------------------------------ summaries


def summarise(records: Sequence[Mapping[str, Any]], stats: Mapping[str, Any] | None = None) -> dict[str, Any]:
    counts: dict[str, dict[str, dict[str, int]]] = {}
    balance: dict[str, Counter[str]] = {"multi": Counter(), "control": Counter()}
    targets_per_item: Counter[int] = Counter()
    n_opposed: Counter[str] = Counter()
    for r in records:
        c = counts.setdefault(r["dataset"], {s: {"multi": 0, "control": 0} for s in SPLITS})
        c[r["split"]][r["set"]] += 1
        balance[r["set"]].update(t["label"] for t in r["targets"])
        if r["set"] == "multi":
            targets_per_item[len(r["targets"])] += 1
            n_opposed[r["split"]] += r["opposed"]
    total = {f"{kind}_{s}": sum(c[s][kind] for c in counts.values()) for kind in ("multi", "control")
             for s in SPLITS}
    out: dict[str, Any] = {
        "total": total,
        "per_dataset": counts,
        "multi_opposed": {s: n_opposed[s] for s in SPLITS},
        "multi_targets_per_item": {str(k): v for k, v in sorted(targets_per_item.items())},
        "target_labels": {k: {lab: v[lab] for lab in LABELS} for k, v in balance.items()},
        "rules": {"positive_min": POSITIVE_MIN, "negative_max": NEGATIVE_MAX, "min_gap": MIN_GAP,
                  "heldout_share": HELDOUT_SHARE},
    }
    if stats is not None:
        out["candidates"] = stats
    return out


def print_table(summary: Mapping[str, Any]) -> None:
    print(f"{'dataset':32} {'multi dev':>9} {'multi held':>10} {'ctrl dev':>8} {'ctrl held':>9}")
    for name, c in summary["per_dataset"].items():
        print(f"{name:32} {c['dev']['multi']:9} {c['heldout']['multi']:10} {c['dev']['control']:8} "
              f"{c['heldout']['control']:9}")
    t = summary["total"]
    print(f"{'total':32} {t['multi_dev']:9} {t['multi_heldout']:10} {t['control_dev']:8} "
          f"{t['control_heldout']:9}")
    print(f"multi items with a positive and a negative target: {summary['multi_opposed']}")
    print(f"target labels: {summary['target_labels']}")
    for name, st in summary.get("candidates", {}).items():
        print(f"  {name}: {st}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None, help="data folder (default: FINSENT_DATA_DIR)")
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
    ap.add_argument("--write", action="store_true", help="write the manifest from the data")
    ap.add_argument("--check", action="store_true", help="rebuild every manifest item's text from the data")
    ap.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    args = ap.parse_args(argv)
    try:
        rows, files = load_all(args.data_dir if args.data_dir is not None else data_dir())
    except DataError as e:
        print(f"targets_eval: {e}", file=sys.stderr)
        return 2
    if args.check:
        manifest = json.loads(args.manifest.read_text(encoding="utf-8"))
        changed = [p for p, h in manifest.get("files", {}).items() if files.get(p) not in (None, h)]
        if changed:
            print(f"note: data files changed since the manifest was written: {changed}", file=sys.stderr)
        try:
            resolved = resolve(manifest, rows)
        except ManifestError as e:
            print(f"targets_eval --check: {e}", file=sys.stderr)
            return 1
        records = manifest["items"]
        summary = summarise(records)
        print(f"{args.manifest}: all {len(resolved)} items resolve against the shared data")
        if not args.json:
            print_table(summary)
    else:
        sel = select(rows)
        records = manifest_records(sel)
        summary = summarise(records, sel.stats)
        if args.write:
            args.manifest.parent.mkdir(parents=True, exist_ok=True)
            args.manifest.write_text(dump_manifest(records, files), encoding="utf-8")
            print(f"wrote {args.manifest} ({len(records)} items)", file=sys.stderr)
        if not args.json:
            print_table(summary)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
