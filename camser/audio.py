"""Load any audio file libsndfile reads (wav, flac, ogg, mp3) as 16 kHz mono float32.

Every way a file can be unusable raises :class:`~camser.errors.AudioError` with the path and
the reason, so a corpus scan can skip and list it and a server can answer 4xx.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioError

SAMPLE_RATE = 16_000


def _to_mono(x: np.ndarray) -> np.ndarray:
    return x if x.ndim == 1 else x.mean(axis=1)


def resample(y: np.ndarray, orig_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling (soxr, high quality); a no-op at the same rate."""
    if orig_sr == target_sr:
        return y.astype(np.float32, copy=False)
    return soxr.resample(y, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def validate_waveform(y: np.ndarray, sr: int, name: str, min_duration_s: float = 0.0) -> np.ndarray:
    """Check a mono waveform and return it as float32; ``name`` is what errors call it."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise AudioError(name, f"expected a mono waveform (1-D array), got shape {y.shape}")
    if y.size == 0:
        raise AudioError(name, "empty audio (0 samples)")
    if not np.all(np.isfinite(y)):
        raise AudioError(name, "audio contains NaN or infinite samples")
    if not np.any(y):
        raise AudioError(name, "silent audio (all samples are zero)")
    duration = y.size / sr
    if duration < min_duration_s:
        raise AudioError(name, f"too short ({duration:.3f} s < minimum {min_duration_s:g} s)")
    return y.astype(np.float32, copy=False)


def load_audio(
    source: str | Path | BinaryIO | bytes,
    sr: int = SAMPLE_RATE,
    min_duration_s: float = 0.0,
    name: str | None = None,
) -> np.ndarray:
    """Read ``source`` (path, file object or bytes) → mono float32 at ``sr`` Hz.

    Channels are averaged; other sample rates are resampled with soxr.
    """
    name = name or (str(source) if isinstance(source, (str, Path)) else "<upload>")
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    if isinstance(source, (str, Path)) and not Path(source).is_file():
        raise AudioError(name, "file not found")
    try:
        y, file_sr = sf.read(source, dtype="float32", always_2d=False)
    except Exception as e:  # libsndfile's message is the useful part
        raise AudioError(name, f"unreadable audio ({_short(e)})") from None
    y = _to_mono(y)
    y = validate_waveform(y, file_sr, name)  # check before resampling: cheaper, exact
    y = resample(y, file_sr, sr)
    return validate_waveform(y, sr, name, min_duration_s)


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the header only."""
    try:
        info = sf.info(str(path))
    except Exception as e:
        raise AudioError(path, f"unreadable audio ({_short(e)})") from None
    return info.frames / info.samplerate if info.samplerate else 0.0


def stream_audio(
    path: str | Path, block_s: float, sr: int = SAMPLE_RATE
) -> Iterator[np.ndarray]:
    """Yield consecutive mono blocks of ``block_s`` seconds at ``sr`` Hz without ever holding
    the whole file: memory stays flat for hour-long recordings. The last block may be shorter."""
    try:
        f = sf.SoundFile(str(path))
    except Exception as e:
        raise AudioError(path, f"unreadable audio ({_short(e)})") from None
    with f:
        if f.frames == 0:
            raise AudioError(path, "empty audio (0 samples)")
        resampler = None if f.samplerate == sr else soxr.ResampleStream(f.samplerate, sr, 1, dtype="float32")
        block_in = max(1, int(round(block_s * f.samplerate)))
        want = int(round(block_s * sr))
        pending = np.zeros(0, dtype=np.float32)
        while True:
            raw = f.read(block_in, dtype="float32", always_2d=False)
            last = len(raw) < block_in
            x = _to_mono(raw)
            if not np.all(np.isfinite(x)):
                raise AudioError(path, "audio contains NaN or infinite samples")
            if resampler is not None:
                x = resampler.resample_chunk(x, last=last)
            pending = np.concatenate([pending, x.astype(np.float32, copy=False)])
            while len(pending) >= want:
                yield pending[:want]
                pending = pending[want:]
            if last:
                break
        if len(pending):
            yield pending


def _short(e: Exception) -> str:
    return str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
