"""Use a trained model on new audio: :class:`EmotionRecognizer`.

It joins three replaceable parts: the :class:`~camser.inference.pipeline.FeaturePipeline`
(audio → the training features), a backend (model inputs → log-probabilities; torch here,
another runtime later) and the pooling cross-validation scores with (mean of the segments'
log-probabilities). A server wraps :meth:`EmotionRecognizer.predict` (it takes audio bytes and
file objects as well as paths and arrays); the CLI wraps :meth:`EmotionRecognizer.predict_iter`.
"""
from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from ..audio import load_audio
from ..config import ExperimentConfig
from ..errors import CamserError
from ..runtime import resolve_device
from .backend import Backend, TorchBackend
from .model_dir import read_model_dir, resolve_encoder
from .pipeline import FeaturePipeline, Window
from .results import Prediction, build_prediction

DEFAULT_WINDOW_S = 15.0


class EmotionRecognizer:
    """A trained model plus the exact feature pipeline it was trained with.

    >>> r = EmotionRecognizer.from_pretrained("model/")            # doctest: +SKIP
    >>> p = r.predict("talk.wav")                                   # doctest: +SKIP
    >>> p.label, p.probabilities, p.segments[0].start_s             # doctest: +SKIP

    ``predict`` takes a path, a mono numpy waveform with ``sr=`` (Hz), audio file bytes or a
    binary file object, or a list of any of these (their segments share model batches).
    Each recording is cut into ``cfg.segments`` (3 s) segments; the utterance's probabilities
    are the softmax of the mean of its segments' log-probabilities, as cross-validation scores
    it. A model trained on whole utterances (``train.unit: utterance``) gets a window's
    segments together and pools them before its head, as in training (torch or ONNX); each
    segment then carries its window's answer. Recordings longer than ``2 × window_s`` seconds
    are streamed window by window with the spectrogram's dB reference taken per window (see
    :mod:`camser.inference.pipeline`), so an hour-long file never sits in memory. A model
    trained with ``features.augment.test_time`` is also run on the speed/noise copies of each
    window's audio and the views' probabilities are averaged, as cross-validation scored it.

    Construct from an in-memory model with ``EmotionRecognizer(model, labels, cfg)`` (``cfg``:
    the experiment configuration it was trained with) or from a model folder with
    :meth:`from_pretrained`. ``model`` may also be a ready backend (anything with ``inputs`` and
    ``log_probs(batch)``, see :mod:`camser.inference.backend`), e.g. an
    :class:`~camser.inference.backend.OnnxBackend` (``from_pretrained(..., onnx=FILE)``).
    ``batch_size``: segments per forward pass (default: the experiment's ``train.batch_size``,
    what cross-validation predicted with). ``device``: auto, cpu, cuda or a torch.device.
    """

    def __init__(self, model: torch.nn.Module | Backend, labels: list[str], cfg: ExperimentConfig, *,
                 device: str | torch.device = "auto", encoder=None, batch_size: int | None = None,
                 window_s: float = DEFAULT_WINDOW_S, metadata: dict | None = None, normalization=None):
        self.labels = list(labels)
        self.cfg = cfg
        self.metadata = dict(metadata or {})
        # features.normalize: the statistics new audio is standardised by (training speakers'
        # by default; adapt() replaces them with a speaker's or a corpus's own)
        self.training_normalization = self.normalization = normalization
        self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        # a torch model, or a ready backend (e.g. an OnnxBackend over an exported model)
        self.backend = model if _is_backend(model) else TorchBackend(model, self.device)
        if "ssl" in self.backend.inputs and encoder is None:
            encoder = _ssl_encoder(cfg, self.device)
        self.pipeline = FeaturePipeline(cfg, self.backend.inputs,
                                        encoder if "ssl" in self.backend.inputs else None, window_s)
        self.batch_size = int(batch_size or cfg.train.batch_size)
        if self.batch_size < 1:
            raise CamserError(f"batch_size: must be at least 1, got {self.batch_size}")
        # what one answer of the model covers: a segment, or a whole window (one utterance)
        self.unit = "utterance" if cfg.train.unit == "utterance" and self.backend.pools_segments else "segment"

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, encoder: str | None = None,
                        device: str | torch.device = "auto", batch_size: int | None = None,
                        window_s: float = DEFAULT_WINDOW_S, onnx: str | Path | None = None) -> "EmotionRecognizer":
        """Load a folder written by ``camser train`` (:func:`camser.training.train_model.train_model`).

        ``encoder`` replaces the SSL encoder reference stored in the folder (a hub id or local
        folder; the same encoder, somewhere else). Its output shape must match the one the
        model was trained on.

        ``onnx``: run this file (written by ``camser export-onnx`` from this folder) with
        onnxruntime instead of the torch model; the folder still supplies the labels and the
        feature configuration (and the SSL encoder, unless the file was exported from audio)."""
        md = read_model_dir(directory)
        cfg = md.cfg
        if encoder is not None:
            cfg.features.ssl.model = resolve_encoder(encoder)
        dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
        if onnx is not None:
            from .backend import OnnxBackend
            backend = OnnxBackend(onnx, device=dev)
            backend.check(md)
            ssl = _load_encoder(md, cfg, dev) if "ssl" in backend.inputs else None
            return cls(backend, md.labels, cfg, device=dev, encoder=ssl, batch_size=batch_size,
                       window_s=window_s, metadata=md.meta, normalization=md.normalization())
        from ..models import load_pretrained

        ssl = _load_encoder(md, cfg, dev) if {"ssl", "audio"} & set(md.inputs) else None
        if "audio" in md.inputs:             # fine-tuned: the encoder's weights are in the folder
            from ..features.ssl import FinetuneEncoder
            model = load_pretrained(md.path, encoder=FinetuneEncoder(ssl))
            ssl = None
        else:
            model = load_pretrained(md.path)
        return cls(model, md.labels, cfg, device=dev, encoder=ssl, batch_size=batch_size,
                   window_s=window_s, metadata=md.meta, normalization=md.normalization())

    # ------------------------------------------------------------------ adaptation

    def adapt(self, sources, sr: int | None = None) -> "EmotionRecognizer":
        """Standardise the features of what is predicted next by the statistics of ``sources``
        (paths, folders — searched recursively for audio —, waveforms with ``sr``, bytes): the
        recordings of one speaker, or of one site or corpus. No label is read; the model must
        have been trained with ``features.normalize`` (corpus or speaker). ``adapt(None)``
        returns to the training speakers' statistics. Returns ``self``."""
        from ..features.normalize import FrameStatistics
        if self.training_normalization is None:
            raise CamserError("adapt: this model was trained with features.normalize=none, so it has no "
                              "feature statistics to replace; train it with corpus or speaker normalisation")
        if sources is None:
            self.normalization = self.training_normalization
            return self
        if isinstance(sources, (str, os.PathLike, np.ndarray, bytes, bytearray)) or hasattr(sources, "read"):
            sources = [sources]
        stats = FrameStatistics(source=f"{len(sources)} adaptation input(s)")
        n = 0
        for i, source in enumerate(expand_sources(sources)):
            for window in self._raw_windows(source, sr, _name_of(source, i)):
                stats.accumulate(window.features)
            n += 1
        try:
            self.normalization = stats.finish()
        except ValueError:
            raise CamserError("adapt: no usable audio among the adaptation inputs") from None
        self.normalization.source = f"{n} recording(s)"
        return self

    # ------------------------------------------------------------------ properties

    @property
    def model(self) -> torch.nn.Module | None:
        """The torch model (None when another backend, e.g. ONNX, runs it)."""
        return getattr(self.backend, "model", None)

    @property
    def sample_rate(self) -> int:
        """The rate (Hz) the model's features are computed at; other rates are resampled."""
        return self.pipeline.sample_rate

    @property
    def test_time_copies(self) -> list[str]:
        """The copies of each recording's audio it is also scored on (``features.augment.test_time``;
        e.g. ``["speed0.9", "speed1.1"]``): each costs another pass of feature extraction."""
        return list(self.pipeline.view_specs)

    # ------------------------------------------------------------------ prediction

    def predict(self, inputs, sr: int | None = None):
        """One input → :class:`Prediction`; a list → a list of them, in order.

        ``sr`` (Hz) is the sample rate of numpy waveforms. An unusable input raises
        :class:`~camser.errors.CamserError` (for lists, use :meth:`predict_iter` with
        ``errors="return"`` to get the failures as predictions with ``error`` set)."""
        if isinstance(inputs, (list, tuple)):
            return list(self.predict_iter(inputs, sr=sr))
        return next(self.predict_iter([inputs], sr=sr))

    def predict_iter(self, inputs: Iterable, sr: int | None = None, errors: str = "raise") -> Iterator[Prediction]:
        """Predictions for ``inputs`` in order, each yielded as soon as its last segment has
        been through the model. Segments of consecutive inputs fill the same batches of
        ``batch_size``. ``errors="return"`` yields a failed input as a :class:`Prediction` with
        ``error`` set instead of raising, and goes on with the rest."""
        if errors not in ("raise", "return"):
            raise ValueError(f"errors: expected 'raise' or 'return', got {errors!r}")
        queue = _Batches(self.backend, self.batch_size, whole_windows=self.unit == "utterance")
        waiting: deque[_Item] = deque()
        for i, source in enumerate(inputs):
            item = _Item(_path_of(source), _name_of(source, i))
            waiting.append(item)
            try:
                for window in self._windows(source, sr, item.name):
                    item.bounds += window.bounds()
                    queue.add(item, window)
            except CamserError as e:
                if errors == "raise":
                    raise
                item.error = str(e)
                queue.drop(item)
            item.closed = True
            yield from self._finished(waiting)
        queue.run(everything=True)
        yield from self._finished(waiting)

    def _finished(self, waiting: deque) -> Iterator[Prediction]:
        while waiting and waiting[0].closed and (waiting[0].error or waiting[0].pending == 0):
            item = waiting.popleft()
            if item.error:
                yield Prediction(item.path, None, error=item.error)
                continue
            sr = self.sample_rate
            bounds_s = [(s / sr, e / sr) for s, e in item.bounds]
            yield build_prediction(item.path, self.labels, bounds_s, np.stack(item.log_probs),
                                   [np.stack(v) for v in item.views])

    def _windows(self, source, sr: int | None, name: str) -> Iterator[Window]:
        for window in self._raw_windows(source, sr, name):
            if self.normalization is not None:
                window.features = self.normalization.apply(window.features)
                window.views = [self.normalization.apply(v) for v in window.views]
            yield window

    def _raw_windows(self, source, sr: int | None, name: str) -> Iterator[Window]:
        if isinstance(source, (str, os.PathLike)):
            return self.pipeline.file_windows(source)
        if isinstance(source, torch.Tensor):
            source = source.detach().cpu().numpy()
        if isinstance(source, np.ndarray):
            if sr is None:
                raise CamserError(f"{name}: a waveform needs its sample rate: predict(array, sr=16000)")
            return self.pipeline.waveform_windows(source, sr, name)
        if isinstance(source, (bytes, bytearray)) or hasattr(source, "read"):
            y = load_audio(bytes(source) if isinstance(source, bytearray) else source,
                           sr=self.sample_rate, name=name)
            return self.pipeline.recording_windows(y, name)
        raise CamserError(f"{name}: expected a path, a numpy waveform (with sr=), audio bytes or a "
                          f"binary file object, got {type(source).__name__}")


# ---------------------------------------------------------------------- helpers

def expand_sources(sources) -> list:
    """``sources`` with every folder replaced by the audio files below it (as ``predict``
    finds them); other inputs unchanged."""
    from .output import find_audio
    out = []
    for source in sources:
        if isinstance(source, (str, os.PathLike)):
            out += find_audio([source])[0]
        else:
            out.append(source)
    return out


def _is_backend(obj) -> bool:
    """A ready backend (``inputs`` + ``log_probs``) rather than a torch model to wrap."""
    return not isinstance(obj, torch.nn.Module) and hasattr(obj, "log_probs") and hasattr(obj, "inputs")


def _load_encoder(md, cfg: ExperimentConfig, device: torch.device):
    """The SSL encoder a model folder was trained with, checked against the frame shape it saw."""
    try:
        ssl = _ssl_encoder(cfg, device)
    except CamserError as e:
        raise CamserError(f"{md.path}: could not load the SSL encoder it was trained with "
                          f"({e}); point at it with encoder= (--encoder PATH)") from None
    expected = (md.meta.get("encoder") or {}).get("output_shape")
    if expected is not None and list(ssl.output_shape) != list(expected):
        raise CamserError(f"{md.path}: encoder {cfg.features.ssl.model} gives frames of shape "
                          f"{list(ssl.output_shape)}, the model was trained on {list(expected)}")
    return ssl


def _ssl_encoder(cfg: ExperimentConfig, device: torch.device):
    from ..features.ssl import SSLEncoder
    seg, _ = cfg.segments.samples(cfg.audio.sample_rate)
    return SSLEncoder(cfg.features.ssl, seg, device=device, sample_rate=cfg.audio.sample_rate)


def _path_of(source) -> str | None:
    return str(source) if isinstance(source, (str, os.PathLike)) else None


def _name_of(source, index: int) -> str:
    """What error messages call an input."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    name = getattr(source, "name", None)
    return str(name) if isinstance(name, str) else f"<input {index}>"


class _Item:
    """One input on its way through: its segments' bounds (samples), the log-probabilities
    computed so far (of its test-time copies' segments too, one list per copy), how many of
    its segments still wait for the model."""

    def __init__(self, path: str | None, name: str):
        self.path, self.name = path, name
        self.bounds: list[tuple[int, int]] = []
        self.log_probs: list[np.ndarray] = []
        self.views: list[list[np.ndarray]] = []
        self.pending = 0
        self.closed = False
        self.error: str | None = None


class _Batches:
    """Segments waiting for the model, first in first out, run ``batch_size`` at a time.

    Holds each window's feature arrays as they came and copies only the rows of the batch
    being run, so memory is one batch plus what is waiting (< a batch and a window).
    ``whole_windows``: a window is never split between batches; the batch carries ``owner``
    (its window of each segment) and the backend answers once per window."""

    def __init__(self, backend, batch_size: int, whole_windows: bool = False):
        self.backend, self.batch_size, self.whole_windows = backend, batch_size, whole_windows
        # (input, where its answers go, feature rows): a window, or a test-time copy of one
        self.chunks: deque[tuple[_Item, list, dict[str, np.ndarray]]] = deque()
        self.waiting = 0

    def add(self, item: _Item, window: Window) -> None:
        while len(item.views) < len(window.views):
            item.views.append([])
        for sink, features in [(item.log_probs, window.features), *zip(item.views, window.views)]:
            n = _n_rows(features)
            item.pending += n
            self.waiting += n
            self.chunks.append((item, sink, features))
        self.run()

    def drop(self, item: _Item) -> None:
        """Forget the waiting segments of a failed input."""
        self.chunks = deque(c for c in self.chunks if c[0] is not item)
        self.waiting -= item.pending
        item.pending = 0

    def run(self, everything: bool = False) -> None:
        """Run every full batch (and, with ``everything``, the remainder)."""
        if self.whole_windows:
            return self._run_windows(everything)
        while self.waiting >= self.batch_size or (everything and self.waiting):
            take = min(self.batch_size, self.waiting)
            owners: list[tuple[_Item, list]] = []
            parts: list[dict[str, np.ndarray]] = []
            while len(owners) < take:
                item, sink, features = self.chunks[0]
                rows = _n_rows(features)
                use = min(rows, take - len(owners))
                parts.append({k: v[:use] for k, v in features.items()})
                owners += [(item, sink)] * use
                if use == rows:
                    self.chunks.popleft()
                else:
                    self.chunks[0] = (item, sink, {k: v[use:] for k, v in features.items()})
            batch = {k: (parts[0][k] if len(parts) == 1 else np.concatenate([p[k] for p in parts]))
                     for k in parts[0]}
            for (item, sink), row in zip(owners, self.backend.log_probs(batch)):
                sink.append(row)
                item.pending -= 1
            self.waiting -= take

    def _run_windows(self, everything: bool) -> None:
        """Whole windows, as many as fit in ``batch_size`` segments (at least one)."""
        while self.waiting >= self.batch_size or (everything and self.waiting):
            taken: list[tuple[_Item, list, dict[str, np.ndarray]]] = []
            rows = 0
            while self.chunks and (not taken or rows + _n_rows(self.chunks[0][2]) <= self.batch_size):
                taken.append(self.chunks.popleft())
                rows += _n_rows(taken[-1][2])
            sizes = [_n_rows(features) for *_, features in taken]
            batch = {k: np.concatenate([f[k] for *_, f in taken]) for k in taken[0][2]}
            batch["owner"] = np.repeat(np.arange(len(taken), dtype=np.int64), sizes)
            for (item, sink, _), n, row in zip(taken, sizes, self.backend.log_probs(batch)):
                sink += [row] * n                    # each segment carries its window's answer
                item.pending -= n
            self.waiting -= rows


def _n_rows(features: dict[str, np.ndarray]) -> int:
    return len(next(iter(features.values())))
