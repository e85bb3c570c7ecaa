"""Seed ensembles in a model folder: `camser train` with train.ensemble: N saves N members as one
model, and predict / the ONNX export average their probabilities."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from camser.errors import ConfigError
from camser.inference.recognizer import EmotionRecognizer
from camser.models import load_pretrained
from camser.models.ensemble import Ensemble
from camser.training.train_model import train_model


@pytest.fixture(scope="module")
def ensemble_folder(tiny_model_folder):
    out = tiny_model_folder.root / "ensemble"
    train_model(tiny_model_folder.cfg("train.ensemble=2", "train.max_epochs=1"), out, log=lambda m: None,
                progress=False)
    return out


def test_train_saves_the_members_as_one_model(ensemble_folder, tiny_model_folder):
    import json
    model = load_pretrained(ensemble_folder)
    assert isinstance(model, Ensemble) and len(model.members) == 2
    a, b = (dict(m.named_parameters()) for m in model.members)
    assert any(not torch.equal(a[k], b[k]) for k in a)             # two seeds, two different members
    meta = json.loads((ensemble_folder / "camser.json").read_text())
    assert [m["seed"] for m in meta["training"]["members"]] == [0, 1] and meta["model_name"] == "camser"
    assert not list(ensemble_folder.glob("checkpoint*.pt"))


def test_predictions_average_the_members_probabilities(ensemble_folder, tiny_model_folder):
    rec = EmotionRecognizer.from_pretrained(ensemble_folder, device="cpu")
    assert isinstance(rec.model, Ensemble)
    members = [EmotionRecognizer(m.eval(), rec.labels, rec.cfg, device="cpu") for m in rec.model.members]
    for utterance in tiny_model_folder.utterances[:2]:
        pred = rec.predict(utterance.path)
        alone = [m.predict(utterance.path) for m in members]
        for k, segment in enumerate(pred.segments):        # each segment: the members' mean probability
            mean = np.mean([[a.segments[k].probabilities[label] for label in rec.labels] for a in alone], 0)
            np.testing.assert_allclose([segment.probabilities[label] for label in rec.labels], mean, atol=1e-5)


def test_an_ensemble_of_finetuned_encoders_is_refused_before_training(tiny_model_folder, tmp_path):
    cfg = tiny_model_folder.cfg("train.ensemble=2", "train.mode=finetune", "features.ssl.layer=last")
    with pytest.raises(ConfigError, match="train.ensemble"):
        train_model(cfg, tmp_path / "m", log=lambda m: None, progress=False)
    assert not (tmp_path / "m" / "camser.json").exists()


def test_the_onnx_export_runs_the_whole_ensemble(ensemble_folder, tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    pytest.importorskip("onnxscript", reason="the onnx extra is not installed")
    from camser.inference.onnx_export import export_onnx
    info = export_onnx(ensemble_folder, tmp_path / "ensemble.onnx", source="features", log=lambda m: None)
    assert info["max_abs_diff"] < 1e-4             # onnxruntime against the torch ensemble
    rec = EmotionRecognizer.from_pretrained(ensemble_folder, device="cpu", onnx=tmp_path / "ensemble.onnx")
    assert rec.model is None and len(rec.labels) == 4


def test_members_with_a_frame_encoder_of_their_own_can_be_ensembled():
    """Query2Label's self-attention encoder over cached frames is not an SSL encoder reading audio:
    only members that read raw audio (a fine-tuned SSL encoder inside) are refused."""
    from camser.models import build_model
    section = {"name": "query2label", "feature": "ssl", "d_model": 8, "heads": 2, "ffn_dim": 16, "encoder_layers": 1}
    members = [build_model(section, 4, {"ssl": (10, 16)}) for _ in range(2)]
    ensemble = Ensemble.of(members)
    out = ensemble({"ssl": torch.randn(3, 10, 16)})
    assert out.shape == (3, 4) and torch.allclose(out.exp().sum(1), torch.ones(3), atol=1e-5)
