"""`camser COMMAND --help`: every option of every subcommand says what it is, and shows its
default when it has one."""
import argparse

import pytest

from camser.cli import build_parser


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


SUBCOMMANDS = _subcommands()


@pytest.fixture(autouse=True)
def wide_help(monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")       # no line wrapping (it splits "camser-demo" at the hyphen)


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_argument_has_help(name):
    parser = SUBCOMMANDS[name]
    # SUPPRESS marks an internal option (sweep's --worker, which its own processes pass)
    missing = [a.dest for a in parser._actions if not a.help]
    assert missing == []
    text = parser.format_help()
    assert "(default: None)" not in text and "(default: False)" not in text and "(default: [])" not in text
    for a in parser._actions:          # a default worth showing is shown
        if a.option_strings and a.default not in (None, False, [], argparse.SUPPRESS):
            assert f"(default: {a.default}" in text, (name, a.dest)


def test_synth_and_demo_show_their_defaults():
    synth = SUBCOMMANDS["synth"].format_help()
    assert "sessions, each with a female and a male speaker (default: 3)" in synth
    assert "utterances per speaker (default: 16)" in synth and "(default: 0)" in synth
    assert "(default: camser-demo)" in SUBCOMMANDS["demo"].format_help()
