"""Feature extraction for a corpus: one pass over the audio, every requested kind, cached.

``extract_features(utterances, cfg, cache_dir)`` returns one complete
:class:`~camser.features.store.FeatureStore` per kind. Complete stores with the same
configuration hash are reused without touching the audio; an interrupted extraction resumes
from the last flushed batch and ends with exactly the arrays an uninterrupted run gives (SSL
batches are fixed row ranges ``[k·B, (k+1)·B)`` of the segment table, so resuming never
changes which segments are encoded together).

Under ``torchrun`` every rank calls it with its ``rank`` and ``world``: rank 0 creates the
stores, then each rank computes one contiguous share of the rows still to do, into the same
files (one shared cache folder for every node), and rank 0 finalises once all are done. Shares
never split an utterance (per-utterance kinds) or an SSL batch, so the stores are byte for
byte those one process writes; a resumed run shares out what is left, whatever its world size.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import soundfile as sf

from ..audio import load_audio, trim_silence, unreadable_reason
from ..augment import augment_waveform, augmented_length, original_id
from ..config import ExperimentConfig
from ..errors import AudioError, CamserError
from ..progress import PassProgress, show_bar
from ..runtime import wait_for_all_ranks
from ..segments import cut, segment_utterance
from ..types import Segment, Utterance
from .chroma import chroma_segments
from .melspec import melspec_segments
from .mfcc import mfcc_segments, n_frames_for
from .spectrogram import spectrogram_segments
from .ssl import SSLEncoder
from .store import KINDS, FeatureStore, corpus_fingerprint, feature_hash, kind_config, same_settings_elsewhere


# ---------------------------------------------------------------------- audio and segments

def resampled_length(path: str | Path, sr: int) -> int:
    """Samples the file will have at ``sr`` Hz, from its header alone.

    soxr returns ``round_half_up(frames · sr / file_sr)`` samples; computed in integers so the
    table agrees with :func:`camser.audio.load_audio` exactly."""
    try:
        info = sf.info(str(path))
    except Exception as e:
        raise AudioError(path, unreadable_reason(path, e)) from None
    if info.samplerate == sr:
        return int(info.frames)
    return (2 * info.frames * sr + info.samplerate) // (2 * info.samplerate)


def segment_table(utterances: Sequence[Utterance], cfg: ExperimentConfig) -> list[Segment]:
    """Every utterance's segments, in utterance order (the rows of every feature store).

    Lengths come from the file headers (see :func:`resampled_length`), or from the audio when
    ``audio.trim_db`` cuts silence."""
    return _table(utterances, cfg)[0]


def _table(utterances: Sequence[Utterance], cfg: ExperimentConfig) -> tuple[list[Segment], list[int], list[int]]:
    """(segments, per-utterance sample counts, per-utterance first rows + the total)."""
    sr = cfg.audio.sample_rate
    seg_len, hop = cfg.segments.samples(sr)
    table: list[Segment] = []
    lengths, offsets = [], []
    trimmed: dict[str, int] = {}        # path → samples left once silence is cut (copies share it)
    for u in utterances:
        if cfg.audio.trim_db is None:
            n = resampled_length(u.path, sr)
        else:
            if u.path not in trimmed:
                trimmed[u.path] = len(load_corpus_audio(u.path, cfg))
            n = trimmed[u.path]
        n = augmented_length(n, u.augment)
        if n < cfg.audio.min_duration_s * sr:     # fail before any store is written, not mid-way
            raise AudioError(u.path, f"too short ({n / sr:.3f} s < minimum {cfg.audio.min_duration_s:g} s)")
        lengths.append(n)
        offsets.append(len(table))
        table.extend(segment_utterance(u.id, n, seg_len, hop, cfg.segments.last))
    offsets.append(len(table))
    return table, lengths, offsets


def load_corpus_audio(path: str | Path, cfg: ExperimentConfig) -> np.ndarray:
    """A corpus file as every feature kind sees it: mono at ``audio.sample_rate`` Hz, its
    leading and trailing silence cut when ``audio.trim_db`` is set (:func:`camser.audio.trim_silence`)."""
    y = load_audio(path, sr=cfg.audio.sample_rate, min_duration_s=cfg.audio.min_duration_s)
    if cfg.audio.trim_db is None:
        return y
    return trim_silence(y, cfg.audio.sample_rate, cfg.audio.trim_db, cfg.audio.min_duration_s, str(path))[0]


def preemphasis(y: np.ndarray, coef: float) -> np.ndarray:
    """``y[t] − coef·y[t−1]`` (``y[0]`` kept), as the published CA-MSER code does before every
    branch; ``coef <= 0`` returns ``y`` unchanged."""
    if coef <= 0:
        return y
    out = np.empty_like(y)
    out[0] = y[0]
    out[1:] = y[1:] - coef * y[:-1]
    return out


def prepare_waveform(y: np.ndarray, cfg: ExperimentConfig, n_samples: int | None = None) -> np.ndarray:
    """Loaded audio → what the features see: fixed to ``n_samples`` (zero pad/trim; the header
    length, should a decoder disagree with it by a sample) and pre-emphasised."""
    y = np.asarray(y, dtype=np.float32)
    if n_samples is not None and len(y) != n_samples:
        y = np.pad(y, (0, n_samples - len(y))) if len(y) < n_samples else y[:n_samples]
    return preemphasis(y, cfg.audio.pre_emphasis)


# ---------------------------------------------------------------------- per-utterance features

def frames_per_segment(kind: str, cfg: ExperimentConfig) -> int:
    """Frames per segment for the frame kinds computed here (mfcc, spectrogram, chroma,
    melspec): ``segment_samples // hop_length``."""
    seg_len, _ = cfg.segments.samples(cfg.audio.sample_rate)
    return n_frames_for(seg_len, getattr(cfg.features, kind).hop_length)


def compute_features(y: np.ndarray, segments: Sequence[Segment], cfg: ExperimentConfig,
                     kinds: Sequence[str], encoder: SSLEncoder | None = None) -> dict[str, np.ndarray]:
    """Features of one prepared waveform (see :func:`prepare_waveform`) without any cache:
    ``{kind: (n_segments, ...)}``. What inference uses, and the same code extraction runs."""
    sr = cfg.audio.sample_rate
    out: dict[str, np.ndarray] = {}
    for kind in kinds:
        if kind == "mfcc":
            out[kind] = mfcc_segments(y, segments, sr, cfg.features.mfcc, frames_per_segment(kind, cfg))
        elif kind == "spectrogram":
            out[kind] = spectrogram_segments(y, segments, sr, cfg.features.spectrogram,
                                             frames_per_segment(kind, cfg))
        elif kind == "chroma":
            out[kind] = chroma_segments(y, segments, sr, cfg.features.chroma, frames_per_segment(kind, cfg))
        elif kind == "melspec":
            out[kind] = melspec_segments(y, segments, sr, cfg.features.melspec, frames_per_segment(kind, cfg))
        elif kind == "ssl":
            if encoder is None:
                raise ValueError("compute_features: kind 'ssl' needs an SSLEncoder")
            waves = np.stack([cut(y, s) for s in segments])
            bs = max(1, cfg.features.ssl.batch_size)
            out[kind] = np.concatenate([encoder.encode(waves[i:i + bs]) for i in range(0, len(waves), bs)])
        else:
            raise CamserError(f"features.kinds: unknown feature kind '{kind}' (known: {', '.join(KINDS)})")
    return out


# ---------------------------------------------------------------------- corpus extraction

def extract_features(utterances: Sequence[Utterance], cfg: ExperimentConfig, cache_dir: str | Path,
                     kinds: Sequence[str] | None = None, progress: bool | None = True, device: str = "cpu",
                     encoder: SSLEncoder | None = None, rank: int = 0, world: int = 1,
                     log: Callable[[str], None] | None = None, progress_every_s: float = 60.0
                     ) -> dict[str, FeatureStore]:
    """Compute (or find in ``cache_dir``) the features of every segment of ``utterances``.

    ``kinds`` defaults to ``cfg.features.kinds``. Each file is loaded once at
    ``cfg.audio.sample_rate`` Hz, pre-emphasised if ``cfg.audio.pre_emphasis > 0`` and cut into
    ``cfg.segments`` windows; SSL segments are encoded ``cfg.features.ssl.batch_size`` at a time
    on ``device`` (or by ``encoder``, if given). Returns ``{kind: complete FeatureStore}``.
    ``world > 1``: every one of ``world`` processes (torchrun's ranks) calls it with the same
    arguments and its ``rank``, and computes its share (module docstring); rank 0 alone shows
    progress: ``progress`` True draws a bar (None: on a terminal only; False: none); without a
    bar, ``log`` gets a plain progress line at most every ``progress_every_s`` seconds (a run's
    log file gets lines, not a bar's redraws).
    """
    kinds = list(dict.fromkeys(kinds if kinds is not None else cfg.features.kinds))
    for kind in kinds:
        if kind not in KINDS:
            raise CamserError(f"features.kinds: unknown feature kind '{kind}' (known: {', '.join(KINDS)})")
    utterances = list(utterances)
    if not utterances:
        raise CamserError("no utterances to extract features from")
    ids = [u.id for u in utterances]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise CamserError(f"utterance id '{dup}' occurs more than once")
    cache_dir = Path(cache_dir)

    stores: dict[str, FeatureStore] = {}
    todo: dict[str, tuple[Path, str]] = {}
    for kind in kinds:
        h = feature_hash(kind, utterances, cfg)
        path = cache_dir / f"{kind}-{h}"
        if FeatureStore.complete_at(path):
            stores[kind] = FeatureStore.open(path)
        else:
            todo[kind] = (path, h)
    if not todo:
        return stores
    for kind, (path, _) in todo.items():
        others = [] if rank or log is None or path.exists() else same_settings_elsewhere(cache_dir, kind, cfg)
        if others:              # same settings, another list of files: say why it extracts again
            log(f"features: {others[-1]} holds {kind} with these settings for another list of files (files "
                f"added, removed, reordered or of other lengths, or a cache made before files counted by "
                f"their real path); extracting {kind} again into {path.name}")

    table, lengths, offsets = _table(utterances, cfg)
    seg_len, _ = cfg.segments.samples(cfg.audio.sample_rate)
    if "ssl" in todo and encoder is None:
        encoder = SSLEncoder(cfg.features.ssl, seg_len, device=device, sample_rate=cfg.audio.sample_rate)
    if "ssl" in todo and encoder.segment_samples != seg_len:
        raise ValueError(f"encoder built for {encoder.segment_samples}-sample segments, config says {seg_len}")
    writers = _open_writers(todo, table, utterances, cfg, encoder, rank, world)
    owned = _shares(writers, offsets, max(1, cfg.features.ssl.batch_size), rank, world)
    _run(utterances, table, lengths, offsets, cfg, writers, owned, encoder,
         (show_bar(progress) and rank == 0, log if rank == 0 else None, progress_every_s))
    if world > 1:
        wait_for_all_ranks()                 # every share flushed
    if rank == 0:
        stores.update({kind: w.finalize() for kind, w in writers.items()})
    if world > 1:
        wait_for_all_ranks()                 # finalised
        stores.update({kind: FeatureStore.open(w.path) for kind, w in writers.items()})
    return {kind: stores[kind] for kind in kinds}


def _open_writers(todo: dict[str, tuple[Path, str]], table, utterances, cfg, encoder, rank: int,
                  world: int) -> dict[str, FeatureStore]:
    """Rank 0 creates (or resumes) the stores, then the other ranks open them; no rank writes a
    row before every rank has read the done masks (they must agree on the shares)."""
    def create(r):
        return {kind: _create_store(kind, path, h, table, utterances, cfg, encoder, r)
                for kind, (path, h) in todo.items()}
    if world == 1:
        return create(None)
    writers = create(0) if rank == 0 else None
    wait_for_all_ranks()
    writers = writers or create(rank)
    wait_for_all_ranks()
    return writers


def _shares(writers: dict[str, FeatureStore], first_row: list[int], ssl_batch: int, rank: int,
            world: int) -> dict[str, np.ndarray]:
    """``{kind: rows this rank computes}`` (boolean masks). The rows still to do, counted once
    per kind, are cut into ``world`` contiguous shares of about equal work; each unit of work —
    an utterance for the per-utterance kinds, a batch ``[k·B, (k+1)·B)`` for ssl — goes whole to
    the share its first row falls in, so it is computed exactly as one process computes it."""
    n = first_row[-1]
    work = np.cumsum(sum((~w.done).astype(np.int64) for w in writers.values()))
    cuts = np.searchsorted(work, work[-1] * np.arange(1, world) / world, side="right")
    owned = {}
    for kind in writers:
        starts = np.arange(0, n, ssl_batch) if kind == "ssl" else np.asarray(first_row[:-1])
        mine = np.searchsorted(cuts, starts, side="right") == rank
        owned[kind] = np.repeat(mine, np.diff(np.append(starts, n)))
    return owned


def _create_store(kind: str, path: Path, h: str, table: list[Segment], utterances: Sequence[Utterance],
                  cfg: ExperimentConfig, encoder: SSLEncoder | None, rank: int | None) -> FeatureStore:
    if kind == "ssl":
        shape, dtype = encoder.output_shape, np.dtype(cfg.features.ssl.dtype)
        if dtype not in (np.float16, np.float32):
            raise CamserError(f"features.ssl.dtype: expected float16 or float32, got {cfg.features.ssl.dtype}")
        extra = {"encoder": encoder.describe()}
    else:
        n = frames_per_segment(kind, cfg)
        width = {"mfcc": cfg.features.mfcc.n_mfcc, "spectrogram": cfg.features.spectrogram.n_bins,
                 "chroma": cfg.features.chroma.n_chroma, "melspec": cfg.features.melspec.n_mels}[kind]
        shape, dtype, extra = (n, width), np.float32, {}
    extra["corpus"] = {"n_utterances": len(utterances), "n_segments": len(table),
                       "fingerprint": corpus_fingerprint(utterances)}
    extra["sample_rate"] = cfg.audio.sample_rate
    return FeatureStore.create(path, kind, table, shape, dtype, config=kind_config(kind, cfg), hash=h, extra=extra,
                               rank=rank)


def _run(utterances, table, lengths, first_row, cfg, writers: dict[str, FeatureStore],
         owned: dict[str, np.ndarray], encoder, progress: tuple) -> None:
    """The single pass over this rank's ``owned`` rows still to do: load → prepare →
    per-utterance kinds → SSL rows into fixed batches."""
    sr = cfg.audio.sample_rate
    bs = max(1, cfg.features.ssl.batch_size)
    local = [k for k in writers if k != "ssl"]
    ssl = writers.get("ssl")
    pending: list[tuple[int, np.ndarray]] = []    # SSL (row, waveform) of the current batch

    def flush_all():
        for w in writers.values():
            w.flush()

    def encode_pending():
        rows = [row for row, _ in pending]
        values = encoder.encode(np.stack([w for _, w in pending]))
        if ssl.dtype == np.float16 and np.abs(values).max() > np.finfo(np.float16).max:
            raise CamserError(f"features.ssl.dtype: {cfg.features.ssl.model} gives values beyond the "
                              "float16 range; use --set features.ssl.dtype=float32")
        ssl.write(rows, values)
        ssl.mark_done(rows)
        pending.clear()
        flush_all()

    todo = {kind: owned[kind] & ~w.done for kind, w in writers.items()}
    needed = [i for i in range(len(utterances)) if any(t[first_row[i]:first_row[i + 1]].any() for t in todo.values())]
    since_flush = 0
    bar, log, every_s = progress
    meter = PassProgress("features", len(needed), log or (lambda m: None), bar, every_s if log else 0,
                         unit="utterance")
    try:
        for i in needed:
            u, lo, hi = utterances[i], first_row[i], first_row[i + 1]
            segs = table[lo:hi]
            y = load_corpus_audio(u.path, cfg)
            y = augment_waveform(y, sr, u.augment, original_id(u.id))     # originals: unchanged
            y = prepare_waveform(y, cfg, n_samples=lengths[i])
            kinds_now = [k for k in local if todo[k][lo:hi].any()]
            for kind, values in compute_features(y, segs, cfg, kinds_now).items():
                writers[kind].write(slice(lo, hi), values)
                writers[kind].mark_done(slice(lo, hi))
            if ssl is not None:
                for row in range(lo, hi):
                    if not todo["ssl"][row]:
                        continue
                    if pending and pending[0][0] // bs != row // bs:
                        encode_pending()
                    pending.append((row, cut(y, table[row])))
                    if row % bs == bs - 1:
                        encode_pending()
            else:
                since_flush += 1
                if since_flush >= bs:
                    flush_all()
                    since_flush = 0
            meter.update()
        if pending:
            encode_pending()
    finally:
        meter.close()
        # rows marked done have their data written already: persisting them is always safe
        flush_all()
