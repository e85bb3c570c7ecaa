"""``camser sweep CONFIG --out DIR``: a hyper-parameter search over an experiment, on Optuna.

The search space is YAML: a ``sweep:`` section of the experiment file (other commands ignore
it), or ``--space FILE`` (the same mapping, with or without the ``sweep:`` key), plus
``--set key=[v1,v2]``: a list given to a field that takes no list is a grid axis::

    sweep:
      sampler: grid | tpe | random   # default: grid when every parameter is a list, else tpe
      n_trials: 20                   # tpe / random (the grid runs each point once)
      metric: ua                     # ua | wa | f1_macro: the mean over the trial's folds
      objective: inner               # inner (default) | outer, see below
      inner_folds: 3                 # inner: speaker-grouped folds per outer fold
      seed: 0                        # sampler seed (worker i uses seed + i)
      startup_trials: 4              # tpe: random trials first (default min(10, max(2, n_trials // 3)))
      heartbeat_s: 60                # a worker silent for 3 × this long has died: its trial reruns
      params:
        train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
        train.batch_size: {type: int, low: 16, high: 64, step: 16}
        model.dropout: [0.1, 0.3]    # a list: categorical values (the grid's axis)

Every parameter is checked before anything is extracted: it must be a field of the
configuration (or of its model), each value (a range's ends) must load, ranges must not be
empty. ``corpus``, ``labels`` and ``protocol`` fields define the folds the trials are compared
on and can't be swept. A mistake is one line naming ``sweep.…`` (exit 2).

Storage: an Optuna study in ``sqlite:///DIR/study.db``, or any SQLAlchemy URL (``--storage
postgresql://…``) so that processes on several machines share one study (``--study NAME``,
default the config's name; a study made from another config or space is refused).
``--workers N`` starts N worker processes (``camser sweep … --worker I``) on the one study.
Each trial is a normal ``camser cv`` run folder, ``DIR/trials/NNNN`` (NNNN: the trial's
number; a rerun trial keeps the folder of the trial it reruns), written by
:func:`camser.training.cv.run_cv`. Resuming: rerun the same command. A trial
whose worker died (killed, machine lost: its process is gone, or its Optuna heartbeat stopped)
or was interrupted is queued again with the same parameters and continues in the same folder,
so its finished folds are not retrained; finished trials are never rerun. A trial that raised
an error stays failed, with its one-line error in ``sweep.md`` (and the traceback in its
``run.log``). Raising ``n_trials`` and rerunning extends a tpe/random search.

Objective — which speakers choose the parameters:

* ``inner`` (default): only training speakers. For each outer fold of the experiment's
  protocol (``protocol.folds`` selects them), the utterances of its training and validation
  speakers are cut into ``inner_folds`` speaker-grouped folds (scikit-learn ``GroupKFold``); its
  test speakers are in none of them. These inner folds are written to ``DIR/inner_folds.csv``
  and every trial is a cv run with ``protocol.scheme: csv`` on that file (validation speakers
  are chosen inside each inner fold's training side as ``protocol.validation`` says), so the
  existing cross-validation does the work and the trial folder is an ordinary run folder.
  No inner fold holds a test speaker of its own outer fold. With several outer folds the
  trial's value pools them, and together their training speakers include every outer test
  speaker: scoring ``best.yaml`` on the outer folds is then not a nested estimate. The
  per-outer-fold choices in ``sweep.md`` are (each saw none of its fold's test speakers); with a
  single outer fold (``protocol.folds: [k]``, or ``holdout``) the best choice itself is.
* ``outer``: the trial is the experiment's own cross-validation, scored on the outer test
  folds. The choice then saw the test folds, and every table says so.

Outputs (rewritten at the end of every run, from the study): ``DIR/sweep.json`` (every trial:
number, params, value, state, error, run folder), ``DIR/sweep.md`` (trials best first, failed
trials with their errors, figures), ``DIR/best.yaml`` (the full configuration with the best
parameters, the experiment's own protocol: ready for ``camser cv`` or ``camser train``),
``DIR/figures/sweep_<param>.png`` (metric against each parameter) and ``DIR/run.log``.
``--track mlflow``: the sweep is an MLflow run, each trial a nested run (see
:mod:`camser.tracking`).

This module is a driver: it uses the training layer; nothing below imports it.
"""
from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
import traceback
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from .config import ExperimentConfig, load_config, read_yaml
from .errors import CamserError, ConfigError
from .tracking import flatten, make_tracker, redact, run_log

SAMPLERS = ("grid", "tpe", "random")
METRICS = {"ua": ("ua", "UA"), "wa": ("wa", "WA"), "f1_macro": ("f1", "macro-F1")}
OBJECTIVES = ("inner", "outer")
SPEC_FIELDS = ("sampler", "n_trials", "metric", "objective", "inner_folds", "seed", "startup_trials",
               "heartbeat_s", "params")
RANGE_FIELDS = ("type", "low", "high", "log", "step", "values")
FIXED_SECTIONS = ("corpus", "labels", "protocol")
# settings that don't change a trial's numbers (or, for the paths, may differ between the
# machines sharing a study): a study may be resumed or joined with other values
RESUMABLE = ("features.cache_dir", "train.num_threads", "train.device", "output",
             "corpus.root", "corpus.prepared", "corpus.folds_csv")
MAX_GRID = 10_000
MAX_RETRY = 3                 # reruns of a trial whose worker died
POLL_S = 2.0                  # how often an idle worker looks at the study


# ---------------------------------------------------------------- the search space

@dataclass
class Param:
    """One swept field: ``kind`` float | int (a range) or categorical (``values``)."""
    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    values: list | None = None

    @property
    def encoded(self) -> bool:
        """Optuna's categorical values are scalars: lists/mappings travel as JSON text."""
        return self.values is not None and any(not (v is None or isinstance(v, (bool, int, float, str)))
                                               for v in self.values)

    def choices(self, grid: bool) -> list:
        values = self.grid_values() if grid else self.values
        return [json.dumps(v) for v in values] if self.encoded else list(values)

    def decode(self, v):
        return json.loads(v) if self.encoded and isinstance(v, str) else v

    def grid_values(self) -> list:
        where = f"sweep.params.{self.key}"
        if self.kind == "categorical":
            return list(self.values)
        if self.log:
            raise ConfigError(f"{where}: a log range has no grid; give a list of values (or use sampler tpe/random)")
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            raise ConfigError(f"{where}: the grid sampler needs a list of values (or a step)")
        n = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return [round(self.low + i * self.step, 12) for i in range(n)]

    def suggest(self, trial, grid: bool):
        if grid or self.kind == "categorical":
            return self.decode(trial.suggest_categorical(self.key, self.choices(grid)))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)

    def candidates(self) -> list:
        """Values that must load for the parameter to be usable (a range: its ends, and for a
        float range a value between them, which an integer field would refuse)."""
        if self.kind == "categorical":
            return list(self.values)
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        return [float(self.low), float(self.high), (float(self.low) + float(self.high)) / 2 + 1e-3 * abs(float(self.high))]

    def to_dict(self) -> dict:
        if self.kind == "categorical":
            return {"values": self.values}
        return {"type": self.kind, "low": self.low, "high": self.high, "log": self.log, "step": self.step}


@dataclass
class SweepSpec:
    params: list[Param]
    sampler: str = "tpe"
    n_trials: int = 0
    metric: str = "ua"
    objective: str = "inner"
    inner_folds: int = 3
    seed: int = 0
    startup_trials: int = 0
    heartbeat_s: int = 60

    @property
    def grid(self) -> bool:
        return self.sampler == "grid"

    def to_dict(self) -> dict:
        return {"sampler": self.sampler, "n_trials": self.n_trials, "metric": self.metric,
                "objective": self.objective, "inner_folds": self.inner_folds, "seed": self.seed,
                "startup_trials": self.startup_trials, "heartbeat_s": self.heartbeat_s,
                "params": {p.key: p.to_dict() for p in self.params}}


_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _numbers(value):
    """YAML 1.1 reads ``1e-3`` (no dot) as a string: such strings become floats."""
    if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def _number(value, where: str, integer: bool = False):
    if isinstance(value, str):                 # YAML 1.1 reads 1e-4 as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
        raise ConfigError(f"{where}: expected {'an integer' if integer else 'a number'}, got {value!r}")
    return int(value) if integer else value


def _int_field(raw: dict, name: str, default, minimum: int):
    if name not in raw or raw[name] is None:
        return default
    v = raw[name]
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigError(f"sweep.{name}: expected an integer ≥ {minimum}, got {v!r}")
    return v


def _choice(raw: dict, name: str, allowed, default: str) -> str:
    v = raw.get(name)
    if v is None:
        return default
    if v not in allowed:
        raise ConfigError(f"sweep.{name}: {v!r} is not one of {', '.join(allowed)}")
    return v


def parse_param(key: Any, spec: Any) -> Param:
    """One ``params`` entry → :class:`Param` (structure only; :func:`check_space` checks it
    against the configuration)."""
    where = f"sweep.params.{key}"
    if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*", key):
        raise ConfigError(f"{where}: expected a dotted config field such as train.lr")
    if key.split(".")[0] in FIXED_SECTIONS:
        raise ConfigError(f"{where}: the {key.split('.')[0]} section defines the folds the trials are "
                          "compared on; it can't be swept")
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{where}: empty list (give at least one value)")
        return Param(key, "categorical", values=_numbers(list(spec)))
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a list of values or a range {{type, low, high}}, got {spec!r}")
    unknown = sorted(set(spec) - set(RANGE_FIELDS), key=str)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown field (known: {', '.join(RANGE_FIELDS)})")
    kind = spec.get("type")
    if kind is None:
        kind = "categorical" if "values" in spec else (
            "int" if all(isinstance(spec.get(k), int) and not isinstance(spec.get(k), bool) for k in ("low", "high"))
            else "float")
    if kind not in ("float", "int", "categorical"):
        raise ConfigError(f"{where}.type: {kind!r} is not one of float, int, categorical")
    if kind == "categorical":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.values: expected a non-empty list, got {values!r}")
        extra = sorted(k for k in spec if k not in ("type", "values"))
        if extra:
            raise ConfigError(f"{where}.{extra[0]}: not a field of a categorical parameter (it has values)")
        return Param(key, "categorical", values=_numbers(list(values)))
    if "values" in spec:
        raise ConfigError(f"{where}.values: a {kind} range has low and high, not values")
    for end in ("low", "high"):
        if end not in spec:
            raise ConfigError(f"{where}.{end}: missing (a {kind} range needs low and high)")
    low = _number(spec["low"], f"{where}.low", integer=kind == "int")
    high = _number(spec["high"], f"{where}.high", integer=kind == "int")
    if low > high:
        raise ConfigError(f"{where}: empty range (low {low!r} > high {high!r})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log: expected true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}.low: a log range needs low > 0, got {low!r}")
    step = spec.get("step")
    if step is not None:
        step = _number(step, f"{where}.step", integer=kind == "int")
        if step <= 0:
            raise ConfigError(f"{where}.step: expected a positive number, got {step!r}")
        if log:
            raise ConfigError(f"{where}.step: a log range takes no step")
    return Param(key, kind, low=low, high=high, log=log, step=step)


def parse_spec(raw: Any, grid_params: dict | None = None) -> SweepSpec:
    """The ``sweep:`` mapping (+ ``--set`` grid axes, which win) → :class:`SweepSpec`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"sweep: expected a mapping, got {raw!r}")
    unknown = sorted(set(raw) - set(SPEC_FIELDS), key=str)
    if unknown:
        raise ConfigError(f"sweep.{unknown[0]}: unknown field (known: {', '.join(SPEC_FIELDS)})")
    params_raw = raw.get("params") or {}
    if not isinstance(params_raw, dict):
        raise ConfigError(f"sweep.params: expected a mapping of config field → values or range, got {params_raw!r}")
    params_raw = {**params_raw, **(grid_params or {})}
    if not params_raw:
        raise ConfigError("sweep.params: nothing to search (add a sweep: section with params, --space FILE, "
                          "or --set key=[v1,v2])")
    params = [parse_param(k, v) for k, v in params_raw.items()]
    default_sampler = "grid" if all(p.kind == "categorical" for p in params) else "tpe"
    spec = SweepSpec(params=params, sampler=_choice(raw, "sampler", SAMPLERS, default_sampler),
                     metric=_choice(raw, "metric", tuple(METRICS), "ua"),
                     objective=_choice(raw, "objective", OBJECTIVES, "inner"),
                     inner_folds=_int_field(raw, "inner_folds", 3, 2),
                     seed=_int_field(raw, "seed", 0, 0),
                     heartbeat_s=_int_field(raw, "heartbeat_s", 60, 1))
    n = _int_field(raw, "n_trials", None, 1)
    if spec.grid:
        size = 1
        for p in params:
            size *= len(p.grid_values())
        if size > MAX_GRID:
            raise ConfigError(f"sweep.params: the grid has {size} points (at most {MAX_GRID}); use sampler tpe or random")
        if n is not None and n != size:
            raise ConfigError(f"sweep.n_trials: the grid has {size} points and runs each once; leave n_trials out")
        spec.n_trials = size
    else:
        if n is None:
            raise ConfigError(f"sweep.n_trials: required by the {spec.sampler} sampler (e.g. 20)")
        spec.n_trials = n
    spec.startup_trials = _int_field(raw, "startup_trials", min(10, max(2, spec.n_trials // 3)), 1)
    return spec


def read_space(config: str | Path, space: str | Path | None) -> Any:
    """The raw ``sweep`` mapping: from ``--space FILE`` if given, else the config's section."""
    data = read_yaml(space if space is not None else config, "space" if space is not None else "config")
    if space is None:
        return data.get("sweep") if isinstance(data, dict) else None
    if isinstance(data, dict) and set(data) == {"sweep"}:
        return data["sweep"]
    return data


def _parse_set(item: str) -> tuple[str, Any]:
    from .config import _parse_override
    keys, value = _parse_override(item)
    return ".".join(keys), _numbers(value)


def _check_model(section: dict) -> None:
    from .models import check_model_section
    check_model_section(section)


def load_checked(data: dict) -> ExperimentConfig:
    cfg = load_config(None, data=data)
    _check_model(cfg.model)
    return cfg


def split_overrides(config: str | Path, overrides: list[str]) -> tuple[list[str], dict]:
    """``--set`` items → (plain overrides, grid axes): a list given to a field that does not
    take a list (``train.lr=[1e-3,1e-4]``) is a grid axis."""
    plain, grid = [], {}
    for item in overrides or []:
        key, value = _parse_set(item)
        if isinstance(value, list):
            try:
                _check_model(load_config(config, plain + [item]).model)
            except ConfigError:
                grid[key] = value
                continue
        plain.append(item)
    return plain, grid


def _set(tree: dict, key: str, value) -> None:
    parts = key.split(".")
    node = tree
    for k in parts[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: '{k}' is not a section")
    node[parts[-1]] = copy.deepcopy(value)


def with_params(cfg: ExperimentConfig, values: dict) -> dict:
    data = cfg.to_dict()
    for k, v in values.items():
        _set(data, k, v)
    return data


def check_space(spec: SweepSpec, cfg: ExperimentConfig) -> None:
    """Every value (a range's ends) of every parameter loads into ``cfg``: the field exists
    and takes that type. Raises a one-line :class:`ConfigError` naming ``sweep.params.KEY``."""
    for p in spec.params:
        for value in (p.grid_values() if spec.grid else p.candidates()):
            try:
                load_checked(with_params(cfg, {p.key: value}))
            except ConfigError as e:
                msg = str(e)
                msg = msg[len(p.key) + 1:].strip() if msg.startswith(p.key + ":") else msg
                raise ConfigError(f"sweep.params.{p.key}: {msg}") from None


# ---------------------------------------------------------------- inner folds

def inner_folds(cfg: ExperimentConfig, k: int) -> tuple[list[tuple[str, str, str]], list]:
    """Rows ``(fold, split, utterance id)`` of the inner speaker-grouped folds of every outer
    fold of ``cfg`` (see the module docstring), and the outer folds."""
    import numpy as np
    from sklearn.model_selection import GroupKFold

    from .training.experiment import load_utterances
    from .protocols import make_folds
    utterances, _ = load_utterances(cfg)
    outer = make_folds(utterances, cfg.protocol, folds_csv=cfg.corpus.folds_csv)
    rows = []
    for f in outer:
        test = set(f.test_ids)
        allowed = (set(f.train_ids) | set(f.val_ids)) - test
        pool = [u for u in utterances if u.id in allowed]
        groups = np.array([u.speaker for u in pool])
        n_speakers = len(set(groups.tolist()))
        if n_speakers < k:
            raise ConfigError(f"sweep.inner_folds: outer fold {f.index} ({f.name}) has {n_speakers} training "
                              f"speakers, fewer than {k} inner folds")
        for i, (_, te) in enumerate(GroupKFold(n_splits=k).split(np.zeros(len(pool)), groups=groups), start=1):
            held = set(te.tolist())
            name = f"outer{f.index}-inner{i}"
            rows += [(name, "test" if j in held else "train", u.id) for j, u in enumerate(pool)]
    return rows, outer


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_text() == text:
        return
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _outer_of(fold_name: str) -> int | None:
    m = re.search(r"outer(\d+)-inner\d+", fold_name or "")
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------- processes

def _process_token() -> str:
    """pid and start time: a later process that reuses the pid is not taken for it."""
    pid = os.getpid()
    try:
        start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        start = "?"
    return f"{pid}:{start}"


def _alive(token: str) -> bool:
    try:
        pid, start = token.split(":", 1)
        pid = int(pid)
    except ValueError:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True
    return fields[0] != "Z" and (start == "?" or fields[19] == start)


@contextmanager
def _file_lock(path: Path):
    try:
        import fcntl
    except ImportError:                      # no fcntl (Windows): one worker per cache, please
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    line = text if isinstance(e, CamserError) else f"{type(e).__name__}: {text}".rstrip(": ")
    return line[:500]


class _Surplus(Exception):
    """A trial started after the budget was spent by other workers (it is not counted)."""


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def _redact(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return redact(url)


# ---------------------------------------------------------------- the sweep

class Sweep:
    """A sweep over ``cfg`` (the configuration without the swept values) into ``out``."""

    def __init__(self, cfg: ExperimentConfig, spec: SweepSpec, out: Path, storage: str | None,
                 study_name: str | None, tracker, log: Callable[[str], None]):
        self.cfg, self.spec, self.out = cfg, spec, Path(out)
        self.storage_url = storage or f"sqlite:///{(self.out / 'study.db').resolve()}"
        self.study_name = study_name or cfg.name
        self.tracker = tracker
        self.log = log
        self.worker = 0
        self.inner_csv = (self.out / "inner_folds.csv").resolve()
        self.outer = []
        self._retry = None

    # ------------------------------------------------------------ setup
    def prepare_folds(self) -> None:
        """Inner: write DIR/inner_folds.csv and check that cv can build its folds; outer:
        check the experiment's folds. Nothing is extracted."""
        from .training.experiment import load_utterances
        from .protocols import make_folds
        if self.spec.objective == "outer":
            utterances, _ = load_utterances(self.cfg)
            self.outer = make_folds(utterances, self.cfg.protocol, folds_csv=self.cfg.corpus.folds_csv)
            return
        rows, self.outer = inner_folds(self.cfg, self.spec.inner_folds)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["fold", "split", "file_stem"])
        w.writerows(rows)
        self.out.mkdir(parents=True, exist_ok=True)
        _write_if_changed(self.inner_csv, buf.getvalue())
        probe = self.trial_config({})
        utterances, _ = load_utterances(probe)
        make_folds(utterances, probe.protocol, folds_csv=probe.corpus.folds_csv)

    def trial_config(self, values: dict) -> ExperimentConfig:
        data = with_params(self.cfg, values)
        if self.spec.objective == "inner":
            data["protocol"].update(scheme="csv", folds=None)
            data["corpus"]["folds_csv"] = str(self.inner_csv)
        return load_config(None, data=data)

    def fingerprint(self) -> str:
        from .config import config_hash
        flat = {k: v for k, v in flatten(self.cfg.to_dict()).items()
                if k != "name" and not any(k == r or k.startswith(r + ".") for r in RESUMABLE)}
        spec = {k: v for k, v in self.spec.to_dict().items() if k != "n_trials"}
        return config_hash(flat, spec)

    def _storage(self):
        import optuna
        retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
        self._retry = (retry or optuna.storages.RetryFailedTrialCallback)(max_retry=MAX_RETRY)
        callback = ({"heartbeat_stale_trial_callback": self._retry} if retry else {"failed_trial_callback": self._retry})
        engine = {"connect_args": {"timeout": 120}} if self.storage_url.startswith("sqlite") else {}
        hb = self.spec.heartbeat_s
        try:
            return optuna.storages.RDBStorage(self.storage_url, engine_kwargs=engine, heartbeat_interval=hb,
                                              grace_period=3 * hb, **callback)
        except Exception as e:
            raise CamserError(f"--storage {_redact(self.storage_url)}: can't open it ({_one_line(e)})") from None

    def _sampler(self):
        import optuna
        seed = self.spec.seed + self.worker
        if self.spec.sampler == "grid":
            return optuna.samplers.GridSampler({p.key: p.choices(True) for p in self.spec.params}, seed=seed)
        if self.spec.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.spec.startup_trials, constant_liar=True)

    def open_study(self, create: bool):
        import optuna
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        storage = self._storage()
        print_name = f"study {self.study_name!r} at {_redact(self.storage_url)}"
        if create:
            study = optuna.create_study(study_name=self.study_name, storage=storage, sampler=self._sampler(),
                                        direction="maximize", load_if_exists=True)
            attrs = study.user_attrs
            if "camser.fingerprint" not in attrs and not study.get_trials(deepcopy=False):
                study.set_user_attr("camser.fingerprint", self.fingerprint())
                study.set_user_attr("camser.spec", self.spec.to_dict())
        else:
            try:
                study = optuna.load_study(study_name=self.study_name, storage=storage, sampler=self._sampler())
            except KeyError:
                raise CamserError(f"{print_name}: not found (start the sweep without --worker first)") from None
        if study.user_attrs.get("camser.fingerprint") != self.fingerprint():
            raise ConfigError(f"--study: {print_name} holds another sweep (another configuration, space or "
                              "objective); choose another --study NAME or --out")
        return study

    # ------------------------------------------------------------ trials
    def _tally(self, trials) -> tuple[list, set]:
        """(the trials that count against n_trials, the numbers of trials rerun as another)."""
        retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
        live = [t for t in trials if t.number not in retried and not t.user_attrs.get("surplus")]
        return live, retried

    def requeue_abandoned(self, study) -> None:
        """Trials whose worker on this host is gone, or that were interrupted, are queued
        again with the same parameters (Optuna's heartbeat does the same, later, for
        workers elsewhere)."""
        from optuna.trial import TrialState
        host = socket.gethostname()
        trials = study.get_trials(deepcopy=False)
        _, retried = self._tally(trials)
        for t in trials:
            token = t.user_attrs.get("process")
            if t.state == TrialState.RUNNING and t.user_attrs.get("host") == host and token and not _alive(token):
                try:
                    study.tell(t.number, state=TrialState.FAIL)
                except Exception:            # another process got there first
                    continue
                self.log(f"trial {t.number}: its worker (pid {token.split(':')[0]}) is gone; queued again")
            elif not (t.state == TrialState.FAIL and t.user_attrs.get("interrupted") and t.number not in retried):
                continue
            frozen = next(x for x in study.get_trials(deepcopy=True) if x.number == t.number)
            self._retry(study, frozen)

    def objective(self, trial) -> float:
        study = trial.study
        live, _ = self._tally(study.get_trials(deepcopy=False))
        if sum(t.number < trial.number for t in live) >= self.spec.n_trials:
            trial.set_user_attr("surplus", True)
            raise _Surplus(f"trial {trial.number}: the {self.spec.n_trials} trials were taken by other workers")
        number = trial.user_attrs.get("run_number", trial.number)     # a rerun keeps its folder
        run_dir = self.out / "trials" / f"{number:04d}"
        for k, v in {"run_number": number, "run_dir": str(run_dir.resolve()), "host": socket.gethostname(),
                     "process": _process_token(), "worker": self.worker, "error": None, "interrupted": False}.items():
            trial.set_user_attr(k, v)
        values = {p.key: p.suggest(trial, self.spec.grid) for p in self.spec.params}
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
        again = f" (rerun of trial {number})" if number != trial.number else ""
        self.log(f"trial {trial.number}{again}: {shown} → {run_dir}")
        quiet = run_log(run_dir / "run.log", lambda m: None)
        try:
            from .training.cv import data_inputs, run_cv
            from .training.experiment import prepare_data
            cfg = self.trial_config(values)
            with _file_lock(self.out / ".features.lock"):     # one process extracts a missing store
                prepare_data(cfg, data_inputs(cfg), progress=False)
            tracker = self.tracker.child(self.out, run_name=f"{self.study_name} trial {number:04d}",
                                         params={f"sweep.{k}": _fmt(v) for k, v in values.items()})
            results = run_cv(cfg, run_dir, log=lambda m: None, progress=False, tracker=tracker)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except Exception as e:
            error = _one_line(e)
            trial.set_user_attr("error", error)
            quiet(f"trial failed: {error}\n{traceback.format_exc()}")
            self.log(f"trial {trial.number} failed: {error}")
            raise
        key, name = METRICS[self.spec.metric]
        s = results["summary"]
        value = float(s[f"{key}_mean"])
        trial.set_user_attr("summary", {k: round(float(s[k]), 6) for k in
                                        ("wa_mean", "wa_std", "ua_mean", "ua_std", "f1_mean", "f1_std") if k in s})
        if self.spec.objective == "inner":
            names = {f["fold"]: f.get("name", "") for f in results.get("protocol", {}).get("folds", [])}
            per: dict[str, list] = {}
            for entry in results["folds"]:
                o = _outer_of(names.get(entry["fold"], ""))
                if o is not None:
                    per.setdefault(str(o), []).append(float(entry[self.spec.metric]))
            trial.set_user_attr("per_outer", {o: sum(v) / len(v) for o, v in per.items()})
        self.log(f"trial {trial.number}: {name} {100 * value:.2f} ± {100 * s[f'{key}_std']:.2f}")
        return value

    def work(self, worker: int) -> None:
        """Run trials until the study has its n_trials (waiting for other workers' running
        trials to finish, or to be found dead and queued again)."""
        import optuna
        from optuna.trial import TrialState
        self.worker = worker
        study = self.open_study(create=False)
        while True:
            self.requeue_abandoned(study)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                optuna.storages.fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            live, _ = self._tally(trials)
            if any(t.state == TrialState.WAITING for t in trials) or len(live) < self.spec.n_trials:
                study.optimize(self.objective, n_trials=1, catch=(Exception,))
            elif any(t.state == TrialState.RUNNING for t in live):
                time.sleep(POLL_S)
            else:
                return

    # ------------------------------------------------------------ results
    def trial_records(self, study) -> list[dict]:
        trials = study.get_trials(deepcopy=False)
        _, retried = self._tally(trials)
        rerun_as = {}
        for t in trials:
            for n in t.system_attrs.get("retry_history", []):
                rerun_as[n] = t.number
        params = {p.key: p for p in self.spec.params}
        records = []
        for t in trials:
            if t.user_attrs.get("surplus"):
                continue
            state = t.state.name.lower()
            if t.number in retried:
                state = "rerun"
            elif state == "fail":
                state = "failed"
            error = t.user_attrs.get("error")
            if state == "rerun":
                error = f"its worker stopped; rerun as trial {rerun_as[t.number]}"
            elif state == "failed" and not error:
                error = "its worker stopped (no heartbeat)"
            records.append({
                "number": t.number, "state": state, "value": t.value,
                "params": {k: params[k].decode(v) if k in params else v for k, v in t.params.items()},
                "summary": t.user_attrs.get("summary"), "per_outer": t.user_attrs.get("per_outer"),
                "error": error, "run_dir": t.user_attrs.get("run_dir"), "host": t.user_attrs.get("host"),
                "worker": t.user_attrs.get("worker"),
            })
        order = {"complete": 0, "running": 1, "waiting": 2, "failed": 3, "rerun": 4}
        records.sort(key=lambda r: (order.get(r["state"], 5), -(r["value"] if r["value"] is not None else -math.inf),
                                    r["number"]))
        return records

    def objective_note(self, short: bool = False) -> str:
        metric = METRICS[self.spec.metric][1]
        if self.spec.objective == "outer":
            return ("**Chosen on the outer test folds: the choice saw the test folds, so these figures are "
                    "optimistic.**" if short else
                    f"Objective: mean {metric} over the experiment's outer test folds. **The choice saw the test "
                    "folds: the best trial's figures are optimistic, not an estimate for new speakers.**")
        outer = [f.index for f in self.outer]
        if short:
            return ("Chosen on inner folds of training speakers only: no inner fold held a test speaker of its "
                    "outer fold" + ("." if len(outer) == 1 else
                                    " (pooled over the outer folds: not a nested estimate; see per outer fold)."))
        text = (f"Objective: mean {metric} over {self.spec.inner_folds} speaker-grouped inner folds of the training "
                f"speakers of outer fold{'s' if len(outer) > 1 else ''} {', '.join(map(str, outer))} "
                f"({self.cfg.protocol.scheme}); no inner fold holds a test speaker of its outer fold. ")
        if len(outer) == 1:
            return text + (f"The choice saw none of outer fold {outer[0]}'s test speakers, so best.yaml's score "
                           "on that fold is a clean estimate.")
        return text + ("Pooled over the outer folds, whose training speakers together include every outer test "
                       "speaker: scoring best.yaml on the outer folds is not a nested estimate. The choices per "
                       "outer fold below are (each saw none of its fold's test speakers).")

    def report(self, study) -> dict:
        from .reports.results import write_json
        records = self.trial_records(study)
        complete = [r for r in records if r["state"] == "complete"]
        best = complete[0] if complete else None
        metric_key, metric_name = METRICS[self.spec.metric]
        per_outer = []
        if self.spec.objective == "inner":
            for f in self.outer:
                scored = [r for r in complete if (r["per_outer"] or {}).get(str(f.index)) is not None]
                if scored:
                    top = max(scored, key=lambda r: (r["per_outer"][str(f.index)], -r["number"]))
                    per_outer.append({"outer_fold": f.index, "name": f.name, "test_speakers": f.test_speakers,
                                      "trial": top["number"], "params": top["params"],
                                      "value": top["per_outer"][str(f.index)]})
        figures = self.plot(complete)
        out = {
            "study": self.study_name, "storage": _redact(self.storage_url), "sampler": self.spec.sampler,
            "metric": self.spec.metric, "objective": self.spec.objective,
            "saw_test_folds": self.spec.objective == "outer", "objective_note": self.objective_note(),
            "n_trials": self.spec.n_trials, "space": self.spec.to_dict()["params"],
            "counts": {s: sum(r["state"] == s for r in records) for s in ("complete", "failed", "running", "waiting", "rerun")},
            "best": best and {k: best[k] for k in ("number", "params", "value", "summary", "run_dir")},
            "per_outer_fold": per_outer, "trials": records, "figures": figures,
        }
        write_json(self.out / "sweep.json", out)
        if best:
            best_cfg = load_config(None, data=with_params(self.cfg, best["params"]))
            head = (f"# best of the sweep in {self.out} (study {self.study_name!r}): trial {best['number']}, "
                    f"{metric_name} {100 * best['value']:.2f} ({self.spec.objective} objective"
                    f"{'; chosen on the outer test folds' if self.spec.objective == 'outer' else ''})\n")
            (self.out / "best.yaml").write_text(head + yaml.safe_dump(best_cfg.to_dict(), sort_keys=False))
        (self.out / "sweep.md").write_text(self.markdown(out, records, per_outer, figures))
        return out

    def markdown(self, summary: dict, records: list[dict], per_outer: list[dict], figures: list[str]) -> str:
        keys = [p.key for p in self.spec.params]
        metric_name = METRICS[self.spec.metric][1]
        c = summary["counts"]
        lines = [f"# Sweep: {self.cfg.name}", "", self.objective_note(), "",
                 f"Sampler {self.spec.sampler} (seed {self.spec.seed}), {self.spec.n_trials} trials: "
                 f"{c['complete']} complete, {c['failed']} failed"
                 + (f", {c['running']} running" if c["running"] else "") + (f", {c['waiting']} waiting" if c["waiting"] else "")
                 + f". Study `{self.study_name}` at `{summary['storage']}`. {metric_name}: mean ± std over the "
                 "trial's folds, percent.", ""]
        if summary["best"]:
            b = summary["best"]
            lines += [f"Best: trial {b['number']} ({', '.join(f'{k}={_fmt(v)}' for k, v in b['params'].items())}), "
                      f"{metric_name} {100 * b['value']:.2f}; its configuration: best.yaml.", ""]
        lines += ["## Trials, best first", "", self.objective_note(short=True), "",
                  "| rank | trial | " + " | ".join(keys) + f" | {metric_name} | ± | state | run folder |",
                  "|---:|---:|" + "---|" * len(keys) + "---:|---:|---|---|"]
        key = METRICS[self.spec.metric][0]
        rank = 0
        for r in records:
            if r["state"] in ("failed", "rerun"):
                continue
            rank += r["state"] == "complete"
            s = r["summary"] or {}
            value = f"{100 * r['value']:.2f}" if r["value"] is not None else ""
            std = f"{100 * s[f'{key}_std']:.2f}" if f"{key}_std" in s else ""
            lines.append(f"| {rank if r['state'] == 'complete' else ''} | {r['number']} | "
                         + " | ".join(_fmt(r["params"].get(k, "")) for k in keys)
                         + f" | {value} | {std} | {r['state']} | {self._rel(r['run_dir'])} |")
        if per_outer:
            lines += ["", "## Per outer fold (nested choices)", "",
                      "Each row's choice saw only that outer fold's training speakers (never its test speakers).", "",
                      "| outer fold | test speakers | best trial | " + " | ".join(keys) + f" | inner {metric_name} |",
                      "|---:|---|---:|" + "---|" * len(keys) + "---:|"]
            for p in per_outer:
                lines.append(f"| {p['outer_fold']} | {', '.join(p['test_speakers'])} | {p['trial']} | "
                             + " | ".join(_fmt(p["params"].get(k, "")) for k in keys) + f" | {100 * p['value']:.2f} |")
        failed = [r for r in records if r["state"] in ("failed", "rerun")]
        if failed:
            lines += ["", "## Failed and rerun trials", "", "| trial | " + " | ".join(keys) + " | error | run folder |",
                      "|---:|" + "---|" * len(keys) + "---|---|"]
            for r in failed:
                err = (r["error"] or "").replace("|", "\\|")
                lines.append(f"| {r['number']} | " + " | ".join(_fmt(r["params"].get(k, "")) for k in keys)
                             + f" | {err} | {self._rel(r['run_dir'])} |")
        if figures:
            lines += ["", f"## {metric_name} against each parameter", "", self.objective_note(short=True), ""]
            lines += [f"![{Path(f).stem}]({f})" for f in figures]
        return "\n".join(lines) + "\n"

    def _rel(self, path: str | None) -> str:
        if not path:
            return ""
        try:
            return str(Path(path).relative_to(self.out.resolve()))
        except ValueError:
            return path

    def plot(self, complete: list[dict]) -> list[str]:
        """figures/sweep_<param>.png: each complete trial's metric against the parameter's
        value (the best one starred) → paths relative to DIR."""
        if not complete:
            return []
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        figs = self.out / "figures"
        figs.mkdir(parents=True, exist_ok=True)
        metric_name = METRICS[self.spec.metric][1]
        paths = []
        for p in self.spec.params:
            xs = [r["params"].get(p.key) for r in complete]
            ys = [100 * r["value"] for r in complete]
            fig = Figure(figsize=(4.8, 3.4), dpi=110)
            FigureCanvasAgg(fig)
            ax = fig.add_subplot(1, 1, 1)
            numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
            if numeric:
                pos = xs
                if p.log or (min(xs) > 0 and max(xs) >= 20 * min(xs)):
                    ax.set_xscale("log")
            else:
                labels = list(dict.fromkeys(_fmt(x) for x in xs))
                pos = [labels.index(_fmt(x)) for x in xs]
                ax.set_xticks(range(len(labels)))
                ax.set_xticklabels(labels, rotation=30 if max(map(len, labels)) > 6 else 0)
            ax.scatter(pos, ys, s=28, alpha=0.75, color="tab:blue", label="trials")
            ax.scatter([pos[0]], [ys[0]], s=140, marker="*", color="tab:red", label="best")
            ax.set_xlabel(p.key)
            ax.set_ylabel(f"{metric_name} (%)")
            where = "outer test folds" if self.spec.objective == "outer" else "inner folds"
            ax.set_title(f"{metric_name} ({where}) vs {p.key}", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            fig.tight_layout()
            name = "sweep_" + re.sub(r"[^A-Za-z0-9._-]", "_", p.key) + ".png"
            fig.savefig(figs / name)
            paths.append(f"figures/{name}")
        return paths


# ---------------------------------------------------------------- entry point

def build_sweep(config, overrides: list[str], out, space=None, storage: str | None = None,
                study: str | None = None, tracker=None, log: Callable[[str], None] = print) -> Sweep:
    """Read and check everything (config, space, folds) before anything is written or
    extracted; → a :class:`Sweep`. Mistakes raise a one-line :class:`ConfigError`."""
    try:
        import optuna  # noqa: F401
    except ImportError as e:
        raise CamserError(f"camser sweep needs optuna ({e.name} is missing): pip install 'camser[sweep]'") from None
    plain, grid = split_overrides(config, overrides)
    cfg = load_config(config, plain)
    _check_model(cfg.model)
    spec = parse_spec(read_space(config, space), grid)
    check_space(spec, cfg)
    from .tracking import Tracker
    return Sweep(cfg, spec, Path(out), storage, study, tracker or Tracker(), log)


def run_sweep(config, overrides: list[str], out, space=None, storage: str | None = None,
              study: str | None = None, workers: int = 1, track: str = "none", worker: int | None = None,
              log: Callable[[str], None] = print) -> dict | None:
    """``camser sweep``: check, open (or resume) the study, run the trials (here, or in
    ``workers`` processes), write the reports. ``worker``: run as worker process ``worker``
    of a sweep started elsewhere (trials only, no reports). → sweep.json's content."""
    if workers < 1:
        raise ConfigError(f"--workers: expected at least 1, got {workers}")
    out = Path(out)
    sweep = build_sweep(config, overrides, out, space, storage, study, log=log)
    sweep.prepare_folds()                       # still nothing extracted; DIR exists from here
    prefix = f"[worker {worker}] " if worker is not None else ""
    tee = run_log(out / "run.log", log, header=f"camser sweep into {out}" + (f" (worker {worker})" if prefix else ""))
    sweep.log = lambda m: tee(prefix + m)
    tracker = sweep.tracker = make_tracker(track, **({} if track in (None, "none") else {"log": sweep.log}))
    if worker is not None:
        sweep.work(worker)
        return None
    study_obj = sweep.open_study(create=True)
    n_done = sum(t.state.is_finished() for t in study_obj.get_trials(deepcopy=False))
    sweep.log(f"sweep: {sweep.spec.sampler}, {sweep.spec.n_trials} trials, objective {sweep.spec.objective} "
              f"({METRICS[sweep.spec.metric][1]}), study {sweep.study_name!r} at {_redact(sweep.storage_url)}"
              + (f" ({n_done} trials finished already)" if n_done else ""))
    tracker.start(out, sweep.cfg.name, f"{sweep.study_name} sweep",
                  tags={"camser.command": "sweep", "camser.run_dir": str(out)})
    tracker.log_params({**{f"sweep.{k}": v for k, v in sweep.spec.to_dict().items() if k != "params"},
                        "sweep.params": json.dumps(sweep.spec.to_dict()["params"])})
    try:
        if workers == 1:
            sweep.work(0)
        else:
            _spawn_workers(config, overrides, out, space, sweep, workers, track)
    except KeyboardInterrupt:
        tracker.end("KILLED")
        raise
    summary = sweep.report(study_obj)
    c = summary["counts"]
    if summary["best"]:
        b = summary["best"]
        sweep.log(f"best: trial {b['number']} {METRICS[sweep.spec.metric][1]} {100 * b['value']:.2f} "
                  f"({', '.join(f'{k}={_fmt(v)}' for k, v in b['params'].items())})")
    sweep.log(f"sweep: {c['complete']} complete, {c['failed']} failed; {out / 'sweep.md'}, {out / 'best.yaml'}")
    tracker.log_metrics({"best_value": summary["best"]["value"]} if summary["best"] else {})
    tracker.log_metrics({f"n_{k}": v for k, v in c.items()})
    tracker.log_artifacts(out, ("sweep.md", "sweep.json", "best.yaml", "inner_folds.csv", "run.log", "figures"))
    unfinished = c["running"] + c["waiting"]
    tracker.end("FINISHED" if not unfinished else "FAILED")
    if unfinished:
        raise CamserError(f"{out}: {unfinished} of {sweep.spec.n_trials} trials unfinished (a worker stopped; "
                          "see its run.log); rerun the same command to resume")
    return summary


def _spawn_workers(config, overrides, out, space, sweep: Sweep, workers: int, track: str) -> None:
    cmd = [sys.executable, "-m", "camser.cli", "sweep", str(config), "--out", str(out),
           "--storage", sweep.storage_url, "--study", sweep.study_name, "--track", track or "none"]
    for o in overrides or []:
        cmd += ["--set", o]
    if space is not None:
        cmd += ["--space", str(space)]
    procs = [subprocess.Popen(cmd + ["--worker", str(i)]) for i in range(workers)]
    sweep.log(f"started {workers} worker processes (pids {', '.join(str(p.pid) for p in procs)})")
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.wait()
        raise
    for i, code in enumerate(codes):
        if code != 0:
            sweep.log(f"warning: worker {i} exited with status {code}")


def cli(a) -> int:
    """The ``camser sweep`` subcommand (arguments: see camser.cli)."""
    run_sweep(a.config, a.overrides, a.out, space=a.space, storage=a.storage, study=a.study,
              workers=a.workers, track=a.track, worker=a.worker)
    return 0
