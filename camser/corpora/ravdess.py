"""RAVDESS speech (``Actor_XX/03-01-EE-II-SS-RR-AA.wav``, or ``.flac`` in re-encoded copies).

The file name says everything: modality (03 audio-only), vocal channel (01 speech, 02 song),
emotion, intensity, statement, repetition and actor. Only audio-only speech is read; the
song and audio-visual files are listed as skipped. The utterance id is the file stem, which is
what EmoBox's ``folds_*.csv`` call ``file_stem``.
"""
from __future__ import annotations

import re
from pathlib import Path

from ._common import ScanCollector, Skipped, find_files
from ..types import Utterance

EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad",
            "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised"}
ALL_LABELS = list(EMOTIONS.values())
DEFAULT_INCLUDE = list(ALL_LABELS)   # all eight, in the corpus's code order
DEFAULT_MERGE: dict[str, str] = {}

_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def scan(root: str | Path, min_duration_s: float = 0.0) -> tuple[list[Utterance], list[Skipped]]:
    """Every audio-only speech clip under ``root`` (searched recursively)."""
    root = Path(root)
    found = ScanCollector(min_duration_s)
    for path in find_files(root, (".wav", ".flac")):
        m = _NAME.match(path.stem)
        if not m:
            found.skip(path.absolute(), "file name is not RAVDESS's MM-VV-EE-II-SS-RR-AA")
            continue
        modality, channel, emotion, _, _, _, actor = m.groups()
        if modality != "03" or channel != "01":
            found.skip(path.absolute(), f"not audio-only speech (modality {modality}, vocal channel {channel})")
            continue
        if emotion not in EMOTIONS:
            found.skip(path.absolute(), f"unknown emotion code {emotion}")
            continue
        speaker = f"Actor_{actor}"
        found.add(path.stem, path, EMOTIONS[emotion], speaker=speaker, session=speaker)
    return found.result()
