"""IEMOCAP (``IEMOCAP_full_release``): five sessions, two actors each, improvised and scripted.

Labels come from ``SessionN/dialog/EmoEvaluation/<dialog>.txt`` (the majority label line of each
turn), audio from ``SessionN/sentences/wav/<dialog>/<utterance>.wav`` and transcripts from
``SessionN/dialog/transcriptions/<dialog>.txt``. The ``Categorical/``, ``Attribute/`` and
``Self-evaluation/`` subfolders hold the individual annotators' votes, not the labels, and are not
read.

The speaker is the actor who speaks the turn: the gender letter before the turn number
(``Ses01F_impro01_M012`` is the male actor of session 1, ``Ses01M``), not the letter after the
session number (that one says who wore the motion-capture markers in the dialog).
"""
from __future__ import annotations

import re
from pathlib import Path

from ._common import ScanCollector, Skipped
from ..types import Utterance

DEFAULT_INCLUDE = ["ang", "sad", "hap", "neu"]
DEFAULT_MERGE = {"exc": "hap"}
# "xxx" (no majority among the annotators) is a label line value but not a category.
ALL_LABELS = ["ang", "dis", "exc", "fea", "fru", "hap", "neu", "oth", "sad", "sur"]

# [6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]
_LABEL_LINE = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s+(Ses\S+)\s+(\S+)\s+\[")
# Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.
_TRANSCRIPT_LINE = re.compile(r"^(Ses\S+)\s+\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s*:\s?(.*)$")
_UTTERANCE = re.compile(r"^(Ses\d+)[FM]_.*_([FM])\d+$")
_SESSION_DIR = re.compile(r"^Session\d+$")


def find_root(root: Path) -> Path:
    """``root`` itself, or its ``IEMOCAP_full_release`` child when given the folder above it."""
    root = Path(root)
    if not any(_SESSION_DIR.match(p.name) for p in root.iterdir() if p.is_dir()):
        inner = root / "IEMOCAP_full_release"
        if inner.is_dir():
            return inner
    return root


def _read_lines(path: Path) -> list[str]:
    # The release is ASCII; "replace" keeps a stray byte from ending the scan.
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def read_label_file(path: Path) -> list[tuple[str, str]]:
    """``[(utterance id, label), ...]`` from one EmoEvaluation file, in file order."""
    out = []
    for line in _read_lines(path):
        m = _LABEL_LINE.match(line)
        if m:
            out.append((m.group(1), m.group(2)))
    return out


def read_transcripts(path: Path) -> dict[str, str]:
    """``{utterance id: text}`` from one transcription file; lines without a turn id and a
    bracketed time (e.g. ``M: [LAUGHTER]``) are not turns and are left out."""
    if not path.is_file():
        return {}
    out = {}
    for line in _read_lines(path):
        m = _TRANSCRIPT_LINE.match(line.strip())
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def speaker_of(utterance_id: str) -> tuple[str, str] | None:
    """``"Ses01F_impro01_M012"`` → ``("Ses01M", "Ses01")``; None when the name doesn't fit."""
    m = _UTTERANCE.match(utterance_id)
    if not m:
        return None
    return m.group(1) + m.group(2), m.group(1)


def scan(root: str | Path, min_duration_s: float = 0.0) -> tuple[list[Utterance], list[Skipped]]:
    """Every labelled turn of every session (raw labels; no label set applied)."""
    root = find_root(Path(root))
    found = ScanCollector(min_duration_s)
    sessions = sorted(p for p in root.iterdir() if p.is_dir() and _SESSION_DIR.match(p.name))
    for session_dir in sessions:
        label_dir = session_dir / "dialog" / "EmoEvaluation"
        if not label_dir.is_dir():
            continue
        label_files = sorted(p for p in label_dir.glob("*.txt") if p.is_file() and not p.name.startswith("._"))
        for label_file in label_files:
            dialog = label_file.stem
            texts = read_transcripts(session_dir / "dialog" / "transcriptions" / f"{dialog}.txt")
            for utt_id, label in read_label_file(label_file):
                wav = session_dir / "sentences" / "wav" / dialog / f"{utt_id}.wav"
                who = speaker_of(utt_id)
                if who is None:
                    found.skip(wav.absolute(), f"cannot tell the speaker from the turn name {utt_id}")
                elif not wav.is_file():
                    found.skip(wav.absolute(), "missing audio")
                else:
                    found.add(utt_id, wav, label, speaker=who[0], session=who[1], text=texts.get(utt_id))
    return found.result()
