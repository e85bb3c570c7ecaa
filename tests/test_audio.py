"""Audio loading: every format and rate → 16 kHz mono float32; every bad case → one-line AudioError."""
import numpy as np
import pytest
import soundfile as sf

from camser.audio import load_audio, stream_audio, trim_silence
from camser.errors import AudioError


def tone(sr, seconds=1.0, f=220.0, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    y = 0.3 * np.sin(2 * np.pi * f * t).astype(np.float32)
    return np.stack([y] * channels, axis=1) if channels > 1 else y


@pytest.mark.parametrize("fmt,subtype", [("wav", "PCM_16"), ("flac", "PCM_16"), ("ogg", "VORBIS"), ("mp3", "MPEG_LAYER_III")])
def test_formats_rates_channels(tmp_path, fmt, subtype):
    path = tmp_path / f"x.{fmt}"
    sf.write(path, tone(44_100, 1.0, channels=2), 44_100, format=fmt.upper() if fmt != "mp3" else "MP3", subtype=subtype)
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 16_000) <= 1200  # mp3 encoders add priming samples
    # the tone survives resampling: dominant frequency ≈ 220 Hz
    spec = np.abs(np.fft.rfft(y[:16_000 - 2000]))
    assert abs(np.argmax(spec) * 16_000 / (16_000 - 2000) - 220) < 5


def test_resampled_values_match_soxr(tmp_path):
    import soxr
    path = tmp_path / "a.wav"
    y0 = tone(22_050, 0.5)
    sf.write(path, y0, 22_050, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), soxr.resample(y0, 22_050, 16_000, quality="HQ"), atol=1e-6)


@pytest.mark.parametrize("case,reason", [
    ("missing", "file not found"),
    ("garbage", "unreadable audio"),
    ("empty", "empty audio"),
    ("silent", "silent audio"),
    ("nan", "NaN or infinite"),
    ("short", "too short"),
])
def test_bad_files_name_file_and_reason(tmp_path, case, reason):
    path = tmp_path / f"{case}.wav"
    if case == "garbage":
        path.write_bytes(b"this is not audio at all" * 10)
    elif case == "empty":
        sf.write(path, np.zeros(0, dtype=np.float32), 16_000)
    elif case == "silent":
        sf.write(path, np.zeros(16_000, dtype=np.float32), 16_000)
    elif case == "nan":
        y = tone(16_000)
        y[100] = np.nan
        sf.write(path, y, 16_000, subtype="FLOAT")
    elif case == "short":
        sf.write(path, tone(16_000, 0.05), 16_000)
    with pytest.raises(AudioError) as e:
        load_audio(path, min_duration_s=0.1)
    msg = str(e.value)
    assert str(path) in msg and reason in msg and "\n" not in msg


def test_stream_audio_equals_whole_file(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, tone(16_000, 7.3), 16_000, subtype="FLOAT")
    blocks = list(stream_audio(path, block_s=3.0))
    assert [len(b) for b in blocks] == [48_000, 48_000, 20_800]
    np.testing.assert_array_equal(np.concatenate(blocks), load_audio(path))


def test_stream_audio_resamples(tmp_path):
    path = tmp_path / "long44.wav"
    sf.write(path, tone(44_100, 5.0), 44_100, subtype="FLOAT")
    y = np.concatenate(list(stream_audio(path, block_s=2.0)))
    assert abs(len(y) - 80_000) <= 2
    np.testing.assert_allclose(y[1000:70_000], load_audio(path)[1000:70_000], atol=1e-3)


def test_trim_silence_keeps_the_speech_and_says_where_it_starts():
    sr = 16_000
    rng = np.random.default_rng(0)
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(sr) / sr)
    y = np.concatenate([1e-4 * rng.standard_normal(sr // 2), tone, 1e-4 * rng.standard_normal(sr)]).astype(np.float32)
    kept, start = trim_silence(y, sr, top_db=30)
    # frames of 2048 samples every 512: the cut lands within a frame of the tone's edges
    assert abs(start - sr // 2) <= 2048 and abs(start + len(kept) - 3 * sr // 2) <= 2048
    np.testing.assert_array_equal(kept, y[start:start + len(kept)])
    assert len(trim_silence(y, sr, top_db=120)[0]) == len(y)      # nothing is that quiet: all kept
    with pytest.raises(AudioError) as e:
        trim_silence(y, sr, top_db=30, min_duration_s=2.0, name="clip.wav")
    assert str(e.value).startswith("clip.wav: too short after cutting silence")
