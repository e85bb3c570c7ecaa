"""The baselines of the literature through the same cross-validation as CA-MSER: chroma and
mel-spectrogram features (checked against librosa), the MLP on utterance means, the windowed
LSTM, Query2Label, audio + text fusion (tiny offline BERT fed the IEMOCAP reader's
transcripts), openSMILE functionals, random guessing, and `camser compare`."""
import json
from dataclasses import replace

import librosa
import numpy as np
import pytest
import torch

from camser.config import load_config
from camser.corpora import read_manifest, scan_corpus, write_manifest
from camser.corpora.synthetic import _CUES, _FILLER, generate_iemocap
from camser.demo import tiny_bert, tiny_wav2vec2
from camser.errors import ConfigError
from camser.training.cv import run_cv

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A prepared synthetic corpus (3 sessions × 2 speakers, 84 utterances in the 4 classes),
    a tiny random wav2vec2 and a tiny random BERT whose vocabulary has the transcripts' words."""
    root = tmp_path_factory.mktemp("baselines")
    corpus = generate_iemocap(root / "corpus", n_sessions=3, utterances_per_speaker=16, seed=1)
    scan = scan_corpus("iemocap", corpus)
    write_manifest(root / "prepared", scan.utterances, scan.skipped)
    words = list(_FILLER) + [w for cues in _CUES.values() for w in cues]
    return {"root": root, "corpus": corpus, "encoder": tiny_wav2vec2(root / "encoder"),
            "bert": tiny_bert(root / "bert", words)}


def make_cfg(ws, model: dict, *overrides, prepared: str = "prepared"):
    return load_config(None, list(overrides), data={
        "name": model["name"],
        "corpus": {"name": "iemocap", "prepared": str(ws["root"] / prepared)},
        "features": {"ssl": {"model": str(ws["encoder"]), "layer": "all", "batch_size": 16}},
        "model": model,
        "train": {"lr": 3e-3, "batch_size": 16, "max_epochs": 15, "patience": 6, "min_epochs": 6,
                  "seeds": [0], "num_threads": 1},
        "protocol": {"scheme": "loso", "validation": "clean"},
        "output": {"tsne": False, "curves": False},
    })


def cv(cfg, out):
    return run_cv(cfg, out, log=lambda m: None, progress=False)


# ---------------------------------------------------------------- features

def test_chroma_and_melspec_match_librosa(ws, tmp_path):
    from camser.features.extract import compute_features, extract_features, frames_per_segment, segment_table
    from camser.segments import cut
    from camser.training.experiment import load_utterances

    cfg = make_cfg(ws, {"name": "mlp"}, f"features.cache_dir={tmp_path / 'cache'}")
    utterances, _ = load_utterances(cfg)
    u = max(utterances[:6], key=lambda u: u.duration_s)           # several segments, the last padded
    segs = segment_table([u], cfg)
    assert len(segs) >= 2
    y = librosa.load(u.path, sr=16_000)[0]
    got = compute_features(y, segs, cfg, ["chroma", "melspec"])
    n = frames_per_segment("melspec", cfg)
    assert got["chroma"].shape == (len(segs), n, 12) and got["melspec"].shape == (len(segs), n, 128)
    for i, s in enumerate(segs):
        x = cut(y, s)
        c = librosa.feature.chroma_stft(y=x, sr=16_000, n_fft=2048, hop_length=160, tuning=0.0)
        m = librosa.power_to_db(librosa.feature.melspectrogram(y=x, sr=16_000, n_fft=1024, win_length=400,
                                                               hop_length=160, n_mels=128), ref=1.0, top_db=None)
        np.testing.assert_allclose(got["chroma"][i], c.T[:n], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got["melspec"][i], m.T[:n], rtol=1e-4, atol=1e-3)

    # cached like the other kinds; another setting is another store
    first = extract_features(utterances[:4], cfg, tmp_path / "cache", kinds=["chroma", "melspec"], progress=False)
    again = extract_features(utterances[:4], cfg, tmp_path / "cache", kinds=["chroma", "melspec"], progress=False)
    assert first["melspec"].path == again["melspec"].path and first["melspec"].is_complete
    cfg64 = make_cfg(ws, {"name": "mlp"}, "features.melspec.n_mels=64")
    other = extract_features(utterances[:4], cfg64, tmp_path / "cache", kinds=["melspec"], progress=False)
    assert other["melspec"].path != first["melspec"].path and other["melspec"].shape[-1] == 64


# ---------------------------------------------------------------- utterance-level (sklearn) systems

def test_mlp_on_utterance_means_learns_and_resumes(ws, tmp_path):
    cfg = make_cfg(ws, {"name": "mlp"})
    results = cv(cfg, tmp_path / "mlp")
    assert len(results["folds"]) == 3 and results["summary"]["ua_pooled"] > 0.6     # chance 0.25
    fold = results["folds"][0]
    assert fold["epochs"] is None and 0 <= fold["val_ua"] <= 1 and len(fold["confusion"]) == 4
    for name in ("results.json", "report.md", "report.html", "folds/fold01_seed0/result.json"):
        assert (tmp_path / "mlp" / name).exists(), name
    import shutil
    shutil.rmtree(tmp_path / "mlp/folds/fold02_seed0")
    lines = []
    again = run_cv(cfg, tmp_path / "mlp", log=lines.append, progress=False)      # per-fold resume
    assert sum("done already" in line for line in lines) == 2
    assert again["summary"] == results["summary"]


def test_utterance_means_leave_the_padding_out(ws):
    from camser.models.classic import utterance_means
    from camser.training.experiment import prepare_data

    cfg = make_cfg(ws, {"name": "mlp"})
    data = prepare_data(cfg, {"mfcc"}, progress=False)
    means = utterance_means(data, ["mfcc"], 16_000)
    u = data.utterances[0]
    store = data.stores["mfcc"]
    frames = np.concatenate([store.array[r] for r in store.rows_of(u.id)])
    real = int(np.ceil(u.duration_s * 16_000 / 160))                 # 10 ms frames of real audio
    np.testing.assert_allclose(means[0], frames[:real].mean(0), rtol=1e-4, atol=1e-3)


def test_opensmile_functionals_cached_and_learned(ws, tmp_path):
    import opensmile

    from camser.audio import load_audio

    cfg = make_cfg(ws, {"name": "opensmile", "feature_set": "eGeMAPSv02", "classifier": "svm"})
    results = cv(cfg, tmp_path / "svm")
    assert results["summary"]["ua_pooled"] > 0.6
    stores = list((ws["root"] / "prepared/cache").glob("opensmile-eGeMAPSv02-*"))
    assert len(stores) == 1 and (stores[0] / "COMPLETE").exists()
    from camser.features.store import FeatureStore
    store = FeatureStore.open(stores[0])
    assert store.shape == (84, 88) and len(store.meta["feature_names"]) == 88
    u = read_manifest(ws["root"] / "prepared")[0]
    smile = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.Functionals)
    ref = smile.process_signal(load_audio(u.path, sr=16_000), 16_000).to_numpy()[0]
    np.testing.assert_allclose(store.array[store.rows_of(u.id)[0]], ref, rtol=1e-5)

    logreg = make_cfg(ws, {"name": "opensmile", "feature_set": "eGeMAPSv02", "classifier": "logreg"},
                      "protocol.folds=[1]")
    r = cv(logreg, tmp_path / "logreg")
    assert len(r["folds"]) == 1 and r["folds"][0]["ua"] > 0.5
    assert len(list((ws["root"] / "prepared/cache").glob("opensmile-eGeMAPSv02-*"))) == 1   # reused


def test_random_baseline_is_chance_and_seeded(ws, tmp_path):
    from camser.models import build_model

    y = np.repeat(np.arange(4), [400, 300, 200, 100])
    for strategy, expect in (("stratified", 0.4 ** 2 + 0.3 ** 2 + 0.2 ** 2 + 0.1 ** 2), ("uniform", 0.25)):
        model = build_model({"name": "random", "strategy": strategy}, 4, seed=3).fit(np.zeros((1000, 1)), y)
        guesses = np.concatenate([model.predict(np.zeros((1000, 1))) for _ in range(20)])
        assert abs(np.mean(guesses == np.tile(y, 20)) - expect) < 0.02
    a = cv(make_cfg(ws, {"name": "random"}), tmp_path / "a")
    b = cv(make_cfg(ws, {"name": "random"}), tmp_path / "b")
    assert a["summary"] == b["summary"]
    assert 0.1 < a["summary"]["ua_pooled"] < 0.42


# ---------------------------------------------------------------- networks

def test_lstm_on_mel_windows_learns(ws, tmp_path):
    cfg = make_cfg(ws, {"name": "lstm", "feature": "melspec", "window_frames": 100}, "train.max_epochs=20")
    results = cv(cfg, tmp_path / "lstm")
    assert results["summary"]["ua_pooled"] > 0.55
    assert results["config"]["model"]["window_frames"] == 100


def test_lstm_windows_train_random_and_test_pooled(ws):
    from camser.models import build_model

    model = build_model({"name": "lstm", "feature": "mfcc", "window_frames": 10, "eval_hop": 5}, 4,
                        {"mfcc": (40, 13)})
    model.frames.standardizer.fit([np.random.default_rng(0).standard_normal((50, 13))])
    batch = {"mfcc": torch.randn(3, 40, 13), "valid": torch.tensor([1.0, 0.5, 0.1])}
    model.train()
    torch.manual_seed(0)
    a = model(batch)
    torch.manual_seed(1)
    assert a.shape == (3, 4) and not torch.allclose(a, model(batch))     # another random window
    model.eval()
    with torch.no_grad():
        logp = model(batch)
        x = model.frames(batch)[0]
        windows = [x[0, s:s + 10] for s in range(0, 31, 5)]             # 7 windows cover 40 real frames
        per_window = torch.log_softmax(model.head(model.encode(torch.stack(windows))), -1)
        assert torch.allclose(logp[0], per_window.mean(0), atol=1e-5)   # pooled log-probabilities
        first = torch.log_softmax(model.head(model.encode(x[2:3, :10])), -1)[0]
        assert torch.allclose(logp[2], first, atol=1e-5)                # 4 real frames: one window
    with torch.no_grad():                                                # frames past the real audio don't count
        changed = dict(batch, mfcc=batch["mfcc"].clone())
        changed["mfcc"][2, 10:] = 100.0
        assert torch.allclose(model(changed)[2], logp[2])


def test_frame_model_on_new_audio_masks_padding_as_training_did(ws, tmp_path):
    """`camser train` → predict on files: a frame model gets each segment's real-audio fraction
    (``valid``) from the inference pipeline too, so its log-probabilities equal those of the
    cached, masked training features, padded last segments included."""
    from camser.training.train_model import train_model
    from camser.training.cv import data_inputs
    from camser.features.batches import segment_set
    from camser.training.experiment import prepare_data
    from camser.training.trainer import predict_segments

    cfg = make_cfg(ws, {"name": "lstm", "feature": "mfcc", "window_frames": 50}, "train.max_epochs=8",
                   "train.min_epochs=8", "train.lr=0.01")
    rec = train_model(cfg, tmp_path / "lstm", log=lambda m: None, progress=False)
    data = prepare_data(rec.cfg, data_inputs(rec.cfg), progress=False)
    some = sorted(data.utterances, key=lambda u: u.duration_s % 3.0)[:4]      # short last segments
    label_of = {u.id: data.labels.index(u.label) for u in data.utterances}
    segs = segment_set(data.stores, [u.id for u in some], label_of)
    cached = predict_segments(rec.model, data.stores, segs, 8, "cpu", batch_fn=rec.model.batch_builder(data, rec.cfg.audio.sample_rate))
    unmasked = predict_segments(rec.model, data.stores, segs, 8, "cpu")
    assert np.abs(cached - unmasked).max() > 1e-2          # the mask matters to this model
    fresh = np.log([list(s.probabilities.values()) for p in rec.predict([u.path for u in some]) for s in p.segments])
    np.testing.assert_allclose(fresh, cached, atol=1e-5)
    # exported to ONNX, the model reads `valid` as a graph input (a fixed number of windows)
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from camser.inference.onnx_export import export_onnx
    from camser.inference.recognizer import EmotionRecognizer
    info = export_onnx(tmp_path / "lstm", tmp_path / "lstm.onnx", log=lambda m: None)
    assert info["inputs"] == ["mfcc", "valid"]
    onnx = EmotionRecognizer.from_pretrained(tmp_path / "lstm", onnx=tmp_path / "lstm.onnx", device="cpu")
    got = np.log([list(s.probabilities.values()) for p in onnx.predict([u.path for u in some]) for s in p.segments])
    np.testing.assert_allclose(got, cached, atol=1e-4)


def test_query2label_learns_with_bce(ws, tmp_path):
    from camser.models import build_model

    model = build_model({"name": "query2label"}, 4, {"melspec": (300, 128)})
    logits, target = torch.zeros(2, 4), torch.tensor([1, 3])
    assert torch.isclose(model.training_loss(logits, target), torch.tensor(np.log(2.0), dtype=torch.float32))
    cfg = make_cfg(ws, {"name": "query2label", "feature": "melspec", "d_model": 64, "encoder_layers": 0,
                        "decoder_layers": 1, "ffn_dim": 128}, "train.lr=1e-3", "train.max_epochs=8",
                   "train.min_epochs=4", "train.patience=3", "protocol.folds=[1,2]")
    results = cv(cfg, tmp_path / "q2l")
    assert results["summary"]["ua_pooled"] > 0.55


# ---------------------------------------------------------------- audio + text

def test_reader_transcripts_reach_the_text_model(ws):
    from camser.features.text import TextEncoder, token_mask
    from camser.training.cv import build_for_data, data_inputs
    from camser.features.batches import segment_set
    from camser.training.experiment import prepare_data

    cfg = make_cfg(ws, {"name": "multimodal", "modalities": ["text"], "text_encoder": str(ws["bert"])})
    data = prepare_data(cfg, data_inputs(cfg), progress=False)
    assert set(data.utterance_stores) == {"text"} and "ssl" not in data.stores
    texts = {u.id: u.text for u in data.utterances}
    assert all(texts.values())                                     # the IEMOCAP reader's transcripts
    model, batch_fn = build_for_data(cfg, data, seed=0)
    label_of = {u.id: data.labels.index(u.label) for u in data.utterances}
    segs = segment_set(data.stores, list(texts), label_of)
    idx = np.arange(0, len(segs), 9)
    batch = batch_fn(data.stores, segs, idx)
    ref = TextEncoder(str(ws["bert"])).encode([texts[segs.utterance_ids[i]] for i in idx], batch["text"].shape[1])
    np.testing.assert_allclose(batch["text"].numpy(), ref, atol=2e-3)         # float16 cache
    assert model(batch).shape == (len(idx), 4)
    # a missing transcript is the empty string: [CLS] [SEP]
    empty = TextEncoder(str(ws["bert"])).encode(["", "okay then"])
    assert token_mask(torch.from_numpy(empty)).sum(1).tolist() == [2, 4]


@pytest.fixture(scope="module")
def cue_transcripts(ws):
    """The same corpus with label-dependent transcripts: each names one cue word of its label
    among filler words (the generator's own put a cue in only 60 % of the turns)."""
    rng = np.random.default_rng(0)
    out = []
    for u in read_manifest(ws["root"] / "prepared"):
        words = [str(w) for w in rng.choice(_FILLER, size=4)]
        words.insert(int(rng.integers(0, 5)), _CUES[u.label][0])
        out.append(replace(u, text=" ".join(words)))
    write_manifest(ws["root"] / "prepared_cues", out)
    return "prepared_cues"


def test_text_only_learns_label_dependent_transcripts(ws, cue_transcripts, tmp_path):
    cfg = make_cfg(ws, {"name": "multimodal", "modalities": ["text"], "text_encoder": str(ws["bert"])},
                   "train.lr=1e-3", "train.max_epochs=10", prepared=cue_transcripts)
    assert cv(cfg, tmp_path / "text")["summary"]["ua_pooled"] > 0.8


@pytest.mark.parametrize("variant, width", [
    ({"fusion": "cross"}, 4 * 128),                                       # (mean, std) × (audio, text)
    ({"fusion": "self", "stats_pool": False, "text_cls": True}, 2 * 128),  # audio mean + text [CLS]
])
def test_audio_text_fusion_learns(ws, cue_transcripts, tmp_path, variant, width):
    cfg = make_cfg(ws, {"name": "multimodal", "text_encoder": str(ws["bert"]), **variant}, "train.lr=1e-3",
                   "train.max_epochs=12", "train.min_epochs=6", "train.patience=3", "protocol.folds=[2]",
                   prepared=cue_transcripts)
    results = cv(cfg, tmp_path / "mm")
    assert results["folds"][0]["ua"] > 0.6
    emb = np.load(tmp_path / "mm/folds/fold02_seed0/embeddings.npz")
    assert emb["fused"].shape[1] == width


def test_audio_only_fusion_learns(ws, tmp_path):
    # The tiny random wav2vec2 carries little of the emotion: CA-MSER's SSL-only row ("w2e")
    # scores about 0.39 UA on these folds, this model about 0.48.
    cfg = make_cfg(ws, {"name": "multimodal", "modalities": ["audio"], "fusion": "self"}, "train.lr=1e-3",
                   "train.max_epochs=10", "protocol.folds=[1,2]")
    results = cv(cfg, tmp_path / "audio")
    assert results["summary"]["ua_pooled"] > 0.4
    assert "text" not in results["config"]["model"]["modalities"]


def test_bad_baseline_fields_are_one_line_errors(ws):
    from camser.models import build_model, required_inputs

    with pytest.raises(ConfigError, match="model.fusion"):
        required_inputs({"name": "multimodal", "fusion": "sideways"})
    with pytest.raises(ConfigError, match="model.feature_set"):
        required_inputs({"name": "opensmile", "feature_set": "IS99"})
    with pytest.raises(ConfigError, match="model.feature"):
        required_inputs({"name": "lstm", "feature": "wavelets"})
    with pytest.raises(ConfigError, match="model.hiden"):
        build_model({"name": "lstm", "hiden": 3}, 4, {"melspec": (300, 128)})
    with pytest.raises(ConfigError, match="model.text_encoder: ./no/such/bert: no such folder"):
        from camser.models import prepare_utterance_inputs
        prepare_utterance_inputs(make_cfg(ws, {"name": "multimodal", "text_encoder": "./no/such/bert"}),
                                 read_manifest(ws["root"] / "prepared")[:2], ws["root"] / "nocache")


# ---------------------------------------------------------------- compare

def test_compare_writes_one_table(ws, tmp_path):
    from camser.cli import main

    def config(name, model):
        path = tmp_path / f"{name}.yaml"
        cfg = make_cfg(ws, model, "protocol.folds=[1,2]")
        cfg.save(path)
        return str(path)

    paths = [config("guess", {"name": "random"}), config("means", {"name": "mlp"})]
    assert main(["compare", *paths, "--out", str(tmp_path / "cmp"), "--set", "train.num_threads=1"]) == 0
    table = json.loads((tmp_path / "cmp/compare.json").read_text())
    assert [row["name"] for row in table] == ["guess", "means"] and [row["model"] for row in table] == ["random", "mlp"]
    assert "ua" in table[1]["best"] and table[1]["run_dir"] == str(tmp_path / "cmp/means")
    md = (tmp_path / "cmp/compare.md").read_text()
    assert "| means |" in md and "**" in md and "±" in md
    for name in ("guess", "means"):
        assert len(json.loads((tmp_path / "cmp" / name / "results.json").read_text())["folds"]) == 2

    # a finished run folder stands for its system: read, not rerun
    assert main(["compare", str(tmp_path / "cmp/guess"), paths[1], "--out", str(tmp_path / "cmp2")]) == 0
    again = json.loads((tmp_path / "cmp2/compare.json").read_text())
    assert again[0]["run_dir"] == str(tmp_path / "cmp/guess") and not (tmp_path / "cmp2/guess").exists()
    assert [row["ua_mean"] for row in again] == [row["ua_mean"] for row in table]
    assert main(["compare", str(tmp_path / "cmp/guess"), str(tmp_path / "cmp/means"), "--out",
                 str(tmp_path / "runs_only")]) == 0                      # nothing to run at all
    assert [row["ua_mean"] for row in json.loads((tmp_path / "runs_only/compare.json").read_text())] == \
        [row["ua_mean"] for row in table]
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "empty"), paths[1], "--out", str(tmp_path / "cmp3")]) == 2

    other = make_cfg(ws, {"name": "mlp"}, "protocol.scheme=loso_speaker")
    other.save(tmp_path / "other.yaml")
    assert main(["compare", paths[0], str(tmp_path / "other.yaml"), "--out", str(tmp_path / "bad")]) == 2
