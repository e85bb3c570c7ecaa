"""camser sweep on a tiny synthetic corpus (scikit-learn MLP on MFCC means, ~1 s a trial): a 2 × 2
grid, a 6-trial TPE search by two worker processes on one SQLite study, resuming after a kill,
failed trials, and bad search spaces refused before any feature is extracted."""
import csv
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from camser.config import load_config
from conftest import prepared_corpus

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """3 sessions × 2 speakers × 12 turns, prepared; one feature cache for every test here."""
    root = tmp_path_factory.mktemp("sweep")
    prepared_corpus(root, n_sessions=3, utterances_per_speaker=12)
    return root


def write_config(root: Path, folder: Path, sweep: dict | None = None, seeds=(0,), cache: Path | None = None,
                 folds=(1,)) -> Path:
    cfg = {"name": "tiny", "corpus": {"name": "iemocap", "prepared": str(root / "prepared")},
           "features": {"kinds": ["mfcc"], "cache_dir": str(cache or root / "cache")},
           "model": {"name": "mlp", "features": ["mfcc"], "hidden": 16, "max_iter": 60},
           "train": {"seeds": list(seeds), "num_threads": 1},
           "protocol": {"scheme": "loso", "validation": "clean", "folds": list(folds)},
           "output": {"tsne": False, "curves": False}}
    if sweep is not None:
        cfg["sweep"] = sweep
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def camser(*args, **kwargs):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "camser.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300, **kwargs)


def trials(out: Path) -> list[dict]:
    return json.loads((out / "sweep.json").read_text())["trials"]


def test_grid_2x2_runs_cv_folders_on_inner_folds_of_training_speakers(corpus, tmp_path):
    config = write_config(corpus, tmp_path, {"inner_folds": 2, "params": {"model.hidden": [8, 16]}})
    out = tmp_path / "grid"
    # a list given to a field that takes one number is a grid axis (camser cv would refuse it)
    r = camser("sweep", config, "--out", out, "--set", "model.alpha=[0.001, 0.1]")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "sweep.json").read_text())
    done = [t for t in summary["trials"] if t["state"] == "complete"]
    assert len(summary["trials"]) == len(done) == 4
    assert sorted((t["params"]["model.hidden"], t["params"]["model.alpha"]) for t in done) == \
        sorted(itertools.product([8, 16], [0.001, 0.1]))
    values = [t["value"] for t in done]
    assert values == sorted(values, reverse=True) and all(0 <= v <= 1 for v in values)
    assert summary["best"]["number"] == done[0]["number"] and summary["saw_test_folds"] is False

    # best.yaml: the experiment's own protocol with the best values, loadable by camser cv
    best = load_config(out / "best.yaml")
    assert best.model["hidden"] == done[0]["params"]["model.hidden"]
    assert best.model["alpha"] == done[0]["params"]["model.alpha"]
    assert best.protocol.scheme == "loso" and best.protocol.folds == [1] and best.corpus.folds_csv is None

    md = (out / "sweep.md").read_text()
    assert "Chosen on inner folds of training speakers only" in md and "Per outer fold" in md
    for name in ("sweep_model.hidden.png", "sweep_model.alpha.png"):
        assert (out / "figures" / name).stat().st_size > 1000
    assert "camser sweep into" in (out / "run.log").read_text()

    # each trial is an ordinary cv run folder on the inner folds (csv protocol)
    for t in done:
        run = Path(t["run_dir"])
        assert run.parent == (out / "trials").resolve() and t["run_dir"] in [str(p.resolve()) for p in (out / "trials").iterdir()]
        results = json.loads((run / "results.json").read_text())
        assert results["summary"]["ua_mean"] == pytest.approx(t["value"])
        assert results["config"]["protocol"]["scheme"] == "csv"
        assert results["config"]["model"]["hidden"] == t["params"]["model.hidden"]
        assert (run / "report.md").exists() and "fold 1 seed 0" in (run / "run.log").read_text()

    # the inner folds hold no test speaker of outer fold 1 (session 1), and are speaker-disjoint
    from camser.corpora import read_manifest
    speaker = {u.id: u.speaker for u in read_manifest(corpus / "prepared")}
    with (out / "inner_folds.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {speaker[r["file_stem"]] for r in rows} == {"Ses02F", "Ses02M", "Ses03F", "Ses03M"}
    for fold in {r["fold"] for r in rows}:
        split = {s: {speaker[r["file_stem"]] for r in rows if r["fold"] == fold and r["split"] == s} for s in ("train", "test")}
        assert split["train"] and split["test"] and not split["train"] & split["test"]


def test_tpe_six_trials_by_two_workers_on_one_sqlite_study(corpus, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"sweep": {
        "sampler": "tpe", "n_trials": 6, "inner_folds": 2, "seed": 3,
        "params": {"model.alpha": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
                   "model.hidden": {"type": "int", "low": 4, "high": 32}}}}))
    config = write_config(corpus, tmp_path, seeds=(0, 1, 2))
    out = tmp_path / "tpe"
    r = camser("sweep", config, "--out", out, "--space", space, "--workers", 2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "study.db").is_file()
    ts = trials(out)
    assert len(ts) == 6 and all(t["state"] == "complete" for t in ts)
    for t in ts:
        assert 1e-4 <= t["params"]["model.alpha"] <= 1e-1 and isinstance(t["params"]["model.hidden"], int)
    assert len({(t["params"]["model.alpha"], t["params"]["model.hidden"]) for t in ts}) == 6
    # both worker processes took trials from the one study
    assert {t["worker"] for t in ts} == {0, 1}
    log = (out / "run.log").read_text()
    assert "(worker 0)" in log and "(worker 1)" in log


def test_killed_sweep_resumes_without_rerunning_finished_work(corpus, tmp_path):
    import optuna
    # 2 inner folds × 10 seeds: a trial is 20 short fits, so a kill lands inside one
    config = write_config(corpus, tmp_path, {"inner_folds": 2, "params": {"model.hidden": [8, 16],
                                                                            "model.alpha": [0.001, 0.1]}},
                          seeds=range(10))
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.Popen([sys.executable, "-m", "camser.cli", "sweep", str(config), "--out", str(out)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 120
    while not list((out / "trials" / "0001" / "folds").glob("*/result.json")):
        assert p.poll() is None, p.stderr.read().decode()[-2000:]
        assert time.time() < deadline
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    p.stderr.close()

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}")
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states == {0: "COMPLETE", 1: "RUNNING"}
    first = {f: f.stat().st_mtime_ns for f in (out / "trials/0000").rglob("result.json")}
    partial = {f.parent.name for f in (out / "trials/0001/folds").glob("*/result.json")}
    assert len(first) == 20 and 1 <= len(partial) < 20

    r = camser("sweep", config, "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "trial 1: its worker" in r.stdout and "rerun of trial 1" in r.stdout
    ts = trials(out)
    done = [t for t in ts if t["state"] == "complete"]
    assert len(done) == 4 and sorted((t["params"]["model.hidden"], t["params"]["model.alpha"]) for t in done) == \
        sorted(itertools.product([8, 16], [0.001, 0.1]))
    (rerun,) = [t for t in ts if t["state"] == "rerun"]
    assert rerun["number"] == 1 and "rerun as trial" in rerun["error"]
    # the finished trial was not touched; the killed one continued in its own folder
    assert {f: f.stat().st_mtime_ns for f in (out / "trials/0000").rglob("result.json")} == first
    assert (out / "trials/0000/run.log").read_text().count("== camser cv into") == 1
    log1 = (out / "trials/0001/run.log").read_text()
    assert log1.count("== camser cv into") == 2
    for name in partial:
        fold, seed = name.replace("fold", "").split("_seed")
        assert f"fold {int(fold)} seed {seed}: done already, skipped" in log1
    assert sum(Path(t["run_dir"]).name == "0001" for t in done) == 1


def test_a_failing_trial_is_recorded_and_two_outer_folds_give_nested_choices(corpus, tmp_path, monkeypatch):
    from camser.models.classic import MeansMLP
    from camser.sweep import run_sweep
    # a trial that fails while fitting (its values pass every config check): the sweep goes on
    fit = MeansMLP.fit

    def refuse_large_alpha(self, X, y, groups=None):
        if self.config.alpha > 0.1:
            raise ValueError(f"alpha {self.config.alpha} refused by this test's estimator")
        return fit(self, X, y, groups)
    monkeypatch.setattr(MeansMLP, "fit", refuse_large_alpha)
    config = write_config(corpus, tmp_path, {"inner_folds": 2, "params": {"model.alpha": [0.5, 0.001]}},
                          folds=(1, 2))
    out = tmp_path / "failing"
    summary = run_sweep(config, [], out, log=lambda m: None)
    states = {t["params"]["model.alpha"]: t for t in summary["trials"]}
    assert states[0.001]["state"] == "complete" and states[0.5]["state"] == "failed"
    error = states[0.5]["error"]
    assert "refused by this test's estimator" in error and "\n" not in error
    md = (out / "sweep.md").read_text()
    assert error in md and "Failed and rerun trials" in md
    assert "Traceback" in (Path(states[0.5]["run_dir"]) / "run.log").read_text()
    # two outer folds: 2 × 2 inner folds; each outer fold's choice is listed with its own inner score
    results = json.loads((Path(states[0.001]["run_dir"]) / "results.json").read_text())
    assert [f["name"] for f in results["protocol"]["folds"]] == [
        "fold outer1-inner1", "fold outer1-inner2", "fold outer2-inner1", "fold outer2-inner2"]
    per = {p["outer_fold"]: p for p in summary["per_outer_fold"]}
    assert set(per) == {1, 2} and per[1]["test_speakers"] == ["Ses01F", "Ses01M"]
    for o, p in per.items():
        inner = [f["ua"] for f in results["folds"] if f"outer{o}-" in results["protocol"]["folds"][f["fold"] - 1]["name"]]
        assert p["value"] == pytest.approx(sum(inner) / 2)
    assert "not a nested estimate" in md
    again = run_sweep(config, [], out, log=lambda m: None)      # nothing to do: nothing rerun
    assert [(t["number"], t["state"]) for t in again["trials"]] == [(t["number"], t["state"]) for t in summary["trials"]]


def test_nested_estimate_scores_each_outer_fold_with_its_own_choice(corpus, tmp_path):
    from camser.sweep import run_sweep
    config = write_config(corpus, tmp_path, {"inner_folds": 2, "nested": True,
                                             "params": {"model.hidden": [4, 32]}}, folds=(1, 2))
    out = tmp_path / "nested"
    lines: list[str] = []
    summary = run_sweep(config, [], out, log=lines.append)
    nested, per = summary["nested"], {p["outer_fold"]: p for p in summary["per_outer_fold"]}
    assert [r["outer_fold"] for r in nested["outer_folds"]] == [1, 2]
    for r in nested["outer_folds"]:
        assert r["params"] == per[r["outer_fold"]]["params"]          # its own inner choice
        results = json.loads((Path(r["run_dir"]) / "results.json").read_text())
        assert results["config"]["model"]["hidden"] == r["params"]["model.hidden"]
        (fold,) = results["folds"]                                     # scored on its outer test fold only
        assert fold["test_speakers"] == per[r["outer_fold"]]["test_speakers"]
        assert r["value"] == pytest.approx(fold["ua"])
    assert nested["value"] == pytest.approx(sum(r["value"] for r in nested["outer_folds"]) / 2)
    md = (out / "sweep.md").read_text()
    assert "## Nested estimate" in md and f"{100 * nested['value']:.2f}" in md
    assert json.loads((out / "sweep.json").read_text())["nested"]["value"] == pytest.approx(nested["value"])
    again = run_sweep(config, [], out, log=lambda m: None)          # resumes: nothing retrained
    assert again["nested"]["value"] == nested["value"]
    assert "finished already" in (Path(nested["outer_folds"][0]["run_dir"]) / "run.log").read_text()
    with pytest.raises(Exception, match="sweep.nested"):
        run_sweep(write_config(corpus, tmp_path / "o", {"objective": "outer", "nested": True,
                                                        "params": {"model.hidden": [4, 32]}}), [], tmp_path / "x")


def test_outer_objective_says_the_choice_saw_the_test_folds(corpus, tmp_path):
    from camser.sweep import run_sweep
    config = write_config(corpus, tmp_path, {"objective": "outer", "params": {"model.hidden": [8, 16]}})
    out = tmp_path / "outer"
    summary = run_sweep(config, [], out, log=lambda m: None)
    assert summary["saw_test_folds"] is True and not summary["per_outer_fold"]
    md = (out / "sweep.md").read_text()
    assert md.count("saw the test folds") >= 3          # the introduction and each table
    assert "chosen on the outer test folds" in (out / "best.yaml").read_text()
    best = json.loads((Path(summary["best"]["run_dir"]) / "results.json").read_text())
    assert best["config"]["protocol"]["scheme"] == "loso" and best["folds"][0]["test_speakers"] == ["Ses01F", "Ses01M"]


@pytest.mark.parametrize("sweep, field", [
    ({"samplr": "grid", "params": {"model.hidden": [8]}}, "sweep.samplr"),
    ({"params": {"train.lrr": [0.1, 0.2]}}, "sweep.params.train.lrr"),
    ({"params": {"model.hiddn": [4, 8]}}, "sweep.params.model.hiddn"),
    ({"n_trials": 3, "params": {"model.alpha": {"type": "float", "low": 0.1, "high": 0.01}}}, "sweep.params.model.alpha"),
    ({"params": {"model.alpha": []}}, "sweep.params.model.alpha"),
    ({"n_trials": 3, "params": {"model.hidden": {"type": "float", "low": 2, "high": 8}}}, "sweep.params.model.hidden"),
    ({"params": {"model.hidden": [4, "x"]}}, "sweep.params.model.hidden"),
    ({"sampler": "tpe", "params": {"model.hidden": [4, 8]}}, "sweep.n_trials"),
    ({"params": {"protocol.folds": [[1], [2]]}}, "sweep.params.protocol.folds"),
])
def test_bad_space_is_one_line_exit_2_before_any_extraction(corpus, tmp_path, capsys, sweep, field):
    from camser.cli import main
    cache = tmp_path / "cache"
    config = write_config(corpus, tmp_path, sweep, cache=cache)
    assert main(["sweep", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"camser: error: {field}:"), err
    assert not cache.exists() and not (tmp_path / "out").exists()


def test_bad_space_through_the_command_line(corpus, tmp_path):
    cache = tmp_path / "cache"
    config = write_config(corpus, tmp_path, cache=cache)
    r = camser("sweep", config, "--out", tmp_path / "out", "--set", "model.alpha=[0.1, nope]")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "sweep.params.model.alpha" in r.stderr
    r = camser("sweep", config, "--out", tmp_path / "out")
    assert r.returncode == 2 and "sweep.params: nothing to search" in r.stderr
    assert not cache.exists() and not (tmp_path / "out").exists()


def test_set_lists_are_grid_axes_only_where_the_field_takes_no_list(corpus, tmp_path):
    from camser.sweep import split_overrides
    config = write_config(corpus, tmp_path)
    plain, grid = split_overrides(config, ["train.lr=[1e-3,1e-4]", "train.seeds=[1,2]", "model.hidden=8",
                                           "model.features=[mfcc]"])
    assert grid == {"train.lr": [1e-3, 1e-4]}
    assert plain == ["train.seeds=[1,2]", "model.hidden=8", "model.features=[mfcc]"]
    # other commands read a config with a sweep: section, ignoring it
    with_space = write_config(corpus, tmp_path / "s", {"params": {"model.hidden": [8, 16]}})
    assert load_config(with_space).model["hidden"] == 16
