"""TESS, the Toronto emotional speech set (``OAF_angry/OAF_back_angry.wav``): two speakers
(OAF, older; YAF, younger), 200 words in the carrier phrase "Say the word ...", 7 emotions.

The label is the last token of the file stem; TESS spells surprise ``ps`` in file names and
``pleasant_surprise(d)`` in folder names, both read as ``surprise``.
"""
from __future__ import annotations

from pathlib import Path

from ._common import ScanCollector, Skipped, find_files
from ..types import Utterance

ALL_LABELS = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
DEFAULT_INCLUDE = list(ALL_LABELS)
DEFAULT_MERGE: dict[str, str] = {}

_ALIASES = {"ps": "surprise", "surprised": "surprise"}


def label_of(stem: str) -> str | None:
    """``"OAF_back_ps"`` → ``"surprise"``; None when the last token is no TESS emotion."""
    lower = stem.lower()
    if lower.endswith(("pleasant_surprise", "pleasant_surprised")):
        return "surprise"
    token = lower.rsplit("_", 1)[-1]
    token = _ALIASES.get(token, token)
    return token if token in ALL_LABELS else None


def scan(root: str | Path, min_duration_s: float = 0.0) -> tuple[list[Utterance], list[Skipped]]:
    """Every ``.wav`` under ``root`` (searched recursively)."""
    root = Path(root)
    found = ScanCollector(min_duration_s)
    for path in find_files(root, (".wav",)):
        label = label_of(path.stem)
        speaker = path.stem.split("_", 1)[0].upper()
        if label is None or "_" not in path.stem:
            found.skip(path.absolute(), "file name is not TESS's SPEAKER_word_emotion")
            continue
        found.add(path.stem, path, label, speaker=speaker, session=speaker)
    return found.result()
