"""Feature statistics travel with a model folder (features.normalize), and new audio can be
standardised by its own speaker's or corpus's statistics: `EmotionRecognizer.adapt`,
`camser predict --adapt-from`, `camser evaluate --adapt` and `--restrict-labels`."""
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from camser.cli import main
from camser.errors import CamserError
from camser.inference.recognizer import EmotionRecognizer
from camser.training.train_model import train_model

from conftest import _tiny_cfg, write_tone
from test_inference import _ravdess

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def normalized(tiny_model_folder, tmp_path_factory):
    """The tiny corpus's model trained with corpus normalisation (2 epochs)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("adaptation") / "model"
    cfg = _tiny_cfg(tiny_model_folder.root, tiny_model_folder.encoder, "features.normalize=corpus")
    train_model(cfg, out, log=lambda m: None, progress=False)
    return SimpleNamespace(model_dir=out, plain=tiny_model_folder.model_dir)


def test_model_folder_keeps_the_training_statistics(normalized):
    meta = json.loads((normalized.model_dir / "camser.json").read_text())
    assert meta["normalize"] == "corpus" and (normalized.model_dir / "normalization.safetensors").is_file()
    r = EmotionRecognizer.from_pretrained(normalized.model_dir, device="cpu")
    assert set(r.normalization.mean) == {"mfcc", "spectrogram", "ssl"}
    assert r.normalization.mean["ssl"].ndim == 2                 # per layer and dimension
    assert not (normalized.plain / "normalization.safetensors").exists()


def test_adapt_changes_the_statistics_and_adapt_none_restores(normalized, tmp_path):
    r = EmotionRecognizer.from_pretrained(normalized.model_dir, device="cpu")
    talk = write_tone(tmp_path / "talk.wav", 4.0, f0=150)
    before = r.predict(talk).probabilities
    other = [write_tone(tmp_path / f"site{i}.wav", 3.0, f0=300 + 20 * i, seed=i) for i in range(3)]
    r.adapt(other)
    assert r.normalization is not r.training_normalization
    adapted = r.predict(talk).probabilities
    assert adapted != before
    r.adapt(None)
    assert r.predict(talk).probabilities == before
    r.adapt(tmp_path)                                         # a folder: every audio file below it
    assert r.normalization.source == "4 recording(s)"


def test_adapting_a_model_without_statistics_is_one_line(normalized, tmp_path):
    r = EmotionRecognizer.from_pretrained(normalized.plain, device="cpu")
    with pytest.raises(CamserError, match="features.normalize=none"):
        r.adapt([write_tone(tmp_path / "a.wav", 2.0)])


def test_predict_cli_adapt_from(normalized, tmp_path, capsys):
    talk = write_tone(tmp_path / "talk.wav", 4.0)
    folder = tmp_path / "speaker"
    folder.mkdir()
    for i in range(2):
        write_tone(folder / f"{i}.wav", 3.0, f0=250, seed=i)
    assert main(["predict", str(normalized.model_dir), str(talk), "--format", "json", "--device", "cpu"]) == 0
    plain = json.loads(capsys.readouterr().out)[0]["probabilities"]
    assert main(["predict", str(normalized.model_dir), str(talk), "--format", "json", "--device", "cpu",
                 "--adapt-from", str(folder)]) == 0
    adapted = json.loads(capsys.readouterr().out)[0]["probabilities"]
    assert adapted != plain


def test_serve_adapt_from_standardises_every_request_by_the_sites_statistics(normalized, tmp_path, monkeypatch):
    """`camser serve --adapt-from FOLDER`: the served recognizer uses the folder's statistics;
    /v1/model says whose statistics they are."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    import camser.serve.app as app_module
    from camser.serve.app import create_app
    served = {}
    monkeypatch.setattr(app_module, "serve", lambda recognizer, **kw: served.setdefault("r", recognizer))
    site = tmp_path / "site"
    site.mkdir()
    for i in range(2):
        write_tone(site / f"{i}.wav", 3.0, f0=260, seed=i)
    assert main(["serve", str(normalized.model_dir), "--device", "cpu", "--adapt-from", str(site)]) == 0
    r = served["r"]
    assert r.normalization is not r.training_normalization and r.normalization.source == "2 recording(s)"
    talk = write_tone(tmp_path / "talk.wav", 4.0)
    expected = EmotionRecognizer.from_pretrained(normalized.model_dir, device="cpu").adapt(site).predict(talk)
    client = TestClient(create_app(r))
    info = client.get("/v1/model").json()
    assert info["normalization"] == {"mode": "corpus", "statistics": "2 recording(s)"}
    with open(talk, "rb") as fh:
        got = client.post("/v1/predict", files={"file": ("talk.wav", fh, "audio/wav")}).json()
    assert got["label"] == expected.label
    assert max(abs(got["probabilities"][k] - v) for k, v in expected.probabilities.items()) < 1e-5


def test_evaluate_adapt_and_restricted_labels(normalized, tmp_path, capsys):
    corpus = _ravdess(tmp_path / "ravdess")
    runs = {}
    for adapt in ("none", "corpus", "speaker"):
        out = tmp_path / f"eval_{adapt}"
        assert main(["evaluate", str(normalized.model_dir), "--corpus", "ravdess", "--root", str(corpus),
                     "--out", str(out), "--device", "cpu", "--adapt", adapt]) == 0
        assert f"adapt {adapt}" in capsys.readouterr().out
        runs[adapt] = json.loads((out / "results.json").read_text())
        assert runs[adapt]["evaluation"]["adapt"] == adapt
        assert runs[adapt]["normalize"]["transductive"] is (adapt != "none")
    probs = {a: Path(tmp_path / f"eval_{a}/predictions.csv").read_text() for a in runs}
    assert len(set(probs.values())) == 3                       # three different standardisations

    assert main(["evaluate", str(normalized.model_dir), "--corpus", "ravdess", "--root", str(corpus),
                 "--out", str(tmp_path / "restricted"), "--device", "cpu", "--restrict-labels",
                 "--label-map", str(_write(tmp_path / "map.yaml", "happy: null\n"))]) == 0
    restricted = json.loads((tmp_path / "restricted/results.json").read_text())
    assert restricted["evaluation"]["decision_labels"] == ["ang", "sad", "neu"]
    confusion = np.array(restricted["folds"][0]["confusion"])
    assert confusion[:, restricted["labels"].index("hap")].sum() == 0      # never answers an unmapped class


def test_evaluate_adapt_needs_a_normalised_model(normalized, tmp_path, capsys):
    corpus = _ravdess(tmp_path / "ravdess")
    assert main(["evaluate", str(normalized.plain), "--corpus", "ravdess", "--root", str(corpus),
                 "--out", str(tmp_path / "e"), "--adapt", "speaker"]) == 2
    err = capsys.readouterr().err
    assert "features.normalize=none" in err and err.strip().count("\n") == 0


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
