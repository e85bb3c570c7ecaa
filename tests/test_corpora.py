"""Corpus readers, label sets, manifests and summaries, on small trees generated in tmp_path."""
import csv
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from camser.config import LabelsConfig
from camser.corpora import (READERS, apply_label_set, read_manifest, read_skipped, scan_corpus,
                            summarize, write_manifest)
from camser.corpora import iemocap
from camser.corpora.synthetic import generate_iemocap
from camser.errors import CamserError, ConfigError

SHARED_RAVDESS = Path(__file__).parents[1].parent / "shared/data/ravdess"


def write_tone(path, seconds=0.5, sr=16_000, f=220.0, fmt=None, scale=0.3):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(sr * seconds)) / sr
    sf.write(path, (scale * np.sin(2 * np.pi * f * t)).astype(np.float32), sr,
             subtype="PCM_16", format=fmt)
    return path


# ----------------------------------------------------------------- IEMOCAP (synthetic tree)

@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory):
    """The default synthetic corpus: 3 sessions × 2 speakers × 16 turns (read-only: copy to modify)."""
    return generate_iemocap(tmp_path_factory.mktemp("iemocap"))


@pytest.fixture(scope="module")
def scanned(corpus_root):
    return scan_corpus("iemocap", corpus_root)


@pytest.fixture
def corpus_copy(corpus_root, tmp_path):
    return Path(shutil.copytree(corpus_root, tmp_path / "IEMOCAP_full_release"))


def label_lines(root):
    """{utterance id: raw label} straight from the EmoEvaluation files (the reference)."""
    out = {}
    for f in sorted(root.glob("Session*/dialog/EmoEvaluation/Ses*.txt")):
        out.update(iemocap.read_label_file(f))
    return out


def test_iemocap_raw_counts(scanned, corpus_root):
    assert scanned.skipped == []
    assert len(scanned.utterances) == 96
    assert Counter(u.label for u in scanned.utterances) == {
        "neu": 24, "ang": 18, "sad": 18, "hap": 12, "exc": 12, "fru": 6, "xxx": 6}
    assert {u.id: u.label for u in scanned.utterances} == label_lines(corpus_root)
    assert len({u.id for u in scanned.utterances}) == 96


def test_iemocap_default_label_set_merges_exc(scanned):
    utts, classes = apply_label_set(scanned.utterances, "iemocap", None)
    assert classes == ["ang", "sad", "hap", "neu"]
    assert len(utts) == 84
    assert Counter(u.label for u in utts) == {"ang": 18, "sad": 18, "hap": 24, "neu": 24}
    raw = {u.id: u.label for u in scanned.utterances}
    assert sum(raw[u.id] == "exc" for u in utts) == 12        # exc kept, relabelled hap
    assert not {raw[u.id] for u in utts} & {"fru", "xxx"}
    # the same through an explicit default config
    assert apply_label_set(scanned.utterances, "iemocap", LabelsConfig())[1] == classes


def test_iemocap_all_labels(scanned):
    # "all" keeps the default merge unless merge is {}; "xxx" (no majority) is never a class
    _, classes = apply_label_set(scanned.utterances, "iemocap", LabelsConfig(include="all"))
    assert classes == ["ang", "fru", "hap", "neu", "sad"]
    utts, classes = apply_label_set(scanned.utterances, "iemocap", LabelsConfig(include="all", merge={}))
    assert classes == ["ang", "exc", "fru", "hap", "neu", "sad"]
    counts = Counter(u.label for u in utts)
    assert counts["exc"] == 12 and counts["hap"] == 12 and "xxx" not in counts
    assert len(utts) == 90


def test_iemocap_explicit_list_order_and_errors(scanned):
    utts, classes = apply_label_set(scanned.utterances, "iemocap", LabelsConfig(include=["neu", "ang"], merge={}))
    assert classes == ["neu", "ang"] and len(utts) == 42
    with pytest.raises(ConfigError, match="anger"):
        apply_label_set(scanned.utterances, "iemocap", LabelsConfig(include=["anger"]))
    with pytest.raises(ConfigError, match="exc"):  # merged away by the default merge
        apply_label_set(scanned.utterances, "iemocap", LabelsConfig(include=["exc", "neu"]))


def test_iemocap_speakers_sessions_from_turn_names(scanned):
    by_id = {u.id: u for u in scanned.utterances}
    assert {u.speaker for u in scanned.utterances} == {f"Ses0{s}{g}" for s in (1, 2, 3) for g in "FM"}
    assert {u.session for u in scanned.utterances} == {"Ses01", "Ses02", "Ses03"}
    # the letter before the turn number, not the one after the session number
    assert by_id["Ses01F_impro01_M000"].speaker == "Ses01M"
    assert by_id["Ses01M_script01_1_F000"].speaker == "Ses01F"
    assert by_id["Ses02F_impro01_F003"].session == "Ses02"
    assert Counter(u.speaker for u in scanned.utterances) == {s: 16 for s in {u.speaker for u in scanned.utterances}}
    assert iemocap.speaker_of("Ses05M_script02_2_F014") == ("Ses05F", "Ses05")
    assert iemocap.speaker_of("not_a_turn") is None


def test_iemocap_utterances_have_audio_duration_and_transcripts(scanned, corpus_root):
    for u in scanned.utterances:
        assert Path(u.path).is_absolute() and Path(u.path).name == f"{u.id}.wav"
        assert u.duration_s == pytest.approx(sf.info(u.path).duration)
        assert 1.5 <= u.duration_s <= 7.0
        assert u.text and not u.text.startswith("[")
    first = (corpus_root / "Session1/dialog/transcriptions/Ses01F_impro01.txt").read_text().splitlines()[0]
    utt_id, text = first.split(" ", 1)[0], first.split(": ", 1)[1]
    assert {u.id: u.text for u in scanned.utterances}[utt_id] == text


def test_iemocap_ignores_apple_double_and_annotator_folders(corpus_copy):
    # the generator's ._ label file holds a conflicting label line; add more decoys
    assert list(corpus_copy.glob("Session1/dialog/EmoEvaluation/._*.txt"))
    line = "[1.0000 - 2.0000]\tSes01F_impro01_F000\tsad\t[2.0, 2.0, 2.0]\n"
    for sub in ("Categorical", "Attribute", "Self-evaluation"):
        (corpus_copy / "Session1/dialog/EmoEvaluation" / sub).mkdir(exist_ok=True)
        (corpus_copy / "Session1/dialog/EmoEvaluation" / sub / "Ses01F_impro01_e9.txt").write_text(line)
    (corpus_copy / "Session1/sentences/wav/Ses01F_impro01/._Ses01F_impro01_F000.wav").write_bytes(b"\x00\x05\x16\x07junk")
    (corpus_copy / "._Session9").write_bytes(b"\x00\x05\x16\x07")
    scan = scan_corpus("iemocap", corpus_copy)
    assert scan.skipped == [] and len(scan.utterances) == 96
    assert {u.id: u.label for u in scan.utterances} == label_lines(corpus_copy)


def test_iemocap_corrupt_and_missing_audio_are_skipped(corpus_copy):
    wav_dir = corpus_copy / "Session2/sentences/wav/Ses02F_impro01"
    corrupt = wav_dir / "Ses02F_impro01_F001.wav"
    corrupt.write_bytes(b"RIFF\x00\x00not really a wav file")
    missing = wav_dir / "Ses02F_impro01_M002.wav"
    missing.unlink()
    silent = wav_dir / "Ses02F_impro01_M003.wav"
    sf.write(silent, np.zeros(16_000, dtype=np.float32), 16_000, subtype="PCM_16")
    scan = scan_corpus("iemocap", corpus_copy)
    assert len(scan.utterances) == 93
    reasons = {Path(p).name: r for p, r in scan.skipped}
    assert reasons["Ses02F_impro01_M002.wav"] == "missing audio"
    assert reasons["Ses02F_impro01_F001.wav"].startswith("unreadable audio")
    assert reasons["Ses02F_impro01_M003.wav"].startswith("silent audio")
    assert all(Path(p).is_absolute() for p, _ in scan.skipped)


def test_iemocap_root_can_be_the_parent_folder(corpus_root):
    assert len(scan_corpus("iemocap", corpus_root.parent).utterances) == 96


def test_min_duration_skips_short_files(corpus_root):
    scan = scan_corpus("iemocap", corpus_root, min_duration_s=3.0)
    short = [r for _, r in scan.skipped]
    assert short and all(r.startswith("too short") for r in short)
    assert len(scan.utterances) + len(short) == 96
    assert min(u.duration_s for u in scan.utterances) >= 3.0


def test_scan_corpus_user_errors(tmp_path):
    with pytest.raises(CamserError, match="unknown corpus 'voxceleb'"):
        scan_corpus("voxceleb", tmp_path)
    with pytest.raises(CamserError, match="nowhere"):
        scan_corpus("ravdess", tmp_path / "nowhere")
    assert set(READERS) == {"iemocap", "ravdess", "cremad", "emodb", "tess", "csv"}
    for name, reader in READERS.items():
        assert callable(reader.scan) and isinstance(reader.DEFAULT_MERGE, dict), name


# ----------------------------------------------------------------- other readers (tiny trees)

def test_ravdess_wav_and_flac(tmp_path):
    root = tmp_path / "ravdess"
    write_tone(root / "Actor_01/03-01-01-01-01-01-01.wav")
    write_tone(root / "Actor_01/03-01-05-02-01-02-01.wav")
    write_tone(root / "Actor_18/03-01-05-01-02-01-18.flac", fmt="FLAC")
    write_tone(root / "Actor_18/03-01-08-02-02-02-18.flac", sr=48_000, fmt="FLAC")
    write_tone(root / "Actor_18/03-02-03-01-01-01-18.wav")            # song
    write_tone(root / "Actor_18/01-01-03-01-01-01-18.wav")            # audio-visual
    write_tone(root / "Actor_18/readme.wav")
    (root / "Actor_18/._03-01-05-01-02-01-18.flac").write_bytes(b"\x00\x05\x16\x07")
    scan = scan_corpus("ravdess", root)
    by_id = {u.id: u for u in scan.utterances}
    assert set(by_id) == {"03-01-01-01-01-01-01", "03-01-05-02-01-02-01", "03-01-05-01-02-01-18", "03-01-08-02-02-02-18"}
    assert by_id["03-01-05-01-02-01-18"].label == "angry"
    assert by_id["03-01-05-01-02-01-18"].speaker == by_id["03-01-05-01-02-01-18"].session == "Actor_18"
    assert by_id["03-01-01-01-01-01-01"].label == "neutral" and by_id["03-01-01-01-01-01-01"].speaker == "Actor_01"
    assert by_id["03-01-08-02-02-02-18"].label == "surprised"
    assert by_id["03-01-08-02-02-02-18"].duration_s == pytest.approx(0.5)
    reasons = {Path(p).name: r for p, r in scan.skipped}
    assert set(reasons) == {"03-02-03-01-01-01-18.wav", "01-01-03-01-01-01-18.wav", "readme.wav"}
    assert "vocal channel 02" in reasons["03-02-03-01-01-01-18.wav"]
    assert "modality 01" in reasons["01-01-03-01-01-01-18.wav"]
    _, classes = apply_label_set(scan.utterances, "ravdess", LabelsConfig(include="all"))
    assert classes == ["angry", "neutral", "surprised"]


def test_cremad(tmp_path):
    root = tmp_path / "CREMA-D"
    write_tone(root / "AudioWAV/1001_DFA_ANG_XX.wav")
    write_tone(root / "AudioWAV/1001_IEO_HAP_HI.wav")
    write_tone(root / "AudioWAV/1091_TSI_SAD_XX.wav")
    (root / "AudioWAV/1076_MTI_SAD_XX.wav").write_bytes(b"")           # the corpus's empty file
    write_tone(root / "AudioWAV/1002_DFA_XYZ_XX.wav")
    write_tone(root / "AudioMP3/1001_DFA_ANG_XX.wav")                  # outside AudioWAV: not read
    scan = scan_corpus("cremad", root)
    assert [(u.id, u.label, u.speaker) for u in scan.utterances] == [
        ("1001_DFA_ANG_XX", "ang", "1001"), ("1001_IEO_HAP_HI", "hap", "1001"), ("1091_TSI_SAD_XX", "sad", "1091")]
    reasons = {Path(p).name: r for p, r in scan.skipped}
    assert reasons["1076_MTI_SAD_XX.wav"].startswith("unreadable audio")
    assert "1002_DFA_XYZ_XX.wav" in reasons


def test_emodb(tmp_path):
    root = tmp_path / "emodb"
    write_tone(root / "wav/03a01Fa.wav")
    write_tone(root / "wav/16b10Wb.wav")
    write_tone(root / "wav/08a02Tc.wav")
    sf.write(root / "wav/09a01Na.wav", np.zeros(8000, np.float32), 16_000)   # silent
    write_tone(root / "wav/10a01Xa.wav")                                     # unknown letter
    scan = scan_corpus("emodb", root)
    assert [(u.id, u.label, u.speaker, u.session) for u in scan.utterances] == [
        ("03a01Fa", "happiness", "03", "03"), ("08a02Tc", "sadness", "08", "08"), ("16b10Wb", "anger", "16", "16")]
    reasons = {Path(p).name: r for p, r in scan.skipped}
    assert reasons["09a01Na.wav"].startswith("silent audio") and "10a01Xa.wav" in reasons


def test_tess(tmp_path):
    root = tmp_path / "TESS"
    write_tone(root / "OAF_angry/OAF_back_angry.wav", sr=24_414)
    write_tone(root / "YAF_pleasant_surprise/YAF_back_ps.wav")
    write_tone(root / "OAF_Pleasant_surprise/OAF_bite_pleasant_surprise.wav")
    write_tone(root / "YAF_neutral/YAF_youth_neutral.wav")
    write_tone(root / "YAF_neutral/notes.wav")
    scan = scan_corpus("tess", root)
    assert {u.id: (u.label, u.speaker) for u in scan.utterances} == {
        "OAF_back_angry": ("angry", "OAF"), "YAF_back_ps": ("surprise", "YAF"),
        "OAF_bite_pleasant_surprise": ("surprise", "OAF"), "YAF_youth_neutral": ("neutral", "YAF")}
    assert [Path(p).name for p, _ in scan.skipped] == ["notes.wav"]


def test_csv_manifest_reader(tmp_path):
    root = tmp_path / "mine"
    write_tone(root / "audio/a.wav")
    write_tone(root / "audio/sub/b.flac", fmt="FLAC")
    write_tone(root / "c.wav", seconds=0.05)
    (root / "list.csv").write_text(
        "path,label,speaker,session,text\n"
        "audio/a.wav,happy,spk1,day1,hello there\n"
        "audio/sub/b.flac,sad,spk2,,\n"
        "c.wav,sad,spk2,,\n"
        "audio/gone.wav,sad,spk3,,\n")
    scan = scan_corpus("csv", root / "list.csv")      # min_duration_s=0.1 drops c.wav
    by_id = {u.id: u for u in scan.utterances}
    assert set(by_id) == {"a", "b"}
    assert (by_id["a"].session, by_id["a"].text) == ("day1", "hello there")
    assert (by_id["b"].speaker, by_id["b"].session, by_id["b"].text) == ("spk2", "spk2", None)
    assert by_id["b"].path == str((root / "audio/sub/b.flac").absolute())
    reasons = {Path(p).name: r for p, r in scan.skipped}
    assert reasons["c.wav"].startswith("too short") and reasons["gone.wav"] == "file not found"
    utts, classes = apply_label_set(scan.utterances, "csv", None)
    assert classes == ["happy", "sad"] and len(utts) == 2


def test_csv_manifest_missing_column(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\na.wav,happy\n")
    with pytest.raises(CamserError, match=r"bad\.csv: missing column 'speaker'"):
        scan_corpus("csv", bad)


# ----------------------------------------------------------------- manifest and summary

def test_manifest_round_trip(scanned, tmp_path):
    skipped = [("/data/x.wav", "missing audio"), ("/data/y.wav", "silent audio (all samples are zero)")]
    path = write_manifest(tmp_path / "prepared", scanned.utterances, skipped)
    with open(path, newline="") as f:
        assert next(csv.reader(f)) == ["id", "path", "label", "speaker", "session", "duration_s", "text"]
    assert read_manifest(tmp_path / "prepared") == scanned.utterances
    assert read_manifest(path) == scanned.utterances
    assert read_skipped(tmp_path / "prepared") == skipped
    no_text = [u.__class__(**{**u.__dict__, "text": None}) for u in scanned.utterances[:3]]
    write_manifest(tmp_path / "p2", no_text)
    assert read_manifest(tmp_path / "p2") == no_text
    assert read_skipped(tmp_path / "p2") == []


def test_read_manifest_errors(tmp_path):
    with pytest.raises(CamserError, match="manifest.csv: manifest not found"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.csv").write_text("id,path,label\nx,/a.wav,neu\n")
    with pytest.raises(CamserError, match="manifest.csv: not a manifest .*speaker"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.csv").write_text(
        "id,path,label,speaker,session,duration_s,text\nx,/a.wav,neu,s,s,long,\n")
    with pytest.raises(CamserError, match=r"manifest.csv:2: bad duration_s"):
        read_manifest(tmp_path)


def test_summary(scanned):
    skipped = [(f"/data/{i}.wav", "missing audio") for i in range(7)]
    text = summarize(scanned.utterances, skipped)
    assert text.startswith("96 utterances, 0.11 h")
    for word in ("per label", "per speaker", "per session", "exc", "xxx", "Ses02M", "Ses03",
                 "skipped: 7 files", "/data/0.wav: missing audio", "and 2 more"):
        assert word in text, word
    assert "  neu" in text and "24" in text.split("  neu", 1)[1].splitlines()[0]
    assert summarize([], []).startswith("0 utterances")


# ----------------------------------------------------------------- the real RAVDESS (../shared)

@pytest.mark.shared
@pytest.mark.skipif(not SHARED_RAVDESS.is_dir(), reason=f"{SHARED_RAVDESS} not present")
def test_real_ravdess():
    scan = scan_corpus("ravdess", SHARED_RAVDESS)
    assert scan.skipped == []
    assert len(scan.utterances) == 1440
    speakers = Counter(u.speaker for u in scan.utterances)
    assert len(speakers) == 24 and set(speakers.values()) == {60}
    labels = Counter(u.label for u in scan.utterances)
    assert labels.pop("neutral") == 96 and set(labels.values()) == {192} and len(labels) == 7
    folds = SHARED_RAVDESS / "folds_emobox.csv"
    if folds.is_file():
        with open(folds, newline="") as f:
            stems = {row["file_stem"] for row in csv.DictReader(f)}
        assert stems == {u.id for u in scan.utterances}
