"""Fixed-length segmentation (the paper: 3 s, non-overlapping, the last one zero-padded)."""
from __future__ import annotations

import math

import numpy as np

from .types import Segment


LAST_SEGMENT = ("pad", "align")


def segment_bounds(n_samples: int, segment_samples: int, hop_samples: int | None = None,
                   last: str = "pad") -> list[tuple[int, int]]:
    """``[(start, end), ...]`` covering ``n_samples``. ``hop_samples < segment_samples`` gives
    overlapping windows. The last window: ``"pad"`` (the paper) may end past the audio and is
    zero-padded; ``"align"`` ends exactly at the end of the audio, overlapping its predecessor,
    so a 3.7 s clip gives two full windows instead of one with 2.3 s of padding. Audio shorter
    than one window is padded either way."""
    hop = hop_samples or segment_samples
    if segment_samples <= 0 or hop <= 0:
        raise ValueError("segment and hop lengths must be positive")
    if last not in LAST_SEGMENT:
        raise ValueError(f"last must be one of {LAST_SEGMENT}, got {last!r}")
    if n_samples <= segment_samples:
        return [(0, segment_samples)]
    n = 1 + math.ceil((n_samples - segment_samples) / hop)
    bounds = [(i * hop, i * hop + segment_samples) for i in range(n)]
    if last == "align" and bounds[-1][1] > n_samples:
        bounds[-1] = (n_samples - segment_samples, n_samples)
    return bounds


def segment_utterance(utterance_id: str, n_samples: int, segment_samples: int,
                      hop_samples: int | None = None, last: str = "pad") -> list[Segment]:
    return [Segment(utterance_id, i, s, e)
            for i, (s, e) in enumerate(segment_bounds(n_samples, segment_samples, hop_samples, last))]


def cut(y: np.ndarray, segment: Segment) -> np.ndarray:
    """The samples of ``segment``, zero-padded to its full length."""
    out = np.zeros(segment.end - segment.start, dtype=np.float32)
    piece = y[segment.start:segment.end]
    out[: len(piece)] = piece
    return out


def segment_waveform(y: np.ndarray, segment_samples: int, hop_samples: int | None = None) -> np.ndarray:
    """All segments of a waveform as a ``(n_segments, segment_samples)`` array."""
    bounds = segment_bounds(len(y), segment_samples, hop_samples)
    return np.stack([cut(y, Segment("", i, s, e)) for i, (s, e) in enumerate(bounds)])


def valid_fractions(index, utterances, sample_rate: int) -> np.ndarray:
    """Per segment-table row, the fraction of the segment that is real audio (the rest is the
    last segment's zero padding), from the utterances' durations: float32 in (0, 1]."""
    n_samples = {u.id: float(u.duration_s) * sample_rate for u in utterances}
    out = np.empty(len(index), dtype=np.float32)
    for r, seg in enumerate(index):
        length = seg.end - seg.start
        real = min(max(n_samples.get(seg.utterance_id, seg.end) - seg.start, 0.0), length)
        out[r] = max(real, 1.0) / length
    return out
