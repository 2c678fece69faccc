"""Silver NER labels for the TOKEE tagger, from the sentiment corpora and the ticker linker.

The shipped tagger learned ORG from FiNER-ORD's 3,262 news sentences only, and its backbone is
uncased: "Target shares slump" and "price target" look alike to it, and it has rarely seen a
headline or a tweet. This module labels the sentiment corpora's texts with what the linker
(``pipeline.linking``, context-cue fallback) can say with strong evidence, token by token:

* ``B-/I-ORG`` -- a company mention the linker accepts: an unambiguous alias ("Nvidia",
  "JPMorgan", "AAPL"), an ambiguous name corroborated by other evidence in the text ("Ford
  (NYSE: F)") or accepted by a context cue ("Apple shares", "Target's earnings"); the symbol of
  a cashtag or exchange mention the universe knows (``$AAPL`` -> ``AAPL``); and an annotated
  target company of SemEval-2017 / FiQA headlines where it occurs in the text;
* ``O`` -- a lower-case occurrence of an ambiguous alias ("price target", "gap up", "block
  trade", "shell company"): the linker never reads lower-case text as those companies, and the
  uncased backbone needs exactly these contrasts; every other token without an upper-case letter
  (lower-case words, numbers, punctuation); every token of a URL; and a capitalised *common word*
  standing alone ("Stocks making the biggest moves", "Analysts raise ..."): a word the corpus
  writes in lower case at least :data:`COMMON_MIN` times and at least :data:`COMMON_RATIO` times
  as often as capitalised between two lower-case words, and whose neighbours are not capitalised
  words (so "New York", "Federal Reserve", "Royal Mail" and title-case headlines are left alone).
  Without it a headline's first word would never be seen as ``O``, and the FiNER-trained tagger
  calls sentence-initial nouns ORG ("Carnival season draws ...", "Charter schools expand ...");
* ``-`` (:data:`models.conll.IGNORE_TAG`, excluded from the loss) -- an ambiguous candidate the
  rules could not settle ("Apple Valley", "Amazon rainforest" without a cue), a lower-case
  ambiguous alias whose company is linked elsewhere in the text ("$TGT ... price target": the
  word may or may not be the company), the prefix of an exchange mention, a cashtag the universe
  does not know (``$BTC``), and any other token with an upper-case letter (a person, a place, an
  organisation outside the universe: the rules cannot tell which).

A text is kept when it has at least one ORG or ambiguous-``O`` label; optionally a seeded sample of
the company-free texts joins them (``no_org_ratio``; off by default: in a trial it did not lower the
tagger's false ORG calls on headlines). An ambiguous alias is labelled ORG in at most :data:`AMBIGUOUS_CAP` texts, later ones are
ignored: the rules settle such a name only in company contexts, so its other senses never appear
as ``O``, and uncapped the silver set would teach that the word itself is a company. Texts are deduplicated by a
normalised key (NFKC, whitespace collapsed, case-folded), and texts in ``exclude`` files (the
linking gold set) are left out. Tokens are the backbone's pre-tokenizer words (BERT: whitespace
and punctuation split), so the tagger sees the same words in training and on raw text.

Sources (under the data folder, ``FINSENT_DATA_DIR``, laid out as ``models.datasets.DATASETS``;
never the TFNS validation split, the sentiment model's evaluation set): Twitter Financial News
train split (MIT), Financial PhraseBank (CC BY-NC-SA 3.0), SemEval-2017 Task 5 headlines and
microblogs (CC BY-NC-SA 4.0), FiQA 2018 Task 1 headlines and posts (research use). A tagger
trained on them is a non-commercial research artifact (as FiNER-ORD already makes it).
"""

from __future__ import annotations

import csv
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, NamedTuple

import orjson
from tokenizers.pre_tokenizers import BertPreTokenizer

from models.conll import IGNORE_TAG, META_SUFFIX, TaggedSentence
from pipeline.linking import Linker, NameMatcher
from pipeline.universe import Universe, fold, generate_aliases

__all__ = [
    "SILVER_LICENSE",
    "SOURCES",
    "SilverLabeller",
    "SilverText",
    "build_silver",
    "common_words",
    "read_sources",
    "text_key",
    "wordnet_sentences",
    "write_conll",
    "write_silver",
]

SILVER_LICENSE: Final[str] = (
    "silver labels on Twitter Financial News train (MIT), Financial PhraseBank (CC BY-NC-SA 3.0), "
    "SemEval-2017 Task 5 (CC BY-NC-SA 4.0), FiQA 2018 Task 1 (research use): non-commercial"
)

#: (name, path under the data directory). TFNS validation.csv is deliberately absent.
SOURCES: Final[tuple[tuple[str, str], ...]] = (
    ("tfns-train", "twitter_financial_news/train.csv"),
    ("phrasebank", "financial_phrasebank/sentences_50agree.csv"),
    ("phrasebank", "financial_phrasebank/sentences_66agree.csv"),
    ("semeval-headlines", "semeval2017_task5/headlines.jsonl"),
    ("semeval-microblogs", "semeval2017_task5/microblogs.jsonl"),
    ("fiqa-headlines", "fiqa2018_task1/headlines.jsonl"),
    ("fiqa-posts", "fiqa2018_task1/posts.jsonl"),
)
# Sources whose ``target`` is a company name written in the text (the others give cashtags).
_NAME_TARGETS: Final[frozenset[str]] = frozenset({"semeval-headlines", "fiqa-headlines"})

_URL = re.compile(r"https?://\S+|www\.\S+")
_PRE = BertPreTokenizer()
#: Most texts in which one ambiguous alias is labelled ORG: the rules settle these names only in
#: company contexts and never see their other uses, so uncapped they teach the tagger that the word
#: itself is a company ("Amazon": 50 positives, 1 lower-case negative in the corpora).
AMBIGUOUS_CAP: Final[int] = 5
#: Texts without any company to add, per kept text (headlines and tweets that name no company).
NO_ORG_RATIO: Final[float] = 0.0
#: A capitalised word is a common word when the corpus writes it in lower case at least this often...
COMMON_MIN: Final[int] = 5
#: ...and this many times as often as capitalised mid-sentence (between two lower-case words).
COMMON_RATIO: Final[float] = 4.0


@dataclass
class SilverText:
    """One corpus text and, for headline sets, the annotated target companies named in it."""

    text: str
    source: str
    targets: list[str] = field(default_factory=list)


def text_key(text: str) -> str:
    """Normalised key for deduplication: NFKC, whitespace runs collapsed, case-folded."""
    return " ".join(unicodedata.normalize("NFKC", text).split()).casefold()


def _read_one(name: str, path: Path) -> Iterator[SilverText]:
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                yield SilverText(row["text"], name)
        return
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                rec = orjson.loads(line)
                targets = [rec["target"]] if name in _NAME_TARGETS and rec.get("target") else []
                yield SilverText(rec["text"], name, targets)


def read_sources(data_dir: Path, sources: Sequence[tuple[str, str]] = SOURCES,
                 exclude: Iterable[str] = ()) -> list[SilverText]:
    """Every source text once (first source wins; targets of repeats merged), minus ``exclude``
    texts (compared by :func:`text_key`). Raises FileNotFoundError naming a missing source."""
    banned = {text_key(t) for t in exclude}
    seen: dict[str, SilverText] = {}
    for name, rel in sources:
        path = Path(data_dir) / rel
        if not path.is_file():
            from models.datasets import find_dataset

            known = find_dataset(rel)
            raise FileNotFoundError(f"silver source {name}: {path} not found"
                                    + (f"; {known.where_to_get()}" if known else ""))
        for item in _read_one(name, path):
            k = text_key(item.text)
            if not k or k in banned:
                continue
            if k in seen:
                seen[k].targets += [t for t in item.targets if t not in seen[k].targets]
            else:
                seen[k] = item
    return list(seen.values())


def _words(text: str) -> list[tuple[str, tuple[int, int]]]:
    return _PRE.pre_tokenize_str(text)


def _is_lower_word(w: str) -> bool:
    return w.isalpha() and w.islower()


def _is_cap_word(w: str) -> bool:
    return w.isalpha() and w[0].isupper()


def common_words(texts: Iterable[str]) -> frozenset[str]:
    """Lower-case forms of the words ``texts`` mostly write in lower case (see the module docstring)."""
    lower: Counter[str] = Counter()
    capital: Counter[str] = Counter()
    for text in texts:
        words = [w for w, _ in _words(text)]
        for i, w in enumerate(words):
            if _is_lower_word(w):
                lower[w] += 1
            elif (_is_cap_word(w) and 0 < i < len(words) - 1 and _is_lower_word(words[i - 1])
                  and _is_lower_word(words[i + 1])):
                capital[w.lower()] += 1
    return frozenset(w for w, n in lower.items() if n >= COMMON_MIN and n >= COMMON_RATIO * capital[w])


class Labelled(NamedTuple):
    """One labelled text: the sentence, spans per rule, folded ambiguous aliases labelled ORG."""

    sentence: TaggedSentence
    counts: Counter[str]
    ambiguous: list[str]


class SilverLabeller:
    """Token-level silver tags for one text at a time (see the module docstring for the rules).

    ``common``: lower-case common words (:func:`common_words` of the corpus); empty: the
    capitalised-common-word rule is off.
    """

    def __init__(self, universe: Universe | None = None, common: Iterable[str] = ()) -> None:
        self.common = frozenset(common)
        self.linker = Linker(universe, fallback="cues")
        self.universe = self.linker.universe
        # Ambiguous aliases in any case: finds the lower-case occurrences the linker skips.
        lower = [replace(a, case="any") for a in self.universe.aliases if a.ambiguous]
        self._any_case = NameMatcher(Universe(self.universe.companies, lower))

    def label(self, text: str, targets: Sequence[str] = (), saturated: Collection[str] = ()) -> Labelled:
        """Pre-tokenizer words with ORG / O / ignore tags, how many spans each rule labelled
        (``org_<evidence>``, ``o_ambiguous``, ``ignored_candidate``...), and the ambiguous aliases
        labelled ORG. An ambiguous alias in ``saturated`` (folded) is ignored instead of ORG."""
        counts: Counter[str] = Counter()
        ambiguous: list[str] = []
        candidates = {(s, e): a for s, e, a in self.linker.matcher.find(text)}
        org: list[tuple[int, int]] = []
        ignore: list[tuple[int, int]] = []
        force_o: list[tuple[int, int]] = [m.span() for m in _URL.finditer(text)]

        def company(s: int, e: int, rule: str) -> None:
            alias = candidates.get((s, e))
            if alias is not None and alias.ambiguous and rule != "org_name":
                if fold(alias.text) in saturated:
                    ignore.append((s, e))
                    counts["ignored_ambiguous_capped"] += 1
                    return
                ambiguous.append(fold(alias.text))
            org.append((s, e))
            counts[rule] += 1


        mentions = self.linker.mentions(text)
        linked = {m.symbol for m in mentions}
        accepted = {m.span for m in mentions if m.method == "name"}
        for m in mentions:
            s, e = m.span
            if m.method == "name":
                company(s, e, f"org_{m.evidence}")
                continue
            body = s + 1  # after "$" (punctuation: O below)
            if m.method == "exchange":  # "NASDAQ:AAPL", "NYSE: F": the exchange is not the company
                colon = text.index(":", s, e)
                ignore.append((s, colon))
                body = colon + 1 + len(text[colon + 1 : e]) - len(text[colon + 1 : e].lstrip())
            if self.universe.company(text[body:e]) is not None:
                org.append((body, e))
                counts["org_explicit"] += 1
            else:
                ignore.append((body, e))
                counts["ignored_unknown_symbol"] += 1
        for target in targets:
            for s, e in _find_name(text, target):
                if not _overlaps((s, e), org) and not _overlaps((s, e), ignore):
                    company(s, e, "org_target")
        for s, e in candidates:
            if (s, e) not in accepted and not _overlaps((s, e), org) and not _overlaps((s, e), ignore):
                ignore.append((s, e))
                counts["ignored_candidate"] += 1
        for s, e, alias in self._any_case.find(text):
            if any(c.isupper() for c in text[s:e]) or _overlaps((s, e), org):
                continue
            if alias.symbol in linked:
                ignore.append((s, e))
                counts["ignored_lower_linked"] += 1
            else:
                force_o.append((s, e))
                counts["o_ambiguous"] += 1

        tokens, tags = [], []
        entities = _merged(org)
        prev_org: tuple[int, int] | None = None
        words = _words(text)
        for i, (word, (s, e)) in enumerate(words):
            span = next((o for o in entities if s < o[1] and e > o[0]), None)
            if span is not None:
                tag = "I-ORG" if span == prev_org else "B-ORG"
            elif _overlaps((s, e), ignore):
                tag = IGNORE_TAG
            elif _overlaps((s, e), force_o) or not any(c.isupper() for c in word):
                tag = "O"
            elif (word.istitle() and word.lower() in self.common
                  and not (i > 0 and _is_cap_word(words[i - 1][0]))
                  and not (i + 1 < len(words) and _is_cap_word(words[i + 1][0]))):
                tag = "O"
                counts["o_common_word"] += 1
            else:
                tag = IGNORE_TAG
            prev_org = span
            tokens.append(word)
            tags.append(tag)
        return Labelled(TaggedSentence(tokens, tags), counts, ambiguous)


def _overlaps(span: tuple[int, int], spans: Iterable[tuple[int, int]]) -> bool:
    return any(span[0] < e and span[1] > s for s, e in spans)


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping ORG spans as one entity ("Royal Dutch Shell" target over the "Shell" alias)."""
    out: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if out and s < out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _find_name(text: str, name: str) -> list[tuple[int, int]]:
    """Where a target company (or its name without legal form, "Tesco PLC" -> "Tesco") is written
    in ``text``, case-sensitive, at word boundaries."""
    found: list[tuple[int, int]] = []
    for form in sorted({name.strip(), *generate_aliases(name)}, key=len, reverse=True):
        if len(form) < 2:
            continue
        for m in re.finditer(rf"(?<!\w){re.escape(form)}(?!\w)", text):
            if not _overlaps(m.span(), found):
                found.append(m.span())
    return found


def build_silver(texts: Sequence[SilverText], labeller: SilverLabeller | None = None,
                 progress: bool = False, ambiguous_cap: int = AMBIGUOUS_CAP,
                 no_org_ratio: float = NO_ORG_RATIO, seed: int = 13) -> tuple[list[TaggedSentence], dict[str, Any]]:
    """Label ``texts``. Keeps every text with an ORG or an ambiguous-``O`` label, plus a seeded
    sample of the others (``no_org_ratio`` times as many, each with at least one ``O``). An
    ambiguous alias gets ORG in at most ``ambiguous_cap`` texts (in text order), then is ignored.
    Returns the sentences and statistics (per source, per rule, label counts)."""
    from tqdm.auto import tqdm

    labeller = labeller or SilverLabeller(common=common_words(t.text for t in texts))
    kept: list[TaggedSentence] = []
    rest: list[tuple[TaggedSentence, str]] = []
    rules: Counter[str] = Counter()
    per_source: dict[str, list[int]] = {}
    positives: Counter[str] = Counter()
    saturated: set[str] = set()
    for item in tqdm(texts, desc="silver labels", disable=not progress):
        sent, counts, ambiguous = labeller.label(item.text, item.targets, saturated)
        positives.update(ambiguous)
        saturated.update(k for k in ambiguous if positives[k] >= ambiguous_cap)
        per_source.setdefault(item.source, [0, 0, 0])[0] += 1
        if counts["o_ambiguous"] > 0 or "B-ORG" in sent.tags:
            kept.append(sent)
            rules.update(counts)
            per_source[item.source][1] += 1
        elif "O" in sent.tags:
            rest.append((sent, item.source))
    n_rest = min(len(rest), round(no_org_ratio * len(kept)))
    for i in sorted(random.Random(seed).sample(range(len(rest)), n_rest)):
        kept.append(rest[i][0])
        per_source[rest[i][1]][2] += 1
    tags = Counter(t for s in kept for t in s.tags)
    stats = {"texts": len(texts), "kept": len(kept), "no_org_sample": n_rest,
             "per_source": {k: {"texts": v[0], "kept": v[1], "no_org_sample": v[2]} for k, v in per_source.items()},
             "ambiguous_positives": dict(positives.most_common()),
             "rules": dict(sorted(rules.items())), "tags": dict(sorted(tags.items())), "license": SILVER_LICENSE}
    return kept, stats


#: WordNet lexicographer files whose capitalised lemmas are entities: noun.location, noun.object
#: (rivers, mountains: "Amazon River", "Mount Everest"), noun.person. noun.group (14) may hold an
#: organisation: its lemmas are ignored. Every other sense of a word is ``O``.
_WN_ENTITY: Final[dict[int, str]] = {15: "LOC", 17: "LOC", 18: "PER"}
_WN_GROUP: Final[int] = 14
#: Most WordNet glosses used per ambiguous word that merely mention it (in lower case).
WORDNET_MENTIONS: Final[int] = 20
WORDNET_LICENSE: Final[str] = "WordNet 3.0 (Princeton University, WordNet 3.0 license: free use with notice)"


def wordnet_sentences(wn_dir: Path, words: Collection[str],
                      mentions: int = WORDNET_MENTIONS) -> tuple[list[TaggedSentence], dict[str, int]]:
    """Dictionary senses of the ambiguous ``words`` (folded) from a WordNet 3.0 database directory
    (Debian ``wordnet-base``: ``/usr/share/wordnet``).

    * every synset with one of the words as a lemma -> ``"<lemma> : <gloss>"``, the lemma tagged by
      its lexicographer file (``Amazon River`` LOC, ``Henry Ford``'s ``Ford`` PER, ``apple`` the
      fruit O, a noun.group lemma ignored);
    * up to ``mentions`` glosses per word that use it in lower case ("... rose bushes or apple
      trees") -> the gloss.

    Gloss words: ``O`` without an upper-case letter, else ignored (a name the dictionary does not
    tag here). The uncased tagger learns the words' ordinary senses, which the financial corpora
    lack ("apple growers", "shell companies", "the Amazon basin")."""
    out: list[TaggedSentence] = []
    counts: Counter[str] = Counter()
    used: Counter[str] = Counter()
    multi = sorted((w for w in words if " " in w), key=len, reverse=True)
    single = {w for w in words if " " not in w}
    for part in ("noun", "verb", "adj", "adv"):
        path = Path(wn_dir) / f"data.{part}"
        if not path.is_file():
            raise FileNotFoundError(f"WordNet: {path} not found (Debian package wordnet-base)")
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(" ") or " | " not in line:
                continue  # licence header
            head, gloss = line.split(" | ", 1)
            fields = head.split()
            lexfile, n = int(fields[1]), int(fields[3], 16)
            lemmas = [re.sub(r"\(\w+\)$", "", w).replace("_", " ") for w in fields[4 : 4 + 2 * n : 2]]
            gloss = gloss.strip()
            gloss_words = _words(gloss)
            gloss_tags = ["O" if not any(c.isupper() for c in w) else IGNORE_TAG for w, _ in gloss_words]
            hit = next((lem for lem in lemmas if fold(lem) in words), None)
            if hit is not None:
                if lexfile == _WN_GROUP:
                    kind = IGNORE_TAG
                elif lexfile in _WN_ENTITY and hit[0].isupper():
                    kind = _WN_ENTITY[lexfile]
                else:
                    kind = "O"
                lemma_words = [w for w, _ in _words(hit)]
                if kind in ("O", IGNORE_TAG):
                    lemma_tags = [kind] * len(lemma_words)
                else:
                    lemma_tags = [f"B-{kind}"] + [f"I-{kind}"] * (len(lemma_words) - 1)
                out.append(TaggedSentence(lemma_words + [":"] + [w for w, _ in gloss_words],
                                          lemma_tags + ["O"] + gloss_tags))
                counts[f"lemma_{kind if kind != IGNORE_TAG else 'ignored'}"] += 1
                continue
            low = " ".join(w for w, _ in gloss_words)
            found = [w for w in multi if f" {w} " in f" {low} "]
            found += [w for w, _ in gloss_words if w in single]
            for w in found[:1]:
                if used[w] < mentions:
                    used[w] += 1
                    out.append(TaggedSentence([w for w, _ in gloss_words], gloss_tags))
                    counts["gloss_mention"] += 1
    return out, dict(counts)


def write_conll(sentences: Iterable[TaggedSentence], path: Path) -> None:
    """``token<TAB>tag`` lines, a blank line between sentences."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for s in sentences:
            fh.writelines(f"{tok}\t{tag}\n" for tok, tag in zip(s.tokens, s.tags))
            fh.write("\n")


def write_silver(data_dir: Path, out: Path, exclude: Iterable[Path] = (), progress: bool = True,
                 ambiguous_cap: int = AMBIGUOUS_CAP, no_org_ratio: float = NO_ORG_RATIO, seed: int = 13,
                 wordnet: Path | None = None) -> dict[str, Any]:
    """``finsent silver-ner``: read the sources under ``data_dir``, label, write ``out`` (CoNLL)
    and ``out.meta.json`` (sources, licence, statistics; ``models.train_tagger`` reads the
    licence from it). ``exclude``: JSONL files whose ``text`` fields must stay out (the linking
    gold set). Returns the statistics."""
    banned = [orjson.loads(line)["text"] for path in exclude
              for line in Path(path).read_bytes().splitlines() if line.strip()]
    texts = read_sources(data_dir, exclude=banned)
    labeller = SilverLabeller(common=common_words(t.text for t in texts))
    sentences, stats = build_silver(texts, labeller, progress=progress, ambiguous_cap=ambiguous_cap,
                                    no_org_ratio=no_org_ratio, seed=seed)
    if wordnet is not None:
        words = {fold(a.text) for a in labeller.universe.aliases if a.ambiguous}
        extra, wn_counts = wordnet_sentences(wordnet, words)
        sentences += extra
        stats["wordnet"] = wn_counts
        stats["license"] += "; " + WORDNET_LICENSE
    stats["sentences"] = len(sentences)
    write_conll(sentences, out)
    stats = {"sources": [rel for _, rel in SOURCES], "excluded_texts": len(banned), **stats}
    Path(str(out) + META_SUFFIX).write_bytes(orjson.dumps(stats, option=orjson.OPT_INDENT_2))
    return stats
