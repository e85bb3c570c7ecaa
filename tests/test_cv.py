"""Cross-validation end to end on the synthetic corpus: learning, determinism, resume, DDP, CLI."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from camser.config import load_config
from camser.corpora import scan_corpus, write_manifest
from camser.corpora.synthetic import generate_iemocap
from camser.demo import tiny_wav2vec2
from camser.errors import ConfigError
from camser.training.cv import run_cv

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A prepared synthetic corpus (3 sessions × 2 speakers), a tiny random wav2vec2, one cache."""
    root = tmp_path_factory.mktemp("cv")
    corpus = generate_iemocap(root / "corpus", n_sessions=3, utterances_per_speaker=24, seed=1)
    scan = scan_corpus("iemocap", corpus)
    write_manifest(root / "prepared", scan.utterances, scan.skipped)
    encoder = tiny_wav2vec2(root / "encoder")
    return root, encoder


def make_cfg(workspace, *overrides):
    root, encoder = workspace
    return load_config(Path(__file__).parents[1] / "camser/configs/demo.yaml", list(overrides), data={
        "corpus": {"prepared": str(root / "prepared")},
        "features": {"ssl": {"model": str(encoder)}},
        "train": {"max_epochs": 15, "num_threads": 1},
        "output": {"tsne": False},
    })


def fold_numbers(results):
    return [(f["fold"], f["wa"], f["ua"], f["best_epoch"], f["epochs"]) for f in results["folds"]]


def test_learns_synthetic_corpus_far_above_chance(workspace, tmp_path):
    results = run_cv(make_cfg(workspace), tmp_path / "run", log=lambda m: None, progress=False)
    assert len(results["folds"]) == 3                      # leave one session out
    assert results["summary"]["ua_pooled"] > 0.6           # chance: 0.25
    for name in ("results.json", "report.md", "report.html", "config.yaml", "figures/confusion.png"):
        assert (tmp_path / "run" / name).exists(), name
    saved = json.loads((tmp_path / "run/results.json").read_text())
    assert saved["versions"]["torch"] and saved["seeds"] == [0] and saved["config"]["train"]["lr"] == 3e-3
    for f in saved["folds"]:
        assert 0 <= f["wa"] <= 1 and len(f["confusion"]) == 4
        assert not set(f["test_speakers"]) & set(f["val_speakers"])
    # every test utterance with its probabilities, one row per fold × seed (for significance tests)
    import csv
    with open(tmp_path / "run/predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(f["n_test"] for f in saved["folds"]) and {r["fold"] for r in rows} == {"1", "2", "3"}
    probs = np.array([[float(r[f"p_{label}"]) for label in saved["labels"]] for r in rows])
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
    assert [saved["labels"][i] for i in probs.argmax(1)] == [r["predicted"] for r in rows]
    assert saved["seed_summary"]["per_seed"]["0"]["n_folds"] == 3
    assert saved["seed_summary"]["ua_mean"] == pytest.approx(saved["summary"]["ua_mean"])
    report = (tmp_path / "run/report.md").read_text()
    assert "pooled precision %" in report and "pooled F1 %" in report


def test_same_seed_same_numbers_and_resume_after_kill(workspace, tmp_path):
    cfg = make_cfg(workspace, "protocol.folds=[2]", "train.max_epochs=4", "train.min_epochs=4", "train.patience=1")
    reference = run_cv(cfg, tmp_path / "a", log=lambda m: None, progress=False)
    again = run_cv(cfg, tmp_path / "b", log=lambda m: None, progress=False)
    assert fold_numbers(again) == fold_numbers(reference)

    class Killed(Exception):
        pass

    def kill_after_epoch_2(msg):
        if msg.startswith("epoch   2"):
            raise Killed
    with pytest.raises(Killed):
        run_cv(cfg, tmp_path / "c", log=kill_after_epoch_2, progress=False)
    assert list((tmp_path / "c/folds").glob("*/checkpoint.pt")) and not list((tmp_path / "c/folds").glob("*/result.json"))
    lines = []
    resumed = run_cv(cfg, tmp_path / "c", log=lines.append, progress=False)
    assert any(line.startswith("resumed from") for line in lines)
    assert fold_numbers(resumed) == fold_numbers(reference)
    # finished folds are not rerun
    lines.clear()
    run_cv(cfg, tmp_path / "c", log=lines.append, progress=False)
    assert any("finished already" in line for line in lines) and not any(line.startswith("epoch") for line in lines)
    # a changed configuration is refused (its folds would be mixed with these); where and how fast is not
    with pytest.raises(ConfigError, match=r"train\.lr \(0\.003 → 0\.01\)"):
        run_cv(load_config(None, ["train.lr=0.01"], data=cfg.to_dict()), tmp_path / "c", log=lambda m: None)
    moved = load_config(None, ["train.num_threads=2", f"features.cache_dir={tmp_path / 'c2'}"],
                        data=cfg.to_dict())
    assert fold_numbers(run_cv(moved, tmp_path / "c", log=lambda m: None, progress=False)) == fold_numbers(reference)
    # the same corpus folder spelled another way is the same experiment
    prepared = Path(cfg.corpus.prepared)
    (prepared.parent / "elsewhere").mkdir(exist_ok=True)
    respelled = load_config(None, [f"corpus.prepared={prepared.parent / 'elsewhere' / '..' / prepared.name}"],
                            data=cfg.to_dict())
    assert fold_numbers(run_cv(respelled, tmp_path / "c", log=lambda m: None, progress=False)) == fold_numbers(reference)
    # so is the model spelled another way (a default written out, the preset's own value repeated:
    # an ablation row that is the base configuration reuses its folds); a real change is refused
    model_respelled = load_config(None, ["model.use_ssl=true", "model.lstm_hidden=64"], data=cfg.to_dict())
    assert fold_numbers(run_cv(model_respelled, tmp_path / "c", log=lambda m: None, progress=False)) == fold_numbers(reference)
    with pytest.raises(ConfigError, match=r"model\.lstm_hidden \(64 → 32\)"):
        run_cv(load_config(None, ["model.lstm_hidden=32"], data=cfg.to_dict()), tmp_path / "c", log=lambda m: None)
    # folds copied from a finished run of the same experiment are read, not retrained, and the
    # wall time it recorded comes with them
    shutil.copytree(tmp_path / "c/folds", tmp_path / "copied/folds")
    shutil.copy(tmp_path / "c/wall_s.json", tmp_path / "copied/wall_s.json")
    lines.clear()
    copied = run_cv(model_respelled, tmp_path / "copied", log=lines.append, progress=False)
    assert any("finished already" in line for line in lines) and fold_numbers(copied) == fold_numbers(reference)
    assert copied["wall_s"] == pytest.approx(json.loads((tmp_path / "c/wall_s.json").read_text())["wall_s"], abs=1)


def test_paper_validation_is_flagged_optimistic(workspace, tmp_path):
    cfg = make_cfg(workspace, "protocol.folds=[1]", "protocol.validation=paper", "train.max_epochs=2")
    results = run_cv(cfg, tmp_path / "p", log=lambda m: None, progress=False)
    assert results["protocol"]["optimistic"] is True
    assert "optimistic" in (tmp_path / "p/report.md").read_text()


def test_validation_none_trains_the_held_out_speakers_too(workspace, tmp_path):
    lines = []
    cfg = make_cfg(workspace, "protocol.folds=[1]", "protocol.validation=none", "train.keep=last",
                   "train.max_epochs=2")
    results = run_cv(cfg, tmp_path / "n", log=lines.append, progress=False)
    (fold,) = results["folds"]
    assert fold["val_speakers"] == [] and fold["epochs"] == fold["best_epoch"] == 2
    assert results["protocol"]["validation"] == "none"
    import re
    n_train, n_val, n_test = map(int, re.search(r"train (\d+), val (\d+), test (\d+)", lines[0]).groups())
    assert n_val == 0 and n_train == 2 * n_test          # both other sessions, all 4 speakers, train
    assert not any("val WA" in line for line in lines if line.startswith("epoch"))
    assert "no validation speakers: every training speaker trains" in (tmp_path / "n/report.md").read_text()


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "camser.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_cv_cli_and_two_process_ddp(workspace, tmp_path):
    root, encoder = workspace
    sets = ["--set", f"corpus.prepared={root / 'prepared'}", "--set", f"features.ssl.model={encoder}",
            "--set", "train.max_epochs=2", "--set", "protocol.folds=[1]", "--set", "output.tsne=false",
            "--set", "train.num_threads=1"]
    config = str(Path(__file__).parents[1] / "camser/configs/demo.yaml")
    single = _cli("cv", config, "--out", str(tmp_path / "single"), *sets)
    assert single.returncode == 0, single.stderr[-2000:]
    logs = tmp_path / "logs"                  # each rank's stdout and stderr: <run>/attempt_0/<rank>/
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          "--master_port=29517", "--log-dir", str(logs), "--redirects", "3",
                          "-m", "camser.cli", "cv", config, "--out", str(tmp_path / "ddp"), *sets,
                          "--set", "train.speaker_adversarial=0.3"],      # the adversary is DDP-wrapped too
                         capture_output=True, text=True)
    rank_output = ["".join(f.read_text() for f in sorted(logs.glob(f"*/attempt_0/{rank}/std*.log")))
                   for rank in (0, 1)]
    assert ddp.returncode == 0, (ddp.stderr + rank_output[0])[-3000:]
    r = json.loads((tmp_path / "ddp/results.json").read_text())
    assert len(r["folds"]) == 1 and 0 <= r["summary"]["ua_mean"] <= 1
    fold = json.loads(next((tmp_path / "ddp/folds").glob("*/result.json")).read_text())
    assert all("train_speaker_acc" in h for h in fold["history"])
    assert "epoch   1" in rank_output[0] and "WA" in rank_output[0]
    assert rank_output[1] == ""                # only rank 0 prints


def test_cli_user_mistakes_are_one_line(tmp_path):
    bad = tmp_path / "exp.yaml"
    bad.write_text("train: {lrr: 1}\n")
    r = _cli("cv", str(bad), "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "train.lrr" in r.stderr
    r = _cli("prepare", "--corpus", "iemocap", "--root", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "nope" in r.stderr


def test_finetune_mode_trains_the_encoder_from_audio(workspace, tmp_path):
    cfg = make_cfg(workspace, "train.mode=finetune", "protocol.folds=[1]", "train.max_epochs=1",
                   "train.min_epochs=1", "features.ssl.layer=last", "train.batch_size=32")
    results = run_cv(cfg, tmp_path / "ft", log=lambda m: None, progress=False)
    assert len(results["folds"]) == 1 and results["folds"][0]["epochs"] == 1

    from camser.training.cv import build_for_data
    from camser.features.batches import segment_set
    from camser.training.experiment import prepare_data
    from camser.training.trainer import fit
    data = prepare_data(cfg, {"mfcc", "spectrogram"}, progress=False)
    assert "ssl" not in data.stores                       # frames come from audio, not the cache
    model, batch_fn = build_for_data(cfg, data, seed=0)
    label_of = {u.id: data.labels.index(u.label) for u in data.utterances}
    segs = segment_set(data.stores, [u.id for u in data.utterances[:40]], label_of)
    model.fit_normalizers(data.stores, segs.rows)
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("encoder.encoder.")}
    assert before
    fit(model, data.stores, segs, segs, data.labels, cfg.train, seed=0, log=lambda m: None, batch_fn=batch_fn)
    after = model.state_dict()
    # fit() restores the best epoch's state: with one epoch that is the trained one
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_ablation_rows_share_folds_and_write_one_table(workspace, tmp_path):
    from camser.training.ablation import run_ablation
    root, encoder = workspace
    config = str(Path(__file__).parents[1] / "camser/configs/demo.yaml")
    overrides = [f"corpus.prepared={root / 'prepared'}", f"features.ssl.model={encoder}", "train.max_epochs=1",
                 "train.min_epochs=1", "protocol.folds=[1]", "output.tsne=false", "train.num_threads=1"]

    def stop_at_second_row(message):
        if message == "== ablation row: mfcc+spec+w2e+coatt":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):        # stopped after the first row: its table is written
        run_ablation(config, overrides, tmp_path / "abl", rows=["mfcc", "mfcc+spec+w2e+coatt"],
                     log=stop_at_second_row)
    partial = (tmp_path / "abl/ablation.md").read_text()
    assert partial.startswith("*1 of 2 rows so far") and "| mfcc |" in partial
    assert [r["name"] for r in json.loads((tmp_path / "abl/ablation.json").read_text())] == ["mfcc"]
    markdown, table = run_ablation(config, overrides, tmp_path / "abl", rows=["mfcc", "mfcc+spec+w2e+coatt"],
                                   log=lambda m: None)
    assert [row["name"] for row in table] == ["mfcc", "mfcc+spec+w2e+coatt"]
    assert (tmp_path / "abl/ablation.md").read_text() == markdown and "**" in markdown
    assert "McNemar" in markdown and table[0].get("vs_best") and table[1].get("vs_best")
    tests = [json.loads((tmp_path / "abl" / r / "results.json").read_text())["folds"][0]["test_speakers"]
             for r in ("mfcc", "mfcc+spec+w2e+coatt")]
    assert tests[0] == tests[1]
    with pytest.raises(Exception, match="--rows"):
        run_ablation(config, overrides, tmp_path / "abl2", rows=["nope"], log=lambda m: None)


def test_wall_time_of_a_resumed_run_counts_every_session(tmp_path, monkeypatch):
    from camser.training import cv
    clock = cv.RunClock(tmp_path / cv.RunClock.FILE)
    monkeypatch.setattr(cv.time, "time", lambda: clock.started + 100.0)
    clock.ticking(lambda m: None)("epoch 1")          # a session killed after 100 s
    monkeypatch.undo()
    resumed = cv.RunClock(tmp_path / cv.RunClock.FILE)
    assert resumed.before == 100.0 and 100.0 <= resumed.total() < 110.0


def test_a_run_that_fails_before_any_fold_leaves_no_folder(workspace, tmp_path):
    from camser.errors import CamserError
    cfg = make_cfg(workspace, f"corpus.prepared={tmp_path / 'no_such_corpus'}")
    with pytest.raises(CamserError):
        run_cv(cfg, tmp_path / "run", log=lambda m: None, progress=False)
    assert not (tmp_path / "run").exists()
    (tmp_path / "mine").mkdir()                  # a folder the user made is kept
    with pytest.raises(CamserError):
        run_cv(cfg, tmp_path / "mine", log=lambda m: None, progress=False)
    assert (tmp_path / "mine").is_dir()
