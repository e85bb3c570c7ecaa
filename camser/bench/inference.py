"""Inference: end-to-end real-time factor of ``EmotionRecognizer.predict`` on a long file.

A CPU-practical CA-MSER (random weights) reading all hidden states of the wav2vec2-base
architecture is written as a model folder (the layout ``camser train`` writes) and loaded
back with ``EmotionRecognizer.from_pretrained``; ``predict`` then runs on a 60 s WAV file:
audio decoding, windowing, MFCC, spectrogram, the encoder and the model. ONNX Runtime figures
(fp32 and int8) run the same file through graphs exported from audio; what int8 costs in
accuracy is measured by :mod:`camser.bench.quantization`.
"""
from __future__ import annotations

import gc
import importlib
import importlib.util
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .common import SAMPLE_RATE, SEGMENT_S, Skip, bench_wav2vec2, rnd

LABELS = ["ang", "hap", "neu", "sad"]


def _inference_api():
    try:
        from ..inference.model_dir import with_resolved_encoder, write_model_dir
        from ..inference.recognizer import EmotionRecognizer
    except ImportError as e:
        raise Skip(f"camser.inference is not available yet ({e})") from None
    return EmotionRecognizer, write_model_dir, with_resolved_encoder


def make_model_dir(ctx) -> tuple[Path, str]:
    """The benchmark's model folder (built once per run), and a description of its encoder."""
    import numpy as np
    import torch

    from ..config import ExperimentConfig
    from ..features.ssl import SSLEncoder
    from ..models import build_model

    _, write_model_dir, with_resolved_encoder = _inference_api()
    folder, desc = bench_wav2vec2(ctx.work, ctx.sizes["tiny_models"])
    out = ctx.work / ("model-tiny" if ctx.sizes["tiny_models"] else "model-w2v2-base")
    if (out / "camser.json").is_file():
        return out, desc
    cfg = ExperimentConfig(name="bench")
    cfg.features.ssl.model = str(folder)
    cfg.features.ssl.layer = "all"
    cfg.model = {"name": "camser", "preset": "cpu"}
    cfg.train.batch_size = 64
    cfg = with_resolved_encoder(cfg)
    ssl = SSLEncoder(cfg.features.ssl, int(SEGMENT_S * SAMPLE_RATE))
    torch.manual_seed(0)
    model = build_model(cfg.model, len(LABELS), {"mfcc": (300, 40), "spectrogram": (300, 200), "ssl": ssl.output_shape})
    rng = np.random.default_rng(0)
    model.fit_mfcc([10 * rng.standard_normal((8, 300, 40), dtype=np.float32)])
    model.fit_spectrogram([-40 + 15 * rng.standard_normal((8, 300, 200), dtype=np.float32)])
    meta = {"labels": LABELS, "inputs": list(model.inputs), "model_name": "camser", "train_mode": "frozen",
            "encoder": {**ssl.describe(), "model": cfg.features.ssl.model, "output_shape": list(ssl.output_shape)},
            "seed": 0, "sample_rate": SAMPLE_RATE, "segment_s": SEGMENT_S,
            "note": "random weights: written by `camser bench` to time inference"}
    write_model_dir(out, model, cfg, meta, [])
    return out, desc


def _audio_file(ctx, seconds: float) -> Path:
    import soundfile as sf

    from .features import _waveform
    path = ctx.work / f"speech-{seconds:g}s.wav"
    if not path.is_file():
        y = _waveform(int(round(seconds / SEGMENT_S)), seed=1)
        sf.write(path, y, SAMPLE_RATE, subtype="PCM_16")
    return path


def measure_predict(ctx) -> dict:
    import torch

    EmotionRecognizer, *_ = _inference_api()
    s = ctx.sizes
    model_dir, desc = make_model_dir(ctx)
    audio = _audio_file(ctx, s["predict_s"])
    import soundfile as sf
    duration = sf.info(str(audio)).duration

    t = time.perf_counter()
    rec = EmotionRecognizer.from_pretrained(model_dir, device=ctx.device)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    first = rec.predict(str(audio))
    first_s = time.perf_counter() - t

    def reps() -> list[float]:
        out = []
        for _ in range(s["predict_reps"]):
            t = time.perf_counter()
            rec.predict(str(audio))
            out.append(time.perf_counter() - t)
        return out

    warm = reps()
    result = {"encoder": desc, "model": "CA-MSER preset cpu, SSL layer all (random weights)",
              "device": ctx.device, "audio_s": rnd(duration, 3), "n_segments": len(first.segments),
              "batch_size": rec.batch_size, "load_s": rnd(load_s, 3), "first_predict_s": rnd(first_s, 3),
              "predict_s": [rnd(x, 3) for x in warm], "rtf": rnd(statistics.median(warm) / duration, 4),
              "rtf_first_call": rnd(first_s / duration, 4),
              "rtf_definition": "median wall seconds of predict(path) after one warm-up call / audio seconds"}
    if ctx.device == "cpu":
        with torch.backends.mkldnn.flags(enabled=False):
            off = reps()
        result["mkldnn_off"] = {"predict_s": [rnd(x, 3) for x in off],
                                "rtf": rnd(statistics.median(off) / duration, 4)}
    if s["predict_cli"] and ctx.device == "cpu":
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "camser.cli", "predict", str(model_dir), str(audio),
                            "--format", "json", "--device", "cpu"], capture_output=True, text=True)
        wall = time.perf_counter() - t
        result["cli"] = ({"wall_s": rnd(wall, 2), "rtf": rnd(wall / duration, 4),
                          "includes": "interpreter start, imports, model load, predict, output"}
                         if r.returncode == 0 else {"status": f"failed: exit {r.returncode}: {r.stderr.strip()[-300:]}"})
    return result


# ---------------------------------------------------------------------- ONNX

def measure_onnx(ctx) -> dict:
    """onnxruntime fp32 and int8 (dynamic quantisation) RTF of ``predict`` on the same file,
    exported from raw audio (the wav2vec2-base encoder inside the graph)."""
    for module in ("onnxruntime", "onnx", "onnxscript"):
        if importlib.util.find_spec(module) is None:
            raise Skip(f"{module} is not installed (pip install 'camser[onnx]')")
    from ..inference.onnx_export import export_onnx
    EmotionRecognizer, *_ = _inference_api()
    model_dir, desc = make_model_dir(ctx)
    audio = _audio_file(ctx, ctx.sizes["predict_s"])
    import soundfile as sf
    duration = sf.info(str(audio)).duration
    out = {"encoder": desc, "device": "cpu", "audio_s": rnd(duration, 3), "variants": {}}
    for variant, quantize in (("fp32", None), ("int8", "int8")):
        onnx_file = Path(ctx.work) / f"model-{variant}.onnx"
        summary = export_onnx(model_dir, onnx_file, source="audio", quantize=quantize, log=lambda m: None)
        rec = EmotionRecognizer.from_pretrained(model_dir, device="cpu", onnx=onnx_file)
        rec.predict(str(audio))
        times = []
        for _ in range(ctx.sizes["predict_reps"]):
            t = time.perf_counter()
            rec.predict(str(audio))
            times.append(time.perf_counter() - t)
        out["variants"][variant] = {"predict_s": [rnd(x, 3) for x in times],
                                    "rtf": rnd(statistics.median(times) / duration, 4),
                                    "max_abs_diff_vs_torch": summary.get("max_abs_diff")}
        del rec                      # one session at a time, as a user's process holds it
        gc.collect()
    return out
