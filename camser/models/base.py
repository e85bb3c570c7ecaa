"""The model contract, written once.

camser has two kinds of model, and every registered model is one of these two classes:

* :class:`SegmentModel` (``kind="torch"``): an ``nn.Module`` mapping a batch dict of segment
  features to logits, trained by epochs (:func:`camser.training.trainer.fit`). Its hooks, with
  the defaults a model overrides only where it differs:

  ========================  ===========================================================
  ``inputs``                batch keys it reads (the features to extract and feed)
  ``optional_inputs``       keys read when the batch has them (``valid``, ``owner``)
  ``pools_segments``        given ``owner``, it pools an utterance's segments before its
                            head (``train.unit: utterance``)
  ``fit_normalizers``       fit input statistics on the training rows before training
  ``batch_builder``         batches with more than the cached frames (None: cached frames)
  ``training_loss``         the loss on logits (cross-entropy by default)
  ``save_pretrained``       ``config.json`` + ``model.safetensors``; ``from_pretrained``
                            rebuilds (Hugging Face's layout; no pickles)
  ========================  ===========================================================

* :class:`UtteranceModel` (``kind="sklearn"``): one vector per utterance,
  ``fit(X, y, groups)`` and ``predict_proba(X)``, fitted once per fold.

Models receive the few settings they use (``sample_rate``), never the experiment config.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import nn

from ..config import from_dict
from ..errors import CamserError


class SegmentModel(nn.Module):
    """Base of the torch-kind models (see the module docstring). A subclass sets
    ``model_name`` (its registry name, written into ``config.json``) and ``config_class`` (its
    config dataclass, kept as ``self.config``)."""

    model_name: str = ""
    config_class: type = object
    optional_inputs: tuple[str, ...] = ()
    pools_segments: bool = False
    _classes: dict[str, type] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.model_name:
            SegmentModel._classes[cls.model_name] = cls

    @staticmethod
    def named(name: str) -> type:
        """The class whose ``model_name`` is ``name`` (what a saved config.json names)."""
        if name not in SegmentModel._classes:
            raise CamserError(f"unknown network {name!r} (known: {', '.join(sorted(SegmentModel._classes))})")
        return SegmentModel._classes[name]

    @property
    def inputs(self) -> tuple[str, ...]:
        raise NotImplementedError

    def fit_normalizers(self, stores: dict, rows) -> "SegmentModel":
        """Fit input statistics on the training ``rows`` of ``stores`` (default: none to fit)."""
        return self

    def batch_builder(self, data, sample_rate: int):
        """``builder(stores, segs, idx) -> batch`` for batches with more than the cached frames
        of :attr:`inputs` (``data``: the run's stores, utterances and utterance-level stores);
        None: the cached frames."""
        return None

    def training_loss(self, logits: torch.Tensor, target: torch.Tensor,
                      label_smoothing: float = 0.0) -> torch.Tensor:
        return F.cross_entropy(logits, target, label_smoothing=label_smoothing)

    # ------------------------------------------------------------------ save / load

    def config_dict(self) -> dict:
        return dataclasses.asdict(self.config)

    def save_pretrained(self, directory: str | Path, exclude: str | None = None) -> None:
        """``config.json`` (``name`` + every config field) and ``model.safetensors`` (weights
        and fitted statistics, which are buffers). ``exclude``: a child module left out (e.g.
        a large pretrained encoder the loader is given again)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps({"name": self.model_name, **self.config_dict()}, indent=2))
        save_model(self if exclude is None else _without(self, exclude), str(d / "model.safetensors"))

    @classmethod
    def from_config(cls, config, **kwargs) -> "SegmentModel":
        """An instance of ``config`` whose weights :meth:`from_pretrained` then restores."""
        return cls(config, **kwargs)

    @classmethod
    def from_pretrained(cls, directory: str | Path, **kwargs) -> "SegmentModel":
        """Rebuild from :meth:`save_pretrained`'s folder; ``kwargs`` go to :meth:`from_config`
        (a child module given here, e.g. ``encoder=``, keeps its own weights when the folder
        was saved without it)."""
        d = Path(directory)
        cfg_path, weights = d / "config.json", d / "model.safetensors"
        for f in (cfg_path, weights):
            if not f.is_file():
                raise CamserError(f"{f}: not found (expected a folder written by save_pretrained)")
        section = json.loads(cfg_path.read_text())
        section.pop("name", None)
        model = cls.from_config(from_dict(cls.config_class, section, "model"), **kwargs)
        missing, unexpected = load_model(model, str(weights), strict=False)
        given = tuple(f"{k}." for k, v in kwargs.items() if isinstance(v, nn.Module))
        missing = [k for k in missing if not k.startswith(given)] if given else missing
        if missing or unexpected:
            bad = (unexpected or missing)[0]
            why = ("pass the encoder it was saved with" if bad.startswith("encoder.")
                   else "weights don't match config.json")
            raise CamserError(f"{weights}: {'unexpected' if unexpected else 'missing'} weight '{bad}' ({why})")
        return model


def _without(model: nn.Module, name: str) -> nn.Module:
    """A view of ``model`` (sharing its tensors) whose state dict leaves out child ``name``."""
    view = nn.Module()
    for child_name, child in model.named_children():
        if child_name != name:
            view.add_module(child_name, child)
    return view


class UtteranceModel:
    """Base of the sklearn-kind models: one feature vector per utterance.

    * ``utterance_matrix(data, sample_rate)`` → ``(n_utterances, n_features)`` in
      ``data.utterances`` order; it depends on the model's configuration only, so the
      cross-validation computes it once per run and shares it between folds;
    * ``fit(X, y, groups)``: ``groups`` is each row's speaker, for models that choose
      hyper-parameters on inner speaker folds; the others ignore it;
    * ``predict_proba(X)`` → ``(n, n_classes)``; the prediction is its argmax.

    ``fits_validation_speakers``: it also fits on the fold's validation speakers (because it
    chooses nothing on them); ``chosen``: what it chose on inner folds, recorded per fold;
    ``seeded``: its fit depends on the seed (False: every seed fits the same model, so a vote
    fits it once per fold); ``trains_on_copies``: its vectors pool a segment store's frames, so
    ``features.augment``'s copies can have rows of their own (training examples; test-time
    views).
    """

    n_classes: int
    fits_validation_speakers: bool = False
    chosen: dict | None = None
    seeded: bool = True
    trains_on_copies: bool = False

    def utterance_matrix(self, data, sample_rate: int) -> np.ndarray:
        raise NotImplementedError

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> "UtteranceModel":
        raise NotImplementedError

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X).argmax(1)
