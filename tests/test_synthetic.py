"""The synthetic IEMOCAP-layout corpus: layout, determinism, speed, and that it is learnable."""
import time
from collections import defaultdict

import numpy as np
import pytest
import soundfile as sf

from camser.corpora import apply_label_set, scan_corpus
from camser.corpora.synthetic import PROSODY, Voice, generate_iemocap, synthesize


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """(root, seconds to generate) for the default size."""
    start = time.perf_counter()
    root = generate_iemocap(tmp_path_factory.mktemp("synthetic"))
    return root, time.perf_counter() - start


def all_files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout(generated):
    root, _ = generated
    assert root.name == "IEMOCAP_full_release"
    assert sorted(p.name for p in root.glob("Session*")) == ["Session1", "Session2", "Session3"]
    labels = root / "Session1/dialog/EmoEvaluation"
    assert sorted(p.name for p in labels.glob("Ses*.txt")) == ["Ses01F_impro01.txt", "Ses01M_script01_1.txt"]
    assert list((labels / "Categorical").glob("*.txt"))
    assert (labels / "._Ses01F_impro01.txt").is_file()
    text = (labels / "Ses01F_impro01.txt").read_text().splitlines()
    assert text[0].startswith("% [START_TIME - END_TIME] TURN_NAME EMOTION")
    assert any(line.startswith("C-E1:\t") for line in text) and any(line.startswith("A-E1:\tval ") for line in text)
    assert (root / "Session1/dialog/transcriptions/Ses01M_script01_1.txt").is_file()
    wavs = sorted(root.glob("Session*/sentences/wav/*/*.wav"))
    assert len(wavs) == 96
    info = sf.info(wavs[0])
    assert (info.samplerate, info.channels, info.subtype) == (16_000, 1, "PCM_16")
    durations = [sf.info(w).duration for w in wavs]
    assert min(durations) >= 1.5 and max(durations) <= 7.0
    assert sum(d > 3.0 for d in durations) > 30 and sum(d > 6.0 for d in durations) > 3  # 2–3 segments of 3 s


def test_generation_is_fast(generated):
    _, seconds = generated
    assert seconds < 30  # a few seconds on one core; generous for a shared machine


def test_deterministic_for_a_seed(tmp_path):
    a = all_files(generate_iemocap(tmp_path / "a", n_sessions=1, utterances_per_speaker=4, seed=3))
    b = all_files(generate_iemocap(tmp_path / "b", n_sessions=1, utterances_per_speaker=4, seed=3))
    c = all_files(generate_iemocap(tmp_path / "c", n_sessions=1, utterances_per_speaker=4, seed=4))
    assert a == b
    wav = "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav"
    assert a[wav] != c[wav]


def test_small_sizes_read_back(tmp_path):
    root = generate_iemocap(tmp_path, n_sessions=2, utterances_per_speaker=5, seed=1)
    scan = scan_corpus("iemocap", root)
    assert scan.skipped == [] and len(scan.utterances) == 2 * 2 * 5
    assert {u.speaker for u in scan.utterances} == {"Ses01F", "Ses01M", "Ses02F", "Ses02M"}


def test_prosody_depends_on_emotion_and_speaker():
    rng = np.random.default_rng
    female, male = Voice(210.0, 1.15, 0.0), Voice(115.0, 1.0, 0.0)
    loud = synthesize("ang", male, rng(0), 3.0)
    soft = synthesize("sad", male, rng(0), 3.0)
    assert loud.dtype == np.float32 and len(loud) == 48_000 and np.all(np.abs(loud) < 1)
    assert np.sqrt(np.mean(loud ** 2)) > 2 * np.sqrt(np.mean(soft ** 2))
    # pitch: female above male (autocorrelation peak of a voiced stretch)
    def f0(y, sr=16_000):
        x = y[8000:8000 + 4096] - y[8000:8000 + 4096].mean()
        ac = np.correlate(x, x, "full")[len(x) - 1:]
        lo, hi = sr // 400, sr // 60
        return sr / (lo + np.argmax(ac[lo:hi]))
    assert f0(synthesize("neu", female, rng(1), 3.0)) > 1.4 * f0(synthesize("neu", male, rng(1), 3.0))
    assert set(PROSODY) >= {"ang", "sad", "hap", "neu", "exc", "fru", "xxx"}


def test_learnable_on_held_out_speakers(generated):
    """Mean (and std) MFCC + logistic regression, leave one session (2 speakers) out: far above
    the 25 % chance of 4 classes."""
    librosa = pytest.importorskip("librosa")
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    root, _ = generated
    utts, classes = apply_label_set(scan_corpus("iemocap", root).utterances, "iemocap", None)
    features = []
    for u in utts:
        y, sr = sf.read(u.path, dtype="float32")
        m = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20)
        features.append(np.concatenate([m.mean(axis=1), m.std(axis=1)]))
    x = np.array(features)
    y = np.array([classes.index(u.label) for u in utts])
    sessions = np.array([u.session for u in utts])
    correct = total = 0
    per_fold = defaultdict(float)
    for s in sorted(set(sessions)):
        test = sessions == s
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        clf.fit(x[~test], y[~test])
        hits = int((clf.predict(x[test]) == y[test]).sum())
        per_fold[s] = hits / test.sum()
        correct, total = correct + hits, total + int(test.sum())
    assert correct / total > 0.6, dict(per_fold)
