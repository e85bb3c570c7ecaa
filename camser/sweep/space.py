"""The search space of a sweep: its YAML, checked against the configuration before anything runs."""
from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from ..config import ExperimentConfig, load_config, read_yaml
from ..errors import ConfigError


SAMPLERS = ("grid", "tpe", "random")
METRICS = {"ua": ("ua", "UA"), "wa": ("wa", "WA"), "f1_macro": ("f1", "macro-F1")}
OBJECTIVES = ("inner", "outer")
SPEC_FIELDS = ("sampler", "n_trials", "metric", "objective", "inner_folds", "seed", "startup_trials",
               "heartbeat_s", "nested", "params")
RANGE_FIELDS = ("type", "low", "high", "log", "step", "values")
FIXED_SECTIONS = ("corpus", "labels", "protocol")
MAX_GRID = 10_000


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
    nested: bool = False      # inner objective: score each outer fold with its own choice

    @property
    def grid(self) -> bool:
        return self.sampler == "grid"

    def to_dict(self) -> dict:
        return {"sampler": self.sampler, "n_trials": self.n_trials, "metric": self.metric,
                "objective": self.objective, "inner_folds": self.inner_folds, "seed": self.seed,
                "startup_trials": self.startup_trials, "heartbeat_s": self.heartbeat_s, "nested": self.nested,
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
    nested = raw.get("nested", False)
    if not isinstance(nested, bool):
        raise ConfigError(f"sweep.nested: expected true or false, got {nested!r}")
    if nested and spec.objective != "inner":
        raise ConfigError("sweep.nested: needs objective inner (an outer choice saw every test fold)")
    spec.nested = nested
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
    from ..config import _parse_override
    keys, value = _parse_override(item)
    return ".".join(keys), _numbers(value)


def check_model(section: dict) -> None:
    from ..models import check_model_section
    check_model_section(section)


def load_checked(data: dict) -> ExperimentConfig:
    cfg = load_config(None, data=data)
    check_model(cfg.model)
    return cfg


def split_overrides(config: str | Path, overrides: list[str]) -> tuple[list[str], dict]:
    """``--set`` items → (plain overrides, grid axes): a list given to a field that does not
    take a list (``train.lr=[1e-3,1e-4]``) is a grid axis."""
    plain, grid = [], {}
    for item in overrides or []:
        key, value = _parse_set(item)
        if isinstance(value, list):
            try:
                check_model(load_config(config, plain + [item]).model)
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


