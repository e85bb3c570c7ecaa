"""New audio → the model's per-segment inputs, by the code that computed the training features.

:class:`FeaturePipeline` runs :func:`camser.features.extract.prepare_waveform` and
:func:`~camser.features.extract.compute_features` with the model folder's configuration; it
adds no feature code of its own. What it does add is *windowing*, so that a recording of any
length is processed with bounded memory:

* A recording of up to ``2 × window_s`` seconds (30 s by default: nearly every corpus
  utterance) is one window: loaded whole and processed exactly as feature extraction
  processed training utterances.
* A longer one is cut into windows of ``window_s`` seconds (whole segments; the last window
  holds what is left, ``window_s`` to ``2 × window_s``), streamed from disk block by block
  (:func:`camser.audio.stream_audio`). Each window is treated as one utterance: the spectrogram
  dB reference is **the maximum of its window** (training used the utterance maximum, and its
  utterances are window-sized), the STFT sees reflect padding at window edges and
  pre-emphasis restarts at each window. A running maximum was rejected: it would make the
  first minutes of a file depend on nothing later and the last on everything before, so the
  same speech would get different inputs depending on where it sits in a file.

Windows start on the segment grid of the whole recording, so the timeline is the one
:func:`camser.segments.segment_bounds` gives for the full length; in-memory waveforms are
windowed the same way, so a 16 kHz file and its samples give identical results.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..audio import load_audio, resample, stream_audio, trim_silence, validate_waveform
from ..augment import augment_waveform, augmented_length
from ..config import ExperimentConfig
from ..errors import AudioError, CamserError
from ..features.extract import compute_features, prepare_waveform, resampled_length
from ..segments import cut, segment_utterance
from ..features.store import KINDS
from ..types import Segment


@dataclass
class Window:
    """A stretch of one recording: ``offset`` (samples at the model rate) of its first sample,
    ``n_samples`` of audio in it, its ``segments`` (offsets relative to the window; the last
    may run past the audio: zero padding) and ``features`` (batch key → ``(n_segments, ...)``).
    ``views``: the features of each test-time copy of the window's audio (speed or noise, as
    ``features.augment`` made them for training), when the model scores with them."""

    offset: int
    n_samples: int
    segments: list[Segment]
    features: dict[str, np.ndarray]
    views: list[dict[str, np.ndarray]] = field(default_factory=list)

    def bounds(self) -> list[tuple[int, int]]:
        """Each segment's ``[start, end)`` in samples from the start of the recording, the end
        clipped to the audio."""
        return [(self.offset + s.start, self.offset + min(s.end, self.n_samples)) for s in self.segments]


class FeaturePipeline:
    """Audio → :class:`Window` s of model inputs.

    ``inputs``: the batch keys the model reads (``mfcc``, ``spectrogram``, ``ssl`` or, for a model
    with its encoder inside, ``audio``). ``encoder``: what turns segments into SSL frames
    (an :class:`~camser.features.ssl.SSLEncoder`, or anything with its ``encode(batch)`` and
    ``segment_samples``), required when ``ssl`` is an input. ``window_s``: seconds per window
    for long recordings (rounded down to whole segments, at least one).
    """

    def __init__(self, cfg: ExperimentConfig, inputs: Iterable[str], encoder=None, window_s: float = 15.0):
        self.cfg = cfg
        self.inputs = tuple(inputs)
        unknown = [k for k in self.inputs if k not in KINDS and k not in ("audio", "valid")]
        if unknown:
            raise CamserError(f"the model reads '{unknown[0]}', which no feature kind provides")
        self.kinds = [k for k in self.inputs if k in KINDS]
        self.sample_rate = cfg.audio.sample_rate
        self.segment_samples, self.hop_samples = cfg.segments.samples(self.sample_rate)
        self.last = cfg.segments.last
        if "ssl" in self.kinds:
            if encoder is None:
                raise CamserError("the model reads SSL frames: the pipeline needs an encoder")
            if encoder.segment_samples != self.segment_samples:
                raise CamserError(f"encoder built for {encoder.segment_samples}-sample segments, "
                                  f"the model for {self.segment_samples}")
        self.encoder = encoder
        # features.augment.test_time: every window is also scored on these copies of its audio
        augment = cfg.features.augment
        self.view_specs = augment.specs if augment.test_time else []
        if window_s <= 0:
            raise CamserError(f"window_s: must be positive, got {window_s}")
        extra = int((window_s * self.sample_rate - self.segment_samples) // self.hop_samples)
        self.window_segments = max(1, 1 + extra)
        # samples one full window spans, and how far it advances
        self.window_samples = (self.window_segments - 1) * self.hop_samples + self.segment_samples
        self.step_samples = self.window_segments * self.hop_samples

    @property
    def whole_samples(self) -> int:
        """Recordings up to this many samples are one window (processed whole)."""
        return self.window_samples + self.step_samples

    # ------------------------------------------------------------------ features

    def features(self, y: np.ndarray, segments: list[Segment]) -> dict[str, np.ndarray]:
        """Model inputs of ``segments`` of a prepared waveform (see ``prepare_waveform``).

        SSL frames are rounded through ``features.ssl.dtype`` (float16 by default), as the
        training cache stored them: the model was trained on the rounded values."""
        out = compute_features(y, segments, self.cfg, self.kinds, self.encoder)
        batch = {kind: np.asarray(v, dtype=np.float32) for kind, v in out.items()}
        if "ssl" in batch:
            batch["ssl"] = batch["ssl"].astype(self.cfg.features.ssl.dtype).astype(np.float32)
        if "audio" in self.inputs:          # the encoder is inside the model: it gets the samples
            batch["audio"] = np.stack([cut(y, s) for s in segments])
        # the real-audio fraction of each segment, as training's batches carry it (see
        # camser.features.batches.valid_fractions): frame models mask the last segment's padding
        batch["valid"] = np.array([max(min(max(len(y) - s.start, 0), s.end - s.start), 1) / (s.end - s.start)
                                   for s in segments], dtype=np.float32)
        return batch

    def _window(self, y: np.ndarray, offset: int, n_samples: int | None = None) -> Window:
        n = len(y) if n_samples is None else n_samples
        views = [self._prepared_features(augment_waveform(y, self.sample_rate, spec, ""),
                                         augmented_length(n, spec))[1]
                 for spec in self.view_specs]
        segments, features = self._prepared_features(y, n)
        return Window(offset, n, segments, features, views)

    def _prepared_features(self, y: np.ndarray, n_samples: int) -> tuple[list[Segment], dict]:
        """Raw audio → its segments and their features, as extraction computes an utterance's
        (a copy's audio as extraction makes it: ``augment_waveform`` of the loaded samples;
        the noise of a noise copy is seeded by an empty key here)."""
        y = prepare_waveform(y, self.cfg, n_samples=n_samples)
        segments = segment_utterance("", len(y), self.segment_samples, self.hop_samples, self.last)
        return segments, self.features(y, segments)

    # ------------------------------------------------------------------ windows

    def windows(self, blocks: Iterable[np.ndarray], name: str) -> Iterator[Window]:
        """Windows of a recording given as consecutive blocks of samples at the model rate.

        Holds at most one window plus one block: a window is cut only once more than a
        window's worth of audio follows it, so the last window is never a sliver."""
        buf = np.zeros(0, dtype=np.float32)
        offset = total = 0
        sound = False
        for block in blocks:
            block = np.asarray(block, dtype=np.float32)
            total += len(block)
            sound = sound or bool(np.any(block))
            buf = np.concatenate([buf, block])
            while len(buf) > self.whole_samples:
                yield self._window(buf[:self.window_samples], offset)
                buf = buf[self.step_samples:]
                offset += self.step_samples
        if total == 0:
            raise AudioError(name, "empty audio (0 samples)")
        if not sound:
            raise AudioError(name, "silent audio (all samples are zero)")
        if total < self.cfg.audio.min_duration_s * self.sample_rate:
            raise AudioError(name, f"too short ({total / self.sample_rate:.3f} s < minimum "
                                   f"{self.cfg.audio.min_duration_s:g} s)")
        yield self._window(buf, offset)

    def waveform_windows(self, y: np.ndarray, sr: int, name: str = "<array>") -> Iterator[Window]:
        """Windows of an in-memory mono waveform at ``sr`` Hz (resampled to the model rate)."""
        y = validate_waveform(y, sr, name)
        y = validate_waveform(resample(y, sr, self.sample_rate), self.sample_rate, name,
                              self.cfg.audio.min_duration_s)
        return self.recording_windows(y, name)

    def recording_windows(self, y: np.ndarray, name: str) -> Iterator[Window]:
        """Windows of a whole recording held in memory (checked mono samples at the model rate):
        up to :attr:`whole_samples`, one window, as extraction reads a corpus file; longer, the
        windows of :meth:`windows`."""
        if len(y) <= self.whole_samples:
            return iter([self._whole_window(y, name)])
        return self.windows([y], name)

    def _whole_window(self, y: np.ndarray, name: str, n_samples: int | None = None) -> Window:
        """A recording read whole, as extraction reads a corpus file: its leading and trailing
        silence cut when ``audio.trim_db`` says so (the window's offset is then where the kept
        audio starts). Streamed long recordings are not trimmed: silence at their ends is a
        small part of them."""
        if self.cfg.audio.trim_db is None:
            return self._window(y, 0, n_samples)
        y, start = trim_silence(y, self.sample_rate, self.cfg.audio.trim_db, self.cfg.audio.min_duration_s, name)
        return self._window(y, start)

    def file_windows(self, path: str | Path) -> Iterator[Window]:
        """Windows of an audio file. Files up to :attr:`whole_samples` long are read whole,
        exactly as feature extraction reads them; longer ones are streamed."""
        name = str(path)
        if Path(path).is_dir():
            raise AudioError(name, "is a folder, not an audio file (`camser predict` expands folders)")
        if not Path(path).is_file():
            raise AudioError(name, "file not found")
        n = resampled_length(path, self.sample_rate)
        if n <= self.whole_samples:
            y = load_audio(path, sr=self.sample_rate, min_duration_s=self.cfg.audio.min_duration_s)
            return iter([self._whole_window(y, name, n_samples=n)])
        return self.windows(stream_audio(path, self.step_samples / self.sample_rate, self.sample_rate), name)
