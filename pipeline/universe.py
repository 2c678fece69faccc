"""The company universe: which companies exist, their primary symbol, and the names they go by.

Pure data, no I/O after construction. :func:`load_universe` builds a :class:`Universe` from

1. **pytickersymbols** (offline package data) for the major US and European indices
   (:data:`DEFAULT_INDICES`), with a few corrections of its data (:data:`_FIXES`);
2. ``pipeline/data/companies_extra.csv``: curated short names ("Google" -> GOOGL, "JPMorgan",
   "Chase") and a few often-traded companies outside those indices (Gap, Snap, Toyota, ...);
3. an optional **user CSV** in the same format, applied last.

CSV format (UTF-8, header optional, ``#`` starts a comment line)::

    symbol,name,aliases
    GOOGL,,Google|Alphabet Inc
    GAP,Gap Inc.,Gap|The Gap|Old Navy
    META,,-Meta

A row for a new symbol adds a company. A row for a known symbol (primary or any other listing)
extends it: a non-empty name replaces the company's name (the new name's generated aliases are
added), listed aliases are added, ``-alias`` removes one. An alias named in a CSV row is taken
away from every other company: the CSV overrides.

**Symbols**: the primary US listing (NYSE / NASDAQ) where one exists, share classes written with a
dot (``BRK.B``); otherwise the home listing's Yahoo symbol (``SIE.DE``, ``MC.PA``). OTC ADRs do not
count as a listing. Other listings (``GOOG``, ``ASML.AS``, ``SHEL.L``) are kept in
``Company.symbols`` so explicit mentions of them resolve to the company.

**Aliases** (:func:`generate_aliases`): the name without parenthetical remarks and a leading
"The", legal suffixes stripped (Inc., Corp., plc, AG, Ltd, Co., Holdings, Group, ...), a
descriptor stripped ("Marriott International" -> "Marriott"), accent-free, ``&``/``and``,
hyphen/space and dotted-initial variants. A shortened name is weaker than a full one: when two
companies generate the same alias, the one for which it is the name itself wins ("Siemens"
over "Siemens Energy" minus its descriptor), and a tie drops it from both ("Merck"). Possessives ("Apple's") are handled at match time,
not as aliases. Bare ticker symbols of 3+ characters that are not words (``AAPL``, ``BRK.B``) are
aliases too, matched upper-case only.

**Ambiguity** (one rule): an alias is *ambiguous* when its case-folded form is listed in
``pipeline/data/common_words.txt``: ordinary English words, first names and surnames, places,
rivers and common phrases that are also company names (Apple, Target, Gap, Ford, Amazon, Best
Buy). Ambiguous names need evidence before they count (the tagger, see ``pipeline.linking``).
Lines starting with ``!`` in that file are *never* aliases on their own ("General", "United":
too common even for a tagger to settle); such aliases are dropped, the longer names stay.

**Case** (:attr:`Alias.case`): an alias without lower-case letters (``AMD``, ``ASML``, bare
symbols) matches only as written (``exact``); an ambiguous alias, a ``~`` entry of the word list
("Intel", "Google"), a multi-word alias ("Waste Management", "Bank of America") or one of three
letters or fewer must be capitalised (``title``: every capitalised word of the alias starts
upper-case in the text, so all-lowercase text never matches it); any other alias ("Nvidia",
"JPMorgan") matches in any case (``any``).
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Final, Literal

__all__ = [
    "DEFAULT_INDICES",
    "Alias",
    "CaseRule",
    "Company",
    "Universe",
    "fold",
    "generate_aliases",
    "load_universe",
    "load_word_list",
    "read_company_csv",
]

DATA_DIR: Final[Path] = Path(__file__).with_name("data")
EXTRA_CSV: Final[Path] = DATA_DIR / "companies_extra.csv"
WORDS_FILE: Final[Path] = DATA_DIR / "common_words.txt"

#: pytickersymbols indices loaded by default (US large caps, then Europe's main indices).
DEFAULT_INDICES: Final[tuple[str, ...]] = (
    "S&P 500", "S&P 100", "NASDAQ 100", "DOW JONES",
    "DAX", "FTSE 100", "CAC_40", "EURO STOXX 50", "AEX", "IBEX 35", "Switzerland 20", "BEL 20",
    "OMX Stockholm 30", "OMX Helsinki 25",
)  # fmt: skip
_US_INDICES: Final[frozenset[str]] = frozenset({"S&P 500", "S&P 100", "NASDAQ 100", "DOW JONES", "S&P 600"})

CaseRule = Literal["exact", "title", "any"]

# Corrections to the pytickersymbols data: name -> (primary symbol, better name or None). Stale US
# listings (Siemens' delisted NYSE:SI), a wrong or corrupt symbol, names that belong to another
# company (its "STABILUS SE" row is STMicroelectronics, "SES S.A." is Smiths Group), multi-class
# companies whose primary class must be chosen.
_FIXES: Final[dict[str, tuple[str, str | None]]] = {
    "Alphabet Inc.": ("GOOGL", None),
    "Fox Corporation": ("FOXA", None),
    "News Corp": ("NWSA", None),
    "Arthur J. Gallagher & Co.": ("AJG", None),
    "Airbus": ("AIR.PA", None),
    "Siemens": ("SIE.DE", None),
    "TotalEnergies": ("TTE", None),
    "Unilever": ("UL", None),
    "ING Group": ("ING", None),
    "Volkswagen Group": ("VOW3.DE", None),
    "STABILUS SE": ("STM", "STMicroelectronics"),
    "SES S.A.": ("SMIN.L", "Smiths Group"),
    "Apollo Commercial Real Estate Finance": ("APO", "Apollo Global Management"),
    "Orion Corporation (pharmaceutical company)": ("ORNBV.HE", "Orion Corporation"),
    "Segro": ("SGRO.L", None),
    "Ferrari": ("RACE", None),
    "NatWest Group": ("NWG", None),
    "HeidelbergCement": ("HEI.DE", "Heidelberg Materials"),
    "EBay": ("EBAY", "eBay"),
    "IndustrivärdenC": ("INDU-C.ST", "Industrivärden"),
    "KalmarB": ("KALMAR.HE", "Kalmar"),
    "LifcoB": ("LIFCO-B.ST", "Lifco"),
}

# Legal-form suffixes: stripped repeatedly from the end of a name ("Tesla, Inc." -> "Tesla").
_LEGAL: Final[tuple[str, ...]] = (
    "incorporated", "inc", "corporation", "corp", "company", "co", "companies", "plc", "ag", "se",
    "sa", "s.a", "nv", "n.v", "ab", "ltd", "limited", "llc", "l.p", "lp", "holdings", "holding",
    "group", "kgaa", "spa", "s.p.a", "oyj", "asa", "a/s", "& co", "and co",
)  # fmt: skip
# Descriptors: stripped once, when a distinctive name remains ("Marriott International").
_DESCRIPTORS: Final[tuple[str, ...]] = (
    "international", "technologies", "technology", "industries", "worldwide", "entertainment",
    "resorts", "systems", "solutions", "pharmaceuticals", "laboratories", "brands", "foods",
    "financial", "sciences", "scientific", "enterprise", "enterprises", "platforms", "networks",
    "healthcare", "health", "energy", "semiconductors", "communications", "interactive",
    "airlines", "air lines", "motor", "motors", "bank", "banking", "insurance", "properties",
    "realty", "materials", "petroleum", "aerospace", "electric", "instruments", "software",
    "payments", "services", "markets", "management", "global", "partners", "mobility",
)  # fmt: skip

_PAREN = re.compile(r"\s*\([^)]*\)")
_SPACES = re.compile(r"\s+")
_GLUED_CLASS = re.compile(r"(?<=[a-zäöüåé])[A-C]$")  # "IndustrivärdenC" -> "Industrivärden"
# bare symbols usable as aliases: 3+ characters, or any class share (BF.B)
_SYMBOL_ALIAS = re.compile(r"[A-Z][A-Z0-9]{2,5}(?:\.[A-E])?|[A-Z][A-Z0-9]{0,5}\.[A-E]")

# Characters folded to ASCII look-alikes before matching; each keeps the text's length.
_CHAR_FOLD: Final[dict[int, str]] = {
    ord("\u2019"): "'", ord("\u2018"): "'", ord("\u02bc"): "'", ord("\u2032"): "'",
    ord("\u2010"): "-", ord("\u2011"): "-", ord("\u2012"): "-", ord("\u2013"): "-", ord("\u2014"): "-",
    ord("\u00a0"): " ",
}  # fmt: skip


def fold(text: str) -> str:
    """Case-fold for matching, keeping length: lower-case, curly quotes and dashes to ASCII.

    ``str.lower`` changes the length of a few characters (``"İ"``); those are left as they are,
    so offsets into the folded text are offsets into ``text``.
    """
    t = text.translate(_CHAR_FOLD)
    low = t.lower()
    if len(low) == len(t):
        return low
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in t)


def _strip_accents(s: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))


def _clean(s: str) -> str:
    return _SPACES.sub(" ", s.translate(_CHAR_FOLD)).strip(" ,.")


@dataclass(frozen=True, slots=True)
class Alias:
    """One surface form of a company name.

    Fields:
        text: the alias as written (``"Apple"``, ``"JP Morgan"``, ``"AAPL"``).
        symbol: the symbol it links to: the company's primary symbol, or for a bare
            share-class symbol that class (``GOOG``).
        ambiguous: also an ordinary word/name/place: counts only with evidence.
        case: ``exact`` | ``title`` | ``any`` (see the module docstring).
        is_symbol: the alias is the bare ticker symbol.
    """

    text: str
    symbol: str
    ambiguous: bool
    case: CaseRule
    is_symbol: bool = False


@dataclass(frozen=True, slots=True)
class Company:
    """A company of the universe.

    Fields:
        symbol: primary symbol (US listing where one exists, ``BRK.B`` style).
        name: display name.
        aliases: the names it goes by in text (bare symbol included where usable).
        ambiguous: at least one of its aliases is an ordinary word (needs disambiguation).
        symbols: every symbol that resolves to it (primary first): other share classes and
            listings, e.g. ``("GOOGL", "GOOG")`` or ``("SAP", "SAP.DE")``.
    """

    symbol: str
    name: str
    aliases: tuple[str, ...]
    ambiguous: bool
    symbols: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------
# Word list and alias generation


@dataclass(frozen=True, slots=True)
class WordList:
    """``common_words.txt``, case-folded: ambiguous entries, ``!`` never-alone entries and ``~``
    capitalised-only entries."""

    ambiguous: frozenset[str]
    never: frozenset[str]
    caps: frozenset[str] = frozenset()

    def is_ambiguous(self, alias: str) -> bool:
        k = fold(alias)
        return k in self.ambiguous or k in self.never


def load_word_list(path: Path | None = None) -> WordList:
    """Read a word list file (format: see ``pipeline/data/common_words.txt``)."""
    amb: set[str] = set()
    never: set[str] = set()
    caps: set[str] = set()
    for raw in (path or WORDS_FILE).read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line[0] == "!":
            never.add(fold(line[1:].strip()))
        elif line[0] == "~":
            caps.add(fold(line[1:].strip()))
        else:
            amb.add(fold(line))
    return WordList(frozenset(amb), frozenset(never), frozenset(caps))


def _strip_suffixes(name: str, suffixes: Iterable[str], once: bool = False) -> str:
    ordered = sorted(suffixes, key=len, reverse=True)
    changed = True
    while changed:
        changed = False
        low = name.lower()
        for suf in ordered:
            if low.endswith(" " + suf):
                cut = re.sub(r"(?:\s+(?:&|and))+$", "", name[: len(name) - len(suf)].rstrip(" ,."))
                if len(cut) >= 2:
                    name = cut
                    changed = not once
                    break
    return name


_INITIALS = re.compile(r"\b((?:[A-Z]\.\s?){2,})")


def _variants(alias: str) -> Iterator[str]:
    """Spelling variants of one alias: accents, '&'/'and', hyphens, dotted initials, apostrophes."""
    yield alias
    plain = _strip_accents(alias)
    if plain != alias:
        yield plain
    for a in dict.fromkeys((alias, plain)):
        if " & " in a:
            yield a.replace(" & ", " and ")
        if " and " in a:
            yield a.replace(" and ", " & ")
        if "-" in a and not a.isupper():
            yield a.replace("-", " ")
        m = _INITIALS.search(a)
        if m:  # "J.B. Hunt" -> "JB Hunt", "J. B. Hunt", "J.B. Hunt"
            letters = re.findall(r"[A-Z]", m.group(1))
            rest = a[m.end() :].lstrip()
            for form in ("".join(letters), ". ".join(letters) + ".", ".".join(letters) + "."):
                yield (a[: m.start()] + form + (" " + rest if rest else "")).strip()
        if a.endswith("'s") and len(a) > 4:
            yield a[:-2] + "s"  # "McDonald's" -> "McDonalds"


def _generate(name: str, words: WordList) -> list[tuple[str, int]]:
    """``(alias, level)``: level 0 = the name itself or without its legal form, 1 = also
    without a descriptor. On a clash between companies the lower level wins."""
    base = _clean(_PAREN.sub("", name).replace(",", " "))
    base = _GLUED_CLASS.sub("", base)
    if base.lower().startswith("the ") and len(base) > 6:
        base = base[4:]
    forms = [(base, 0)]
    legal = _strip_suffixes(base, _LEGAL)
    forms.append((legal, 0))
    short = _strip_suffixes(legal, _DESCRIPTORS, once=True)
    if short != legal:
        forms.append((short, 1))
    out: dict[str, tuple[str, int]] = {}
    for f, level in forms:
        for v in _variants(f):
            v = _clean(v)
            k = fold(v)
            if len(v) >= 2 and k not in out and k not in words.never:
                out[k] = (v, level)
    return list(out.values())


def generate_aliases(name: str, words: WordList | None = None) -> list[str]:
    """Aliases generated from a company name (the cleaned name first).

    >>> generate_aliases("Apple Inc.")
    ['Apple Inc', 'Apple']
    """
    return [a for a, _ in _generate(name, words or _default_words())]


@cache
def _default_words() -> WordList:
    return load_word_list()


def _case_rule(alias: str, ambiguous: bool, words: WordList) -> CaseRule:
    if not any(c.islower() for c in alias):
        return "exact"
    if ambiguous or fold(alias) in words.caps or " " in alias or sum(c.isalpha() for c in alias) <= 3:
        return "title"
    return "any"


# --------------------------------------------------------------------------------------------
# Universe


@dataclass
class _Draft:
    symbol: str
    name: str
    symbols: list[str]
    us_classes: list[str] = field(default_factory=list)  # US share classes from a US index
    aliases: dict[str, int] = field(default_factory=dict)  # alias -> level
    removed: set[str] = field(default_factory=set)  # folded aliases a CSV removed
    claimed: set[str] = field(default_factory=set)  # folded aliases a CSV named (override)

    def add(self, pairs: Iterable[tuple[str, int]]) -> None:
        for a, level in pairs:
            if self.aliases.get(a, level + 1) > level:
                self.aliases[a] = level


class Universe:
    """Companies and aliases, with lookups by symbol and by folded alias.

    Build with :func:`load_universe`; treat as immutable afterwards.
    """

    def __init__(self, companies: Iterable[Company], aliases: Iterable[Alias]) -> None:
        self.companies: tuple[Company, ...] = tuple(sorted(companies, key=lambda c: c.symbol))
        self.aliases: tuple[Alias, ...] = tuple(aliases)
        self._by_symbol: dict[str, Company] = {}
        for c in self.companies:
            for s in c.symbols:
                self._by_symbol.setdefault(s, c)
        for c in self.companies:  # a primary symbol wins over another company's other listing
            self._by_symbol[c.symbol] = c
        self._by_alias: dict[str, list[Alias]] = {}
        for a in self.aliases:
            self._by_alias.setdefault(fold(a.text), []).append(a)

    def __len__(self) -> int:
        return len(self.companies)

    def __contains__(self, symbol: object) -> bool:
        return isinstance(symbol, str) and self.company(symbol) is not None

    def company(self, symbol: str) -> Company | None:
        """The company a symbol (primary, other class or other listing) belongs to, or None."""
        s = symbol.strip().upper()
        return self._by_symbol.get(s) or self._by_symbol.get(_yahoo_to_symbol(s))

    def resolve(self, symbol: str) -> str:
        """The symbol to report for an explicit mention of ``symbol``.

        A US listing of a known company stays as written (``GOOG`` and ``GOOGL`` are both
        primary listings of their class); a foreign listing maps to the company's primary
        symbol (``SHEL.L`` -> ``SHEL``, ``SAP.DE`` -> ``SAP``); unknown symbols stay as written.
        """
        s = _yahoo_to_symbol(symbol.strip().upper())
        c = self.company(s)
        if c is None or (s in c.symbols and _is_us_symbol(s)):
            return s
        return c.symbol

    def lookup(self, alias: str) -> list[Alias]:
        """Aliases whose folded form equals ``fold(alias)``."""
        return list(self._by_alias.get(fold(alias), ()))

    def alias_of(self, symbol: str) -> list[Alias]:
        """Every alias of the company ``symbol`` belongs to."""
        c = self.company(symbol)
        return [a for a in self.aliases if c is not None and a.symbol == c.symbol]


_US_SYMBOL: Final = re.compile(r"[A-Z][A-Z0-9]{0,5}(?:\.[A-E])?")
_YAHOO_CLASS: Final = re.compile(r"[A-Z]{1,5}-[A-E]")


def _is_us_symbol(s: str) -> bool:
    """``AAPL``, ``BRK.B``: no exchange suffix (a suffix A-E is a share class, ``.L`` is London)."""
    return _US_SYMBOL.fullmatch(s) is not None


def _yahoo_to_symbol(y: str) -> str:
    """Yahoo writes US share classes with '-' (``BRK-B``); the house style is ``BRK.B``."""
    return y.replace("-", ".") if _YAHOO_CLASS.fullmatch(y) else y


# Listings in pytickersymbols' data that are stale or belong to someone else today.
_DROP_SYMBOLS: Final[frozenset[str]] = frozenset(
    {
        "SI",
        "OEC",
        "ESGRO",
        "TOT",
        "UN",
        "AIZ",
        "RE",
        "XON",
        "BLL",
        "BALY",
        "PEAK",
        "HCP",
        "WLTW",
        "HRS",
        "ISG",
        "RF-PB",
        "AIR.PA.DE",
    }
)


def _from_pytickersymbols(indices: Iterable[str]) -> list[_Draft]:
    """One draft per company name. A US index's own symbol is the US listing; for a company
    only in European indices, its NYSE/NASDAQ listing (an ADR) from ``symbols``, else its home
    listing (the first index symbol)."""
    from pytickersymbols.indices_data import INDICES

    drafts: dict[str, _Draft] = {}
    us_syms: dict[str, list[str]] = {}
    for index in indices:
        if index not in INDICES:
            raise ValueError(f"unknown pytickersymbols index {index!r}; known: {sorted(INDICES)}")
        for c in INDICES[index].get("companies") or ():
            name, sym = c.get("name"), c.get("symbol")
            if not name or not sym:
                continue
            d = drafts.setdefault(name, _Draft(symbol="", name=name, symbols=[]))
            s = _yahoo_to_symbol(sym)
            if s not in d.symbols and s not in _DROP_SYMBOLS:
                if index in _US_INDICES and _is_us_symbol(s):
                    us_syms.setdefault(name, []).append(s)
                d.symbols.append(s)
            for listing in c.get("symbols") or ():
                g = listing.get("google") or ""
                if g.startswith(("NYSE:", "NASDAQ:")):
                    us = _yahoo_to_symbol(g.split(":", 1)[1])
                    if us not in _DROP_SYMBOLS:
                        us_syms.setdefault("\x00" + name, []).append(us)
    out: list[_Draft] = []
    for name, d in drafts.items():
        in_us_index = us_syms.get(name, [])
        adrs = [] if in_us_index else list(dict.fromkeys(us_syms.get("\x00" + name, [])))
        fix = _FIXES.get(name)
        if fix:
            primary, new_name = fix
            d.name = new_name or name
        else:
            primary = (in_us_index or adrs or d.symbols)[0]
        d.symbols = list(dict.fromkeys([primary, *in_us_index, *adrs, *d.symbols]))
        d.symbol = primary
        d.us_classes = list(dict.fromkeys(in_us_index))
        out.append(d)
    return out


def read_company_csv(path: Path) -> list[tuple[str, str, list[str]]]:
    """Rows ``(SYMBOL, name, aliases)`` of a company CSV (see the module docstring).

    Raises ValueError naming the line for a malformed row.
    """
    rows: list[tuple[str, str, list[str]]] = []
    with open(path, encoding="utf-8", newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if lineno == 1 and row[0].strip().lower() == "symbol":
                continue
            if len(row) > 3:
                raise ValueError(f"{path}:{lineno}: expected symbol,name[,aliases], got {len(row)} fields")
            symbol = row[0].strip().upper().lstrip("$")
            if not re.fullmatch(r"[A-Z0-9][A-Z0-9.\-]{0,15}", symbol):
                raise ValueError(f"{path}:{lineno}: bad symbol {row[0]!r}")
            name = row[1].strip() if len(row) > 1 else ""
            aliases = [a.strip() for a in row[2].split("|")] if len(row) > 2 else []
            rows.append((_yahoo_to_symbol(symbol), name, [a for a in aliases if a]))
    return rows


def _apply_csv(drafts: list[_Draft], rows: list[tuple[str, str, list[str]]], words: WordList) -> None:
    by_symbol: dict[str, _Draft] = {}
    for d in drafts:
        for s in d.symbols:
            by_symbol.setdefault(s, d)
    for d in drafts:
        by_symbol[d.symbol] = d
    for symbol, name, aliases in rows:
        d = by_symbol.get(symbol)
        if d is None:
            if not name:
                raise ValueError(f"company CSV: new symbol {symbol} needs a name")
            d = _Draft(symbol=symbol, name=name, symbols=[symbol])
            drafts.append(d)
            by_symbol[symbol] = d
        if name:
            d.name = name
            generated = _generate(name, words)
            d.add(generated)
            d.claimed.update(fold(a) for a, _ in generated)
        for a in aliases:
            if a.startswith("-"):
                d.removed.add(fold(a[1:].strip()))
            else:
                d.add([(a, 0)])
                d.claimed.add(fold(a))
                d.removed.discard(fold(a))


def load_universe(
    user_csv: Path | None = None,
    *,
    indices: Iterable[str] = DEFAULT_INDICES,
    words_file: Path | None = None,
    extra_csv: Path | None = EXTRA_CSV,
) -> Universe:
    """Build the universe: pytickersymbols ``indices`` + the curated extra CSV + ``user_csv``.

    An alias generated for several companies goes to the one that has it at the lowest level
    (its name, not a shortened name); on a tie it is dropped from all, unless a CSV named it for
    one company. Raises ValueError for a malformed CSV, FileNotFoundError for a missing one.
    """
    words = load_word_list(words_file) if words_file else _default_words()
    drafts = _from_pytickersymbols(indices)
    for d in drafts:
        d.add(_generate(d.name, words))
    for path in (extra_csv, user_csv):
        if path is not None:
            _apply_csv(drafts, read_company_csv(Path(path)), words)

    # The primary symbol (and other US share classes: GOOG) as a bare alias: 3+ characters or a
    # class share, and not a word or common acronym unless it is also the company's own name
    # (META, DELL: then as ambiguous as the name).
    for d in drafts:
        names = {fold(a) for a in d.aliases}
        for s in dict.fromkeys([d.symbol, *d.us_classes]):
            if (
                _SYMBOL_ALIAS.fullmatch(s)
                and fold(s) not in words.never
                and (not words.is_ambiguous(s) or fold(s) in names)
            ):
                d.add([(s, 0)])

    claimed_by: dict[str, int] = {}
    for i, d in enumerate(drafts):  # later rows (the user CSV) win
        for k in d.claimed - d.removed:
            claimed_by[k] = i
    best: dict[str, list[tuple[int, int]]] = {}  # folded alias -> [(level, draft index)]
    for i, d in enumerate(drafts):
        for a, level in d.aliases.items():
            k = fold(a)
            if k not in d.removed and (k not in words.never or k in claimed_by):
                best.setdefault(k, []).append((level, i))
    owner: dict[str, int] = {}
    for k, cands in best.items():
        if k in claimed_by:
            owner[k] = claimed_by[k]
            continue
        top = min(level for level, _ in cands)
        winners = {i for level, i in cands if level == top}
        if len(winners) == 1:
            owner[k] = winners.pop()

    companies: list[Company] = []
    aliases: list[Alias] = []
    for i, d in enumerate(drafts):
        mine = [a for a in d.aliases if owner.get(fold(a)) == i]
        flags = []
        for a in mine:
            is_sym = a in d.symbols
            amb = words.is_ambiguous(a)
            flags.append(amb)
            rule = "exact" if is_sym else _case_rule(a, amb, words)
            # a bare share-class symbol stands for that class (GOOG), a name for the primary
            aliases.append(Alias(a, a if is_sym else d.symbol, amb, rule, is_sym))
        companies.append(Company(d.symbol, d.name, tuple(mine), any(flags), tuple(d.symbols)))
    return Universe(companies, aliases)
