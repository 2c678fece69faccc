"""Story novelty: near-duplicate texts are one story, and a story's repeats count less.

One story retweeted 50 times is one piece of news, not 50 votes. This module decides which
documents are the same story and how novel each one is. It is pure: no I/O, no Redis, no clock;
the caller passes ``published_at``. docs/novelty.md says what counts as one story and gives the
measurements behind the parameters below (``bench/novelty.py``).

1. :func:`normalize` -- the text as a story key sees it: case-folded, NFKC, without URLs,
   ``RT @user:`` prefixes, leading and trailing handles, trailing hashtags, wire tags and credits
   (:data:`WIRE_TAGS`, :data:`WIRE_SOURCES`), symbols and punctuation. Cashtags keep their
   symbol as a word (``$TSLA`` -> ``tsla``). A trailing ellipsis means a length limit cut the
   text, maybe inside its last word, so that word goes too.
2. :func:`signatures` -- one uint32 row per document: a MinHash of its word 1- and 2-grams
   (:data:`NUM_PERM` values), then a Bloom filter of its *anchors* (:data:`ANCHOR_COLUMNS`
   columns; :func:`anchors`): cashtags, words with a digit, capitalised words of texts written
   in sentence case, consecutive pairs of those, and optionally the tickers linked from the
   text. Anchors keep template stories apart: "AAPL beats estimates" and "MSFT beats estimates"
   share most words, but each has an anchor the other lacks; a truncated, re-cased or retweeted
   copy has no anchor that its original lacks.
3. :func:`band_keys` -- LSH: :data:`BANDS` keys of :data:`ROWS` MinHash values each, as 64-bit
   integers (a band's number is hashed in, so equal values in two bands are two keys). Documents
   that share a key are candidates; :func:`similarity` (the estimated Jaccard similarity of
   their shingle sets, 0 when their anchors conflict) >= :data:`THRESHOLD` confirms one.
4. :class:`StoryIndex` -- band key -> story id; story id -> representative signature and the
   publication times of its documents. A document's novelty is ``0.75 ** k`` (:func:`novelty`)
   where ``k`` counts its story's documents published before it within :data:`DEFAULT_WINDOW_S`.

Hashing uses XXH3 (a frozen format) and constants derived from it, so a signature computed today
equals one computed by another process or release: signatures and band keys may be stored (e.g.
in Redis) and compared later. :data:`SIGNATURE_VERSION` names the normalisation, shingles and
constants; change it with any of them.
"""

from __future__ import annotations

import bisect
import html
import itertools
import math
import re
import struct
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Final, NamedTuple

import numpy as np
import xxhash

__all__ = [
    "ANCHOR_COLUMNS",
    "ANCHOR_HASHES",
    "BANDS",
    "DECAY",
    "DEFAULT_WINDOW_S",
    "EMPTY",
    "MAX_CHARS",
    "NUM_PERM",
    "ROWS",
    "SIGNATURE_VERSION",
    "SIGNATURE_WIDTH",
    "THRESHOLD",
    "WIRE_SOURCES",
    "WIRE_TAGS",
    "Story",
    "StoryIndex",
    "anchors",
    "band_hashes",
    "band_keys",
    "band_keys_batch",
    "compatible",
    "is_empty",
    "normalize",
    "normalize_many",
    "novelty",
    "pack_keys",
    "same_story",
    "signature",
    "signatures",
    "similarity",
]

#: Names the normalisation, shingles and hash constants; part of every stored key's meaning.
SIGNATURE_VERSION: Final[str] = "novelty-v2"
#: Characters of a text that :func:`normalize` looks at (longer texts: their first MAX_CHARS).
MAX_CHARS: Final[int] = 2000
#: MinHash values per signature.
NUM_PERM: Final[int] = 64
#: LSH bands and rows per band (BANDS * ROWS <= NUM_PERM).
BANDS: Final[int] = 16
ROWS: Final[int] = 4
#: Estimated Jaccard at or above which a candidate is the same story.
THRESHOLD: Final[float] = 0.5
#: Columns after the MinHash values: a Bloom filter of the document's anchors, ANCHOR_COLUMNS * 32
#: bits, each anchor setting ANCHOR_HASHES bits.
ANCHOR_COLUMNS: Final[int] = 16
ANCHOR_HASHES: Final[int] = 2
#: Columns of a signature row.
SIGNATURE_WIDTH: Final[int] = NUM_PERM + ANCHOR_COLUMNS
#: The MinHash value of a document without tokens (every column of its MinHash part).
EMPTY: Final[int] = 0xFFFFFFFF
#: Novelty of the k-th repeat is DECAY ** k (RavenPack's event novelty: 100, 75, 56, 42, ...).
DECAY: Final[float] = 0.75
#: Repeats older than this (seconds of published_at) no longer lower a document's novelty.
DEFAULT_WINDOW_S: Final[int] = 86_400

#: Wire tags removed from the start of a text, case-insensitively, when a symbol follows them
#: (``:``, ``-``, ``|``, ``*``, an emoji; an optional number first: ``UPDATE 2-``), and any run of
#: them (``RPT-UPDATE 2-``). A tag without a symbol is an ordinary word ("Breaking the bank").
WIRE_TAGS: Final[tuple[str, ...]] = (
    "breaking", "breaking news", "just in", "update", "updated", "rpt", "repeat", "corrected",
    "correction", "refile", "exclusive", "alert", "urgent", "flash", "developing", "watch",
    "factbox", "analysis", "instant view",
)
#: News sources removed as a wire credit: ``(Reuters) -`` with an optional dateline before it,
#: ``Reuters:`` at the start, ``- Bloomberg`` / ``| CNBC`` / ``(Reuters)`` at the end.
WIRE_SOURCES: Final[tuple[str, ...]] = (
    "reuters", "bloomberg", "bloomberg news", "ap", "afp", "dow jones", "dj", "cnbc", "marketwatch",
    "wsj", "ft", "benzinga", "seeking alpha", "barron's", "barrons", "the fly", "theflyonthewall",
    "zacks", "business wire", "pr newswire", "globenewswire", "yahoo finance",
)

_NUM_RNG_SEED: Final[str] = "finsent-novelty-minhash"
_CASHTAG_SALT: Final[int] = 0x6361736874616773  # "$uber" and "uber" are different anchors
_ORDER_SALT: Final[int] = 0x6F72646572656421  # the pair "a>b" of consecutive anchors
_U64 = np.uint64
_BAND_SALT: Final = _U64(0x62616E646B657921)  # band i's hash starts from ROWS + i * salt
# Odd 64-bit multipliers, one per permutation: min over a * x mod 2**64 of the shingle hashes x
# (already uniform 64-bit XXH3 values) is the MinHash for permutation a. Derived from XXH3 so
# that they never change with numpy's random streams.
_MULTIPLIERS: Final[np.ndarray] = np.array(
    [xxhash.xxh3_64_intdigest(f"{_NUM_RNG_SEED}:{i}".encode()) | 1 for i in range(1024)], dtype=np.uint64)
# The bigram (a, b) hashes to fmix64(a * _PAIR + b): asymmetric ("a b" != "b a") and uniform.
_PAIR: Final = _U64(0x9E3779B97F4A7C15)
_FMIX1: Final = _U64(0xFF51AFD7ED558CCD)
_FMIX2: Final = _U64(0xC4CEB9FE1A85EC53)
# One (shingles x permutations) matrix stays under ~4 MB: long texts are signed in chunks.
_CHUNK_CELLS: Final[int] = 1 << 19

# ------------------------------------------------------------------ normalisation

# Invisible format characters that NFKC keeps: zero-width space/joiners, word joiner, BOM,
# soft hyphen, bidirectional marks. They split or glue words without being seen.
_INVISIBLE = re.compile("[\u00ad\u034f\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]")
_URL = re.compile(r"https?://\S*")
_OTHER_URL = re.compile(r"\b[A-Za-z][\w+.-]*://\S*")  # another scheme, or "HTTPS://"
# Links without a scheme: "www.x.com", and a domain with a path ("stks.co/1KkK", "bit.ly/x").
_TLDS = "com|co|net|org|io|ly|me|gl|to|us|uk|de|fm|news|info|biz"
_LINK = re.compile(rf"\bwww\.\S+|\b(?:[\w-]+\.)+(?:{_TLDS})/\S*", re.IGNORECASE)
_TLD_SLASH = re.compile(rf"\.(?:{_TLDS})/", re.IGNORECASE)  # starts with a literal: a fast check


def _alternatives(phrases: Iterable[str]) -> str:
    return "|".join(re.escape(p).replace(r"\ ", r"\s+") for p in sorted(phrases, key=len, reverse=True))


_SEP = r"[^\w$#@]*"  # separators after a prefix; a following cashtag, hashtag or handle keeps its sign
_DASHES = ":|\u2010\u2011\u2012\u2013\u2014\u2015-"  # "-" last: also a regex character class
# What may precede the text proper, one item per match (applied until nothing matches):
# "CITY (Reuters) -", symbols and punctuation other than $ # @ and "(" (so a leading cashtag
# survives), "RT @user:", a leading @handle, a wire tag with a separator ("UPDATE 2-") and
# "Reuters:".
_LEAD = re.compile(
    rf"^(?:[^()]{{0,40}}\((?:{_alternatives(WIRE_SOURCES)})\)\s*[{_DASHES}]+{_SEP}"
    rf"|[^\w$#@(]+"
    rf"|rt\b{_SEP}@\w+{_SEP}"
    rf"|@\w+{_SEP}"
    rf"|(?:{_alternatives(WIRE_TAGS)})\b\s*\d*\s*[^\w\s$#@]+{_SEP}"
    rf"|(?:{_alternatives(WIRE_SOURCES)})\s*[{_DASHES}]{_SEP})",
    re.IGNORECASE,
)
_CREDIT_MARKS: Final[str] = f"(){_DASHES}., "
_LEAD_WORDS: Final[tuple[str, ...]] = ("rt", *WIRE_TAGS, *WIRE_SOURCES)
_SOURCES: Final[frozenset[str]] = frozenset(WIRE_SOURCES)
_SOURCE_ENDS: Final[frozenset[str]] = frozenset(s.split()[-1] for s in WIRE_SOURCES)
_WORD_CHAR = re.compile(r"[^\W_]")
# _THOUSANDS and _LONE_DOT start with a literal character, which the regex engine finds fast.
_THOUSANDS = re.compile(r",(?<=\d,)(?=\d{3}(?!\d))")
# A dot that is not between two letters or digits ("u.s", "3.5" and "brk.b" keep theirs).
_LONE_DOT = re.compile(r"\.(?:(?![^\W_])|(?<![^\W_]\.))")
# UTF-8 bytes: every ASCII character but letters, digits, "$", "." and the newline that separates
# documents becomes a space, in one bytes.translate; other bytes stay.
_ASCII_TABLE: Final[bytes] = bytes(
    c if c >= 0x80 or chr(c).isalnum() or chr(c) in "$.\n" else 32 for c in range(256))
_NON_ASCII_SYMBOL = re.compile(r"[^\w\x00-\x7f]|_")  # emoji, quotes, dashes, non-ASCII spaces
_APOSTROPHES: Final[tuple[str, ...]] = ("\u2018", "\u2019", "\u00b4", "\u02bc")  # and ' ` (ASCII)
_LONE_DOLLAR = re.compile(r"\$(?![^\W_])")


def _strip_leading(t: str) -> str:
    for _ in range(8):  # a bounded number of prefixes: "RT @a: BREAKING: (Reuters) - ..."
        m = _LEAD.match(t)
        if m is None or not m.end():
            break
        t = t[m.end():]
    return t


def _credit(words: list[str]) -> int:
    """How many of the last words are a wire credit: "- Bloomberg", "| CNBC", "(Reuters)",
    "via Reuters", "-Reuters", "- Dow Jones"; 0 if none."""
    for n in (1, 2, 3):
        if len(words) < n:
            break
        phrase = " ".join(words[-n:]).lower()
        if phrase.strip(_CREDIT_MARKS) not in _SOURCES:
            continue
        if (phrase[0] == "(" and phrase[-1] == ")") or phrase[0] in _DASHES:
            return n
        if len(words) > n and (words[-n - 1].lower() == "via" or not _WORD_CHAR.search(words[-n - 1])):
            return n + 1
    return 0


def _strip_words(words: list[str]) -> bool:
    """Drop trailing @handles (and "via"), hashtags, wire credits and symbol-only words, in place.
    Returns whether an ellipsis was among the dropped words."""
    cut = False
    while words:
        w = words[-1]
        if w[0] == "@" or w[0] == "#":
            words.pop()
            if words and words[-1].lower() == "via":
                words.pop()
        elif not w.isalnum() and not _WORD_CHAR.search(w):
            cut = cut or "..." in w
            words.pop()
        elif w.lower().strip(_CREDIT_MARKS) in _SOURCE_ENDS and (n := _credit(words)):
            del words[-n:]
        else:
            break
    return cut


def _strip_trailing(t: str) -> str:
    words = t.split()
    cut = _strip_words(words)
    if words and (cut or words[-1].endswith("...")):
        # An ellipsis at the end: a length limit cut the text, maybe inside the last word, so
        # that word goes too ("record profi..." and "record profi ..." both end in "record").
        words.pop()
        _strip_words(words)
    return " ".join(words)


def _line(t: str) -> str:
    """One document of a batch without what precedes and follows its text proper (see
    :func:`normalize`), and without non-ASCII symbols and apostrophes."""
    c = t[:1]
    if (not (c.isalnum() or c == "$" or c == "#") or t.find("(", 0, 48) >= 0
            or t[:24].lower().startswith(_LEAD_WORDS)):
        t = _strip_leading(t)
    last = t.rsplit(None, 1)[-1:]
    if last:
        w = last[0]
        if (w[0] == "@" or w[0] == "#" or w.endswith("...") or not (w.isalnum() or _WORD_CHAR.search(w))
                or w.lower().strip(_CREDIT_MARKS) in _SOURCE_ENDS):
            t = _strip_trailing(t)
    if not t.isascii():
        for a in _APOSTROPHES:
            if a in t:
                t = t.replace(a, "")
        t = _NON_ASCII_SYMBOL.sub(" ", t)
    return t


def _fix(t: str) -> str:
    """A document's characters before the batch steps: HTML entities unescaped, NFKC, no
    invisible characters, no newline (newlines separate the documents of a batch)."""
    if "&" in t:
        t = html.unescape(t)
    if not t.isascii():
        if not unicodedata.is_normalized("NFKC", t):
            t = unicodedata.normalize("NFKC", t)  # fullwidth letters, "…" -> "...", odd spaces
        t = _INVISIBLE.sub("", t)
    return t.replace("\n", " ")


def _clean(texts: Sequence[str], max_chars: int) -> str:
    """The cleaned documents, one a line: each document's words in their case, separated by
    spaces (the only whitespace left); every "$" starts a word and is followed by a letter or
    digit. :func:`normalize` is this, case-folded and without the "$" signs.

    The steps that do not depend on where a document starts or ends run once over the batch
    joined by newlines; stripping prefixes and suffixes runs per document."""
    docs = [t[:max_chars] for t in texts]
    for i, t in enumerate(docs):
        if "&" in t or "\n" in t or not t.isascii():
            docs[i] = _fix(t)
    big = "\n".join(docs)
    if "://" in big:
        big = _URL.sub(" ", big)
        if "://" in big:
            big = _OTHER_URL.sub(" ", big)
    if _TLD_SLASH.search(big) or "ww." in big or "WW." in big:
        big = _LINK.sub(" ", big)
    big = "\n".join([_line(line) for line in big.split("\n")])
    if "," in big:
        big = _THOUSANDS.sub("", big)
    big = big.encode().translate(_ASCII_TABLE, b"'`").decode()
    if "$" in big:
        big = _LONE_DOLLAR.sub(" ", big)
    if "." in big:
        big = _LONE_DOT.sub(" ", big)
    return big


def _fold(cased: str) -> str:
    return cased.lower() if cased.isascii() else cased.casefold()


def normalize_many(texts: Sequence[str], max_chars: int = MAX_CHARS) -> list[str]:
    """:func:`normalize` of each text, in one batch."""
    if not texts:
        return []
    folded = _fold(_clean(texts, max_chars)).replace("$", "")
    return [" ".join(line.split()) for line in folded.split("\n")]


def normalize(text: str, max_chars: int = MAX_CHARS) -> str:
    """The text as a story key sees it: its words, case-folded, joined by single spaces.

    Only the first ``max_chars`` characters are read, so a 100 KB text costs what its first
    ``max_chars`` do. Removed: URLs (with or without a scheme); ``RT @user:`` and leading
    @handles; trailing @handles, ``via @handle`` and hashtags; wire tags (:data:`WIRE_TAGS`:
    ``BREAKING:``, ``UPDATE 2-``, ...) and credits (:data:`WIRE_SOURCES`: ``(Reuters) -``,
    ``- Bloomberg``, ...) at either end; emoji, symbols, punctuation and apostrophes
    (``Moody's`` -> ``moodys``); invisible characters (zero-width space, soft hyphen, ...); a
    trailing ellipsis with the word before it (``record profi...``: a length limit cut the
    text, maybe inside that word). NFKC folds fullwidth letters and the ellipsis character;
    HTML entities are unescaped. Kept: cashtag symbols as words (``$TSLA`` -> ``tsla``, ``$BRK.B`` ->
    ``brk.b``), numbers with their decimals (``21.1``; ``1,200`` -> ``1200``), hashtags and
    handles inside the text (as words).

    Returns ``""`` when nothing is left (a text of only links, handles or emoji): such a text
    carries no story; the caller decides (e.g. give it novelty 1.0 and index nothing).
    """
    return normalize_many([text], max_chars)[0]


def anchors(text: str, max_chars: int = MAX_CHARS, entities: Iterable[str] = ()) -> list[str]:
    """The words that must not differ between two copies of a story, case-folded, sorted:
    cashtags (with their ``$``: ``$UBER`` and ``Uber`` are two anchors), words with a digit or a
    dot, and -- in a text that uses case -- words with a capital (ASCII A-Z, "names"); then
    ``entities`` (e.g. the tickers a linker found in the text) as ``"=SYMBOL"``.

    A text uses case when at least a third of its words (those without a digit, "$" or ".")
    are lowercase: a Title Case headline or an ALL CAPS tweet capitalises (nearly) every word,
    so its capitals mark nothing, and a re-cased copy must not conflict with its original.

    Order counts too: each anchor with the next one of its kind (cashtags and numbers; names)
    is an anchor ``"a>b"``, so "$AAPL to buy $SHAZ" and "$SHAZ to buy $AAPL" conflict, while a
    truncated copy keeps a prefix of both sequences.

    Two texts are compatible when the anchors of one are a subset of the other's
    (:func:`compatible`): a truncated, re-cased or retweeted copy has no anchor that its
    original lacks, while "AAPL beats estimates" and "MSFT beats estimates" each have one.
    :func:`signatures` computes the same set, vectorised."""
    cased = _clean([text], max_chars)
    words = list(zip(cased.split(), _fold(cased).split(), strict=True))
    special = [any(c in "0123456789$." for c in w) for w, _ in words]
    upper = [any("A" <= c <= "Z" for c in w) for w, _ in words]
    plain = special.count(False)
    lower = sum(1 for s, u in zip(special, upper, strict=True) if not s and not u)
    case = plain > 0 and 3 * lower >= plain
    specials = [f for (_, f), s in zip(words, special, strict=True) if s]
    names = [f for (_, f), s, u in zip(words, special, upper, strict=True) if u and case and not s]
    found = {*specials, *names}
    for seq in (specials, names):
        found.update(f"{a}>{b}" for a, b in itertools.pairwise(seq))
    return sorted(found | {f"={e}" for e in entities})


def _anchor_hash(anchor: str) -> int:
    """The 64-bit hash of an anchor as :func:`anchors` spells it; :func:`signatures` computes the
    same from its word hashes."""
    if anchor.startswith("="):
        return xxhash.xxh3_64_intdigest(anchor.encode())
    if ">" in anchor:
        a, b = anchor.split(">")
        mask = (1 << 64) - 1
        return _fmix64_int((_anchor_hash(a) * int(_PAIR) + _anchor_hash(b)) & mask) ^ _ORDER_SALT
    h = xxhash.xxh3_64_intdigest(anchor.replace("$", "").encode())
    return h ^ _CASHTAG_SALT if anchor.startswith("$") else h


# ------------------------------------------------------------------ signatures


def _fmix64_int(x: int) -> int:
    """:func:`_fmix64` of one Python int."""
    mask = (1 << 64) - 1
    x ^= x >> 33
    x = (x * int(_FMIX1)) & mask
    x ^= x >> 33
    x = (x * int(_FMIX2)) & mask
    return x ^ (x >> 33)


def _fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, in place on a uint64 array (wrapping arithmetic)."""
    x ^= x >> _U64(33)
    x *= _FMIX1
    x ^= x >> _U64(33)
    x *= _FMIX2
    x ^= x >> _U64(33)
    return x


def signatures(texts: Sequence[str], max_chars: int = MAX_CHARS, num_perm: int = NUM_PERM,
               ngrams: tuple[int, ...] = (1, 2), entities: Sequence[Iterable[str]] | None = None) -> np.ndarray:
    """Signatures of a batch of texts: a ``(len(texts), num_perm + ANCHOR_COLUMNS)`` uint32 array.

    Row ``i``, columns ``[0, num_perm)``: the MinHash of text ``i``'s shingles -- the word
    n-grams of :func:`normalize`'s output for each ``n`` in ``ngrams`` (default 1- and 2-grams;
    a text shorter than ``n`` words contributes its words instead), each hashed once with XXH3
    and permuted by multiplication: column ``j`` holds the top 32 bits of
    ``min(a_j * h mod 2**64)`` over the shingle hashes ``h``. A text that normalises to ``""``
    gets :data:`EMPTY` in every column (it matches nothing). Columns ``[num_perm, num_perm +
    ANCHOR_COLUMNS)``: a Bloom filter (little-endian bit order) of its :func:`anchors`, with
    ``entities[i]`` (optional: e.g. the symbols linked from the text, not feed tickers, which
    may differ between copies of a story) among them.

    Vectorised over the batch: one hash call per word and anchor, then per chunk of documents
    one (permutations x shingles) product and one ``np.minimum.reduceat``. Row ``i`` equals
    ``signatures([texts[i]])[0]``.
    """
    if not 1 <= num_perm <= len(_MULTIPLIERS):
        raise ValueError(f"num_perm must be in [1, {len(_MULTIPLIERS)}], got {num_perm}")
    if not ngrams or any(n not in (1, 2, 3) for n in ngrams) or len(set(ngrams)) != len(ngrams):
        raise ValueError(f"ngrams must be distinct values among 1, 2, 3; got {ngrams}")
    if entities is not None and len(entities) != len(texts):
        raise ValueError(f"entities: {len(entities)} lists for {len(texts)} texts")
    n_docs = len(texts)
    out = np.zeros((n_docs, num_perm + ANCHOR_COLUMNS), dtype=np.uint32)
    out[:, :num_perm] = EMPTY
    if not n_docs:
        return out
    cased = _clean(texts, max_chars)
    words = _fold(cased).encode().translate(None, b"$").split()
    uni = np.fromiter(map(xxhash.xxh3_64_intdigest, words), dtype=np.uint64, count=len(words))
    # Per word, from the cased bytes (words are separated by single spaces, documents by "\n"):
    # its document, and whether it has a capital, a digit/"$"/"." or starts with "$".
    cb = np.frombuffer(cased.encode(), dtype=np.uint8)
    space = (cb == 32) | (cb == 10)
    first = ~space
    first[1:] &= space[:-1]
    starts_b = np.flatnonzero(first)
    if len(starts_b) != len(uni):  # case-folding never splits or joins words
        raise RuntimeError(f"novelty: {len(starts_b)} cased words but {len(uni)} folded ones")
    doc = np.cumsum(cb == 10)[starts_b] if len(starts_b) else np.zeros(0, dtype=np.int64)
    lengths = np.bincount(doc, minlength=n_docs)
    anchor_docs = np.zeros(0, dtype=np.int64)
    anchor_hashes = np.zeros(0, dtype=np.uint64)
    if len(uni):
        capital = np.maximum.reduceat(((cb >= 65) & (cb <= 90)).view(np.uint8), starts_b).astype(bool)
        special = np.maximum.reduceat((((cb >= 48) & (cb <= 57)) | (cb == 36) | (cb == 46)).view(np.uint8),
                                      starts_b).astype(bool)
        plain = np.bincount(doc, weights=~special, minlength=n_docs)
        lower = np.bincount(doc, weights=~special & ~capital, minlength=n_docs)
        uses_case = (plain > 0) & (3 * lower >= plain)
        named = capital & uses_case[doc] & ~special
        is_anchor = special | named
        word_hash = uni ^ np.where(cb[starts_b] == 36, _U64(_CASHTAG_SALT), _U64(0))
        parts_docs, parts = [doc[is_anchor]], [word_hash[is_anchor]]
        for kind in (special, named):  # each anchor with the next of its kind: their order
            idx = np.flatnonzero(kind)
            a, b = idx[:-1], idx[1:]
            a, b = a[doc[a] == doc[b]], b[doc[a] == doc[b]]
            parts_docs.append(doc[a])
            with np.errstate(over="ignore"):
                parts.append(_fmix64(word_hash[a] * _PAIR + word_hash[b]) ^ _U64(_ORDER_SALT))
        anchor_docs = np.concatenate(parts_docs)
        anchor_hashes = np.concatenate(parts)
    if entities is not None:
        extra = [(i, xxhash.xxh3_64_intdigest(f"={e}".encode())) for i, es in enumerate(entities) for e in es]
        if extra:
            anchor_docs = np.concatenate([anchor_docs, np.array([i for i, _ in extra], dtype=np.int64)])
            anchor_hashes = np.concatenate([anchor_hashes, np.array([h for _, h in extra], dtype=np.uint64)])
    if len(anchor_hashes):
        out[:, num_perm:] = _bloom(n_docs, anchor_docs, anchor_hashes)
    if not len(uni):
        return out
    ends = np.cumsum(lengths)
    starts = ends - lengths
    shingles = _shingles(uni, starts, lengths, ngrams).reshape(-1)  # doc-contiguous
    width = len(ngrams)
    mult = _MULTIPLIERS[:num_perm, None]
    # Chunks of whole documents of about _CHUNK_CELLS matrix cells each.
    per_chunk = max(1, _CHUNK_CELLS // (num_perm * width))
    cuts = np.searchsorted(ends, np.arange(per_chunk, int(ends[-1]), per_chunk), side="left")
    bounds = [0, *sorted(set(cuts.tolist()) - {0}), n_docs]
    for lo_doc, hi_doc in itertools.pairwise(bounds):
        docs = lo_doc + np.flatnonzero(lengths[lo_doc:hi_doc])
        if not len(docs):
            continue
        lo, hi = int(starts[docs[0]]) * width, int(ends[docs[-1]]) * width
        prod = mult * shingles[lo:hi]  # (num_perm, shingles of the chunk), rows contiguous
        mins = np.minimum.reduceat(prod, starts[docs] * width - lo, axis=1)
        out[docs, :num_perm] = (mins >> _U64(32)).T
    return out


def _bloom(n_docs: int, docs: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """``(n_docs, ANCHOR_COLUMNS)`` uint32: per document, the Bloom filter of its anchor hashes
    (bit ``(h >> 10 * k) % bits`` for ``k < ANCHOR_HASHES``)."""
    n_bits = ANCHOR_COLUMNS * 32
    bits = np.zeros((n_docs, n_bits), dtype=np.uint8)
    for k in range(ANCHOR_HASHES):
        bits[docs, ((hashes >> _U64(10 * k)) % _U64(n_bits)).astype(np.intp)] = 1
    return np.packbits(bits, axis=1, bitorder="little").view("<u4").astype(np.uint32)


def _shingles(uni: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
              ngrams: tuple[int, ...]) -> np.ndarray:
    """``(len(uni), len(ngrams))``: per word position, the hash of the n-gram starting there
    for each n in ``ngrams``.

    Where the n-gram would run past its document's end, the position gets the word's own hash
    instead: that only adds the document's words to its shingle set (none new when 1-grams are
    in ``ngrams``), so documents shorter than n still have shingles."""
    total = len(uni)
    doc_end = np.repeat(starts + lengths, lengths)  # per position: the end of its document
    pos = np.arange(total)
    cols = []
    with np.errstate(over="ignore"):
        for n in ngrams:
            if n == 1:
                cols.append(uni)
                continue
            h = uni.copy()
            for step in range(1, n):
                nxt = np.zeros_like(uni)
                nxt[:-step] = uni[step:]
                h = _fmix64(h * _PAIR + nxt)
            cols.append(np.where(pos + n <= doc_end, h, uni))
    return np.stack(cols, axis=1)


def signature(text: str, max_chars: int = MAX_CHARS) -> np.ndarray:
    """The signature of one text: ``signatures([text])[0]``, shape ``(SIGNATURE_WIDTH,)``."""
    return signatures([text], max_chars)[0]


def is_empty(sig: np.ndarray, num_perm: int = NUM_PERM) -> bool:
    """Whether ``sig`` is the signature of a text with no words (it matches nothing)."""
    # the first column settles almost every call: the array-wide check is for the rest
    return bool(sig[0] == EMPTY) and bool(np.all(sig[:num_perm] == EMPTY))


def compatible(sig_a: np.ndarray, sig_b: np.ndarray, num_perm: int = NUM_PERM) -> bool:
    """Whether the anchors of one signature are a subset of the other's (either way round), as
    their Bloom filters tell: no bit of one is missing from the other. (A Bloom filter can take
    a conflict for a subset, when another anchor happens to set the same bits; never the
    reverse.)"""
    # as Python integers: on 16 columns, two int operations cost less than numpy's calls
    a = int.from_bytes(sig_a[num_perm:].tobytes(), "little")
    b = int.from_bytes(sig_b[num_perm:].tobytes(), "little")
    return not (a & ~b) or not (b & ~a)


def similarity(sig_a: np.ndarray, sig_b: np.ndarray, num_perm: int = NUM_PERM) -> float:
    """Estimated Jaccard similarity of two documents' shingle sets (the share of equal MinHash
    values), or 0.0 when their anchors conflict (:func:`compatible`) or either is empty."""
    a, b = sig_a[:num_perm], sig_b[:num_perm]
    if is_empty(a, num_perm) or is_empty(b, num_perm) or not compatible(sig_a, sig_b, num_perm):
        return 0.0
    return float(np.count_nonzero(a == b)) / num_perm


def same_story(a: str, b: str, threshold: float = THRESHOLD) -> bool:
    """Whether two texts are one story: the :func:`similarity` of their signatures is at least
    ``threshold``. Compares whole signatures (no LSH): what :class:`StoryIndex` concludes for
    two documents once their band keys have made them candidates."""
    sa, sb = signatures([a, b])
    return similarity(sa, sb) >= threshold


# ------------------------------------------------------------------ LSH band keys

def band_hashes(sigs: np.ndarray, bands: int = BANDS, rows: int = ROWS) -> np.ndarray:
    """``(n, bands)`` uint64: per signature row of ``sigs`` and band ``i``, a hash of ``i`` and
    its MinHash values ``[i * rows, (i + 1) * rows)``: two rows agree on band ``i`` exactly when
    those values do (up to 64-bit collisions), and two bands never share a hash by having equal
    values."""
    sigs = np.atleast_2d(sigs)
    if bands * rows > sigs.shape[1] - ANCHOR_COLUMNS:
        raise ValueError(f"bands * rows = {bands * rows} exceeds the signature's MinHash columns")
    vals = sigs[:, : bands * rows].astype(np.uint64).reshape(len(sigs), bands, rows)
    with np.errstate(over="ignore"):
        seed = _U64(rows) + np.arange(bands, dtype=np.uint64) * _BAND_SALT
        h = np.repeat(seed[None, :], len(sigs), axis=0)
        for r in range(rows):
            h = _fmix64(h * _PAIR + vals[:, :, r])
    return h


def band_keys_batch(sigs: np.ndarray, bands: int = BANDS, rows: int = ROWS) -> list[list[int]]:
    """LSH band keys of each signature row of ``sigs`` (shape ``(n, >= bands * rows +
    ANCHOR_COLUMNS)``): ``bands`` 64-bit integers, :func:`band_hashes`. Two documents sharing a
    key are candidates. An empty signature (:func:`is_empty`) has none.

    Integers, not strings: a worker looks up, stores and sends 16 keys per document, and an int
    costs less than a string at each step (:func:`pack_keys` gives a store's form)."""
    sigs = np.atleast_2d(sigs)
    keys = band_hashes(sigs, bands, rows).tolist()
    empty = np.all(sigs[:, : bands * rows] == EMPTY, axis=1).tolist()
    return [[] if e else k for k, e in zip(keys, empty, strict=True)]


def band_keys(sig_row: np.ndarray, bands: int = BANDS, rows: int = ROWS) -> list[int]:
    """The LSH band keys of one signature: ``band_keys_batch(sig_row[None])[0]``."""
    return band_keys_batch(np.asarray(sig_row)[None, :], bands, rows)[0]


def pack_keys(keys: Sequence[int]) -> bytes:
    """Band keys as a store names them: 8 big-endian bytes each, concatenated (key ``i`` is
    bytes ``[8 * i, 8 * i + 8)``; a Redis script slices them)."""
    return struct.pack(f">{len(keys)}Q", *keys)


# ------------------------------------------------------------------ novelty


def novelty(repeats_before: int) -> float:
    """Novelty of a document after ``repeats_before`` earlier documents of its story in the
    window: ``DECAY ** repeats_before`` -- 1.0, 0.75, 0.5625, 0.4219, ... (RavenPack's event
    novelty scale 100, 75, 56, 42, ...)."""
    if repeats_before < 0:
        raise ValueError(f"repeats_before must be >= 0, got {repeats_before}")
    return DECAY**repeats_before


class Story(NamedTuple):
    """The novelty decision for one document (a named tuple: the worker makes one per document).

    ``story_id``: the doc id of the story's first indexed document (its representative);
    ``repeats_before``: the story's documents published before this one inside the window;
    ``novelty``: ``novelty(repeats_before)``."""

    story_id: str
    repeats_before: int
    novelty: float


class _Entry:
    """One story in a :class:`StoryIndex`.

    ``signature``: its representative's (first indexed document's); ``times``: its documents as
    ``(published_at, doc id)``, sorted; ``keys``: the band keys that point to it; ``base``:
    documents known only by count (a store's read for one batch, see :meth:`StoryIndex.load`),
    all of them inside the window of every document the index is then asked about."""

    __slots__ = ("base", "keys", "signature", "times")

    def __init__(self, signature: np.ndarray, times: list[tuple[float, str]], keys: list[int], base: int = 0) -> None:
        self.signature = signature
        self.times = times
        self.keys = keys
        self.base = base


class StoryIndex:
    """Stories in memory: band key -> story id; story id -> (representative signature, the
    publication times of its documents). What the backtest and the tests use; a store such as
    Redis can hold the same two maps.

    :meth:`assign` finds a document's story: the candidates are the live stories its band keys
    point to; the one whose representative is most similar (:func:`similarity` >=
    ``threshold``; ties: the smaller story id) is its story, else it starts a new one (story id
    = its doc id). Its band keys then point to its story unless they point to another live
    story, so later copies find the story through any member, while each is still verified
    against the representative (a chain of small edits cannot drift away from it). A story is
    live for a document published at ``t`` while it has a document published within
    ``window_s`` of ``t``; a copy published later than that starts a new story.

    Point in time: ``repeats_before`` counts the story's documents whose ``(published_at,
    doc_id)`` sorts before the document's own and whose ``published_at`` is within ``window_s``
    before it. So a document that arrives late (after documents published later than it) gets
    the novelty it would have had in publication order, and those later documents keep theirs.
    Which story a document joins can still depend on arrival order (the clustering is greedy).

    Memory: stories whose newest document is older than the newest ``published_at`` seen minus
    ``window_s + max_lateness_s`` are dropped with their band keys.
    """

    def __init__(self, window_s: float = DEFAULT_WINDOW_S, threshold: float = THRESHOLD,
                 bands: int = BANDS, rows: int = ROWS, num_perm: int = NUM_PERM,
                 max_lateness_s: float = 3600.0) -> None:
        self.window_s = float(window_s)
        self.threshold = threshold
        self.bands, self.rows, self.num_perm = bands, rows, num_perm
        self.max_lateness_s = float(max_lateness_s)
        self.band_to_story: dict[int, str] = {}
        self.stories: dict[str, _Entry] = {}
        self._answers: dict[str, Story] = {}  # doc id -> the first answer for it
        self._loaded: dict[str, tuple[str, float]] = {}  # doc id -> (story, time), read from a store
        self._watermark = -math.inf
        self._pruned_at = -math.inf

    def __len__(self) -> int:
        return len(self.stories)

    def _live(self, entry: _Entry, t: float) -> bool:
        if entry.base:
            return True
        if not entry.times:
            return False
        newest = entry.times[-1][0]
        if newest <= t - self.window_s:
            return False
        if newest < t + self.window_s:  # the common case in a stream: no search
            return True
        i = bisect.bisect_right(entry.times, (t - self.window_s, _LAST_ID))
        return i < len(entry.times) and entry.times[i][0] < t + self.window_s

    def assign(self, doc_id: str, signature: np.ndarray, published_at: float, keys: list[int] | None = None) -> Story:
        """The story of document ``doc_id`` (its signature from :func:`signatures`,
        ``published_at`` in seconds), recorded in the index. Assigning a doc id again returns
        the first answer and records nothing (a re-delivered document keeps its novelty).
        ``keys``: its :func:`band_keys`, when the caller has them already (batches)."""
        return self.assign_keys(doc_id, signature, published_at, keys)[0]

    def assign_keys(
        self,
        doc_id: str,
        signature: np.ndarray,
        published_at: float,
        keys: list[int] | None = None,
    ) -> tuple[Story, list[str], list[int]]:
        """:meth:`assign`, also returning what a store must check and write to record it: the
        story each of ``keys`` pointed to before (``""``: none), and the keys that now point to
        the document's story and did not before (none for a document answered before)."""
        t = float(published_at)
        get = self.band_to_story.get
        known = self._answers.get(doc_id)
        if known is None and doc_id in self._loaded:
            sid, t_loaded = self._loaded[doc_id]
            known = self._answers[doc_id] = self._story(sid, doc_id, t_loaded)
        if known is not None:
            return known, [get(k, "") for k in keys or []], []
        sig = np.asarray(signature)
        if keys is None:
            keys = [] if is_empty(sig, self.num_perm) else band_keys(sig, self.bands, self.rows)
        owners = list(map(get, keys))
        stories = self.stories
        live = []
        if any(owners):
            live = [sid for sid in dict.fromkeys(owners)
                    if sid is not None and (e := stories.get(sid)) is not None and self._live(e, t)]
        if not live:
            # The common case in a stream, a story seen for the first time: no candidate, and
            # every key is free to point to the new story.
            if doc_id in stories:  # a story of that id from another time: it is over
                self._drop(doc_id)
            claimed = list(keys)
            self.band_to_story.update(dict.fromkeys(claimed, doc_id))
            stories[doc_id] = _Entry(sig.copy(), [(t, doc_id)], claimed)
            story = self._answers[doc_id] = Story(doc_id, 0, 1.0)
            self._advance(t)
            return story, [""] * len(keys) if not any(owners) else [o or "" for o in owners], list(claimed)
        best, best_sim = None, -1.0
        for sid in live:
            sim = similarity(stories[sid].signature, sig, self.num_perm)
            if sim >= self.threshold and (sim > best_sim or (sim == best_sim and best is not None and sid < best)):
                best, best_sim = sid, sim
        current = owners
        if best is None:
            best = doc_id
            if best in stories:  # a story of that id from another time: it is over
                self._drop(best)
                current = list(map(get, keys))
            stories[best] = _Entry(sig.copy(), [], [])
        entry = stories[best]
        bisect.insort(entry.times, (t, doc_id))
        claimed = []
        for key, owner in zip(keys, current, strict=True):
            if owner == best or (owner is not None and owner in stories and self._live(stories[owner], t)):
                continue
            self.band_to_story[key] = best
            claimed.append(key)
        entry.keys.extend(claimed)
        story = self._answers[doc_id] = self._story(best, doc_id, t)
        self._advance(t)
        return story, [o or "" for o in owners], claimed

    def assign_many(self, doc_ids: Iterable[str], sigs: np.ndarray, published_at: Iterable[float]) -> list[Story]:
        """:meth:`assign` for each document, in order."""
        return [self.assign(d, s, p) for d, s, p in zip(doc_ids, sigs, published_at, strict=True)]

    def load(
        self,
        band_to_story: dict[int, str],
        stories: dict[str, tuple[np.ndarray, list[tuple[float, str]], int]],
    ) -> None:
        """Add state read from a store (the worker's Redis) for a batch of documents published in
        ``[t_min, t_max]``: band key -> story id, and per story its representative signature, its
        documents as ``(published_at, doc_id)`` and how many more it has in ``(t_max - window,
        t_min)`` (inside every batch document's window: counted, not listed)."""
        self.band_to_story.update(band_to_story)
        for sid, (sig, times, base) in stories.items():
            entry = self.stories[sid] = _Entry(np.asarray(sig), sorted((float(t), d) for t, d in times), [], base)
            for t, d in entry.times:  # a document indexed before keeps its answer (a re-delivery)
                self._loaded[d] = (sid, t)

    def live(self, sid: str, t: float) -> bool:
        """Whether story ``sid`` is in the index and live for a document published at ``t``."""
        entry = self.stories.get(sid)
        return entry is not None and self._live(entry, t)

    def forget(self, sid: str) -> list[int]:
        """Drop story ``sid`` (its band keys, its documents' answers); returns its band keys."""
        entry = self.stories.get(sid)
        if entry is None:
            return []
        self._drop(sid)
        return entry.keys

    def answer(self, doc_id: str) -> Story:
        """What :meth:`assign` answered for ``doc_id`` (KeyError if it was not assigned)."""
        return self._answers[doc_id]

    def _story(self, sid: str, doc_id: str, t: float) -> Story:
        times = self.stories[sid].times
        first = bisect.bisect_right(times, (t - self.window_s, _LAST_ID))
        k = self.stories[sid].base + max(0, bisect.bisect_left(times, (t, doc_id)) - first)
        return Story(sid, k, novelty(k))

    def _advance(self, t: float) -> None:
        if t <= self._watermark:
            return
        self._watermark = t
        if t - self._pruned_at < self.window_s / 8:
            return
        self._pruned_at = t
        horizon = t - self.window_s - self.max_lateness_s
        for sid in [s for s, e in self.stories.items() if e.times and e.times[-1][0] < horizon and not e.base]:
            self._drop(sid)

    def _drop(self, sid: str) -> None:
        entry = self.stories.pop(sid)
        for key in entry.keys:
            if self.band_to_story.get(key) == sid:
                del self.band_to_story[key]
        for _, d in entry.times:
            answer = self._answers.get(d)
            if answer is not None and answer.story_id == sid:
                del self._answers[d]
            if self._loaded.get(d, ("",))[0] == sid:
                del self._loaded[d]


# sorts after every doc id: (t, _LAST_ID) bisects (published_at, doc id) pairs by time alone,
# without a key function
_LAST_ID = "\U0010ffff"
