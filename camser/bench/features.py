"""Feature extraction throughput: segments per second and real-time factor (compute seconds
per second of audio) for MFCC, spectrogram and SSL frames, through
:func:`camser.features.extract.compute_features` — the code extraction and inference run.
SSL encoders are measured with PyTorch's oneDNN (``torch.backends.mkldnn``) on and off."""
from __future__ import annotations

import numpy as np

from .common import SAMPLE_RATE, SEGMENT_S, Skip, bench_wav2vec2, rnd, time_calls, tiny_whisper, whisper_folder


def _waveform(n_segments: int, seed: int = 0) -> np.ndarray:
    """``n_segments`` × 3 s of a voiced-sounding test signal (harmonics with a wandering pitch,
    syllable-rate amplitude modulation, a little noise). Content does not change the cost."""
    rng = np.random.default_rng(seed)
    n = int(n_segments * SEGMENT_S * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    f0 = 150 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    y = sum(np.sin(k * phase) / k for k in range(1, 8))
    y *= 0.5 * (1 + np.sin(2 * np.pi * 4 * t))
    y += 0.01 * rng.standard_normal(n)
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


def _segments(n_segments: int):
    from ..segments import segment_utterance
    seg = int(SEGMENT_S * SAMPLE_RATE)
    return segment_utterance("bench", n_segments * seg, seg, seg)


def _row(bs: int, timing: dict) -> dict:
    audio_s = bs * SEGMENT_S
    t = timing["median_s"]
    return {"batch_size": bs, "seconds_per_batch": rnd(t, 5), "segments_per_s": rnd(bs / t, 2),
            "rtf": rnd(t / audio_s, 5), "reps": timing["reps"], "times_s": timing["times_s"]}


def measure_frame_kind(ctx, kind: str) -> dict:
    """MFCC or spectrogram of ``bs`` consecutive 3 s segments of one waveform per call."""
    from ..config import ExperimentConfig
    from ..features.extract import compute_features

    cfg = ExperimentConfig()
    s = ctx.sizes
    rows = []
    for bs in s["feature_batch_sizes"]:
        y, segs = _waveform(bs), _segments(bs)
        timing = time_calls(lambda: compute_features(y, segs, cfg, [kind]), s["feature_min_reps"],
                            s["feature_min_s"], s["feature_max_reps"], warmup=s["warmup"])
        rows.append(_row(bs, timing))
    shape = list(compute_features(_waveform(1), _segments(1), cfg, [kind])[kind].shape[1:])
    best = min(rows, key=lambda r: r["rtf"])
    return {"device": "cpu", "shape": shape, "config": dict(getattr(cfg.features, kind).__dict__),
            "batches": rows, "best": {"batch_size": best["batch_size"], "rtf": best["rtf"],
                                      "segments_per_s": best["segments_per_s"]}}


def measure_ssl(ctx, which: str) -> dict:
    """SSL frames (``features.ssl.layer`` as the CPU configurations use: all hidden states) for
    batch sizes ``ssl_batch_sizes``, oneDNN on and off (CPU), and on the GPU when asked."""
    import torch

    from ..config import ExperimentConfig, SSLConfig
    from ..features.extract import compute_features
    from ..features.ssl import SSLEncoder

    s = ctx.sizes
    if which == "wav2vec2":
        folder, desc = bench_wav2vec2(ctx.work, s["tiny_models"])
    elif s["tiny_models"]:
        folder, desc = tiny_whisper(ctx.work / "tiny-whisper"), "tiny random Whisper (quick run; 2 layers, width 64)"
    else:
        folder = whisper_folder(ctx.shared)
        if folder is None:
            raise Skip(f"Whisper-base encoder not found (looked in {ctx.shared}/models/whisper-base-encoder; "
                       "pass --shared PATH)")
        desc = "Whisper-base encoder (pretrained, ../shared), exact 3 s length"
    seg = int(SEGMENT_S * SAMPLE_RATE)
    enc = SSLEncoder(SSLConfig(model=str(folder), layer=s["ssl_layer"]), seg, device=ctx.device)
    out = {"encoder": desc, "model": str(folder), "layer": s["ssl_layer"], "device": ctx.device,
           "output_shape": list(enc.output_shape), "torch_threads": torch.get_num_threads()}

    def run(bs: int) -> dict:
        cfg = ExperimentConfig()
        cfg.features.ssl.batch_size = bs
        y, segs = _waveform(bs), _segments(bs)
        timing = time_calls(lambda: compute_features(y, segs, cfg, ["ssl"], enc), s["ssl_min_reps"],
                            s["ssl_min_s"], s["ssl_max_reps"], warmup=s["warmup"], device=ctx.device)
        return _row(bs, timing)

    settings = {}
    if ctx.device == "cpu":
        for name, enabled in (("mkldnn_on", True), ("mkldnn_off", False)):
            with torch.backends.mkldnn.flags(enabled=enabled):
                settings[name] = [run(bs) for bs in s["ssl_batch_sizes"]]
                ctx.log(f"  {which} {name}: " + ", ".join(f"bs {r['batch_size']} RTF {r['rtf']:.3f}"
                                                          for r in settings[name]))
    else:
        settings["default"] = [run(bs) for bs in s["ssl_batch_sizes"]]
    out["settings"] = settings
    best_name, best = min(((n, r) for n, rows in settings.items() for r in rows), key=lambda x: x[1]["rtf"])
    out["best"] = {"setting": best_name, "batch_size": best["batch_size"], "rtf": best["rtf"],
                   "segments_per_s": best["segments_per_s"]}
    if "mkldnn_on" in settings:
        per_bs = []
        for on, off in zip(settings["mkldnn_on"], settings["mkldnn_off"]):
            per_bs.append({"batch_size": on["batch_size"], "faster": "on" if on["rtf"] <= off["rtf"] else "off",
                           "off_over_on": rnd(off["rtf"] / on["rtf"], 3)})
        wins_off = sum(r["faster"] == "off" for r in per_bs)
        out["mkldnn"] = {"faster": "off" if wins_off > len(per_bs) / 2 else "on", "per_batch_size": per_bs,
                         "note": "off_over_on > 1: oneDNN (the default) is faster"}
    return out
