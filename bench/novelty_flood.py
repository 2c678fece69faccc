"""A flood of copies of one story against a ticker's score: with novelty weighting on, off, and
with story detection off, through the backtest (the worker's steps; the shipped model).

The feed: ``--others`` distinct headlines about $TSLA over the first hour (real headline
shapes, mixed polarity), then ``--copies`` copies of one negative story as feeds and retweets
repeat it (``RT @user:``, ``BREAKING:``, a link, upper case, a wire credit) over ten minutes.
The JSON gives the $TSLA score before the flood and after copies 1, 2, 5, 10, 25 and the last,
with ``n_1h`` (documents) and ``stories_1h`` (stories) at the end, per variant.

    python bench/novelty_flood.py --json     # ~30 s on a 2-core box
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):  # first, or bench/pipeline.py would shadow the package
    sys.path.insert(0, str(ROOT))

import orjson

T0 = 1_733_400_000_000  # 2024-12-05T12:00:00Z
STORY = "$TSLA recalls 2 million cars over an autopilot defect"
SHAPES = [
    "{s}", "RT @tesla_watch: {s}", "BREAKING: {s}", "{s} https://t.co/Xy12abCD", "{S}", "(Reuters) - {s}",
    "{s} via @Reuters", "RT @trader42: BREAKING: {s} https://t.co/Zz99",
]  # fmt: skip
OTHERS = [
    "$TSLA beats delivery estimates for the quarter",
    "$TSLA opens a new factory in Mexico",
    "Tesla raises full-year outlook on strong Model Y demand",
    "$TSLA shareholders approve the pay package",
    "$TSLA upgraded to buy at Goldman, target raised to $300",
    "$TSLA energy storage deployments hit a record",
    "$TSLA cuts Model Y prices in China by 5%",
    "$TSLA robotaxi launch date confirmed for June",
    "$TSLA gross margin improves for a second quarter",
    "$TSLA wins a battery supply deal with Panasonic",
]
MARKS = (1, 2, 5, 10, 25)


def feed(copies: int, others: int) -> list[bytes]:
    lines = []
    for i in range(others):
        d = {"id": f"other-{i}", "text": OTHERS[i % len(OTHERS)], "published_at": T0 + i * 300_000}
        lines.append(orjson.dumps(d))
    start = T0 + others * 300_000
    for k in range(copies):
        text = SHAPES[k % len(SHAPES)].format(s=STORY, S=STORY.upper())
        lines.append(orjson.dumps({"id": f"copy-{k:03d}", "text": text, "published_at": start + k * 12_000}))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="compact JSON (default: indented)")
    ap.add_argument("--copies", type=int, default=50)
    ap.add_argument("--others", type=int, default=10)
    args = ap.parse_args()

    from pipeline.backtest import SourceRecord, run_backtest
    from pipeline.inference import build_engine
    from pipeline.settings import Settings

    lines = feed(args.copies, args.others)
    records = [SourceRecord(f"feed:{i + 1}", v, "news") for i, v in enumerate(lines)]
    base = Settings()
    engine = build_engine(base).start()
    variants = {
        "novelty weighting on (default)": base,
        "novelty weighting off": base.model_copy(update={"novelty_weighting": False}),
        "story detection off": base.model_copy(update={"novelty": False}),
    }
    out: dict = {"what": __doc__.split("\n\n")[0], "command": "python bench/novelty_flood.py --json",
                 "copies": args.copies, "others": args.others, "model": engine.model.config.version, "variants": {}}  # fmt: skip
    try:
        for name, s in variants.items():
            t0 = time.perf_counter()
            bt = run_backtest(records, s, engine=engine, now_ms=T0 + 10**9)
            tsla = [u for u in bt.updates if u.symbol == "TSLA"]
            before = [u for u in tsla if u.last_doc_id.startswith("other")][-1]
            after = {u.last_doc_id: u for u in tsla if u.last_doc_id.startswith("copy")}
            marks = [m for m in MARKS if m < args.copies] + [args.copies]
            last = after[f"copy-{args.copies - 1:03d}"]
            out["variants"][name] = {
                "score_before_flood": round(before.score, 4),
                "score_after_copy": {str(m): round(after[f"copy-{m - 1:03d}"].score, 4) for m in marks},
                "n_1h_at_end": last.n_1h,
                "stories_1h_at_end": last.stories_1h,
                "seconds": round(time.perf_counter() - t0, 1),
            }
            print(f"[novelty_flood] {name}: {out['variants'][name]}", file=sys.stderr)
    finally:
        engine.close()
    print(orjson.dumps(out, option=0 if args.json else orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
