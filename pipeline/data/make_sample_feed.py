"""Generate ``sample_feed.jsonl``: a deterministic demo feed in the finsent input schema.

Every headline and tweet is fictional, written from templates for this project (companies x
sentiment x phrasing, seeded); none reports a real event. The feed covers one trading day
(2024-03-14, 09:30-14:30 New York time) in arrival order: event times rise, but about one
message in ten arrives seconds to minutes after later ones (out of order). It mixes:

* kinds ``news`` (fictional outlets, some with body and url) and ``tweet`` (fictional handles);
* ticker references by cashtag (``$AAPL``), exchange prefix (``NASDAQ:AAPL``), company name,
  and a feed ``tickers`` list; a few multi-ticker and market-wide (no ticker) messages;
* clearly positive, clearly negative and neutral texts;
* ``published_at`` as RFC 3339 UTC (``Z``), RFC 3339 with the -04:00 offset, or epoch ms.

Run ``python pipeline/data/make_sample_feed.py`` to rewrite the file next to this script;
the output is byte-identical on every run.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

SEED = 20240314
N_MESSAGES = 360
OUT = Path(__file__).with_name("sample_feed.jsonl")
START = datetime(2024, 3, 14, 13, 30, tzinfo=UTC)  # 09:30 EDT, the opening bell
NEW_YORK = timezone(timedelta(hours=-4))  # EDT on that date

# symbol, exchange, names used in text, segments/products, rough share price (for price targets)
COMPANIES: list[tuple[str, str, list[str], list[str], int]] = [
    ("AAPL", "NASDAQ", ["Apple"], ["iPhone", "services", "Mac", "wearables"], 175),
    ("MSFT", "NASDAQ", ["Microsoft"], ["Azure cloud", "Copilot", "Office", "gaming"], 420),
    ("TSLA", "NASDAQ", ["Tesla"], ["Model Y", "energy storage", "Cybertruck", "China"], 170),
    ("NVDA", "NASDAQ", ["Nvidia"], ["data-center GPU", "AI chip", "gaming GPU", "networking"], 880),
    ("AMZN", "NASDAQ", ["Amazon"], ["AWS", "Prime", "advertising", "retail"], 175),
    (
        "JPM",
        "NYSE",
        ["JPMorgan", "JPMorgan Chase"],
        ["investment banking", "trading", "consumer lending"],
        190,
    ),
    ("XOM", "NYSE", ["Exxon Mobil", "Exxon"], ["upstream", "refining", "chemicals", "LNG"], 112),
    (
        "META",
        "NASDAQ",
        ["Meta Platforms", "Meta"],
        ["ad revenue", "Reality Labs", "Instagram", "WhatsApp"],
        495,
    ),
    ("GOOGL", "NASDAQ", ["Alphabet", "Google"], ["search ads", "Google Cloud", "YouTube", "Gemini"], 140),
    ("F", "NYSE", ["Ford", "Ford Motor"], ["F-150", "EV unit", "Ford Pro", "Bronco"], 12),
]

NEWS_SOURCES = [
    "Marketline Wire",
    "The Ledger Daily",
    "Capital Brief",
    "StreetDesk News",
    "Northbridge Markets",
]
HANDLES = [
    "chartwatcher",
    "tape_reader",
    "valuehunter",
    "optionsowl",
    "macro_mia",
    "dip_buyer99",
    "quantqueen",
    "bagholder_bob",
    "swingtradesam",
    "earningsedge",
]
BANKS = ["Halvorsen & Co", "Brightwater Securities", "Kestrel Capital", "Morrow Partners"]

NEWS = {
    "positive": [
        "{name} shares jump {pct}% after quarterly revenue tops estimates",
        "{name} raises full-year outlook on strong {seg} demand",
        "{name} beats profit forecasts as {seg} sales surge",
        "{bank} upgrades {name} to buy, lifts price target to ${pt}",
        "{name} announces ${bn} billion share buyback, stock climbs",
        "{name} lands major {seg} deal; analysts see upside to estimates",
        "{name} posts record {seg} growth, margins expand",
    ],
    "negative": [
        "{name} shares slide {pct}% after revenue misses estimates",
        "{name} cuts guidance, citing weak {seg} demand",
        "Regulators open probe into {name} over {seg} disclosures",
        "{bank} downgrades {name} to sell, cuts price target to ${pt}",
        "{name} to lay off {k} workers as {seg} business slows",
        "{name} faces class-action lawsuit over {seg} sales claims",
        "{name} warns of margin pressure as {seg} costs rise",
    ],
    "neutral": [
        "{name} to report first-quarter results on April {day}",
        "{name} schedules investor day for next month",
        "{name} names new chief financial officer",
        "{name} shares little changed ahead of Fed decision",
        "{name} to present at {bank} technology conference",
        "{name} files annual proxy statement; shareholder meeting set for May {day}",
        "{name} reorganises {seg} division under existing leadership",
    ],
}
TWEETS = {
    "positive": [
        "{ref} breaking out to new highs, {seg} numbers look insane 🚀",
        "Loading up more {ref} here, the {seg} story is just getting started",
        "{ref} ripping after that beat. bulls were right all along",
        "{ref} blowout quarter. {seg} crushed it, adding on any dip",
        "Huge {seg} beat from {ref}, this is going much higher 📈",
    ],
    "negative": [
        "{ref} looking ugly, {seg} demand is falling off a cliff",
        "Sold all my {ref}. that guidance cut is a massive red flag",
        "{ref} breaking down below support, could get a lot worse from here 📉",
        "{ref} is a disaster today. {seg} miss plus the downgrade, brutal",
        "Another terrible print from {ref}, {seg} is collapsing",
    ],
    "neutral": [
        "Watching {ref} into the close, no position yet",
        "Anyone know when {ref} reports? need the date for my calendar",
        "{ref} volume is light today, just chopping around",
        "Added {ref} to the watchlist, waiting for the {seg} update",
        "{ref} flat on the day, nothing much happening",
    ],
}
MULTI = {
    "positive": "{a} and {b} lead gains on Wall Street after upbeat forecasts",
    "negative": "{a} and {b} drag indexes lower after disappointing outlooks",
    "neutral": "{a} and {b} in focus as earnings season approaches",
}
MARKET = {
    "positive": [
        "Stocks open higher as Treasury yields ease",
        "Wall Street rallies as inflation data comes in cooler than expected",
        "Small caps surge as rate-cut bets build",
    ],
    "negative": [
        "Stocks slide as hot producer-price data revives rate fears",
        "Market sell-off deepens; volatility index jumps to two-month high",
        "Indexes tumble as bond yields spike on strong retail sales",
    ],
    "neutral": [
        "Markets mixed ahead of Federal Reserve minutes",
        "Oil prices steady as traders await OPEC meeting",
        "Dollar little changed against major currencies in quiet trade",
    ],
}
BODIES = {
    "positive": "Analysts said the results point to sustained momentum into the second half.",
    "negative": "Analysts said the update raises questions about the company's near-term targets.",
    "neutral": "The company did not provide further details.",
}


def _timestamp(rng: random.Random, t: datetime) -> str | int:
    """A published_at in one of the three accepted formats."""
    r = rng.random()
    if r < 0.70:
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    if r < 0.85:
        return t.astimezone(NEW_YORK).isoformat(timespec="seconds")
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def _price_target(x: float) -> str:
    """Round like analysts do: whole dollars, to the nearest 5 above $100."""
    return str(round(x / 5) * 5 if x >= 100 else max(1, round(x)))


def _company_ref(rng: random.Random, sym: str, exch: str, names: list[str], kind: str) -> tuple[str, str]:
    """(how the text names the company, the style used)."""
    r = rng.random()
    if kind == "tweet":
        if r < 0.70:
            return f"${sym}", "cashtag"
        if r < 0.85:
            return f"{exch}:{sym}", "exchange"
        return rng.choice(names), "name"
    if r < 0.75:
        return rng.choice(names), "name"
    return f"{rng.choice(names)} ({exch}:{sym})", "exchange"


def generate(seed: int = SEED, n: int = N_MESSAGES) -> list[dict[str, object]]:
    """The feed as a list of input-schema dicts, in arrival order."""
    rng = random.Random(seed)
    out: list[dict[str, object]] = []
    t = START
    for i in range(n):
        t += timedelta(milliseconds=rng.randint(10_000, 90_000))  # ~50 s apart: 5 hours in all
        event = t
        if rng.random() < 0.10:  # arrives late: its event time is seconds to minutes back
            event = t - timedelta(milliseconds=rng.randint(2_000, 600_000))
        kind = "news" if rng.random() < 0.55 else "tweet"
        sentiment = rng.choices(["positive", "negative", "neutral"], weights=[0.37, 0.33, 0.30])[0]
        fill = {
            "pct": rng.randint(2, 14),
            "up": rng.uniform(1.10, 1.35),  # price-target multiples of the share price
            "down": rng.uniform(0.65, 0.90),
            "bn": rng.choice([5, 10, 15, 25, 50]),
            "k": rng.choice([500, 1200, 2000, 3500, 8000]),
            "day": rng.randint(18, 30),
            "bank": rng.choice(BANKS),
        }
        msg: dict[str, object] = {"id": f"demo-{i + 1:04d}"}
        tickers: list[str] | None = None
        shape = rng.random()
        if shape < 0.08:  # market-wide, no ticker
            text = rng.choice(MARKET[sentiment])
        elif shape < 0.13:  # two companies
            (sa, _, na, _, _), (sb, _, nb, _, _) = rng.sample(COMPANIES, 2)
            if kind == "tweet":
                a, b = f"${sa}", f"${sb}"
            else:
                a, b = na[0], nb[0]
                tickers = [sa, sb] if rng.random() < 0.5 else None
            text = MULTI[sentiment].format(a=a, b=b)
        else:
            sym, exch, names, segs, price = rng.choice(COMPANIES)
            up, down = fill.pop("up"), fill.pop("down")
            fill["pt"] = _price_target(price * (up if sentiment == "positive" else down))
            ref, style = _company_ref(rng, sym, exch, names, kind)
            seg = rng.choice(segs)
            if kind == "tweet":
                text = rng.choice(TWEETS[sentiment]).format(ref=ref, seg=seg, **fill)
            else:
                text = rng.choice(NEWS[sentiment]).format(name=ref, seg=seg, **fill)
                if style == "name" and rng.random() < 0.4:
                    tickers = [sym]
        msg["text"] = text[0].upper() + text[1:] if text[0].islower() else text
        msg["published_at"] = _timestamp(rng, event)
        msg["kind"] = kind
        if kind == "news":
            msg["source"] = rng.choice(NEWS_SOURCES)
            msg["url"] = f"https://news.example.com/markets/{i + 1:04d}"
            if rng.random() < 0.3:
                msg["body"] = BODIES[sentiment]
        else:
            msg["source"] = f"x:@{rng.choice(HANDLES)}"
        if tickers is not None:
            msg["tickers"] = tickers
        msg["lang"] = "en"
        out.append(msg)
    return out


def render(messages: list[dict[str, object]]) -> str:
    """JSON lines, UTF-8 (emoji kept), one message per line."""
    return "".join(json.dumps(m, ensure_ascii=False, separators=(",", ":")) + "\n" for m in messages)


def main() -> None:
    OUT.write_text(render(generate()), encoding="utf-8")
    print(f"wrote {N_MESSAGES} messages to {OUT}")


if __name__ == "__main__":
    main()
