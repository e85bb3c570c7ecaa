"""Use a trained model on new audio.

* :func:`~camser.training.train_model.train_model` (``camser train``): one model on a whole corpus →
  a model folder (:mod:`~camser.inference.model_dir`).
* :class:`~camser.inference.recognizer.EmotionRecognizer` (``camser predict``): a model folder
  → labels, probabilities and a per-segment timeline for files, folders, arrays or bytes.
* :func:`~camser.inference.evaluate.evaluate_model` (``camser evaluate``): a model folder scored
  on another corpus (cross-corpus), in ``camser cv``'s results.json schema.

Names are imported on first use, so ``import camser.inference`` stays light.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "EmotionRecognizer": "recognizer",
    "Prediction": "results",
    "SegmentPrediction": "results",
    "train_model": "train",
    "evaluate_model": "evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
