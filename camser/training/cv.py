"""Cross-validation: folds × seeds, each trained, early-stopped and tested; then one results.json
and a report. Finished folds are never rerun and a killed fold resumes from its checkpoint.

Under ``torchrun`` (WORLD_SIZE > 1) either every fold is trained data-parallel with DDP
(``train.distribute: data``) or the folds are spread over the ranks (``folds``).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..augment import original_id
from ..config import ExperimentConfig, load_config, own_features, voter_config
from ..errors import CamserError, ConfigError
from ..features.batches import (
    AudioBatches,
    NormalizedBatches,
    SegmentSet,
    feature_dims,
    normalized_stores,
    segment_set,
)
from ..fileio import atomic_write
from ..metrics import compute_metrics, per_group_metrics, pool_segments, seed_summary
from ..models import build_model, check_vote, model_kind, model_record, required_inputs
from ..protocols import make_folds
from ..reports.results import build_results, versions, write_json
from ..runtime import init_distributed, rank_and_world, resolve_device, torch_threads
from ..tracking import flatten
from .experiment import PreparedData, load_utterances, prepare_data
from .trainer import _default_batch, fit, predict_segments, score_of, utterance_metrics


def data_inputs(cfg: ExperimentConfig) -> set[str]:
    """The batch keys to extract into the cache for ``cfg``'s model. In finetune mode SSL frames
    come from audio, and MFCC rows index the segments even when the model doesn't read them."""
    inputs = required_inputs(cfg.model)
    for voter in cfg.vote.voters:
        if not own_features(voter):             # else it reads features of its own
            inputs |= required_inputs(voter["model"])
    if cfg.train.mode == "finetune":
        inputs = (inputs - {"ssl"}) | {"mfcc"}
    return inputs


def build_for_data(cfg: ExperimentConfig, data: PreparedData, seed: int):
    """A freshly initialised model for this data, identical for identical seeds, and the batch
    builder it needs (None: cached features). In finetune mode the (pretrained) encoder is
    inside and the batch builder adds raw audio; a frozen model's ``batch_builder`` may add
    keys (``valid``, ``text``). ``sklearn``-kind models come back with None."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    dims = feature_dims(data.stores)
    dims.update({k: tuple(s.array.shape[1:]) for k, s in data.utterance_stores.items()})
    if model_kind(cfg.model) == "sklearn":
        if cfg.train.mode != "frozen":
            raise ConfigError(f"train.mode: {cfg.train.mode} needs a network; model.name "
                              f"{cfg.model['name']} is fitted on cached features (use frozen)")
        model = build_model(cfg.model, len(data.labels), dims, seed=seed)
        if cfg.features.augment.specs and not model.trains_on_copies:
            raise ConfigError(f"features.augment: model.name {cfg.model['name']} is fitted on "
                              "utterance vectors of the original audio; augmented copies train networks "
                              "and the models of pooled frames (linear, mlp) only")
        return model, None
    if cfg.train.mode == "frozen":
        model = build_model(cfg.model, len(data.labels), dims)
        return model, model.batch_builder(data, cfg.audio.sample_rate)
    if cfg.train.mode != "finetune":
        raise ConfigError(f"train.mode: {cfg.train.mode!r} is not one of frozen, finetune")
    from ..features.ssl import FinetuneEncoder, SSLEncoder
    seg_samples, _ = cfg.segments.samples(cfg.audio.sample_rate)
    ssl = SSLEncoder(cfg.features.ssl, seg_samples, device=resolve_device(cfg.train.device),
                     sample_rate=cfg.audio.sample_rate)
    dims["ssl"] = tuple(ssl.output_shape)
    if data.copies:
        raise ConfigError("features.augment: copies are cached features; train.mode finetune reads "
                          "the audio itself")
    model = build_model(cfg.model, len(data.labels), dims, encoder=FinetuneEncoder(ssl))
    return model, AudioBatches(data.utterances, cfg)


def speaker_statistics(cfg: ExperimentConfig, data: PreparedData, log=print):
    """Per-speaker feature statistics of the run's frame stores when ``features.normalize``
    asks for them (a network reads frames), else None. Computed once per run: a fold's corpus
    statistics are sums over its training speakers."""
    from ..features.normalize import SpeakerStatistics
    if cfg.features.normalize == "none" or model_kind(cfg.model) != "torch" or not data.stores:
        return None
    index = next(iter(data.stores.values())).index
    return SpeakerStatistics({k: s.array for k, s in data.stores.items()}, index,
                             data.every_utterance, cfg.audio.sample_rate, progress=log)


def fold_normalizer(cfg: ExperimentConfig, stats, fold):
    """The frame normaliser of ``fold`` (None: features as cached). ``corpus`` statistics come
    from the fold's training and validation speakers only, never a test speaker."""
    if stats is None:
        return None
    return stats.normalizer(cfg.features.normalize, list(fold.train_speakers) + list(fold.val_speakers))


def train_split(cfg: ExperimentConfig, data: PreparedData, fold, seed: int, checkpoint: Path | None,
                log: Callable[[str], None], rank: int = 0, world: int = 1, ddp: bool = False,
                normalizer=None, progress: bool | None = None):
    """Build the model under ``seed``, fit its normalisers on ``fold``'s training rows and train
    it with early stopping on ``fold``'s validation speakers (``fold.test_ids`` is not read).
    ``normalizer`` (see :func:`fold_normalizer`) standardises every batch's frame features.
    ``progress``: the progress bar inside epochs (None: on a terminal only; see
    :func:`camser.progress.show_bar`); without one, ``output.progress_every_s`` paces
    the progress lines written to ``log``.

    Shared by cross-validation and by ``camser train`` (one split over the whole corpus).
    Returns ``(model, fit_result, batch_fn)``: the unwrapped model on the training device with
    the best epoch's weights, and the batch builder it needs (None: cached features)."""
    if model_kind(cfg.model) != "torch":
        raise ConfigError(f"model.name: {cfg.model['name']} is not a network trained by epochs "
                          "(cross-validation fits it with the utterance-level path)")
    label_of = data.label_index()
    # features.augment: the training utterances' copies train too (never validation or test)
    train = segment_set(data.stores, data.with_copies(fold.train_ids), label_of)
    val = segment_set(data.stores, fold.val_ids, label_of)
    model, batch_fn = build_for_data(cfg, data, seed)
    if cfg.train.unit == "utterance" and not model.pools_segments:
        raise ConfigError(f"train.unit: utterance needs a model that pools an utterance's segments "
                          f"(camser); model.name {cfg.model['name']} trains on segments")
    if normalizer is not None:
        batch_fn = NormalizedBatches(batch_fn or _default_batch, normalizer)
    # e.g. spectrogram-image statistics: training split only
    model.fit_normalizers(normalized_stores(data.stores, normalizer), train.rows)
    model.to(resolve_device(cfg.train.device))
    wrapped = torch.nn.parallel.DistributedDataParallel(model) if ddp else model
    result = fit(wrapped, data.stores, train, val, data.labels, cfg.train, seed,
                 checkpoint=checkpoint, log=log, batch_fn=batch_fn,
                 rank=rank if ddp else 0, world_size=world if ddp else 1,
                 progress=progress, progress_every_s=cfg.output.progress_every_s,
                 speakers=speaker_indices(data, train) if cfg.train.speaker_adversarial else None)
    return model, result, batch_fn


def speaker_indices(data: PreparedData, segs: SegmentSet) -> np.ndarray:
    """Each row's speaker as an index into the sorted speakers of ``segs`` (a training set:
    the adversary of ``train.speaker_adversarial`` only ever learns its own speakers)."""
    speaker_of = {u.id: u.speaker for u in data.every_utterance}
    names = [speaker_of[uid] for uid in segs.utterance_ids]
    index = {s: i for i, s in enumerate(sorted(set(names)))}
    return np.array([index[s] for s in names], dtype=np.int64)


@dataclass
class UtteranceInputs:
    """An ``sklearn``-kind model's configuration (the run's, or a vote's second model's), the
    data it reads and its utterance vectors: ``matrix`` rows are ``ids``, the utterances, then
    their augmented copies when ``features.augment`` trains it on them."""

    cfg: ExperimentConfig
    data: PreparedData
    matrix: np.ndarray
    ids: list[str]
    seeded: bool                     # it fits differently per seed
    parts: dict = dataclasses.field(default_factory=dict)       # a vote's: fold parts, per fold (and seed)
    validation: dict = dataclasses.field(default_factory=dict)  # a vote's: validation probabilities

    @property
    def copies(self) -> bool:
        return len(self.ids) > len(self.data.utterances)

    def key(self, fold, seed: int):
        """What its fold parts are stored under (a model the seed leaves alone: the fold only)."""
        return (fold.index, seed) if self.seeded else fold.index


def utterance_inputs(cfg: ExperimentConfig, data: PreparedData) -> UtteranceInputs:
    """The utterance vectors of ``cfg``'s ``sklearn``-kind model, computed once per run."""
    model, _ = build_for_data(cfg, data, 0)       # the matrix does not depend on the seed
    view = data
    if cfg.features.augment.specs and data.augmented:    # the copies get rows of their own
        view = dataclasses.replace(data, utterances=data.every_utterance, augmented=[])
    matrix = model.utterance_matrix(view, cfg.audio.sample_rate)
    return UtteranceInputs(cfg, data, matrix, [u.id for u in view.utterances], model.seeded)


@dataclass
class RunContext:
    """What the folds of one run share, computed once per run."""

    log: Callable[[str], None] = print
    rank: int = 0
    world: int = 1
    ddp: bool = False                # every fold trained data-parallel over the ranks
    stats: object = None             # torch kind, features.normalize: per-speaker statistics
    fitted: UtteranceInputs | None = None    # sklearn kind: the model's vectors
    voters: list[UtteranceInputs] = dataclasses.field(default_factory=list)   # a vote's second models
    progress: bool | None = None     # the progress bar inside epochs (None: on a terminal only)


def run_context(cfg: ExperimentConfig, data: PreparedData, log=print, rank: int = 0, world: int = 1,
                ddp: bool = False, voter_data: list | None = None) -> RunContext:
    """What the folds of a run share. ``voter_data``: per second model of a vote, the data it
    reads when it has settings of its own (``audio``, ``features``; None: the run's)."""
    ctx = RunContext(log, rank, world, ddp)
    if model_kind(cfg.model) == "sklearn":
        ctx.fitted = utterance_inputs(cfg, data)
    voter_data = voter_data or [None] * len(cfg.vote.voters)
    ctx.voters = [utterance_inputs(voter_config(cfg, i), own if own is not None else data)
                  for i, own in enumerate(voter_data)]
    if model_kind(cfg.model) == "torch":
        ctx.stats = speaker_statistics(cfg, data, log if rank == 0 else (lambda _: None))
    return ctx


def _network_fold(cfg: ExperimentConfig, data: PreparedData, fold, seed: int, fold_dir: Path,
                  ctx: RunContext) -> tuple[dict, dict]:
    """The fold runner of ``torch``-kind models: train with early stopping (``train.ensemble``
    members, seeds ``seed``, ``seed + 1``, …; their probabilities averaged), test on the
    segments, pool them. → (the fold entry's training and test fields, the first member's
    embeddings to save)."""
    device = resolve_device(cfg.train.device)
    log = ctx.log
    normalizer = fold_normalizer(cfg, ctx.stats, fold)
    label_of = {u.id: data.labels.index(u.label) for u in data.utterances}
    test = segment_set(data.stores, fold.test_ids, label_of)
    # a vote choosing its weight: the network's probabilities on the validation speakers too
    choosing = cfg.vote.model and len(cfg.vote.weights) > 1
    val = segment_set(data.stores, fold.val_ids, label_of) if choosing else None
    probs, logp, emb, members = 0.0, None, None, []
    originals_only, val_probs = 0.0, 0.0   # test-time augmentation: the scores without the copies too
    for k in range(cfg.train.ensemble):
        if cfg.train.ensemble > 1:
            log(f"ensemble member {k + 1} of {cfg.train.ensemble} (seed {seed + k})")
        model, result, batch_fn = train_split(cfg, data, fold, seed + k, fold_dir / checkpoint_name(k), log,
                                              ctx.rank, ctx.world, ctx.ddp, normalizer=normalizer,
                                              progress=ctx.progress)
        logp, e = predict_segments(model, data.stores, test, cfg.train.batch_size, device,
                                   batch_fn=batch_fn, embeddings=True, unit=cfg.train.unit)
        if cfg.features.augment.test_time:
            originals_only = originals_only + np.exp(logp) / cfg.train.ensemble
            logp = with_test_time_copies(logp, test, model, data, cfg, batch_fn)
        probs = probs + np.exp(logp) / cfg.train.ensemble
        if val is not None:
            val_probs = val_probs + np.exp(_scored(model, val, data, cfg, batch_fn)) / cfg.train.ensemble
        emb = emb if emb is not None else e
        members.append({"seed": seed + k, "epochs": result.epochs, "best_epoch": result.best_epoch,
                        "history": result.history, "layer_weights": learned_layer_weights(model)})
    if cfg.train.ensemble > 1:                     # the members' probabilities averaged
        logp = np.log(np.maximum(probs, 1e-30))
    metrics, utt_ids, y_true, y_pred, utt_logp = utterance_metrics(logp, test, data.labels)
    first = members[0]
    part = {"epochs": first["epochs"], "best_epoch": first["best_epoch"], **metrics, "history": first["history"],
            "predictions": predictions_record(utt_ids, y_true, y_pred, softmax(utt_logp))}
    weights = [m["layer_weights"] for m in members if m["layer_weights"] is not None]
    if weights:
        part["layer_weights"] = np.mean(weights, axis=0).round(5).tolist()
    if cfg.train.ensemble > 1:
        part["members"] = [{k: v for k, v in m.items() if k != "history"} for m in members]
    if cfg.features.augment.test_time:
        plain, ids, *_, plain_logp = utterance_metrics(np.log(np.maximum(originals_only, 1e-30)), test, data.labels)
        part["originals_only"] = {k: plain[k] for k in ("wa", "ua", "f1_macro")}
        part[ORIGINALS_PROBABILITIES] = dict(zip(ids, softmax(plain_logp)))
    if val is not None:
        _, ids, *_, val_logp = utterance_metrics(np.log(np.maximum(val_probs, 1e-30)), val, data.labels)
        part[VALIDATION_PROBABILITIES] = dict(zip(ids, softmax(val_logp)))
    return part, {"labels": test.labels, **emb}


def _scored(model, segs: SegmentSet, data: PreparedData, cfg: ExperimentConfig, batch_fn) -> np.ndarray:
    """``segs``' segment log-probabilities as the test set's are scored (test-time copies too)."""
    logp = predict_segments(model, data.stores, segs, cfg.train.batch_size, resolve_device(cfg.train.device),
                            batch_fn=batch_fn, unit=cfg.train.unit)
    return with_test_time_copies(logp, segs, model, data, cfg, batch_fn) if cfg.features.augment.test_time else logp


# a network fold's part → its caller (a vote blends them too); taken out before result.json
ORIGINALS_PROBABILITIES = "_originals_only_probabilities"
VALIDATION_PROBABILITIES = "_validation_probabilities"


def _voted_fold(cfg: ExperimentConfig, data: PreparedData, fold, seed: int, fold_dir: Path,
                ctx: RunContext) -> tuple[dict, dict]:
    """``vote.model`` (and ``vote.also``): the network's fold, then each second model fitted on
    the same training speakers; the entry scores their probabilities averaged by
    :func:`voted_probabilities` and keeps what each scored alone (``voters``: WA, UA, macro-F1;
    ``originals_only`` blended the same way)."""
    part, emb = _network_fold(cfg, data, fold, seed, fold_dir, ctx)
    others = []
    for inputs in ctx.voters:
        key = inputs.key(fold, seed)
        if key not in inputs.parts:
            inputs.parts[key] = _utterance_part(inputs, fold, seed)
        others.append(inputs.parts[key])
    w = cfg.vote.weights[0]
    if len(cfg.vote.weights) > 1:
        for inputs in ctx.voters:
            if inputs.key(fold, seed) not in inputs.validation:
                inputs.validation[inputs.key(fold, seed)] = _voter_validation(inputs, fold, seed)
        w, on_validation = chosen_weight(cfg, part.pop(VALIDATION_PROBABILITIES),
                                         [v.validation[v.key(fold, seed)] for v in ctx.voters], data)
        part["vote_validation"] = on_validation

    def voted(ids, probabilities, kind="predictions"):
        return voted_probabilities(probabilities, [_by_id(o, ids, kind) for o in others], w)

    scores = ("wa", "ua", "f1_macro")
    voters = {"network": {k: part[k] for k in scores},
              **{name: {k: o[k] for k in scores} for name, o in zip(cfg.vote.voter_names, others)}}
    pred = part["predictions"]
    y_true = np.asarray(pred["true"])
    probs = voted(pred["utterance_ids"], pred["probabilities"])
    part.update(compute_metrics(y_true, probs.argmax(1), data.labels), voters=voters,
                predictions=predictions_record(pred["utterance_ids"], y_true, probs.argmax(1), probs))
    plain = part.pop(ORIGINALS_PROBABILITIES, None)
    if plain is not None:
        ids = pred["utterance_ids"]
        blended = voted(ids, [plain[i] for i in ids], ORIGINALS_PROBABILITIES).argmax(1)
        part["originals_only"] = {k: v for k, v in compute_metrics(y_true, blended, data.labels).items() if k in scores}
    # the first second model's choices as they always were; a further one's under its name
    chosen = {**others[0].get("chosen", {}),
              **{name: o["chosen"] for name, o in zip(cfg.vote.voter_names[1:], others[1:]) if o.get("chosen")},
              **({"vote.weight": w} if len(cfg.vote.weights) > 1 else {})}
    if chosen:
        part["chosen"] = chosen
    return part, emb


def voted_probabilities(network, others: list, weight: float) -> np.ndarray:
    """A vote's class probabilities: the network's weighing ``1 - weight``, each other model's
    ``weight``, normalised (one other model: ``(1 - w)·p + w·q``; 0.5: equal votes)."""
    total = (1 - weight) * np.asarray(network) + weight * sum(np.asarray(o) for o in others)
    return total / ((1 - weight) + weight * len(others))


def _by_id(part: dict, ids, kind: str = "predictions") -> np.ndarray:
    """A second model's probabilities of ``ids`` from its fold part (``kind``: its test
    predictions, or ``ORIGINALS_PROBABILITIES``: the originals alone, without test-time copies)."""
    if kind == "predictions" or kind not in part:
        pred = part["predictions"]
        table = dict(zip(pred["utterance_ids"], np.asarray(pred["probabilities"])))
    else:
        table = part[kind]
    return np.stack([table[i] for i in ids])


def _voter_validation(inputs: UtteranceInputs, fold, seed: int) -> dict:
    """A second model of a vote fitted on the training speakers alone (the validation speakers
    held out, as from the network) → its probabilities of the validation utterances."""
    _, proba = _fitted_utterance_model(inputs, fold, seed, with_validation=False)
    return dict(zip(fold.val_ids, proba(fold.val_ids)))


# a network fold's part → its caller (a vote blends them too); taken out before result.json
ORIGINALS_PROBABILITIES = "_originals_only_probabilities"
VALIDATION_PROBABILITIES = "_validation_probabilities"


def chosen_weight(cfg: ExperimentConfig, network: dict, others: list[dict], data: PreparedData) -> tuple[float, dict]:
    """The candidate ``vote.weight`` whose vote scores best on the validation utterances
    (``train.select_on``, as the epoch choice; ties: the weight nearest 0.5, equal votes)
    → (weight, {weight: score}). ``others``: each second model's validation probabilities."""
    ids = list(network)
    label_of = data.label_index()
    y = np.array([label_of[i] for i in ids])
    p_network = np.stack([network[i] for i in ids])
    p_others = [np.stack([o[i] for i in ids]) for o in others]
    scores = {w: score_of(compute_metrics(y, voted_probabilities(p_network, p_others, w).argmax(1), data.labels),
                          cfg.train.select_on) for w in cfg.vote.weights}
    best = max(scores.values())
    w = min((w for w in cfg.vote.weights if scores[w] >= best - 1e-12), key=lambda w: abs(w - 0.5))
    return w, {f"{k:g}": round(v, 6) for k, v in scores.items()}


def with_test_time_copies(logp: np.ndarray, test: SegmentSet, model, data: PreparedData, cfg: ExperimentConfig,
                          batch_fn) -> np.ndarray:
    """Test-time augmentation: ``test``'s segment log-probabilities → each segment carries its
    utterance's probabilities averaged over the original and its augmented copies (each view
    pooled over its own segments first)."""
    copies = data.copies
    ids = list(dict.fromkeys(test.utterance_ids))
    views = segment_set(data.stores, [c for uid in ids for c in copies.get(uid, ())], data.label_index())
    view_logp = predict_segments(model, data.stores, views, cfg.train.batch_size, resolve_device(cfg.train.device),
                                 batch_fn=batch_fn, unit=cfg.train.unit)
    total: dict[str, np.ndarray] = {}
    count: dict[str, int] = {}
    for utt_ids, lp in (pool_segments(test.utterance_ids, logp), pool_segments(views.utterance_ids, view_logp)):
        for uid, p in zip(utt_ids, softmax(lp)):
            key = original_id(uid)
            total[key] = total.get(key, 0.0) + p
            count[key] = count.get(key, 0) + 1
    mean = {k: np.log(np.maximum(v / count[k], 1e-30)) for k, v in total.items()}
    return np.stack([mean[uid] for uid in test.utterance_ids])


def softmax(logp: np.ndarray) -> np.ndarray:
    """Pooled log-probabilities → probabilities (what ``predict`` reports for an utterance)."""
    z = np.exp(logp - logp.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def predictions_record(utterance_ids, y_true, y_pred, probabilities) -> dict:
    """A fold entry's ``predictions``: per test utterance its id, true and predicted class index
    and every class probability (rounded to 6 decimals), in the same order."""
    return {"utterance_ids": list(utterance_ids), "true": np.asarray(y_true).tolist(),
            "pred": np.asarray(y_pred).tolist(), "probabilities": np.round(probabilities, 6).tolist()}


def write_predictions_csv(path: Path, entries: list[dict], labels: list[str]) -> None:
    """``predictions.csv``: one row per test utterance of every fold × seed (utterance id, fold,
    seed, true and predicted label, one probability column per class; empty for folds finished
    by a camser that did not keep probabilities)."""
    with atomic_write(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["utterance_id", "fold", "seed", "true", "predicted", *(f"p_{label}" for label in labels)])
        for e in entries:
            pred = e["predictions"]
            probs = pred.get("probabilities") or [[""] * len(labels)] * len(pred["utterance_ids"])
            for uid, t, p, row in zip(pred["utterance_ids"], pred["true"], pred["pred"], probs):
                w.writerow([uid, e["fold"], e["seed"], labels[t], labels[p], *row])


def speaker_metrics(entry: dict, utterances, labels: list[str]) -> dict:
    """WA/UA of each test speaker of a fold entry, from its saved predictions."""
    speaker_of = {u.id: u.speaker for u in utterances}
    pred = entry["predictions"]
    return per_group_metrics([speaker_of[i] for i in pred["utterance_ids"]], pred["true"], pred["pred"], labels)


def checkpoint_name(member: int) -> str:
    """The checkpoint file of ensemble member ``member`` (0: the only one without an ensemble)."""
    return "checkpoint.pt" if member == 0 else f"checkpoint_m{member}.pt"


def learned_layer_weights(model) -> list[float] | None:
    """The softmax SSL layer weights a model learned (None: it has none)."""
    from ..models.blocks import LayerWeights
    for module in model.modules():
        if isinstance(module, LayerWeights) and module.weights is not None:
            return torch.softmax(module.weights.detach().float().cpu(), 0).tolist()
    return None


def _utterance_fold(cfg: ExperimentConfig, data: PreparedData, fold, seed: int, fold_dir: Path,
                    ctx: RunContext) -> tuple[dict, None]:
    """The fold runner of ``sklearn``-kind models (:func:`_utterance_part`)."""
    return _utterance_part(ctx.fitted, fold, seed), None


def _utterance_part(inputs: UtteranceInputs, fold, seed: int) -> dict:
    """``fit`` on the training utterances, ``predict_proba`` the test utterances (argmax). The
    validation speakers are left out of the fit, as for the networks (a model that picks its
    own hyper-parameters by inner speaker folds, ``fits_validation_speakers``, gets them too);
    their scores are recorded (``val_wa``, ``val_ua``). No epochs."""
    data = inputs.data
    model, proba = _fitted_utterance_model(inputs, fold, seed, with_validation=True)
    label_of = data.label_index()
    y_true = np.array([label_of[i] for i in fold.test_ids], dtype=np.int64)
    probabilities = proba(fold.test_ids)
    y_pred = probabilities.argmax(1)
    part = {"epochs": None, "best_epoch": None, **compute_metrics(y_true, y_pred, data.labels)}
    if inputs.copies and inputs.cfg.features.augment.test_time:    # what the originals alone score
        plain = proba(fold.test_ids, test_time=False)
        part["originals_only"] = {k: v for k, v in compute_metrics(y_true, plain.argmax(1), data.labels).items()
                                  if k in ("wa", "ua", "f1_macro")}
        part[ORIGINALS_PROBABILITIES] = dict(zip(fold.test_ids, plain))
    if fold.val_ids:
        y_val = np.array([label_of[i] for i in fold.val_ids], dtype=np.int64)
        val = compute_metrics(y_val, proba(fold.val_ids).argmax(1), data.labels)
        part.update(val_wa=val["wa"], val_ua=val["ua"])
    part.update(history=[], predictions=predictions_record(list(fold.test_ids), y_true, y_pred, probabilities))
    if model.chosen is not None:      # hyper-parameters it picked on inner folds
        part["chosen"] = model.chosen
    return part


def _fitted_utterance_model(inputs: UtteranceInputs, fold, seed: int, with_validation: bool):
    """An ``sklearn``-kind model fitted on ``fold``'s training utterances (and its validation
    ones when ``with_validation`` and the model fits them; and their augmented copies when
    ``inputs`` has them) → (model, ``proba``: utterance ids → class probabilities, averaged
    over each utterance's copies with ``features.augment.test_time``). ``features.normalize``
    standardises the vectors first, with statistics of original audio only (``corpus``: of
    the fitted utterances)."""
    from ..features.normalize import normalize_vectors
    cfg, data = inputs.cfg, inputs.data
    model, _ = build_for_data(cfg, data, seed)
    row = {uid: i for i, uid in enumerate(inputs.ids)}
    label_of = data.label_index()
    speaker_of = {u.id: u.speaker for u in data.every_utterance}
    speakers = np.array([speaker_of[i] for i in inputs.ids])
    fits_validation = with_validation and model.fits_validation_speakers
    fit_ids = list(fold.train_ids) + (list(fold.val_ids) if fits_validation else [])
    X = normalize_vectors(inputs.matrix, speakers, cfg.features.normalize, fit_rows=[row[i] for i in fit_ids],
                          counted=np.array([original_id(i) == i for i in inputs.ids]))
    if inputs.copies:                 # features.augment: the copies of the fitted utterances fit too
        fit_ids = data.with_copies(fit_ids)
    fit_rows = [row[i] for i in fit_ids]
    model.fit(X[fit_rows], np.array([label_of[i] for i in fit_ids], dtype=np.int64), groups=speakers[fit_rows])
    copies = data.copies if inputs.copies and cfg.features.augment.test_time else {}

    def proba(ids, test_time: bool = True) -> np.ndarray:
        views = [[uid] + (list(copies.get(uid, ())) if test_time else []) for uid in ids]
        flat = [v for vs in views for v in vs]
        p = model.predict_proba(X[[row[i] for i in flat]])
        ends = np.cumsum([len(vs) for vs in views])
        return np.stack([p[e - len(vs):e].mean(0) for vs, e in zip(views, ends)])

    return model, proba


FOLD_RUNNERS = {"torch": _network_fold, "sklearn": _utterance_fold}


def run_fold(cfg: ExperimentConfig, data: PreparedData, fold, seed: int, fold_dir: Path,
             ctx: RunContext) -> dict:
    """Train on ``fold``'s training speakers (networks: pick the epoch on its validation set),
    test; ``result.json`` is written last and marks the fold as done."""
    fold_dir.mkdir(parents=True, exist_ok=True)
    runner = _voted_fold if cfg.vote.model else FOLD_RUNNERS[model_kind(cfg.model)]
    part, emb = runner(cfg, data, fold, seed, fold_dir, ctx)
    part.pop(ORIGINALS_PROBABILITIES, None)
    part.pop(VALIDATION_PROBABILITIES, None)
    entry = {"fold": fold.index, "seed": seed, "test_speakers": fold.test_speakers,
             "val_speakers": fold.val_speakers, **part}
    entry["per_speaker"] = speaker_metrics(entry, data.utterances, data.labels)
    if ctx.rank == 0 or not ctx.ddp:
        if emb is not None:
            np.savez_compressed(fold_dir / "embeddings.npz", **emb)
        write_json(fold_dir / "result.json", entry)    # written last: marks the fold as done
        for k in range(cfg.train.ensemble):
            (fold_dir / checkpoint_name(k)).unlink(missing_ok=True)
    return entry


def run_cv(cfg: ExperimentConfig, out_dir: str | Path, log: Callable[[str], None] = print,
           progress: bool | None = None, tracker=None) -> dict:
    """Run the configured protocol; write results.json, the report and the resolved config.
    What ``log`` receives is also appended to ``out_dir/run.log`` (progress bars are not);
    ``progress``: False hides the feature-extraction bar and the bar inside epochs, True forces
    both, None shows the extraction bar and the epoch bar on a terminal only (elsewhere
    ``output.progress_every_s`` paces progress lines in the log); ``tracker`` (a
    :class:`camser.tracking.Tracker`, e.g. MLflow) gets the params, curves, metrics and artefacts."""
    from ..tracking import Tracker
    out = Path(out_dir)
    created = not out.exists()
    check_same_experiment(cfg, out)          # before a tracked run is opened (and marked failed)
    out.mkdir(parents=True, exist_ok=True)
    rank, _ = rank_and_world()
    log = rank_log(out, rank, cfg.train.distribute, log, header=f"camser cv into {out}")
    tracker = tracker if tracker is not None and rank == 0 else Tracker()
    try:
        with torch_threads(cfg.train.num_threads), tracker.cv_run(cfg, out, log=log) as track:
            results = _run_cv(cfg, out, log, progress, on_fold=track.log_fold)
            if results:
                track.cv_done(out, results)
            return results
    except CamserError:
        # a user mistake found before any fold ran (no corpus, an unusable encoder): leave no
        # folder behind that holds only config.yaml and a log
        if created and rank == 0 and not (out / "folds").exists():
            shutil.rmtree(out, ignore_errors=True)
        raise


def rank_log(out: Path, rank: int, distribute: str, log: Callable[[str], None], header: str):
    """What a rank logs to: rank 0 prints and appends to ``run.log``; under torchrun the others
    print nothing — with ``distribute: folds`` they keep their own folds' lines in
    ``run.rank<k>.log`` (a file of their own: appends from several machines to one file of a
    network file system may overwrite each other)."""
    from ..tracking import run_log
    if rank == 0:
        return run_log(out / "run.log", log, header=header)
    if distribute == "folds":
        return run_log(out / f"run.rank{rank}.log", lambda _: None, header=header)
    return lambda _: None


# Settings that may change between a run and its resumption: they choose which folds run, where
# and how fast, or how the report looks, not what a finished fold's numbers are.
RESUMABLE_CHANGES = ("name", "features.cache_dir", "train.num_threads", "train.device", "train.seeds",
                     "protocol.folds", "output", "model.n_jobs", "vote.model.n_jobs")


def _comparable(cfg: ExperimentConfig) -> dict:
    """The flattened configuration, the corpus folder as the files it names and the model as
    the model sees it (spelled another way — a default written out, a preset's value repeated,
    an ablation row named or spelled as its switches — it is the same experiment)."""
    return flatten({**cfg.to_dict(), "corpus": cfg.corpus.resolved(), "model": _resolved_model(cfg.model)})


def _resolved_model(section: dict) -> dict:
    try:
        resolved = model_record(section).checked_config(dict(section))
    except ConfigError:                # judged on the section as written
        return dict(section)
    if not dataclasses.is_dataclass(resolved):
        return dict(section)
    return {"name": section.get("name"), **dataclasses.asdict(resolved)}


def check_same_experiment(cfg: ExperimentConfig, out: Path) -> None:
    """Refuse to add folds to a run folder whose finished folds came from another configuration
    (their numbers would be mixed into one table)."""
    saved = out / "config.yaml"
    if not saved.is_file() or not any(out.glob("folds/*/result.json")):
        return
    try:
        old = _comparable(load_config(saved))
    except ConfigError:                # unreadable (another version's fields): treated as all changed
        old = {}
    new = _comparable(cfg)
    changed = sorted(k for k in set(old) | set(new) if old.get(k, "<unset>") != new.get(k, "<unset>")
                     and not any(k == r or k.startswith(r + ".") for r in RESUMABLE_CHANGES))
    if changed:
        shown = ", ".join(f"{k} ({old.get(k, '<unset>')!r} → {new.get(k, '<unset>')!r})" for k in changed[:4])
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        raise ConfigError(f"{out}: holds finished folds of another configuration ({shown}{more}); "
                          "use another --out, or delete the folder to start over")


def _run_cv(cfg: ExperimentConfig, out: Path, log, progress: bool | None, on_fold=None) -> dict:
    rank, world = init_distributed(cfg.train.device)
    clock = RunClock(out / RunClock.FILE)
    check_same_experiment(cfg, out)
    check_vote(cfg.model, [v["model"] for v in cfg.vote.voters])
    if rank == 0:
        log = clock.ticking(log)        # every line (an epoch, a fold) also records the time so far
        cfg.save(out / "config.yaml")
    utterances, labels = load_utterances(cfg)
    folds = make_folds(utterances, cfg.protocol, folds_csv=cfg.corpus.folds_csv)
    done = [out / "folds" / f"fold{f.index:02d}_seed{seed}" / "result.json" for f in folds for seed in cfg.train.seeds]
    if all(p.exists() for p in done):       # nothing to train: no features needed
        log(f"all {len(done)} fold × seed runs are finished already")
        if rank != 0:
            return {}
        return finalize(cfg, out, folds, labels)        # keeps the wall time the run took
    data, voter_data = prepare_run_data(cfg, progress=progress, rank=rank, world=world, log=log)
    ddp = world > 1 and cfg.train.distribute == "data"
    ctx = run_context(cfg, data, log, rank, world, ddp, voter_data)
    ctx.progress = progress if rank == 0 else False      # one bar on a terminal, not one per rank
    jobs = [(fold, r, seed) for fold in folds for r, seed in enumerate(cfg.train.seeds)]

    for j, (fold, repeat, seed) in enumerate(jobs):
        fold_dir = out / "folds" / f"fold{fold.index:02d}_seed{seed}"
        if (fold_dir / "result.json").exists():
            log(f"fold {fold.index} seed {seed}: done already, skipped")
            continue
        if world > 1 and not ddp and j % world != rank:
            continue
        log(f"fold {fold.index} ({fold.name}) seed {seed}: train {len(fold.train_ids)}, "
            f"val {len(fold.val_ids)}, test {len(fold.test_ids)} utterances")
        if fold.warning:
            log(f"warning: {fold.warning}")
        entry = run_fold(cfg, data, fold, seed, fold_dir, ctx)
        epochs = f" (best epoch {entry['best_epoch']} of {entry['epochs']})" if entry.get("epochs") else ""
        log(f"fold {fold.index} seed {seed}: WA {entry['wa']:.3f} UA {entry['ua']:.3f}{epochs}")
        if on_fold is not None and rank == 0:
            on_fold(entry)
    if world > 1:
        torch.distributed.barrier()
    if rank != 0:
        return {}
    return finalize(cfg, out, folds, data.labels, wall_s=clock.total())


def prepare_run_data(cfg: ExperimentConfig, progress: bool | None = True, rank: int = 0, world: int = 1,
                     log=None) -> tuple[PreparedData, list]:
    """The features a run reads, extracted or reused: the model's, and per second model of a
    vote those it reads when it has settings of its own (``audio``, ``features``; else None)."""
    data = prepare_data(cfg, data_inputs(cfg), progress=progress, rank=rank, world=world, log=log)
    voter_data = []
    for i, voter in enumerate(cfg.vote.voters):
        own = None
        if own_features(voter):
            own = prepare_data(voter_config(cfg, i), required_inputs(voter["model"]), progress=progress,
                               rank=rank, world=world, log=log)
            check_same_utterances(data, own)
        voter_data.append(own)
    return data, voter_data


def check_same_utterances(data: PreparedData, voter_data: PreparedData) -> None:
    """A vote scores both models on the same utterances: its second model's data (own audio
    settings) must hold every one the network's does."""
    missing = sorted({u.id for u in data.utterances} - {u.id for u in voter_data.utterances})
    if missing:
        raise ConfigError(f"vote.audio: with these settings the second model has no features for "
                          f"{len(missing)} utterance(s) the network reads (e.g. {missing[0]})")


class RunClock:
    """The wall time a run has taken over all its sessions: a resumed run adds its own time to
    what the earlier sessions recorded after each of their finished folds (``FILE`` in the run
    folder), so ``results.json``'s ``wall_s`` is the whole run's, not the last session's."""

    FILE = "wall_s.json"

    def __init__(self, path: Path):
        self.path, self.started = path, time.time()
        try:
            self.before = float(json.loads(path.read_text())["wall_s"]) if path.is_file() else 0.0
        except (ValueError, KeyError, TypeError):
            self.before = 0.0

    def total(self) -> float:
        return self.before + time.time() - self.started

    def save(self) -> None:
        write_json(self.path, {"wall_s": round(self.total(), 1)})

    def ticking(self, log: Callable[[str], None]) -> Callable[[str], None]:
        def log_and_save(message: str) -> None:
            log(message)
            self.save()
        return log_and_save


def normalization_record(mode: str) -> dict:
    """What results.json says of ``features.normalize``: the mode, whether the figures saw the
    test speakers' unlabelled audio, and the sentence reports print."""
    from ..features.normalize import describe, is_transductive
    return {"mode": mode, "transductive": is_transductive(mode), "description": describe(mode)}


def finalize(cfg: ExperimentConfig, out: Path, folds, labels: list[str], wall_s: float | None = None) -> dict:
    """Collect the fold results into results.json and write the report."""
    from ..reports.run_report import write_run_report

    entries, pooled_true, pooled_pred = [], [], []
    utterances = None
    for fold in folds:
        for repeat, seed in enumerate(cfg.train.seeds):
            e = json.loads((out / "folds" / f"fold{fold.index:02d}_seed{seed}" / "result.json").read_text())
            e["repeat"] = repeat
            if "per_speaker" not in e:              # a fold finished by an older camser
                utterances = utterances or load_utterances(cfg)[0]
                e["per_speaker"] = speaker_metrics(e, utterances, labels)
            pooled_true += e["predictions"]["true"]
            pooled_pred += e["predictions"]["pred"]
            entries.append(e)
    protocol = {"scheme": cfg.protocol.scheme, "validation": cfg.protocol.validation,
                "folds": [f.to_dict() for f in folds]}
    results = build_results(cfg.to_dict(), versions(), protocol, labels,
                            [{k: v for k, v in e.items() if k not in ("history", "predictions")} for e in entries],
                            np.array(pooled_true), np.array(pooled_pred))
    results["seeds"] = list(cfg.train.seeds)
    results["seed_summary"] = seed_summary(entries)
    results["normalize"] = normalization_record(cfg.features.normalize)
    plain = [e["originals_only"] for e in entries if "originals_only" in e]
    if plain:                        # test-time augmentation: what the originals alone scored
        results["summary"]["originals_only"] = {f"{k}_{stat}": float(fn([p[k] for p in plain]))
                                                for k in ("wa", "ua") for stat, fn in (("mean", np.mean),
                                                                                        ("std", np.std))}
    voters = [e["voters"] for e in entries if "voters" in e]
    if voters:                       # a vote: what each of its models scored alone
        results["summary"]["voters"] = {name: {f"{k}_{stat}": float(fn([v[name][k] for v in voters]))
                                               for k in ("wa", "ua") for stat, fn in (("mean", np.mean), ("std", np.std))}
                                        for name in voters[0]}
    weights = [e["chosen"]["vote.weight"] for e in entries if "vote.weight" in (e.get("chosen") or {})]
    if weights:                      # chosen per fold and seed on the validation speakers
        results["summary"]["vote_weight_chosen"] = {f"{w:g}": weights.count(w) for w in sorted(set(weights))}
    previous, clock = out / "results.json", out / RunClock.FILE
    if wall_s is None and previous.is_file():
        wall_s = json.loads(previous.read_text()).get("wall_s")
    if wall_s is None and clock.is_file():     # folds finished elsewhere (e.g. copied), never summarised
        wall_s = RunClock(clock).before
    if wall_s is not None:
        results["wall_s"] = round(wall_s, 1)
    write_predictions_csv(out / "predictions.csv", entries, labels)
    write_json(out / "results.json", results)
    write_run_report(out, results, entries)
    return results
