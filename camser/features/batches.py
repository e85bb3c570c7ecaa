"""Segment-level training data read straight from the feature cache.

Rows stay on disk (memory-mapped stores); a batch gathers only its rows, so an
IEMOCAP-sized cache never has to fit in memory, and spectrogram images are built per batch
by the model, never for the whole corpus.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import CamserError
from ..segments import valid_fractions  # noqa: F401  (re-exported: batch builders use it)

# A frame feature has one name everywhere: its store kind (store.KINDS) is its batch key, its
# model input and its embedding key. Files written before the names were unified (model
# folders' inputs, ONNX input names, normalisation statistics, embeddings.npz) used these.
LEGACY_NAMES = {"spec": "spectrogram", "w2e": "ssl", "w2e_raw": "ssl_raw", "w2e_stats": "ssl_stats"}


def current_name(key: str) -> str:
    """A feature or embedding name as camser calls it now (old files may use a legacy one)."""
    return LEGACY_NAMES.get(key, key)


@dataclass
class SegmentSet:
    """The segments of a set of utterances: store rows, segment labels, owning utterance."""

    rows: np.ndarray            # (n_seg,) row in every store (all stores share one segment table)
    labels: np.ndarray          # (n_seg,) class index of the segment's utterance
    utterance_ids: list[str]    # (n_seg,) utterance of each segment

    def __len__(self) -> int:
        return len(self.rows)


def segment_set(stores: dict, utterance_ids: list[str], label_of: dict[str, int]) -> SegmentSet:
    store = next(iter(stores.values()))
    rows, labels, owners = [], [], []
    for uid in utterance_ids:
        r = store.rows_of(uid)
        if not r:
            raise CamserError(f"{uid}: no features in the cache (re-run `camser features`)")
        rows.extend(r)
        labels.extend([label_of[uid]] * len(r))
        owners.extend([uid] * len(r))
    return SegmentSet(np.asarray(rows, dtype=np.int64), np.asarray(labels, dtype=np.int64), owners)


def feature_dims(stores: dict) -> dict[str, tuple[int, ...]]:
    """Per batch key, the shape of one segment's features (what sizes a model from data)."""
    return {k: tuple(s.array.shape[1:]) for k, s in stores.items()}


def gather(stores: dict, rows: np.ndarray, keys: list[str] | None = None) -> dict[str, torch.Tensor]:
    """The batch dict for ``rows``: float32 tensors per feature (float16 caches are upcast)."""
    order = np.argsort(rows)              # sorted reads are sequential on a memmap
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    batch = {}
    for kind, store in stores.items():
        if keys is not None and kind not in keys:
            continue
        block = np.empty((len(rows), *store.array.shape[1:]), dtype=np.float32)
        block[order] = store.read_rows(rows[order])      # upcast and reorder in one pass
        batch[kind] = torch.from_numpy(block)
    return batch


def prefetch(stores: dict, rows: np.ndarray) -> None:
    """Start reading ``rows`` of every store in the background (see
    :meth:`~camser.features.store.FeatureStore.prefetch`)."""
    rows = np.sort(rows)
    for store in stores.values():
        store.prefetch(rows)


def with_prefetch(batches, stores: dict, segs: SegmentSet):
    """Yield the index batches of ``batches`` unchanged, each after asking the OS for the next
    one's rows, so the disk reads batch k+1 while the model computes batch k."""
    batches = iter(batches)
    current = next(batches, None)
    while current is not None:
        following = next(batches, None)
        if following is not None:
            prefetch(stores, segs.rows[following])
        yield current
        current = following


class FeatureBatches:
    """Batch builder for models that want more than the cached frames: :func:`gather` of the
    stores the model reads (``keys``; None = all) plus

    * ``valid`` ``(B,)``: the fraction of each segment that is real audio (see
      :func:`valid_fractions`), from which a model builds frame masks;
    * ``text`` ``(B, N, D)`` when ``text_store`` (one row per utterance, see
      :mod:`camser.features.text`) is given: each segment's utterance's token embeddings.
    """

    def __init__(self, stores: dict, utterances, sample_rate: int, keys=None, text_store=None):
        index = next(iter(stores.values())).index
        self.valid = valid_fractions(index, utterances, sample_rate)
        self.keys = None if keys is None else list(keys)
        self.text_store = text_store
        if text_store is not None:
            self.text_row = {seg.utterance_id: r for r, seg in enumerate(text_store.index)}

    def __call__(self, stores, segs: SegmentSet, idx: np.ndarray) -> dict:
        rows = segs.rows[idx]
        batch = gather(stores, rows, self.keys)
        batch["valid"] = torch.from_numpy(self.valid[rows])
        if self.text_store is not None:
            trows = np.array([self.text_row[segs.utterance_ids[i]] for i in idx], dtype=np.int64)
            unique, inverse = np.unique(trows, return_inverse=True)     # sorted reads, each row once
            block = np.asarray(self.text_store.array[unique], dtype=np.float32)[inverse]
            batch["text"] = torch.from_numpy(block)
        return batch


def iterate_batches(n: int, batch_size: int, generator: torch.Generator | None = None,
                    rank: int = 0, world_size: int = 1):
    """Index batches over ``range(n)``; shuffled when a generator is given. With several
    ranks each global batch is split into equal shares (same batch count on every rank)."""
    order = torch.randperm(n, generator=generator).numpy() if generator is not None else np.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        if world_size > 1:
            share = int(np.ceil(len(idx) / world_size))
            idx = idx[rank * share:(rank + 1) * share]
            if len(idx) == 0:               # keep collectives in step: reuse one sample
                idx = order[start:start + 1]
        yield idx


class AudioBatches:
    """Batch builder for fine-tuning: cached MFCC/spectrogram rows plus each segment's raw
    audio (``audio``), cut from its utterance as the feature extractor did. Recently used
    utterances stay decoded, so neighbouring segments don't reload the file."""

    def __init__(self, utterances, cfg, keep: int = 256):
        from ..features.extract import load_corpus_audio, prepare_waveform
        self._paths = {u.id: u.path for u in utterances}
        self._cfg = cfg
        self._load = lambda uid: prepare_waveform(load_corpus_audio(self._paths[uid], cfg), cfg)
        self._cache: dict[str, np.ndarray] = {}
        self._keep = keep

    def _audio(self, uid: str) -> np.ndarray:
        if uid not in self._cache:
            if len(self._cache) >= self._keep:
                self._cache.pop(next(iter(self._cache)))
            self._cache[uid] = self._load(uid)
        return self._cache[uid]

    def __call__(self, stores, segs: SegmentSet, idx: np.ndarray) -> dict:
        from ..segments import cut
        batch = gather(stores, segs.rows[idx])
        index = next(iter(stores.values())).index
        batch["audio"] = torch.from_numpy(np.stack([cut(self._audio(segs.utterance_ids[i]), index[segs.rows[i]])
                                                    for i in idx]))
        return batch


class NormalizedBatches:
    """A batch builder whose frame features are standardised by ``normalizer`` (a
    :class:`~camser.features.normalize.FrameNormalizer`) after ``batch_fn`` built them."""

    def __init__(self, batch_fn, normalizer):
        self.batch_fn, self.normalizer = batch_fn, normalizer

    def __call__(self, stores, segs: SegmentSet, idx: np.ndarray) -> dict:
        return self.normalizer(self.batch_fn(stores, segs, idx), segs.rows[idx])


class _NormalizedArray:
    def __init__(self, store, key: str, normalizer):
        self.store, self.key, self.normalizer = store, key, normalizer
        self.shape, self.dtype = store.array.shape, np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self.store.array)

    def __getitem__(self, rows):
        rows = np.arange(len(self))[rows] if isinstance(rows, slice) else np.asarray(rows)
        block = torch.from_numpy(np.asarray(self.store.array[rows], dtype=np.float32))
        return self.normalizer({self.key: block}, rows)[self.key].numpy()


class _NormalizedStore:
    """A store whose ``array[rows]`` reads standardised rows (for fitting a model's own scalers
    on what it will be fed); everything else is the store's."""

    def __init__(self, store, key: str, normalizer):
        self._store = store
        self.array = _NormalizedArray(store, key, normalizer)

    def __getattr__(self, name):
        return getattr(self._store, name)


def normalized_stores(stores: dict, normalizer) -> dict:
    """``stores`` as ``normalizer`` standardises them (None → unchanged)."""
    if normalizer is None:
        return stores
    return {kind: _NormalizedStore(store, kind, normalizer) for kind, store in stores.items()}
