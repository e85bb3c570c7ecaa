"""benchmarks/results_table.py: the README's RAVDESS tables from run folders, with the
originals-only row of a test-time-augmented run and paired changes against a reference."""
import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("results_table", REPO / "benchmarks" / "results_table.py")
results_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(results_table)


def _run(folder: Path, uas: dict, originals: dict | None = None) -> Path:
    """A results.json with one fold entry per (fold, seed) → UA (WA = UA, macro-F1 = UA − 0.01)."""
    folds = []
    for (fold, seed), ua in uas.items():
        entry = {"fold": fold, "seed": seed, "ua": ua, "wa": ua, "f1_macro": ua - 0.01, "recall": {}}
        if originals is not None:
            o = originals[(fold, seed)]
            entry["originals_only"] = {"ua": o, "wa": o, "f1_macro": o - 0.01}
        folds.append(entry)
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"config": {"name": folder.name}, "folds": folds,
                                                      "summary": {}, "labels": ["a", "b"]}))
    return folder


def test_a_test_time_run_gets_its_originals_only_row_and_pairs_each_view(tmp_path, capsys):
    keys = [(1, 111), (2, 111), (1, 222), (2, 222)]
    ref = _run(tmp_path / "ref", dict(zip(keys, [0.70, 0.80, 0.72, 0.78])))
    tta = _run(tmp_path / "tta", dict(zip(keys, [0.74, 0.80, 0.74, 0.80])),
               dict(zip(keys, [0.72, 0.82, 0.72, 0.78])))
    assert results_table.row(tta)["ua"] == pytest.approx((0.77, 0.03))
    assert results_table.row(tta, originals_only=True)["ua"][0] == pytest.approx(0.76)
    # paired: seed 111 +0.02 / +0.02 (originals), seed 222 +0.02 / 0.0
    mean, std, n = results_table.paired_change(tta, ref)
    assert (mean, std, n) == (pytest.approx(0.02), pytest.approx(0.0), 4)
    mean, std, _ = results_table.paired_change(tta, ref, originals_only=True)
    assert (mean, std) == (pytest.approx(0.01), pytest.approx(0.01))
    results_table.main(["--levers", str(ref), str(tta), "--reference", str(ref)])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| `")]
    assert [line.split("`")[1] for line in lines] == ["ref", "tta", "tta (originals only)"]
    assert "+1.0 ± 1.0 (4)" in lines[2] and "+2.0 ± 0.0 (4)" in lines[1]


def test_pair_originals_pairs_originals_only_views_with_each_other(tmp_path, capsys):
    keys = [(1, 111), (1, 222)]
    ref = _run(tmp_path / "ref", dict(zip(keys, [0.80, 0.80])), dict(zip(keys, [0.76, 0.74])))
    run = _run(tmp_path / "run", dict(zip(keys, [0.81, 0.79])), dict(zip(keys, [0.77, 0.77])))
    # originals-only of the run against the reference's originals-only: +0.01 and +0.03
    mean, std, _ = results_table.paired_change(run, ref, originals_only=True, reference_originals=True)
    assert (mean, std) == (pytest.approx(0.02), pytest.approx(0.01))
    # a reference without an originals-only view is paired as scored
    plain = _run(tmp_path / "plain", dict(zip(keys, [0.75, 0.75])))
    assert results_table.paired_change(run, plain, True, reference_originals=True)[0] == pytest.approx(0.02)
    results_table.main(["--levers", str(run), "--reference", str(ref), "--pair-originals"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| `")]
    assert "+0.0 ± 1.0 (2)" in lines[0] and "+2.0 ± 1.0 (2)" in lines[1]


def test_validation_curve_averages_each_epoch_over_the_entries(tmp_path, capsys):
    run = _run(tmp_path / "run", {(1, 111): 0.8, (2, 111): 0.8})
    for name, uas in (("fold01_seed111", [0.5, 0.7, 0.8]), ("fold02_seed111", [0.6, 0.9])):
        (run / "folds" / name).mkdir(parents=True)
        history = [{"epoch": e + 1, "val_ua": u} for e, u in enumerate(uas)]
        (run / "folds" / name / "result.json").write_text(json.dumps({"history": history}))
    assert results_table.validation_curve(run) == pytest.approx([0.55, 0.8])   # epochs both entries have
    results_table.main(["--val-curve", str(run)])
    assert capsys.readouterr().out.strip() == "run: validation UA % per epoch 55.0, 80.0"


def test_a_run_without_validation_says_so_instead_of_an_empty_curve(tmp_path, capsys):
    run = _run(tmp_path / "noval", {(1, 111): 0.8})
    (run / "folds" / "fold01_seed111").mkdir(parents=True)
    (run / "folds" / "fold01_seed111" / "result.json").write_text(json.dumps({"history": [{"epoch": 1}]}))
    results_table.main(["--val-curve", str(run)])
    assert capsys.readouterr().out.strip() == "noval: no validation UA recorded (protocol.validation: none?)"


def test_ablation_table_pairs_every_row_with_the_full_model_per_folder(tmp_path, capsys):
    from camser.models.camser import ABLATIONS
    keys = [(1, 111), (1, 222)]
    strict, speaker = tmp_path / "strict", tmp_path / "speaker"
    strict.mkdir(), speaker.mkdir()
    _run(strict / "mfcc+spec+w2e+coatt", dict(zip(keys, [0.80, 0.78])))
    _run(strict / "w2e", dict(zip(keys, [0.78, 0.78])))            # −0.02, 0.0 → −1.0 ± 1.0
    for name, ua in (("mfcc+spec+w2e+coatt", 0.86), ("mfcc", 0.40)):
        run = _run(speaker / name, dict(zip(keys, [ua, ua])))
        r = json.loads((run / "results.json").read_text())
        (run / "results.json").write_text(json.dumps({**r, "normalize": {"mode": "speaker"}}))
    results_table.main(["--ablation", str(strict), str(speaker)])
    out = capsys.readouterr().out.splitlines()
    assert "strict (none): UA %" in out[0] and "speaker (speaker): UA %" in out[0]
    rows = {line.split("`")[1]: [c.strip() for c in line.split("|")[2:-1]] for line in out[2:]}
    assert list(rows) == list(ABLATIONS)                      # every row of the paper, in its order
    assert rows["w2e"] == ["78.0 ± 0.0", "78.0 ± 0.0", "-1.0 ± 1.0", "–", "–", "–"]
    assert rows["mfcc"] == ["–", "–", "–", "40.0 ± 0.0", "40.0 ± 0.0", "-46.0 ± 0.0"]
    assert rows["mfcc+spec+w2e+coatt"] == ["79.0 ± 1.0", "79.0 ± 1.0", "–", "86.0 ± 0.0", "86.0 ± 0.0", "–"]
    assert rows["spec"] == ["–"] * 6
