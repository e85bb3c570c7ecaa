"""--track mlflow (cv, train, sweep) into a local MLflow store, and run.log in every run folder."""
import json
from pathlib import Path

import pytest
import yaml

from conftest import prepared_corpus

pytest.importorskip("mlflow")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning",
                                        "ignore::FutureWarning")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A prepared synthetic corpus and one local MLflow store (SQLite) for the module."""
    root = tmp_path_factory.mktemp("tracking")
    prepared_corpus(root, n_sessions=3, utterances_per_speaker=12)
    return root


@pytest.fixture
def mlflow_env(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    monkeypatch.chdir(store)             # MLflow's default artefact folder (./mlruns) lands here
    from mlflow.tracking import MlflowClient
    return MlflowClient(f"sqlite:///{store / 'mlflow.db'}")


def lstm_config(root: Path, folder: Path, name: str, **extra) -> Path:
    """A tiny LSTM on MFCC windows: a network, so there are per-epoch curves (2 epochs)."""
    cfg = {"name": name, "corpus": {"name": "iemocap", "prepared": str(root / "prepared")},
           "features": {"kinds": ["mfcc"], "cache_dir": str(root / "cache")},
           "model": {"name": "lstm", "feature": "mfcc", "hidden": 8, "mlp_hidden": 8, "window_frames": 50},
           "train": {"lr": 3e-3, "batch_size": 16, "max_epochs": 2, "min_epochs": 1, "seeds": [0], "num_threads": 1},
           "protocol": {"scheme": "loso", "validation": "clean", "folds": [1]},
           "output": {"tsne": False}, **extra}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_id(folder: Path) -> str:
    return json.loads((folder / "mlflow.json").read_text())["run_id"]


def test_cv_and_train_are_logged_to_a_local_mlflow_store(store, mlflow_env, tmp_path):
    from camser.cli import main
    client = mlflow_env
    config = lstm_config(store, tmp_path, "tracked")
    run = tmp_path / "run"
    assert main(["cv", str(config), "--out", str(run), "--track", "mlflow"]) == 0

    r = client.get_run(run_id(run))
    assert r.info.status == "FINISHED" and r.info.run_name == "run"
    assert client.get_experiment(r.info.experiment_id).name == "tracked"
    assert r.data.params["model.name"] == "lstm" and r.data.params["train.max_epochs"] == "2"
    results = json.loads((run / "results.json").read_text())
    assert r.data.metrics["ua_mean"] == pytest.approx(results["summary"]["ua_mean"])
    assert r.data.metrics["fold01_seed0/ua"] == pytest.approx(results["folds"][0]["ua"])
    curve = client.get_metric_history(r.info.run_id, "fold01_seed0/train_loss")
    assert sorted(m.step for m in curve) == [1, 2]
    assert [m.step for m in client.get_metric_history(r.info.run_id, "fold01_seed0/val_ua")] == [1, 2]
    artefacts = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"results.json", "report.md", "report.html", "config.yaml", "run.log", "figures"} <= artefacts
    assert any(a.path.endswith("confusion.png") for a in client.list_artifacts(r.info.run_id, "figures"))

    log = (run / "run.log").read_text()
    assert "camser cv into" in log and "fold 1 seed 0: WA" in log and "epoch   2" in log

    # rerun (nothing left to train): the same MLflow run, curves not logged twice, run.log appended
    assert main(["cv", str(config), "--out", str(run), "--track", "mlflow"]) == 0
    assert run_id(run) == r.info.run_id
    assert len(client.get_metric_history(r.info.run_id, "fold01_seed0/train_loss")) == 2
    assert (run / "run.log").read_text().count("camser cv into") == 2
    assert client.get_run(r.info.run_id).info.status == "FINISHED"

    model = tmp_path / "model"
    assert main(["train", str(config), "--out", str(model), "--track", "mlflow"]) == 0
    t = client.get_run(run_id(model))
    assert t.info.status == "FINISHED" and t.data.tags["camser.command"] == "train"
    assert sorted(m.step for m in client.get_metric_history(t.info.run_id, "train_loss")) == [1, 2]
    assert "val_ua" in t.data.metrics
    assert {"camser.json", "history.json", "run.log"} <= {a.path for a in client.list_artifacts(t.info.run_id)}
    assert "model saved to" in (model / "run.log").read_text()


def test_cv_without_tracking_still_writes_run_log(store, tmp_path, monkeypatch):
    from camser.config import load_config
    from camser.training.cv import run_cv
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    lines = []
    run_cv(load_config(lstm_config(store, tmp_path, "untracked")), tmp_path / "run", log=lines.append, progress=False)
    log = (tmp_path / "run" / "run.log").read_text()
    assert lines and all(line in log for line in lines)
    assert not (tmp_path / "run" / "mlflow.json").exists()


def test_a_tracked_sweep_nests_its_trials(store, mlflow_env, tmp_path):
    from camser.sweep import run_sweep
    client = mlflow_env
    config = lstm_config(store, tmp_path, "swept", sweep={"inner_folds": 2, "params": {"model.hidden": [4, 8]}})
    out = tmp_path / "sweep"
    summary = run_sweep(config, ["train.max_epochs=1"], out, track="mlflow", log=lambda m: None)
    parent = client.get_run(run_id(out))
    assert parent.info.status == "FINISHED" and parent.data.params["sweep.sampler"] == "grid"
    assert parent.data.metrics["best_value"] == pytest.approx(summary["best"]["value"])
    assert {"sweep.md", "sweep.json", "best.yaml", "figures"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 2
    by_hidden = {c.data.params["sweep.model.hidden"]: c for c in children}
    assert set(by_hidden) == {"4", "8"}
    for t in summary["trials"]:
        child = by_hidden[str(t["params"]["model.hidden"])]
        assert child.data.metrics["ua_mean"] == pytest.approx(t["value"])
        assert child.info.run_id == run_id(Path(t["run_dir"]))
