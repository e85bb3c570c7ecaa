"""Model config fuzz: every field of every registered model's config dataclass (found by walking
camser.models.REGISTRY, so a new model or field is covered without editing this file) fed a
wrong type, an out-of-range value and a typo'd key through check_model_section is a one-line
ConfigError naming it (``model.<field>``; ``model.member.<field>`` inside an ensemble), with no
data read and no network built; through the CLI that is exit 2, one line on stderr and nothing
written."""
from __future__ import annotations

import dataclasses
import re
import typing

import pytest
from test_config_fuzz import REPO, _cli, _members, _one_line_exit_2, _set, n_items, out_of_range, wrong_types

from camser.config import Allowed
from camser.errors import ConfigError
from camser.models import REGISTRY, check_model_section

# Strings that may be any text (a URL, a hub id or a folder) and numbers with no range of their
# own (a layer index, checked against the cached layers when the features are read); every other
# number needs bounds and every other string its choices.
FREE_TEXT = {"camser.alexnet_weights", "multimodal.text_encoder"}
UNBOUNDED_NUMBERS = {"linear.layer"}
# what the rest of a section needs to be valid
BASE = {"ensemble": {"member": {"name": "random"}}}


def _fields(cls):
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


CASES = []
for _name, _record in sorted(REGISTRY.items()):
    for _f, _tp in _fields(_record.config):
        CASES.append(pytest.param(_name, False, _f, _tp, id=f"{_name}.{_f.name}"))
        if _name != "ensemble":          # the same field in an ensemble's member section
            CASES.append(pytest.param(_name, True, _f, _tp, id=f"ensemble.member.{_name}.{_f.name}"))


def _section(model: str, as_member: bool, key: str, value) -> tuple[dict, str]:
    """The model section setting ``key`` (in a member section when ``as_member``) and the prefix
    its error must start with."""
    if as_member:
        return {"name": "ensemble", "member": {"name": model, key: value}}, f"model.member.{key}"
    return {"name": model, **BASE.get(model, {}), key: value}, f"model.{key}"


def _error(section: dict) -> str:
    with pytest.raises(ConfigError) as e:
        check_model_section(section)
    msg = str(e.value)
    assert "\n" not in msg and msg.strip() == msg
    return msg


def _names(msg: str, prefix: str) -> bool:
    return re.match(rf"{re.escape(prefix)}(\[\d+\])?: ", msg) is not None


@pytest.fixture(autouse=True)
def no_network_is_built(monkeypatch):
    """check_model_section checks the config alone: building a model here fails the test."""
    def build(*args, **kwargs):
        raise AssertionError("check_model_section built a model")
    for name, record in list(REGISTRY.items()):
        monkeypatch.setitem(REGISTRY, name, dataclasses.replace(record, build=build))


@pytest.mark.parametrize("model, as_member, f, tp", CASES)
def test_wrong_type_names_the_field(model, as_member, f, tp):
    for value in wrong_types(tp):
        section, prefix = _section(model, as_member, f.name, value)
        msg = _error(section)
        assert _names(msg, prefix), (value, msg)


@pytest.mark.parametrize("model, as_member, f, tp", CASES)
def test_out_of_range_names_the_field(model, as_member, f, tp):
    for value in out_of_range(f, tp):
        section, prefix = _section(model, as_member, f.name, value)
        msg = _error(section)
        assert _names(msg, prefix), (value, msg)


@pytest.mark.parametrize("model, as_member, f, tp", CASES)
def test_typo_in_key_names_it_and_suggests(model, as_member, f, tp):
    typo = f.name + f.name[-1]
    section, prefix = _section(model, as_member, typo, 1)
    assert _error(section).startswith(f"{prefix}: unknown field (did you mean {f.name}?")


@pytest.mark.parametrize("model, as_member, f, tp", CASES)
def test_values_at_the_bounds_and_every_choice_are_accepted(model, as_member, f, tp):
    a: Allowed | None = f.metadata.get("allowed")
    if a is None:
        return
    good = [b for b in (a.ge, a.le) if b is not None] + list(a.choices)
    if int in _members(tp):
        good = [int(b) if isinstance(b, float) and b.is_integer() else b for b in good]
    for value in good:
        value = [value] * n_items(tp, a) if a.items else value
        section, prefix = _section(model, as_member, f.name, value)
        try:
            check_model_section(section)
        except ConfigError as e:      # a rule between fields may object, the field's own may not
            assert not _names(str(e), prefix), str(e)


def test_every_model_declares_a_config():
    assert [name for name, r in REGISTRY.items() if not dataclasses.is_dataclass(r.config)] == []


def test_every_field_declares_its_values():
    undeclared = []
    for name, record in REGISTRY.items():
        for f, tp in _fields(record.config):
            key, a, kinds = f"{name}.{f.name}", f.metadata.get("allowed"), set()
            for m in _members(tp):
                kinds.add(typing.get_args(m)[0] if typing.get_origin(m) in (list, tuple) else m)
            if kinds & {int, float} and key not in UNBOUNDED_NUMBERS and not (a and {a.ge, a.gt, a.le, a.lt} - {None}):
                undeclared.append(key)
            if str in kinds and key not in FREE_TEXT and not (a and a.choices):
                undeclared.append(key)
    assert undeclared == []


def test_shipped_model_sections_pass():
    from camser.config import load_config
    for path in sorted((REPO / "configs").glob("*.yaml")) + [REPO / "camser/configs/demo.yaml"]:
        check_model_section(load_config(path).model)


def test_saved_configs_are_checked_on_load(tmp_path):
    import json

    from camser.errors import CamserError
    from camser.models.baselines import FrameLSTM, LSTMConfig
    folder = tmp_path / "m"
    FrameLSTM(LSTMConfig(input_dim=8)).save_pretrained(folder)
    saved = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**saved, "dropout": 1.5}))
    with pytest.raises(CamserError, match=r"^model\.dropout: expected a number in \[0, 1\)"):
        FrameLSTM.from_pretrained(folder)


# Written out, not derived from the declarations: the section keys that are not config fields,
# the rules between fields and the cases the issue reported.
@pytest.mark.parametrize("section, starts", [
    ({"name": "camser", "dropout": 2}, "model.dropout: expected a number in [0, 1), got 2"),
    ({"name": "lstm", "hidden": 0}, "model.hidden: expected an integer ≥ 1, got 0"),
    ({"name": "camser", "preset": "gpu"}, "model.preset: 'gpu' is not one of paper, cpu"),
    ({"name": "camser", "preset": [1]}, "model.preset: [1] is not one of"),
    ({"name": "camser", "ablation": {"a": 1}}, "model.ablation: {'a': 1} is not one of"),
    ({"name": "camser", "ssl_time_pool": 2}, "model.ssl_time_pool: needs coattention softmax or none"),
    ({"name": "camser", "image_size": [256]}, "model.image_size: expected a list of 2 items"),
    ({"name": "camser", "cnn_channels": [8, 0]}, "model.cnn_channels[1]: expected an integer ≥ 1"),
    ({"name": "query2label", "d_model": 130}, "model.heads: 4 does not divide model.d_model 130"),
    ({"name": "multimodal", "modalities": ["text", "text"]}, "model.modalities: expected distinct items"),
    ({"name": "multimodal", "modalities": ["audio"], "text_cls": True}, "model.text_cls: true needs 'text'"),
    ({"name": "multimodal", "max_text_tokens": 1}, "model.max_text_tokens: expected an integer ≥ 2"),
    ({"name": "linear", "C": 0}, "model.C: expected a number > 0"),
    ({"name": "linear", "C": [0.1, -1]}, "model.C[1]: expected a number > 0"),
    ({"name": "linear", "C": []}, "model.C: expected at least 1 item"),
    ({"name": "mlp", "features": ["mfcc", "wavelets"]}, "model.features[1]: 'wavelets' is not one of"),
    ({"name": "ensemble", "member": {"name": "camser", "preset": "gpu"}}, "model.member.preset: 'gpu'"),
    ({"name": "ensemble", "member": {}}, "model.member.name: None is not a known model"),
    ({"name": "ensemble", "member": {"name": "random"}, "n_members": 0}, "model.n_members: expected an integer ≥ 1"),
])
def test_reported_cases(section, starts):
    assert _error(section).startswith(starts)


@pytest.mark.parametrize("section", [
    {"name": "lstm", "feature": "spec"},                 # an older feature name still reads
    {"name": "mlp", "features": ["w2e"]},
    {"name": "linear", "layer": -1},                     # a layer index, checked against the cached layers later
    {"name": "linear", "C": 0.5},
    {"name": "opensmile", "class_weight": None},
    {"name": "camser", "preset": "cpu", "ablation": "w2e+coatt"},
    {"name": "ensemble", "member": {"name": "camser", "preset": "cpu"}, "n_members": 3},
])
def test_accepted_sections(section):
    check_model_section(section)


# ---------------------------------------------------------------- the CLI: exit 2, nothing written

@pytest.mark.parametrize("config, overrides, field", [
    ("camser/configs/demo.yaml", ["model.dropout=2"], "model.dropout"),
    ("configs/ravdess_lstm.yaml", ["model.hidden=0"], "model.hidden"),
    ("camser/configs/demo.yaml", [_set("model", {"name": "lstm", "hidden": 0})], "model.hidden"),
])
def test_cli_model_field_error_writes_nothing(tmp_path, config, overrides, field):
    out = tmp_path / "run"
    args = [a for o in overrides for a in ("--set", o)]
    _one_line_exit_2(_cli("cv", REPO / config, "--out", out, *args, cwd=tmp_path), field)
    assert not out.exists() and sorted(tmp_path.iterdir()) == []
