"""The experiment configuration: one dataclass tree ↔ one YAML file.

Sections follow the pipeline: corpus → labels → audio → segments → features → model → train →
protocol → output. ``load_config(path, overrides=["train.lr=1e-4"])`` reads a YAML file and
applies ``--set`` style overrides; unknown fields are an error that names the field.
Relative paths in a config are relative to the working directory (run from the repository root).
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, first_line

# Enumerations. The corpus readers, feature store and protocols import config, so their lists
# live here; camser.protocols and the feature store take them from here (tests/test_config_fuzz.py
# checks the corpus names against the readers).
CORPORA = ("iemocap", "ravdess", "cremad", "emodb", "tess", "csv")
FEATURE_KINDS = ("mfcc", "spectrogram", "ssl", "chroma", "melspec")
NORMALIZE_MODES = ("none", "corpus", "speaker")
PROTOCOL_SCHEMES = ("loso", "loso_speaker", "lnso", "csv", "holdout")
VALIDATION_MODES = ("clean", "paper", "none")
SSL_LAYERS = ("last", "all", "mean")          # or an integer index into the hidden states
METRICS = ("wa", "ua", "f1_macro", "f1_weighted")   # the scalar validation metrics train.select_on sums
# scipy.signal.get_window names that need no parameter
WINDOWS = ("hann", "hamming", "blackman", "blackmanharris", "bartlett", "barthann", "bohman", "boxcar",
           "cosine", "flattop", "nuttall", "parzen", "triang", "tukey")


@dataclass(frozen=True)
class Allowed:
    """The values a field may take beyond its type, checked by :func:`from_dict`. Bounds apply
    to a number, ``choices`` to a string (each ``sep``-joined part of it when ``sep`` is set);
    a list (or tuple) value is checked for ``min_items``, and item by item when ``items`` is
    set. None (where the type allows it) is always allowed."""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None          # a regular expression other accepted strings match
    sep: str | None = None
    items: bool = False
    min_items: int = 0

    def check(self, value: Any, where: str) -> None:
        if value is None:
            return
        if isinstance(value, (list, tuple)):
            if len(value) < self.min_items:
                raise ConfigError(f"{where}: expected at least {self.min_items} item(s), got {value!r}")
            for i, v in enumerate(value if self.items else ()):
                self._check_one(v, f"{where}[{i}]")
        else:
            self._check_one(value, where)

    def _check_one(self, value: Any, where: str) -> None:
        if isinstance(value, str) and self.choices:
            for part in value.split(self.sep) if self.sep else [value]:
                if part not in self.choices and not (self.pattern and re.fullmatch(self.pattern, part)):
                    what = f"{part!r} (in {value!r})" if part != value else repr(value)
                    joined = f", joined by '{self.sep}'" if self.sep else ""
                    raise ConfigError(f"{where}: {what} is not one of {', '.join(self.choices)}{joined}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and not self._in_range(value):
            noun = "an integer" if isinstance(value, int) else "a number"
            raise ConfigError(f"{where}: expected {noun} {self.describe_range()}, got {value!r}")

    def _in_range(self, v: float) -> bool:
        return ((self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt)
                and (self.le is None or v <= self.le) and (self.lt is None or v < self.lt))

    def describe_range(self) -> str:
        lo = (f"[{self.ge:g}", f"≥ {self.ge:g}") if self.ge is not None else \
            (f"({self.gt:g}", f"> {self.gt:g}") if self.gt is not None else None
        hi = (f"{self.le:g}]", f"≤ {self.le:g}") if self.le is not None else \
            (f"{self.lt:g})", f"< {self.lt:g}") if self.lt is not None else None
        if lo and hi:
            return f"in {lo[0]}, {hi[0]}"
        return (lo or hi or ("", ""))[1]


def checked(default: Any, **allowed) -> Any:
    """A dataclass field whose values :class:`Allowed` (``ge=1``, ``choices=(...)``, ...) limits.
    A callable ``default`` is a default factory (for lists)."""
    meta = {"allowed": Allowed(**allowed)}
    if callable(default):
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class CorpusConfig:
    name: str = checked("iemocap", choices=CORPORA)
    root: str | None = None        # corpus folder (or the CSV file for name=csv)
    prepared: str | None = None    # a folder written by `camser prepare` (manifest.csv)
    folds_csv: str | None = None   # predefined folds (e.g. EmoBox), used by protocol.scheme=csv

    def resolved(self) -> dict:
        """The section with its paths as the files they name (``realpath``): what tells whether
        two configurations read the same corpus however its folder is spelled."""
        return {k: os.path.realpath(v) if k in ("root", "prepared", "folds_csv") and isinstance(v, str) else v
                for k, v in dataclasses.asdict(self).items()}


@dataclass
class LabelsConfig:
    # null → the corpus's default set (IEMOCAP: ang, sad, hap, neu with exc merged into hap);
    # "all" → every category the corpus has; or an explicit list (after merging).
    include: list[str] | str | None = checked(None, choices=("all",))
    merge: dict[str, str] | None = None   # null → the corpus default; {} → merge nothing


@dataclass
class AudioConfig:
    sample_rate: int = checked(16_000, ge=1000)
    min_duration_s: float = checked(0.1, ge=0)
    pre_emphasis: float = checked(0.0, ge=0, le=1)   # the published CA-MSER code uses 0.97 before every branch
    # cut leading/trailing audio quieter than this many dB below the peak (null: keep all)
    trim_db: float | None = checked(None, gt=0)


@dataclass
class SegmentsConfig:
    length_s: float = checked(3.0, gt=0)
    hop_s: float | None = checked(None, gt=0)   # null → length_s (non-overlapping)
    # pad (the paper: zero-pad the last segment) | align (end it at the audio's end)
    last: str = checked("pad", choices=("pad", "align"))

    def samples(self, sr: int) -> tuple[int, int]:
        length = int(round(self.length_s * sr))
        return length, int(round((self.hop_s or self.length_s) * sr))


@dataclass
class MFCCConfig:
    n_mfcc: int = checked(40, ge=1)
    htk: bool = True
    hop_length: int = checked(160, ge=1)


@dataclass
class SpectrogramConfig:
    n_fft: int = checked(800, ge=2)
    win_length: int = checked(640, ge=1)         # ≤ n_fft
    hop_length: int = checked(160, ge=1)
    window: str = checked("hamming", choices=WINDOWS)
    n_bins: int = checked(200, ge=1)             # 0–4 kHz at 16 kHz / 800-point DFT; ≤ n_fft // 2 + 1
    top_db: float = checked(80.0, gt=0)


@dataclass
class ChromaConfig:
    n_chroma: int = checked(12, ge=1)
    n_fft: int = checked(2048, ge=2)   # librosa's default (128 ms at 16 kHz: chroma needs the resolution)
    hop_length: int = checked(160, ge=1)
    tuning: float | None = checked(0.0, ge=-0.5, lt=0.5)   # in fractions of a chroma bin; null → librosa
                                                           # estimates it per segment


@dataclass
class MelSpecConfig:
    n_mels: int = checked(128, ge=1)
    n_fft: int = checked(1024, ge=2)
    win_length: int = checked(400, ge=1)         # 25 ms window, zero-padded to n_fft
    hop_length: int = checked(160, ge=1)
    fmin: float = checked(0.0, ge=0)
    fmax: float | None = checked(None, gt=0)     # null → sr / 2
    db: bool = True                # log power in dB (ref 1.0, no top_db clipping); false → power


@dataclass
class SSLConfig:
    model: str = "facebook/wav2vec2-base"   # hub id or local folder
    layer: int | str = checked("last", choices=SSL_LAYERS)   # or an index into hidden_states (checked
                                                             # against the model's depth when it loads)
    normalize: bool | None = None           # per-chunk zero mean/unit variance; null → as the model's feature extractor
    dtype: str = checked("float16", choices=("float16", "float32"))   # storage dtype of the cache
    batch_size: int = checked(8, ge=1)
    frame_pool: int = checked(1, ge=1)      # average-pool the frames in time by this factor before caching
                                            # (4: 50 → 12.5 frames/s, a quarter of the cache and of the work)


@dataclass
class AugmentConfig:
    # Extra copies of every training utterance, cached beside the originals (camser.augment):
    # one per speed (0.9 → 10 % slower; tempo and pitch) and one per noise SNR (dB, white noise
    # seeded by `seed`). Training sets only; validation, test and every statistic see originals.
    speeds: list[float] = checked(list, gt=0.5, lt=2.0, items=True)
    noise_snr_db: list[float] = checked(list, ge=-10, le=60, items=True)
    seed: int = checked(0, ge=0)
    # test-time augmentation: a held-out utterance is also scored on its copies, and the
    # probabilities of the original and its copies are averaged (inductive: only that
    # utterance's own audio)
    test_time: bool = False

    @property
    def specs(self) -> list[str]:
        from .augment import copy_specs
        return copy_specs(self.speeds, self.noise_snr_db, self.seed)


@dataclass
class FeaturesConfig:
    kinds: list[str] = checked(lambda: ["mfcc", "spectrogram", "ssl"], choices=FEATURE_KINDS, items=True,
                               min_items=1)   # + chroma, melspec
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
    normalize: str = checked("none", choices=NORMALIZE_MODES)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class TrainConfig:
    # frozen (SSL frames from the cache) | finetune (encoder trained from audio)
    mode: str = checked("frozen", choices=("frozen", "finetune"))
    optimizer: str = checked("adamw", choices=("adamw", "adam", "sgd"))   # sgd: momentum 0.9, nesterov
    lr: float = checked(1e-5, gt=0)
    weight_decay: float = checked(0.01, ge=0)
    schedule: str = checked("constant", choices=("constant", "cosine"))   # cosine: per step, after
                                                                          # warmup_epochs of linear warm-up
    warmup_epochs: float = checked(0.0, ge=0)
    label_smoothing: float = checked(0.0, ge=0, lt=1)
    grad_clip: float | None = checked(None, gt=0)   # max gradient norm; null → no clipping
    # exponential moving average of the weights, updated after every optimiser step with this
    # decay (0.99 ≈ the last 100 steps); validation, the kept epoch and the saved model use the
    # averaged weights; 0 → off
    ema: float = checked(0.0, ge=0, lt=1)
    # domain-adversarial training against the training speakers: a small speaker classifier on
    # the model's fused vector, through a gradient reversal scaled by this weight (the model
    # learns vectors that hide who speaks); 0 → off. Training only: never saved with the model
    speaker_adversarial: float = checked(0.0, ge=0)
    mixup: float = checked(0.0, ge=0)   # Beta(α, α) mixup of inputs and targets in training; 0 → off
    # SpecAugment-style: zero one random span of up to this fraction of each training example's
    # frames (every frame feature, same span); 0 → off
    frame_mask: float = checked(0.0, ge=0, lt=1)
    # segment (each 3 s segment an example) | utterance (an utterance's segments in one example,
    # pooled before the head)
    unit: str = checked("segment", choices=("segment", "utterance"))
    # N models per fold (seeds seed, seed+1, …), probabilities averaged; `camser train` saves
    # them as one ensemble model folder
    ensemble: int = checked(1, ge=1)
    batch_size: int = checked(64, ge=1)
    max_epochs: int = checked(100, ge=1)
    patience: int = checked(8, ge=1)
    min_epochs: int = checked(5, ge=0)
    select_on: str = checked("wa+ua", choices=METRICS, sep="+")   # validation score that picks the checkpoint
    # best (the epoch the validation speakers score best; early stopping) | last (every epoch
    # runs, the last weights are kept: with a cosine schedule, no choice hinges on a few
    # validation speakers)
    keep: str = checked("best", choices=("best", "last"))
    seeds: list[int] = checked(lambda: [111], min_items=1)   # one repeat per seed (any integers)
    num_threads: int | None = checked(None, ge=1)
    device: str = checked("auto", choices=("auto", "cpu", "cuda"), pattern=r"cuda:\d+")   # or cuda:N
    amp: bool = True              # mixed precision on GPU
    # under torchrun: "data" (DDP inside each fold) | "folds" (folds spread over ranks)
    distribute: str = checked("data", choices=("data", "folds"))


@dataclass
class ProtocolConfig:
    scheme: str = checked("loso", choices=PROTOCOL_SCHEMES)   # loso: leave one session out
    n_speakers: int = checked(1, ge=1)   # for lnso: speakers held out per fold
    validation: str = checked("clean", choices=VALIDATION_MODES)   # clean (validation speakers from the
                                                                   # training side) | paper (validation = test)
                                                                   # | none (every training speaker trains;
                                                                   # needs train.keep: last)
    val_speakers: int = checked(1, ge=1)   # clean: how many training speakers to hold out for validation
    folds: list[int] | None = checked(None, ge=1, items=True)   # run only these folds (1-based)


@dataclass
class OutputConfig:
    tsne: bool = True
    curves: bool = True
    # without a progress bar (output not a terminal: nohup, a log file), a line with batch k/n,
    # elapsed time and ETA at most this often inside an epoch (seconds); 0 → none
    progress_every_s: float = checked(60.0, ge=0)


@dataclass
class VoteConfig:
    # soft voting, as scikit-learn's VotingClassifier: a second model, fitted on utterance vectors
    # of the same training speakers (e.g. {name: linear, ...}), and the network average their
    # class probabilities; {} → the network alone. Scored by cross-validation (camser cv,
    # compare, ablation, sweep); `camser train` saves networks only
    model: dict[str, Any] = field(default_factory=dict)
    # the second model's share of the average (the network's: 1 - weight); a list: the candidates,
    # one chosen per fold and seed on the validation speakers (held out from both models; ties:
    # the one nearest 0.5)
    weight: float | list[float] = checked(0.5, gt=0, lt=1, items=True, min_items=1)
    # the second model's own audio and feature settings, over the experiment's (e.g. audio:
    # {trim_db: null}, features: {ssl: {frame_pool: 1}}): it then reads features of its own
    audio: dict[str, Any] = field(default_factory=dict)
    features: dict[str, Any] = field(default_factory=dict)
    # further second models, each {model: {...}, audio: {...}, features: {...}} as the first:
    # each weighs `weight` too, the network 1 - weight, the sum normalised (0.5: equal votes)
    also: list[dict[str, Any]] = field(default_factory=list)

    @property
    def weights(self) -> list[float]:
        """The candidate weights (one when the weight is fixed)."""
        return list(self.weight) if isinstance(self.weight, list) else [self.weight]

    @property
    def voters(self) -> list[dict[str, Any]]:
        """Every second model as ``{model, audio, features}`` (none without ``model``)."""
        if not self.model:
            return []
        first = {"model": self.model, "audio": self.audio, "features": self.features}
        return [first] + [{"model": v.get("model") or {}, "audio": v.get("audio") or {},
                           "features": v.get("features") or {}} for v in self.also]

    @property
    def voter_names(self) -> list[str]:
        """The second models' names in results (``linear``, ``linear 2``, … when one repeats)."""
        names = [v["model"].get("name", "?") for v in self.voters]
        out = []
        for i, n in enumerate(names):
            k = names[:i + 1].count(n)
            out.append(n if k == 1 else f"{n} {k}")
        return out


def weight_text(weight) -> str:
    """A vote's weight in words (a number, or the candidates chosen on validation speakers)."""
    if isinstance(weight, list) and len(weight) > 1:
        return f"weight chosen on the validation speakers from {', '.join(f'{w:g}' for w in weight)}"
    return f"weight {(weight[0] if isinstance(weight, list) else weight):g}"


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    segments: SegmentsConfig = field(default_factory=SegmentsConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    model: dict[str, Any] = field(default_factory=lambda: {"name": "camser"})
    vote: VoteConfig = field(default_factory=VoteConfig)
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
    if origin is tuple:             # tuple[int, int] (that many items) or tuple[int, ...]; a list in YAML
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        elif len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} items, got {list(value)!r}")
        return tuple(_check_type(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
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
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        field_name = f"{where}.{unknown[0]}" if where else unknown[0]
        close = difflib.get_close_matches(unknown[0], fields, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(f"{field_name}: unknown field ({hint}known: {', '.join(sorted(fields))})")
    kwargs = {}
    for k, v in data.items():
        name = f"{where}.{k}" if where else k
        kwargs[k] = _check_type(v, hints[k], name)
        allowed = fields[k].metadata.get("allowed")
        if allowed is not None:
            allowed.check(kwargs[k], name)
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


def read_yaml(path: str | Path, what: str = "config") -> Any:
    """A YAML file's content ({} when empty); a missing file or invalid YAML is one line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: {what} file not found")
    try:
        return yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({first_line(e)})") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                data: dict | None = None) -> ExperimentConfig:
    """YAML file (and/or a dict, deep-merged over it) + ``--set`` overrides → :class:`ExperimentConfig`."""
    raw: dict = {"model": {"name": "camser"}}
    if path is not None:
        loaded = read_yaml(path)
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        loaded.pop("sweep", None)       # `camser sweep`'s search space: read by camser.sweep
        raw = _deep_merge(raw, loaded)
    if data:
        raw = _deep_merge(raw, data)
    raw = apply_overrides(raw, overrides or [])
    cfg = from_dict(ExperimentConfig, raw)
    _check_relations(cfg)
    return cfg


def _check_relations(cfg: ExperimentConfig) -> None:
    """Rules between fields (each field's own range is in its :class:`Allowed`)."""
    sr = cfg.audio.sample_rate
    spec, mel, t = cfg.features.spectrogram, cfg.features.melspec, cfg.train
    seg_samples = cfg.segments.samples(sr)[0]
    longest_hop = max((getattr(cfg.features, k).hop_length, k)
                      for k in ("mfcc", "spectrogram", "chroma", "melspec"))
    for where, ok, why in (
            ("features.spectrogram.win_length", spec.win_length <= spec.n_fft,
             f"{spec.win_length} is longer than features.spectrogram.n_fft ({spec.n_fft})"),
            ("features.spectrogram.n_bins", spec.n_bins <= spec.n_fft // 2 + 1,
             f"{spec.n_bins} is more than an {spec.n_fft}-point DFT has ({spec.n_fft // 2 + 1})"),
            ("features.melspec.win_length", mel.win_length <= mel.n_fft,
             f"{mel.win_length} is longer than features.melspec.n_fft ({mel.n_fft})"),
            ("features.melspec.fmin", mel.fmin < sr / 2, f"{mel.fmin:g} Hz is not below the Nyquist "
             f"frequency ({sr / 2:g} Hz at audio.sample_rate {sr})"),
            ("features.melspec.fmax", mel.fmax is None or mel.fmin < mel.fmax <= sr / 2,
             f"{mel.fmax!r} Hz is not in (features.melspec.fmin, sample_rate / 2] = ({mel.fmin:g}, {sr / 2:g}]"),
            ("segments.length_s", seg_samples >= longest_hop[0],
             f"{cfg.segments.length_s:g} s is shorter than one frame (features.{longest_hop[1]}.hop_length "
             f"{longest_hop[0]} samples at {sr} Hz)"),
            ("train.mixup", not (t.mixup > 0 and t.unit == "utterance"), "mixes examples row by row, so "
             "it needs train.unit: segment (an utterance example spans several segment rows)"),
            ("train.speaker_adversarial", not (t.speaker_adversarial > 0 and t.mixup > 0),
             "does not combine with train.mixup (a mixed example has two speakers)"),
            ("train.keep", not (cfg.protocol.validation == "none" and t.keep == "best"),
             "best needs validation speakers to choose the epoch on, and protocol.validation: none "
             "holds out none; use train.keep: last (the epoch count fixed beforehand)"),
            ("features.augment.test_time", not cfg.features.augment.test_time or cfg.features.augment.specs,
             "true needs copies to score (features.augment.speeds or noise_snr_db)"),
            ("model.name", "name" in cfg.model, "missing (e.g. camser)"),
            ("vote.model.name", not cfg.vote.model or "name" in cfg.vote.model, "missing (e.g. linear)"),
            ("vote.weight", len(cfg.vote.weights) == 1 or cfg.protocol.validation != "none",
             f"{cfg.vote.weight} are candidates chosen on the validation speakers, and "
             "protocol.validation: none holds out none; give one weight")):
        if not ok:
            raise ConfigError(f"{where}: {why}")
    for i, extra in enumerate(cfg.vote.also):
        where = f"vote.also[{i}]"
        if not isinstance(extra, dict) or set(extra) - {"model", "audio", "features"}:
            raise ConfigError(f"{where}: a second model is {{model: ..., audio: ..., features: ...}} "
                              f"(got {extra!r})")
        if not cfg.vote.model:
            raise ConfigError(f"{where}: further second models need the first (vote.model)")
        if not (extra.get("model") or {}).get("name"):
            raise ConfigError(f"{where}.model.name: missing (e.g. linear)")
    for i in range(len(cfg.vote.voters)):
        voter_config(cfg, i)         # vote.audio / vote.features: their fields checked by name


def voter_config(cfg: ExperimentConfig, i: int = 0) -> ExperimentConfig:
    """The ``i``-th second model of a vote as an experiment of its own: the same corpus,
    protocol and normalisation, its model, its own audio and feature settings (``audio``,
    ``features`` over the experiment's). Fitted on the original audio only, unless its own
    ``features.augment`` asks for copies (then it trains on them and, with ``test_time``,
    averages each test utterance over its copies, as a network does)."""
    voter = cfg.vote.voters[i]
    where = "vote" if i == 0 else f"vote.also[{i - 1}]"
    base = cfg.to_dict()
    audio = from_dict(AudioConfig, _deep_merge(base["audio"], voter["audio"]), f"{where}.audio") \
        if voter["audio"] else cfg.audio
    features = from_dict(FeaturesConfig, _deep_merge(base["features"], voter["features"]), f"{where}.features") \
        if voter["features"] else cfg.features
    if "augment" not in voter["features"]:
        features = dataclasses.replace(features, augment=AugmentConfig())
    return dataclasses.replace(cfg, model=dict(voter["model"]), vote=VoteConfig(), audio=audio, features=features)


def own_features(voter: dict) -> bool:
    """A second model (one of ``VoteConfig.voters``) reads features of its own."""
    return bool(voter["audio"] or voter["features"])


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
