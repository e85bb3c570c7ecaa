"""Chroma: the energy of the 12 pitch classes every 10 ms (``librosa.feature.chroma_stft``).

Computed per zero-padded segment, exactly as librosa would on that segment (as the MFCCs are),
so a segment's features do not depend on the rest of the utterance. The tuning is fixed
(``features.chroma.tuning``, default 0 = A440) rather than estimated per segment: speech has no
tuning to estimate, and an estimate from a near-silent segment is noise (librosa warns).
"""
from __future__ import annotations

import librosa
import numpy as np

from ..config import ChromaConfig
from ..segments import cut


def chroma(y_segment: np.ndarray, sr: int, cfg: ChromaConfig, n_frames: int) -> np.ndarray:
    """``(n_frames, n_chroma)`` float32 chroma of one segment (each frame max-normalised, as
    librosa does; centred frames, Hann window, ``cfg.n_fft``-point STFT power)."""
    c = librosa.feature.chroma_stft(y=np.asarray(y_segment, dtype=np.float32), sr=sr, n_fft=cfg.n_fft,
                                    hop_length=cfg.hop_length, n_chroma=cfg.n_chroma, tuning=cfg.tuning)
    out = np.zeros((n_frames, cfg.n_chroma), dtype=np.float32)
    t = min(n_frames, c.shape[1])
    out[:t] = c.T[:t]
    return out


def chroma_segments(y: np.ndarray, segments, sr: int, cfg: ChromaConfig, n_frames: int) -> np.ndarray:
    """``(n_segments, n_frames, n_chroma)`` for ``segments`` (sample offsets into ``y``)."""
    return np.stack([chroma(cut(y, s), sr, cfg, n_frames) for s in segments])
