"""Calibrated exits: expected calibration error, per-exit temperature (fit on dev, stored with the
model, applied to every exit path) and the normalisation flag a model carries."""

from __future__ import annotations

import tempfile

import pytest
import torch
from tinymodels import random_ids, tiny_classifier

from models.calibration import tune_temperature
from models.elbert import ElbertClassifier
from models.scoring import expected_calibration_error
from models.text import NORMALIZATION


def test_ece_by_hand() -> None:
    # bin (0.9, 0.95]: two samples, half right at confidence 0.95; bin (0.6, 0.6667]: two, all right at 0.6
    probs = torch.tensor([[0.95, 0.05], [0.95, 0.05], [0.6, 0.4], [0.6, 0.4]])
    gold = torch.tensor([0, 1, 0, 0])
    assert expected_calibration_error(probs, gold) == pytest.approx(0.5 * 0.45 + 0.5 * 0.4)
    assert expected_calibration_error(torch.tensor([[1.0, 0.0]]), torch.tensor([0])) == pytest.approx(0.0)


def test_temperature_undoes_overconfidence_and_keeps_every_argmax() -> None:
    gen = torch.Generator().manual_seed(0)
    n, c = 4000, 3
    logits = torch.randn(n, c, generator=gen) * 1.5
    gold = torch.distributions.Categorical(logits=logits).sample()  # calibrated at T = 1 by construction
    over = torch.softmax(logits * 3.0, -1)  # three times too sharp
    fitted = tune_temperature(torch.stack([over, torch.softmax(logits, -1)]), gold)
    assert fitted[0].item() == pytest.approx(3.0, rel=0.15)
    assert fitted[1].item() == pytest.approx(1.0, rel=0.15)
    rescaled = torch.softmax(over.log() / fitted[0], -1)
    assert torch.equal(rescaled.argmax(-1), over.argmax(-1))
    assert expected_calibration_error(rescaled, gold) < expected_calibration_error(over, gold) / 2


def test_a_models_temperature_scales_every_exit_and_survives_save_and_load() -> None:
    model = tiny_classifier("bert", layers=3)
    x, a = model.pad(random_ids(4, 0), model.pad_id)
    with torch.no_grad():
        before = model(x, a)
        model.set_temperature(torch.tensor([1.0, 2.0, 4.0]))
        after = model(x, a)
        torch.testing.assert_close(after, before / torch.tensor([1.0, 2.0, 4.0])[:, None, None])
        # the engine's path: per-row depths
        hidden = torch.randn(4, 5, model.backbone.hidden_size)
        mask = torch.ones(4, 5, dtype=torch.long)
        per_row = model.exit_logits(hidden, mask, torch.tensor([1, 2, 3, 3]))
        one = torch.stack([model.exit_logits(hidden[i : i + 1], mask[i : i + 1], d)[0]
                           for i, d in enumerate([1, 2, 3, 3])])  # fmt: skip
        torch.testing.assert_close(per_row, one)
    with tempfile.TemporaryDirectory() as out:
        model.save(out)
        loaded = ElbertClassifier.load(out, backbone=model.backbone, tokenizer=model.tokenizer)
        assert loaded.config.temperature == [1.0, 2.0, 4.0]
        with torch.no_grad():
            torch.testing.assert_close(loaded(x, a), after)


def test_an_unknown_text_normalization_is_refused() -> None:
    model = tiny_classifier("bert", layers=2)
    model.config.text_normalization = "finsent-v999"
    with pytest.raises(ValueError, match="text_normalization"):
        ElbertClassifier(model.backbone, model.config, model.tokenizer)
    model.config.text_normalization = NORMALIZATION
    ElbertClassifier(model.backbone, model.config, model.tokenizer)
