"""pipeline.novelty: which texts are one story, what a signature holds, and how novelty decays in
the story index (point in time, windowed)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pipeline import novelty as nv
from pipeline.novelty import (
    BANDS,
    DEFAULT_WINDOW_S,
    EMPTY,
    MAX_CHARS,
    NUM_PERM,
    SIGNATURE_WIDTH,
    Story,
    StoryIndex,
    anchors,
    band_keys,
    band_keys_batch,
    compatible,
    normalize,
    normalize_many,
    novelty,
    pack_keys,
    same_story,
    signature,
    signatures,
    similarity,
)

# ------------------------------------------------------------------ normalize


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("RT @jim_trades: $TSLA recalls 2,000 cars", "tsla recalls 2000 cars"),
        ("RT @a: RT @b: Fed holds rates", "fed holds rates"),
        ("Fed holds rates https://t.co/AbC123", "fed holds rates"),
        ("Fed holds rates (more: https://www.reuters.com/x?y=1) today", "fed holds rates more today"),
        ("$TRX http://stks.co/1KkK Long setup", "trx long setup"),
        ("Fed holds rates via @Reuters", "fed holds rates"),
        ("@jim @ann Fed holds rates #fomc #rates", "fed holds rates"),
        ("Fed holds #rates steady", "fed holds rates steady"),  # a hashtag inside the text is a word
        ("$BRK.B up 3.5% to $1,234.50", "brk.b up 3.5 to 1234.50"),
        ("Moody's cuts Party City", "moodys cuts party city"),
        ("Fed holds rates &amp; signals cuts", "fed holds rates signals cuts"),
        ("Breaking the bank is hard", "breaking the bank is hard"),  # a tag word without its separator
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize(
    "prefixed",
    [
        "BREAKING: {}", "Breaking News: {}", "JUST IN: {}", "UPDATE 2-{}", "RPT-UPDATE 1-{}", "EXCLUSIVE-{}",
        "(Reuters) - {}", "NEW YORK (Reuters) - {}", "LONDON, June 3 (Reuters) - {}", "Reuters: {}",
        "{} - Bloomberg", "{} | CNBC", "{} (Reuters)", "*BREAKING* {}", "🚨 {} 🚨", "🚨BREAKING🚨 {}",
        "* {}", ">> {}",
    ],
)
def test_wire_prefixes_and_credits_go(prefixed: str) -> None:
    story = "Apple beats estimates and raises its guidance"
    assert normalize(prefixed.format(story)) == normalize(story) == "apple beats estimates and raises its guidance"


def test_cashtags_keep_their_symbol_so_template_stories_differ() -> None:
    assert normalize("$AAPL beats estimates") == "aapl beats estimates"
    assert normalize("$MSFT beats estimates") == "msft beats estimates"
    assert not same_story("$AAPL beats estimates", "$MSFT beats estimates")


def test_a_trailing_ellipsis_takes_the_cut_word_with_it() -> None:
    assert normalize("Apple beats estimates and raises guid…") == "apple beats estimates and raises"
    assert normalize("Apple beats estimates and raises guid ...") == "apple beats estimates and raises"
    assert normalize("Apple beats estimates and raises guidance...") == "apple beats estimates and raises"


@pytest.mark.parametrize("text", ["", "   ", "https://t.co/abc", "@jim @ann", "🚀🚀🚀", "#stocks #markets", "... !!!",
                                  "RT @jim:", "\u200b\u200b"])
def test_nothing_left_is_empty(text: str) -> None:
    assert normalize(text) == ""
    sig = signature(text)
    assert nv.is_empty(sig)
    assert band_keys(sig) == []
    assert similarity(sig, sig) == 0.0  # an empty text is no story: it matches nothing, not even itself


@pytest.mark.parametrize(
    ("tricky", "plain"),
    [
        ("Ap\u200bple beats estimates", "Apple beats estimates"),  # zero-width space inside a word
        ("App\u00adle beats\u2060 estimates", "Apple beats estimates"),  # soft hyphen, word joiner
        ("\ufeffApple beats estimates", "Apple beats estimates"),  # BOM
        ("ＡＰＰＬＥ ｂｅａｔｓ ｅｓｔｉｍａｔｅｓ", "APPLE beats estimates"),  # fullwidth letters
        ("Apple\u00a0beats\u2009estimates", "Apple beats estimates"),  # no-break and thin spaces
        ("“Apple” beats estimates — again", "Apple beats estimates again"),
        ("Apple beats estimates\nagain", "Apple beats estimates again"),
    ],
)
def test_unicode_tricks(tricky: str, plain: str) -> None:
    assert normalize(tricky) == normalize(plain)


def test_a_100_kb_text_is_cheap_and_reads_only_its_bounded_prefix() -> None:
    text = "Apple beats estimates and raises guidance " * 2500 + "TAIL WORDS NEVER READ"
    assert len(text) > 100_000
    t0 = time.perf_counter()
    for _ in range(20):
        norm = normalize(text)
        sig = signature(text)
    per_call = (time.perf_counter() - t0) / 20
    assert per_call < 0.01  # the first MAX_CHARS characters only: about a millisecond, not 50
    assert norm == normalize(text[:MAX_CHARS])
    assert "tail" not in norm
    assert np.array_equal(sig, signature(text[:MAX_CHARS]))


def test_normalize_is_idempotent_and_the_batch_agrees() -> None:
    texts = ["RT @jim: $TSLA recalls 2,000 cars https://t.co/x #EV", "NEW YORK (Reuters) - Apple beats - Bloomberg",
             "Ｆｕｌｌ width ‘quotes’…", "U.S. stocks rise... more at stks.co/abc", "", "EUR 21.1 mn , up 5 %"]
    once = normalize_many(texts)
    assert once == [normalize(t) for t in texts]
    assert normalize_many(once) == once


# ------------------------------------------------------------------ same story

POSITIVES = [
    ("$AAPL beats estimates, raises guidance", "RT @trader: $AAPL beats estimates, raises guidance https://t.co/xYz"),
    ("Apple beats estimates and raises its full-year guidance on strong iPhone demand",
     "BREAKING: Apple beats estimates and raises its full-year guidance on strong iPh…"),
    ("Glencore to refinance its short-term debt early, shares rise",
     "GLENCORE TO REFINANCE ITS SHORT-TERM DEBT EARLY, SHARES RISE"),
    ("Glencore to refinance its short-term debt early, shares rise",
     "glencore to refinance its short-term debt early; shares rise!! #mining #stocks"),
    ("$XOM - Exxon Mobil raises dividend to $0.87 https://t.co/AAA",
     "$XOM - Exxon Mobil raises dividend to $0.87 https://t.co/BBB via @SeekingAlpha"),
]

NEGATIVES = [
    ("$AAPL beats estimates", "$MSFT beats estimates"),  # same template, another company
    ("$UBER - Uber CEO comments on London license loss", "$LYFT - Uber CEO comments on London license loss"),
    ("Apple raises dividend to $0.24 a share", "Apple raises dividend to $0.25 a share"),  # another number
    ("Tesla delivered 343,830 vehicles in the third quarter", "Tesla delivered 466,140 vehicles in the third quarter"),
    ("$AAPL to buy $SHAZ for $400 million", "$SHAZ to buy $AAPL for $400 million"),  # the names change places
    ("$AAPL beats estimates on services growth", "$AAPL cuts guidance on weak iPhone sales in China"),  # same ticker
    ("Fed holds rates steady", "Oil falls as inventories rise"),
]


@pytest.mark.parametrize(("a", "b"), POSITIVES)
def test_copies_are_the_same_story(a: str, b: str) -> None:
    assert same_story(a, b)
    assert same_story(b, a)


@pytest.mark.parametrize(("a", "b"), NEGATIVES)
def test_look_alikes_are_different_stories(a: str, b: str) -> None:
    assert not same_story(a, b)
    assert not same_story(b, a)


def test_anchors_and_their_compatibility() -> None:
    found = anchors("$UBER - Uber CEO comments on London license loss")
    assert {"$uber", "uber", "ceo", "london"} <= set(found)  # the cashtag and the name are two anchors
    assert "uber>ceo" in found  # names in order
    assert anchors("APPLE BEATS ESTIMATES") == []  # ALL CAPS marks no names
    assert anchors("Glencore Agrees To Sell Minority Stake") == []  # nor does Title Case
    assert anchors("apple beats", entities=["AAPL"]) == ["=AAPL"]
    full = signature("Apple beats estimates, Cook says")
    cut = signature("Apple beats estim…")
    other = signature("Microsoft beats estimates, Nadella says")
    assert compatible(full, cut) and compatible(cut, full)
    assert not compatible(full, other)


def test_signature_anchor_columns_are_the_bloom_filter_of_anchors() -> None:
    for text in ["$UBER - Uber CEO comments on London license loss", "Tesla delivered 343,830 vehicles in Q3",
                 "APPLE BEATS ESTIMATES", "eBay $EBAY nears deal to sell StubHub for $4 billion", ""]:
        found = anchors(text)
        expected = np.zeros(nv.ANCHOR_COLUMNS, dtype=np.uint32)
        if found:
            expected = nv._bloom(1, np.zeros(len(found), dtype=np.int64),
                                 np.array([nv._anchor_hash(a) for a in found], dtype=np.uint64))[0]
        assert np.array_equal(signature(text)[NUM_PERM:], expected), text


def test_linked_entities_are_anchors() -> None:
    texts = ["Shares of the carmaker rise on strong deliveries"] * 3
    sigs = signatures(texts, entities=[["TSLA"], ["F"], []])
    assert similarity(sigs[0], sigs[1]) == 0.0  # another company
    assert similarity(sigs[0], sigs[2]) == 1.0  # no entity is a subset of any
    with pytest.raises(ValueError):
        signatures(texts, entities=[["TSLA"]])


# ------------------------------------------------------------------ signatures and band keys

MIXED = [
    "$AAPL beats estimates, raises guidance https://t.co/x",
    "",
    "one",
    "Ｆｕｌｌ width and Ünïcode ß 🚀 text",
    ("The international electronic industry company Elcoteq has laid off tens of employees from its Tallinn "
     "facility ; contrary to earlier layoffs the company contracted the ranks of its office workers , the daily "
     "Postimees reported ."),
    "https://t.co/only-a-link",
    "Apple beats estimates " * 400,
]


def test_batch_signatures_equal_per_text_signatures() -> None:
    batch = signatures(MIXED)
    assert batch.shape == (len(MIXED), SIGNATURE_WIDTH) and batch.dtype == np.uint32
    for row, text in zip(batch, MIXED, strict=True):
        assert np.array_equal(row, signature(text)), text
    assert signatures([]).shape == (0, SIGNATURE_WIDTH)


#: signature("Apple beats estimates")[:4] and its first band key under SIGNATURE_VERSION "novelty-v2"
GOLDEN_FIRST_VALUES = [567845518, 1943747486, 232246503, 2234980783]
GOLDEN_FIRST_KEY = 0x0FCA778D05F1E584


def test_signatures_are_stable_across_processes_and_releases() -> None:
    # Band keys and signatures are stored (e.g. in Redis) and compared later: changing the
    # normalisation, the shingles or the hash constants must come with a new SIGNATURE_VERSION.
    sig = signature("Apple beats estimates")
    assert nv.SIGNATURE_VERSION == "novelty-v2"
    assert sig[:4].tolist() == GOLDEN_FIRST_VALUES
    assert band_keys(sig)[0] == GOLDEN_FIRST_KEY


@pytest.mark.parametrize("jaccard", [0.2, 0.5, 0.8])
def test_minhash_estimates_jaccard(jaccard: float) -> None:
    # 1-gram sets of 100 words with a known overlap (lowercase letters only: no anchors)
    def word(n: int) -> str:
        return "".join("abcdefghijklmnopqrstuvwxyz"[int(d)] for d in str(n)) + "q"

    errors = []
    for k in range(20):
        shared = round(200 * jaccard / (1 + jaccard))
        words = [word(1000 * k + i) for i in range(100)]
        b = " ".join(words[:shared] + [word(1000 * k + 500 + i) for i in range(100 - shared)])
        a = " ".join(words)
        true = shared / (200 - shared)
        sa, sb = signatures([a, b], ngrams=(1,))
        errors.append(abs(similarity(sa, sb) - true))
    assert np.mean(errors) < 0.06  # 64 independent permutations: std ~0.06 per pair, mean error ~0.05
    assert max(errors) < 0.25


def test_band_keys() -> None:
    sigs = signatures(["Apple beats estimates", "RT @x: Apple beats estimates https://t.co/y", "Oil falls"])
    keys = band_keys_batch(sigs)
    assert [len(k) for k in keys] == [BANDS] * 3
    assert keys[0] == keys[1]  # the same normalised text: every band agrees
    assert not set(keys[0]) & set(keys[2])
    assert all(isinstance(k, int) and 0 <= k < 1 << 64 for k in keys[0])
    assert keys == [band_keys(row) for row in sigs]
    assert len(set(keys[0])) == BANDS
    # the band number keeps equal values in two bands apart
    same = sigs[:1].copy()
    same[0, :NUM_PERM] = 7
    assert len(set(band_keys(same[0]))) == BANDS
    packed = pack_keys(keys[0])
    assert len(packed) == 8 * BANDS
    assert [int.from_bytes(packed[8 * i:8 * i + 8], "big") for i in range(BANDS)] == keys[0]
    assert np.all(sigs[:, :NUM_PERM] != EMPTY)


# ------------------------------------------------------------------ novelty and the story index


def test_novelty_decays_like_ravenpack() -> None:
    assert [novelty(k) for k in range(4)] == [1.0, 0.75, 0.5625, 0.421875]
    with pytest.raises(ValueError):
        novelty(-1)


STORY = "Apple beats estimates and raises its full-year guidance on strong iPhone demand"
COPIES = [f"RT @trader: {STORY}", f"BREAKING: {STORY} https://t.co/abc", STORY.upper(), f"{STORY[:60]}…"]
OTHER = "Oil falls as US crude inventories rise for a third week"


def _index(texts: list[str]) -> tuple[StoryIndex, np.ndarray]:
    return StoryIndex(), signatures(texts)


def test_repeats_decay_and_another_story_stays_new() -> None:
    index, sigs = _index([STORY, *COPIES, OTHER])
    got = [index.assign(f"d{i}", s, 1000 + i) for i, s in enumerate(sigs)]
    assert got[0] == Story("d0", 0, 1.0)
    assert [g.story_id for g in got[:5]] == ["d0"] * 5
    assert [g.novelty for g in got[:5]] == [1.0, 0.75, 0.5625, 0.421875, 0.75**4]
    assert got[5] == Story("d5", 0, 1.0)
    assert len(index) == 2


def test_a_story_ends_after_the_window() -> None:
    index, sigs = _index([STORY, COPIES[0], COPIES[1]])
    assert index.assign("a", sigs[0], 0).novelty == 1.0
    assert index.assign("b", sigs[1], DEFAULT_WINDOW_S - 1).novelty == 0.75
    late = index.assign("c", sigs[2], 2 * DEFAULT_WINDOW_S + 10)  # a day after the last copy
    assert late == Story("c", 0, 1.0)


def test_only_documents_inside_the_window_count() -> None:
    index = StoryIndex(window_s=100)
    sig = signature(STORY)
    assert [index.assign(f"d{t}", sig, t).repeats_before for t in (0, 60, 120, 150)] == [0, 1, 1, 2]


def test_point_in_time_a_late_document_counts_only_what_was_published_before_it() -> None:
    index, sigs = _index([STORY, COPIES[0], COPIES[1]])
    assert index.assign("later", sigs[0], 500).repeats_before == 0
    early = index.assign("earlier", sigs[1], 100)  # arrives after, was published before
    assert early.repeats_before == 0 and early.novelty == 1.0
    assert index.assign("latest", sigs[2], 900).repeats_before == 2
    assert index.assign("later", sigs[0], 500) == Story("later", 0, 1.0)  # its answer does not change


def test_equal_publication_times_are_ordered_by_doc_id() -> None:
    index, sigs = _index([STORY, COPIES[0]])
    assert index.assign("b", sigs[0], 100).repeats_before == 0
    assert index.assign("a", sigs[1], 100).repeats_before == 0  # "a" sorts before "b": nothing before it
    index2, _ = _index([])
    assert index2.assign("a", sigs[1], 100).repeats_before == 0
    assert index2.assign("b", sigs[0], 100).repeats_before == 1


def test_empty_texts_are_never_a_story_together() -> None:
    index, sigs = _index(["https://t.co/a", "https://t.co/b"])
    assert index.assign("x", sigs[0], 1) == Story("x", 0, 1.0)
    assert index.assign("y", sigs[1], 2) == Story("y", 0, 1.0)


def test_template_stories_stay_apart_in_the_index() -> None:
    index, sigs = _index(["$AAPL beats estimates", "$MSFT beats estimates", "RT @x: $AAPL beats estimates"])
    got = index.assign_many(["a", "m", "a2"], sigs, [1, 2, 3])
    assert [(g.story_id, g.repeats_before) for g in got] == [("a", 0), ("m", 0), ("a", 1)]


def test_old_stories_are_dropped() -> None:
    index = StoryIndex(window_s=100, max_lateness_s=10)
    sigs = signatures([f"Company number {i} reports results for quarter {i}" for i in range(50)])
    for i, s in enumerate(sigs):
        index.assign(f"d{i}", s, i * 50)
    assert len(index) < 10
    assert len(index.band_to_story) <= len(index) * BANDS
