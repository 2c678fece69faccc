"""Training-data augmentation for what traders write: emoji, fintwit slang and negation.

Built from the Twitter Financial News **train** split only (MIT licence): its texts (the emoji
family decorates them) and its cashtags (every generated sentence names a ticker, or the company
behind it, drawn from them). Nothing is built from validation data or from the behavioural suite
``bench/data/checklist.jsonl``; the suite's texts (never its labels) serve only to drop a generated
text that equals or nearly equals one of them (:class:`NearDuplicates`; on by default), so that the suite still measures what the model learned, not
what it was shown. Deterministic for a given input and seed.

Three families, each with a labelling rule that can be checked by reading the row:

**emoji** (``emoji:append``, ``emoji:short``)
    * ``append``: a training text with emoji added at its start or end, label kept. Positive texts
      get only :data:`BULLISH` emoji, negative texts only :data:`BEARISH` ones, neutral texts only
      :data:`NEUTRAL_EMOJI`; a text that already has emoji is left alone.
    * ``short``: a cashtag (or company) and emoji, e.g. ``$XYZ 🚀🚀``, with a few polarity-free
      words at most ("at the open", "earnings"). The label is the emoji's class in the fixed
      table: all bullish -> positive, all bearish -> negative, all neutral -> neutral; emoji of two
      classes are never mixed. Emoji whose sense depends on context (🔥 💸 ✅ ❌ ⚠️ 👀 🤡 🧻) are in
      no class and never used.
**slang** (``slang``)
    A short fintwit sentence from :data:`SLANG`: a polar phrase ("to the moon", "puts printing")
    about one ticker, wrapped in a polarity-free frame ("lol {}", "{} after hours"). The label is
    the phrase's: bullish slang (to the moon, ripping, mooning, calls printing, tendies, squeeze,
    breakout, ATH) -> positive; bearish slang (bleeding, rekt, bagholders, falling knife, puts
    printing -- puts gain when the stock falls --, dumping, capitulation, cooked) -> negative;
    trading chatter without a direction (earnings tonight, on watch, chopping sideways) ->
    neutral.
**negation** (``negation:negated``, ``negation:affirmed``, ``negation:neutral``)
    Sentences from :data:`NEGATION` that negate a polar predicate about a company. Rule: negating
    a polar predicate gives the opposite polarity, and only predicates whose negation reads
    unambiguously so are used:

    * a bad state or outcome negated -> positive: "X's quarter was not bad at all", "X is no longer
      a drag on earnings", "X's margins are not deteriorating", "no sign of a slowdown at X",
      "X did not miss estimates", "X did not cut its guidance despite fears of a cut";
    * a good state or outcome negated -> negative: "X's quarter was not good", "X failed to beat
      estimates", "X is no longer profitable", "X could not hold its gains";
    * a neutral predicate negated -> neutral ("X did not comment", "X has not changed its outlook":
      guidance merely left unchanged is neutral; only "not cut despite fears" is positive), so that
      "not" alone is no cue for either side;
    * ``affirmed``: some negated sentences also come with their plain twin and the opposite label
      ("X's margins are deteriorating" -> negative), on a different company, so the model sees
      the pair's difference is the negation.

Sizes: :func:`augment` makes ``round(max_share * len(rows))`` rows (30 % by default; the brief's
range is 25-35 %), 40 % emoji, 30 % slang, 30 % negation, so the original distribution dominates.
No generated text equals (case-folded) a training text or another generated text.

``python -m models.augment --data TRAIN.csv --out AUG.csv --seed 13`` writes the generated rows as
a ``text,label`` CSV, the training CSV's format. ``finsent train`` reads ONE ``--data`` file and
holds out 10 % of it for early stopping, so to train on both from files, write the training rows
with the generated ones into one file and keep the dev rows out of both: ``--dev-seed 13
--train-out TRAIN_AUG.csv --dev-out DEV.csv`` holds out exactly the rows that ``--split-seed 13``
would, builds only from the rest, and ``finsent train --data TRAIN_AUG.csv --valid DEV.csv`` then
trains on them. (A decorated copy of a dev text in the training rows would leak it.)
"""

from __future__ import annotations

import argparse
import csv
import difflib
import json
import random
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Final

import emoji

from models.text import normalize

LABELS: Final[tuple[str, ...]] = ("negative", "neutral", "positive")

#: share of each family in the generated rows
FAMILY_SHARES: Final[dict[str, float]] = {"emoji": 0.40, "slang": 0.30, "negation": 0.30}
DEFAULT_MAX_SHARE: Final[float] = 0.30

# ------------------------------------------------------------------ emoji

#: emoji that say "up" on a ticker (💎🙌 is "diamond hands": holding, bullish)
BULLISH: Final[tuple[str, ...]] = (
    "🚀", "📈", "🐂", "💰", "🤑", "💎", "🙌", "🟢", "🌕", "⬆️", "🔺", "💵", "🥳", "🎉", "💯", "🏆",
)
#: emoji that say "down" on a ticker
BEARISH: Final[tuple[str, ...]] = (
    "📉", "🐻", "💀", "🩸", "😱", "🔻", "🔴", "⬇️", "🤮", "😭", "🪦", "⚰️", "🆘", "😰", "🥶", "💔",
)
#: emoji of news and calendars, no direction
NEUTRAL_EMOJI: Final[tuple[str, ...]] = ("📅", "📰", "📊", "🔔", "🗓️", "📢", "🎙️", "📝", "⏰", "📌", "🏦", "🌐")
#: emoji -> label for ``emoji:short`` rows and for checking appended ones
EMOJI_POLARITY: Final[dict[str, str]] = {
    **{e: "positive" for e in BULLISH}, **{e: "negative" for e in BEARISH},
    **{e: "neutral" for e in NEUTRAL_EMOJI},
}
_EMOJI_BY_LABEL: Final[dict[str, tuple[str, ...]]] = {
    "positive": BULLISH, "negative": BEARISH, "neutral": NEUTRAL_EMOJI,
}

#: where emoji go on a training text ({t}: the text, {e}: the emoji)
APPEND_FORMATS: Final[tuple[str, ...]] = ("{t} {e}", "{t} {e}", "{t} {e}", "{e} {t}", "{e} {t}", "{t}{e}",
                                          "{e}{t}", "{e} {t} {e}")
#: emoji-only and cashtag+emoji texts ({s}: ticker or company, {e}: emoji); no polar word
SHORT_TEMPLATES: Final[tuple[str, ...]] = (
    "{s} {e}", "{e} {s}", "{s}{e}", "{s} {e} {e}", "{s} today {e}", "{s} at the open {e}",
    "{s} this week {e}",
    "{s} earnings {e}", "{s} after hours {e}", "{s} premarket {e}", "{s} right now {e}", "{s} chart {e}",
    "{e} {s} {e}", "{s} into the close {e}", "{s} update {e}", "{s} on the daily {e}", "{s}... {e}",
    "{s} {e} thoughts?", "{s} since Monday {e}", "{s} Q{q} {e}",
)

# ------------------------------------------------------------------ slang

#: (phrase with {s} for the ticker or company, label); bullish, bearish and directionless chatter
SLANG: Final[tuple[tuple[str, str], ...]] = (
    ("{s} to the moon", "positive"), ("{s} is going to the moon", "positive"), ("{s} mooning", "positive"),
    ("{s} is mooning hard", "positive"), ("{s} ripping", "positive"), ("{s} ripping higher", "positive"),
    ("{s} calls printing", "positive"), ("my {s} calls are printing", "positive"),
    ("{s} tendies incoming", "positive"), ("tendies from {s} calls", "positive"),
    ("{s} short squeeze is on", "positive"), ("{s} squeezing the shorts", "positive"),
    ("{s} breakout confirmed", "positive"), ("{s} breaking out", "positive"), ("{s} new ATH", "positive"),
    ("{s} just hit an ATH", "positive"), ("{s} at all time highs", "positive"),
    ("{s} going parabolic", "positive"),
    ("{s} bulls feasting", "positive"), ("{s} melting up", "positive"), ("{s} sending it", "positive"),
    ("{s} is a ten bagger", "positive"), ("{s} green candles all day", "positive"),
    ("{s} bleeding", "negative"), ("{s} keeps bleeding", "negative"), ("{s} bleeding out", "negative"),
    ("rekt on {s}", "negative"), ("{s} longs getting rekt", "negative"), ("{s} bagholders", "negative"),
    ("{s} bagholders in pain", "negative"), ("{s} is a falling knife", "negative"),
    ("don't catch the {s} falling knife", "negative"), ("{s} puts printing", "negative"),
    ("my {s} puts are printing", "negative"), ("{s} dumping", "negative"), ("{s} dumping hard", "negative"),
    ("{s} capitulation", "negative"), ("{s} holders capitulating", "negative"), ("{s} is cooked", "negative"),
    ("{s} cooked", "negative"), ("{s} nuked", "negative"), ("{s} tanking", "negative"),
    ("{s} rug pull", "negative"), ("{s} bull trap", "negative"), ("{s} dead cat bounce", "negative"),
    ("{s} getting crushed", "negative"), ("{s} red candles all day", "negative"),
    ("{s} earnings tonight", "neutral"), ("{s} on watch", "neutral"), ("{s} options chain check", "neutral"),
    ("who's trading {s} today", "neutral"), ("{s} ER after the close", "neutral"),
    ("{s} IV elevated into earnings", "neutral"), ("{s} volume thread", "neutral"),
    ("{s} chopping sideways", "neutral"), ("{s} range bound", "neutral"),
    ("what's the play on {s}", "neutral"),
    ("{s} ex-div tomorrow", "neutral"), ("{s} levels to watch", "neutral"),
)
#: polarity-free frames around a slang phrase
SLANG_FRAMES: Final[tuple[str, ...]] = (
    "{x}", "{x}", "{x} today", "{x} again", "{x} after earnings", "{x} premarket", "{x} after hours",
    "{x} this week", "lol {x}", "wow {x}", "ngl {x}", "{x} fr", "{x}!!", "so {x}", "update: {x}",
    "{x} into the close", "{x} since the open", "{x}, as expected", "{x} no cap", "{x}...", "yep, {x}",
    "{x} on the 5 min chart", "day {n}: {x}",
)

# ------------------------------------------------------------------ negation

#: (negated sentence, its label, plain twin or None); {s}: company or ticker. Rules: module docstring.
NEGATION: Final[tuple[tuple[str, str, str | None], ...]] = (
    # a bad state or outcome negated -> positive
    ("{s}'s quarter was not bad at all", "positive", "{s}'s quarter was bad"),
    ("{s} results were not bad", "positive", "{s} results were bad"),
    ("not a bad quarter for {s}", "positive", "a bad quarter for {s}"),
    ("{s} is not doing badly", "positive", "{s} is doing badly"),
    ("{s}'s margins are not deteriorating", "positive", "{s}'s margins are deteriorating"),
    ("{s}'s credit quality is not deteriorating", "positive", "{s}'s credit quality is deteriorating"),
    ("{s} is no longer a drag on earnings", "positive", "{s} is a drag on earnings"),
    ("{s} is no longer losing money", "positive", "{s} is losing money"),
    ("{s} is no longer burning cash", "positive", "{s} is burning cash"),
    ("no sign of a slowdown at {s}", "positive", "signs of a slowdown at {s}"),
    ("{s} sees no slowdown in demand", "positive", "{s} sees a slowdown in demand"),
    ("{s} did not miss estimates", "positive", "{s} missed estimates"),
    ("{s} did not cut its dividend despite fears of a cut", "positive", None),
    ("{s} did not cut its guidance despite fears of a cut", "positive", None),
    ("{s} sales did not fall", "positive", "{s} sales fell"),
    ("{s} is not losing market share", "positive", "{s} is losing market share"),
    ("{s} will not need to raise more capital", "positive", "{s} will need to raise more capital"),
    ("no layoffs are planned at {s}", "positive", "layoffs are planned at {s}"),
    ("{s} has never missed a dividend payment", "positive", "{s} missed a dividend payment"),
    ("{s}'s debt is no longer a concern", "positive", "{s}'s debt is a concern"),
    # a good state or outcome negated -> negative
    ("{s}'s quarter was not good", "negative", "{s}'s quarter was good"),
    ("{s} results were not great", "negative", "{s} results were great"),
    ("not a good quarter for {s}", "negative", "a good quarter for {s}"),
    ("{s} is not doing well", "negative", "{s} is doing well"),
    ("{s} failed to beat estimates", "negative", "{s} beat estimates"),
    ("{s} did not meet expectations", "negative", "{s} met expectations"),
    ("{s} did not beat on revenue", "negative", "{s} beat on revenue"),
    ("{s} could not hold its gains", "negative", "{s} held its gains"),
    ("{s} is no longer profitable", "negative", "{s} is profitable again"),
    ("{s} will not pay a dividend this year", "negative", "{s} will pay a special dividend this year"),
    ("{s} has not recovered from the selloff", "negative", "{s} has recovered from the selloff"),
    ("no rebound in sight for {s}", "negative", "a rebound is in sight for {s}"),
    ("{s} failed to win the contract", "negative", "{s} won the contract"),
    ("{s} sales did not grow", "negative", "{s} sales grew"),
    ("{s} is no longer growing", "negative", "{s} is growing again"),
    ("{s}'s outlook is not encouraging", "negative", "{s}'s outlook is encouraging"),
    ("{s} failed to reach a deal with its lenders", "negative", "{s} reached a deal with its lenders"),
    ("{s}'s turnaround is not working", "negative", "{s}'s turnaround is working"),
    # a neutral predicate negated -> neutral
    ("{s} did not comment on the report", "neutral", None),
    ("{s} has not set a date for its earnings call", "neutral", None),
    ("{s} did not disclose the terms of the deal", "neutral", None),
    ("{s} did not respond to a request for comment", "neutral", None),
    ("{s} has not changed its outlook", "neutral", None),
    ("{s} did not give a reason for the change", "neutral", None),
    ("{s} will not hold a conference call", "neutral", None),
    ("{s} did not name the buyer", "neutral", None),
    ("{s} has not decided on a listing venue", "neutral", None),
    ("terms of the {s} agreement were not disclosed", "neutral", None),
    ("{s} would not say how many shares it sold", "neutral", None),
    ("{s} is not included in the index review", "neutral", None),
)
#: contractions applied to about half of the negated sentences
CONTRACTIONS: Final[tuple[tuple[str, str], ...]] = (
    (" was not ", " wasn't "), (" were not ", " weren't "), (" is not ", " isn't "),
    (" are not ", " aren't "), (" did not ", " didn't "), (" has not ", " hasn't "),
    (" will not ", " won't "), (" could not ", " couldn't "),
    (" would not ", " wouldn't "),
)
#: polarity-free frames around a negation sentence ({x}: the sentence, capitalised where it starts)
NEGATION_FRAMES: Final[tuple[str, ...]] = (
    "{x}", "{x}", "{x}.", "{x} this quarter", "{x} in Q{q}", "{x}, analysts say", "{x}, sources say",
    "Report: {x}", "Update: {x}", "So far, {x}", "{x} - Reuters", "{x} - Bloomberg", "Q{q}: {x}",
    "{x}, per the filing", "{x} (FY{y})", "Earnings: {x}", "{x}, CFO says",
)

# ------------------------------------------------------------------ entities

_CASHTAG = re.compile(r"(?<![\w$])\$([A-Z]{1,5}(?:\.[A-Z])?)\b")
#: newswire pseudo-tickers of the Twitter Financial News texts (MarketScreener and wires), not stocks
_PSEUDO = frozenset({"COMDX", "SCANX", "SUMRX", "ECONX", "WIRES", "BONDX", "STUDY", "MACRO"})
_NAME_SUFFIX = re.compile(
    r"(?:,?\s+(?:Inc\.?|Incorporated|Corporation|Corp\.?|Company|Co\.?|plc|PLC|Ltd\.?|Holdings|"
    r"N\.V\.|S\.A\.|AG|SE|L\.P\.))+$"
)
#: exchange-traded funds and index products among fintwit cashtags: fine in slang ("$SPY puts
#: printing"), never the subject of a company-news sentence
FUNDS: Final[frozenset[str]] = frozenset({
    "SPY", "QQQ", "IWM", "DIA", "USO", "UNG", "XLE", "XLF", "XLK", "XLV", "XLU", "XLI", "XLY", "XLP", "XLB",
    "XBI", "GLD", "SLV", "TLT", "UGAZ", "DGAZ", "UWT", "DWT", "VXX", "UVXY", "SVXY", "EEM", "EFA", "FXI",
    "HYG", "LQD", "SMH", "ARKK", "OIL", "TQQQ", "SQQQ", "SPXL", "SPXS", "KRE", "GDX", "GDXJ", "VIX", "SPX",
    "IEF", "SHY", "BND", "VTI", "VOO", "IVV", "EWZ", "EWJ", "JNK", "UUP", "FXE", "KWEB", "MCHI", "XOP",
})

#: a few well-known companies, used when their ticker is among the cashtags and no table is given
COMPANY_NAMES: Final[dict[str, str]] = {
    "AAPL": "Apple", "AMZN": "Amazon", "MSFT": "Microsoft", "TSLA": "Tesla", "NVDA": "Nvidia",
    "NFLX": "Netflix",
    "UBER": "Uber", "LYFT": "Lyft", "DIS": "Disney", "EBAY": "eBay", "XOM": "Exxon", "CVX": "Chevron",
    "BA": "Boeing", "GE": "General Electric", "GM": "General Motors", "FB": "Facebook", "GOOGL": "Alphabet",
    "GOOG": "Google", "JD": "JD.com", "BIIB": "Biogen", "BMY": "Bristol Myers", "HPQ": "HP",
    "WDC": "Western Digital",
    "KHC": "Kraft Heinz", "FCX": "Freeport", "ULTA": "Ulta", "PYPL": "PayPal", "CCL": "Carnival",
    "RCL": "Royal Caribbean", "UAL": "United Airlines", "LULU": "Lululemon", "MAR": "Marriott",
    "SCHW": "Schwab", "PANW": "Palo Alto Networks", "HAS": "Hasbro", "T": "AT&T", "JPM": "JPMorgan",
    "BAC": "Bank of America", "WMT": "Walmart", "TGT": "Target", "COST": "Costco", "INTC": "Intel",
    "AMD": "AMD", "MU": "Micron", "BABA": "Alibaba", "NKE": "Nike", "SBUX": "Starbucks", "F": "Ford",
}


def cashtags(rows: Iterable[tuple[str, str]]) -> list[str]:
    """Tickers of the cashtags in ``rows``' texts (without ``$``), most frequent first (ties by
    name); newswire pseudo-tickers and 5-letter ``...X`` mutual-fund symbols left out."""
    counts: Counter[str] = Counter()
    for text, _ in rows:
        counts.update(set(_CASHTAG.findall(text)))
    keep = [t for t in counts if t not in _PSEUDO and not (len(t) == 5 and t.endswith("X"))]
    return sorted(keep, key=lambda t: (-counts[t], t))


def read_company_names(path: str | Path) -> dict[str, str]:
    """symbol -> short company name from a CSV with ``symbol`` and ``name`` columns (the S&P 500
    constituents table): ``"Walt Disney Company (The)"`` -> ``"Walt Disney"``."""
    names: dict[str, str] = {}
    with Path(path).open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            name = re.sub(r"\s*\([^)]*\)", "", row["name"]).strip()
            name = _NAME_SUFFIX.sub("", name).strip(" ,")
            if name:
                names[row["symbol"].strip()] = name
    return names


class _Entities:
    """Draws the subject of a generated sentence: ``$TSLA``, ``TSLA``, ``Tesla`` or ``Tesla stock``."""

    def __init__(self, tickers: Sequence[str], names: dict[str, str], rng: random.Random) -> None:
        if not tickers:
            raise ValueError("no cashtags in the training texts: nothing to build sentences about")
        self.tickers = list(tickers)
        self.named = [t for t in self.tickers if t in names]
        self.names = names
        self.rng = rng

    def ticker(self) -> str:
        # the frequent tickers come up more often, but every one can
        i = min(int(self.rng.paretovariate(0.6)) - 1, len(self.tickers) - 1)
        return self.tickers[i] if self.rng.random() < 0.5 else self.rng.choice(self.tickers)

    def slang_subject(self) -> str:
        r = self.rng.random()
        if r < 0.7 or not self.named:
            return "$" + self.ticker()
        if r < 0.8:
            return self.ticker()
        return self.names[self.rng.choice(self.named)]

    def news_subject(self) -> str:
        """A company: funds and indices have no quarters, margins or dividends."""
        if self.named and self.rng.random() < 0.6:
            return self.names[self.rng.choice(self.named)]
        while (t := self.ticker()) in FUNDS and len(self.tickers) > len(FUNDS & set(self.tickers)):
            pass
        return "$" + t


# ------------------------------------------------------------------ evaluation texts kept out

#: the behavioural suite: an evaluation set, so nothing generated may copy one of its texts
CHECKLIST: Final[Path] = Path(__file__).resolve().parents[1] / "bench" / "data" / "checklist.jsonl"
_TICKERISH = re.compile(r"\$[A-Za-z][A-Za-z.]*|\b[A-Z]{2,5}\b")
_PUNCT = re.compile(r"[^\w\s]")


def overlap_key(text: str) -> str:
    """``text`` as compared for near-duplicates: emoji spelled out (:func:`models.text.normalize`),
    cashtags and upper-case tickers replaced by one placeholder, case-folded, punctuation dropped.
    ``$TSLA is cooked`` and ``$SPY is cooked!`` have the same key."""
    text = _TICKERISH.sub(" tkr ", normalize(text))
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def read_texts(path: str | Path) -> list[str]:
    """Every text of an evaluation file: ``text`` (and ``variant``, the invariance cases' second
    text) of each JSONL object, or the ``text`` column of a CSV."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as fh:
        if path.suffix == ".jsonl":
            objs = [json.loads(line) for line in fh if line.strip()]
            return [o[k] for o in objs for k in ("text", "variant") if isinstance(o.get(k), str)]
        return [row["text"] for row in csv.DictReader(fh)]


class NearDuplicates:
    """Whether a text equals or nearly equals one of ``texts``: the same :func:`overlap_key`, or keys
    whose words overlap by >= 75 % (Jaccard), or whose characters match by >= 85 %
    (``difflib`` ratio). Only the texts are used, never their labels."""

    JACCARD: Final[float] = 0.75
    RATIO: Final[float] = 0.85

    def __init__(self, texts: Iterable[str]) -> None:
        self.keys = sorted({overlap_key(t) for t in texts} - {""})
        self.words = [frozenset(k.split()) for k in self.keys]
        self.exact = set(self.keys)

    def __contains__(self, text: str) -> bool:
        key = overlap_key(text)
        if key in self.exact:
            return True
        words = set(key.split())
        matcher = difflib.SequenceMatcher(None, "", key)  # key is b, cached; each other is a
        for other, other_words in zip(self.keys, self.words, strict=True):
            if len(words & other_words) >= self.JACCARD * len(words | other_words):
                return True
            if 2 * min(len(key), len(other)) < self.RATIO * (len(key) + len(other)):
                continue  # the ratio cannot reach RATIO
            matcher.set_seq1(other)
            if (matcher.real_quick_ratio() >= self.RATIO and matcher.quick_ratio() >= self.RATIO
                    and matcher.ratio() >= self.RATIO):
                return True
        return False


# ------------------------------------------------------------------ generation


def _emoji_run(rng: random.Random, pool: Sequence[str]) -> str:
    """1-2 different emoji of one class, each 1-3 times; sometimes the 💎🙌 pair for bullish."""
    if "💎" in pool and rng.random() < 0.1:
        return "💎🙌" * rng.randint(1, 2)
    kinds = rng.sample(list(pool), rng.choice((1, 1, 2)))
    sep = rng.choice(("", "", " "))
    return sep.join(e * rng.choice((1, 1, 2, 3)) for e in kinds)


def _has_emoji(text: str) -> bool:
    return emoji.emoji_count(text) > 0


def _capitalise(text: str) -> str:
    """First letter upper-cased, unless the word is styled like ``eBay`` or ``iPhone``."""
    if len(text) > 1 and text[0].islower() and not text[1].isupper():
        return text[0].upper() + text[1:]
    return text


def _fill(frame: str, x: str, rng: random.Random) -> str:
    return frame.format(x=x, q=rng.randint(1, 4), y=rng.randint(22, 26), n=rng.randint(2, 9))


def _quotas(total: int, shares: dict[str, float]) -> dict[str, int]:
    """Integer quotas summing to ``total`` (largest remainders)."""
    raw = {k: total * v / sum(shares.values()) for k, v in shares.items()}
    out = {k: int(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: (out[k] - raw[k], k))[: total - sum(out.values())]:
        out[k] += 1
    return out


def augment(rows: list[tuple[str, str]], seed: int, *, max_share: float = DEFAULT_MAX_SHARE,
            names: dict[str, str] | None = None,
            exclude: Iterable[str] | None = None) -> list[tuple[str, str, str]]:
    """(text, label, how) rows generated from the training ``rows`` (text, label), about
    ``max_share * len(rows)`` of them; ``how`` is the family and variant (``emoji:append``,
    ``emoji:short``, ``slang``, ``negation:negated``, ``negation:affirmed``, ``negation:neutral``).
    ``names`` maps tickers to company names (default :data:`COMPANY_NAMES`). A generated text that
    is a near-duplicate (:class:`NearDuplicates`) of one of ``exclude``'s texts (an evaluation set)
    is dropped and another drawn in its place; by default (None) those are the texts of
    :data:`CHECKLIST` where that file is present, so that no caller can train on the behavioural
    suite by accident (``exclude=()`` keeps nothing out). Deterministic."""
    held_out = _held_out() if exclude is None else NearDuplicates(exclude)
    return _augment(rows, seed, max_share, names, held_out)[0]


@lru_cache(maxsize=1)
def _held_out() -> NearDuplicates:
    return NearDuplicates(read_texts(CHECKLIST) if CHECKLIST.is_file() else ())


def _augment(rows: list[tuple[str, str]], seed: int, max_share: float, names: dict[str, str] | None,
             excluded: NearDuplicates) -> tuple[list[tuple[str, str, str]], int]:
    """:func:`augment`, and how many drawn texts were dropped as near-duplicates of ``excluded``."""
    rng = random.Random(seed)
    dropped = 0
    for _, label in rows:
        if label not in LABELS:
            raise ValueError(f"unknown label {label!r}; expected one of {list(LABELS)}")
    ents = _Entities(cashtags(rows), COMPANY_NAMES if names is None else names, rng)
    total = round(max_share * len(rows))
    family = _quotas(total, FAMILY_SHARES)
    seen = {" ".join(t.lower().split()) for t, _ in rows}
    out: list[tuple[str, str, str]] = []

    def make(quota: int, draw: Callable[[], tuple[str, str, str] | None]) -> None:
        nonlocal dropped
        made, tries = 0, 0
        while made < quota and tries < 50 * quota + 100:
            tries += 1
            item = draw()
            if item is None:
                continue
            text = " ".join(item[0].split())
            key = text.lower()
            if key in seen:
                continue
            seen.add(key)
            if excluded.keys and text in excluded:
                dropped += 1
                continue
            out.append((text, item[1], item[2]))
            made += 1

    # emoji: append to training texts of each label, and short cashtag + emoji texts
    n_append = family["emoji"] * 55 // 100
    by_label = {lab: [t for t, y in rows if y == lab and not _has_emoji(t)] for lab in LABELS}
    for lab, quota in _quotas(n_append, {"positive": 0.4, "negative": 0.4, "neutral": 0.2}).items():
        pool = by_label[lab]
        order = rng.sample(range(len(pool)), len(pool))
        it = iter(order)

        def draw_append(lab: str = lab, pool: list[str] = pool,
                        it: Iterable[int] = it) -> tuple[str, str, str] | None:
            i = next(it, None)
            if i is None:
                return None
            fmt = rng.choice(APPEND_FORMATS)
            return fmt.format(t=pool[i], e=_emoji_run(rng, _EMOJI_BY_LABEL[lab])), lab, "emoji:append"

        make(min(quota, len(pool)), draw_append)

    n_short = family["emoji"] - n_append
    for lab, quota in _quotas(n_short, {"positive": 0.4, "negative": 0.4, "neutral": 0.2}).items():

        def draw_short(lab: str = lab) -> tuple[str, str, str]:
            tpl = rng.choice(SHORT_TEMPLATES)
            subject = ents.slang_subject()
            run = _emoji_run(rng, _EMOJI_BY_LABEL[lab])
            text = tpl.format(s=subject, e=run, q=rng.randint(1, 4))
            return text, lab, "emoji:short"

        make(quota, draw_short)

    # slang
    slang_by_label = {lab: [p for p, y in SLANG if y == lab] for lab in LABELS}
    for lab, quota in _quotas(family["slang"], {"positive": 0.4, "negative": 0.4, "neutral": 0.2}).items():

        def draw_slang(lab: str = lab) -> tuple[str, str, str]:
            phrase = rng.choice(slang_by_label[lab]).format(s=ents.slang_subject())
            return _fill(rng.choice(SLANG_FRAMES), phrase, rng), lab, "slang"

        make(quota, draw_slang)

    # negation
    polar = [n for n in NEGATION if n[1] != "neutral"]
    twins = [n for n in polar if n[2] is not None]
    neutral = [n for n in NEGATION if n[1] == "neutral"]
    flip = {"positive": "negative", "negative": "positive"}
    neg_quota = _quotas(family["negation"], {"negated": 0.6, "affirmed": 0.2, "neutral": 0.2})

    def sentence(template: str) -> str:
        text = template.format(s=ents.news_subject())
        if rng.random() < 0.5:
            for long, short in CONTRACTIONS:
                text = text.replace(long, short)
        return _capitalise(_fill(rng.choice(NEGATION_FRAMES), text, rng))

    def draw_negated() -> tuple[str, str, str]:
        negated, label, _ = rng.choice(polar)
        return sentence(negated), label, "negation:negated"

    def draw_affirmed() -> tuple[str, str, str]:
        _, label, twin = rng.choice(twins)
        return sentence(twin or ""), flip[label], "negation:affirmed"

    def draw_neutral() -> tuple[str, str, str]:
        return sentence(rng.choice(neutral)[0]), "neutral", "negation:neutral"

    make(neg_quota["negated"], draw_negated)
    make(neg_quota["affirmed"], draw_affirmed)
    make(neg_quota["neutral"], draw_neutral)
    return out, dropped


# ------------------------------------------------------------------ command line


def _dev_split(n: int, seed: int, fraction: float = 0.1) -> tuple[list[int], list[int]]:
    """The (train, dev) row indices that ``finsent train`` holds out (models.train.split_dev)."""
    import numpy as np

    idx = np.random.default_rng(seed).permutation(n).tolist()
    cut = max(1, int(len(idx) * fraction))
    return sorted(idx[cut:]), sorted(idx[:cut])


def _write(path: Path, rows: Iterable[tuple[str, str]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["text", "label"])
        for text, label in rows:
            writer.writerow([text, label])
            n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    """``python -m models.augment``: see ``--help``."""
    ap = argparse.ArgumentParser(
        prog="python -m models.augment",
        description="Generate emoji, slang and negation training rows from a text,label training CSV "
                    "(the Twitter Financial News train split).")
    ap.add_argument("--data", type=Path, required=True, help="training CSV with header text,label")
    ap.add_argument("--out", type=Path, required=True, help="CSV (text,label) for the generated rows")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--max-share", type=float, default=DEFAULT_MAX_SHARE,
                    help="generated rows as a share of the training rows used (default 0.30)")
    ap.add_argument("--companies", type=Path, default=None,
                    help="CSV with symbol,name columns (e.g. companies/sp500_constituents.csv) for company "
                         "names; default: a built-in list of 48 large companies")
    ap.add_argument("--exclude", type=Path, action="append", default=None, metavar="FILE",
                    help="evaluation texts (JSONL with text/variant, or CSV with text) that no generated "
                         "text may equal or nearly equal; repeatable; default: bench/data/checklist.jsonl")
    ap.add_argument("--no-exclude", action="store_true", help="keep no evaluation set out (not recommended)")
    ap.add_argument("--dev-seed", type=int, default=None,
                    help="hold out the 10%% dev rows that `finsent train --split-seed N` would, and build "
                         "only from the other 90%%")
    ap.add_argument("--train-out", type=Path, default=None,
                    help="also write the training rows used plus the generated ones, "
                         "for `finsent train --data`")
    ap.add_argument("--dev-out", type=Path, default=None,
                    help="with --dev-seed: write the held-out dev rows, for `finsent train --valid`")
    args = ap.parse_args(argv)
    if args.dev_out and args.dev_seed is None:
        ap.error("--dev-out needs --dev-seed")
    if not 0 < args.max_share <= 1:
        ap.error(f"--max-share must be in (0, 1], not {args.max_share}")

    from models.datasets import DataError, read_labelled_csv  # the parser `finsent train` uses

    try:
        data = read_labelled_csv(args.data, LABELS)
    except (DataError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rows = [(t, LABELS[y]) for t, y in zip(data.texts, data.labels, strict=True)]
    dev: list[tuple[str, str]] = []
    if args.dev_seed is not None:
        train_idx, dev_idx = _dev_split(len(rows), args.dev_seed)
        rows, dev = [rows[i] for i in train_idx], [rows[i] for i in dev_idx]
    names = read_company_names(args.companies) if args.companies else None
    exclude_files = [] if args.no_exclude else (args.exclude or [p for p in (CHECKLIST,) if p.is_file()])
    held_out = [t for path in exclude_files for t in read_texts(path)]
    generated, dropped = _augment(rows, args.seed, args.max_share, names, NearDuplicates(held_out))

    _write(args.out, ((t, y) for t, y, _ in generated))
    if args.train_out:
        _write(args.train_out, [*rows, *((t, y) for t, y, _ in generated)])
    if args.dev_out:
        _write(args.dev_out, dev)
    counts = Counter((how.split(":")[0], y) for _, y, how in generated)
    print(f"{len(generated)} generated rows from {len(rows)} training rows "
          f"({100 * len(generated) / len(rows):.1f}%) -> {args.out}")
    for fam in FAMILY_SHARES:
        per = ", ".join(f"{lab} {counts[(fam, lab)]}" for lab in LABELS)
        print(f"  {fam:9s} {sum(counts[(fam, lab)] for lab in LABELS):5d}: {per}")
    print(f"  {dropped} drawn texts dropped as near-duplicates of {len(held_out)} evaluation texts "
          f"({', '.join(map(str, exclude_files)) or 'none'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
