"""A toy trading bot: live per-ticker sentiment in, BUY/SELL lines out on threshold crossings.

Live updates come from Redis pub/sub (``pipeline.client.listen``, the lowest latency) or, with
``--bootstrap``, from the Kafka topic ``finsent.ticker-scores`` (``pipeline.client.subscribe``:
every update, from ``--start earliest`` if you like). Try it next to the demo:

    finsent demo --rate 20                                   # terminal 1
    python examples/trading_bot.py --namespace demo.         # terminal 2

or against the demo's Kafka (its address is the first line the demo prints):

    python examples/trading_bot.py --namespace demo. --bootstrap 127.0.0.1:PORT --start earliest
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from strategy import ThresholdCrossing

from pipeline.client import listen, subscribe
from pipeline.schemas import rfc3339


async def run(args: argparse.Namespace) -> None:
    strategy = ThresholdCrossing(args.threshold)
    symbols = args.symbols or None
    if args.bootstrap:
        stream = subscribe(args.bootstrap, symbols, args.start, namespace=args.namespace)
        source = f"Kafka {args.bootstrap}"
    else:
        stream = listen(args.redis_url, symbols, namespace=args.namespace)
        source = "Redis pub/sub"
    seen = 0
    async with stream as updates:
        print(f"listening to {source} (namespace {args.namespace!r}), threshold +/-{args.threshold}", flush=True)
        async for u in updates:
            side = strategy.on_update(u)
            if side:
                print(f"{rfc3339(u.as_of)}  {side:<4}  {u.symbol:<6} score {u.score:+.3f}  {u.label:<16} "
                      f"{u.n_1h:>3} docs/1h  (after {u.last_doc_id})", flush=True)
            seen += 1
            if args.max_updates and seen >= args.max_updates:
                break


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--namespace", default=None, help="the pipeline's namespace (default: FINSENT_NAMESPACE)")
    p.add_argument("--redis-url", default=None, help="Redis URL (default: FINSENT_REDIS_URL or 127.0.0.1:6379)")
    p.add_argument("--bootstrap", default=None, help="read the Kafka topic at these servers instead of Redis")
    p.add_argument("--start", default="latest", help="with --bootstrap: latest, earliest or an RFC 3339 time")
    p.add_argument("--symbols", nargs="*", help="only these tickers (default: all)")
    p.add_argument("--threshold", type=float, default=0.35, help="signal when |score| crosses this")
    p.add_argument("--max-updates", type=int, default=0, help="stop after this many updates (0: never)")
    args = p.parse_args()
    try:
        asyncio.run(run(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
