"""camser: speech emotion recognition with co-attention based multi-level acoustic fusion.

``from camser import EmotionRecognizer`` loads a trained model folder; the name (like
``Prediction``, ``SegmentPrediction`` and ``train_model``) is imported on first use, so
``import camser`` itself pulls in neither torch nor transformers.
"""
__version__ = "0.1.0"

_LAZY = {"EmotionRecognizer", "Prediction", "SegmentPrediction", "train_model", "evaluate_model"}


def __getattr__(name: str):
    if name in _LAZY:
        from . import inference
        value = getattr(inference, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'camser' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _LAZY)
