"""The two records everything else passes around: an utterance and a segment of it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Utterance:
    """One labelled recording of a corpus.

    ``speaker`` identifies the talker (what speaker-independent protocols hold out);
    ``session`` is the recording group (IEMOCAP session; equal to ``speaker`` where a corpus
    has no sessions). ``label`` is the corpus's own category name, before any label set
    is applied.
    """

    id: str
    path: str
    label: str
    speaker: str
    session: str
    duration_s: float
    text: str | None = None
    # an augmented training copy: how its audio is made from ``path`` (see camser.augment)
    augment: str | None = None


@dataclass(frozen=True)
class Segment:
    """A fixed-length window of an utterance: sample offsets ``[start, end)`` at the
    corpus sample rate. ``end`` may lie past the end of the audio: the rest is zero padding."""

    utterance_id: str
    index: int
    start: int
    end: int

    @property
    def key(self) -> str:
        return f"{self.utterance_id}#{self.index}"
