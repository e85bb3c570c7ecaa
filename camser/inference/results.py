"""What a prediction returns: plain dataclasses that turn into JSON with ``to_dict()``.

Kept free of torch so a server (or any consumer of ``camser predict --format json``) can build
and read them without loading a model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..metrics import pool_segments


@dataclass
class SegmentPrediction:
    """One fixed-length segment of the timeline: ``[start_s, end_s)`` in seconds from the start
    of the recording (``end_s`` stops at the end of the audio for the zero-padded last one)."""

    start_s: float
    end_s: float
    label: str
    probabilities: dict[str, float]

    def to_dict(self) -> dict:
        return {"start_s": self.start_s, "end_s": self.end_s, "label": self.label,
                "probabilities": dict(self.probabilities)}


@dataclass
class Prediction:
    """The result for one recording: the utterance ``label`` and ``probabilities`` (label →
    probability, summing to 1) and the per-segment timeline. ``path`` is None for in-memory
    audio. A recording that could not be used has ``error`` set (the reason), ``label`` None
    and no probabilities or segments."""

    path: str | None
    label: str | None
    probabilities: dict[str, float] = field(default_factory=dict)
    segments: list[SegmentPrediction] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def duration_s(self) -> float:
        """Seconds of audio the timeline covers (0 for a failed prediction)."""
        return self.segments[-1].end_s if self.segments else 0.0

    def to_dict(self) -> dict:
        """``{"path", "label", "probabilities", "segments": [{"start_s", "end_s", "label",
        "probabilities"}]}``, plus ``"error"`` only for a recording that failed."""
        out = {"path": self.path, "label": self.label, "probabilities": dict(self.probabilities),
               "segments": [s.to_dict() for s in self.segments]}
        if self.error is not None:
            out["error"] = self.error
        return out


def utterance_probabilities(segment_log_probs: np.ndarray) -> np.ndarray:
    """Segment log-probabilities ``(n_segments, n_classes)`` → utterance probabilities
    ``(n_classes,)``: the mean of the segments' log-probabilities (cross-validation's pooling,
    :func:`camser.metrics.pool_segments`), renormalised with a softmax. Its argmax is
    the label cross-validation would score."""
    logp = np.asarray(segment_log_probs)
    _, mean = pool_segments([0] * len(logp), logp)
    z = np.exp(mean[0] - mean[0].max())
    return z / z.sum()


def build_prediction(path: str | None, labels: list[str], bounds_s: list[tuple[float, float]],
                     segment_log_probs: np.ndarray, views: list[np.ndarray] = ()) -> Prediction:
    """A :class:`Prediction` from each segment's ``(start_s, end_s)`` and log-probabilities.
    ``views``: the segment log-probabilities of augmented copies of the same audio
    (test-time augmentation): the utterance's probabilities are then the mean of each view's
    (the original's included), as cross-validation scores them; segments stay the original's."""
    labels = list(labels)
    probs = utterance_probabilities(segment_log_probs)
    if len(views):
        probs = (probs + sum(utterance_probabilities(v) for v in views)) / (1 + len(views))
    seg_probs = np.exp(np.asarray(segment_log_probs, dtype=np.float64))
    segments = [SegmentPrediction(float(s), float(e), labels[int(p.argmax())],
                                  {lab: float(x) for lab, x in zip(labels, p)})
                for (s, e), p in zip(bounds_s, seg_probs)]
    return Prediction(path, labels[int(probs.argmax())], {lab: float(x) for lab, x in zip(labels, probs)},
                      segments)
