"""The one text-normalisation step that training, scoring, the worker and backtests share, and a
conservative language check.

:func:`normalize` runs before the tokenizer. The backbone's uncased WordPiece vocabulary has no
emoji, so ``$GME 🚀🚀🚀`` used to reach the model as ``$ gm ##e [UNK]``: one ``[UNK]`` for any run
of emoji, 🚀 and 📉 alike. ``normalize`` spells each emoji out in plain English words that the
vocabulary knows (CLDR short names from the ``emoji`` package, a few renamed for finance: 🐂 is
``bull``, not ``ox``), keeps up to :data:`MAX_REPEAT` repeats of one emoji in a run (so 🚀🚀🚀 reads
stronger than 🚀 and a wall of 50 rockets costs no more than three) and collapses whitespace.
Everything else is left as it is:

* cashtags (``$AAPL``), handles (``@user``) and hashtags: unchanged;
* URLs: unchanged. Replacing every ``https://t.co/...`` by one word cost dev score when it was
  tried (docs/model-card.md, "R-Drop and one-word URLs"), so links stay as the models read them;
* ``©``, ``®``, ``™`` and ``▪`` (:data:`KEPT_SYMBOLS`): the ``emoji`` package lists them, but in news
  they are typography, and the vocabulary has each of them as a token already.

So a text without emoji comes back unchanged but for whitespace, and a model reads plain news as
before. ``normalize`` is pure and deterministic (no model, no I/O; ASCII texts take a fast path)
and idempotent: its output has no emoji left to spell out.

:func:`detect_language` uses ``py3langid`` (the langid.py Naive Bayes model, 4.5 MB, bundled with
the package, so it needs no download; pure Python + numpy). Its raw top answer is not a verdict:
on short English tweets it often names another language at low probability. Cashtags, handles, hashtags, URLs, numbers, emoji and
``:shortcode:`` emoji are removed first: they are the same in every language and only add noise. The
model is restricted to :data:`LANGUAGES`, the languages a finance feed realistically carries; on
short texts the model's full set of 140 mostly adds confusions (English headlines read as Nigerian
Pidgin or Latin at low confidence, Chinese as Wu). :func:`is_english` is the conservative rule: a
text is flagged non-English only when another language wins, P(English) <= 1 - ``threshold``
(``threshold`` 0.98 by default) and the text has none of a few unmistakably English words
(:data:`ENGLISH_ANCHORS`: "Skanska AB reports Q4 results" stays English). Short and undetermined
texts count as English. How often it flags what is measured in docs/operations.md (Languages).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Final

import emoji

#: the version of :func:`normalize`'s rules, recorded with a model trained on normalised text (its
#: config's ``text_normalization``); change it whenever the output of ``normalize`` changes
NORMALIZATION: Final[str] = "finsent-v1"

#: at most this many copies of one emoji are spelled out per run of emoji
MAX_REPEAT: Final[int] = 3

#: listed as emoji by the ``emoji`` package but typography in news text; left as they are
KEPT_SYMBOLS: Final[frozenset[str]] = frozenset({"©", "®", "™", "▪"})

#: emoji whose CLDR name misses the sense traders use (the rest keep the package's English name)
FINANCE_NAMES: Final[dict[str, str]] = {
    "🐂": "bull",  # CLDR: ox
    "🐃": "bull",  # water buffalo
    "💎": "diamond",  # gem stone; 💎🙌 = "diamond hands"
    "🙌": "hands",  # raising hands; 💎🙌 = "diamond hands"
    "🧻": "paper",  # roll of paper; 🧻🙌 = "paper hands"
    "🤑": "money face",  # money-mouth face
    "🐳": "whale",  # spouting whale: "sp ##out ##ing whale"
    "🎯": "target",  # bullseye: "bulls ##eye"
    "🩸": "blood",  # drop of blood
    "🆘": "sos",
    "💵": "dollar",  # dollar banknote: "dollar bank ##note"
    "🪦": "grave",  # headstone: "heads ##tone"
    "🥳": "party face",  # partying face: "party ##ing face"
}

_SKIN_TONES = "".join(chr(c) for c in range(0x1F3FB, 0x1F400))
#: variation selectors and skin tones: the same emoji with or without them reads the same
_MODIFIERS = re.compile(f"[\ufe0e\ufe0f{_SKIN_TONES}]")
_LEFTOVER = re.compile(f"^[\ufe0e\ufe0f\u200d{_SKIN_TONES}]+")
_NAME_SEPARATORS = re.compile(r"[_\-:]+")
# a run: emoji separated by nothing but whitespace
_RUN_GAP = re.compile(r"\s*")
# Every emoji holds at least one of these non-ASCII characters (a keycap "1\u20e3" starts with an
# ASCII digit, so first characters alone would not do). A text with none of them has no emoji,
# and the emoji package's per-character scan is skipped for it.
def _char_class(codepoints: set[int]) -> str:
    """A regex character class of ``codepoints`` written as ranges: sre tests characters above
    U+FFFF (most emoji) against a class's single characters one by one, but a range at once."""
    runs: list[list[int]] = []
    for cp in sorted(codepoints):
        if runs and runs[-1][1] == cp - 1:
            runs[-1][1] = cp
        else:
            runs.append([cp, cp])
    return "[" + "".join(re.escape(chr(a)) + (f"-{re.escape(chr(b))}" if b > a else "") for a, b in runs) + "]"


_EMOJI_CHARS = re.compile(_char_class({ord(c) for e in emoji.EMOJI_DATA for c in e if not c.isascii()}))


def emoji_words(chars: str) -> str:
    """The plain words for one emoji (``"🚀"`` -> ``"rocket"``, ``"📉"`` -> ``"chart decreasing"``);
    ``""`` for a character that is not an emoji."""
    return _emoji_words(_MODIFIERS.sub("", chars) or chars)


@lru_cache(maxsize=4096)
def _emoji_words(chars: str) -> str:
    if chars in FINANCE_NAMES:
        return FINANCE_NAMES[chars]
    data = emoji.EMOJI_DATA.get(chars) or emoji.EMOJI_DATA.get(chars + "\ufe0f")
    if data is None:  # a sequence without a name of its own (🚀\u200d🌕): its parts' names
        parts = chars.split("\u200d")
        return " ".join(filter(None, map(_emoji_words, parts))) if len(parts) > 1 else ""
    name = data["en"].strip(":")
    # "money-mouth_face" -> "money mouth face"; names such as "flag: Chile" are ":Chile:" already
    return " ".join(_NAME_SEPARATORS.sub(" ", name).split()).lower()


def normalize(text: str) -> str:
    """Emoji spelled out as words (repeats capped at :data:`MAX_REPEAT` per run), whitespace
    collapsed; everything else unchanged. Pure, deterministic, idempotent."""
    if text.isascii() or _EMOJI_CHARS.search(text) is None:  # no emoji: the common case for news
        return " ".join(text.split())
    out = _spell_out(text)
    # removing an emoji can join what was around it into a new one ("0🚀⃣" -> "0⃣", keycap 0):
    # repeat until nothing changes (emoji words are ASCII, so this ends)
    for _ in range(8):
        if out.isascii() or (again := _spell_out(out)) == out:
            break
        out = again
    return out


def _spell_out(text: str) -> str:
    matches = [m for m in emoji.analyze(text, non_emoji=False, join_emoji=True)
               if (_MODIFIERS.sub("", m.chars) or m.chars) not in KEPT_SYMBOLS]
    if not matches:
        return " ".join(text.split())
    out: list[str] = []
    pos = 0
    counts: dict[str, int] = {}  # copies of each emoji already written in the current run
    for m in matches:
        start = m.value.start
        gap = text[pos:start]
        if pos:  # a selector or joiner that the emoji package left after the previous emoji
            gap = _LEFTOVER.sub("", gap)
        if gap.strip():  # text between two emoji ends the run
            counts = {}
            out.append(gap)
        words = emoji_words(m.chars)
        key = _MODIFIERS.sub("", m.chars) or m.chars
        if words and counts.get(key, 0) < MAX_REPEAT:
            counts[key] = counts.get(key, 0) + 1
            out.append(f" {words} ")
        pos = m.value.end
    out.append(_LEFTOVER.sub("", text[pos:]))
    return " ".join("".join(out).split())


# ------------------------------------------------------------------ language


#: what :func:`detect_language` can answer (besides ``"und"``): the languages of the world's larger
#: stock markets and financial press. Restricting the model to them removes most confusions on
#: short English texts (pcm, la, gl, tl, ...); a text in another language is still reported as
#: one of these, i.e. as non-English, which is what the check is for.
LANGUAGES: Final[tuple[str, ...]] = (
    "en", "de", "fr", "es", "it", "pt", "nl", "sv", "da", "no", "fi", "pl", "cs", "hu", "ro", "el",
    "tr", "ru", "uk", "ar", "he", "fa", "hi", "zh", "ja", "ko", "id", "ms", "vi", "th",
)

#: fewer letter-words than this (or CJK characters, see :data:`MIN_CJK`) after stripping: ``"und"``
MIN_WORDS: Final[int] = 3
#: Chinese, Japanese and Korean texts have no spaces: this many CJK/kana/hangul characters suffice
MIN_CJK: Final[int] = 4
#: :func:`is_english`'s default: a text is flagged only when P(not English) >= this
ENGLISH_THRESHOLD: Final[float] = 0.98

#: English words that other languages of :data:`LANGUAGES` hardly use in a headline: a text with one of
#: them is never flagged ("Banca Monte dei Paschi di Siena S.p.A. reports FY results"). Words that are
#: also Dutch, Scandinavian or Romance ("is", "for", "on", "as", "at", "do", "a") are not in it.
ENGLISH_ANCHORS: Final[frozenset[str]] = frozenset({
    "the", "and", "of", "to", "with", "from", "after", "into", "over", "under", "about", "than",
    "this", "that", "who", "what", "how", "why", "its", "are", "was", "will", "have", "own", "says",
    "new", "buy", "sell", "reports", "declares", "results", "shares", "stock", "stocks",
    # headline and fintwit vocabulary with no homograph in those languages ("sales", "profit",
    # "week", "falls", "record", "revenue", "dividend", "investor" have one, so they are not here)
    "beats", "misses", "earnings", "quarter", "outlook", "guidance", "raises", "cuts", "upgraded",
    "downgraded", "upgrade", "downgrade", "schedules", "posts", "growth", "strong", "weak", "today",
    "year", "month", "bullish", "bearish", "premarket", "shareholder", "shareholders",
    "forecasts", "price", "target", "higher", "lower", "surge", "surges", "slides", "jumps",
})

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
# cashtags, handles, hashtags: $AAPL, $BRK.B, @user, #earnings
_TAG = re.compile(r"[$@#][^\W\d]\w*(?:\.\w+)?")
# numbers with currency, sign, separators and unit: +4.5%, $1.2bn, 3Q, 10-K, 2023/24
_NUMBER = re.compile(r"[+\-−]?[$€£¥]?\d[\d,.:/%\-]*(?:[^\W\d_]{1,3}\b)?")
# an emoji spelled as a shortcode, e.g. ":rocket:" (emoji.demojize's default delimiters)
_SHORTCODE = re.compile(r":[a-z0-9_+\-]+:", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]{2,}")


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return (0x3040 <= cp <= 0x30FF or 0x3400 <= cp <= 0x4DBF or 0x4E00 <= cp <= 0x9FFF
            or 0xAC00 <= cp <= 0xD7AF or 0xF900 <= cp <= 0xFAFF)


def language_text(text: str) -> str:
    """What the language model sees: ``text`` without URLs, emoji, emoji shortcodes, cashtags,
    handles, hashtags and numbers, whitespace collapsed."""
    text = _URL.sub(" ", text)
    if not text.isascii() and _EMOJI_CHARS.search(text):  # the package's scan is a per-character loop
        text = emoji.replace_emoji(text, " ")
    text = _SHORTCODE.sub(" ", text)
    text = _TAG.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    return " ".join(text.split())


def _enough_text(stripped: str) -> bool:
    if stripped.isascii():  # no CJK: skip the per-character scan
        return len(_WORD.findall(stripped)) >= MIN_WORDS
    cjk = sum(map(_is_cjk, stripped))
    if cjk >= MIN_CJK:
        return True
    words = [w for w in _WORD.findall(stripped) if not all(map(_is_cjk, w))]
    return len(words) >= MIN_WORDS


@lru_cache(maxsize=1)
def _identifier():  # py3langid has no type hints
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    ident.set_languages(list(LANGUAGES))
    return ident


def _stripped(text: str) -> str:
    return language_text(unicodedata.normalize("NFC", text))


def _ranked(text: str, stripped: str | None = None) -> list[tuple[str, float]] | None:
    """Every language of :data:`LANGUAGES` with its probability, best first; None for too little text."""
    stripped = _stripped(text) if stripped is None else stripped
    if not _enough_text(stripped):
        return None
    return [(str(lang), float(p)) for lang, p in _identifier().rank(stripped)]


def detect_language(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of ``text``'s language, after :func:`language_text`;
    ``("und", 0.0)`` when fewer than :data:`MIN_WORDS` words of two or more letters (or
    :data:`MIN_CJK` CJK characters) remain. Deterministic."""
    ranked = _ranked(text)
    return ranked[0] if ranked else ("und", 0.0)


def is_english(text: str, threshold: float = ENGLISH_THRESHOLD) -> bool:
    """False only when another language wins, the model is at least ``threshold`` sure that the
    text is not English (P(en) <= 1 - threshold) and the text has none of the
    :data:`ENGLISH_ANCHORS`. Short and undetermined texts count as English, so an English tweet is
    (almost) never flagged."""
    stripped = _stripped(text)
    # a foreign company name around English words ("Skanska AB reports Q4 results") is English;
    # checked first, since it settles most tweets without running the language model
    if not ENGLISH_ANCHORS.isdisjoint(_WORD.findall(stripped.lower())):
        return True
    ranked = _ranked(text, stripped)
    if ranked is None or ranked[0][0] == "en":
        return True
    return dict(ranked).get("en", 0.0) > 1.0 - threshold


def language(text: str, threshold: float = ENGLISH_THRESHOLD) -> str:
    """The language to treat ``text`` as: ``"en"`` unless :func:`is_english` says it is not
    (short and undetermined texts count as English), else the detected ISO 639-1 code."""
    return "en" if is_english(text, threshold) else detect_language(text)[0]
