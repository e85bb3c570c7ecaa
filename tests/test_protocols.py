import csv
from pathlib import Path

import pytest

from camser.config import ProtocolConfig
from camser.errors import CamserError, ConfigError
from camser.protocols import PAPER_WARNING, make_folds
from camser.types import Utterance


@pytest.fixture
def iemocap():
    """5 sessions × 2 speakers (F/M) × 4 utterances, IEMOCAP-style ids."""
    return [Utterance(f"Ses0{s}{g}_impro01_{g}00{i}", f"/c/Ses0{s}{g}_{i}.wav",
                      "neu", f"Ses0{s}{g}", f"Ses0{s}", 2.0)
            for s in range(1, 6) for g in "FM" for i in range(4)]


def _check_clean(folds, utts):
    speaker = {u.id: u.speaker for u in utts}
    for f in folds:
        test = {speaker[i] for i in f.test_ids}
        train = {speaker[i] for i in f.train_ids}
        val = {speaker[i] for i in f.val_ids}
        assert f.val_ids and f.train_ids and f.test_ids
        assert not test & train and not test & val and not train & val
        assert val == set(f.val_speakers) and test == set(f.test_speakers)
        assert set(f.test_ids) | set(f.train_ids) | set(f.val_ids) == set(speaker)
        assert not f.optimistic and f.warning is None


def test_loso(iemocap):
    folds = make_folds(iemocap, ProtocolConfig(scheme="loso"))
    assert [f.index for f in folds] == [1, 2, 3, 4, 5]
    assert [f.test_speakers for f in folds] == [[f"Ses0{s}F", f"Ses0{s}M"] for s in range(1, 6)]
    _check_clean(folds, iemocap)
    vals = [f.val_speakers[0] for f in folds]
    assert len(set(vals)) == 5                                    # rotates over folds
    assert {v[-1] for v in vals} == {"F", "M"}                    # both genders used
    # Every test utterance is tested exactly once over the folds.
    assert sorted(i for f in folds for i in f.test_ids) == sorted(u.id for u in iemocap)


def test_loso_speaker(iemocap):
    folds = make_folds(iemocap, ProtocolConfig(scheme="loso_speaker"))
    assert len(folds) == 10
    assert all(len(f.test_speakers) == 1 for f in folds)
    _check_clean(folds, iemocap)
    for f in folds:   # the session partner (shared dialogues) isn't the validation speaker
        assert f.val_speakers[0][:5] != f.test_speakers[0][:5]
    assert len({f.val_speakers[0] for f in folds}) == 10


def test_lnso_groups_sorted_speakers(iemocap):
    folds = make_folds(iemocap, ProtocolConfig(scheme="lnso", n_speakers=3, val_speakers=2))
    assert [f.test_speakers for f in folds] == [
        ["Ses01F", "Ses01M", "Ses02F"], ["Ses02M", "Ses03F", "Ses03M"],
        ["Ses04F", "Ses04M", "Ses05F"], ["Ses05M"]]
    assert all(len(f.val_speakers) == 2 for f in folds)
    _check_clean(folds, iemocap)


def test_paper_mode_validates_on_test(iemocap):
    folds = make_folds(iemocap, ProtocolConfig(scheme="loso", validation="paper"))
    for f in folds:
        assert f.val_ids == f.test_ids and f.val_speakers == f.test_speakers
        assert f.optimistic and f.warning == PAPER_WARNING and "optimistic" in f.warning
        assert not set(f.train_ids) & set(f.test_ids)


def test_selected_folds_keep_their_index_and_choice(iemocap):
    every = make_folds(iemocap, ProtocolConfig(scheme="loso"))
    some = make_folds(iemocap, ProtocolConfig(scheme="loso", folds=[2, 5]))
    assert [f.index for f in some] == [2, 5]
    assert some[0] == every[1] and some[1] == every[4]
    with pytest.raises(ConfigError, match="protocol.folds"):
        make_folds(iemocap, ProtocolConfig(scheme="loso", folds=[6]))


def test_bad_config(iemocap):
    with pytest.raises(ConfigError, match=r"protocol\.scheme.*loso, loso_speaker, lnso, csv"):
        make_folds(iemocap, ProtocolConfig(scheme="kfold"))
    with pytest.raises(ConfigError, match="protocol.validation"):
        make_folds(iemocap, ProtocolConfig(validation="test"))
    with pytest.raises(ConfigError, match="protocol.val_speakers"):
        make_folds(iemocap, ProtocolConfig(scheme="lnso", n_speakers=5, val_speakers=5))
    with pytest.raises(ConfigError, match="corpus.folds_csv"):
        make_folds(iemocap, ProtocolConfig(scheme="csv"))


def _write_csv(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["fold", "split", "file_stem", "speaker", "emotion"])
        w.writerows(rows)
    return path


def test_csv_folds(iemocap, tmp_path):
    by_speaker = {}
    for u in iemocap:
        by_speaker.setdefault(u.speaker, []).append(u)
    speakers = sorted(by_speaker)
    rows = []
    for k in range(2):   # fold k tests speakers 5k..5k+4; one utterance left out of fold 1
        for s_i, s in enumerate(speakers):
            for u in by_speaker[s]:
                if k == 0 and u is iemocap[-1]:
                    continue
                rows.append([k + 1, "test" if s_i // 5 == k else "train", u.id, s, u.label])
    csv_path = _write_csv(tmp_path / "folds.csv", rows)
    folds = make_folds(iemocap, ProtocolConfig(scheme="csv"), folds_csv=csv_path)
    assert len(folds) == 2 and folds[0].name == "fold 1"
    assert folds[0].test_speakers == speakers[:5] and folds[1].test_speakers == speakers[5:]
    assert iemocap[-1].id not in folds[0].train_ids + folds[0].val_ids + folds[0].test_ids
    assert iemocap[-1].id in folds[1].test_ids
    _check_clean(folds[1:], iemocap)

    paper = make_folds(iemocap, ProtocolConfig(scheme="csv", validation="paper"), folds_csv=csv_path)
    assert paper[0].val_ids == paper[0].test_ids and paper[0].warning

    # Stems the corpus lacks: an error naming the CSV and how many.
    _write_csv(tmp_path / "bad.csv", rows + [[1, "test", "nope1", "x", "neu"],
                                             [2, "test", "nope2", "x", "neu"]])
    with pytest.raises(CamserError, match=r"bad\.csv: 2 file stem"):
        make_folds(iemocap, ProtocolConfig(scheme="csv"), folds_csv=tmp_path / "bad.csv")


RAVDESS_FOLDS = Path(__file__).resolve().parents[1].parent / "shared/data/ravdess/folds_emobox.csv"


@pytest.mark.shared
@pytest.mark.skipif(not RAVDESS_FOLDS.is_file(), reason="../shared RAVDESS folds absent")
def test_emobox_ravdess_folds():
    with RAVDESS_FOLDS.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    seen = {}
    for r in rows:
        seen.setdefault(r["file_stem"], r)
    utts = [Utterance(stem, f"Actor_{int(r['speaker']):02d}/{stem}.wav", r["emotion"],
                      r["speaker"], r["speaker"], 3.7) for stem, r in seen.items()]
    assert len(utts) == 1440
    folds = make_folds(utts, ProtocolConfig(scheme="csv"), folds_csv=RAVDESS_FOLDS)
    assert len(folds) == 6
    assert all(len(f.test_speakers) == 4 for f in folds)
    tested = [s for f in folds for s in f.test_speakers]
    assert sorted(map(int, tested)) == list(range(1, 25))   # each actor tested once
    _check_clean(folds, utts)
    assert len({tuple(f.val_speakers) for f in folds}) == 6


def test_validation_none_trains_on_every_training_speaker(iemocap):
    clean = make_folds(iemocap, ProtocolConfig(scheme="loso"))
    none = make_folds(iemocap, ProtocolConfig(scheme="loso", validation="none"))
    for c, n in zip(clean, none):
        assert n.val_ids == [] and n.val_speakers == []
        assert n.test_ids == c.test_ids and not n.optimistic and n.warning is None
        assert sorted(n.train_ids) == sorted(c.train_ids + c.val_ids)   # the held-out speakers train
        assert n.train_speakers == sorted(set(c.train_speakers) | set(c.val_speakers))
        assert not set(n.train_speakers) & set(n.test_speakers)


def test_validation_none_csv_predefined_validation_rows_train(iemocap, tmp_path):
    rows = [[1, "test" if u.speaker == "Ses01F" else "val" if u.speaker == "Ses01M" else "train",
             u.id, u.speaker, u.label] for u in iemocap]
    csv_path = _write_csv(tmp_path / "folds.csv", rows)
    (fold,) = make_folds(iemocap, ProtocolConfig(scheme="csv", validation="none"), folds_csv=csv_path)
    assert fold.val_ids == [] and "Ses01M" in fold.train_speakers and fold.test_speakers == ["Ses01F"]


def test_training_split_without_validation_uses_every_speaker(iemocap):
    from camser.protocols import training_split
    split = training_split(iemocap, ProtocolConfig(validation="none"))
    assert split.val_ids == [] and sorted(split.train_ids) == sorted(u.id for u in iemocap)
    held = training_split(iemocap, ProtocolConfig(val_speakers=2))
    assert len(held.val_speakers) == 2 and len(held.train_ids) == len(iemocap) - 8
