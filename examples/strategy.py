"""The toy strategy both examples run: the same code live (trading_bot.py) and on a backtest
(backtest_strategy.py), which is the point of a backtest that equals the live pipeline.

A ticker is BUY when its score crosses above +threshold, SELL when it crosses below -threshold
(starting from neutral). Not investment advice: it only shows the finsent API.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.schemas import TickerScore


@dataclass
class ThresholdCrossing:
    """Per-ticker state of the strategy: the last score seen."""

    threshold: float = 0.35
    last: dict[str, float] = field(default_factory=dict)

    def on_update(self, u: TickerScore) -> str | None:
        """``"BUY"``, ``"SELL"`` or None for one update (call in per-ticker order)."""
        prev = self.last.get(u.symbol, 0.0)
        self.last[u.symbol] = u.score
        if u.score >= self.threshold > prev:
            return "BUY"
        if u.score <= -self.threshold < prev:
            return "SELL"
        return None
