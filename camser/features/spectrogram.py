"""Spectrogram branch input: log-magnitude STFT, 0–4 kHz, in dB relative to the utterance.

The STFT runs once over the whole utterance (so frames near segment edges see real
neighbouring audio, not padding) and each segment takes its slice of frames. The dB reference
is the utterance maximum, so segments of one utterance share one scale. Frames past the end of
the audio are silence: the dB floor (``max − top_db``), not 0 dB (which would be the loudest).
"""
from __future__ import annotations

from typing import Sequence

import librosa
import numpy as np

from ..config import SpectrogramConfig
from ..types import Segment


def utterance_spectrogram(y: np.ndarray, cfg: SpectrogramConfig) -> np.ndarray:
    """``(n_stft_frames, n_bins)`` float32 dB spectrogram of a whole waveform, 0 dB = its maximum.

    Window ``cfg.window`` of ``cfg.win_length`` samples (640 = 40 ms at 16 kHz), hop
    ``cfg.hop_length`` samples, ``cfg.n_fft``-point DFT (800 → 20 Hz bins), centred frames
    with reflect padding; the first ``cfg.n_bins`` bins are kept (200 → 0–4 kHz).
    """
    s = np.abs(librosa.stft(np.asarray(y, dtype=np.float32), n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                            win_length=cfg.win_length, window=cfg.window, center=True, pad_mode="reflect"))
    db = librosa.amplitude_to_db(s, ref=np.max, top_db=cfg.top_db)
    return np.ascontiguousarray(db[: cfg.n_bins].T, dtype=np.float32)


def floor_db(cfg: SpectrogramConfig) -> float:
    """The value of silence: the utterance maximum (0 dB) minus ``top_db``."""
    return -float(cfg.top_db)


def spectrogram_segments(y: np.ndarray, segments: Sequence[Segment], sr: int,
                         cfg: SpectrogramConfig, n_frames: int) -> np.ndarray:
    """``(n_segments, n_frames, n_bins)`` float32: each segment's frames of the utterance STFT.

    A segment starting at sample ``start`` begins at frame ``start // hop_length``; frames past
    the utterance's last STFT frame are set to the floor. ``sr`` (Hz) is accepted for symmetry
    with the other kinds; the bin range follows from ``n_fft`` and ``n_bins``.
    """
    spec = utterance_spectrogram(y, cfg)
    out = np.full((len(segments), n_frames, spec.shape[1]), floor_db(cfg), dtype=np.float32)
    for i, seg in enumerate(segments):
        first = seg.start // cfg.hop_length
        piece = spec[first:first + n_frames]
        out[i, : len(piece)] = piece
    return out
