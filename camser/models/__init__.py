"""Models and the registry that builds one from an experiment's ``model:`` section.

``build_model({"name": "camser", "preset": "cpu"}, n_classes=4,
feature_dims={"mfcc": (300, 40), "spec": (300, 200), "ssl": (7, 150, 512)})``.
Other models register a builder with :func:`register_model`.

Two kinds of model run through the same cross-validation (:func:`model_kind`):

* ``"torch"`` — an ``nn.Module`` mapping a batch dict of segment features to logits, trained
  by :func:`camser.training.trainer.fit` (CA-MSER, ``lstm``, ``query2label``, ``multimodal``);
* ``"sklearn"`` — an :class:`~camser.models.classic.UtteranceModel`: one feature vector per
  utterance (``utterance_matrix(data, cfg)``), ``fit(X, y)`` and ``predict_proba(X)``
  (``mlp``, ``opensmile``, ``random``).

A model may also register ``prepare(cfg, utterances, cache_dir, progress)``: utterance-level
stores it needs (text embeddings, openSMILE functionals), extracted once per run into
``PreparedData.utterance_stores``.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from torch import nn

from ..errors import CamserError, ConfigError
from .camser import ABLATIONS, CAMSER, PRESETS, CAMSERConfig, config_from_section

# name → builder(model_section, n_classes, feature_dims[, encoder=]) -> nn.Module
MODELS: dict[str, Callable[..., nn.Module]] = {}
# name → loader(directory) -> nn.Module, for folders written by save_pretrained
LOADERS: dict[str, Callable[..., nn.Module]] = {}
# name → inputs(model_section) -> set of batch keys, known before any data is read
INPUTS: dict[str, Callable[[dict], set[str]]] = {}
# name → "torch" (nn.Module trained by the training loop) | "sklearn" (UtteranceModel)
MODEL_KINDS: dict[str, str] = {}
# name → prepare(cfg, utterances, cache_dir, progress) -> {batch key: utterance-level FeatureStore}
PREPARERS: dict[str, Callable] = {}


def register_model(name: str, loader: Callable[..., nn.Module] | None = None,
                   inputs: Callable[[dict], set[str]] | None = None, kind: str = "torch",
                   prepare: Callable | None = None):
    """Decorator adding ``builder(model_section, n_classes, feature_dims)`` under ``name``
    (with an optional ``loader(directory)``, ``inputs(model_section)`` and
    ``prepare(cfg, utterances, cache_dir, progress)``). ``kind="sklearn"`` builders also take
    ``seed=`` and return an :class:`~camser.models.classic.UtteranceModel`."""
    if kind not in ("torch", "sklearn"):
        raise ValueError(f"register_model: kind must be 'torch' or 'sklearn', got {kind!r}")

    def deco(builder):
        MODELS[name] = builder
        MODEL_KINDS[name] = kind
        if loader is not None:
            LOADERS[name] = loader
        if inputs is not None:
            INPUTS[name] = inputs
        if prepare is not None:
            PREPARERS[name] = prepare
        return builder
    return deco


def _check_name(section: dict) -> str:
    name = (section or {}).get("name")
    if name not in MODELS:
        raise ConfigError(f"model.name: {name!r} is not a known model (known: {', '.join(sorted(MODELS))})")
    return name


def required_inputs(model_section: dict) -> set[str]:
    """The batch keys (``mfcc``, ``spec``, ``ssl``, ``chroma``, ``melspec``; also ``text``,
    ``opensmile`` for utterance-level inputs) the configured model reads: which features to
    extract. Models without an ``inputs`` function are taken to read mfcc, spec and ssl."""
    name = _check_name(model_section)
    return INPUTS[name](dict(model_section)) if name in INPUTS else {"mfcc", "spec", "ssl"}


def model_kind(model_section: dict) -> str:
    """``"torch"`` or ``"sklearn"`` (see the module docstring)."""
    return MODEL_KINDS[_check_name(model_section)]


def prepare_utterance_inputs(cfg, utterances, cache_dir, progress: bool = True) -> dict:
    """The utterance-level stores the configured model registered a ``prepare`` for ({} if none)."""
    name = _check_name(cfg.model)
    return dict(PREPARERS[name](cfg, utterances, cache_dir, progress)) if name in PREPARERS else {}


def build_model(model_section: dict, n_classes: int, feature_dims: dict | None = None,
                encoder: nn.Module | None = None, seed: int | None = None):
    """The experiment's ``model:`` mapping (``name`` + that model's fields) → an untrained model.
    ``feature_dims`` gives the per-segment input shapes, which fill the input sizes. ``encoder``
    (fine-tuning: audio → SSL frames) is passed on to builders that take one; ``seed`` to
    ``sklearn``-kind builders (their estimators' random state)."""
    section = dict(model_section or {})
    name = _check_name(section)
    extra = {} if encoder is None else {"encoder": encoder}
    if MODEL_KINDS[name] == "sklearn":
        extra["seed"] = 0 if seed is None else int(seed)
    return MODELS[name](section, n_classes, dict(feature_dims or {}), **extra)


def load_pretrained(directory: str | Path, **kwargs) -> nn.Module:
    """A model folder written by ``save_pretrained`` (its ``config.json`` names the model);
    ``kwargs`` (e.g. ``encoder=``) go to that model's loader."""
    cfg = Path(directory) / "config.json"
    if not cfg.is_file():
        raise CamserError(f"{cfg}: not found (expected a folder written by save_pretrained)")
    name = json.loads(cfg.read_text()).get("name")
    if name not in LOADERS:
        raise CamserError(f"{cfg}: unknown model name {name!r}")
    return LOADERS[name](directory, **kwargs)


def _camser_inputs(section: dict) -> set[str]:
    # n_classes is not known yet: any valid placeholder builds the config
    return set(config_from_section(section, section.get("n_classes", 1)).inputs)


@register_model("camser", loader=CAMSER.from_pretrained, inputs=_camser_inputs)
def _build_camser(section: dict, n_classes: int, feature_dims: dict,
                  encoder: nn.Module | None = None) -> CAMSER:
    return CAMSER(config_from_section(section, n_classes, feature_dims), encoder)


# the baselines register themselves (after the registry above exists)
from . import baselines, classic, multimodal  # noqa: E402,F401

__all__ = ["ABLATIONS", "CAMSER", "CAMSERConfig", "PRESETS", "MODELS", "MODEL_KINDS", "build_model",
           "config_from_section", "load_pretrained", "model_kind", "prepare_utterance_inputs",
           "register_model", "required_inputs"]
