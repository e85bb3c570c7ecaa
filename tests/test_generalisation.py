"""What makes a model generalise across speakers (issue: accuracy on real speech): feature
normalisation (corpus: strict; speaker: transductive, and labelled so), the linear probe with
C chosen on inner speaker folds, training levers (optimiser, schedule, label smoothing,
mixup, frame masking, whole-utterance examples, seed ensembles) and SSL frame pooling."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import prepared_corpus
from test_baselines import make_cfg as baseline_cfg

from camser.config import TrainConfig, load_config
from camser.demo import tiny_wav2vec2
from camser.errors import ConfigError
from camser.features.normalize import (
    SpeakerStatistics,
    frame_group_sums,
    normalize_vectors,
)
from camser.training.cv import fold_normalizer, run_cv
from camser.training.trainer import lr_factor, make_optimizer, mask_frames, mixup
from camser.types import Segment, Utterance

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A prepared synthetic corpus (3 sessions × 2 speakers, 4 classes) and a tiny random wav2vec2."""
    root = tmp_path_factory.mktemp("generalisation")
    prepared_corpus(root)
    return SimpleNamespace(root=root, encoder=tiny_wav2vec2(root / "encoder"))


def make_cfg(ws, model: dict, *overrides):
    """The baselines' tiny experiment, 3 epochs at most."""
    return baseline_cfg({"root": ws.root, "encoder": ws.encoder}, model, "train.max_epochs=3",
                        "train.min_epochs=1", *overrides)


def cv(cfg, out):
    return run_cv(cfg, out, log=lambda m: None, progress=False)


# ---------------------------------------------------------------- normalisation statistics

def _frames_corpus(rng, n_frames=6):
    """Four speakers × 3 utterances × 1 segment of (T, 2) frames; speaker s offset by 10·s."""
    utts, index, rows = [], [], []
    for s in range(4):
        for i in range(3):
            uid = f"s{s}_u{i}"
            utts.append(Utterance(uid, f"{uid}.wav", "neu", f"spk{s}", f"spk{s}", 1.0))
            index.append(Segment(uid, 0, 0, 16000))
            rows.append(rng.normal(10.0 * s, 1.0 + s, size=(n_frames, 2)))
    return utts, index, np.stack(rows).astype(np.float32)


def test_corpus_statistics_never_see_a_test_speaker():
    rng = np.random.default_rng(0)
    utts, index, array = _frames_corpus(rng)
    fold = SimpleNamespace(train_speakers=["spk0", "spk1"], val_speakers=["spk2"], test_speakers=["spk3"])
    cfg = SimpleNamespace(features=SimpleNamespace(normalize="corpus"))
    before = fold_normalizer(cfg, SpeakerStatistics({"mfcc": array}, index, utts, 16000), fold)
    changed = array.copy()
    changed[9:] = 1e6                                       # the test speaker's rows
    after = fold_normalizer(cfg, SpeakerStatistics({"mfcc": changed}, index, utts, 16000), fold)
    assert torch.equal(before.mean["mfcc"], after.mean["mfcc"]) and torch.equal(before.std["mfcc"], after.std["mfcc"])
    expected = array[:9].reshape(-1, 2)                     # training + validation speakers' frames
    np.testing.assert_allclose(before.mean["mfcc"][0], expected.mean(0), rtol=1e-5)
    np.testing.assert_allclose(before.std["mfcc"][0], expected.std(0), rtol=1e-3)


def test_speaker_statistics_use_each_speakers_own_audio_only():
    rng = np.random.default_rng(1)
    utts, index, array = _frames_corpus(rng)
    stats = SpeakerStatistics({"mfcc": array}, index, utts, 16000)
    norm = stats.normalizer("speaker")
    rows = np.arange(len(array))
    out = norm({"mfcc": torch.from_numpy(array.copy())}, rows)["mfcc"].numpy()
    for s in range(4):                                      # every speaker ~ zero mean, unit std
        block = out[3 * s:3 * s + 3].reshape(-1, 2)
        np.testing.assert_allclose(block.mean(0), 0.0, atol=1e-4)
        np.testing.assert_allclose(block.std(0), 1.0, atol=1e-2)
    changed = array.copy()
    changed[9:] += 100.0                                    # speaker 3 changes; the others don't move
    other = SpeakerStatistics({"mfcc": changed}, index, utts, 16000).normalizer("speaker")
    assert torch.equal(other.mean["mfcc"][:3], norm.mean["mfcc"][:3])
    assert not torch.equal(other.mean["mfcc"][3], norm.mean["mfcc"][3])
    with pytest.raises(ValueError):
        stats.normalizer("corpus")                          # a strict statistic must name its speakers


def test_padding_frames_are_left_out_and_stay_zero():
    array = np.zeros((2, 4, 3), dtype=np.float32)
    array[:, :2] = 5.0                                      # half of each segment is real, then zero padding
    sums = frame_group_sums(array, np.array([0, 0]), 1, valid=np.array([0.5, 0.5]))
    mean, std = sums.stats()
    np.testing.assert_allclose(mean, 5.0)
    assert sums.count[0] == 4
    utts = [Utterance("a", "a.wav", "neu", "s", "s", 0.5), Utterance("b", "b.wav", "neu", "s", "s", 0.5)]
    index = [Segment("a", 0, 0, 16000), Segment("b", 0, 0, 16000)]
    norm = SpeakerStatistics({"ssl": array}, index, utts, 16000).normalizer("speaker")
    out = norm({"ssl": torch.from_numpy(array.copy())}, np.array([0, 1]))["ssl"]
    assert torch.all(out[:, 2:] == 0)


def test_stacked_layers_get_statistics_per_layer():
    rng = np.random.default_rng(2)
    array = rng.normal(size=(5, 3, 4, 2)).astype(np.float32)     # (n, L, T, D)
    array[:, 1] += 50.0
    mean, _ = frame_group_sums(array, np.zeros(5, dtype=np.int64), 1).stats()
    assert mean.shape == (3, 2)
    np.testing.assert_allclose(mean[1], array[:, 1].reshape(-1, 2).mean(0), rtol=1e-5)


def test_vector_normalisation_modes():
    X = np.array([[1.0], [3.0], [10.0], [30.0]])
    groups = np.array(["a", "a", "b", "b"])
    s = normalize_vectors(X, groups, "speaker")
    np.testing.assert_allclose(s.ravel(), [-1, 1, -1, 1], atol=1e-4)
    c = normalize_vectors(X, groups, "corpus", fit_rows=[0, 1])
    np.testing.assert_allclose(c.ravel(), (X.ravel() - 2.0) / 1.0, rtol=1e-4)
    np.testing.assert_array_equal(normalize_vectors(X, groups, "none"), X)


# ---------------------------------------------------------------- configuration

@pytest.mark.parametrize("override, field", [
    ("features.normalize=per_speaker", "features.normalize"),
    ("train.optimizer=lamb", "train.optimizer"),
    ("train.schedule=step", "train.schedule"),
    ("train.unit=frame", "train.unit"),
    ("train.label_smoothing=1.5", "train.label_smoothing"),
    ("train.ema=1.0", "train.ema"), ("train.speaker_adversarial=-1", "train.speaker_adversarial"),
    ("train.speaker_adversarial=0.5 train.mixup=0.2", "train.speaker_adversarial"), ("train.frame_mask=1.0", "train.frame_mask"),
    ("train.ensemble=0", "train.ensemble"),
    ("train.mixup=-1", "train.mixup"),
    ("train.mixup=0.2 train.unit=utterance", "train.mixup"),
])
def test_bad_lever_values_are_one_line_errors(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")) as e:
        load_config(None, override.split())
    assert "\n" not in str(e.value)


def test_linear_probe_fields_checked(ws):
    with pytest.raises(ConfigError, match="model.C"):
        cv(make_cfg(ws, {"name": "linear", "C": [0.1, -1]}), ws.root / "bad")
    with pytest.raises(ConfigError, match="model.layer"):
        cv(make_cfg(ws, {"name": "linear", "layer": "first"}), ws.root / "bad2")


# ---------------------------------------------------------------- training levers

def test_optimizer_is_really_chosen():
    params = [torch.nn.Parameter(torch.zeros(2))]
    for name, cls in (("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)):
        assert type(make_optimizer(params, TrainConfig(optimizer=name))) is cls


def test_warmup_then_cosine_schedule():
    cfg = TrainConfig(schedule="cosine", warmup_epochs=1, max_epochs=5)
    factors = [lr_factor(step, 10, cfg) for step in range(50)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:])) and factors[-1] < 0.01
    assert lr_factor(30, 10, TrainConfig()) == 1.0           # constant: the default, unchanged


def test_frame_mask_zeroes_one_span_in_every_frame_feature():
    torch.manual_seed(0)
    batch = {"mfcc": torch.ones(4, 100, 3), "ssl": torch.ones(4, 2, 50, 5), "valid": torch.ones(4)}
    out = mask_frames({k: v.clone() for k, v in batch.items()}, 0.5)
    for k, t_axis in (("mfcc", 1), ("ssl", 2)):
        dropped = (out[k] == 0).all(dim=-1)
        dropped = dropped if dropped.dim() == 2 else dropped.all(dim=1)
        frac = dropped.float().mean(1)
        assert torch.all(frac <= 0.5 + 1e-6) and frac.sum() > 0
    assert torch.equal(out["valid"], batch["valid"])


def test_mixup_mixes_inputs_and_keeps_the_longer_valid():
    torch.manual_seed(0)
    batch = {"ssl": torch.arange(4.0).reshape(4, 1), "valid": torch.tensor([0.2, 1.0, 0.5, 0.7])}
    out, y_a, y_b, lam = mixup(batch, torch.tensor([0, 1, 2, 3]), 0.4)
    perm = y_b
    np.testing.assert_allclose(out["ssl"].ravel(), lam * batch["ssl"].ravel() + (1 - lam) * batch["ssl"].ravel()[perm])
    assert torch.all(out["valid"] >= batch["valid"])


class _Linear(torch.nn.Module):
    """The smallest model fit() trains (rows of ``batch["x"]`` → 2 classes)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 2)

    def forward(self, batch):
        return self.lin(batch["x"])

    def training_loss(self, logits, target, label_smoothing=0.0):
        return torch.nn.functional.cross_entropy(logits, target, label_smoothing=label_smoothing)


class _Embedding(_Linear):
    """_Linear that also returns its output as the fused vector (what an adversary reads)."""

    def forward(self, batch, return_embeddings=False):
        logits = self.lin(batch["x"])
        return (logits, {"fused": logits}) if return_embeddings else logits


def _fit_in_memory(cfg, checkpoint=None, log=lambda m: None, on_step=None, model_cls=None, **kwargs):
    """fit() on 40 training and 20 validation rows held in memory; ``on_step(model)`` after
    every optimiser step."""
    from camser.features.batches import SegmentSet
    from camser.training import trainer
    torch.manual_seed(0)
    x = torch.randn(60, 4)
    y = (x[:, 0] > 0).long().numpy()
    model = (model_cls or _Linear)()

    def segs(rows):
        return SegmentSet(rows, y[rows], [f"u{i}" for i in rows])

    step = trainer.train_step

    def recording_step(m, *args, **kwargs):
        loss = step(m, *args, **kwargs)
        if on_step is not None:
            on_step(m)
        return loss
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer, "train_step", recording_step)
        result = trainer.fit(model, {}, segs(np.arange(40)), segs(np.arange(40, 60)), ["a", "b"], cfg, seed=3,
                             checkpoint=checkpoint, log=log,
                             batch_fn=lambda stores, s, idx: {"x": x[s.rows[idx]]}, **kwargs)
    return result, model


def _killed_after_epoch_2_then_resumed(cfg, tmp_path, **kwargs):
    """:func:`_fit_in_memory` killed after its second epoch, then resumed from the checkpoint."""
    class Killed(Exception):
        pass

    def kill_after_epoch_2(line):
        if line.startswith("epoch   2"):
            raise Killed
    with pytest.raises(Killed):
        _fit_in_memory(cfg, checkpoint=tmp_path / "ck.pt", log=kill_after_epoch_2, **kwargs)
    return _fit_in_memory(cfg, checkpoint=tmp_path / "ck.pt", **kwargs)[0]


def test_weight_ema_is_what_validation_scores_and_fit_keeps(tmp_path):
    cfg = TrainConfig(batch_size=4, max_epochs=3, keep="last", lr=0.1, ema=0.8, device="cpu")
    raw = []
    result, model = _fit_in_memory(cfg, on_step=lambda m: raw.append(m.lin.weight.detach().clone()))
    expected = raw[0]                        # the first update copies the weights, then decays
    for w in raw[1:]:
        expected = 0.8 * expected + 0.2 * w
    torch.testing.assert_close(result.best_state["lin.weight"], expected)
    torch.testing.assert_close(model.lin.weight.detach(), expected)        # the model ends on them too
    assert not torch.allclose(expected, raw[-1])

    off, _ = _fit_in_memory(TrainConfig(batch_size=4, max_epochs=3, keep="last", lr=0.1, device="cpu"))
    torch.testing.assert_close(off.best_state["lin.weight"], raw[-1])    # ema: 0 → the last weights

    resumed = _killed_after_epoch_2_then_resumed(cfg, tmp_path)        # the average survives a kill
    torch.testing.assert_close(resumed.best_state["lin.weight"], expected)


def test_gradient_reversal_flips_and_scales_the_gradient():
    from camser.training.trainer import GradientReversal
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    out = GradientReversal.apply(x, 0.3)
    assert torch.equal(out, x)
    (out * torch.tensor([2.0, 5.0])).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([-0.6, -1.5]))


def test_speaker_adversary_trains_beside_the_model_and_survives_a_kill(tmp_path):
    """train.speaker_adversarial: the adversary learns the training speakers (its accuracy is
    in the history), changes what the model learns, and is checkpointed with it."""
    speakers = np.arange(40) % 4                     # four speakers among the 40 training rows
    cfg = TrainConfig(batch_size=4, max_epochs=3, keep="last", lr=0.05, speaker_adversarial=1.0, device="cpu")
    adv, model = _fit_in_memory(cfg, model_cls=_Embedding, speakers=speakers)
    assert all(0.0 <= h["train_speaker_acc"] <= 1.0 for h in adv.history)
    plain, _ = _fit_in_memory(TrainConfig(batch_size=4, max_epochs=3, keep="last", lr=0.05, device="cpu"),
                              model_cls=_Embedding)
    assert "train_speaker_acc" not in plain.history[0]
    assert not torch.allclose(adv.best_state["lin.weight"], plain.best_state["lin.weight"])
    assert set(model.state_dict()) == {"lin.weight", "lin.bias"}      # the model never holds the adversary

    resumed = _killed_after_epoch_2_then_resumed(cfg, tmp_path, model_cls=_Embedding, speakers=speakers)
    torch.testing.assert_close(resumed.best_state["lin.weight"], adv.best_state["lin.weight"])
    assert resumed.history == adv.history

    with pytest.raises(ConfigError, match="train.speaker_adversarial: this model does not return"):
        _fit_in_memory(cfg, speakers=speakers)                    # _Linear has no fused vector
    with pytest.raises(ConfigError, match="train.speaker_adversarial: .*no speakers"):
        _fit_in_memory(cfg, model_cls=_Embedding)


# ---------------------------------------------------------------- end to end

def test_linear_probe_chooses_C_on_inner_speaker_folds_and_labels_normalisation(ws, tmp_path):
    cfg = make_cfg(ws, {"name": "linear", "C": [0.01, 1.0], "inner_folds": 2, "std": True}, "features.kinds=[ssl]")
    strict = cv(cfg, tmp_path / "strict")
    assert len(strict["folds"]) == 3 and strict["summary"]["ua_pooled"] > 0.5         # chance 0.25
    for f in strict["folds"]:
        assert f["chosen"]["C"] in (0.01, 1.0) and set(f["chosen"]["inner_ua"]) == {"0.01", "1.0"}
    assert strict["normalize"] == {"mode": "none", "transductive": False, "description": "none (strict)"}
    speaker = cv(make_cfg(ws, {"name": "linear", "C": [0.01, 1.0], "inner_folds": 2, "std": True},
                          "features.kinds=[ssl]", "features.normalize=speaker"), tmp_path / "speaker")
    assert speaker["normalize"]["transductive"] is True
    assert [f["ua"] for f in speaker["folds"]] != [f["ua"] for f in strict["folds"]]
    assert "transductive" in (tmp_path / "speaker/report.md").read_text()
    from camser.reports.tables import comparison_table
    md, _ = comparison_table([("strict", strict, None), ("speaker", speaker, None)])
    assert "none (strict)" in md and "speaker (transductive)" in md


def test_linear_probe_chooses_the_layer_pooling_with_C_on_inner_folds(ws, tmp_path):
    """``layer`` as a list: every (layer, C) pair is scored on the inner speaker folds; the
    chosen pair's predictions are those of a probe configured with it alone."""
    layers = ["mean", "all", "each", -1]
    section = {"name": "linear", "layer": layers, "C": [0.01, 1.0], "inner_folds": 2, "std": True}
    chosen = cv(make_cfg(ws, section, "features.kinds=[ssl]", "protocol.folds=[1]"), tmp_path / "choice")
    (fold,) = chosen["folds"]
    assert set(fold["chosen"]["inner_ua"]) == {f"layer {la}, C {c}" for la in layers for c in (0.01, 1.0)}
    best = max(fold["chosen"]["inner_ua"].items(), key=lambda kv: kv[1])[0]
    assert best == f"layer {fold['chosen']['layer']}, C {fold['chosen']['C']}"
    fixed = cv(make_cfg(ws, {**section, "layer": fold["chosen"]["layer"], "C": [fold["chosen"]["C"]]},
                        "features.kinds=[ssl]", "protocol.folds=[1]"), tmp_path / "fixed")
    assert fixed["folds"][0]["confusion"] == fold["confusion"]
    with pytest.raises(ConfigError, match="model.layer"):
        cv(make_cfg(ws, {**section, "layer": ["mean", 9]}, "features.kinds=[ssl]", "protocol.folds=[1]"),
           tmp_path / "bad")


def test_linear_probe_n_jobs_fits_the_same_and_resumes(ws, tmp_path):
    """``n_jobs``: the inner-fold fits and the per-layer regressions in parallel processes give
    the same choice and predictions as one process, so a run may resume with another number."""
    section = {"name": "linear", "layer": ["mean", "each"], "C": [0.01, 1.0], "inner_folds": 2, "std": True}
    args = ("features.kinds=[ssl]", "protocol.folds=[1]")
    one = cv(make_cfg(ws, section, *args), tmp_path / "one")["folds"][0]
    two = cv(make_cfg(ws, {**section, "n_jobs": 2}, *args), tmp_path / "two")["folds"][0]
    assert two["chosen"] == one["chosen"] and two["confusion"] == one["confusion"]
    assert (tmp_path / "two/predictions.csv").read_text() == (tmp_path / "one/predictions.csv").read_text()
    again = cv(make_cfg(ws, {**section, "n_jobs": 2}, *args), tmp_path / "one")     # finished folds reused
    assert again["folds"][0]["confusion"] == one["confusion"]
    with pytest.raises(ConfigError, match="model.n_jobs"):
        cv(make_cfg(ws, {**section, "n_jobs": 0}, *args), tmp_path / "bad")


def test_linear_probe_per_layer_averages_one_probe_per_layer():
    """``layer: each``: the probabilities are the mean of the probes fitted on each cached layer's
    mean + std alone (not a probe on the concatenation, nor on one layer)."""
    from camser.models.classic import LinearConfig, LinearProbe, _select_parts
    rng = np.random.default_rng(0)
    n_layers, dim, y = 3, 4, np.repeat(np.arange(3), 20)
    means = rng.normal(size=(60, n_layers, dim)) + y[:, None, None] * rng.normal(size=(1, n_layers, dim))
    X = np.concatenate([means.reshape(60, -1), np.abs(rng.normal(size=(60, n_layers * dim)))], 1)

    def probe(layer, x):       # a fixed layer's probe reads the matrix of that layer alone
        return LinearProbe(LinearConfig(n_classes=3, layer=layer, std=True, C=0.1), 0, n_layers=n_layers).fit(x, y)

    each = probe("each", X).predict_proba(X)
    alone = []
    for i in range(n_layers):
        x = _select_parts(X, n_layers, i, 2)
        alone.append(probe(i, x).predict_proba(x))
    np.testing.assert_allclose(each, np.mean(alone, 0), atol=1e-6)
    assert not np.allclose(each, probe("all", X).predict_proba(X), atol=1e-3)
    assert not np.allclose(each, alone[0], atol=1e-3)


def test_plus_preset_whole_utterances_ensemble_and_speaker_normalisation(ws, tmp_path):
    cfg = make_cfg(ws, {"name": "camser", "preset": "plus"}, "protocol.folds=[1]", "train.unit=utterance",
                   "train.ensemble=2", "features.normalize=speaker", "train.schedule=cosine",
                   "train.warmup_epochs=1", "train.label_smoothing=0.1", "train.grad_clip=1.0",
                   "train.frame_mask=0.2", "train.max_epochs=2")
    results = cv(cfg, tmp_path / "plus")
    fold = results["folds"][0]
    assert [m["seed"] for m in fold["members"]] == [0, 1]
    assert len(fold["layer_weights"]) == 3 and abs(sum(fold["layer_weights"]) - 1) < 1e-4   # tiny encoder: 2 layers + embeddings
    assert results["normalize"]["mode"] == "speaker"
    assert not list((tmp_path / "plus/folds/fold01_seed0").glob("checkpoint*"))
    assert set(fold["per_speaker"]) == set(fold["test_speakers"])
    report = (tmp_path / "plus/report.md").read_text()
    assert "Learned SSL layer weights" in report and "Per speaker" in report
    assert (tmp_path / "plus/figures/layer_weights.png").is_file()
    again = cv(cfg, tmp_path / "plus2")
    assert again["folds"][0]["ua"] == fold["ua"] and again["folds"][0]["members"] == fold["members"]


def test_speaker_adversary_in_a_cross_validation_knows_only_the_training_speakers(ws, tmp_path, monkeypatch):
    from camser.training import cv as cv_module
    seen = {}
    real = cv_module.speaker_indices

    def spy(data, segs):
        out = real(data, segs)
        speaker_of = {u.id: u.speaker for u in data.every_utterance}
        seen["speakers"] = {speaker_of[uid] for uid in segs.utterance_ids}
        seen["n"] = int(out.max()) + 1
        return out
    monkeypatch.setattr(cv_module, "speaker_indices", spy)
    cfg = make_cfg(ws, {"name": "camser", "preset": "plus"}, "protocol.folds=[1]", "train.unit=utterance",
                   "train.speaker_adversarial=0.5", "train.max_epochs=2")
    results = cv(cfg, tmp_path / "adv")
    fold = results["folds"][0]
    assert seen["speakers"].isdisjoint(fold["test_speakers"] + fold["val_speakers"])
    assert seen["n"] == len(seen["speakers"])
    (entry,) = (tmp_path / "adv").glob("folds/*/result.json")
    assert all("train_speaker_acc" in h for h in json.loads(entry.read_text())["history"])


def test_utterance_unit_scores_each_utterance_once(ws, tmp_path):
    """Whole-utterance examples: every segment of an utterance carries the same prediction."""
    from camser.features.batches import segment_set
    from camser.training.cv import build_for_data, data_inputs
    from camser.training.experiment import prepare_data
    from camser.training.trainer import predict_segments

    cfg = make_cfg(ws, {"name": "camser", "preset": "plus"}, "train.unit=utterance")
    data = prepare_data(cfg, data_inputs(cfg), progress=False)
    model, batch_fn = build_for_data(cfg, data, 0)
    store = data.stores["mfcc"]
    model.fit_normalizers(data.stores, np.arange(len(store)))
    long = [u for u in data.utterances if len(store.rows_of(u.id)) > 1][:3]
    assert long, "the synthetic corpus has multi-segment utterances"
    ids = [u.id for u in data.utterances[:5]] + [u.id for u in long]
    segs = segment_set(data.stores, list(dict.fromkeys(ids)), {u.id: 0 for u in data.utterances})
    logp = predict_segments(model, data.stores, segs, 4, "cpu", batch_fn=batch_fn, unit="utterance")
    for uid in {u.id for u in long}:
        rows = [i for i, o in enumerate(segs.utterance_ids) if o == uid]
        np.testing.assert_allclose(logp[rows[0]], logp[rows[-1]], rtol=1e-5)
    with pytest.raises(ConfigError, match="train.unit"):
        cv(make_cfg(ws, {"name": "lstm", "feature": "mfcc"}, "train.unit=utterance"), tmp_path / "lstm")


def test_ssl_frame_pool_averages_frames_in_time(ws):
    from camser.config import SSLConfig
    from camser.features.ssl import SSLEncoder

    audio = np.random.default_rng(0).normal(size=(2, 16000)).astype(np.float32) * 0.1
    full = SSLEncoder(SSLConfig(model=str(ws.encoder), layer="all"), 16000)
    pooled = SSLEncoder(SSLConfig(model=str(ws.encoder), layer="all", frame_pool=4), 16000)
    a, b = full.encode(audio), pooled.encode(audio)
    t = a.shape[2]
    assert b.shape[2] == -(-t // 4) == pooled.output_shape[1]
    np.testing.assert_allclose(b[:, :, 0], a[:, :, :4].mean(2), rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="frame_pool"):
        SSLEncoder(SSLConfig(model=str(ws.encoder), frame_pool=0), 16000)


def test_every_ablation_row_builds_on_the_plus_preset():
    """Rows without co-attention concatenate their branches even where the preset lets the
    drivers only steer the co-attention (plus: fuse_drivers false)."""
    from camser.models.camser import ABLATIONS, CAMSER, config_from_section
    dims = {"mfcc": (300, 40), "spectrogram": (300, 200), "ssl": (3, 12, 16)}
    for row in ABLATIONS:
        cfg = config_from_section({"preset": "plus", "ablation": row}, 4, dims)
        assert cfg.fuse_drivers is (not row.endswith("+coatt")), row
        CAMSER(cfg)
