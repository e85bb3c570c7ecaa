"""The training loop: AdamW, early stopping on validation WA+UA, resumable checkpoints, DDP.

A fold's checkpoint is rewritten atomically after every epoch with the model, optimiser,
early-stopping counters and every random state, so a killed run resumes to exactly the
numbers an uninterrupted run with the same seed gives.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..config import TrainConfig
from .data import SegmentSet, gather, iterate_batches, with_prefetch
from .metrics import compute_metrics, pool_segments


@dataclass
class FitResult:
    best_state: dict
    best_epoch: int
    epochs: int
    history: list[dict] = field(default_factory=list)


@contextmanager
def torch_threads(n: int | None):
    """``torch.set_num_threads(n)`` for the duration only: the thread count is process-global
    and changes reduction order (last-bit differences), so a run must not leak it to callers."""
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def score_of(metrics: dict, select_on: str) -> float:
    """``"wa+ua"`` → metrics["wa"] + metrics["ua"] (any '+'-joined metric names)."""
    return float(sum(metrics[k] for k in select_on.split("+")))


@torch.no_grad()
def predict_segments(model, stores, segs: SegmentSet, batch_size: int, device,
                     batch_fn: Callable | None = None, embeddings: bool = False):
    """Segment log-probabilities (n_seg, C) and, if asked, the model's embeddings per segment."""
    model.eval()
    out, embs = [], {}
    for idx in with_prefetch(iterate_batches(len(segs), batch_size), stores, segs):
        batch = (batch_fn or _default_batch)(stores, segs, idx)
        batch = {k: v.to(device) for k, v in batch.items()}
        if embeddings:
            logits, e = model(batch, return_embeddings=True)
            for k, v in e.items():
                embs.setdefault(k, []).append(v.float().cpu().numpy())
        else:
            logits = model(batch)
        out.append(F.log_softmax(logits.float(), dim=-1).cpu().numpy())
    logp = np.concatenate(out) if out else np.zeros((0, 0))
    return (logp, {k: np.concatenate(v) for k, v in embs.items()}) if embeddings else logp


def _default_batch(stores, segs: SegmentSet, idx: np.ndarray) -> dict:
    return gather(stores, segs.rows[idx])


def utterance_metrics(logp: np.ndarray, segs: SegmentSet, labels: list[str]):
    """Utterance-level metrics from segment log-probabilities: each utterance's prediction is
    the mean of its segments' log-probabilities. Returns (metrics, utterance ids, true, predicted)."""
    utt_ids, utt_logp = pool_segments(segs.utterance_ids, logp)
    first_label = {}
    for uid, lab in zip(segs.utterance_ids, segs.labels):
        first_label.setdefault(uid, int(lab))
    y_true = np.array([first_label[u] for u in utt_ids])
    y_pred = utt_logp.argmax(axis=1)
    return compute_metrics(y_true, y_pred, labels), list(utt_ids), y_true, y_pred


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def fit(model, stores, train: SegmentSet, val: SegmentSet, labels: list[str], cfg: TrainConfig,
        seed: int, checkpoint: Path | None = None, log: Callable[[str], None] = print,
        batch_fn: Callable | None = None, rank: int = 0, world_size: int = 1) -> FitResult:
    """Train ``model`` (already built under ``seed``) with early stopping on ``val``.

    With ``world_size > 1`` the model must be wrapped in DistributedDataParallel; every rank
    takes its share of each batch, rank 0 alone writes checkpoints. ``batch_fn(stores, segs,
    idx)`` builds batches (default: cached features)."""
    device = resolve_device(cfg.device)
    core = getattr(model, "module", model)          # the model inside DDP
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    use_amp = cfg.amp and device.type == "cuda"
    batch_fn = batch_fn or _default_batch
    loss_fn = getattr(core, "training_loss", None) or F.cross_entropy   # e.g. Query2Label's BCE

    state = {"epoch": 0, "best_score": -math.inf, "best_epoch": 0, "bad_epochs": 0, "history": [],
             "best_state": {k: v.detach().clone() for k, v in core.state_dict().items()}}
    if checkpoint is not None and checkpoint.exists():
        ck = torch.load(checkpoint, map_location="cpu", weights_only=True)
        core.load_state_dict(ck["model"])
        optim.load_state_dict(ck["optimizer"])
        gen.set_state(ck["generator"])
        torch.set_rng_state(ck["torch_rng"])
        state = {k: ck[k] for k in ("epoch", "best_score", "best_epoch", "bad_epochs", "history", "best_state")}
        log(f"resumed from {checkpoint} after epoch {state['epoch']}")

    while state["epoch"] < cfg.max_epochs:
        if state["epoch"] >= cfg.min_epochs and state["bad_epochs"] >= cfg.patience:
            break
        epoch = state["epoch"] + 1
        model.train()
        total, count = 0.0, 0
        for idx in with_prefetch(iterate_batches(len(train), cfg.batch_size, gen, rank, world_size),
                                 stores, train):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch_fn(stores, train, idx).items()}
            target = torch.from_numpy(train.labels[idx]).to(device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = loss_fn(model(batch).float(), target)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            total += loss.item() * len(idx)
            count += len(idx)
        logp = predict_segments(core, stores, val, cfg.batch_size, device, batch_fn)
        val_loss = float(-logp[np.arange(len(val)), val.labels].mean())
        metrics, *_ = utterance_metrics(logp, val, labels)
        score = score_of(metrics, cfg.select_on)
        improved = score > state["best_score"]
        if improved:
            state.update(best_score=score, best_epoch=epoch, bad_epochs=0,
                         best_state={k: v.detach().cpu().clone() for k, v in core.state_dict().items()})
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        state["history"].append({"epoch": epoch, "train_loss": total / max(count, 1), "val_loss": val_loss,
                                 "val_wa": metrics["wa"], "val_ua": metrics["ua"]})
        log(f"epoch {epoch:3d}  train loss {total / max(count, 1):.4f}  val loss {val_loss:.4f}  "
            f"val WA {metrics['wa']:.3f} UA {metrics['ua']:.3f}{'  *' if improved else ''}")
        if checkpoint is not None and rank == 0:
            _atomic_save({**state, "model": core.state_dict(), "optimizer": optim.state_dict(),
                          "generator": gen.get_state(), "torch_rng": torch.get_rng_state()}, checkpoint)
    core.load_state_dict(state["best_state"])
    return FitResult(state["best_state"], state["best_epoch"], state["epoch"], state["history"])
