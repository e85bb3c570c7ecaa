"""features.augment: speed and noise copies of training utterances, cached beside the originals;
training sets only, and no statistic ever sees a copy."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import _tiny_cfg, prepared_corpus

from camser.augment import (
    augment_waveform,
    augmented_copies,
    augmented_length,
    copy_specs,
    original_id,
)
from camser.config import load_config
from camser.demo import tiny_wav2vec2
from camser.errors import ConfigError
from camser.types import Utterance

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
SR = 16_000


def _tone(f0: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)


def _peak_hz(y: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / SR)[spectrum.argmax()])


def test_speed_copies_change_tempo_and_pitch_together():
    y = _tone(200.0)
    for speed in (0.9, 1.1):
        z = augment_waveform(y, SR, f"speed{speed:g}", "u1")
        assert abs(len(z) - augmented_length(len(y), f"speed{speed:g}")) <= 1
        assert abs(len(z) - len(y) / speed) <= 1                      # 1.1: shorter
        assert _peak_hz(z) == pytest.approx(200.0 * speed, abs=3)     # and higher
    assert augment_waveform(y, SR, None, "u1") is y                   # originals untouched


def test_noise_copies_have_the_asked_snr_and_a_fixed_noise_per_utterance():
    y = _tone(300.0, 2.0)
    spec = copy_specs([], [10.0], seed=3)[0]
    assert spec == "noise10db-seed3"
    a, b = augment_waveform(y, SR, spec, "u1"), augment_waveform(y, SR, spec, "u1")
    np.testing.assert_array_equal(a, b)                                 # same copy every extraction
    noise = a - y
    snr = 10 * np.log10(np.mean(y.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
    assert snr == pytest.approx(10.0, abs=0.3)
    assert not np.array_equal(augment_waveform(y, SR, spec, "u2"), a)   # another utterance, another noise
    assert not np.array_equal(augment_waveform(y, SR, "noise10db-seed4", "u1"), a)


def test_copies_are_utterances_of_their_own():
    u = Utterance("Ses01F_a", "/c/a.wav", "ang", "Ses01F", "Ses01", 3.0)
    copies = augmented_copies([u], copy_specs([0.9], [20.0]))
    assert [c.id for c in copies] == ["Ses01F_a@speed0.9", "Ses01F_a@noise20db-seed0"]
    assert [c.augment for c in copies] == ["speed0.9", "noise20db-seed0"]
    assert copies[0].duration_s == pytest.approx(3.0 / 0.9) and copies[1].duration_s == 3.0
    assert {c.speaker for c in copies} == {"Ses01F"} and {c.label for c in copies} == {"ang"}
    assert {original_id(c.id) for c in copies} == {u.id} and original_id(u.id) == u.id
    # a corpus's own "@" is part of its id, not a copy's mark
    at = Utterance("spk@site_1", "/c/b.wav", "ang", "spk", "site", 3.0)
    assert original_id(at.id) == at.id and original_id("spk@speed") == "spk@speed"
    assert {original_id(c.id) for c in augmented_copies([at], copy_specs([1.1], [10.0]))} == {at.id}


@pytest.mark.parametrize("override,field", [
    ("features.augment.speeds=[3.0]", "features.augment.speeds[0]"),
    ("features.augment.speeds=[0]", "features.augment.speeds[0]"),
    ("features.augment.noise_snr_db=[100]", "features.augment.noise_snr_db[0]"),
    ("features.augment.seed=-1", "features.augment.seed"),
    ("features.augment.test_time=true", "features.augment.test_time"),     # no copies to score
])
def test_bad_augment_values_are_named(override, field):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=[override])
    assert str(e.value).startswith(field)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("augment")
    prepared_corpus(root, n_sessions=3, utterances_per_speaker=6)
    return root, tiny_wav2vec2(root / "encoder")


def _cfg(workspace, *overrides):
    root, encoder = workspace
    return _tiny_cfg(root, encoder, f"features.cache_dir={root / 'cache'}", "train.max_epochs=1",
                     "output.tsne=false", *overrides)


def test_copies_train_only_and_no_statistic_sees_them(workspace, tmp_path, monkeypatch):
    """The training set of a fold gets the copies of its training utterances, never of a
    validation or test utterance; speaker statistics are those of the original audio alone."""
    from camser.protocols import make_folds
    from camser.training import cv
    from camser.training.experiment import prepare_data

    plain = prepare_data(_cfg(workspace, "features.normalize=speaker"), {"mfcc", "spectrogram", "ssl"},
                         progress=False)
    cfg = _cfg(workspace, "features.augment.speeds=[0.9, 1.1]", "features.augment.noise_snr_db=[10]",
               "features.normalize=speaker")
    data = prepare_data(cfg, {"mfcc", "spectrogram", "ssl"}, progress=False)
    assert data.utterances == plain.utterances and len(data.augmented) == 3 * len(data.utterances)
    store = data.stores["ssl"]
    assert len(store) > len(plain.stores["ssl"]) and store.path != plain.stores["ssl"].path
    # a copy's rows differ from its original's (it is other audio), and the originals' rows are
    # the ones the plain store holds
    first = data.utterances[0].id
    rows = {seg.utterance_id: r for r, seg in enumerate(store.index)}
    assert not np.allclose(store.array[rows[first]], store.array[rows[f"{first}@noise10db-seed0"]])
    np.testing.assert_array_equal(store.array[rows[first]],
                                  plain.stores["ssl"].array[{s.utterance_id: r for r, s in
                                                             enumerate(plain.stores["ssl"].index)}[first]])

    a, b = cv.speaker_statistics(cfg, data, log=lambda m: None), cv.speaker_statistics(cfg, plain, log=lambda m: None)
    for key in a.sums:                                   # the copies are not in any statistic
        np.testing.assert_allclose(a.sums[key].s1, b.sums[key].s1, rtol=1e-6)
        np.testing.assert_allclose(a.sums[key].count, b.sums[key].count)

    fold = make_folds(data.utterances, cfg.protocol)[0]
    seen = {}

    class Stop(Exception):
        pass

    def fake_fit(model, stores, train, val, *args, **kwargs):
        seen["train"], seen["val"] = list(train.utterance_ids), list(val.utterance_ids)
        raise Stop
    monkeypatch.setattr(cv, "fit", fake_fit)
    with pytest.raises(Stop):
        cv.train_split(cfg, data, fold, 0, None, log=lambda m: None)
    trained = set(seen["train"])
    assert {original_id(i) for i in trained} == set(fold.train_ids)
    assert {f"{i}@speed0.9" for i in fold.train_ids} <= trained          # every training copy trains
    held = set(fold.val_ids) | set(fold.test_ids)
    assert not {i for i in trained if original_id(i) in held}           # no copy of a held-out one
    assert all("@" not in i for i in seen["val"])


def test_a_cross_validation_with_copies_runs_and_they_refuse_utterance_models(workspace, tmp_path):
    from camser.training.cv import run_cv
    torch.set_num_threads(1)
    lines = []
    results = run_cv(_cfg(workspace, "features.augment.speeds=[1.1]", "protocol.folds=[1]"), tmp_path / "run",
                     log=lines.append, progress=False)
    (fold,) = results["folds"]
    assert results["config"]["features"]["augment"]["speeds"] == [1.1] and fold["n_test"] > 0
    n_train = int(next(line for line in lines if "train " in line and "utterances" in line).split("train ")[1].split(",")[0])
    assert n_train > 0
    # a random guess has no vectors of pooled frames for the copies to add rows to
    with pytest.raises(ConfigError, match="features.augment: model.name random"):
        run_cv(_cfg(workspace, "features.augment.speeds=[1.1]", "model={name: random}", "protocol.folds=[1]"),
               tmp_path / "random", log=lambda m: None, progress=False)


def test_a_probe_trains_on_the_copies_and_averages_its_test_views(workspace, tmp_path, monkeypatch):
    """model.name linear with features.augment: the fit holds the utterances it fits (training
    and, as the probe always does, validation speakers) and their copies, no test speaker's;
    test_time averages each test utterance's probabilities over the original and its copies;
    speaker statistics come from original audio."""
    from camser.models.classic import LinearProbe
    from camser.training import cv
    from camser.training.experiment import prepare_data
    cfg = _cfg(workspace, "features.augment.speeds=[0.9, 1.1]", "features.augment.test_time=true",
               "model={name: linear, C: 0.1, std: true}", "protocol.folds=[1]")
    data = prepare_data(cfg, {"ssl"}, progress=False)
    inputs = cv.utterance_inputs(cfg, data)
    assert inputs.copies and len(inputs.ids) == 3 * len(data.utterances) == len(inputs.matrix)
    from camser.protocols import make_folds
    fold = make_folds(data.utterances, cfg.protocol)[0]
    fitted = []
    original_fit = LinearProbe.fit

    def spy(self, X, y, groups=None):
        fitted.append((len(X), set(groups)))
        return original_fit(self, X, y, groups=groups)

    monkeypatch.setattr(LinearProbe, "fit", spy)
    model, proba = cv._fitted_utterance_model(inputs, fold, 0, with_validation=True)
    (n_fit, speakers), = fitted
    assert n_fit == 3 * (len(fold.train_ids) + len(fold.val_ids))      # originals + 2 copies each
    assert not speakers & set(fold.test_speakers)
    test = list(fold.test_ids)
    views = proba(test)
    plain = proba(test, test_time=False)
    for k, uid in enumerate(test[:5]):
        copies = proba([f"{uid}@speed0.9", f"{uid}@speed1.1"], test_time=False)
        assert views[k] == pytest.approx((plain[k] + copies.sum(0)) / 3, abs=1e-9)
    assert np.abs(views - plain).max() > 1e-6
    # speaker-normalised: each speaker's statistics from its originals only
    from camser.features.normalize import normalize_vectors
    speaker_of = {u.id: u.speaker for u in data.every_utterance}
    groups = np.array([speaker_of[i] for i in inputs.ids])
    originals = np.array([original_id(i) == i for i in inputs.ids])
    X = normalize_vectors(inputs.matrix, groups, "speaker", counted=originals)
    for g in set(groups):
        m = (groups == g) & originals
        assert np.abs(X[m].mean(0)).max() < 1e-6
        assert np.abs(X[(groups == g) & ~originals].mean(0)).max() > 1e-3     # copies are not what it averages


def test_test_time_copies_average_each_views_probabilities(workspace, tmp_path):
    """features.augment.test_time: a test utterance's probabilities are the mean of its own
    (pooled over its segments) and each copy's; training is unchanged."""
    from camser.features.batches import segment_set
    from camser.metrics import pool_segments
    from camser.training.cv import build_for_data, run_cv, softmax, with_test_time_copies
    from camser.training.experiment import prepare_data
    from camser.training.trainer import predict_segments
    torch.set_num_threads(1)
    cfg = _cfg(workspace, "features.augment.speeds=[0.9, 1.1]", "features.augment.test_time=true")
    data = prepare_data(cfg, {"mfcc", "spectrogram", "ssl"}, progress=False)
    model, batch_fn = build_for_data(cfg, data, 0)
    ids = [u.id for u in data.utterances[:4]]
    test = segment_set(data.stores, ids, data.label_index())
    model.fit_normalizers(data.stores, test.rows)

    def pooled(uids):
        segs = segment_set(data.stores, uids, data.label_index())
        return softmax(pool_segments(segs.utterance_ids, predict_segments(model, data.stores, segs, 8, "cpu",
                                                                          batch_fn=batch_fn))[1])
    logp = predict_segments(model, data.stores, test, 8, "cpu", batch_fn=batch_fn)
    got = with_test_time_copies(logp, test, model, data, cfg, batch_fn)
    expected = (pooled(ids) + pooled([f"{i}@speed0.9" for i in ids]) + pooled([f"{i}@speed1.1" for i in ids])) / 3
    for uid, p in zip(test.utterance_ids, np.exp(got)):
        np.testing.assert_allclose(p, expected[ids.index(uid)], rtol=1e-5)
    assert not np.allclose(expected, pooled(ids), atol=1e-4)        # the copies do change the answer

    run_cv(_cfg(workspace, "features.augment.speeds=[0.9, 1.1]", "protocol.folds=[1]"), tmp_path / "a",
           log=lambda m: None, progress=False)
    tta = run_cv(load_config(None, ["protocol.folds=[1]"], data=cfg.to_dict()), tmp_path / "b",
                 log=lambda m: None, progress=False)
    def history(run):
        (fold,) = (tmp_path / run).glob("folds/*/result.json")
        return json.loads(fold.read_text())["history"]
    assert history("b") == history("a")                                      # the same training
    assert (tmp_path / "b/predictions.csv").read_text() != (tmp_path / "a/predictions.csv").read_text()
    assert tta["config"]["features"]["augment"]["test_time"] is True
    # the originals-only scores ride along, equal to the run without test-time copies
    plain = json.loads((tmp_path / "a/results.json").read_text())
    assert tta["folds"][0]["originals_only"]["ua"] == pytest.approx(plain["folds"][0]["ua"])
    assert tta["summary"]["originals_only"]["ua_mean"] == pytest.approx(plain["summary"]["ua_mean"])
    assert "Test-time augmentation" in (tmp_path / "b/report.md").read_text()
