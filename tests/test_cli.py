"""The commands as a user runs them: prepare, features, demo, --help; and the shipped configs."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from camser.cli import main
from camser.config import load_config
from camser.corpora.synthetic import generate_iemocap

REPO = Path(__file__).resolve().parents[1]


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("prepare", "features", "cv", "ablation", "synth", "demo"):
        assert cmd in out


def test_prepare_and_features(tmp_path, capsys):
    root = generate_iemocap(tmp_path / "corpus", n_sessions=2, utterances_per_speaker=8, seed=3)
    bad = root / "Session1/sentences/wav/Ses01F_impro01"
    victim = sorted(bad.glob("Ses01F_impro01_*.wav"))[0]
    victim.write_bytes(b"RIFF broken")
    assert main(["prepare", "--corpus", "iemocap", "--root", str(root), "--out", str(tmp_path / "prep")]) == 0
    out = capsys.readouterr().out
    assert "skipped" in out.lower() and "hap" in out
    rows = list(csv.DictReader(open(tmp_path / "prep/manifest.csv")))
    assert list(rows[0]) == ["id", "path", "label", "speaker", "session", "duration_s", "text"]
    skipped = list(csv.DictReader(open(tmp_path / "prep/skipped.csv")))
    assert [r["path"] for r in skipped] == [str(victim)] and "unreadable" in skipped[0]["reason"]

    cfg = tmp_path / "f.yaml"
    cfg.write_text("features: {kinds: [mfcc, spectrogram]}\n")
    assert main(["features", str(tmp_path / "prep"), "--config", str(cfg)]) == 0
    first = capsys.readouterr().out
    assert "(" in first and "mfcc" in first and "spectrogram" in first
    assert (tmp_path / "prep/cache").is_dir()
    assert main(["features", str(tmp_path / "prep"), "--config", str(cfg), "--set", "features.mfcc.n_mfcc=13"]) == 0
    assert ", 13)" in capsys.readouterr().out
    assert len(list((tmp_path / "prep/cache").glob("mfcc-*"))) == 2       # a changed config → a new store


@pytest.mark.parametrize("config", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(config):
    from camser.models import REGISTRY, required_inputs
    cfg = load_config(config)
    assert cfg.model["name"] in REGISTRY
    assert isinstance(required_inputs(cfg.model), set)    # the model section's own fields are checked too


def test_demo_runs_end_to_end(tmp_path):
    r = subprocess.run([sys.executable, "-m", "camser.cli", "demo", "--quick", "--out", str(tmp_path / "demo")],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "demo done" in r.stdout
    assert (tmp_path / "demo/run/report.html").exists() and (tmp_path / "demo/run/results.json").exists()
