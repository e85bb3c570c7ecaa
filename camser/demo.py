"""`camser demo`: the whole chain, offline, on a generated corpus in IEMOCAP's layout.

synthetic corpus → prepare (manifest) → cached features (MFCC, spectrogram, SSL frames) →
leave-one-session-out cross-validation of the CPU-practical CA-MSER → results.json + report →
a model trained on the whole corpus (``camser train``) → its prediction for a newly generated
recording by an unseen voice (``camser predict``).

No pretrained encoder can be downloaded offline, so unless ``encoder`` names one (a local
Hugging Face folder), the SSL level comes from a small randomly initialised wav2vec2: the demo
shows the pipeline working, not the value of pretraining.

The demo runs torch, and the BLAS under numpy (librosa's MFCC), on one thread (``threads``):
the thread count changes the order of floating-point reductions, so the features and every
training step differ in their last bits between thread counts, and over the epochs on this
small corpus that moves the cross-validated UA by points. Pinned, the figures are the same
from run to run and on every machine with the same library versions and CPU instruction set
(``torch.backends.cpu.get_cpu_capability()``); another instruction set (AVX2 against AVX-512,
ARM) picks other kernels, hence other last bits. One thread is also the faster choice for
models this small on a shared CPU.
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


def tiny_bert(folder: Path, words=(), seed: int = 0) -> Path:
    """A small random-weight BERT (hidden 32, 2 layers) with a WordPiece vocabulary of the
    special tokens, ``words`` and the letters, saved as a Hugging Face folder with its
    tokenizer: the offline stand-in for ``model.text_encoder`` (tests, demos)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = Path(folder)
    if (folder / "config.json").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "?", "!", "'",
             *dict.fromkeys(w.lower() for w in words), *letters, *(f"##{c}" for c in letters)]
    vocab = list(dict.fromkeys(vocab))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # the vocabulary file positionally: transformers 4 calls it vocab_file, 5 calls it vocab
    BertTokenizerFast(str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    return folder


DEMO_THREADS = 1       # torch and BLAS threads of the whole demo: see the module docstring


def run_demo(out_dir: str | Path, quick: bool = False, encoder: str | None = None, log=print,
             threads: int | None = DEMO_THREADS) -> dict:
    """The demo into ``out_dir``; ``threads``: torch's and numpy's BLAS thread count for all of
    it (None: leave them as they are, which makes the figures depend on the core count)."""
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency

    from .runtime import torch_threads

    with torch_threads(threads), threadpool_limits(limits=threads, user_api="blas"):
        return _run_demo(Path(out_dir), quick, encoder, log, threads)


def _run_demo(out: Path, quick: bool, encoder: str | None, log, threads: int | None) -> dict:
    from .corpora import scan_corpus, summarize, write_manifest
    from .corpora.synthetic import generate_iemocap
    from .training.cv import run_cv

    log("1/5 generating a synthetic corpus in IEMOCAP's layout")
    root = generate_iemocap(out / "corpus", n_sessions=3, utterances_per_speaker=16 if quick else 24, seed=0)
    log("2/5 preparing (scan → manifest)")
    scan = scan_corpus("iemocap", root)
    write_manifest(out / "prepared", scan.utterances, scan.skipped)
    log(summarize(scan.utterances, scan.skipped))
    encoder = encoder or str(tiny_wav2vec2(out / "encoder"))
    log(f"3/5 features + 4/5 cross-validation (SSL encoder: {encoder})")
    cfg = load_config(Path(__file__).parent / "configs" / "demo.yaml", data={
        "corpus": {"prepared": str(out / "prepared")},
        "features": {"ssl": {"model": encoder}},
        "train": {"max_epochs": 8 if quick else 20, "num_threads": threads},
    })
    results = run_cv(cfg, out / "run", log=log)
    s = results["summary"]
    log(f"cross-validation: UA {100 * s['ua_mean']:.1f} %, WA {100 * s['wa_mean']:.1f} % over "
        f"{len(results['folds'])} folds (chance 25 %) — report: {out / 'run' / 'report.html'}")
    log("5/5 a model on the whole corpus (camser train), then a new recording (camser predict)")
    predict_new_recording(cfg, out, log)
    log(f"demo done — model folder: {out / 'model'}")
    return results


def predict_new_recording(cfg, out: Path, log=print):
    """Train ``out/model`` on the whole demo corpus (reused when it is there already), write a
    new angry-sounding recording by a voice the corpus doesn't have and print its prediction."""
    import numpy as np
    import soundfile as sf

    from .corpora.synthetic import Voice, synthesize
    from .inference.model_dir import META
    from .inference.recognizer import EmotionRecognizer
    from .training.train_model import train_model

    model_dir = out / "model"
    if (model_dir / META).exists():
        recognizer = EmotionRecognizer.from_pretrained(model_dir)
    else:
        recognizer = train_model(cfg, model_dir, log=log)
    rng = np.random.default_rng(2024)
    wav = out / "new_recording.wav"
    voice = Voice(f0_hz=195.0, formant_scale=1.12, open_quotient_shift=0.02)   # no corpus speaker
    sf.write(wav, synthesize("ang", voice, rng, duration_s=7.5), 16_000, subtype="PCM_16")
    p = recognizer.predict(wav)
    probs = ", ".join(f"{k} {v:.2f}" for k, v in p.probabilities.items())
    log(f"{wav} (spoken as ang): predicted {p.label} ({probs})")
    for seg in p.segments:
        log(f"  {seg.start_s:4.1f}–{seg.end_s:4.1f} s  {seg.label}  {seg.probabilities[seg.label]:.2f}")
    return p
