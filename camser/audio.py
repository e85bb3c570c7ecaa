"""Load any audio file libsndfile reads (wav, flac, ogg, mp3) as 16 kHz mono float32.

Every way a file can be unusable raises :class:`~camser.errors.AudioError` with the path and
the reason, so a corpus scan can skip and list it and a server can answer 4xx.

The header is checked before anything is decoded: a sample rate outside
``MIN_SAMPLE_RATE``–``MAX_SAMPLE_RATE`` is refused (:class:`UnsupportedRate`: a 10 KB WAV that
declares 1 Hz would otherwise resample to hours of audio), and :func:`audio_info` can refuse a
declared duration over a limit (:class:`AudioTooLong`). Decoding reads at most
``_READ_SAMPLES`` samples (all channels) at a time and mixes them to mono at once, so memory
follows the mono signal, not the channel count.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioError, first_line

SAMPLE_RATE = 16_000
MIN_SAMPLE_RATE = 1_000       # Hz; below, no speech survives and resampling explodes the length
MAX_SAMPLE_RATE = 384_000     # Hz; the highest rate audio interfaces record at
_READ_SAMPLES = 1 << 20       # samples (frames × channels) decoded per read: 4 MB of float32


class AudioTooLong(AudioError):
    """The header declares more audio than the caller accepts."""


class UnsupportedRate(AudioError):
    """A sample rate outside ``MIN_SAMPLE_RATE``–``MAX_SAMPLE_RATE``."""


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
    with _open(source, name) as f:
        blocks = list(_mono_blocks(f, name))
        y, file_sr = (np.concatenate(blocks) if blocks else np.zeros(0, np.float32)), f.samplerate
    y = validate_waveform(y, file_sr, name)  # check before resampling: cheaper, exact
    y = resample(y, file_sr, sr)
    return validate_waveform(y, sr, name, min_duration_s)


def trim_silence(y: np.ndarray, sr: int, top_db: float, min_duration_s: float = 0.0,
                 name: str = "<array>", frame_length: int = 2048, hop_length: int = 512) -> tuple[np.ndarray, int]:
    """Cut the leading and trailing audio quieter than ``top_db`` dB below the recording's
    loudest frame (``librosa.effects.trim``: RMS over ``frame_length``-sample frames every
    ``hop_length`` samples). Returns the kept samples and the index of the first one.

    Acted corpora pad each sentence with silence (RAVDESS: 3.7 s files, about 1.9 s of speech
    at 30 dB): cut, a clip fits one segment and no frame pools silence."""
    import librosa

    _, (start, end) = librosa.effects.trim(y, top_db=top_db, frame_length=frame_length, hop_length=hop_length)
    if end - start < min_duration_s * sr:
        raise AudioError(name, f"too short after cutting silence quieter than {top_db:g} dB below the peak "
                               f"({(end - start) / sr:.3f} s < minimum {min_duration_s:g} s)")
    return y[start:end], int(start)


def audio_info(path: str | Path, max_duration_s: float | None = None):
    """The header of an audio file (``soundfile.info``: ``samplerate``, ``frames``, ``channels``,
    ``duration``), checked without decoding anything: the file exists and is not empty, the rate
    is supported, and the declared duration is at most ``max_duration_s`` (:class:`AudioTooLong`)."""
    _check_file(path)
    try:
        info = sf.info(str(path))
    except Exception as e:
        raise AudioError(path, unreadable_reason(path, e)) from None
    _check_rate(info.samplerate, path)
    duration = info.frames / info.samplerate
    if max_duration_s is not None and duration > max_duration_s:
        raise AudioTooLong(path, f"too long: {duration:.1f} s of audio, the limit is {max_duration_s:g} s")
    return info


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the header only."""
    info = audio_info(path)
    return info.frames / info.samplerate


def stream_audio(
    path: str | Path, block_s: float, sr: int = SAMPLE_RATE
) -> Iterator[np.ndarray]:
    """Yield consecutive mono blocks of ``block_s`` seconds at ``sr`` Hz without ever holding
    the whole file: memory stays flat for hour-long recordings. The last block may be shorter."""
    with _open(path, str(path)) as f:
        if f.frames == 0:
            raise AudioError(path, "empty audio (0 samples)")
        resampler = None if f.samplerate == sr else soxr.ResampleStream(f.samplerate, sr, 1, dtype="float32")
        want = int(round(block_s * sr))
        parts, have = [], 0
        for x, last in _mono_blocks(f, path, max(1, int(round(block_s * f.samplerate))), flag_last=True):
            if resampler is not None:
                x = resampler.resample_chunk(x, last=last)
            parts.append(x.astype(np.float32, copy=False))
            have += len(x)
            if have >= want:          # join only when a block is due: reads are small at high rates
                pending = np.concatenate(parts)
                while len(pending) >= want:
                    yield pending[:want]
                    pending = pending[want:]
                parts, have = [pending], len(pending)
        if have:
            yield np.concatenate(parts)


def _open(source, name) -> sf.SoundFile:
    """``source`` opened for reading, its sample rate checked; every failure an AudioError."""
    if isinstance(source, (str, Path)):
        _check_file(source)
    try:
        f = sf.SoundFile(str(source) if isinstance(source, (str, Path)) else source)
    except Exception as e:  # libsndfile's message is the useful part
        raise AudioError(name, unreadable_reason(source, e)) from None
    try:
        _check_rate(f.samplerate, name)
    except AudioError:
        f.close()
        raise
    return f


def _mono_blocks(f: sf.SoundFile, name, max_frames: int | None = None, flag_last: bool = False) -> Iterator:
    """The rest of ``f`` as mono float32 blocks of at most ``max_frames`` frames and
    ``_READ_SAMPLES`` samples before mixing (with ``flag_last``: ``(block, is_last)`` pairs,
    the last block possibly empty)."""
    frames = max(1, min(max_frames or _READ_SAMPLES, _READ_SAMPLES // max(f.channels, 1)))
    while True:
        raw = f.read(frames, dtype="float32", always_2d=False)
        last = len(raw) < frames
        x = _to_mono(raw)
        if not np.all(np.isfinite(x)):
            raise AudioError(name, "audio contains NaN or infinite samples")
        if flag_last:
            yield x, last
        elif len(x):
            yield x
        if last:
            return


def _check_file(path) -> None:
    if not Path(path).is_file():
        raise AudioError(path, "file not found")


def _check_rate(samplerate: int, name) -> None:
    if not MIN_SAMPLE_RATE <= samplerate <= MAX_SAMPLE_RATE:
        raise UnsupportedRate(name, f"unsupported sample rate {samplerate} Hz (accepted: "
                                    f"{MIN_SAMPLE_RATE}–{MAX_SAMPLE_RATE} Hz)")


def unreadable_reason(source, e: Exception) -> str:
    """The reason libsndfile could not open ``source``; an empty file says so (libsndfile
    calls it "Format not recognised")."""
    return f"unreadable audio ({'empty file, 0 bytes' if _is_empty(source) else _short(e)})"


def _is_empty(source) -> bool:
    try:
        if isinstance(source, (str, Path)):
            return Path(source).stat().st_size == 0
        here = source.tell()
        end = source.seek(0, io.SEEK_END)
        source.seek(here)
        return end == 0
    except (OSError, AttributeError, ValueError):
        return False


def _short(e: Exception) -> str:
    return first_line(e, limit=200)
