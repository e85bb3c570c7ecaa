"""Pieces every reader shares: finding files, validating audio, collecting utterances.

A reader only knows its corpus's naming scheme; how a file is checked and how a bad one is
recorded (skipped with the :class:`~camser.errors.AudioError` reason, never a crash) lives here
so all corpora behave the same.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import soundfile as sf

from ..audio import load_audio
from ..errors import AudioError
from ..types import Utterance

Skipped = tuple[str, str]


def is_apple_double(path: Path) -> bool:
    """macOS ``._name`` resource-fork files (left by copying from a Mac) look like data files
    with the right extension but hold no audio or labels."""
    return any(part.startswith("._") for part in Path(path).parts)


def find_files(root: Path, suffixes: Iterable[str]) -> list[Path]:
    """Every file under ``root`` whose suffix (case-insensitive) is one of ``suffixes``,
    without ``._*`` files, in a stable (sorted) order."""
    wanted = {s.lower() for s in suffixes}
    found = (p for p in Path(root).rglob("*") if p.suffix.lower() in wanted and p.is_file())
    return sorted(p for p in found if not is_apple_double(p.relative_to(root)))


def audio_duration_s(path: Path, min_duration_s: float = 0.0) -> float:
    """Read the whole file through :func:`camser.audio.load_audio` (at its own sample rate, so
    nothing is resampled) and return its duration in seconds.

    Reading the samples, not just the header, is what catches empty, silent, truncated or
    non-finite files; 16 kHz wav decodes at hundreds of times real time, so a 7 h corpus
    scans in well under a minute.
    """
    try:
        native_sr = sf.info(str(path)).samplerate
    except Exception:
        native_sr = 16_000  # load_audio below raises the precise AudioError
    y = load_audio(path, sr=native_sr, min_duration_s=min_duration_s)
    return len(y) / native_sr


class ScanCollector:
    """Accumulates a reader's utterances and skipped files.

    ``add`` validates the audio and records the file as skipped (with the reason) when it
    can't be used, or when its utterance id was already taken.
    """

    def __init__(self, min_duration_s: float = 0.0):
        self.min_duration_s = min_duration_s
        self.utterances: list[Utterance] = []
        self.skipped: list[Skipped] = []
        self._paths_by_id: dict[str, str] = {}

    def skip(self, path: Path | str, reason: str) -> None:
        self.skipped.append((str(path), reason))

    def add(self, utt_id: str, path: Path, label: str, speaker: str, session: str | None = None,
            text: str | None = None) -> Utterance | None:
        path = Path(path).absolute()
        if utt_id in self._paths_by_id:
            self.skip(path, f"duplicate utterance id {utt_id} (already read from {self._paths_by_id[utt_id]})")
            return None
        try:
            duration_s = audio_duration_s(path, self.min_duration_s)
        except AudioError as e:
            self.skip(path, e.reason)
            return None
        self._paths_by_id[utt_id] = str(path)
        utt = Utterance(id=utt_id, path=str(path), label=label, speaker=speaker,
                        session=session if session is not None else speaker,
                        duration_s=duration_s, text=text)
        self.utterances.append(utt)
        return utt

    def result(self) -> tuple[list[Utterance], list[Skipped]]:
        """Utterances sorted by id (a stable order whatever the file system returns)."""
        return sorted(self.utterances, key=lambda u: u.id), list(self.skipped)
