"""``camser train``: one model on all of a corpus, saved as a model folder for new audio.

Cross-validation estimates how well a configuration generalises; this trains the model you
then use. It is the same training as one cross-validation fold (:func:`camser.training.cv.
train_split`: same features, normalisers fitted on the training rows, same early stopping),
except that nothing is held out for testing: ``protocol.val_speakers`` speakers are held out
for early stopping, chosen as cross-validation's ``validation: clean`` chooses them, and
everyone else trains. ``protocol.scheme`` and ``protocol.folds`` don't apply; the first of
``train.seeds`` seeds the run.

Like ``camser cv`` it resumes: the checkpoint after every epoch lives in the output folder
until the model is saved (a changed configuration starts over). Under ``torchrun`` the ranks
extract the features in shares and train the model data-parallel (DDP); rank 0 logs and saves.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ..config import ExperimentConfig, load_config
from ..errors import CamserError, ConfigError
from ..reports.results import versions
from .cv import checkpoint_name, data_inputs, fold_normalizer, rank_log, speaker_statistics, train_split
from .experiment import prepare_data
from ..protocols import training_split
from ..runtime import init_distributed, resolve_device, torch_threads, wait_for_all_ranks
from ..inference.model_dir import EXPERIMENT, META, with_resolved_encoder, write_model_dir
from ..models.ensemble import Ensemble



def train_model(cfg: ExperimentConfig, out_dir: str | Path, log: Callable[[str], None] = print,
                progress: bool = True, tracker=None):
    """Train on every utterance of ``cfg``'s corpus (minus the validation speakers) and write
    the model folder ``out_dir`` (see :mod:`camser.inference.model_dir`). Returns the trained
    model as an :class:`~camser.inference.recognizer.EmotionRecognizer`, ready to predict (None
    on the other ranks of a torchrun job).
    ``log`` is also appended to ``out_dir/run.log``; ``tracker``: see :mod:`camser.tracking`."""
    from ..models import saveable_models
    from ..tracking import Tracker

    out = Path(out_dir)
    name = cfg.model.get("name")
    if name not in saveable_models():        # before any training: it could not be saved or loaded
        raise CamserError(f"model.name: {name!r} can't be saved as a model folder yet (no "
                          f"save_pretrained/loader registered; these can: {', '.join(saveable_models())})")
    if cfg.vote.model:
        raise ConfigError(f"vote.model: a model folder holds networks only, and {cfg.vote.model.get('name')!r} "
                          "can't be saved as one; a vote is scored by camser cv (or compare); drop vote: to train")
    if cfg.train.ensemble > 1 and cfg.train.mode == "finetune":
        raise ConfigError("train.ensemble: a model folder can't hold several fine-tuned encoders; "
                          "use train.mode: frozen, or train.ensemble: 1")
    if (out / META).exists():
        raise CamserError(f"{out}: already holds a trained model ({META}); choose another --out "
                          "or delete the folder to train again")
    rank, world = init_distributed(cfg.train.device)
    out.mkdir(parents=True, exist_ok=True)
    log = rank_log(out, rank, "data", log, header=f"camser train into {out}")
    cfg = with_resolved_encoder(cfg)
    if rank == 0:
        _drop_stale_checkpoint(out, cfg, log)
        cfg.save(out / EXPERIMENT)           # the checkpoint's configuration, until the end
    if world > 1:
        wait_for_all_ranks()                 # no rank resumes from a checkpoint rank 0 dropped
    tracker = tracker if tracker is not None and rank == 0 else Tracker()
    with torch_threads(cfg.train.num_threads), tracker.train_run(cfg, out, log) as track:
        recognizer = _train(cfg, out, log, progress, rank, world)
        track.train_done(out)
        return recognizer


def _train(cfg: ExperimentConfig, out: Path, log, progress: bool, rank: int = 0, world: int = 1):
    from ..inference.recognizer import EmotionRecognizer

    started = time.time()

    data = prepare_data(cfg, data_inputs(cfg), progress=progress, rank=rank, world=world, log=log)
    split = training_split(data.utterances, cfg.protocol)
    seed = cfg.train.seeds[0]
    if len(cfg.train.seeds) > 1:
        log(f"train.seeds has {len(cfg.train.seeds)} seeds; a single model uses the first ({seed})")
    held_out = (f"validating on {len(split.val_ids)} of {', '.join(split.val_speakers)}" if split.val_ids
                else "no validation speakers (protocol.validation: none)")
    log(f"training on {len(split.train_ids)} utterances of {len(split.train_speakers)} speakers, "
        f"{held_out}; labels: {', '.join(data.labels)}")
    stats = speaker_statistics(cfg, data, log)
    members, results = [], []
    for k in range(cfg.train.ensemble):          # train.ensemble: N members, seeds seed … seed+N−1
        if cfg.train.ensemble > 1:
            log(f"ensemble member {k + 1} of {cfg.train.ensemble} (seed {seed + k})")
        model, result, _ = train_split(cfg, data, split, seed + k, out / checkpoint_name(k), log, rank, world,
                                       ddp=world > 1, normalizer=fold_normalizer(cfg, stats, split),
                                       progress=None if progress and rank == 0 else False)
        members.append(model)
        results.append(result)
    if rank != 0:                            # the others only helped train it
        return None
    model, result = (members[0] if len(members) == 1 else Ensemble.of(members)), results[0]
    training_stats = None if stats is None else stats.corpus_statistics(split.train_speakers + split.val_speakers)
    meta = save_trained(out, model, cfg, data, split, result, seed, started, training_stats,
                        members=results if len(results) > 1 else None)
    for k in range(cfg.train.ensemble):           # pickles: never part of a finished folder
        (out / checkpoint_name(k)).unlink(missing_ok=True)
    wa, ua = (float("nan") if v is None else v for v in (meta["training"]["val_wa"], meta["training"]["val_ua"]))
    log(f"model saved to {out} (best epoch {result.best_epoch} of {result.epochs}; validation "
        f"WA {wa:.3f} UA {ua:.3f})")
    return EmotionRecognizer(model, data.labels, cfg, device=resolve_device(cfg.train.device), metadata=meta)


def save_trained(out: Path, model, cfg: ExperimentConfig, data, split, result, seed: int,
                 started: float, normalization=None, members: list | None = None) -> dict:
    """Write the model folder of a model trained on ``split`` (its train and validation
    speakers are recorded); → the metadata written to ``camser.json``. ``normalization``
    (a :class:`~camser.features.normalize.FrameStatistics`): the training speakers' feature
    statistics, kept when ``features.normalize`` is on. ``members``: the fit results of an
    ensemble's members (seeds ``seed``, ``seed + 1``, …), recorded in ``training.members``."""
    best = next((h for h in result.history if h["epoch"] == result.best_epoch), {})
    meta = {
        "labels": list(data.labels),
        "inputs": list(model.inputs),
        "model_name": cfg.model.get("name"),
        "train_mode": cfg.train.mode,
        "encoder": _encoder_meta(cfg, data.stores, model),
        "seed": seed,
        "sample_rate": cfg.audio.sample_rate,
        "segment_s": cfg.segments.length_s,
        "normalize": cfg.features.normalize,
        "corpus": {"name": cfg.corpus.name, "n_utterances": len(data.utterances),
                   "train_speakers": split.train_speakers, "val_speakers": split.val_speakers,
                   "n_train": len(split.train_ids), "n_val": len(split.val_ids)},
        "training": {"epochs": result.epochs, "best_epoch": result.best_epoch,
                     "val_wa": best.get("val_wa"), "val_ua": best.get("val_ua"),
                     "wall_s": round(time.time() - started, 1),
                     **({"members": [{"seed": seed + k, "epochs": r.epochs, "best_epoch": r.best_epoch}
                                     for k, r in enumerate(members)]} if members else {})},
        "versions": versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_model_dir(out, model, cfg, meta, result.history, normalization)
    return meta


def _encoder_meta(cfg: ExperimentConfig, stores: dict, model) -> dict | None:
    """The SSL encoder reference and what it gave: lets loading check it's still the same one.
    None when the model reads no SSL frames."""
    if "ssl" in stores:                                   # frozen: frames from the cache
        ssl = stores["ssl"]
        return {**ssl.meta.get("encoder", {}), "model": cfg.features.ssl.model,
                "output_shape": list(ssl.array.shape[1:])}
    inner = getattr(getattr(model, "encoder", None), "ssl", None)
    if inner is not None:                                 # finetune: the encoder is in the model
        return {**inner.describe(), "model": cfg.features.ssl.model, "output_shape": list(inner.output_shape)}
    return None


def _drop_stale_checkpoint(out: Path, cfg: ExperimentConfig, log) -> None:
    """A checkpoint left by an interrupted run resumes only under the same configuration."""
    checkpoints, saved = sorted(out.glob("checkpoint*.pt")), out / EXPERIMENT
    if not checkpoints:
        return
    try:
        same = saved.is_file() and load_config(saved).to_dict() == cfg.to_dict()
    except CamserError:
        same = False
    if not same:
        log(f"{checkpoints[0]}: left by a run with another configuration; starting over")
        for ckpt in checkpoints:
            ckpt.unlink()
