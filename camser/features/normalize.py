"""Feature normalisation by groups of recordings (``features.normalize``).

* ``none``: features as cached (a model may still fit its own scalers on the training split).
* ``corpus``: one mean/std per feature dimension, fitted on the training speakers' audio only,
  applied to every recording (strict: nothing of a test speaker enters it).
* ``speaker``: each speaker standardised by the mean/std of its own recordings, test speakers
  included. No label is read, but the test speakers' audio is: a **transductive** figure, which
  every report labels as such.

Frame features (MFCC ``(T, D)``, spectrogram ``(T, F)``, SSL ``(T, D)`` or stacked
``(L, T, D)``) get statistics per feature dimension (and per layer), over the real frames of
all segments of a group; padding frames stay zero. Utterance vectors (a baseline's pooled
features) are standardised per group over its utterances.

Statistics are sums per speaker (:class:`GroupSums`, one pass over a store), so the corpus
statistics of any set of training speakers are the sum of theirs: cheap per fold.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import NORMALIZE_MODES
from ..errors import ConfigError

EPS = 1e-5


def check_mode(mode: str) -> str:
    if mode not in NORMALIZE_MODES:
        raise ConfigError(f"features.normalize: {mode!r} is not one of {', '.join(NORMALIZE_MODES)}")
    return mode


def is_transductive(mode: str) -> bool:
    """Whether figures made with ``mode`` used the test speakers' (unlabelled) audio."""
    return mode == "speaker"


def describe(mode: str) -> str:
    """How a report names the normalisation of its figures."""
    return {"none": "none (strict)",
            "corpus": "corpus: statistics of the training speakers (strict)",
            "speaker": "speaker: each speaker's own statistics, test speakers' unlabelled audio "
                       "included (transductive)"}[check_mode(mode)]


def frame_valid_mask(valid: np.ndarray, n_frames: int) -> np.ndarray:
    """``(n, n_frames)`` bool: the first ``ceil(valid · n_frames)`` frames (at least one) are real,
    as :func:`camser.models.blocks.frame_mask` reads them."""
    n = np.clip(np.ceil(np.asarray(valid, dtype=np.float64) * n_frames), 1, n_frames)
    return np.arange(n_frames)[None, :] < n[:, None]


@dataclass
class GroupSums:
    """Per group: frame count, sum and sum of squares of every feature dimension (float64).
    ``s1``/``s2``: ``(G, *stat_shape)``; ``count``: ``(G,)``."""

    count: np.ndarray
    s1: np.ndarray
    s2: np.ndarray

    def stats(self, groups=None) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of the union of ``groups`` (indices; None = all) → ``stat_shape`` each."""
        g = slice(None) if groups is None else np.asarray(list(groups), dtype=np.int64)
        n = max(float(self.count[g].sum()), 1.0)
        mean = self.s1[g].sum(0) / n
        var = np.maximum(self.s2[g].sum(0) / n - mean * mean, 0.0)
        return mean.astype(np.float32), np.sqrt(var + EPS).astype(np.float32)

    def per_group(self) -> tuple[np.ndarray, np.ndarray]:
        """Each group's own mean and std → ``(G, *stat_shape)`` each."""
        n = np.maximum(self.count, 1.0).reshape(-1, *([1] * (self.s1.ndim - 1)))
        mean = self.s1 / n
        var = np.maximum(self.s2 / n - mean * mean, 0.0)
        return mean.astype(np.float32), np.sqrt(var + EPS).astype(np.float32)


def frame_group_sums(array: np.ndarray, group_of_row: np.ndarray, n_groups: int,
                     valid: np.ndarray | None = None, rows: np.ndarray | None = None,
                     chunk_elements: int = 1 << 24) -> GroupSums:
    """:class:`GroupSums` of a frame store's ``array`` (``(n, T, D)`` or ``(n, L, T, D)``; the
    statistics have shape ``(D,)`` or ``(L, D)``) over ``rows`` (None = all), each row counted
    in group ``group_of_row[row]``, real frames only (``valid``: per row, the real fraction)."""
    rows = np.arange(len(array)) if rows is None else np.sort(np.asarray(rows, dtype=np.int64))
    shape = array.shape[1:]
    t_axis = len(shape) - 2                              # frames are the second-last axis
    stat_shape = shape[:t_axis] + shape[t_axis + 1:]
    n_frames = shape[t_axis]
    count = np.zeros(n_groups)
    s1 = np.zeros((n_groups, *stat_shape))
    s2 = np.zeros((n_groups, *stat_shape))
    step = max(1, chunk_elements // int(np.prod(shape)))
    for i in range(0, len(rows), step):
        r = rows[i:i + step]
        a = np.asarray(array[r], dtype=np.float32)
        m = (frame_valid_mask(valid[r], n_frames) if valid is not None
             else np.ones((len(r), n_frames), dtype=bool)).astype(np.float32)
        m = m.reshape(len(r), *([1] * t_axis), n_frames, 1)          # broadcast over L and D
        am = a * m
        g = group_of_row[r]
        np.add.at(s1, g, am.sum(axis=1 + t_axis))
        np.add.at(s2, g, (am * a).sum(axis=1 + t_axis))
        np.add.at(count, g, m.reshape(len(r), -1).sum(1))
    return GroupSums(count, s1, s2)


def standardize_frames(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                       valid: torch.Tensor | None) -> torch.Tensor:
    """Frames ``x`` ``(B, [L,] T, D)`` standardised by ``mean``/``std`` ``(B or 1, [L,] D)``;
    frames past each row's real fraction ``valid`` ``(B,)`` are set to zero (padding stays
    recognisable as padding)."""
    t_axis = x.dim() - 2
    out = (x - mean.unsqueeze(t_axis)) / std.unsqueeze(t_axis)
    if valid is None:
        return out
    keep = torch.from_numpy(frame_valid_mask(np.asarray(valid, dtype=np.float32), x.shape[t_axis]))
    return out * keep.reshape(x.shape[0], *([1] * (t_axis - 1)), x.shape[t_axis], 1).to(x.dtype)


class FrameNormalizer:
    """Standardises the frame features of a batch by each row's group statistics.

    ``mean[key]``/``std[key]``: ``(G, *stat_shape)`` per batch key; ``group_of_row``: the group
    of every segment-table row; ``valid``: per row, the real fraction."""

    def __init__(self, mean: dict, std: dict, group_of_row: np.ndarray, valid: np.ndarray):
        self.mean = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in mean.items()}
        self.std = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in std.items()}
        self.group_of_row = np.asarray(group_of_row, dtype=np.int64)
        self.valid = np.asarray(valid, dtype=np.float32)

    def __call__(self, batch: dict, rows: np.ndarray) -> dict:
        g = torch.from_numpy(self.group_of_row[rows])
        for key in self.mean:
            if key in batch:
                batch[key] = standardize_frames(batch[key], self.mean[key][g], self.std[key][g], self.valid[rows])
        return batch


class FrameStatistics:
    """One group's statistics (the training corpus's, or a folder of new recordings') for
    new audio: ``apply(features)`` standardises a window's numpy feature arrays (``valid``
    marks their padding); :meth:`accumulate` + :meth:`finish` build them from windows."""

    def __init__(self, mean: dict | None = None, std: dict | None = None, source: str = ""):
        self.mean = {k: np.asarray(v, dtype=np.float32) for k, v in (mean or {}).items()}
        self.std = {k: np.asarray(v, dtype=np.float32) for k, v in (std or {}).items()}
        self.source = source
        self._sums: dict[str, GroupSums] = {}

    def accumulate(self, features: dict) -> None:
        valid = features.get("valid")
        for key, x in features.items():
            if key == "valid" or np.asarray(x).ndim < 3:
                continue
            s = frame_group_sums(np.asarray(x), np.zeros(len(x), dtype=np.int64), 1, valid)
            old = self._sums.get(key)
            self._sums[key] = s if old is None else GroupSums(old.count + s.count, old.s1 + s.s1, old.s2 + s.s2)

    def finish(self) -> "FrameStatistics":
        if not self._sums:
            raise ValueError("no frames to compute statistics from")
        for key, s in self._sums.items():
            self.mean[key], self.std[key] = s.stats()
        self._sums = {}
        return self

    def apply(self, features: dict) -> dict:
        out = dict(features)
        valid = features.get("valid")
        for key in self.mean:
            if key in out:
                x = torch.from_numpy(np.ascontiguousarray(out[key], dtype=np.float32))
                out[key] = standardize_frames(x, torch.from_numpy(self.mean[key])[None],
                                              torch.from_numpy(self.std[key])[None], valid).numpy()
        return out

    def tensors(self) -> dict[str, torch.Tensor]:
        """For a safetensors file: ``{key}.mean`` / ``{key}.std``."""
        out = {}
        for key in self.mean:
            out[f"{key}.mean"] = torch.from_numpy(self.mean[key])
            out[f"{key}.std"] = torch.from_numpy(self.std[key])
        return out

    @classmethod
    def from_tensors(cls, tensors: dict, source: str = "") -> "FrameStatistics":
        from .batches import current_name            # folders of older camsers: "spec"
        keys = {name.rsplit(".", 1)[0] for name in tensors}
        return cls({current_name(k): tensors[f"{k}.mean"].numpy() for k in keys},
                   {current_name(k): tensors[f"{k}.std"].numpy() for k in keys}, source)


def normalize_vectors(X: np.ndarray, groups: np.ndarray, mode: str,
                      fit_rows: np.ndarray | None = None, counted: np.ndarray | None = None) -> np.ndarray:
    """Utterance vectors ``(n, D)`` standardised by ``mode``: ``speaker`` → each group (speaker)
    by its own rows; ``corpus`` → all rows by ``fit_rows`` (the training utterances);
    ``none`` → unchanged. ``counted`` (a boolean mask; None: all): the rows the ``speaker``
    statistics come from (original audio, not its augmented copies)."""
    check_mode(mode)
    X = np.asarray(X, dtype=np.float64)
    if mode == "none":
        return X
    out = np.empty_like(X)
    if mode == "corpus":
        ref = X if fit_rows is None else X[np.asarray(fit_rows)]
        return (X - ref.mean(0)) / np.sqrt(ref.var(0) + EPS)
    groups = np.asarray(groups)
    counted = np.ones(len(X), bool) if counted is None else np.asarray(counted, bool)
    for g in np.unique(groups):
        m = groups == g
        ref = X[m & counted]
        out[m] = (X[m] - ref.mean(0)) / np.sqrt(ref.var(0) + EPS)
    return out


class SpeakerStatistics:
    """Per-speaker :class:`GroupSums` of a run's frame stores, computed once (one pass per
    store); :meth:`normalizer` then gives the batch normaliser of a mode for a fold's training
    speakers without reading the stores again.

    ``arrays``: batch key → segment-table array (all share the table ``index``). ``utterances``:
    those of the table's rows; augmented copies among them (``augment`` set, see
    :mod:`camser.augment`) are standardised by their speaker's statistics but never counted in
    them: statistics come from original audio only."""

    def __init__(self, arrays: dict, index, utterances, sample_rate: int, progress=None):
        from ..segments import valid_fractions
        speaker_of = {u.id: u.speaker for u in utterances}
        self.speakers = sorted({u.speaker for u in utterances if not u.augment})
        position = {s: i for i, s in enumerate(self.speakers)}
        self.group_of_row = np.array([position[speaker_of[seg.utterance_id]] for seg in index], dtype=np.int64)
        self.valid = valid_fractions(index, utterances, sample_rate)
        copies = {u.id for u in utterances if u.augment}
        originals = (np.array([r for r, seg in enumerate(index) if seg.utterance_id not in copies], dtype=np.int64)
                     if copies else None)
        self.sums = {}
        for key, array in arrays.items():
            if progress:
                progress(f"normalisation statistics per speaker: {key}")
            self.sums[key] = frame_group_sums(array, self.group_of_row, len(self.speakers), self.valid,
                                              rows=originals)

    def corpus_statistics(self, speakers) -> FrameStatistics:
        """The pooled statistics of ``speakers`` (a model folder keeps its training speakers')."""
        idx = [self.speakers.index(s) for s in sorted(set(speakers))]
        stats = {k: s.stats(idx) for k, s in self.sums.items()}
        return FrameStatistics({k: m for k, (m, _) in stats.items()}, {k: sd for k, (_, sd) in stats.items()},
                               source="training speakers")

    def normalizer(self, mode: str, train_speakers=None) -> FrameNormalizer | None:
        """``speaker``: every speaker by its own statistics; ``corpus``: everyone by the
        statistics of ``train_speakers`` (required: a strict statistic names its speakers);
        ``none``: None."""
        check_mode(mode)
        if mode == "none":
            return None
        if mode == "speaker":
            stats = {k: s.per_group() for k, s in self.sums.items()}
            groups = self.group_of_row
        else:
            if train_speakers is None:
                raise ValueError("corpus normalisation needs the training speakers")
            idx = [self.speakers.index(s) for s in sorted(set(train_speakers))]
            stats = {k: tuple(a[None] for a in s.stats(idx)) for k, s in self.sums.items()}
            groups = np.zeros_like(self.group_of_row)
        return FrameNormalizer({k: m for k, (m, _) in stats.items()}, {k: s for k, (_, s) in stats.items()},
                               groups, self.valid)
