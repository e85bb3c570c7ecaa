"""The experiment configuration: one dataclass tree ↔ one YAML file.

Sections follow the pipeline: corpus → labels → audio → segments → features → model → train →
protocol → output. ``load_config(path, overrides=["train.lr=1e-4"])`` reads a YAML file and
applies ``--set`` style overrides; unknown fields are an error that names the field.
Relative paths in a config are relative to the working directory (run from the repository root).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


NORMALIZE_MODES = ("none", "corpus", "speaker")


@dataclass
class CorpusConfig:
    name: str = "iemocap"          # iemocap | ravdess | cremad | emodb | tess | csv
    root: str | None = None        # corpus folder (or the CSV file for name=csv)
    prepared: str | None = None    # a folder written by `camser prepare` (manifest.csv)
    folds_csv: str | None = None   # predefined folds (e.g. EmoBox), used by protocol.scheme=csv


@dataclass
class LabelsConfig:
    # null → the corpus's default set (IEMOCAP: ang, sad, hap, neu with exc merged into hap);
    # "all" → every category the corpus has; or an explicit list (after merging).
    include: list[str] | str | None = None
    merge: dict[str, str] | None = None   # null → the corpus default; {} → merge nothing


@dataclass
class AudioConfig:
    sample_rate: int = 16_000
    min_duration_s: float = 0.1
    pre_emphasis: float = 0.0      # the published CA-MSER code uses 0.97 before every branch


@dataclass
class SegmentsConfig:
    length_s: float = 3.0
    hop_s: float | None = None     # null → length_s (non-overlapping)
    last: str = "pad"              # pad (the paper: zero-pad the last segment) | align (end it at the audio's end)

    def samples(self, sr: int) -> tuple[int, int]:
        length = int(round(self.length_s * sr))
        return length, int(round((self.hop_s or self.length_s) * sr))


@dataclass
class MFCCConfig:
    n_mfcc: int = 40
    htk: bool = True
    hop_length: int = 160


@dataclass
class SpectrogramConfig:
    n_fft: int = 800
    win_length: int = 640
    hop_length: int = 160
    window: str = "hamming"
    n_bins: int = 200              # 0–4 kHz at 16 kHz / 800-point DFT
    top_db: float = 80.0


@dataclass
class ChromaConfig:
    n_chroma: int = 12
    n_fft: int = 2048              # librosa's default (128 ms at 16 kHz: chroma needs the resolution)
    hop_length: int = 160
    tuning: float | None = 0.0     # in fractions of a chroma bin; null → librosa estimates it per segment


@dataclass
class MelSpecConfig:
    n_mels: int = 128
    n_fft: int = 1024
    win_length: int = 400          # 25 ms window, zero-padded to n_fft
    hop_length: int = 160
    fmin: float = 0.0
    fmax: float | None = None      # null → sr / 2
    db: bool = True                # log power in dB (ref 1.0, no top_db clipping); false → power


@dataclass
class SSLConfig:
    model: str = "facebook/wav2vec2-base"   # hub id or local folder
    layer: int | str = "last"               # "last", an index into hidden_states, "all", "mean"
    normalize: bool | None = None           # per-chunk zero mean/unit variance; null → as the model's feature extractor
    dtype: str = "float16"                  # storage dtype of the cache
    batch_size: int = 8
    frame_pool: int = 1                     # average-pool the frames in time by this factor before caching
                                            # (4: 50 → 12.5 frames/s, a quarter of the cache and of the work)


@dataclass
class FeaturesConfig:
    kinds: list[str] = field(default_factory=lambda: ["mfcc", "spectrogram", "ssl"])   # + chroma, melspec
    mfcc: MFCCConfig = field(default_factory=MFCCConfig)
    spectrogram: SpectrogramConfig = field(default_factory=SpectrogramConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    chroma: ChromaConfig = field(default_factory=ChromaConfig)
    melspec: MelSpecConfig = field(default_factory=MelSpecConfig)
    cache_dir: str | None = None            # null → <prepared>/cache
    # Standardise every feature level (MFCC, spectrogram, SSL frames; a baseline's pooled
    # vectors) before the model: none | corpus (one mean/std fitted on the training speakers:
    # strict) | speaker (each speaker's own mean/std from its unlabelled audio, test speakers
    # included: transductive, and every report says so).
    normalize: str = "none"


@dataclass
class TrainConfig:
    mode: str = "frozen"          # frozen (SSL frames from the cache) | finetune (encoder trained from audio)
    optimizer: str = "adamw"      # adamw | adam | sgd (momentum 0.9, nesterov)
    lr: float = 1e-5
    weight_decay: float = 0.01
    schedule: str = "constant"    # constant | cosine (per step, after warmup_epochs of linear warm-up)
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    grad_clip: float | None = None  # max gradient norm; null → no clipping
    mixup: float = 0.0            # Beta(α, α) mixup of inputs and targets in training; 0 → off
    frame_mask: float = 0.0       # SpecAugment-style: zero one random span of up to this fraction of each
                                  # training example's frames (every frame feature, same span); 0 → off
    unit: str = "segment"         # segment (each 3 s segment an example) | utterance (an utterance's
                                  # segments in one example, pooled before the head)
    ensemble: int = 1             # cv: N models per fold (seeds seed, seed+1, …), probabilities averaged
                                  # (`camser train` still saves one model: the first seed's)
    batch_size: int = 64
    max_epochs: int = 100
    patience: int = 8
    min_epochs: int = 5
    select_on: str = "wa+ua"      # validation score that picks the checkpoint
    keep: str = "best"            # best (the epoch the validation speakers score best; early stopping) |
                                  # last (every epoch runs, the last weights are kept: with a cosine
                                  # schedule, no choice hinges on a few validation speakers)
    seeds: list[int] = field(default_factory=lambda: [111])   # one repeat per seed
    num_threads: int | None = None
    device: str = "auto"          # auto | cpu | cuda
    amp: bool = True              # mixed precision on GPU
    distribute: str = "data"      # under torchrun: "data" (DDP inside each fold) | "folds" (folds spread over ranks)


@dataclass
class ProtocolConfig:
    scheme: str = "loso"          # loso (leave one session out) | loso_speaker | lnso | csv | holdout
    n_speakers: int = 1           # for lnso: speakers held out per fold
    validation: str = "clean"     # clean (validation speakers from the training side) | paper (validation = test)
    val_speakers: int = 1         # clean: how many training speakers to hold out for validation
    folds: list[int] | None = None  # run only these folds (1-based)


@dataclass
class OutputConfig:
    tsne: bool = True
    curves: bool = True


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    segments: SegmentsConfig = field(default_factory=SegmentsConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    model: dict[str, Any] = field(default_factory=lambda: {"name": "camser"})
    train: TrainConfig = field(default_factory=TrainConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


# ---------------------------------------------------------------- building from dicts

def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Coerce/validate a YAML value against a dataclass field type (the small set we use)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(value, a, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: {value!r} is not a valid value (expected {_type_name(tp)})")
    if tp is Any:
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (a,) = typing.get_args(tp)
        return [_check_type(v, a, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "")


def from_dict(cls, data: dict | None, where: str = ""):
    """Build dataclass ``cls`` from a mapping; unknown keys are an error naming the field."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        field_name = f"{where}.{sorted(unknown)[0]}" if where else sorted(unknown)[0]
        raise ConfigError(f"{field_name}: unknown field (known: {', '.join(sorted(names))})")
    kwargs = {k: _check_type(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item}: expected key=value (e.g. train.lr=1e-4)")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """``["a.b=1", "model.name=mlp"]`` applied onto a nested dict (values parsed as YAML)."""
    for item in overrides or []:
        keys, value = _parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item}: '{k}' is not a section")
        node[keys[-1]] = value
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                data: dict | None = None) -> ExperimentConfig:
    """YAML file (and/or a dict, deep-merged over it) + ``--set`` overrides → :class:`ExperimentConfig`."""
    raw: dict = {"model": {"name": "camser"}}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        loaded.pop("sweep", None)       # `camser sweep`'s search space: read by camser.sweep
        raw = _deep_merge(raw, loaded)
    if data:
        raw = _deep_merge(raw, data)
    raw = apply_overrides(raw, overrides or [])
    cfg = from_dict(ExperimentConfig, raw)
    for where, value, allowed in (
            ("segments.last", cfg.segments.last, ("pad", "align")),
            ("features.normalize", cfg.features.normalize, NORMALIZE_MODES),
            ("train.optimizer", cfg.train.optimizer, ("adamw", "adam", "sgd")),
            ("train.schedule", cfg.train.schedule, ("constant", "cosine")),
            ("train.unit", cfg.train.unit, ("segment", "utterance")),
            ("train.keep", cfg.train.keep, ("best", "last"))):
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(allowed)}")
    t = cfg.train
    for where, ok, want in (
            ("train.lr", t.lr > 0, "a positive number"),
            ("train.warmup_epochs", t.warmup_epochs >= 0, "a number ≥ 0"),
            ("train.label_smoothing", 0 <= t.label_smoothing < 1, "a number in [0, 1)"),
            ("train.grad_clip", t.grad_clip is None or t.grad_clip > 0, "null or a positive number"),
            ("train.mixup", t.mixup >= 0, "a number ≥ 0 (the Beta distribution's α; 0 → off)"),
            ("train.frame_mask", 0 <= t.frame_mask < 1, "a fraction in [0, 1)"),
            ("train.ensemble", t.ensemble >= 1, "an integer ≥ 1")):
        if not ok:
            raise ConfigError(f"{where}: expected {want}, got {getattr(t, where.split('.')[1])!r}")
    if t.mixup > 0 and t.unit == "utterance":
        raise ConfigError("train.mixup: mixes examples row by row, so it needs train.unit: segment "
                          "(an utterance example spans several segment rows)")
    if "name" not in cfg.model:
        raise ConfigError("model.name: missing (e.g. camser)")
    return cfg


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config_hash(*parts: Any, n: int = 12) -> str:
    """Stable short hash of JSON-able parts (dataclasses allowed): names caches."""
    def norm(x):
        return dataclasses.asdict(x) if dataclasses.is_dataclass(x) else x
    blob = json.dumps([norm(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]
