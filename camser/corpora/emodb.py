"""EmoDB, the Berlin Database of Emotional Speech (``wav/03a01Fa.wav``): 10 actors, 7 emotions.

Name: speaker (2 digits), text code (3 characters), emotion letter (German initial), version.
Labels use English names.
"""
from __future__ import annotations

import re
from pathlib import Path

from ._common import ScanCollector, Skipped, find_files
from ..types import Utterance

EMOTIONS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear",
            "F": "happiness", "T": "sadness", "N": "neutral"}
ALL_LABELS = sorted(EMOTIONS.values())
DEFAULT_INCLUDE = ["anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"]
DEFAULT_MERGE: dict[str, str] = {}

_NAME = re.compile(r"^(\d\d)([a-z]\d\d)([A-Z])([a-z]?)$")


def scan(root: str | Path, min_duration_s: float = 0.0) -> tuple[list[Utterance], list[Skipped]]:
    """Every ``.wav`` of ``root/wav`` (or of ``root`` when it has no such folder)."""
    root = Path(root)
    audio_dir = root / "wav" if (root / "wav").is_dir() else root
    found = ScanCollector(min_duration_s)
    for path in find_files(audio_dir, (".wav",)):
        m = _NAME.match(path.stem)
        if not m or m.group(3) not in EMOTIONS:
            found.skip(path.absolute(), "file name is not EmoDB's SSTTTEV (e.g. 03a01Fa)")
            continue
        speaker, _, letter, _ = m.groups()
        found.add(path.stem, path, EMOTIONS[letter], speaker=speaker, session=speaker)
    return found.result()
