"""`camser demo`: the whole chain, offline, on a generated corpus in IEMOCAP's layout.

synthetic corpus → prepare (manifest) → cached features (MFCC, spectrogram, SSL frames) →
leave-one-session-out cross-validation of the CPU-practical CA-MSER → results.json + report.

No pretrained encoder can be downloaded offline, so unless ``encoder`` names one (a local
Hugging Face folder), the SSL level comes from a small randomly initialised wav2vec2: the demo
shows the pipeline working, not the value of pretraining.
"""
from __future__ import annotations

from pathlib import Path

from .config import load_config


def tiny_wav2vec2(folder: Path, seed: int = 0) -> Path:
    """A small random-weight wav2vec2 saved as a Hugging Face folder (the offline stand-in)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    if (folder / "config.json").exists():
        return folder
    torch.manual_seed(seed)
    config = Wav2Vec2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                            conv_dim=(64, 64, 64, 64, 64, 64, 64), num_conv_pos_embeddings=16,
                            num_conv_pos_embedding_groups=4)
    Wav2Vec2Model(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False).save_pretrained(folder)
    return folder


def run_demo(out_dir: str | Path, quick: bool = False, encoder: str | None = None, log=print) -> dict:
    from .corpora import scan_corpus, summarize, write_manifest
    from .corpora.synthetic import generate_iemocap
    from .training.cv import run_cv

    out = Path(out_dir)
    log("1/4 generating a synthetic corpus in IEMOCAP's layout")
    root = generate_iemocap(out / "corpus", n_sessions=3, utterances_per_speaker=16 if quick else 24, seed=0)
    log("2/4 preparing (scan → manifest)")
    scan = scan_corpus("iemocap", root)
    write_manifest(out / "prepared", scan.utterances, scan.skipped)
    log(summarize(scan.utterances, scan.skipped))
    encoder = encoder or str(tiny_wav2vec2(out / "encoder"))
    log(f"3/4 features + 4/4 cross-validation (SSL encoder: {encoder})")
    cfg = load_config(Path(__file__).parent / "configs" / "demo.yaml", data={
        "corpus": {"prepared": str(out / "prepared")},
        "features": {"ssl": {"model": encoder}},
        "train": {"max_epochs": 8 if quick else 20},
    })
    results = run_cv(cfg, out / "run", log=log)
    s = results["summary"]
    log(f"demo done: UA {100 * s['ua_mean']:.1f} %, WA {100 * s['wa_mean']:.1f} % over "
        f"{len(results['folds'])} folds (chance 25 %) — report: {out / 'run' / 'report.html'}")
    return results
