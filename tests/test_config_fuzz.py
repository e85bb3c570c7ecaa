"""Config fuzz: every field of the config tree (found by walking the dataclasses, so a new field
is covered without editing this file) fed a wrong type, an out-of-range value and a typo'd key
is a one-line ConfigError naming it; through the CLI that is exit 2, one line on stderr and
nothing written. Also: the hub-offline fast failure of the SSL encoder loader."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import types
import typing
from pathlib import Path

import pytest

from camser.config import (CORPORA, FEATURE_KINDS, METRICS, PROTOCOL_SCHEMES, VALIDATION_MODES, WINDOWS,
                           Allowed, ExperimentConfig, load_config)
from camser.errors import CamserError, ConfigError

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "camser/configs/demo.yaml"

# Fields that may hold any value of their type; every other number needs bounds and every
# other string its choices (a new field fails test_every_field_declares_its_values until it does).
FREE_TEXT = {"name", "corpus.root", "corpus.prepared", "corpus.folds_csv", "features.cache_dir",
             "features.ssl.model"}
# train.seeds: any integers; features.ssl.layer: an index checked against the encoder's depth
# when it loads (negative ones count from the end)
UNBOUNDED_NUMBERS = {"train.seeds", "features.ssl.layer"}


def _walk(cls=ExperimentConfig, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        yield prefix + f.name, f, hints[f.name]
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _walk(hints[f.name], f"{prefix}{f.name}.")


FIELDS = list(_walk())
IDS = [name for name, _, _ in FIELDS]


def _members(tp) -> list:
    """The alternatives of a field type, None left out: ``list[str] | str | None`` → [list[str], str]."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(tp) if a is not type(None)]
    return [tp]


# One sample of each YAML kind, and which field types take it (bool is not an int here).
SAMPLES = {"true": True, "int": 2, "float": 1.5, "str": "abc", "list": [{"a": 1}], "mapping": {"oops": 1}}
TAKES = {bool: {"true"}, int: {"int"}, float: {"int", "float"}, str: {"str"}, list: {"list"},
         tuple: {"list"}, dict: {"mapping"}}


def wrong_types(tp) -> list:
    """Values of a YAML kind no alternative of ``tp`` takes; for lists also a list of wrong items."""
    if dataclasses.is_dataclass(tp):
        return [5, "abc", [1]]
    taken = set()
    for m in _members(tp):
        taken |= TAKES[typing.get_origin(m) or m]
    out = [v for k, v in SAMPLES.items() if k not in taken]
    for m in _members(tp):
        if typing.get_origin(m) in (list, tuple):
            item = typing.get_args(m)[0]
            wrong_item = "abc" if item in (int, float) else 5 if item is str else {"oops": 1}   # unions: a mapping
            out.append([wrong_item] * n_items(m))
    return out


def n_items(tp, a: Allowed | None = None) -> int:
    """How many items a list value of ``tp`` needs: a fixed tuple's length, else at least one."""
    for m in _members(tp):
        args = typing.get_args(m)
        if typing.get_origin(m) is tuple and Ellipsis not in args:
            return len(args)
    return max(1, a.min_items if a else 1)


def out_of_range(f: dataclasses.Field, tp) -> list:
    """Values just outside the field's declared bounds / choices / list length."""
    a: Allowed | None = f.metadata.get("allowed")
    if a is None:
        return []
    ints = any(m is int or typing.get_origin(m) in (list, tuple) and typing.get_args(m)[0] is int
               for m in _members(tp))
    step = 1 if ints else 0.001
    bad = [a.ge - step if a.ge is not None else None, a.gt, a.le + step if a.le is not None else None, a.lt]
    bad = [b for b in bad if b is not None]
    if a.choices:
        bad += [a.choices[0] + "x", "Bogus"]
        if a.sep:
            bad.append(f"{a.choices[0]}{a.sep}{a.choices[-1]}x")
    if a.items:
        bad = [[b] * n_items(tp, a) for b in bad]
    if a.min_items:
        bad.append([])
    return bad


def _set(name: str, value) -> str:
    return f"{name}={json.dumps(value)}"      # JSON is YAML: --set parses it back to the same value


def _config_error(override: str) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(DEMO_CONFIG, [override])
    msg = str(e.value)
    assert "\n" not in msg and msg.strip() == msg
    return msg


@pytest.mark.parametrize("name, f, tp", FIELDS, ids=IDS)
def test_wrong_type_names_the_field(name, f, tp):
    for value in wrong_types(tp):
        assert _config_error(_set(name, value)).startswith(name), value


@pytest.mark.parametrize("name, f, tp", FIELDS, ids=IDS)
def test_out_of_range_names_the_field(name, f, tp):
    for value in out_of_range(f, tp):
        assert _config_error(_set(name, value)).startswith(name), value


@pytest.mark.parametrize("name, f, tp", FIELDS, ids=IDS)
def test_typo_in_key_names_it_and_suggests(name, f, tp):
    typo = name + name[-1]
    msg = _config_error(f"{typo}=1")
    assert msg.startswith(f"{typo}: unknown field (did you mean {name.rsplit('.', 1)[-1]}?")


@pytest.mark.parametrize("name, f, tp", FIELDS, ids=IDS)
def test_values_at_the_bounds_and_every_choice_are_accepted(name, f, tp):
    a: Allowed | None = f.metadata.get("allowed")
    if a is None:
        return
    good = [b for b in (a.ge, a.le) if b is not None] + list(a.choices)
    if a.sep:
        good.append(a.sep.join(a.choices))
    for value in good:
        value = [value] * n_items(tp, a) if a.items else value
        try:
            load_config(DEMO_CONFIG, [_set(name, value)])
        except ConfigError as e:      # a rule between fields may object, the field's own may not
            assert not str(e).startswith(name), str(e)


def test_every_field_declares_its_values():
    undeclared = []
    for name, f, tp in FIELDS:
        a, kinds = f.metadata.get("allowed"), set()
        for m in _members(tp):
            kinds.add(typing.get_args(m)[0] if typing.get_origin(m) is list else m)
        numeric = kinds & {int, float}
        if numeric and name not in UNBOUNDED_NUMBERS and not (a and {a.ge, a.gt, a.le, a.lt} - {None}):
            undeclared.append(name)
        if str in kinds and name not in FREE_TEXT and not (a and a.choices):
            undeclared.append(name)
    assert undeclared == []


def test_defaults_and_shipped_configs_pass():
    load_config()
    for path in sorted((REPO / "configs").glob("*.yaml")) + [DEMO_CONFIG]:
        load_config(path)


def test_enumerations_agree_with_the_code_that_uses_them():
    import numpy as np
    import scipy.signal

    from camser.corpora import READERS
    from camser.features.store import KINDS
    from camser.segments import LAST_SEGMENT
    from camser.metrics import compute_metrics
    from camser.protocols import SCHEMES, VALIDATION

    assert CORPORA == tuple(READERS) and FEATURE_KINDS == KINDS
    assert PROTOCOL_SCHEMES == SCHEMES and VALIDATION_MODES == VALIDATION
    segments_last = dict((n, f) for n, f, _ in FIELDS)["segments.last"].metadata["allowed"].choices
    assert segments_last == LAST_SEGMENT
    metrics = compute_metrics(np.array([0, 1, 1]), np.array([0, 1, 0]), ["a", "b"])
    assert all(isinstance(metrics[m], float) for m in METRICS)
    for w in WINDOWS:
        assert len(scipy.signal.get_window(w, 64)) == 64


# The cases the issue reported, and rules between fields: written out, not derived from the
# declarations above.
@pytest.mark.parametrize("override, starts", [
    ("segments.length_s=-1", "segments.length_s: expected a number > 0"),
    ("train.batch_size=0", "train.batch_size: expected an integer ≥ 1"),
    ("train.max_epochs=0", "train.max_epochs: expected an integer ≥ 1"),
    ("features.kinds=[mfcc,bogus]", "features.kinds[1]: 'bogus' is not one of"),
    ("train.select_on=wa+acc", "train.select_on: 'acc' (in 'wa+acc') is not one of"),
    ("train.lr=0", "train.lr: expected a number > 0"),
    ("features.spectrogram.win_length=1024", "features.spectrogram.win_length: 1024 is longer than"),
    ("features.spectrogram.n_bins=500", "features.spectrogram.n_bins: 500 is more than"),
    ("features.melspec.win_length=2048", "features.melspec.win_length: 2048 is longer than"),
    ("features.melspec.fmax=9000", "features.melspec.fmax: 9000.0 Hz is not in"),
    ("features.melspec.fmin=8000", "features.melspec.fmin: 8000 Hz is not below"),
    ("segments.length_s=0.005", "segments.length_s: 0.005 s is shorter than one frame"),
    ("protocol.folds=[1, 0]", "protocol.folds[1]: expected an integer ≥ 1"),
    ("train.seeds=[]", "train.seeds: expected at least 1 item"),
])
def test_reported_cases(override, starts):
    assert _config_error(override).startswith(starts)


# ---------------------------------------------------------------- the CLI: exit 2, nothing written

def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "camser.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=120)


def _one_line_exit_2(r: subprocess.CompletedProcess, field: str) -> None:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"camser: error: {field}"), r.stderr


@pytest.mark.parametrize("command, override, field", [
    ("cv", "segments.length_s=-1", "segments.length_s"),                 # out of range
    ("cv", "features.kinds=[mfcc,bogus]", "features.kinds[1]"),          # unknown item
    ("cv", "train.optimizer=adamww", "train.optimizer"),                 # typo'd value
    ("cv", "train.batch_sze=8", "train.batch_sze"),                      # typo'd key
    ("cv", "train.lr=fast", "train.lr"),                                 # wrong type
    ("train", "train.max_epochs=0", "train.max_epochs"),
    ("ablation", "train.batch_size=0", "train.batch_size"),
    ("cv", "model.lstm_hiden=64", "model.lstm_hiden"),                   # the model section's own fields
])
def test_cli_config_error_writes_nothing(tmp_path, command, override, field):
    out = tmp_path / "run"
    _one_line_exit_2(_cli(command, DEMO_CONFIG, "--out", out, "--set", override, cwd=tmp_path), field)
    assert not out.exists() and sorted(tmp_path.iterdir()) == []


def test_cli_compare_checks_every_config_first(tmp_path):
    cfgs = tmp_path / "cfgs"
    cfgs.mkdir()
    (cfgs / "a.yaml").write_text(DEMO_CONFIG.read_text())
    (cfgs / "b.yaml").write_text(DEMO_CONFIG.read_text() + "segments: {length_s: 0}\n")
    r = _cli("compare", cfgs / "a.yaml", cfgs / "b.yaml", "--out", tmp_path / "cmp")
    _one_line_exit_2(r, "segments.length_s")
    assert not (tmp_path / "cmp").exists()


def test_cli_features_config_error_extracts_nothing(tmp_path):
    prep = tmp_path / "prep"
    prep.mkdir()
    (prep / "manifest.csv").write_text("id,path,label,speaker,session,duration_s,text\n")
    r = _cli("features", prep, "--set", "features.mfcc.n_mfcc=0")
    _one_line_exit_2(r, "features.mfcc.n_mfcc")
    assert [p.name for p in prep.iterdir()] == ["manifest.csv"]


# ---------------------------------------------------------------- the hub, offline

@pytest.fixture
def online(monkeypatch):
    """As if the hub could be reached (whatever this machine's network and environment)."""
    import huggingface_hub.constants

    from camser.features import ssl
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(ssl, "_resolves", lambda host: True)
    return ssl


def _recording_load(calls, fail=True):
    def load(name, **kwargs):
        calls.append((name, kwargs))
        if fail:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return "loaded"
    return load


@pytest.mark.parametrize("why", ["no_dns", "env"])
def test_unreachable_hub_fails_at_once_from_the_cache(online, monkeypatch, why):
    ssl = online
    if why == "no_dns":
        monkeypatch.setattr(ssl, "_resolves", lambda host: False)
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls = []
    with pytest.raises(CamserError) as e:
        ssl._from_hub_or_folder(_recording_load(calls), "some-org/some-model", "model")
    assert calls == [("some-org/some-model", {"local_files_only": True})]     # one try, cache only
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("features.ssl.model: the Hugging Face hub is unreachable")
    assert ("does not resolve" if why == "no_dns" else "HF_HUB_OFFLINE is set") in msg
    assert "local folder" in msg and "--set features.ssl.model=/path/to/folder" in msg
    # a model in the local cache still loads offline
    assert ssl._from_hub_or_folder(_recording_load([], fail=False), "some-org/some-model", "model") == "loaded"


def test_reachable_hub_and_local_folders_load_normally(online, tmp_path, monkeypatch):
    ssl = online
    calls = []
    assert ssl._from_hub_or_folder(_recording_load(calls, fail=False), "org/model", "model") == "loaded"
    monkeypatch.setattr(ssl, "_resolves", lambda host: False)       # a folder needs no hub
    assert ssl._from_hub_or_folder(_recording_load(calls, fail=False), str(tmp_path), "model") == "loaded"
    assert calls == [("org/model", {}), (str(tmp_path), {})]
    assert ssl._offline_kwargs(str(tmp_path)) == {}
    assert ssl._offline_kwargs("org/model") == {"local_files_only": True}


def test_cli_features_offline_says_so_at_once(tmp_path):
    from camser.corpora import scan_corpus, write_manifest
    from camser.corpora.synthetic import generate_iemocap

    corpus = generate_iemocap(tmp_path / "corpus", n_sessions=1, utterances_per_speaker=8, seed=0)
    scan = scan_corpus("iemocap", corpus)
    write_manifest(tmp_path / "prep", scan.utterances, scan.skipped)
    env_home = tmp_path / "hf"              # an empty cache: the default encoder is not in it
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "camser.cli", "features", str(tmp_path / "prep")],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_HOME": str(env_home)})
    took = time.monotonic() - started
    _one_line_exit_2(r, "features.ssl.model: the Hugging Face hub is unreachable")
    assert "local folder" in r.stderr and "Retry" not in r.stderr
    assert took < 20, took       # five retries with back-off took ~25 s
