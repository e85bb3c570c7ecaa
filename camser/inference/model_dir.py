"""The model folder ``camser train`` writes and :class:`EmotionRecognizer` reads.

Everything needed to turn new audio into the same inputs the model was trained on, as
JSON/YAML and safetensors (nothing pickled, so a folder from elsewhere is safe to load)::

    config.json         the model's architecture (CAMSER.save_pretrained)
    model.safetensors   its weights, including the fitted MFCC/spectrogram normalisers (buffers)
                        and, for train.mode=finetune, the fine-tuned SSL encoder
    features.yaml       the audio, segments and features sections: the feature pipeline
    experiment.yaml     the whole resolved experiment configuration
    history.json        the training history (per epoch: losses, validation WA/UA)
    run.log             what ``camser train`` logged (appended when it resumes; not read back)
    normalization.safetensors
                        with ``features.normalize`` on: the training speakers' feature statistics
                        (``{key}.mean`` / ``{key}.std``), what new audio is standardised by unless
                        statistics of its own speaker or corpus are given (``adapt``)
    camser.json         written last: format, label names, model inputs, the encoder reference
                        and its output shape, seed, versions, the training and validation speakers

The SSL encoder is referenced, not copied: a hub id, or a local folder stored as an absolute
path. Its architecture (and, in frozen mode, its weights) is loaded from there, so a folder
moved to another machine needs the encoder there too (``EmotionRecognizer.from_pretrained(...,
encoder=PATH)`` or ``camser predict --encoder PATH`` points at it).
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import ExperimentConfig, load_config
from ..errors import CamserError
from ..reports.results import write_json

FORMAT = "camser-model"
FORMAT_VERSION = 1
META, FEATURES, EXPERIMENT, HISTORY = "camser.json", "features.yaml", "experiment.yaml", "history.json"
NORMALIZATION = "normalization.safetensors"


def resolve_encoder(model: str) -> str:
    """A local encoder folder as an absolute path (however it was spelled); hub ids unchanged."""
    local = Path(os.path.expanduser(model))
    return str(local.resolve()) if local.is_dir() else model


def with_resolved_encoder(cfg: ExperimentConfig) -> ExperimentConfig:
    """A copy of ``cfg`` whose ``features.ssl.model`` is :func:`resolve_encoder`'d."""
    cfg = copy.deepcopy(cfg)
    cfg.features.ssl.model = resolve_encoder(cfg.features.ssl.model)
    return cfg


def feature_section(cfg: ExperimentConfig) -> dict:
    """The part of the configuration the numbers fed to the model depend on (features.yaml).
    ``features.cache_dir`` is left out: it says where training kept its cache, nothing more."""
    d = cfg.to_dict()
    features = dict(d["features"])
    features.pop("cache_dir", None)
    return {"audio": d["audio"], "segments": d["segments"], "features": features}


def write_model_dir(out: Path, model, cfg: ExperimentConfig, meta: dict, history: list[dict],
                    normalization=None) -> None:
    """Write the folder (the model's own files first, ``camser.json`` last: a folder without it
    is unfinished). ``cfg`` should already have its encoder resolved; ``normalization``: the
    training-side :class:`~camser.features.normalize.FrameStatistics` (or None)."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    if normalization is not None:
        from safetensors.torch import save_file
        save_file(normalization.tensors(), str(out / NORMALIZATION))
    (out / FEATURES).write_text(yaml.safe_dump(feature_section(cfg), sort_keys=False))
    cfg.save(out / EXPERIMENT)
    write_json(out / HISTORY, history)
    write_json(out / META, {"format": FORMAT, "format_version": FORMAT_VERSION, **meta})


@dataclass
class ModelDir:
    """A model folder as read back: its path, ``camser.json`` and the experiment configuration
    (``experiment.yaml`` with ``features.yaml``'s sections taking precedence)."""

    path: Path
    meta: dict
    cfg: ExperimentConfig

    @property
    def labels(self) -> list[str]:
        return list(self.meta["labels"])

    @property
    def inputs(self) -> list[str]:
        return list(self.meta["inputs"])

    def normalization(self):
        """The training speakers' :class:`~camser.features.normalize.FrameStatistics` when the
        model was trained with ``features.normalize`` on, else None."""
        if self.meta.get("normalize", "none") == "none":
            return None
        path = self.path / NORMALIZATION
        if not path.is_file():
            raise CamserError(f"{path}: not found (the model was trained with features.normalize="
                              f"{self.meta['normalize']} and needs its training statistics)")
        from safetensors.torch import load_file
        from ..features.normalize import FrameStatistics
        return FrameStatistics.from_tensors(load_file(str(path)), source="training speakers")


def read_model_dir(directory: str | Path) -> ModelDir:
    """Read a folder written by :func:`write_model_dir`; a missing or unfinished folder, or one
    from a newer camser, is a one-line :class:`CamserError`."""
    d = Path(directory)
    if not d.is_dir():
        raise CamserError(f"{d}: model folder not found")
    meta_path = d / META
    if not meta_path.is_file():
        raise CamserError(f"{d}: not a camser model folder (no {META}; `camser train` writes one, "
                          "last, so an interrupted training leaves none)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise CamserError(f"{meta_path}: not valid JSON ({e.msg})") from None
    if meta.get("format") != FORMAT:
        raise CamserError(f"{meta_path}: not a camser model description (format {meta.get('format')!r})")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise CamserError(f"{meta_path}: written by a newer camser (model format "
                          f"{meta['format_version']}, this one reads up to {FORMAT_VERSION}); upgrade camser")
    for name in (FEATURES, EXPERIMENT):
        if not (d / name).is_file():
            raise CamserError(f"{d / name}: not found (the model folder is incomplete)")
    features = yaml.safe_load((d / FEATURES).read_text()) or {}
    cfg = load_config(d / EXPERIMENT, data=features)
    return ModelDir(d, meta, cfg)
