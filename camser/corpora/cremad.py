"""CREMA-D (``AudioWAV/1001_DFA_ANG_XX.wav``): 91 actors, six emotions, 12 sentences.

Name fields: actor id, sentence code, emotion code, intensity (LO/MD/HI/XX). The labels are
the emotion codes in lower case (``ang``, ``dis``, ``fea``, ``hap``, ``neu``, ``sad``), which
line up with IEMOCAP's names for cross-corpus work.
"""
from __future__ import annotations

import re
from pathlib import Path

from ._common import ScanCollector, Skipped, find_files
from ..types import Utterance

ALL_LABELS = ["ang", "dis", "fea", "hap", "neu", "sad"]
DEFAULT_INCLUDE = list(ALL_LABELS)
DEFAULT_MERGE: dict[str, str] = {}

_NAME = re.compile(r"^(\d+)_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


def scan(root: str | Path, min_duration_s: float = 0.0) -> tuple[list[Utterance], list[Skipped]]:
    """Every ``.wav`` of ``root/AudioWAV`` (or of ``root`` when it has no such folder)."""
    root = Path(root)
    audio_dir = root / "AudioWAV" if (root / "AudioWAV").is_dir() else root
    found = ScanCollector(min_duration_s)
    for path in find_files(audio_dir, (".wav",)):
        m = _NAME.match(path.stem)
        if not m or m.group(3).lower() not in ALL_LABELS:
            found.skip(path.absolute(), "file name is not CREMA-D's ACTOR_SENTENCE_EMOTION_LEVEL")
            continue
        actor, _, emotion, _ = m.groups()
        found.add(path.stem, path, emotion.lower(), speaker=actor, session=actor)
    return found.result()
