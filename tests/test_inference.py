"""Using a trained model on new audio: the model folder, EmotionRecognizer, `camser predict`,
`camser evaluate` (cross-corpus) — on a small synthetic corpus with a tiny random wav2vec2."""
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from camser.audio import load_audio
from camser.cli import main
from camser.corpora import read_manifest, scan_corpus, write_manifest
from camser.corpora.synthetic import generate_iemocap
from camser.demo import tiny_wav2vec2
from camser.errors import CamserError
from camser.inference.evaluate import map_labels
from camser.inference.recognizer import EmotionRecognizer
from camser.training.train_model import train_model
from camser.reports.results import FOLD_KEYS

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
LABELS = ["ang", "sad", "hap", "neu"]


from conftest import _tiny_cfg as make_cfg  # noqa: E402  (one tiny experiment for all inference tests)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model folder trained for 2 epochs on 2 sessions × 2 speakers × 8 turns."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("inference")
    corpus = generate_iemocap(root / "corpus", n_sessions=2, utterances_per_speaker=8, seed=1)
    scan = scan_corpus("iemocap", corpus)
    write_manifest(root / "prepared", scan.utterances, scan.skipped)
    encoder = tiny_wav2vec2(root / "encoder")
    log: list[str] = []
    recognizer = train_model(make_cfg(root, encoder), root / "model", log=log.append, progress=False)
    recognizer.backend.model.cpu()       # trained on cpu anyway; explicit for the comparisons
    utterances = [u for u in read_manifest(root / "prepared") if u.label in ("ang", "sad", "hap", "neu", "exc")]
    return SimpleNamespace(root=root, encoder=encoder, model_dir=root / "model", recognizer=recognizer,
                           utterances=utterances, log=log)


def _timeline_ok(p, duration_s):
    assert p.segments[0].start_s == 0.0
    assert all(a.end_s == pytest.approx(b.start_s) for a, b in zip(p.segments, p.segments[1:]))
    assert p.segments[-1].end_s == pytest.approx(duration_s, abs=1e-3)
    assert sum(p.probabilities.values()) == pytest.approx(1.0)
    assert p.label == max(p.probabilities, key=p.probabilities.get)


# ---------------------------------------------------------------------- the model folder

def test_model_folder_holds_everything_without_pickles(trained):
    d = trained.model_dir
    names = {f.name for f in d.iterdir()}
    assert names == {"config.json", "model.safetensors", "camser.json", "features.yaml",
                     "experiment.yaml", "history.json", "run.log"}
    meta = json.loads((d / "camser.json").read_text())
    assert meta["labels"] == LABELS and meta["inputs"] == ["mfcc", "spectrogram", "ssl"]
    assert meta["encoder"]["model"] == str(trained.encoder.resolve()) and Path(meta["encoder"]["model"]).is_absolute()
    assert meta["encoder"]["output_shape"] == [3, 149, 64]          # layer: all of a 2-layer encoder
    assert meta["seed"] == 0 and meta["versions"]["torch"]
    val, train = meta["corpus"]["val_speakers"], meta["corpus"]["train_speakers"]
    assert len(val) == 1 and not set(val) & set(train) and len(train) == 3
    history = json.loads((d / "history.json").read_text())
    assert len(history) == meta["training"]["epochs"] == 2 and "val_ua" in history[0]
    features = (d / "features.yaml").read_text()
    assert "segments:" in features and "spectrogram:" in features and "cache_dir" not in features
    with pytest.raises(CamserError, match="already holds a trained model"):
        train_model(make_cfg(trained.root, trained.encoder), d, log=lambda m: None, progress=False)


def test_save_load_gives_bit_identical_predictions(trained):
    loaded = EmotionRecognizer.from_pretrained(trained.model_dir, device="cpu")
    assert loaded.labels == trained.recognizer.labels == LABELS
    a, b = trained.recognizer.model.state_dict(), loaded.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)   # normalisers included
    paths = [u.path for u in trained.utterances[:6]]
    assert [p.to_dict() for p in loaded.predict(paths)] == [p.to_dict() for p in trained.recognizer.predict(paths)]


def test_inference_features_are_the_training_features(trained):
    """Segment log-probabilities from raw audio equal cross-validation's from the cache."""
    from camser.training.cv import data_inputs
    from camser.features.batches import segment_set
    from camser.training.experiment import prepare_data
    from camser.training.trainer import predict_segments

    r = trained.recognizer
    data = prepare_data(r.cfg, data_inputs(r.cfg), progress=False)
    label_of = {u.id: data.labels.index(u.label) for u in data.utterances}
    some = data.utterances[:5]
    segs = segment_set(data.stores, [u.id for u in some], label_of)
    cached = predict_segments(r.model, data.stores, segs, r.batch_size, "cpu")
    fresh = np.log([list(s.probabilities.values()) for p in r.predict([u.path for u in some]) for s in p.segments])
    np.testing.assert_allclose(fresh, cached, atol=1e-5)


def test_a_whole_utterance_model_is_scored_as_cross_validation_scores_it(trained):
    """train.unit: utterance — the recognizer pools a recording's segments before the head, as
    cross-validation does from the cache; whole windows share batches, never split."""
    from camser.config import load_config
    from camser.features.batches import segment_set
    from camser.training.cv import data_inputs
    from camser.training.experiment import prepare_data
    from camser.training.trainer import predict_segments

    r = trained.recognizer
    cfg = load_config(None, ["train.unit=utterance"], data=r.cfg.to_dict())
    pooled = EmotionRecognizer(r.model, r.labels, cfg, device="cpu", batch_size=3)
    assert pooled.unit == "utterance" and r.unit == "segment"
    data = prepare_data(cfg, data_inputs(cfg), progress=False)
    label_of = {u.id: data.labels.index(u.label) for u in data.utterances}
    some = data.utterances[:6]
    segs = segment_set(data.stores, [u.id for u in some], label_of)
    assert len(segs) > len(some)                       # some utterances have several segments
    cached = predict_segments(r.model, data.stores, segs, 3, "cpu", unit="utterance")
    fresh = np.log([list(s.probabilities.values()) for p in pooled.predict([u.path for u in some])
                    for s in p.segments])
    np.testing.assert_allclose(fresh, cached, atol=1e-5)
    segment_wise = predict_segments(r.model, data.stores, segs, 3, "cpu")
    assert not np.allclose(segment_wise, cached, atol=1e-3)   # pooling changes the answers


@pytest.mark.parametrize("unit", ["segment", "utterance"])
def test_test_time_copies_are_scored_as_cross_validation_scores_them(trained, unit):
    """features.augment.test_time: the recognizer makes the speed copies of new audio as
    extraction made them and averages the views' probabilities, as cross-validation does from
    the cache; each segment stays the original audio's."""
    from camser.config import load_config
    from camser.features.batches import segment_set
    from camser.training.cv import data_inputs, with_test_time_copies
    from camser.training.experiment import prepare_data
    from camser.training.trainer import predict_segments

    r = trained.recognizer
    cfg = load_config(None, [f"train.unit={unit}", "features.augment.speeds=[0.9, 1.1]",
                             "features.augment.test_time=true"], data=r.cfg.to_dict())
    tta = EmotionRecognizer(r.model, r.labels, cfg, device="cpu", batch_size=3)
    plain = EmotionRecognizer(r.model, r.labels, load_config(None, [f"train.unit={unit}"], data=r.cfg.to_dict()),
                              device="cpu", batch_size=3)
    assert tta.test_time_copies == ["speed0.9", "speed1.1"] and plain.test_time_copies == []
    data = prepare_data(cfg, data_inputs(cfg), progress=False)
    some = data.utterances[:5]
    segs = segment_set(data.stores, [u.id for u in some], data.label_index())
    logp = predict_segments(r.model, data.stores, segs, 3, "cpu", unit=unit)
    cached = with_test_time_copies(logp, segs, r.model, data, cfg, None)
    first = {uid: i for i, uid in reversed(list(enumerate(segs.utterance_ids)))}
    predicted, alone = tta.predict([u.path for u in some]), plain.predict([u.path for u in some])
    for u, p, q in zip(some, predicted, alone):
        np.testing.assert_allclose(list(p.probabilities.values()), np.exp(cached[first[u.id]]), atol=1e-5)
        assert [(s.start_s, s.end_s) for s in p.segments] == [(s.start_s, s.end_s) for s in q.segments]
        np.testing.assert_allclose([list(s.probabilities.values()) for s in p.segments],
                                   [list(s.probabilities.values()) for s in q.segments], atol=1e-6)
    assert not np.allclose([list(p.probabilities.values()) for p in predicted],
                           [list(q.probabilities.values()) for q in alone], atol=1e-4)


def test_silence_is_cut_at_inference_as_extraction_cut_it(trained):
    """audio.trim_db: the cache's segment table follows the trimmed audio (copies: the trimmed
    original's length at their speed), and the recognizer cuts a file's silence exactly as
    extraction did: same segments, same scores with test-time copies, offsets where speech starts."""
    import soundfile as sf
    from camser.audio import load_audio, trim_silence
    from camser.augment import augmented_length
    from camser.config import load_config
    from camser.features.batches import segment_set
    from camser.training.cv import data_inputs, with_test_time_copies
    from camser.training.experiment import prepare_data
    from camser.training.trainer import predict_segments

    r = trained.recognizer
    cfg = load_config(None, ["audio.trim_db=30", "features.augment.speeds=[0.9]", "features.augment.test_time=true"],
                      data=r.cfg.to_dict())
    data = prepare_data(cfg, data_inputs(cfg), progress=False)
    some = data.utterances[:4]
    def n_segments(uid):
        return sum(s.utterance_id == uid for s in data.stores["mfcc"].index)

    starts = []
    for u in some:
        full = load_audio(u.path)
        kept, start = trim_silence(full, 16_000, 30.0)
        assert 0 < len(kept) < len(full)                       # the synthetic turns have silent edges
        starts.append(start / 16_000)
        assert n_segments(u.id) == -(-len(kept) // 48_000)     # 3 s segments of the kept audio
        assert n_segments(u.id + "@speed0.9") == -(-augmented_length(len(kept), "speed0.9") // 48_000)
        assert sf.info(u.path).frames == len(full)             # the file itself is untouched
    tta = EmotionRecognizer(r.model, r.labels, cfg, device="cpu", batch_size=3)
    segs = segment_set(data.stores, [u.id for u in some], data.label_index())
    logp = predict_segments(r.model, data.stores, segs, 3, "cpu")
    cached = with_test_time_copies(logp, segs, r.model, data, cfg, None)
    for i, (u, p) in enumerate(zip(some, tta.predict([u.path for u in some]))):
        row = segs.utterance_ids.index(u.id)
        np.testing.assert_allclose([list(s.probabilities.values()) for s in p.segments],
                                   np.exp(logp[row:row + len(p.segments)]), atol=1e-5)
        np.testing.assert_allclose(list(p.probabilities.values()), np.exp(cached[row]), atol=1e-5)
        assert p.segments[0].start_s == pytest.approx(starts[i], abs=1e-6)


def test_finetuned_encoder_travels_in_the_model_folder(trained, tmp_path):
    """train.mode=finetune: the trained encoder weights are saved and restored (the folder only
    references the encoder's architecture)."""
    cfg = make_cfg(trained.root, trained.encoder, "train.mode=finetune", "features.ssl.layer=last",
                   "train.max_epochs=1", "train.batch_size=32")
    r = train_model(cfg, tmp_path / "ft", log=lambda m: None, progress=False)
    meta = json.loads((tmp_path / "ft/camser.json").read_text())
    assert meta["inputs"] == ["mfcc", "spectrogram", "audio"] and meta["encoder"]["output_shape"] == [149, 64]
    loaded = EmotionRecognizer.from_pretrained(tmp_path / "ft", device="cpu")
    a, b = r.model.state_dict(), loaded.model.state_dict()
    assert all(torch.equal(a[k].cpu(), b[k]) for k in a)
    from transformers import Wav2Vec2Model
    reference = Wav2Vec2Model.from_pretrained(trained.encoder).state_dict()
    assert any(not torch.equal(reference[k], b["encoder.encoder." + k]) for k in reference)   # trained weights
    paths = [u.path for u in trained.utterances[:3]]
    assert [p.to_dict() for p in loaded.predict(paths)] == [p.to_dict() for p in r.predict(paths)]


def test_missing_or_unfinished_model_folder_is_one_line(tmp_path):
    with pytest.raises(CamserError, match="model folder not found"):
        EmotionRecognizer.from_pretrained(tmp_path / "nope")
    with pytest.raises(CamserError, match="no camser.json"):
        EmotionRecognizer.from_pretrained(tmp_path)


# ---------------------------------------------------------------------- the Python API

def test_predict_file_array_bytes_and_list(trained):
    r = trained.recognizer
    path = trained.utterances[0].path
    y = load_audio(path)
    from_file = r.predict(path)
    assert from_file.path == path and from_file.ok
    _timeline_ok(from_file, len(y) / 16000)
    from_array = r.predict(y, sr=16000)
    assert from_array.path is None
    assert from_array.to_dict() | {"path": path} == from_file.to_dict()      # same numbers exactly
    assert r.predict(Path(path).read_bytes()).probabilities == from_file.probabilities

    # another rate is resampled; the timeline is in seconds of the input
    import soxr
    y8 = soxr.resample(y, 16000, 8000)
    p8 = r.predict(y8, sr=8000)
    _timeline_ok(p8, len(y8) / 8000)

    # a list shares batches and keeps the order
    paths = [u.path for u in trained.utterances[:4]]
    many = r.predict([*paths, y], sr=16000)
    assert [p.path for p in many] == [*paths, None]
    for p, single in zip(many, [r.predict(x) for x in paths]):
        assert p.label == single.label
        np.testing.assert_allclose(list(p.probabilities.values()), list(single.probabilities.values()), atol=1e-5)

    with pytest.raises(CamserError, match="sample rate"):
        r.predict(y)
    with pytest.raises(CamserError, match="silent"):
        r.predict(np.zeros(16000, dtype=np.float32), sr=16000)


def test_predict_iter_reports_bad_inputs_and_goes_on(trained, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF broken")
    good = [u.path for u in trained.utterances[:2]]
    out = list(trained.recognizer.predict_iter([good[0], bad, tmp_path / "missing.wav", good[1]], errors="return"))
    assert [p.ok for p in out] == [True, False, False, True]
    assert "broken.wav" in out[1].error and "unreadable" in out[1].error
    assert "file not found" in out[2].error
    assert out[1].to_dict()["error"] and "error" not in out[0].to_dict()
    with pytest.raises(CamserError, match="unreadable"):
        trained.recognizer.predict(bad)


def _write_long(path: Path, seconds: int, sr: int = 16000) -> None:
    """A sine-ish recording written in 10 s blocks (never whole in memory here either)."""
    rng = np.random.default_rng(seconds)
    with sf.SoundFile(path, "w", sr, 1, "PCM_16") as f:
        for start in range(0, seconds * sr, 10 * sr):
            t = np.arange(start, min(seconds * sr, start + 10 * sr)) / sr
            tone = 0.3 * np.sin(2 * np.pi * (180 + 40 * np.sin(2 * np.pi * 0.2 * t)) * t)
            f.write((tone * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t)) + 0.01 * rng.standard_normal(len(t))).astype(np.float32))


def test_long_file_streams_with_flat_memory(trained, tmp_path):
    """10 minutes of audio: the peak traced memory stays a fraction of the decoded file and
    doesn't grow with its length; the timeline covers all of it."""
    # small windows and batches: what's left in memory is then mostly the test's own measure
    r = EmotionRecognizer.from_pretrained(trained.model_dir, device="cpu", window_s=6.0, batch_size=4)
    r.predict(trained.utterances[0].path)                 # one-time allocations (caches) out of the way
    peaks = {}
    for minutes in (1, 10):
        path = tmp_path / f"long{minutes}.wav"
        _write_long(path, minutes * 60)
        tracemalloc.start()
        p = r.predict(path)
        peaks[minutes] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len(p.segments) == minutes * 20
        _timeline_ok(p, minutes * 60)
    decoded = 10 * 60 * 16000 * 4                          # float32 at the model rate: 38.4 MB
    assert peaks[10] < decoded / 3, peaks
    assert peaks[10] < 1.25 * peaks[1], peaks              # flat: 10× the audio, not 10× the memory

    # in memory, the same windows: a 16 kHz file and its samples agree exactly
    y = load_audio(tmp_path / "long1.wav")
    assert r.predict(y, sr=16000).segments == r.predict(tmp_path / "long1.wav").segments


def test_import_camser_stays_light():
    code = ("import sys, camser; assert 'torch' not in sys.modules and 'transformers' not in sys.modules; "
            "from camser import EmotionRecognizer, Prediction; print(EmotionRecognizer.__name__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "EmotionRecognizer", r.stderr


# ---------------------------------------------------------------------- camser predict

def _cli(*args) -> subprocess.Popen:
    """Start the real command (several run side by side: most of their time is importing torch)."""
    return subprocess.Popen([sys.executable, "-m", "camser.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def audio_folder(trained, tmp_path_factory):
    """Three good recordings in nested folders, a corrupt one and a text file."""
    folder = tmp_path_factory.mktemp("audio")
    (folder / "a" / "b").mkdir(parents=True)
    for i, u in enumerate(trained.utterances[:3]):
        target = folder / ("a/b" if i == 2 else "a") / f"clip{i}.wav"
        target.write_bytes(Path(u.path).read_bytes())
    (folder / "corrupt.wav").write_bytes(b"RIFF broken")
    (folder / "notes.txt").write_text("not audio")
    return folder


def test_predict_cli_json_csv_table(trained, audio_folder, tmp_path):
    clips = sorted(audio_folder.rglob("clip*.wav"))
    runs = {
        "json": _cli("predict", trained.model_dir, audio_folder, "--format", "json", "--device", "cpu"),
        "csv": _cli("predict", trained.model_dir, *clips, audio_folder / "corrupt.wav", "--format", "csv",
                    "--output", tmp_path / "out.csv", "--device", "cpu"),
        "table": _cli("predict", trained.model_dir, clips[0], "--format", "table", "--segments", "--device", "cpu"),
    }
    done = {fmt: (*run.communicate(timeout=300), run.returncode) for fmt, run in runs.items()}
    for fmt, (_, err, code) in done.items():
        assert code == 0, (fmt, err[-2000:])

    # json: a folder (recursive, sorted, non-audio ignored) with a corrupt file in it
    out, err, _ = done["json"]
    out = json.loads(out)
    assert [Path(o["path"]).relative_to(audio_folder).as_posix() for o in out] == [
        "a/b/clip2.wav", "a/clip0.wav", "a/clip1.wav", "corrupt.wav"]
    for o in out[:3]:
        assert set(o) == {"path", "label", "probabilities", "segments"} and o["label"] in LABELS
        assert set(o["segments"][0]) == {"start_s", "end_s", "label", "probabilities"}
    assert out[3]["label"] is None and "unreadable" in out[3]["error"]
    bad_lines = [line for line in err.splitlines() if "corrupt.wav" in line]
    assert len(bad_lines) == 1 and "unreadable" in bad_lines[0]

    # csv, to a file: one row per input, the failed one with its error
    import csv
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    assert list(rows[0]) == ["path", "label", "duration_s", "n_segments", *[f"p_{lab}" for lab in LABELS], "error"]
    assert [row["label"] in LABELS for row in rows] == [True, True, True, False]
    assert rows[3]["error"] and sum(float(rows[0][f"p_{lab}"]) for lab in LABELS) == pytest.approx(1, abs=1e-4)
    assert done["csv"][0] == ""                               # nothing on stdout with --output

    # table, with the timeline
    lines = done["table"][0].splitlines()
    assert lines[0].startswith("path") and str(clips[0]) in lines[1] and any(lab in lines[1] for lab in LABELS)
    assert "0.0–" in lines[2]


def test_predict_cli_exits_2_when_nothing_worked(trained, audio_folder, tmp_path, capsys):
    assert main(["predict", str(trained.model_dir), str(audio_folder / "corrupt.wav"), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "corrupt.wav" in err and "no audio files" in err
    assert main(["predict", str(tmp_path / "no-model"), str(audio_folder)]) == 2
    assert "model folder not found" in capsys.readouterr().err


# ---------------------------------------------------------------------- camser evaluate

def _ravdess(root: Path) -> Path:
    """RAVDESS layout, two actors × neutral/calm/happy/sad/angry × two takes, sine-ish clips."""
    codes = {"01": 150, "02": 170, "03": 260, "04": 120, "05": 300}       # emotion code → pitch (Hz)
    for actor in (1, 2):
        d = root / f"Actor_{actor:02d}"
        d.mkdir(parents=True)
        for code, f0 in codes.items():
            for take in (1, 2):
                t = np.arange(int(1.6 * 16000)) / 16000
                y = 0.3 * np.sin(2 * np.pi * f0 * actor ** 0.1 * t) * np.sin(np.pi * t / 1.6) ** 0.5
                y += 0.01 * np.random.default_rng([actor, int(code), take]).standard_normal(len(t))
                sf.write(d / f"03-01-{code}-01-01-0{take}-{actor:02d}.wav", y.astype(np.float32), 16000)
    return root


def test_label_mapping_rules():
    assert map_labels(["angry", "happy", "neutral", "sad", "calm"], LABELS, "ravdess") == {
        "angry": "ang", "happy": "hap", "neutral": "neu", "sad": "sad", "calm": None}
    assert map_labels(["exc", "fru", "ang"], LABELS, "iemocap") == {"exc": "hap", "fru": None, "ang": "ang"}
    assert map_labels(["calm", "sad"], LABELS, "ravdess", {"calm": "neu", "sad": None}) == {"calm": "neu", "sad": None}
    with pytest.raises(CamserError, match="model's labels"):
        map_labels(["calm"], LABELS, "ravdess", {"calm": "relaxed"})


def test_evaluate_on_another_corpus(trained, tmp_path, capsys):
    corpus = _ravdess(tmp_path / "ravdess")
    out = tmp_path / "eval"
    assert main(["evaluate", str(trained.model_dir), "--corpus", "ravdess", "--root", str(corpus),
                 "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "WA " in printed and "UA " in printed and "calm 4" in printed
    results = json.loads((out / "results.json").read_text())
    assert {"config", "versions", "protocol", "labels", "folds", "summary"} <= set(results)
    assert results["labels"] == LABELS and len(results["folds"]) == 1
    fold = results["folds"][0]
    assert all(k in fold for k in FOLD_KEYS) and fold["n_test"] == 16
    assert results["evaluation"]["dropped"] == {"calm": 4}
    assert results["evaluation"]["label_map"]["angry"] == "ang"
    assert 0 <= results["summary"]["ua_mean"] <= 1 and (out / "predictions.csv").exists()

    label_map = tmp_path / "map.yaml"
    label_map.write_text("calm: neu\n")
    assert main(["evaluate", str(trained.model_dir), "--corpus", "ravdess", "--root", str(corpus),
                 "--out", str(tmp_path / "eval2"), "--label-map", str(label_map), "--device", "cpu"]) == 0
    results = json.loads((tmp_path / "eval2/results.json").read_text())
    assert results["evaluation"]["dropped"] == {} and results["folds"][0]["n_test"] == 20

    label_map.write_text("calm: relaxed\n")
    capsys.readouterr()
    assert main(["evaluate", str(trained.model_dir), "--corpus", "ravdess", "--root", str(corpus),
                 "--out", str(tmp_path / "eval3"), "--label-map", str(label_map)]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "relaxed" in err


def test_help_lists_the_inference_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("train", "predict", "evaluate"):
        assert cmd in out
