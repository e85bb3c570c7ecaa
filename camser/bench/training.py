"""Training cost on an IEMOCAP-sized set of cached segments.

The features are random, but stored exactly as extraction stores them (memory-mapped
:class:`~camser.features.store.FeatureStore` s of the shapes wav2vec2-base gives; SSL frames in
float16), and training runs through the package's own code: :func:`camser.training.cv.
build_for_data`, the model's ``fit_normalizers`` and :func:`camser.training.trainer.fit`
(batches gathered from the memmaps, validation, a checkpoint after every epoch).

* ``train_cpu`` / ``train_cpu_stacked``: the CPU-practical configuration (preset ``cpu``) with
  frozen cached frames of the last layer (149, 768), and of all 13 hidden states stacked
  (13, 149, 768) as ``configs/iemocap_cpu.yaml`` caches them; whole epochs are timed.
* ``train_paper``: the published configuration (preset ``paper``, AlexNet with random
  weights): a few training steps of the same loop are timed and extrapolated to an epoch.
* ``train_finetune``: the reference implementation's way — the wav2vec2-base encoder
  recomputed from audio and fine-tuned every epoch (``train.mode: finetune``): forward +
  backward through the encoder and the CPU-practical head on a few batches of 3 s audio,
  scaled per segment, plus the optimiser step per batch.
"""
from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path

import numpy as np

from .common import (MiB, SAMPLE_RATE, SEGMENT_S, TINY_SHAPES, W2V2_BASE_SHAPES, Skip, bench_wav2vec2,
                     free_disk_gb, rnd, sync)

LABELS = ["ang", "hap", "neu", "sad"]
STORE_NAMES = {"mfcc": "mfcc", "spectrogram": "spectrogram", "ssl_last": "ssl", "ssl_all": "ssl"}


def _shapes(ctx) -> dict:
    return TINY_SHAPES if ctx.sizes["tiny_models"] else W2V2_BASE_SHAPES


def data_dir(ctx) -> Path:
    return ctx.work / "train-data"


def _store_bytes(n: int, shape, dtype) -> int:
    return n * int(np.prod(shape)) * np.dtype(dtype).itemsize


def _fill(rng, shape, kind) -> np.ndarray:
    x = rng.standard_normal(shape, dtype=np.float32)
    if kind == "spectrogram":
        return -40.0 + 15.0 * x          # dB-like
    if kind == "mfcc":
        return 10.0 * x
    return x


def prepare_data(ctx) -> dict:
    """Write the synthetic stores (and a 6 s WAV every synthetic utterance points at, read by
    the fine-tuning measurement). Stores already complete are reused."""
    import soundfile as sf

    from ..features.store import FeatureStore
    from ..segments import segment_utterance
    from .features import _waveform

    s = ctx.sizes
    out = data_dir(ctx)
    out.mkdir(parents=True, exist_ok=True)
    n_seg, per = s["train_segments"], s["segments_per_utterance"]
    n_utt = n_seg // per
    seg = int(SEGMENT_S * SAMPLE_RATE)
    wav = out / "utterance.wav"
    if not wav.is_file():
        sf.write(wav, _waveform(per), SAMPLE_RATE, subtype="PCM_16")
    rng = np.random.default_rng(0)
    utterances = [{"id": f"u{i:05d}", "label": LABELS[int(rng.integers(len(LABELS)))],
                   "speaker": f"spk{i % 10:02d}"} for i in range(n_utt)]
    (out / "utterances.json").write_text(json.dumps({"wav": str(wav), "duration_s": per * SEGMENT_S,
                                                     "utterances": utterances}))
    index = [sg for u in utterances for sg in segment_utterance(u["id"], per * seg, seg, seg)]

    shapes = _shapes(ctx)
    wanted = ["mfcc", "spectrogram", "ssl_last"] + (["ssl_all"] if ctx.params.get("stacked") else [])
    report = {"n_segments": len(index), "n_utterances": n_utt, "stores": {}}
    for name in wanted:
        kind = STORE_NAMES[name]
        dtype = np.float16 if kind == "ssl" else np.float32
        path = out / name
        nbytes = _store_bytes(len(index), shapes[name], dtype)
        entry = {"shape": [len(index), *shapes[name]], "dtype": np.dtype(dtype).name,
                 "size_gb": rnd(nbytes / 1024 ** 3, 3), "path": str(path)}
        report["stores"][name] = entry
        if FeatureStore.complete_at(path):
            entry["status"] = "ok (reused)"
            continue
        free = free_disk_gb(out)
        if nbytes / 1024 ** 3 + 1.0 > free:
            entry["status"] = (f"skipped: needs {nbytes / 1024 ** 3:.1f} GB free in {out}, "
                               f"{free:.1f} GB available (use --tmp DIR)")
            continue
        t = time.perf_counter()
        store = FeatureStore.create(path, kind, index, shapes[name], dtype, config={"synthetic": True},
                                    hash="bench", extra={"encoder": {"model": "random (benchmark)"}})
        row_bytes = nbytes // len(index)
        chunk = max(1, min(len(index), (256 * MiB) // row_bytes))
        block = _fill(rng, (chunk, *shapes[name]), kind).astype(dtype)
        for lo in range(0, len(index), chunk):
            hi = min(len(index), lo + chunk)
            store.write(slice(lo, hi), block[:hi - lo])
            store.mark_done(slice(lo, hi))
        store.finalize()
        dt = time.perf_counter() - t
        entry.update(status="ok", write_s=rnd(dt, 2), write_gb_per_s=rnd(nbytes / 1024 ** 3 / dt, 3))
        ctx.log(f"  wrote {name} {entry['shape']} {entry['dtype']} ({entry['size_gb']} GB) in {dt:.1f} s")
    return report


def _load(ctx, stores_wanted: list[str]):
    """(PreparedData, train SegmentSet, val SegmentSet) over the synthetic stores."""
    from ..features.store import FeatureStore
    from ..features.batches import segment_set
    from ..training.experiment import PreparedData
    from ..types import Utterance

    out = data_dir(ctx)
    meta_path = out / "utterances.json"
    if not meta_path.is_file():
        raise Skip("no training data (the train_data step did not run)")
    meta = json.loads(meta_path.read_text())
    stores = {}
    for name in stores_wanted:
        path = out / name
        if not FeatureStore.complete_at(path):
            raise Skip(f"no synthetic '{name}' store (see training.data for why)")
        stores[STORE_NAMES[name]] = FeatureStore.open(path)
    utts = [Utterance(u["id"], meta["wav"], u["label"], u["speaker"], u["speaker"], meta["duration_s"])
            for u in meta["utterances"]]
    data = PreparedData(utts, list(LABELS), stores)
    label_of = {u.id: LABELS.index(u.label) for u in utts}
    ids = [u.id for u in utts]
    n_val = max(1, int(round(len(ids) * ctx.sizes["val_fraction"])))
    train = segment_set(stores, ids, label_of)                   # every segment trains
    val = segment_set(stores, ids[::max(1, len(ids) // n_val)][:n_val], label_of)
    return data, train, val


def _cfg(ctx, preset: str, **model):
    from ..config import ExperimentConfig
    cfg = ExperimentConfig()
    cfg.model = {"name": "camser", "preset": preset, **model}
    s = ctx.sizes
    cfg.train.batch_size = s["train_batch"]
    cfg.train.lr = 1e-3
    cfg.train.device = ctx.device
    cfg.train.seeds = [111]
    return cfg


def train_frozen(ctx, stacked: bool) -> dict:
    """Whole epochs of the CPU-practical configuration through the training loop itself."""
    import torch

    from ..training.cv import build_for_data
    from ..training.trainer import fit

    data, train, val = _load(ctx, ["mfcc", "spectrogram", "ssl_all" if stacked else "ssl_last"])
    epochs = ctx.sizes["stacked_epochs" if stacked else "train_epochs"]
    cfg = _cfg(ctx, "cpu")
    cfg.train.max_epochs, cfg.train.min_epochs, cfg.train.patience = epochs, epochs, epochs
    t0 = time.perf_counter()
    model, batch_fn = build_for_data(cfg, data, 111)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.fit_normalizers(data.stores, train.rows)
    norm_s = time.perf_counter() - t0
    model.to(torch.device(ctx.device))
    stamps: list[float] = []

    def log(msg: str) -> None:
        if msg.startswith("epoch"):
            sync(ctx.device)
            stamps.append(time.perf_counter())
            ctx.log(f"  {msg.strip()}  ({stamps[-1] - (stamps[-2] if len(stamps) > 1 else start):.1f} s)")

    ckpt = ctx.work / f"checkpoint-{'stacked' if stacked else 'last'}.pt" if ctx.sizes["checkpoint"] else None
    if ckpt is not None:
        ckpt.unlink(missing_ok=True)
    start = time.perf_counter()
    fit(model, data.stores, train, val, data.labels, cfg.train, 111, checkpoint=ckpt, log=log, batch_fn=batch_fn)
    if ckpt is not None:
        ckpt.unlink(missing_ok=True)
    per_epoch = [b - a for a, b in zip([start] + stamps[:-1], stamps)]
    n_params = sum(p.numel() for p in model.parameters())
    ssl = data.stores["ssl"]
    return {"preset": "cpu", "device": ctx.device, "ssl_shape": list(ssl.array.shape[1:]),
            "ssl_dtype": ssl.array.dtype.name, "n_train_segments": len(train), "n_val_segments": len(val),
            "batch_size": cfg.train.batch_size, "epochs_timed": len(per_epoch),
            "epoch_s": rnd(statistics.mean(per_epoch), 3), "epochs_s": [rnd(x, 3) for x in per_epoch],
            # the first epoch also pages the stores in from disk; later ones find them cached
            # when they fit in RAM (not the stacked ones: ~31 GB)
            "warm_epoch_s": rnd(statistics.mean(per_epoch[1:]), 3) if len(per_epoch) > 1 else None,
            "epoch_includes": "training pass over every segment + validation pass"
                              + (" + checkpoint write (as cross-validation does)" if ckpt is not None else ""),
            "build_s": rnd(build_s, 3), "fit_normalizers_s": rnd(norm_s, 3), "parameters": n_params,
            "store_gb": rnd(sum(s.array.nbytes for s in data.stores.values()) / 1024 ** 3, 3),
            "extrapolated": False}


def _timed_steps(model, step, n_warmup: int, n_steps: int, device) -> list[dict]:
    out = []
    for i in range(n_warmup + n_steps):
        parts = step()
        if i >= n_warmup:
            out.append(parts)
    return out


def train_paper(ctx) -> dict:
    """A few steps of the published configuration; the epoch is extrapolated from them."""
    import torch

    from ..features.batches import gather, iterate_batches
    from ..training.cv import build_for_data
    from ..training.trainer import make_optimizer, train_step

    s = ctx.sizes
    data, train, val = _load(ctx, ["mfcc", "spectrogram", "ssl_last"])
    cfg = _cfg(ctx, "paper", alexnet_weights="random")
    cfg.train.batch_size = s["paper_batch"]
    cfg.train.lr = 1e-5
    device = torch.device(ctx.device)
    model, _ = build_for_data(cfg, data, 111)
    t0 = time.perf_counter()
    model.fit_normalizers(data.stores, train.rows)
    norm_s = time.perf_counter() - t0
    model.to(device)
    optim = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg.train)
    gen = torch.Generator().manual_seed(111)
    batches = iterate_batches(len(train), cfg.train.batch_size, gen)

    def step() -> dict:                      # trainer.fit's step, timed in parts
        idx = next(batches)
        t = time.perf_counter()
        batch = {k: v.to(device) for k, v in gather(data.stores, train.rows[idx]).items()}
        target = torch.from_numpy(train.labels[idx])
        sync(device)
        t1 = time.perf_counter()
        model.train()
        train_step(model, batch, target, optim, cfg.train, device)
        sync(device)
        return {"gather_s": t1 - t, "compute_s": time.perf_counter() - t1}

    def eval_step() -> float:
        idx = np.arange(min(len(val), cfg.train.batch_size))
        t = time.perf_counter()
        batch = {k: v.to(device) for k, v in gather(data.stores, val.rows[idx]).items()}
        model.eval()
        with torch.no_grad():
            model(batch)
        sync(device)
        return time.perf_counter() - t

    steps = _timed_steps(model, step, s["paper_warmup"], s["paper_steps"], device)
    evals = [eval_step() for _ in range(max(1, min(2, s["paper_steps"])))]
    step_s = statistics.median(p["gather_s"] + p["compute_s"] for p in steps)
    eval_s = statistics.median(evals)
    n_train_steps = math.ceil(len(train) / cfg.train.batch_size)
    n_val_steps = math.ceil(len(val) / cfg.train.batch_size)
    return {"preset": "paper", "alexnet_weights": "random", "device": ctx.device,
            "n_train_segments": len(train), "n_val_segments": len(val), "batch_size": cfg.train.batch_size,
            "steps_timed": len(steps), "warmup_steps": s["paper_warmup"],
            "step_s": rnd(step_s, 4), "steps": [{k: rnd(v, 4) for k, v in p.items()} for p in steps],
            "eval_step_s": rnd(eval_s, 4),
            "epoch_s": rnd(n_train_steps * step_s + n_val_steps * eval_s, 2),
            "extrapolated": True,
            "extrapolation": f"{n_train_steps} training steps × median step + {n_val_steps} validation "
                             f"batches × median evaluation batch, from {len(steps)} timed steps",
            "fit_normalizers_s": rnd(norm_s, 3), "parameters": sum(p.numel() for p in model.parameters())}


def train_finetune(ctx) -> dict:
    """The encoder recomputed from audio and fine-tuned (``train.mode: finetune``), per segment."""
    import torch

    from ..features.batches import iterate_batches
    from ..training.cv import build_for_data
    from ..training.trainer import make_optimizer, train_step

    s = ctx.sizes
    data, train, val = _load(ctx, ["mfcc", "spectrogram"])
    folder, desc = bench_wav2vec2(ctx.work, s["tiny_models"])
    cfg = _cfg(ctx, "cpu")
    cfg.train.mode = "finetune"
    cfg.train.lr = 1e-5
    cfg.features.ssl.model = str(folder)
    cfg.features.ssl.layer = "last"
    device = torch.device(ctx.device)
    model, batch_fn = build_for_data(cfg, data, 111)
    model.fit_normalizers(data.stores, train.rows)
    model.to(device)
    optim = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg.train)
    b = s["finetune_batch"]
    batches = iterate_batches(len(train), b, torch.Generator().manual_seed(111))

    def step() -> dict:                      # trainer.fit's step, timed in parts
        idx = next(batches)
        t = time.perf_counter()
        batch = {k: v.to(device) for k, v in batch_fn(data.stores, train, idx).items()}
        target = torch.from_numpy(train.labels[idx])
        sync(device)
        stamps = [time.perf_counter()]

        def phase(_name: str) -> None:
            sync(device)
            stamps.append(time.perf_counter())

        model.train()
        train_step(model, batch, target, optim, cfg.train, device, on_phase=phase)
        sync(device)
        t1, t2, t3 = stamps
        return {"batch_s": t1 - t, "forward_s": t2 - t1, "backward_s": t3 - t2, "optimizer_s": time.perf_counter() - t3}

    def eval_step() -> float:
        idx = np.arange(min(len(val), b))
        batch = {k: v.to(device) for k, v in batch_fn(data.stores, val, idx).items()}
        t = time.perf_counter()
        model.eval()
        with torch.no_grad():
            model(batch)
        sync(device)
        return (time.perf_counter() - t) / len(idx)

    steps = _timed_steps(model, step, s["finetune_warmup"], s["finetune_steps"], device)
    eval_seg = statistics.median(eval_step() for _ in range(max(1, min(2, s["finetune_steps"]))))
    med = {k: statistics.median(p[k] for p in steps) for k in steps[0]}
    per_seg = (med["batch_s"] + med["forward_s"] + med["backward_s"]) / b
    n_train, n_val, big_b = len(train), len(val), s["train_batch"]
    epoch_s = n_train * per_seg + math.ceil(n_train / big_b) * med["optimizer_s"] + n_val * eval_seg
    n_enc = sum(p.numel() for p in model.encoder.parameters())
    return {"encoder": desc, "model": str(folder), "head": "CA-MSER preset cpu", "device": ctx.device,
            "measured_batch_size": b, "steps_timed": len(steps), "warmup_steps": s["finetune_warmup"],
            "steps": [{k: rnd(v, 4) for k, v in p.items()} for p in steps],
            "train_seconds_per_segment": rnd(per_seg, 4), "optimizer_step_s": rnd(med["optimizer_s"], 4),
            "eval_seconds_per_segment": rnd(eval_seg, 4),
            "n_train_segments": n_train, "n_val_segments": n_val, "epoch_batch_size": big_b,
            "epoch_s": rnd(epoch_s, 2), "extrapolated": True,
            "extrapolation": (f"{n_train} segments × (audio batch + forward + backward) per segment, measured "
                              f"at batch {b}, + {math.ceil(n_train / big_b)} optimiser steps (batch {big_b}) "
                              f"+ {n_val} validation segments × evaluation forward per segment"),
            "encoder_parameters": n_enc, "parameters": sum(p.numel() for p in model.parameters())}


def cv_ratio(results: dict, sizes: dict) -> dict:
    """Full 5-fold cross-validation with cached frames vs with the encoder recomputed and
    fine-tuned every epoch, same number of epochs for both (derived from the measurements)."""
    train = results.get("training", {})
    ft = train.get("train_finetune", {})
    if not _ok(ft):
        return {"status": "skipped: needs train_finetune"}
    ssl = results.get("features", {}).get("ssl_wav2vec2", {})
    folds, epochs = sizes["cv_folds"], sizes["cv_epochs"]
    out = {"status": "ok", "folds": folds, "epochs_per_fold": epochs,
           "finetune_epoch_s": ft["epoch_s"], "finetune_cv_s": rnd(folds * epochs * ft["epoch_s"], 1),
           "assumptions": ("both sides train every fold for the same number of epochs over the same "
                           "segments; the cached side pays the wav2vec2-base extraction of every segment "
                           "once (best measured setting); MFCC/spectrogram extraction, the same on both "
                           "sides, is left out"),
           "variants": {}}
    n = ft["n_train_segments"]
    extract_s = None
    if _ok(ssl):
        extract_s = n * SEGMENT_S * ssl["best"]["rtf"]
        out["extraction_s"] = rnd(extract_s, 1)
        out["extraction_rtf"] = ssl["best"]["rtf"]
    else:
        out["extraction_s"] = None
        out["extraction_note"] = "ssl_wav2vec2 not measured: extraction cost left out of the cached side"
    for name in ("train_cpu_stacked", "train_cpu"):
        tr = train.get(name, {})
        if not _ok(tr):
            continue
        cached = folds * epochs * tr["epoch_s"] + (extract_s or 0.0)
        out["variants"][name] = {"cached_epoch_s": tr["epoch_s"], "cached_cv_s": rnd(cached, 1),
                                 "ratio": rnd(folds * epochs * ft["epoch_s"] / cached, 2),
                                 "ratio_without_extraction": rnd(ft["epoch_s"] / tr["epoch_s"], 2)}
    if not out["variants"]:
        return {"status": "skipped: needs train_cpu or train_cpu_stacked"}
    return out


def _ok(entry: dict) -> bool:
    return isinstance(entry, dict) and entry.get("status") == "ok"
