"""Utterance-level feature stores: one row per utterance (not per segment), for the baselines
that read a whole utterance at once — openSMILE functionals, text-encoder token embeddings.

They are ordinary :class:`~camser.features.store.FeatureStore` folders (``<kind>-<hash>/`` in
the same cache, resumable, completion marker written last) whose index has one entry per
utterance: ``Segment(utterance_id, 0, 0, n_samples)``. They are kept apart from the segment
stores (``PreparedData.utterance_stores``): every segment store shares one segment table, these
share the utterance order instead.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..types import Segment, Utterance
from .store import FeatureStore


def utterance_index(utterances: Sequence[Utterance], sample_rate: int) -> list[Segment]:
    """One index entry per utterance, spanning its whole duration."""
    return [Segment(u.id, 0, 0, max(1, int(round(float(u.duration_s) * sample_rate)))) for u in utterances]


def extract_utterance_store(path: str | Path, kind: str, utterances: Sequence[Utterance], sample_rate: int,
                            row_shape: Sequence[int], dtype, compute: Callable[[list[Utterance]], np.ndarray],
                            config: dict, hash: str, batch_size: int = 16, progress: bool = True,
                            extra: dict | None = None) -> FeatureStore:
    """Fill (or find, or resume) the store at ``path``: ``compute(utterances)`` returns the rows
    of a batch, ``(len(batch), *row_shape)``; every batch is flushed (the resume point)."""
    if FeatureStore.complete_at(path):
        return FeatureStore.open(path)
    store = FeatureStore.create(path, kind, utterance_index(utterances, sample_rate), row_shape, dtype,
                                config=config, hash=hash, extra=extra)
    todo = [i for i in range(len(utterances)) if not store.done[i]]
    bs = max(1, batch_size)
    with tqdm(total=len(todo), desc=kind, unit="utt", disable=not progress) as bar:
        for start in range(0, len(todo), bs):
            rows = todo[start:start + bs]
            store.write(rows, compute([utterances[i] for i in rows]))
            store.mark_done(rows)
            store.flush()
            bar.update(len(rows))
    return store.finalize()
