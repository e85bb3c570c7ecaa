"""The training loop: AdamW, early stopping on validation WA+UA, weight EMA, resumable
checkpoints, DDP.

A fold's checkpoint is rewritten atomically after every epoch with the model, optimiser,
early-stopping counters and every random state, so a killed run resumes to exactly the
numbers an uninterrupted run with the same seed gives.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..config import TrainConfig
from ..errors import ConfigError
from ..features.store import KINDS as FRAME_KEYS
from ..features.batches import SegmentSet, gather, iterate_batches, with_prefetch
from ..metrics import compute_metrics, pool_segments
from ..progress import PassProgress, show_bar
from ..runtime import resolve_device
from ..fileio import atomic_write


@dataclass
class FitResult:
    best_state: dict
    best_epoch: int
    epochs: int
    history: list[dict] = field(default_factory=list)


def score_of(metrics: dict, select_on: str) -> float:
    """``"wa+ua"`` → metrics["wa"] + metrics["ua"] (any '+'-joined metric names)."""
    return float(sum(metrics[k] for k in select_on.split("+")))


@torch.no_grad()
def predict_segments(model, stores, segs: SegmentSet, batch_size: int, device,
                     batch_fn: Callable | None = None, embeddings: bool = False, unit: str = "segment",
                     on_batch: Callable[[], None] | None = None):
    """Segment log-probabilities (n_seg, C) and, if asked, the model's embeddings per segment.
    With ``unit="utterance"`` the model sees an utterance's segments together (``owner``) and
    answers per utterance; each segment then carries its utterance's answer, so pooling the
    segments (:func:`utterance_metrics`) gives the utterance's. ``on_batch()`` is called after
    each batch (progress)."""
    model.eval()
    out, embs = [], {}
    batches = UnitBatches(segs, unit, batch_fn or _default_batch)
    for idx in with_prefetch(iterate_batches(batches.n_examples, batch_size), stores, batches.segment_view):
        batch, _, owner = batches(stores, idx)
        batch = {k: v.to(device) for k, v in batch.items()}
        if embeddings:
            logits, e = model(batch, return_embeddings=True)
            for k, v in e.items():
                v = v.float().cpu()
                if owner is not None and v.shape[0] == len(idx):          # per utterance → per segment
                    v = v[owner]
                embs.setdefault(k, []).append(v.numpy())
        else:
            logits = model(batch)
        logp = F.log_softmax(logits.float(), dim=-1).cpu()
        out.append((logp if owner is None else logp[owner]).numpy())
        if on_batch is not None:
            on_batch()
    logp = np.concatenate(out) if out else np.zeros((0, 0))
    if unit == "utterance":                       # back to the segment order of ``segs``
        order = np.empty(len(segs), dtype=np.int64)
        order[np.concatenate(batches.groups) if batches.groups else []] = np.arange(len(segs))
        logp = logp[order]
        embs = {k: [np.concatenate(v)[order]] for k, v in embs.items()}
    return (logp, {k: np.concatenate(v) for k, v in embs.items()}) if embeddings else logp


class UnitBatches:
    """Examples of a :class:`SegmentSet`: its segments (``unit="segment"``), or its utterances
    (``"utterance"``: all segments of an utterance in one example; the batch gets ``owner``, the
    example of each segment, and the model pools an utterance's segments before its head).

    ``self(stores, idx)`` → (batch dict, example labels, owner tensor or None)."""

    def __init__(self, segs: SegmentSet, unit: str, batch_fn: Callable):
        self.segs, self.unit, self.batch_fn = segs, unit, batch_fn
        self.groups: list[np.ndarray] | None = None
        if unit == "utterance":
            first: dict[str, list[int]] = {}
            for i, uid in enumerate(segs.utterance_ids):
                first.setdefault(uid, []).append(i)
            self.groups = [np.asarray(g, dtype=np.int64) for g in first.values()]
            self.labels = np.array([segs.labels[g[0]] for g in self.groups], dtype=np.int64)
        elif unit == "segment":
            self.labels = segs.labels
        else:
            raise ValueError(f"unit must be 'segment' or 'utterance', got {unit!r}")

    @property
    def n_examples(self) -> int:
        return len(self.labels)

    @property
    def segment_view(self) -> SegmentSet:
        """What :func:`with_prefetch` reads rows of for an index batch of examples."""
        if self.groups is None:
            return self.segs
        first = np.array([g[0] for g in self.groups], dtype=np.int64)
        return SegmentSet(self.segs.rows[first], self.labels, [self.segs.utterance_ids[i] for i in first])

    def __call__(self, stores, idx: np.ndarray):
        if self.groups is None:
            return self.batch_fn(stores, self.segs, idx), self.labels[idx], None
        seg_idx = np.concatenate([self.groups[i] for i in idx])
        owner = torch.from_numpy(np.repeat(np.arange(len(idx)), [len(self.groups[i]) for i in idx]))
        batch = self.batch_fn(stores, self.segs, seg_idx)
        batch["owner"] = owner
        return batch, self.labels[idx], owner


def n_batches(n_examples: int, batch_size: int) -> int:
    return -(-n_examples // batch_size)


def _default_batch(stores, segs: SegmentSet, idx: np.ndarray) -> dict:
    return gather(stores, segs.rows[idx])


def utterance_metrics(logp: np.ndarray, segs: SegmentSet, labels: list[str]):
    """Utterance-level metrics from segment log-probabilities: each utterance's prediction is
    the mean of its segments' log-probabilities. Returns (metrics, utterance ids, true, predicted,
    the utterances' mean log-probabilities)."""
    utt_ids, utt_logp = pool_segments(segs.utterance_ids, logp)
    first_label = {}
    for uid, lab in zip(segs.utterance_ids, segs.labels):
        first_label.setdefault(uid, int(lab))
    y_true = np.array([first_label[u] for u in utt_ids])
    y_pred = utt_logp.argmax(axis=1)
    return compute_metrics(y_true, y_pred, labels), list(utt_ids), y_true, y_pred, utt_logp


def _atomic_save(obj, path: Path) -> None:
    with atomic_write(path) as f:
        torch.save(obj, f)


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """``train.optimizer``: adamw | adam | sgd (momentum 0.9, Nesterov), with ``lr`` and
    ``weight_decay`` (Adam's is L2 in the gradient, AdamW's decoupled)."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    raise ValueError(f"train.optimizer: {cfg.optimizer!r} is not one of adamw, adam, sgd")


def lr_factor(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """The learning-rate multiplier at optimiser ``step`` (0-based): linear warm-up over
    ``warmup_epochs``, then constant or a cosine decay to 0 at ``max_epochs``."""
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "constant":
        return 1.0
    total = max(cfg.max_epochs * steps_per_epoch - warm, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min((step - warm) / total, 1.0)))




def mask_frames(batch: dict, fraction: float) -> dict:
    """SpecAugment-style time masking of cached frames: per example, one span of up to
    ``fraction`` of its length, at the same relative place in every frame feature (their frame
    rates differ), set to zero. Uses torch's global generator (seeded, checkpointed)."""
    keys = [k for k in FRAME_KEYS if k in batch]
    if not keys:
        return batch
    n = batch[keys[0]].shape[0]
    width = torch.rand(n) * fraction
    start = torch.rand(n) * (1.0 - width)
    for k in keys:
        x = batch[k]
        t = x.shape[-2]
        pos = (torch.arange(t, dtype=torch.float32) + 0.5) / t                        # (T,)
        drop = (pos[None] >= start[:, None]) & (pos[None] < (start + width)[:, None])   # (B, T)
        keep = (~drop).to(x.dtype).reshape(n, *([1] * (x.dim() - 3)), t, 1)
        batch[k] = x * keep.to(x.device)
    return batch


def mixup(batch: dict, target: torch.Tensor, alpha: float):
    """Input mixup (Zhang et al., 2018): every float input of the batch mixed with a shuffled
    copy, λ ~ Beta(α, α). → (batch, target, shuffled target, λ)."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(target.shape[0])
    out = {}
    for k, v in batch.items():
        if k == "valid":                     # the longer real part of the two
            out[k] = torch.maximum(v, v[perm.to(v.device)])
        elif v.is_floating_point():
            out[k] = lam * v + (1.0 - lam) * v[perm.to(v.device)]
        else:
            out[k] = v
    return out, target, target[perm.to(target.device)], lam


def _speaker_adversary(core, stores, examples: UnitBatches, speakers: np.ndarray | None, cfg: TrainConfig,
                       device) -> tuple[SpeakerAdversary, np.ndarray]:
    """The adversary of ``train.speaker_adversarial``, sized by one forward pass of the first
    training example, and each example's speaker index."""
    if speakers is None:
        raise ConfigError("train.speaker_adversarial: this training loop was given no speakers to hide")
    speakers = np.asarray(speakers, dtype=np.int64)
    if examples.groups is not None:                 # an utterance's segments share its speaker
        speakers = np.array([speakers[g[0]] for g in examples.groups], dtype=np.int64)
    batch, _, _ = examples(stores, np.arange(1))
    was_training = core.training
    core.eval()
    try:
        with torch.no_grad():
            out = core({k: v.to(device) for k, v in batch.items()}, return_embeddings=True)
    except TypeError:
        raise ConfigError("train.speaker_adversarial: this model does not return its fused vector "
                          "(return_embeddings)") from None
    finally:
        core.train(was_training)
    dim = out[1]["fused"].shape[-1]
    return SpeakerAdversary(dim, int(speakers.max()) + 1, cfg.speaker_adversarial).to(device), speakers


def weight_average(model: torch.nn.Module, decay: float):
    """An exponential moving average of ``model``'s weights and buffers (torch's
    ``AveragedModel``; the first update copies them), or None when ``decay`` is 0."""
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


class GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient multiplied by ``-scale`` backward (Ganin & Lempitsky, 2015)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.scale * grad, None


class SpeakerAdversary(torch.nn.Module):
    """Domain-adversarial training against the training speakers (``train.speaker_adversarial``):
    a small classifier learns to tell each example's speaker from the model's fused vector,
    while the reversed gradient (scaled by ``scale``) teaches the model vectors it can't tell
    them apart by. It lives in the training loop only; the saved model never holds it."""

    def __init__(self, dim: int, n_speakers: int, scale: float, hidden: int = 128):
        super().__init__()
        self.scale = scale
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(hidden, n_speakers))

    def forward(self, fused: torch.Tensor, speakers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """→ (the speaker loss, how many examples it named the speaker of correctly)."""
        logits = self.net(GradientReversal.apply(fused.float(), self.scale))
        return F.cross_entropy(logits, speakers), (logits.argmax(1) == speakers).sum()


class Step(NamedTuple):
    """What one :func:`train_step` did: the batch's loss (the adversary's not counted) and how many
    of its examples the speaker adversary named the speaker of (0 without one)."""
    loss: torch.Tensor
    speakers_named: int = 0


def train_step(model, batch: dict, target: torch.Tensor, optim: torch.optim.Optimizer, cfg: TrainConfig,
               device: torch.device, on_phase: Callable[[str], None] | None = None,
               adversary: SpeakerAdversary | None = None, speakers: torch.Tensor | None = None) -> Step:
    """One optimiser step on ``batch`` (the body of :func:`fit`'s loop): frame masking, mixup,
    autocast on CUDA, the model's ``training_loss`` (+ the ``adversary``'s speaker loss on
    the fused vectors, ``speakers`` the examples' speaker indices), gradient clipping.
    ``model`` may be wrapped in DDP. ``on_phase("forward" | "backward")`` is called as each
    part ends (the benchmark times them)."""
    core = getattr(model, "module", model)          # the model inside DDP
    if cfg.frame_mask > 0:
        batch = mask_frames(batch, cfg.frame_mask)
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    target = target.to(device)
    named = 0
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda"):
        if cfg.mixup > 0:
            batch, y_a, y_b, lam = mixup(batch, target, cfg.mixup)
            logits = model(batch).float()
            loss = (lam * core.training_loss(logits, y_a, cfg.label_smoothing)
                    + (1.0 - lam) * core.training_loss(logits, y_b, cfg.label_smoothing))
        elif adversary is not None:
            logits, emb = model(batch, return_embeddings=True)
            loss = core.training_loss(logits.float(), target, cfg.label_smoothing)
            speaker_loss, named = adversary(emb["fused"], speakers.to(device))
        else:
            loss = core.training_loss(model(batch).float(), target, cfg.label_smoothing)
    if on_phase is not None:
        on_phase("forward")
    optim.zero_grad(set_to_none=True)
    (loss if adversary is None else loss + speaker_loss).backward()
    if on_phase is not None:
        on_phase("backward")
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad]
                                       + (list(adversary.parameters()) if adversary is not None else []),
                                       cfg.grad_clip)
    optim.step()
    return Step(loss, int(named))


def fit(model, stores, train: SegmentSet, val: SegmentSet, labels: list[str], cfg: TrainConfig,
        seed: int, checkpoint: Path | None = None, log: Callable[[str], None] = print,
        batch_fn: Callable | None = None, rank: int = 0, world_size: int = 1,
        max_epochs: int | None = None, progress: bool | None = None,
        progress_every_s: float = 0.0, speakers: np.ndarray | None = None) -> FitResult:
    """Train ``model`` (already built under ``seed``) with early stopping on ``val``.

    With ``world_size > 1`` the model must be wrapped in DistributedDataParallel; every rank
    takes its share of each batch, rank 0 alone writes checkpoints. ``batch_fn(stores, segs,
    idx)`` builds batches (default: cached features). With ``cfg.keep == "last"``, or an empty
    ``val``, every epoch up to ``max_epochs`` (default ``cfg.max_epochs``) runs and the last one
    is kept (validation, if any, is still scored for the history).

    Inside an epoch (rank 0 only), training and validation show a progress bar with ETA when
    :func:`show_bar` (``progress``) says so, else a line through ``log`` at most every
    ``progress_every_s`` seconds (0: none); see :class:`PassProgress`.

    ``speakers``: each ``train`` row's speaker index (0 … S−1), what the
    ``train.speaker_adversarial`` adversary learns to name."""
    device = resolve_device(cfg.device)
    core = getattr(model, "module", model)          # the model inside DDP
    batch_fn = batch_fn or _default_batch
    examples = UnitBatches(train, cfg.unit, batch_fn)
    adversary, example_speakers = None, None
    if cfg.speaker_adversarial > 0:
        adversary, example_speakers = _speaker_adversary(core, stores, examples, speakers, cfg, device)
        if world_size > 1:      # one adversary for all ranks: its gradients are averaged like the model's
            adversary = torch.nn.parallel.DistributedDataParallel(adversary)
    adversary_core = getattr(adversary, "module", adversary)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = make_optimizer(params + (list(adversary.parameters()) if adversary is not None else []), cfg)
    gen = torch.Generator().manual_seed(seed)
    n_epochs = max_epochs or cfg.max_epochs
    steps_per_epoch = n_batches(examples.n_examples, cfg.batch_size)
    val_batches = n_batches(UnitBatches(val, cfg.unit, batch_fn).n_examples, cfg.batch_size)
    # what PassProgress gets: log, bar, every_s (other DDP ranks stay quiet inside epochs)
    shown = (log, show_bar(progress) and rank == 0, progress_every_s if rank == 0 else 0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optim, lambda step: lr_factor(step, steps_per_epoch, cfg))
    ema = weight_average(core, cfg.ema)
    kept = core if ema is None else ema.module    # the weights validation scores and fit() keeps
    state = {"epoch": 0, "best_score": -math.inf, "best_epoch": 0, "bad_epochs": 0, "history": [],
             "best_state": {k: v.detach().clone() for k, v in core.state_dict().items()}}
    if checkpoint is not None and checkpoint.exists():
        ck = torch.load(checkpoint, map_location="cpu", weights_only=True)
        core.load_state_dict(ck["model"])
        optim.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        gen.set_state(ck["generator"])
        torch.set_rng_state(ck["torch_rng"])
        if ema is not None:
            ema.load_state_dict(ck["ema"])
        if adversary is not None:
            adversary_core.load_state_dict(ck["adversary"])
        state = {k: ck[k] for k in ("epoch", "best_score", "best_epoch", "bad_epochs", "history", "best_state")}
        log(f"resumed from {checkpoint} after epoch {state['epoch']}")

    while state["epoch"] < n_epochs:
        if (len(val) and cfg.keep == "best" and state["epoch"] >= cfg.min_epochs
                and state["bad_epochs"] >= cfg.patience):
            break
        epoch = state["epoch"] + 1
        model.train()
        total, count, named = 0.0, 0, 0
        with PassProgress(f"training epoch {epoch}", steps_per_epoch, *shown) as meter:
            for idx in with_prefetch(iterate_batches(examples.n_examples, cfg.batch_size, gen, rank, world_size),
                                     stores, examples.segment_view):
                batch, target, _ = examples(stores, idx)
                loss, step_named = train_step(
                    model, batch, torch.from_numpy(target), optim, cfg, device, adversary=adversary,
                    speakers=None if adversary is None else torch.from_numpy(example_speakers[idx]))
                named += step_named
                scheduler.step()
                if ema is not None:
                    ema.update_parameters(core)
                total += loss.item() * len(idx)
                count += len(idx)
                meter.update(loss=total / count)
        record = {"epoch": epoch, "train_loss": total / max(count, 1), "lr": scheduler.get_last_lr()[0]}
        if adversary is not None:            # how well the speakers could still be told apart
            record["train_speaker_acc"] = named / max(count, 1)
        if len(val):
            with PassProgress(f"validation after epoch {epoch}", val_batches, *shown) as meter:
                logp = predict_segments(kept, stores, val, cfg.batch_size, device, batch_fn, unit=cfg.unit,
                                        on_batch=meter.update)
            val_loss = float(-logp[np.arange(len(val)), val.labels].mean())
            metrics, *_ = utterance_metrics(logp, val, labels)
            score = score_of(metrics, cfg.select_on)
            record.update(val_loss=val_loss, val_wa=metrics["wa"], val_ua=metrics["ua"])
        else:                                   # nothing to select on: the last epoch is kept
            score, val_loss = float(epoch), float("nan")
            metrics = {"wa": float("nan"), "ua": float("nan")}
        if cfg.keep == "last":
            score = float(epoch)
        improved = score > state["best_score"]
        if improved:
            state.update(best_score=score, best_epoch=epoch, bad_epochs=0,
                         best_state={k: v.detach().cpu().clone() for k, v in kept.state_dict().items()})
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        state["history"].append(record)
        scored = (f"  val loss {val_loss:.4f}  val WA {metrics['wa']:.3f} UA {metrics['ua']:.3f}"
                  if len(val) else "")
        log(f"epoch {epoch:3d}  train loss {record['train_loss']:.4f}{scored}{'  *' if improved else ''}")
        if checkpoint is not None and rank == 0:
            _atomic_save({**state, "model": core.state_dict(), "optimizer": optim.state_dict(),
                          "scheduler": scheduler.state_dict(), "generator": gen.get_state(),
                          "torch_rng": torch.get_rng_state(),
                          **({"ema": ema.state_dict()} if ema is not None else {}),
                          **({"adversary": adversary_core.state_dict()} if adversary is not None else {})}, checkpoint)
    core.load_state_dict(state["best_state"])
    return FitResult(state["best_state"], state["best_epoch"], state["epoch"], state["history"])
