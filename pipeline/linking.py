"""Ticker linking: which symbols a message is about, and how strongly.

Pure and deterministic (no I/O, no wall clock): ``link(msg) -> list[TickerLink]``, or a
:class:`Linker` holding a company universe and an optional tagger for batches.

Sources, found in the message's normalised ``text`` (the headline or tweet):

* ``feed`` -- the symbols the producer put in ``tickers`` (no span);
* ``cashtag`` -- ``$AAPL``, ``$BRK.B``, ``$tsla`` (upper-cased). ``$115`` and ``$5bn`` are prices,
  not tickers: a cashtag starts with a letter. It must stand alone as a word: ``US$AAPL`` or
  ``$AAPLx1`` are not cashtags, while trailing punctuation is fine (``$AAPL.`` -> ``AAPL``);
* ``exchange`` -- an exchange prefix, ``NASDAQ:AAPL``, ``(NYSE: F)``, ``NYSEARCA:SPY``,
  ``LON:SHEL``, ``EPA:MC``;
* ``name`` -- a company name or bare symbol from the universe (``pipeline.universe``):
  "Apple", "Apple's", "JPMorgan", "AAPL's", "BRK.B", found in one Aho-Corasick pass over the
  case-folded text, at word boundaries, each alias under its case rule (exact / capitalised /
  any case; an all-lowercase word never matches an ambiguous name).

Explicit symbols and feed tickers are reported as the universe's symbol for them: the primary US
listing where one exists (``BF-B`` -> ``BF.B``, ``SHEL.L`` -> ``SHEL``, ``EPA:MC`` -> ``MC.PA``);
symbols the universe does not know are kept as written (``$SPY``).

**Ambiguous names** (the alias is also an ordinary word, name or place: "Apple", "Target",
"Gap", "Ford", "Amazon"; see ``pipeline/data/common_words.txt``) count only with evidence:

1. *corroboration* -- the same company is linked in this message by other evidence (a cashtag,
   an exchange prefix, a feed ticker, an unambiguous alias or bare symbol): "Ford (NYSE: F)";
2. with a *tagger* (``org_spans(texts) -> [[(start, end, confidence)]]``, character spans of
   ORG entities): the tagger marks *this name* as an ORG entity with confidence >=
   ``org_threshold`` -- an entity that is a longer name ("Ford Foundation", "Harrison Ford") is
   another organisation, and a capitalised word glued to the entity in sentence-case text
   ("Hilton Head") means the tagger split a longer name (``_org_confirms``). The link then carries
   the tagger's confidence;
3. ``fallback="cues"`` (default), for the names the tagger did not confirm (all of them without a
   tagger): a context cue -- a market or corporate word right after the name ("Apple shares",
   "Target's earnings", "Ford recalls"), a cue phrase right before it ("shares of Gap", "stake in
   Visa"), its symbol in parentheses ("Apple (AAPL)"), or a list joining it to another accepted
   company ("Apple, Microsoft and Nvidia"). In a text about money or markets (an amount, a
   percentage, a finance word) also a corporate action verb after the name ("Oracle signs"), or
   the name as a proper noun standing on its own in sentence-case text ("costs Delta $500
   million", "Meta's Reality Labs loses $4.5 billion"): ``_used_as_company``; or a price-move
   verb after it, or after the last name of a list ("Unity and Adobe slide"). In any text: a
   capitalised possessive owning a named thing ("Meta's Instagram", ``_owner_of_named_thing``),
   or the name and another proper name before a plural corporate verb ("Oracle and OpenAI
   expand", ``_subject_of_corporate_verb``). The cues are precise but miss much (on the gold
   slice written blind to them: P 0.979, R 0.63); the tagger catches more (``bench/linking.py``);
   ``fallback="none"``: no cues, only corroboration and the tagger.

**Relevance** in (0, 1] says how central the ticker is to the message. Text mentions (explicit
and names) rank the distinct symbols by their first mention: the first is the subject. For a
symbol of rank ``r`` with ``m`` mentions::

    relevance = min(1, w * rank_relevance(r) + MENTION_BONUS * (m - 1))
    rank_relevance(r) = max(MIN_RELEVANCE, 1 - RELEVANCE_STEP * r)     # 1.0, 0.8, 0.6, 0.4, 0.4...
    w = 1.0 if any mention is explicit (cashtag / exchange) else NAME_WEIGHT (0.9)

Feed tickers are ranked by their list position the same way (w = 1, m = 1). A symbol found
several ways keeps its most relevant link (ties prefer a link with a span); the text link of a
symbol reports its first explicit mention if it has one, else its first name mention. A message
keeps at most :data:`MAX_LINKS` links, the most relevant (ties: first mentioned).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import ahocorasick

from pipeline.schemas import InputMessage, TickerLink
from pipeline.universe import Alias, Universe, fold, load_universe

__all__ = [
    "EXCHANGES",
    "MAX_LINKS",
    "MENTION_BONUS",
    "MIN_RELEVANCE",
    "NAME_WEIGHT",
    "ORG_THRESHOLD",
    "RELEVANCE_STEP",
    "Linker",
    "Mention",
    "NameMatcher",
    "OrgSpans",
    "default_linker",
    "find_mentions",
    "link",
    "rank_relevance",
]

#: Relevance lost per rank step, and the floor: the 4th and later tickers all weigh 0.4.
RELEVANCE_STEP: Final[float] = 0.2
MIN_RELEVANCE: Final[float] = 0.4
#: Weight of a symbol mentioned only by name (vs explicitly), and the bonus per extra mention.
NAME_WEIGHT: Final[float] = 0.9
MENTION_BONUS: Final[float] = 0.1
#: Minimum tagger confidence for an ORG span to confirm an ambiguous name. Chosen on the gold
#: set's development slice (0.5 / 0.7 / 0.8: 18 / 15 / 13 false links, the same recall).
ORG_THRESHOLD: Final[float] = 0.8
#: Most links per message, the most relevant kept. Every link becomes a ticker state, a score
#: record and a Redis write; without a cap one tweet of 10,000 made-up cashtags ($AAAA $AAAB
#: ...) linked 3,334 tickers (its text is cut at 20,000 characters) and created them all.
MAX_LINKS: Final[int] = 50

#: Exchange prefixes recognised in ``EXCHANGE:SYMBOL`` (upper case, as written in news wires).
EXCHANGES: Final[tuple[str, ...]] = (
    "NASDAQ", "NASDAQGS", "NASDAQGM", "NASDAQCM", "NYSE", "NYSEARCA", "NYSEAMERICAN", "NYSEMKT",
    "AMEX", "ARCA", "BATS", "CBOE", "OTC", "OTCMKTS", "OTCQX", "OTCQB", "TSX", "TSXV", "LSE",
    "XETRA", "ASX", "HKEX", "TSE",
    "LON", "ETR", "FRA", "EPA", "AMS", "BME", "SWX", "VTX", "STO", "HEL", "EBR", "BIT",
)  # fmt: skip
# European prefixes -> the Yahoo suffix of that market's symbols in the universe (EPA:MC = MC.PA).
_EXCHANGE_SUFFIX: Final[dict[str, str]] = {
    "LSE": ".L", "LON": ".L", "XETRA": ".DE", "ETR": ".DE", "FRA": ".DE", "EPA": ".PA",
    "AMS": ".AS", "BME": ".MC", "SWX": ".SW", "VTX": ".SW", "STO": ".ST", "HEL": ".HE",
    "EBR": ".BR", "BIT": ".MI",
}  # fmt: skip

# A symbol body: 1-6 letters, optional share class (.B / -B). A class suffix must be letters, so
# the full stop in "$AAPL." ends the sentence instead of starting a suffix.
_BODY = r"[A-Z]{1,6}(?:[.\-][A-Z]{1,2})?"
# Cashtag: not glued to a preceding word or '$' ("US$", "$$"), either all upper or all lower
# case ("$Apple" is a word, not a ticker), and not followed by a word character ("$AAPL2").
_CASHTAG: Final[re.Pattern[str]] = re.compile(
    rf"(?<![\w$])\$({_BODY}|{_BODY.replace('A-Z', 'a-z')})(?![\w$])", re.ASCII
)
_EXCHANGE: Final[re.Pattern[str]] = re.compile(
    rf"(?<![\w:])({'|'.join(sorted(EXCHANGES, key=len, reverse=True))})\s?:\s?({_BODY})(?![\w$])",
    re.ASCII,
)

OrgSpans = Callable[[list[str]], list[list[tuple[int, int, float]]]]
"""The tagger interface: for each text, character spans ``(start, end, confidence)`` of ORG
entities (``models.tagger.TokenTagger.org_spans`` has this shape)."""

Fallback = Literal["cues", "none"]


def rank_relevance(rank: int) -> float:
    """Relevance of the ``rank``-th (0-based) distinct ticker of a message."""
    return max(MIN_RELEVANCE, 1.0 - RELEVANCE_STEP * rank)


def _exchange_mentions(text: str) -> list[tuple[str, tuple[int, int], str, str]]:
    return [(m.group(2), m.span(), "exchange", m.group(1)) for m in _EXCHANGE.finditer(text)]


def find_mentions(text: str) -> list[tuple[str, tuple[int, int], str]]:
    """Explicit ticker mentions in ``text``: ``(SYMBOL, (start, end), method)`` in text order.

    The span covers the whole mention (``$AAPL``, ``NASDAQ:AAPL``) in ``text``'s characters.
    Symbols are as written (upper-cased); :class:`Linker` maps them through its universe.
    """
    found = [(m.group(1).upper(), m.span(), "cashtag") for m in _CASHTAG.finditer(text)]
    found += [(s, span, method) for s, span, method, _ in _exchange_mentions(text)]
    found.sort(key=lambda f: f[1])
    return found


# --------------------------------------------------------------------------------------------
# Name candidates: one Aho-Corasick pass


class NameMatcher:
    """Every alias of a universe in one Aho-Corasick automaton over case-folded text.

    :meth:`find` returns non-overlapping alias matches (longest first, then leftmost) that sit
    at word boundaries and satisfy their alias's case rule. Build once, share freely (read-only).
    """

    def __init__(self, universe: Universe) -> None:
        self.universe = universe
        by_key: dict[str, list[Alias]] = {}
        for a in universe.aliases:
            by_key.setdefault(fold(a.text), []).append(a)
        self._automaton = ahocorasick.Automaton()
        for key, aliases in by_key.items():
            # non-ambiguous first: when two forms of one key both pass the case check (Meta /
            # META), the clearer evidence wins
            self._automaton.add_word(key, (len(key), tuple(sorted(aliases, key=lambda a: a.ambiguous))))
        self._automaton.make_automaton()

    def find(self, text: str) -> list[tuple[int, int, Alias]]:
        """``(start, end, alias)`` matches in text order."""
        folded = fold(text)
        plain = None  # text with curly quotes / dashes made ASCII (same length), made on demand
        n = len(text)
        found: list[tuple[int, int, Alias]] = []
        for last, (length, aliases) in self._automaton.iter(folded):
            start, end = last - length + 1, last + 1
            if start > 0:
                before = folded[start - 1]
                if before.isalnum() or before in "$_":
                    continue
            if end < n and (folded[end].isalnum() or folded[end] == "_"):
                continue
            if plain is None:
                plain = text.translate(_ASCII_PUNCT)
            surface = plain[start:end]
            for a in aliases:
                if _case_ok(a, surface):
                    found.append((start, end, a))
                    break
        if len(found) > 1:
            found = _longest_non_overlapping(found)
        return found


_ASCII_PUNCT: Final[dict[int, str]] = {
    ord("\u2019"): "'", ord("\u2018"): "'", ord("\u2013"): "-", ord("\u2014"): "-", ord("\u2010"): "-",
}  # fmt: skip


def _case_ok(alias: Alias, surface: str) -> bool:
    if alias.case == "any":
        return True
    if alias.case == "exact":
        return surface == alias.text
    # title: every capitalised word of the alias is capitalised in the text (or all caps)
    t = alias.text
    if len(t) != len(surface):
        return False
    for i, c in enumerate(t):
        if c.isupper() and (i == 0 or not t[i - 1].isalpha()) and not surface[i].isupper():
            return False
    return True


def _longest_non_overlapping(found: list[tuple[int, int, Alias]]) -> list[tuple[int, int, Alias]]:
    taken: list[tuple[int, int, Alias]] = []
    for m in sorted(found, key=lambda m: (m[0] - m[1], m[0])):
        if all(m[1] <= s or m[0] >= e for s, e, _ in taken):
            taken.append(m)
    taken.sort(key=lambda m: m[0])
    return taken


# --------------------------------------------------------------------------------------------
# Context cues for ambiguous names when no tagger is configured

# A word right after the name (after an optional possessive) that makes it a company.
_CUE_AFTER: Final[frozenset[str]] = frozenset(
    ["shares", "share", "stock", "stocks", "equity", "earnings", "revenue", "revenues", "sales", "profit", "profits", "guidance", "outlook", "forecast", "ceo", "cfo", "coo", "chief", "chairman", "executives", "executive", "investors", "shareholders", "board", "results", "quarter", "quarterly", "q1", "q2", "q3", "q4", "fy", "dividend", "dividends", "buyback", "ipo", "valuation", "stake", "deal", "merger", "acquisition", "layoffs", "employees", "workers", "analysts", "inc", "corp", "co", "plc", "ag", "se", "ltd", "llc", "beats", "beat", "misses", "missed", "reports", "reported", "posts", "posted", "raises", "raised", "cuts", "slashes", "lifts", "tops", "sees", "expects", "warns", "plans", "announces", "announced", "unveils", "unveiled", "launches", "launched", "says", "said", "sues", "sued", "acquires", "acquired", "buys", "bought", "sells", "sold", "agrees", "agreed", "confirms", "recalls", "hires", "names", "appoints", "invests", "rallies", "rally", "jumps", "jumped", "surges", "surged", "soars", "soared", "gains", "gained", "rises", "rose", "climbs", "climbed", "falls", "fell", "drops", "dropped", "slides", "slid", "slips", "slipped", "sinks", "sank", "tumbles", "tumbled", "plunges", "plunged", "slumps", "slumped", "dips", "dipped", "rebounds", "tanks", "tanked", "downgraded", "upgraded", "downgrade", "upgrade", "opens", "closes", "stores", "store", "hits", "forecasts", "bank", "insurance", "airlines", "motors", "motor", "pharma", "holdings"]
)
# "Apple to invest", "Chevron to buy": a corporate action verb after "to".
_CUE_TO_VERB: Final[frozenset[str]] = frozenset(
    ["buy", "acquire", "sell", "cut", "invest", "hire", "spin", "close", "open", "launch", "raise", "build", "merge", "list", "delist", "split", "pay", "return", "exit", "enter", "expand", "shut", "lay", "slash", "boost", "move", "report", "sue", "settle", "stop", "pause", "resume", "restructure", "divest"]
)
# Capitalised words that do not start a person's name; any other capitalised word right before an
# ambiguous name in sentence-case text ("Harrison Ford", "Governor Cooper", "Fed's Williams")
# voids the cues: a name there is likely part of a longer proper name, a job for the tagger.
_NOT_NAMES: Final[frozenset[str]] = frozenset(
    ["the", "a", "an", "why", "how", "when", "what", "where", "who", "which", "as", "after", "before", "while", "if", "and", "but", "so", "at", "in", "on", "for", "with", "from", "by", "to", "of", "is", "are", "was", "will", "can", "does", "did", "has", "have", "should", "could", "would", "this", "that", "these", "those", "new", "big", "top", "all", "shares", "stock"]
)
# One or two words right before the name.
_CUE_BEFORE: Final[frozenset[str]] = frozenset(
    ["rival", "rivals", "vs", "vs.", "versus", "buy", "sell", "short", "long", "owning", "shares-of", "stock-of", "stake-in", "shareholders-of", "investors-in", "invest-in", "investing-in", "ceo-of", "cfo-of", "bullish-on", "bearish-on", "long-on", "short-on", "acquired-by", "bought-by", "upgrades", "downgrades", "upgraded", "downgraded", "upgrade", "downgrade"]
)
# What may separate two company names in a list.
_LIST_GAPS: Final[frozenset[str]] = frozenset(
    {",", "and", ", and", "&", "vs", "vs.", "versus", "or", "/", "+", ">", "<", ";"}
)
_WORD_AFTER = re.compile(r"(?:'s|')?\s+\(?([a-z0-9&]+)")
_MOVE_AFTER = re.compile(r"(?:'s)?\s+(?:up|down|[+-])\s?\d")  # "META up 3%", "Visa -2%"
_TO_VERB = re.compile(r"(?:'s)?\s+to\s+([a-z]+)")
_PARTICLE = re.compile(r"van|von|de|da|di|del|della|der|den|du|le|la|bin|[a-z]+[A-Z][a-z]+")  # in a name
_PREV_WORD = re.compile(r"([^\W\d_][\w.'&-]*)\s+$")
_LONG_WORD = re.compile(r"[^\W\d_]{4,}")
_NEXT_WORD = re.compile(r" ([A-Z][a-z][\w'&-]*)")  # a Capitalised word glued to the name ("CEO" is not)
_EXTRA_WORD = re.compile(r"[^\W_][\w.&/]*")
# What an ORG entity may hold beyond the name it confirms: possessives and legal suffixes.
_ENTITY_EXTRAS: Final[frozenset[str]] = frozenset(
    ["s", "inc", "inc.", "corp", "corp.", "co", "co.", "corporation", "company", "plc", "ag", "se", "sa", "nv", "ltd", "ltd.", "llc", "holdings", "group"]
)
_WORDS_BEFORE = re.compile(r"(?:([a-z.]+)\s+)?([a-z.]+)\s+$")
# Words that make a text about markets or a business. Without one, a bare capitalised name is
# settled only by the narrow cues above ("Williams wins Wimbledon title", "Duke beats North
# Carolina 82-70" are not about Williams Companies or Duke Energy).
_FINANCE_WORDS: Final[frozenset[str]] = frozenset(
    ["shares", "share", "stock", "stocks", "equity", "equities", "earnings", "revenue", "revenues", "sales", "profit", "profits", "loss", "losses", "margin", "margins", "guidance", "outlook", "forecast", "forecasts", "dividend", "dividends", "buyback", "buybacks", "ipo", "valuation", "stake", "deal", "deals", "merger", "mergers", "acquisition", "acquisitions", "takeover", "bid", "investors", "investor", "shareholders", "analysts", "analyst", "quarter", "quarterly", "q1", "q2", "q3", "q4", "fiscal", "results", "orders", "bookings", "customers", "subscribers", "users", "contract", "contracts", "lease", "layoffs", "jobs", "capex", "debt", "bonds", "loan", "loans", "lender", "rating", "upgrade", "upgraded", "downgrade", "downgraded", "upside", "downside", "billion", "million", "bn", "mln", "percent", "pct", "market", "markets", "payments", "assets", "unit", "business", "ceo", "cfo", "executives", "premiums", "fees", "demand", "sector", "industry", "rivals", "competitors", "supplier", "suppliers", "price", "prices", "pricing", "comps", "eps", "ebitda", "yield", "estimates", "wall", "nasdaq", "nyse", "s&p", "fda", "selloff", "sell-off", "rally", "insurance", "insurer", "insurers", "airline", "airlines", "production", "deliveries", "stores"]
)
_MONEY = re.compile(r"[$€£]\s?\d|\d\s?%|\d(?:\.\d+)?\s?(?:bn|b|m|mln|k)\b")
# A corporate action in the present tense: "Oracle signs", "Delta cancels". (Movement verbs that
# also describe gaps, prices and spreads -- "widens", "narrows" -- are left out on purpose.)
_ACTION_VERBS: Final[tuple[str, ...]] = (
    "add", "agree", "announce", "appoint", "approve", "back", "bet", "bid", "book", "boost", "build",
    "buy", "cancel", "close", "commit", "complete", "confirm", "consider", "cut", "debut",
    "delay", "deliver", "deny", "develop", "drop", "ditch", "eliminate", "end", "expand", "explore",
    "extend", "eye", "file", "fire", "freeze", "halt", "hike", "hire", "host", "ink", "introduce", "invest",
    "join", "keep", "kick", "launch", "lay", "lead", "lift", "lose", "lower", "mull", "offer",
    "open", "order", "outline", "partner", "pause", "pay", "phase", "pick", "pitch", "pledge",
    "plan", "poach", "post", "prepare", "pull", "push", "raise", "rebrand", "record",
    "reduce", "rejoin", "release", "relocate", "reopen", "replace", "report", "resume", "retire",
    "roll", "scrap", "secure", "seek", "sell", "settle", "ship", "shut", "sign", "slash", "snap",
    "spend", "start", "strike", "suspend", "take", "team", "test", "trim", "unveil", "upgrade",
    "warn", "weigh", "win", "withdraw",
)


def _third_person(verb: str) -> str:
    if verb.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if verb.endswith("y") and verb[-2:-1] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


# A price move: "Adobe slides", "Persimmon jumps 7%" (only in a text about money or markets).
_MOVE_VERBS: Final[tuple[str, ...]] = (
    "climb", "dip", "drop", "fall", "gain", "jump", "plunge", "rally", "rebound", "rise", "sink", "slide",
    "slip", "slump", "soar", "surge", "tumble",
)
_VERB_AFTER_ONE: Final[frozenset[str]] = frozenset(_third_person(v) for v in (*_ACTION_VERBS, *_MOVE_VERBS))
# After two or more names ("Oracle and OpenAI expand", "Unity and Adobe slide"): the plural form.
_VERB_AFTER_MANY: Final[frozenset[str]] = frozenset((*_ACTION_VERBS, *_MOVE_VERBS))
# A possessive before a named thing: "Meta's Instagram", "Ford's F-150".
_OWNED = re.compile(r"(?:'s|’s)\s+(?:[A-Z]|\d)")
# "Oracle and OpenAI expand ...", "GM and Hyundai to co-develop ...": a name, "and" another
# proper name, then a plural corporate verb or "to" + one.
_AND_NAME_VERB = re.compile(r"(?:'s)?\s+(?:and|&)\s+[A-Z][\w.&'-]*(?:\s+[A-Z][\w.&'-]*)?\s+(?:to\s+)?(?:co-)?([a-z]+)\b")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;\"“]\s*)$")
# ", <US state>" after a name makes it a town ("Corning, New York"; "Hartford, Connecticut").
_US_STATES: Final[tuple[str, ...]] = (
    "Alabama", "Alaska", "Arizona", "Arkansas", "California", "Colorado", "Connecticut", "Delaware",
    "Florida", "Georgia", "Hawaii", "Idaho", "Illinois", "Indiana", "Iowa", "Kansas", "Kentucky",
    "Louisiana", "Maine", "Maryland", "Massachusetts", "Michigan", "Minnesota", "Mississippi",
    "Missouri", "Montana", "Nebraska", "Nevada", "New Hampshire", "New Jersey", "New Mexico",
    "New York", "North Carolina", "North Dakota", "Ohio", "Oklahoma", "Oregon", "Pennsylvania",
    "Rhode Island", "South Carolina", "South Dakota", "Tennessee", "Texas", "Utah", "Vermont",
    "Virginia", "Washington", "West Virginia", "Wisconsin", "Wyoming",
)
_PLACE_AFTER = re.compile(r",\s+(?:" + "|".join(_US_STATES) + r")\b(?!\s+[A-Z])")  # not "Texas Instruments"
_PAREN_SYMBOL = re.compile(r"(?:'s)?\s*\((?:[A-Za-z]+\s?:\s?)?\$?([A-Z][A-Z0-9]{0,5}(?:[.\-][A-Z])?)\)")


# --------------------------------------------------------------------------------------------
# The linker


@dataclass(frozen=True, slots=True)
class Mention:
    """One accepted mention of a symbol in a text.

    Fields:
        symbol: reported symbol.
        span: ``(start, end)`` in the text.
        method: ``cashtag`` | ``exchange`` | ``name``.
        evidence: ``explicit`` | ``name`` (unambiguous alias) | ``corroborated`` | ``tagger`` | ``cue``.
        confidence: the tagger's ORG confidence when the tagger decided, else None.
    """

    symbol: str
    span: tuple[int, int]
    method: str
    evidence: str
    confidence: float | None = None


@dataclass(slots=True)
class _Pending:
    start: int
    end: int
    alias: Alias
    accepted: str | None = None  # evidence once accepted
    confidence: float | None = None


class Linker:
    """Links messages to tickers with a company universe and, optionally, an ORG tagger.

    Args:
        universe: the companies (default: :func:`pipeline.universe.load_universe`).
        tagger: ``org_spans(texts)`` (see :data:`OrgSpans`), or None.
        fallback: how ambiguous names the tagger did not confirm (all, without a tagger) are
            settled: ``cues`` | ``none``.
        org_threshold: minimum ORG confidence that confirms an ambiguous name.

    Thread-safe for reads (no mutable state after construction, the tagger aside).
    """

    def __init__(
        self,
        universe: Universe | None = None,
        tagger: OrgSpans | None = None,
        *,
        fallback: Fallback = "cues",
        org_threshold: float = ORG_THRESHOLD,
    ) -> None:
        if fallback not in ("cues", "none"):
            raise ValueError(f"fallback must be 'cues' or 'none', not {fallback!r}")
        self.universe = universe if universe is not None else load_universe()
        self.matcher = NameMatcher(self.universe)
        self.tagger = tagger
        self.fallback = fallback
        self.org_threshold = org_threshold

    # ------------------------------------------------------------------ public API
    def link(self, msg: InputMessage) -> list[TickerLink]:
        """Link one message: one :class:`TickerLink` per symbol, most relevant first."""
        return self.link_many([msg])[0]

    def link_text(self, text: str, tickers: Sequence[str] = ()) -> list[TickerLink]:
        """:meth:`link` for a bare text (and optional feed tickers)."""
        return self._link_batch([(text, tuple(tickers))])[0]

    def link_many(self, msgs: Sequence[InputMessage]) -> list[list[TickerLink]]:
        """Link a batch; the tagger (if any) runs once, on the texts that need it."""
        return self._link_batch([(m.text, m.tickers) for m in msgs])

    def link_texts(self, texts: Sequence[str]) -> list[list[TickerLink]]:
        """:meth:`link_many` for bare texts."""
        return self._link_batch([(t, ()) for t in texts])

    def mentions(self, text: str, tickers: Sequence[str] = ()) -> list[Mention]:
        """Every accepted mention in ``text`` in text order (what :meth:`link_text` aggregates)."""
        return self._mentions_batch([(text, tuple(tickers))])[0]

    def resolve(self, symbol: str, exchange: str | None = None) -> str:
        """The symbol to report for an explicit mention (see the module docstring)."""
        suffix = _EXCHANGE_SUFFIX.get(exchange or "")
        if suffix:
            c = self.universe.company(symbol + suffix)
            if c is not None:
                return c.symbol
        return self.universe.resolve(symbol)

    # ------------------------------------------------------------------ internals
    def _link_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[TickerLink]]:
        return [
            _aggregate(ments, [self.resolve(t) for t in tickers])
            for ments, (_, tickers) in zip(self._mentions_batch(items), items)
        ]

    def _mentions_batch(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[Mention]]:
        explicit_all: list[list[Mention]] = []
        pending_all: list[list[_Pending]] = []
        need_tagger: list[int] = []
        for i, (text, tickers) in enumerate(items):
            explicit = self._explicit(text)
            pending = self._names(text, explicit)
            known = {m.symbol for m in explicit} | {self.resolve(t) for t in tickers}
            known |= {p.alias.symbol for p in pending if not p.alias.ambiguous}
            for p in pending:
                if not p.alias.ambiguous:
                    p.accepted = "name"
                elif p.alias.symbol in known:
                    p.accepted = "corroborated"
            # "Dover, Delaware, approves a bond issue": a place, whatever the tagger or cues say
            pending = [p for p in pending if p.accepted is not None or not _PLACE_AFTER.match(text, p.end)]
            if any(p.accepted is None for p in pending):
                need_tagger.append(i)
            explicit_all.append(explicit)
            pending_all.append(pending)

        if self.tagger is not None and need_tagger:
            spans = self.tagger([items[i][0] for i in need_tagger])
            if len(spans) != len(need_tagger):
                raise ValueError(f"tagger returned {len(spans)} results for {len(need_tagger)} texts")
            for i, orgs in zip(need_tagger, spans):
                text = items[i][0]
                for p in pending_all[i]:
                    if p.accepted is None:
                        conf = _org_confirms(text, p, orgs)
                        if conf is not None and conf >= self.org_threshold:
                            p.accepted, p.confidence = "tagger", conf
        if self.fallback == "cues":  # what the tagger did not confirm (or everything, without one)
            for i in need_tagger:
                _apply_cues(items[i][0], pending_all[i], self.universe)

        out: list[list[Mention]] = []
        for explicit, pending in zip(explicit_all, pending_all):
            ments = list(explicit)
            for p in pending:
                if p.accepted is not None:
                    ments.append(Mention(p.alias.symbol, (p.start, p.end), "name", p.accepted, p.confidence))
            ments.sort(key=lambda m: m.span)
            out.append(ments)
        return out

    def _explicit(self, text: str) -> list[Mention]:
        found = [
            Mention(self.resolve(m.group(1).upper()), m.span(), "cashtag", "explicit")
            for m in _CASHTAG.finditer(text)
        ]
        found += [
            Mention(self.resolve(sym, exch), span, "exchange", "explicit")
            for sym, span, _, exch in _exchange_mentions(text)
        ]
        return found

    def _names(self, text: str, explicit: list[Mention]) -> list[_Pending]:
        out = []
        for start, end, alias in self.matcher.find(text):
            if any(start < m.span[1] and end > m.span[0] for m in explicit):
                continue  # inside "$AAPL" / "NASDAQ:AAPL": the explicit mention has it
            out.append(_Pending(start, end, alias))
        return out


def _org_confirms(text: str, p: _Pending, orgs: Sequence[tuple[int, int, float]]) -> float | None:
    """The confidence of the tagger's ORG entity that *is* the name at ``p``, or None.

    An ORG entity that only overlaps the name is a different organisation: "Ford Foundation",
    "Duke University", "Target Field" are organisations, not Ford, Duke Energy or Target. So the
    entity may extend the name only by a possessive, a legal suffix or punctuation ("Target
    Corp.", "Apple's"). And where a capitalised word is glued to the entity in sentence-case text
    ("Hilton Head", "Chase Elliott", "Fed's Williams"), the name is likely part of a longer proper
    name the tagger split: not confirmed.
    """
    best: tuple[float, int, int] | None = None
    for s, e, conf in orgs:
        if s >= p.end or e <= p.start:
            continue
        extra = f"{text[s : p.start] if s < p.start else ''} {text[p.end : e] if e > p.end else ''}"
        if all(w in _ENTITY_EXTRAS for w in _EXTRA_WORD.findall(fold(extra))) and (
            best is None or conf > best[0]
        ):
            best = (conf, min(s, p.start), max(e, p.end))
    if best is None:
        return None
    conf, start, end = best
    if not _title_case(text) and (_name_before(text, start) or _NEXT_WORD.match(text, end)):
        return None
    return float(conf)


def _name_before(text: str, start: int) -> bool:
    """Whether a capitalised word that does not start a sentence's grammar ("The", "Why") comes
    right before ``start``: "Harrison Ford", "Governor Cooper", "Fed's Williams"; or one and a
    surname particle ("Vincent van Gogh", "Neil deGrasse Tyson")."""
    prev = _PREV_WORD.search(text[max(0, start - 40) : start])
    if prev is None:
        return False
    word = prev.group(1)
    if _PARTICLE.fullmatch(word):
        return _name_before(text, start - len(prev.group(0)))
    return word[0].isupper() and fold(word) not in _NOT_NAMES


def _title_case(text: str) -> bool:
    words = _LONG_WORD.findall(text)
    return len(words) >= 3 and sum(w[0].isupper() for w in words) >= 0.7 * len(words)


def _apply_cues(text: str, pending: list[_Pending], universe: Universe) -> None:
    """Accept ambiguous names with a context cue; then spread along company lists."""
    folded = fold(text)
    title_case = _title_case(text)
    finance: bool | None = None  # computed on first need
    for k, p in enumerate(pending):
        if p.accepted is not None:
            continue
        before = _WORDS_BEFORE.search(folded[max(0, p.start - 40) : p.start])
        w1, w2 = (before.group(1), before.group(2)) if before else (None, None)
        cue_before = w2 in _CUE_BEFORE or (w1 is not None and f"{w1}-{w2}" in _CUE_BEFORE)
        if not title_case and not cue_before and _name_before(text, p.start):
            continue  # "Harrison Ford says", "Governor Cooper says": likely a person
        after = _WORD_AFTER.match(folded, p.end)
        to_verb = _TO_VERB.match(folded, p.end)
        if (
            cue_before
            or (after and after.group(1) in _CUE_AFTER)
            or _MOVE_AFTER.match(folded, p.end)
            or (to_verb and (to_verb.group(1) in _CUE_TO_VERB or to_verb.group(1) in _ACTION_VERBS))
        ):
            p.accepted = "cue"
            continue
        paren = _PAREN_SYMBOL.match(text, p.end)
        if paren:
            c = universe.company(paren.group(1))
            if c is not None and c.symbol == p.alias.symbol:
                p.accepted = "cue"
                continue
        if _subject_of_corporate_verb(text, p) or _owner_of_named_thing(text, folded, p, title_case):
            p.accepted = "cue"
            continue
        if finance is None:
            finance = _finance_context(folded)
        if finance and (
            _used_as_company(text, folded, p, title_case, after.group(1) if after else None)
            or _last_of_list_with_verb(folded, pending, k, after.group(1) if after else None)
        ):
            p.accepted = "cue"
    changed = True
    while changed:  # "Apple, Microsoft and Nvidia": a list of companies is a cue for its members
        changed = False
        for a, b in itertools.pairwise(pending):
            if (a.accepted is None) == (b.accepted is None):
                continue
            if _listed(folded, a, b):
                for p in (a, b):
                    if p.accepted is None:
                        p.accepted = "cue"
                        changed = True


def _finance_context(folded: str) -> bool:
    """Whether the text talks money or markets: an amount, a percentage, or a finance word."""
    return bool(_MONEY.search(folded)) or not _FINANCE_WORDS.isdisjoint(_EXTRA_WORD.findall(folded))


def _used_as_company(text: str, folded: str, p: _Pending, title_case: bool, next_word: str | None) -> bool:
    """In a text about money or markets, whether the name at ``p`` reads as a company's name:

    * followed by a corporate action verb ("Oracle signs a $30 billion deal", "Shell weighs sale
      of chemicals assets");
    * in sentence-case text, as a proper noun standing on its own -- capitalised where a plain
      word would not be (mid-sentence: "costs Delta $500 million"), or a possessive opening the
      sentence ("Meta's Reality Labs loses $4.5 billion") -- and not glued to another capitalised
      word ("Delta Dental", "Chase Center": another name) or after "the" ("the Amazon").
    """
    if next_word in _VERB_AFTER_ONE:
        return True
    if title_case or not text[p.start].isupper() or _NEXT_WORD.match(text, p.end):
        return False
    if _SENTENCE_START.search(text[max(0, p.start - 3) : p.start]):
        return folded.startswith("'", p.end) or folded.endswith("'s", p.start, p.end)  # "Domino's same-store sales"
    return not _after_the(folded, p.start)


def _subject_of_corporate_verb(text: str, p: _Pending) -> bool:
    """"Oracle and OpenAI expand ...", "GM and Hyundai to co-develop ...": the name and another
    proper name are the subject of a plural corporate action verb."""
    m = _AND_NAME_VERB.match(text, p.end)
    return m is not None and (m.group(1) in _ACTION_VERBS or m.group(1) in _CUE_TO_VERB)


def _owner_of_named_thing(text: str, folded: str, p: _Pending, title_case: bool) -> bool:
    """In sentence-case text, a capitalised possessive that owns a named thing: a brand, unit or
    product ("Meta's Instagram", "Amazon's Zoox", "Ford's F-150"); not after "the" ("the Amazon's
    Rio Negro")."""
    if title_case or not text[p.start].isupper():
        return False
    owned = _OWNED.match(text, p.end - 2 if text.endswith("'s", p.start, p.end) else p.end)
    return owned is not None and not _after_the(folded, p.start)


def _after_the(folded: str, start: int) -> bool:
    """Whether "the" comes right before ``start`` ("the Amazon": a river, not a company)."""
    prev = _WORDS_BEFORE.search(folded[max(0, start - 40) : start])
    return prev is not None and prev.group(2) == "the"


def _last_of_list_with_verb(folded: str, pending: list[_Pending], k: int, next_word: str | None) -> bool:
    """"Snowflake, Unity and Adobe slide": the last of two or more names joined as a list, with a
    plural corporate or price-move verb after it (the list pass then takes the others)."""
    return k > 0 and next_word in _VERB_AFTER_MANY and _listed(folded, pending[k - 1], pending[k])


def _listed(folded: str, a: _Pending, b: _Pending) -> bool:
    """Whether only a list separator (``_LIST_GAPS``) stands between names ``a`` and ``b``."""
    return " ".join(folded[a.end : b.start].replace("'s", " ").split()) in _LIST_GAPS


def _aggregate(mentions: list[Mention], feed: list[str]) -> list[TickerLink]:
    best: dict[str, TickerLink] = {}

    def offer(candidate: TickerLink) -> None:
        cur = best.get(candidate.symbol)
        if (
            cur is None
            or candidate.relevance > cur.relevance
            or (candidate.relevance == cur.relevance and cur.span is None and candidate.span is not None)
        ):
            best[candidate.symbol] = candidate

    for rank, symbol in enumerate(dict.fromkeys(feed)):
        offer(TickerLink(symbol=symbol, span=None, method="feed", relevance=rank_relevance(rank)))

    by_symbol: dict[str, list[Mention]] = {}
    for m in mentions:  # text order, so dict order is first-mention order (the rank)
        by_symbol.setdefault(m.symbol, []).append(m)
    for rank, (symbol, ms) in enumerate(by_symbol.items()):
        explicit = [m for m in ms if m.method != "name"]
        weight = 1.0 if explicit else NAME_WEIGHT
        relevance = min(1.0, weight * rank_relevance(rank) + MENTION_BONUS * (len(ms) - 1))
        shown = (explicit or ms)[0]
        confs = [m.confidence for m in ms if m.confidence is not None]
        offer(
            TickerLink(
                symbol=symbol,
                span=shown.span,
                method=shown.method,  # type: ignore[arg-type]
                relevance=round(relevance, 4),
                confidence=max(confs) if confs else None,
            )
        )
    # stable: equal relevance keeps first-seen order (feed order, then text order)
    return sorted(best.values(), key=lambda t: -t.relevance)[:MAX_LINKS]


_DEFAULT: Linker | None = None


def default_linker() -> Linker:
    """The process-wide linker :func:`link` uses: default universe, no tagger (built lazily)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Linker()
    return _DEFAULT


def link(msg: InputMessage) -> list[TickerLink]:
    """Link ``msg`` to tickers: one :class:`TickerLink` per symbol, most relevant first.

    Uses :func:`default_linker` (no tagger; ambiguous names need a cue). A worker with a tagger
    builds its own :class:`Linker` and calls :meth:`Linker.link_many` per micro-batch.
    """
    return default_linker().link(msg)
