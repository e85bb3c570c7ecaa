"""Progress inside epochs (a bar on a terminal, paced lines in a log file) and the per-system
summary line of compare: what is shown, where it goes, and that no number changes."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from camser.config import TrainConfig, load_config
from camser.features.batches import SegmentSet
from camser.training import trainer
from camser.training.cv import run_cv
from conftest import prepared_corpus

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

STEP_S = 10.0        # fake seconds per forward pass


class Linear(torch.nn.Module):
    """The smallest model fit() trains; each forward pass moves the fake clock by STEP_S."""

    def __init__(self, now: list[float]):
        super().__init__()
        self.now = now
        self.lin = torch.nn.Linear(4, 2)

    def forward(self, batch):
        self.now[0] += STEP_S
        return self.lin(batch["x"])

    def training_loss(self, logits, target, label_smoothing=0.0):
        return F.cross_entropy(logits, target, label_smoothing=label_smoothing)


def fit_tiny(monkeypatch, **kwargs):
    """fit() on 40 training and 20 validation rows in memory (10 and 5 batches of 4), 2 epochs,
    with mixup, so the global torch generator is drawn from every step. → (result, log lines)."""
    now = [1000.0]
    monkeypatch.setattr(trainer.PassProgress, "clock", staticmethod(lambda: now[0]))
    torch.manual_seed(0)
    x = torch.randn(60, 4)
    y = (x[:, 0] > 0).long().numpy()

    def segs(rows):
        return SegmentSet(rows, y[rows], [f"u{i}" for i in rows])

    cfg = TrainConfig(batch_size=4, max_epochs=2, min_epochs=2, lr=0.1, mixup=0.4, device="cpu")
    lines = []
    result = trainer.fit(Linear(now), {}, segs(np.arange(40)), segs(np.arange(40, 60)), ["a", "b"], cfg, seed=3,
                         log=lines.append, batch_fn=lambda stores, s, idx: {"x": x[s.rows[idx]]}, **kwargs)
    return result, lines


def test_paced_progress_lines_with_eta_through_log(monkeypatch):
    _, lines = fit_tiny(monkeypatch, progress=False, progress_every_s=25)
    shown = [re.sub(r"loss \d\.\d{4}", "loss L", line) if not line.startswith("epoch ")
             else " ".join(line.split()[:2]) for line in lines]
    # a line when 25 s have passed since the last one (every 3rd batch at 10 s each), none after
    # the last batch (the epoch's own line follows); validation has no loss
    expected = []
    for epoch in (1, 2):
        expected += [f"training epoch {epoch}: batch 3/10 (30%), 00:30 elapsed, ETA 01:10, loss L",
                     f"training epoch {epoch}: batch 6/10 (60%), 01:00 elapsed, ETA 00:40, loss L",
                     f"training epoch {epoch}: batch 9/10 (90%), 01:30 elapsed, ETA 00:10, loss L",
                     f"validation after epoch {epoch}: batch 3/5 (60%), 00:30 elapsed, ETA 00:20",
                     f"epoch {epoch}"]
    assert shown == expected

    _, quiet = fit_tiny(monkeypatch, progress=False, progress_every_s=0)      # 0: no progress lines
    assert len(quiet) == 2


class NoProgress:
    """A PassProgress that does nothing: fit as it was before progress existed."""

    clock = None            # fit_tiny sets it

    def __init__(self, *args):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def update(self, loss=None):
        pass


def test_progress_changes_no_number(monkeypatch, capsys):
    with monkeypatch.context() as m:
        m.setattr(trainer, "PassProgress", NoProgress)
        plain, _ = fit_tiny(monkeypatch, progress=False, progress_every_s=0)
    capsys.readouterr()
    bar, bar_lines = fit_tiny(monkeypatch, progress=True, progress_every_s=25)
    assert "training epoch 2" in capsys.readouterr().err           # the bar was drawn, on stderr
    assert len(bar_lines) == 2                                       # a bar replaces the paced lines
    lines, _ = fit_tiny(monkeypatch, progress=False, progress_every_s=1e-9)
    for other in (bar, lines):
        assert other.history == plain.history
        assert all(torch.equal(other.best_state[k], v) for k, v in plain.best_state.items())


def test_show_bar_only_on_a_terminal_unless_forced(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert trainer.show_bar(None) is False and trainer.show_bar(True) is True
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert trainer.show_bar(None) is True and trainer.show_bar(False) is False


# ---------------------------------------------------------------- cv and compare on a tiny corpus

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("progress")
    prepared_corpus(root, n_sessions=3, utterances_per_speaker=8)
    return root


def system(root: Path, model: dict, **extra) -> dict:
    """A tiny experiment on MFCC (2 epochs for a network), fold 1 only."""
    return {"name": "tiny", "corpus": {"name": "iemocap", "prepared": str(root / "prepared")},
            "features": {"kinds": ["mfcc"], "cache_dir": str(root / "cache")}, "model": model,
            "train": {"lr": 3e-3, "batch_size": 8, "max_epochs": 2, "min_epochs": 1, "seeds": [0], "num_threads": 1},
            "protocol": {"scheme": "loso", "validation": "clean", "folds": [1]},
            "output": {"tsne": False, "curves": False}, **extra}


LSTM = {"name": "lstm", "feature": "mfcc", "hidden": 8, "mlp_hidden": 8, "window_frames": 50}


def fold_numbers(results):
    return [(f["wa"], f["ua"], f["f1_macro"], f["best_epoch"], f["epochs"]) for f in results["folds"]]


def test_cv_numbers_same_with_bar_or_lines_and_the_bar_stays_out_of_run_log(corpus, tmp_path, capsys):
    runs = {}
    for name, progress, every_s in (("none", False, 0), ("bar", True, 0), ("lines", False, 1e-9)):
        cfg = load_config(None, data=system(corpus, LSTM, output={"tsne": False, "progress_every_s": every_s}))
        runs[name] = run_cv(cfg, tmp_path / name, log=lambda m: None, progress=progress)
        runs[name + "_log"] = (tmp_path / name / "run.log").read_text()
        runs[name + "_err"] = capsys.readouterr().err
    history = [json.loads(p.read_text())["history"] for p in sorted(tmp_path.glob("*/folds/*/result.json"))]
    assert len(history) == 3 and history[0] == history[1] == history[2]
    assert fold_numbers(runs["bar"]) == fold_numbers(runs["none"]) == fold_numbers(runs["lines"])
    assert "training epoch 1" in runs["bar_err"] and "training epoch 1" not in runs["none_err"]
    assert "batch" not in runs["bar_log"] and "batch" not in runs["none_log"]
    assert re.search(r"training epoch 1: batch 1/\d+ .* ETA", runs["lines_log"])


def test_compare_prints_one_summary_line_per_system(corpus, tmp_path):
    from camser.training.compare import run_compare
    paths = []
    for name, model in (("lstm", LSTM), ("mlp", {"name": "mlp", "features": ["mfcc"], "hidden": 8, "max_iter": 30})):
        paths.append(tmp_path / f"{name}.yaml")
        paths[-1].write_text(yaml.safe_dump(system(corpus, model)))
    lines = []
    run_compare(paths, [], tmp_path / "cmp", log=lines.append, progress=False)
    done = [line for line in lines if " done: " in line]
    assert len(done) == 2
    for line, name in zip(done, ("lstm", "mlp")):
        assert re.fullmatch(rf"== {name} done: model {name}, normalisation none: WA \d+\.\d\d ± \d+\.\d\d  "
                            rf"UA \d+\.\d\d ± \d+\.\d\d  macro-F1 \d+\.\d\d ± \d+\.\d\d \(%\), wall \d\d:\d\d, "
                            rf"run {re.escape(str(tmp_path / 'cmp' / name))}", line), line
    # printed right after its own cv: the lstm line comes before the mlp run starts
    assert lines.index(done[0]) < lines.index("== mlp (model mlp)")


def test_feature_extraction_writes_paced_lines_not_bar_redraws(corpus, tmp_path, capsys):
    """Without a terminal, extraction reports through ``log`` (the run's log file) in plain lines
    and draws no bar; with progress_every_s 0 it stays silent."""
    from camser.features.extract import extract_features
    from camser.training.experiment import load_utterances

    cfg = load_config(None, data=system(corpus, {"name": "lstm"}))
    utterances, _ = load_utterances(cfg)
    lines: list[str] = []
    extract_features(utterances, cfg, tmp_path / "a", kinds=["mfcc"], progress=None, log=lines.append,
                     progress_every_s=1e-9)
    assert lines and all(re.match(r"features: utterance \d+/\d+ \(\d+%\), .* elapsed, ETA ", x) for x in lines)
    assert "\r" not in capsys.readouterr().err
    quiet: list[str] = []
    extract_features(utterances, cfg, tmp_path / "b", kinds=["mfcc"], progress=False, log=quiet.append,
                     progress_every_s=0)
    assert quiet == []
