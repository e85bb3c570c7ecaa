"""MFCC branch input: 40 HTK-mel cepstral coefficients every 10 ms (the CA-MSER setting).

Computed per zero-padded segment, exactly as ``librosa.feature.mfcc`` would on that segment,
so a segment's features do not depend on the rest of the utterance.
"""
from __future__ import annotations

import librosa
import numpy as np

from ..config import MFCCConfig
from ..segments import cut


def n_frames_for(segment_samples: int, hop_length: int) -> int:
    """Frames kept per segment: ``segment_samples // hop_length`` (3 s at 16 kHz, hop 160 → 300).

    librosa's centred frames give one more (301); the last, which looks half past the segment
    end, is dropped so every kind has the same 10 ms grid."""
    return segment_samples // hop_length


def mfcc(y_segment: np.ndarray, sr: int, cfg: MFCCConfig, n_frames: int) -> np.ndarray:
    """``(n_frames, n_mfcc)`` float32 MFCCs of one segment.

    ``sr`` in Hz; ``cfg.hop_length`` in samples; other settings are librosa's defaults
    (n_fft=2048, Hann window, 128 mel bands, centred frames with zero padding).
    """
    m = librosa.feature.mfcc(y=np.asarray(y_segment, dtype=np.float32), sr=sr, n_mfcc=cfg.n_mfcc,
                             htk=cfg.htk, hop_length=cfg.hop_length)
    out = np.zeros((n_frames, cfg.n_mfcc), dtype=np.float32)
    t = min(n_frames, m.shape[1])
    out[:t] = m.T[:t]
    return out


def mfcc_segments(y: np.ndarray, segments, sr: int, cfg: MFCCConfig, n_frames: int) -> np.ndarray:
    """``(n_segments, n_frames, n_mfcc)`` for ``segments`` (sample offsets into ``y``)."""
    return np.stack([mfcc(cut(y, s), sr, cfg, n_frames) for s in segments])
