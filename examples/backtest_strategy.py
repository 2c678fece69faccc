"""Backtest the toy strategy (strategy.py) on a historical feed, offline, no notebook.

The updates come from ``pipeline.backtest``: the live pipeline's parse -> link -> model ->
aggregation code, applied in published_at order, so each signal uses only news published up to
its time, and the same strategy code sees the same updates as it would live.

    python examples/backtest_strategy.py                          # the bundled sample feed
    python examples/backtest_strategy.py my_feed.jsonl --threshold 0.5 --out updates.csv
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from strategy import ThresholdCrossing

from pipeline.backtest import BacktestReport, feed_records, run_backtest, write_updates
from pipeline.schemas import rfc3339
from pipeline.settings import Settings

SAMPLE_FEED = Path(__file__).resolve().parents[1] / "pipeline" / "data" / "sample_feed.jsonl"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("feed", nargs="?", type=Path, default=SAMPLE_FEED, help="JSONL or CSV feed (input schema)")
    p.add_argument("--threshold", type=float, default=0.35, help="signal when |score| crosses this")
    p.add_argument("--out", type=Path, default=None, help="also write every update to this .csv/.parquet")
    args = p.parse_args()

    report = BacktestReport()
    records = list(feed_records(args.feed, report.bad))
    bt = run_backtest(records, Settings(), report=report)  # FINSENT_* settings, like the worker
    for where, reason in report.bad:
        print(f"skipped {where}: {reason}")
    if args.out:
        write_updates(bt.updates, args.out)

    strategy = ThresholdCrossing(args.threshold)
    signals = []
    for u in bt.updates:  # sorted by as_of, then symbol: the order a live bot would see per ticker
        side = strategy.on_update(u)
        if side:
            signals.append((u, side))
            print(f"{rfc3339(u.as_of)}  {side:<4}  {u.symbol:<6} score {u.score:+.3f}  (after {u.last_doc_id})")
    per_symbol = Counter((u.symbol, side) for u, side in signals)
    print(f"\n{report.documents} documents, {len(bt.updates)} updates, {len(signals)} signals "
          f"at threshold +/-{args.threshold}")
    for symbol in sorted({s for s, _ in per_symbol}):
        print(f"  {symbol:<6} BUY {per_symbol[symbol, 'BUY']:>2}  SELL {per_symbol[symbol, 'SELL']:>2}")


if __name__ == "__main__":
    main()
