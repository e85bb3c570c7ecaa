"""Domain shift and adaptation on real speech: RAVDESS test actors re-recorded as telephone audio.

A model is trained (``camser train``) on the training actors of one EmoBox fold; its test actors
are scored as recorded and as telephone-band audio (8 kHz, 300–3400 Hz, additive noise at a
given SNR), each without adaptation (the training speakers' feature statistics) and with
``camser evaluate --adapt corpus`` and ``--adapt speaker`` (the shifted audio's own statistics,
no labels). Writes ``OUT/domain_shift.md`` and ``.json``; the audio copies live under ``OUT``
(RAVDESS is CC BY-NC-SA: never commit them).

    python benchmarks/domain_shift.py --config configs/ravdess_camser_plus_speaker.yaml --out runs/domain_shift
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy.signal import butter, sosfiltfilt


def telephone(y: np.ndarray, sr: int, snr_db: float, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """8 kHz, band-passed to 300–3400 Hz, white noise at ``snr_db`` (of the clip's power)."""
    y8 = soxr.resample(y.astype(np.float64), sr, 8000)
    y8 = sosfiltfilt(butter(6, [300, 3400], btype="band", fs=8000, output="sos"), y8)
    noise = rng.standard_normal(len(y8))
    noise *= np.sqrt(np.mean(y8 ** 2) / (10 ** (snr_db / 10)) / np.mean(noise ** 2))
    out = y8 + noise
    return (0.9 * out / max(np.abs(out).max(), 1e-9)).astype(np.float32), 8000


def split_corpus(ravdess: Path, folds_csv: Path, fold: int, out: Path, snr_db: float, seed: int) -> dict:
    """``out/train`` (links to the training actors' files), ``out/test`` (links to the test
    actors') and ``out/telephone`` (the test actors as telephone audio), RAVDESS layout each."""
    rows = [r for r in csv.DictReader(open(folds_csv)) if int(r["fold"]) == fold]
    test_actors = sorted({r["speaker"] for r in rows if r["split"] == "test"})
    rng = np.random.default_rng(seed)
    for path in sorted(ravdess.glob("Actor_*/*.flac")):
        actor = path.parent.name.split("_")[1]
        kinds = ["test", "telephone"] if actor in test_actors else ["train"]
        for kind in kinds:
            d = out / kind / path.parent.name
            d.mkdir(parents=True, exist_ok=True)
            if kind == "telephone":
                target = d / (path.stem + ".wav")
                if not target.exists():
                    y, sr = sf.read(path, dtype="float32")
                    sf.write(target, *telephone(y, sr, snr_db, rng))
            elif not (d / path.name).exists():
                (d / path.name).symlink_to(path.resolve())
    return {"fold": fold, "test_actors": test_actors, "snr_db": snr_db}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="experiment YAML (trained with features.normalize corpus or speaker)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--fold", type=int, default=1, help="EmoBox fold whose test actors are shifted (default 1)")
    p.add_argument("--snr-db", type=float, default=10.0, help="noise level of the telephone copies (default 10 dB)")
    p.add_argument("--ravdess", type=Path, default=Path("../shared/data/ravdess"))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    a = p.parse_args(argv)

    from camser.config import load_config
    from camser.inference.evaluate import evaluate_model
    from camser.inference.model_dir import META
    from camser.training.train_model import train_model

    started = time.time()
    info = split_corpus(a.ravdess, a.ravdess / "folds_emobox.csv", a.fold, a.out, a.snr_db, seed=a.fold)
    cfg = load_config(a.config, a.overrides + [f"corpus.root={a.out / 'train'}", "corpus.folds_csv=null"])
    if cfg.features.normalize == "none":
        print(f"{a.config}: features.normalize is none; adaptation needs corpus or speaker", file=sys.stderr)
        return 2
    model = a.out / "model"
    if not (model / META).exists():
        train_model(cfg, model)
    rows = []
    for audio in ("test", "telephone"):
        for adapt in ("none", "corpus", "speaker"):
            res = evaluate_model(model, "ravdess", a.out / audio, a.out / f"eval_{audio}_{adapt}", adapt=adapt,
                                 log=lambda m: None)
            f = res["folds"][0]
            rows.append({"audio": audio, "adapt": adapt, "ua": f["ua"], "wa": f["wa"], "n": f["n_test"]})
            print(f"{audio:9s} adapt {adapt:7s} UA {100 * f['ua']:.1f}  WA {100 * f['wa']:.1f}", flush=True)
    info.update(config=str(a.config), overrides=a.overrides, rows=rows, wall_s=round(time.time() - started, 1),
                command=" ".join(["python", "benchmarks/domain_shift.py", *(argv or sys.argv[1:])]))
    (a.out / "domain_shift.json").write_text(json.dumps(info, indent=2) + "\n")
    lines = [f"Fold {a.fold} test actors {', '.join(info['test_actors'])}; model trained on the other actors "
             f"({a.config}). Telephone: 8 kHz, 300–3400 Hz, white noise at {a.snr_db:g} dB SNR.", "",
             "| test audio | adaptation | UA % | WA % |", "|---|---|---|---|"]
    lines += [f"| {r['audio']} | {r['adapt']} | {100 * r['ua']:.1f} | {100 * r['wa']:.1f} |" for r in rows]
    (a.out / "domain_shift.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
