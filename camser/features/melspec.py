"""Mel spectrogram: 128 mel bands every 10 ms, log power in dB (``librosa.feature.melspectrogram``).

Computed per zero-padded segment, exactly as librosa would on that segment (as the MFCCs are).
The dB scale is absolute (``power_to_db(S, ref=1.0, top_db=None)``), not relative to each
segment's maximum, so loudness differences between segments and utterances are kept; zero
padding reads −100 dB (librosa's ``amin`` = 1e-10).
"""
from __future__ import annotations

import librosa
import numpy as np

from ..config import MelSpecConfig
from ..segments import cut


def melspec(y_segment: np.ndarray, sr: int, cfg: MelSpecConfig, n_frames: int) -> np.ndarray:
    """``(n_frames, n_mels)`` float32 mel spectrogram of one segment: power STFT (Hann window of
    ``cfg.win_length`` samples zero-padded to ``cfg.n_fft``, hop ``cfg.hop_length``, centred
    frames) through librosa's Slaney mel filters, in dB when ``cfg.db``."""
    m = librosa.feature.melspectrogram(y=np.asarray(y_segment, dtype=np.float32), sr=sr, n_fft=cfg.n_fft,
                                       win_length=cfg.win_length, hop_length=cfg.hop_length,
                                       n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
    if cfg.db:
        m = librosa.power_to_db(m, ref=1.0, top_db=None)
    out = np.zeros((n_frames, cfg.n_mels), dtype=np.float32)
    t = min(n_frames, m.shape[1])
    out[:t] = m.T[:t]
    return out


def melspec_segments(y: np.ndarray, segments, sr: int, cfg: MelSpecConfig, n_frames: int) -> np.ndarray:
    """``(n_segments, n_frames, n_mels)`` for ``segments`` (sample offsets into ``y``)."""
    return np.stack([melspec(cut(y, s), sr, cfg, n_frames) for s in segments])
