"""Company-name linking: universe and aliases, boundaries, common words, tagger path, gold set."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.linking import MENTION_BONUS, NAME_WEIGHT, Linker, NameMatcher, link
from pipeline.schemas import parse_input
from pipeline.universe import fold, generate_aliases, load_universe, load_word_list, read_company_csv

ROOT = Path(__file__).resolve().parents[1]
NOW = 1_710_423_000_000


@pytest.fixture(scope="module")
def universe():
    return load_universe()


@pytest.fixture(scope="module")
def linker(universe):
    return Linker(universe)


def syms(linker: Linker, text: str) -> list[str]:
    return [t.symbol for t in linker.link_text(text)]


# --------------------------------------------------------------------------------------------
# Alias generation and the universe


@pytest.mark.parametrize(
    ("name", "expected", "absent"),
    [
        ("Apple Inc.", ["Apple Inc", "Apple"], []),
        ("Tesla, Inc.", ["Tesla"], []),
        ("Arthur J. Gallagher & Co.", ["Arthur J. Gallagher"], ["Arthur J. Gallagher &"]),
        ("The Walt Disney Company", ["Walt Disney"], ["The Walt Disney Company"]),
        ("Rolls-Royce Holdings", ["Rolls-Royce", "Rolls Royce"], []),
        ("Nestlé SA", ["Nestlé", "Nestle"], []),
        ("J.B. Hunt", ["J.B. Hunt", "JB Hunt", "J. B. Hunt"], []),
        ("Marriott International", ["Marriott"], []),
        ("Eli Lilly and Company", ["Eli Lilly"], ["Eli Lilly and"]),
        ("Procter & Gamble", ["Procter & Gamble", "Procter and Gamble"], []),
        ("McDonald's", ["McDonald's", "McDonalds"], ["McDonald"]),
        ("Texas Instruments", ["Texas Instruments"], ["Texas"]),  # '!texas': never alone
        ("Rio Tinto (corporation)", ["Rio Tinto"], ["Rio Tinto (corporation)"]),
        ("Ford Motor Company", ["Ford Motor Company", "Ford Motor", "Ford"], []),
    ],
)
def test_generate_aliases(name: str, expected: list[str], absent: list[str]) -> None:
    got = generate_aliases(name)
    assert got[0] != ""
    for a in expected:
        assert a in got, (a, got)
    for a in absent:
        assert a not in got, (a, got)


def test_primary_symbols_and_other_listings(universe) -> None:
    assert universe.company("AAPL").name == "Apple Inc."
    assert universe.company("BRK.B").symbol == "BRK.B"  # class shares with a dot
    assert universe.company("BRK-B").symbol == "BRK.B"
    assert universe.company("GOOG").symbol == "GOOGL"  # one company, two classes
    assert universe.company("SAP.DE").symbol == "SAP"  # US listing (ADR) is primary
    assert universe.company("SHEL.L").symbol == "SHEL"
    assert universe.company("SIE.DE").symbol == "SIE.DE"  # no US listing: home listing
    assert universe.company("RACE.MI").symbol == "RACE"
    assert universe.resolve("SHEL.L") == "SHEL"
    assert universe.resolve("BRK-B") == "BRK.B"
    assert universe.resolve("GOOG") == "GOOG"  # a US class stays as written
    assert universe.resolve("ZZZZ") == "ZZZZ"  # unknown: as written
    assert len(universe) > 800


def test_ambiguity_and_case_rules(universe) -> None:
    def alias(text: str):
        return next(a for a in universe.lookup(text) if a.text == text)

    for word in [
        "Apple",
        "Target",
        "Gap",
        "Ford",
        "Visa",
        "Block",
        "Snap",
        "Meta",
        "Amazon",
        "Shell",
        "Oracle",
    ]:
        assert alias(word).ambiguous and alias(word).case == "title", word
    assert not alias("Nvidia").ambiguous and alias("Nvidia").case == "any"
    assert not alias("Ford Motor").ambiguous
    assert alias("AMD").case == "exact" and alias("AAPL").is_symbol
    assert alias("Best Buy").ambiguous  # a common phrase
    assert universe.lookup("Texas") == [] and universe.lookup("Nasdaq") == []  # never alone
    assert universe.lookup("COST") == []  # a ticker that is a word is no bare alias
    assert universe.company("AAPL").ambiguous and not universe.company("NVDA").ambiguous


def test_alias_clashes(universe) -> None:
    # "Siemens" is Siemens' own name and only a shortened "Siemens Energy": the name wins
    assert [a.symbol for a in universe.lookup("Siemens")] == ["SIE.DE"]
    # "Merck" is the name of two companies; the curated CSV gives it to Merck & Co.
    assert [a.symbol for a in universe.lookup("Merck")] == ["MRK"]
    assert {a.symbol for a in universe.lookup("Google")} == {"GOOGL"}


def test_word_list_format(tmp_path: Path) -> None:
    p = tmp_path / "w.txt"
    p.write_text("# comment\napple\n!united  # never\n~intel\n\nBest Buy\n", encoding="utf-8")
    w = load_word_list(p)
    assert w.ambiguous == {"apple", "best buy"} and w.never == {"united"} and w.caps == {"intel"}
    assert w.is_ambiguous("APPLE") and w.is_ambiguous("United") and not w.is_ambiguous("Intel")


def test_fold_keeps_length() -> None:
    for s in ["Apple’s", "İstanbul Apple", "Coca–Cola", "ǅemal"]:
        assert len(fold(s)) == len(s)
    assert fold("Apple’s") == "apple's"


# --------------------------------------------------------------------------------------------
# User CSV


def test_user_csv_extends_and_overrides(tmp_path: Path) -> None:
    csv = tmp_path / "companies.csv"
    csv.write_text(
        "symbol,name,aliases\n"
        "# a new company, an alias added, one removed, one taken from another company\n"
        "ACME,Acme Widgets Inc.,Acme|Roadrunner Corp\n"
        "NVDA,,Team Green\n"
        "AAPL,,-Apple Computer\n"
        "ACME,,Facebook\n"
        "brk-b,Berkshire Hathaway Inc.,\n",
        encoding="utf-8",
    )
    u = load_universe(csv)
    lk = Linker(u)
    assert u.company("ACME").name == "Acme Widgets Inc."
    assert syms(lk, "Acme Widgets posts record quarter") == ["ACME"]
    assert syms(lk, "roadrunner corp shares") == []  # multi-word aliases need capitals
    assert syms(lk, "Roadrunner Corp shares") == ["ACME"]
    assert syms(lk, "Team Green wins again") == ["NVDA"]
    assert syms(lk, "Apple Computer was its old name") == []
    assert syms(lk, "Facebook outage") == ["ACME"]  # claimed by the CSV: taken from META
    assert u.company("BRK.B").name == "Berkshire Hathaway Inc."  # symbol normalised, name replaced


def test_user_csv_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("AAPL,Apple,x,y\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.csv:1"):
        read_company_csv(bad)
    bad.write_text("not a symbol!,Name\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad symbol"):
        read_company_csv(bad)
    bad.write_text("NEWCO,,alias\n", encoding="utf-8")
    with pytest.raises(ValueError, match="needs a name"):
        load_universe(bad)
    with pytest.raises(FileNotFoundError):
        load_universe(tmp_path / "missing.csv")


# --------------------------------------------------------------------------------------------
# Boundaries and explicit forms


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$AAPL.", ["AAPL"]),
        ("AAPL's chart", ["AAPL"]),
        ("$BRK.B hits a record", ["BRK.B"]),
        ("BRK.B and BF.B", ["BRK.B", "BF.B"]),
        ("NASDAQ:AAPL closes higher", ["AAPL"]),
        ("Ford Motor (NYSE: F) rises", ["F"]),
        ("(NYSE: F)", ["F"]),
        ("LON:SHEL falls", ["SHEL"]),  # London listing -> the US symbol
        ("EPA:MC slips", ["MC.PA"]),  # no US listing -> the home symbol
        ("Nvidia's results", ["NVDA"]),
        ("Nvidia’s results", ["NVDA"]),  # curly apostrophe
        ("Amazon.com shares", ["AMZN"]),
        ("Coca–Cola and Coca Cola", ["KO"]),  # en dash and space variants
        ("#Nvidia trending", ["NVDA"]),
        ("AAPLX is a fund", []),  # not at a word boundary
        ("xNvidia", []),
        ("$Nvidia", []),  # '$' + word is neither a cashtag nor a name
        ("GOOG vs GOOGL", ["GOOG", "GOOGL"]),
    ],
)
def test_boundaries_and_explicit_forms(linker, text: str, expected: list[str]) -> None:
    assert syms(linker, text) == expected


def test_spans_point_at_the_mention(linker) -> None:
    text = "Shares of Apple Inc. (NASDAQ: AAPL) and Nvidia's chips"
    links = {t.symbol: t for t in linker.link_text(text)}
    assert text[slice(*links["AAPL"].span)] == "NASDAQ: AAPL"  # the explicit mention is shown
    assert links["AAPL"].method == "exchange"
    assert text[slice(*links["NVDA"].span)] == "Nvidia" and links["NVDA"].method == "name"


def test_longest_alias_wins(universe) -> None:
    m = NameMatcher(universe)
    assert [(a.symbol, a.text) for _, _, a in m.find("Siemens Energy and Ford Motor Company")] == [
        ("ENR.DE", "Siemens Energy"),
        ("F", "Ford Motor Company"),
    ]


# --------------------------------------------------------------------------------------------
# Common words


@pytest.mark.parametrize(
    "text",
    [
        "Apple pie recipes for fall",
        "apple shares recipes",  # lower case never matches an ambiguous name
        "hit the target",
        "the gap between yields",
        "Ford the river",
        "Amazon rainforest fires",
        "Visa requirements tighten",
        "a block of shares",
        "Snap election called",
        "Meta-analysis of trials",
        "Harrison Ford says he will not retire",  # a person's name voids the cue
        "S&P 500 and Nasdaq close higher",
        "The Best Buy-and-Hold Stocks",
    ],
)
def test_common_words_do_not_link(linker, text: str) -> None:
    assert syms(linker, text) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Apple shares rise", ["AAPL"]),
        ("Target's CEO steps down", ["TGT"]),
        ("Gap shares jump", ["GAP"]),
        ("Ford recalls trucks", ["F"]),
        ("Chevron to buy Hess", ["CVX"]),
        ("Shares of Snap plunge", ["SNAP"]),
        ("META up 3% premarket", ["META"]),
        ("Ford (F) rises", ["F"]),
        ("Apple, Microsoft and Nvidia rally", ["AAPL", "MSFT", "NVDA"]),  # list cue
        ("Berkshire $BRK.B", ["BRK.B"]),  # corroborated by the cashtag
        ("Gap's Old Navy", ["GAP"]),  # corroborated by an unambiguous alias
    ],
)
def test_common_words_with_cues(linker, text: str, expected: list[str]) -> None:
    assert syms(linker, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a corporate action verb, in a text about money or markets
        ("Oracle signs $30 billion cloud deal", ["ORCL"]),
        ("Williams wins Wimbledon title in straight sets", []),  # no money, no market words
        # a proper noun standing on its own mid-sentence, in a text about money
        ("A software outage costs Delta $500 million", ["DAL"]),
        ("Sewage spill closes beaches across Devon", []),  # not about money
        ("Floods in the Amazon cut soybean exports 10%", []),  # "the Amazon"
        ("Dental insurer Delta Dental raises premiums 5%", []),  # glued to another capitalised word
        # a possessive opening a sentence, in a text about money
        ("Meta's Reality Labs loses $4.5 billion in the quarter", ["META"]),
        ("Apple prices soar 20% as frost hits orchards", []),  # a plain word opening a sentence
    ],
)
def test_names_used_as_companies_in_money_texts(linker, text: str, expected: list[str]) -> None:
    assert syms(linker, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a capitalised possessive that owns a named brand, unit or product (no money words needed)
        ("Meta's Threads passes 300 million users", ["META"]),
        ("Amazon's Kuiper satellites reach orbit", ["AMZN"]),
        ("Rain in the Amazon's Rio Negro basin eases drought", []),  # "the Amazon's"
        ("Target's outer ring was hit twice by the archer", []),  # owns no named thing, no market words
        # a name and another proper name as subject of a plural corporate verb, or "to" + one
        ("Oracle and OpenAI expand their data center deal", ["ORCL"]),
        ("Ford and Hyundai develop a shared battery", ["F"]),  # Hyundai is not in the universe
        ("Ford and Carter walk the red carpet", []),  # not a corporate verb
        # the last name of a list with a plural corporate or price-move verb, in a money text
        ("Unity and Adobe sink 5% in a software selloff", ["U", "ADBE"]),
        ("Unity and Peace march through Berlin", []),  # no verb of ours, no money
        # a price-move verb after one name, in a money text
        ("Persimmon jumps 7% on upbeat completions", ["PSN.L"]),
        # an alias that is itself a possessive, opening a sentence in a money text
        ("Domino's delivery sales rise 3%", ["DPZ"]),
        # "to" + a corporate action verb
        ("Tyson to host investor day in March", ["TSN"]),
        ("Neil deGrasse Tyson to host a new science series", []),  # a person: surname particle
        ("Vincent van Gogh's Sunflowers sells for $40 million", []),  # likewise (Gogh is no company)
    ],
)
def test_more_context_cues(linker, text: str, expected: list[str]) -> None:
    assert syms(linker, text) == expected


def test_a_name_followed_by_a_us_state_is_a_town_whatever_the_tagger_says(universe) -> None:
    tagger = FakeTagger({"Dover": 0.99, "Corning": 0.99})
    lk = Linker(universe, tagger)
    assert syms(lk, "Dover, Delaware, approves bond issue for new water plant") == []
    assert syms(lk, "Corning, New York, wins $5 million state grant") == []
    assert syms(lk, "Corning, Texas Instruments and Nvidia rally") == ["GLW", "TXN", "NVDA"]  # a list, not a town
    assert syms(lk, "Dover (NYSE: DOV), Delaware-based rival, rises") == ["DOV"]  # corroborated


def test_fallback_none_needs_corroboration(universe) -> None:
    strict = Linker(universe, fallback="none")
    assert syms(strict, "Apple shares rise") == []
    assert syms(strict, "Apple (NASDAQ: AAPL) shares rise") == ["AAPL"]
    with pytest.raises(ValueError):
        Linker(universe, fallback="maybe")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# The tagger path (a fake org_spans: this tests the disambiguation logic, not a model)


class FakeTagger:
    """ORG spans for the given surface words, with a fixed confidence; counts its calls."""

    def __init__(self, orgs: dict[str, float]) -> None:
        self.orgs = orgs
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> list[list[tuple[int, int, float]]]:
        self.calls.append(list(texts))
        out = []
        for t in texts:
            spans = []
            for word, conf in self.orgs.items():
                i = t.find(word)
                if i >= 0:
                    spans.append((i, i + len(word), conf))
            out.append(spans)
        return out


def test_tagger_decides_ambiguous_names(universe) -> None:
    tagger = FakeTagger({"Apple": 0.98, "Target": 0.3})
    strict = Linker(universe, tagger, fallback="none")
    (a,) = strict.link_text("Apple's Reality Labs lose money")  # no cue: only the tagger can tell
    assert (a.symbol, a.method, a.confidence, a.relevance) == ("AAPL", "name", 0.98, NAME_WEIGHT)
    assert syms(strict, "Target shares fall") == []  # below the ORG threshold
    assert syms(strict, "Ford recalls trucks") == []  # not ORG
    assert syms(strict, "Nvidia rises") == ["NVDA"]  # unambiguous names need no tagger
    # the default fallback: context cues settle what the tagger did not confirm
    lk = Linker(universe, tagger)
    assert syms(lk, "Target shares fall") == ["TGT"] and syms(lk, "Ford recalls trucks") == ["F"]
    assert [t.confidence for t in lk.link_text("Target shares fall")] == [None]  # a cue, not the tagger
    assert syms(lk, "Ford pickup trucks") == []  # neither


@pytest.mark.parametrize(
    ("org", "text", "expected"),
    [
        # an ORG entity that is a longer name is another organisation
        ("Ford Foundation", "Ford Foundation pledges $1 billion to racial justice", []),
        ("Harrison Ford", "Harrison Ford stars in a new thriller", []),
        ("Duke University", "Duke University endowment returns 11%", []),
        # ... unless what it adds is a legal suffix or a possessive
        ("Target Corp.", "Target Corp. opens 20 stores in Texas", ["TGT"]),
        ("Apple's", "Apple's services revenue hits a record", ["AAPL"]),
        # the tagger marked the name alone, but a capitalised word is glued to it: a longer name
        ("Hilton", "Hilton Head island tourism rebounds", []),
        ("Williams", "Fed's Williams expects inflation to ease", []),
        ("Chase", "Chase Elliott wins the NASCAR race at Daytona", []),
        # an all-caps word after it is no name ("Caterpillar CEO"); title case proves nothing
        ("Caterpillar", "Caterpillar CEO warns of a tariff hit", ["CAT"]),
        ("Hilton", "Hilton Names New Chief Financial Officer", ["HLT"]),
        ("Apple", "Analysts like Apple again", ["AAPL"]),
    ],
)
def test_tagger_entity_must_be_the_name(universe, org: str, text: str, expected: list[str]) -> None:
    assert syms(Linker(universe, FakeTagger({org: 0.99}), fallback="none"), text) == expected


def test_tagger_runs_once_per_batch_on_texts_that_need_it(universe) -> None:
    tagger = FakeTagger({"Apple": 0.9, "Amazon": 0.9})
    lk = Linker(universe, tagger)
    texts = ["Nvidia rises", "Apple pie", "$AAPL up", "Amazon and Apple", "Apple (NASDAQ: AAPL)"]
    out = lk.link_texts(texts)
    assert tagger.calls == [["Apple pie", "Amazon and Apple"]]  # only unresolved ambiguous names
    assert [[t.symbol for t in links] for links in out] == [
        ["NVDA"],
        ["AAPL"],  # the fake tags every "Apple": the tagger is trusted
        ["AAPL"],
        ["AMZN", "AAPL"],
        ["AAPL"],
    ]
    assert all(t.confidence is None for t in out[2])  # explicit: no tagger confidence


def test_tagger_result_count_is_checked(universe) -> None:
    lk = Linker(universe, lambda texts: [])
    with pytest.raises(ValueError, match="tagger returned"):
        lk.link_text("Apple pie")


# --------------------------------------------------------------------------------------------
# Relevance, messages, the module-level link()


def test_relevance_formula(linker) -> None:
    rel = {t.symbol: t.relevance for t in linker.link_text("Nvidia and Microsoft; Nvidia again, then $AAPL")}
    assert rel["NVDA"] == pytest.approx(min(1.0, NAME_WEIGHT * 1.0 + MENTION_BONUS))  # 2 mentions
    assert rel["MSFT"] == pytest.approx(NAME_WEIGHT * 0.8)  # rank 1, name only
    assert rel["AAPL"] == pytest.approx(1.0 * 0.6)  # rank 2, explicit
    assert all(0 < r <= 1 for r in rel.values())


def test_module_link_and_feed_resolution() -> None:
    raw = {
        "id": "x",
        "text": "Apple shares and Siemens slip",
        "published_at": NOW,
        "tickers": ["BRK-B", "SHEL.L"],
    }
    links = link(parse_input(orjson.dumps(raw), now_ms=NOW))
    assert [(t.symbol, t.method) for t in links] == [
        ("BRK.B", "feed"),
        ("AAPL", "name"),
        ("SHEL", "feed"),
        ("SIE.DE", "name"),
    ]


# --------------------------------------------------------------------------------------------
# The gold set: tests/fixtures/linking_gold.jsonl

sys.path.insert(0, str(ROOT))
from bench.linking import BLIND, evaluate, load_gold, oracle_tagger

#: config -> (slice, min precision, min recall): the issue's goal (P >= 0.95, R >= 0.90) on the
#: whole set, with and without the tagger. ``development`` leaves out the 100 texts written blind
#: to test the cue rules (tag ``heldout-cues``), where the cues' recall is 0.63 and the candidate
#: generator itself (the oracle) finds only 0.84 of the links (lower-case names, names outside the
#: universe): bench/linking.py reports every slice.
GOLD_THRESHOLDS: dict[str, tuple[str, float, float]] = {
    "cues": ("all", 0.95, 0.90),
    "oracle": ("development", 0.95, 0.95),
    "tagger": ("all", 0.95, 0.90),
}


def test_gold_set_shape() -> None:
    gold = load_gold()
    assert len(gold) >= 200
    assert len({g["id"] for g in gold}) == len(gold) and len({g["text"] for g in gold}) == len(gold)
    assert sum("ambiguous-word" in g["tags"] for g in gold) >= 50
    assert sum("ambiguous-company" in g["tags"] for g in gold) >= 50
    assert sum(not g["symbols"] for g in gold) >= 20


@pytest.mark.parametrize("config", sorted(GOLD_THRESHOLDS))
def test_gold_precision_recall(universe, config: str) -> None:
    gold_slice, p_min, r_min = GOLD_THRESHOLDS[config]
    gold = load_gold()
    if gold_slice == "development":
        gold = [g for g in gold if BLIND not in g["tags"]]
    if config == "cues":
        lk = Linker(universe)
    elif config == "oracle":
        lk = Linker(universe, oracle_tagger(universe, gold), fallback="none")
    else:  # the shipped tagger artifact, as `finsent worker --tagger default` runs it
        from models.tagger import TokenTagger

        lk = Linker(universe, TokenTagger.load().org_spans)
    res = evaluate(lk, gold)
    assert res["precision"] >= p_min and res["recall"] >= r_min, (
        res["precision"],
        res["recall"],
        res["errors"],
    )


# --------------------------------------------------------------------------------------------
# finsent link


def test_cli_link_prints_one_line_per_text_in_order(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["link", "Apple shares rise", "Apple pie recipes", "$BRK.B and (NYSE: F)"])
    assert res.exit_code == 0, res.output
    lines = [orjson.loads(x) for x in res.stdout.splitlines()]
    assert [x["text"] for x in lines] == ["Apple shares rise", "Apple pie recipes", "$BRK.B and (NYSE: F)"]
    assert lines[0]["links"] == [
        {"symbol": "AAPL", "span": [0, 5], "method": "name", "relevance": NAME_WEIGHT, "confidence": None}
    ]
    assert lines[1]["links"] == []
    assert [(x["symbol"], x["method"]) for x in lines[2]["links"]] == [
        ("BRK.B", "cashtag"),
        ("F", "exchange"),
    ]

    csv = tmp_path / "c.csv"
    csv.write_text("ACME,Acme Widgets,\n", encoding="utf-8")
    res = runner.invoke(
        app, ["link", "--companies", str(csv), "--fallback", "none"], input="Acme Widgets up\n\n"
    )
    assert res.exit_code == 0, res.output
    assert [orjson.loads(x)["links"][0]["symbol"] for x in res.stdout.splitlines()] == ["ACME"]
    res = runner.invoke(app, ["link", "--fallback", "maybe", "x"])
    assert res.exit_code == 2


def test_cli_link_help_shows_the_output_format_intact() -> None:
    """Rich markup took "[start, end]" for a style tag and printed `"span": , "method"`."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    res = CliRunner().invoke(app, ["link", "--help"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())  # however the terminal width wrapped it
    assert '{"text", "links": [{"symbol", "span": [start, end], "method", "relevance", "confidence"}]}' in text
    assert "confidence: the ORG tagger's confidence (0..1)" in text


def test_cli_link_with_the_tagger_gives_its_confidence_for_the_names_it_settled() -> None:
    """`finsent link --tagger default`: a name only the (shipped) tagger could settle carries the
    tagger's confidence; explicit and unambiguous mentions carry none (null)."""
    from typer.testing import CliRunner

    from pipeline.cli import app
    from pipeline.linking import ORG_THRESHOLD

    texts = ["Persimmon completions rise 7% as mortgage rates ease", "$AAPL and Nvidia close at a record"]
    res = CliRunner().invoke(app, ["link", "--tagger", "default", "--fallback", "none", *texts])
    assert res.exit_code == 0, res.output
    first, second = (orjson.loads(x)["links"] for x in res.stdout.splitlines())
    # --fallback none: no cue could have accepted it, so the tagger did, at or above the threshold
    assert [(x["symbol"], x["method"]) for x in first] == [("PSN.L", "name")]
    assert ORG_THRESHOLD <= first[0]["confidence"] <= 1.0
    assert [(x["symbol"], x["method"], x["confidence"]) for x in second] == [
        ("AAPL", "cashtag", None), ("NVDA", "name", None),
    ]  # fmt: skip


# --------------------------------------------------------------------------------------------
# Hostile text

_PIECES = st.sampled_from(
    [
        "Apple",
        "apple",
        "$AAPL",
        "AAPL's",
        " ",
        "’s",
        "NASDAQ:",
        "(NYSE: F)",
        "İ",
        "ǅ",
        "Ford",
        "—",
        "$",
        ".",
        "Nvidia",
    ]
)


@given(st.lists(st.one_of(_PIECES, st.text(max_size=8)), max_size=30).map("".join))
@settings(max_examples=300, deadline=None)
def test_link_never_raises_and_spans_are_in_range(linker, text: str) -> None:
    for t in linker.link_text(text):
        assert t.span is not None and 0 <= t.span[0] < t.span[1] <= len(text)
        assert 0 < t.relevance <= 1
