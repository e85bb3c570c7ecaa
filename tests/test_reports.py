import json

import numpy as np
import pytest

from camser.reports.plots import plot_confusion, plot_curves, plot_tsne
from camser.reports.report import write_report
from camser.reports.results import build_results, read_json, versions, write_json
from camser.reports.tables import comparison_table
from camser.metrics import compute_metrics
from camser.protocols import PAPER_WARNING

LABELS = ["ang", "hap", "neu", "sad"]
PNG = b"\x89PNG\r\n\x1a\n"


def _results(validation="clean"):
    rng = np.random.default_rng(0)
    folds, all_t, all_p = [], [], []
    for k in range(1, 4):
        t = rng.integers(0, 4, 40)
        p = np.where(rng.random(40) < 0.7, t, rng.integers(0, 4, 40))
        m = compute_metrics(t, p, LABELS)
        folds.append({"fold": k, "repeat": 0, "seed": 111, "test_speakers": [f"Ses0{k}F", f"Ses0{k}M"],
                      "epochs": 12, "best_epoch": 7, **m})
        all_t += [LABELS[i] for i in t]
        all_p += [LABELS[i] for i in p]
    config = {"name": "unit", "corpus": {"name": "iemocap"}, "model": {"name": "camser"},
              "train": {"lr": 1e-5, "seeds": [111]}}
    protocol = {"scheme": "loso", "validation": validation,
                "folds": [{"fold": k, "name": f"session Ses0{k}", "test_speakers": [f"Ses0{k}F", f"Ses0{k}M"],
                           "val_speakers": ["Ses05F"], "n_train": 100, "n_val": 10, "n_test": 40}
                          for k in range(1, 4)]}
    return build_results(config, versions(), protocol,
                         LABELS, folds, all_t, all_p)


def test_build_results_schema_and_json_roundtrip(tmp_path):
    r = _results()
    assert list(r) == ["config", "versions", "protocol", "labels", "folds", "summary"]
    f = r["folds"][0]
    assert list(f)[:13] == ["fold", "repeat", "seed", "test_speakers", "n_test", "wa", "ua",
                            "f1_macro", "f1_weighted", "recall", "confusion", "epochs", "best_epoch"]
    assert f["n_test"] == 40 and "n" not in f
    s = r["summary"]
    assert s["wa_mean"] == pytest.approx(np.mean([x["wa"] for x in r["folds"]]))
    assert s["wa_std"] == pytest.approx(np.std([x["wa"] for x in r["folds"]]))
    assert {"python", "camser", "torch", "numpy", "sklearn", "platform"} <= set(r["versions"])
    assert "warning" not in r["protocol"]
    path = write_json(tmp_path / "sub" / "results.json", r)
    assert read_json(path) == json.loads(json.dumps(r))
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]   # no temp file left


def test_paper_results_carry_the_warning():
    r = _results("paper")
    assert r["protocol"]["optimistic"] is True and r["protocol"]["warning"] == PAPER_WARNING


def test_plots_write_pngs(tmp_path):
    rng = np.random.default_rng(1)
    cm = [[5, 1, 0, 0], [2, 6, 1, 0], [0, 0, 7, 1], [0, 0, 0, 0]]   # an empty true class too
    vec = np.concatenate([rng.normal(c, 1, (15, 8)) for c in range(3)])
    lab = np.repeat(["ang", "hap", "sad"], 15)
    hist = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_wa": 0.5 + e / 50,
             "val_ua": 0.45 + e / 50} for e in range(1, 6)]
    paths = [plot_confusion(cm, LABELS, tmp_path / "cm.png"),
             plot_confusion(cm, LABELS, tmp_path / "cm_counts.png", normalize=False),
             plot_tsne(vec, lab, tmp_path / "tsne.png", "fused features", seed=3),
             plot_tsne(vec[:3], lab[:3], tmp_path / "tiny.png", "tiny", seed=3),
             plot_curves(hist, tmp_path / "curves.png", best_epoch=4)]
    for p in paths:
        assert p.stat().st_size > 1000 and p.read_bytes()[:8] == PNG


def test_tsne_is_deterministic_for_a_seed():
    from camser.reports.plots import tsne_embed
    x = np.random.default_rng(0).normal(size=(30, 5))
    a, _ = tsne_embed(x, seed=7)
    b, _ = tsne_embed(x, seed=7)
    assert np.allclose(a, b)


@pytest.mark.parametrize("validation", ["clean", "paper"])
def test_report_contains_numbers_and_warning(tmp_path, validation):
    r = _results(validation)
    fig = plot_confusion(r["folds"][0]["confusion"], LABELS, tmp_path / "figures" / "confusion.png")
    md_path, html_path = write_report(tmp_path, r, {"confusion": fig, "tsne_fused": None})
    md, page = md_path.read_text(), html_path.read_text()
    s = r["summary"]
    for text in (md, page):
        assert f"{100 * s['wa_mean']:.2f} ± {100 * s['wa_std']:.2f}" in text
        assert f"{100 * s['ua_pooled']:.2f}" in text
        assert f"{100 * r['folds'][1]['f1_macro']:.2f}" in text
        assert "Ses02F, Ses02M" in text
        assert ("optimistic" in text) == (validation == "paper")
        assert "session Ses03" in text and "Ses05F" in text     # the protocol's fold table
        assert "{'fold'" not in text and "{&#x27;fold" not in text
    assert "](figures/confusion.png)" in md
    assert "data:image/png;base64," in page          # self-contained


def test_comparison_table_marks_the_best():
    a = {"wa_mean": 0.70, "wa_std": 0.01, "ua_mean": 0.60, "ua_std": 0.02, "f1_mean": 0.65, "f1_std": 0.01}
    b = {"wa_mean": 0.68, "wa_std": 0.02, "ua_mean": 0.66, "ua_std": 0.03, "f1_mean": 0.65, "f1_std": 0.02}
    md, rows = comparison_table([("full", a, "runs/full"), ("no-coattention", {"summary": b}, "runs/nca")])
    assert "| full | none (strict) | **70.00 ± 1.00** | 60.00 ± 2.00 | **65.00 ± 1.00** | `runs/full` |" in md
    assert "| no-coattention | none (strict) | 68.00 ± 2.00 | **66.00 ± 3.00** | **65.00 ± 2.00** | `runs/nca` |" in md
    assert rows[0]["best"] == ["wa", "f1"] and rows[1]["best"] == ["ua", "f1"]
    json.dumps(rows)


def test_comparison_table_tests_each_system_against_the_best(tmp_path):
    import csv
    rng = np.random.default_rng(0)
    labels = ["ang", "hap", "neu", "sad"]
    t = rng.integers(0, 4, 300)
    systems = {"good": np.where(rng.random(300) < 0.8, t, (t + 1) % 4),
               "bad": np.where(rng.random(300) < 0.4, t, (t + 1) % 4)}
    rows = []
    for name, pred in systems.items():
        run = tmp_path / name
        run.mkdir()
        with open(run / "predictions.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["utterance_id", "fold", "seed", "true", "predicted"])
            w.writerows([f"u{i}", 1, 7, labels[t[i]], labels[pred[i]]] for i in range(300))
        ua = float(np.mean([(pred[t == c] == c).mean() for c in range(4)]))
        rows.append((name, {"ua_mean": ua, "ua_std": 0.0}, str(run)))
    md, table = comparison_table(rows)
    assert "vs best UA: Δ [95 % CI], McNemar p" in md
    good, bad = table
    assert good["vs_best"] == {"best": True} and bad["vs_best"]["against"] == "good"
    assert bad["vs_best"]["ci_high"] < 0 and bad["vs_best"]["p_mcnemar"] < 1e-6 and bad["vs_best"]["n"] == 300
    assert "| best |" in md and f"p = {bad['vs_best']['p_mcnemar']:.3g}" in md
    json.dumps(table)
