import numpy as np
import pytest

from camser.segments import cut, segment_bounds, segment_utterance, segment_waveform


def test_paper_segmentation_3s_nonoverlapping_last_padded():
    segs = segment_utterance("u1", n_samples=100_000, segment_samples=48_000)
    assert [(s.start, s.end) for s in segs] == [(0, 48_000), (48_000, 96_000), (96_000, 144_000)]
    assert [s.index for s in segs] == [0, 1, 2] and all(s.utterance_id == "u1" for s in segs)
    y = np.random.default_rng(0).standard_normal(100_000).astype(np.float32)
    last = cut(y, segs[-1])
    assert len(last) == 48_000
    np.testing.assert_array_equal(last[:4_000], y[96_000:])
    assert not last[4_000:].any()


def test_short_utterance_is_one_padded_segment():
    assert segment_bounds(10_000, 48_000) == [(0, 48_000)]


def test_exact_multiple_has_no_empty_tail():
    assert segment_bounds(96_000, 48_000) == [(0, 48_000), (48_000, 96_000)]


def test_overlap():
    b = segment_bounds(100_000, 48_000, hop_samples=24_000)
    assert b[:3] == [(0, 48_000), (24_000, 72_000), (48_000, 96_000)]
    assert b[-1][1] >= 100_000 and b[-2][1] < 100_000


def test_segment_waveform_shape():
    assert segment_waveform(np.ones(50_000, np.float32), 48_000).shape == (2, 48_000)


def test_bad_lengths():
    with pytest.raises(ValueError):
        segment_bounds(10, 0)


def test_align_last_segment_ends_at_the_audio_end():
    assert segment_bounds(59_200, 48_000, last="align") == [(0, 48_000), (11_200, 59_200)]
    assert segment_bounds(96_000, 48_000, last="align") == [(0, 48_000), (48_000, 96_000)]
    assert segment_bounds(10_000, 48_000, last="align") == [(0, 48_000)]     # shorter than a window: padded
    with pytest.raises(ValueError):
        segment_bounds(10, 5, last="wrap")
