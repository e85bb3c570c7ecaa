"""One record per model: how to build it, load it, what it reads and what kind it is.

``build_model({"name": "camser", "preset": "cpu"}, n_classes=4, feature_dims={"mfcc": (300, 40),
"spectrogram": (300, 200), "ssl": (7, 150, 512)})``. A model module registers itself with
:func:`register_model`; :mod:`camser.models` imports every model module, so the registry is
complete once the package is imported.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import from_dict
from ..errors import CamserError, ConfigError

KINDS = ("torch", "sklearn")


@dataclass(frozen=True)
class ModelRecord:
    """``build(section, n_classes, feature_dims[, encoder=] [, seed=])`` → an untrained model;
    ``load(directory[, encoder=])`` → a model saved by ``save_pretrained`` (None: it can't be
    saved as a model folder); ``inputs(section)`` → the batch keys it reads, known before any
    data is read; ``kind``: ``torch`` (a :class:`~camser.models.base.SegmentModel`) or
    ``sklearn`` (an :class:`~camser.models.base.UtteranceModel`); ``prepare(cfg, utterances,
    cache_dir, progress)`` → the utterance-level stores it needs (text embeddings, openSMILE
    functionals), extracted once per run; ``config``: its config dataclass, whose fields (each
    declaring its allowed values, see :func:`camser.config.checked`) the section sets;
    ``check(section)`` → that config built from the section without any data, every field
    checked (None: the section's fields, ``name`` aside, straight into ``config``)."""

    name: str
    build: Callable
    inputs: Callable[[dict], set[str]]
    kind: str = "torch"
    load: Callable | None = None
    prepare: Callable | None = None
    config: type | None = None
    check: Callable[[dict], Any] | None = None

    def checked_config(self, section: dict):
        """The model section → its config (sizes read from the data left at their defaults);
        a field out of its declared values is a one-line :class:`ConfigError` naming it."""
        if self.check is not None:
            return self.check(dict(section))
        if self.config is None:
            return None
        return from_dict(self.config, {k: v for k, v in section.items() if k != "name"}, "model")


REGISTRY: dict[str, ModelRecord] = {}


def register_model(name: str, inputs: Callable[[dict], set[str]], kind: str = "torch",
                   loader: Callable | None = None, prepare: Callable | None = None, config: type | None = None,
                   check: Callable[[dict], Any] | None = None):
    """Decorator registering ``builder`` under ``name`` (see :class:`ModelRecord`)."""
    if kind not in KINDS:
        raise ValueError(f"register_model: kind must be one of {KINDS}, got {kind!r}")

    def deco(builder):
        REGISTRY[name] = ModelRecord(name, builder, inputs, kind, loader, prepare, config, check)
        return builder
    return deco


def model_record(model_section: dict) -> ModelRecord:
    name = (model_section or {}).get("name")
    if name not in REGISTRY:
        raise ConfigError(f"model.name: {name!r} is not a known model (known: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[name]


def required_inputs(model_section: dict) -> set[str]:
    """The batch keys (``mfcc``, ``spectrogram``, ``ssl``, ``chroma``, ``melspec``; also
    ``text``, ``opensmile`` for utterance-level inputs) the configured model reads: which
    features to extract."""
    return set(model_record(model_section).inputs(dict(model_section)))


def check_model_section(model_section: dict) -> None:
    """The model section's own fields, checked before any data is read (a mistake is one line,
    before anything is extracted or written): the name, every field of the model's config
    (its declared values and the rules between fields; no network is built) and the fields its
    ``inputs`` reads."""
    record = model_record(model_section)
    record.checked_config(dict(model_section))
    record.inputs(dict(model_section))


def check_vote(model_section: dict, vote_models: list[dict]) -> None:
    """A vote's second models (``vote.model``, then each of ``vote.also``): utterance-level
    models voting beside a network."""
    for i, vote_model in enumerate(vote_models):
        where = "vote.model" if i == 0 else f"vote.also[{i - 1}].model"
        if model_kind(model_section) != "torch":
            raise ConfigError(f"{where}: a vote averages a network's probabilities with a second model's; "
                              f"model.name {model_section.get('name')} is not a network")
        record = model_record(vote_model)
        if record.kind != "sklearn":
            fitted = ", ".join(sorted(n for n, r in REGISTRY.items() if r.kind == "sklearn"))
            raise ConfigError(f"{where}.name: {record.name} is a network; the second model of a vote is "
                              f"fitted on utterance vectors ({fitted})")
        check_model_section(vote_model)


def model_kind(model_section: dict) -> str:
    """``"torch"`` or ``"sklearn"`` (see :mod:`camser.models.base`)."""
    return model_record(model_section).kind


def saveable_models() -> list[str]:
    """Names of the models that can be written as a model folder (``camser train``)."""
    return sorted(name for name, r in REGISTRY.items() if r.load is not None)


def prepare_utterance_inputs(cfg, utterances, cache_dir, progress: bool = True) -> dict:
    """The utterance-level stores the configured model registered a ``prepare`` for ({} if none)."""
    record = model_record(cfg.model)
    return {} if record.prepare is None else dict(record.prepare(cfg, utterances, cache_dir, progress))


def build_model(model_section: dict, n_classes: int, feature_dims: dict | None = None,
                encoder=None, seed: int | None = None):
    """The experiment's ``model:`` mapping (``name`` + that model's fields) → an untrained model.
    ``feature_dims`` gives the per-segment input shapes, which fill the input sizes. ``encoder``
    (fine-tuning: audio → SSL frames) goes to torch-kind builders; ``seed`` to sklearn-kind
    ones (their estimators' random state)."""
    section = dict(model_section or {})
    record = model_record(section)
    if record.kind == "sklearn":
        return record.build(section, n_classes, dict(feature_dims or {}), seed=0 if seed is None else int(seed))
    extra = {} if encoder is None else {"encoder": encoder}
    return record.build(section, n_classes, dict(feature_dims or {}), **extra)


def load_pretrained(directory: str | Path, **kwargs):
    """A model folder written by ``save_pretrained`` (its ``config.json`` names the model);
    ``kwargs`` (e.g. ``encoder=``) go to that model's loader."""
    cfg = Path(directory) / "config.json"
    if not cfg.is_file():
        raise CamserError(f"{cfg}: not found (expected a folder written by save_pretrained)")
    name = json.loads(cfg.read_text()).get("name")
    record = REGISTRY.get(name)
    if record is None or record.load is None:
        raise CamserError(f"{cfg}: unknown model name {name!r}")
    return record.load(directory, **kwargs)
