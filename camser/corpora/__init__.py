"""Corpus readers and what the rest of camser does with their output.

Each reader module exposes ``scan(root, min_duration_s=0.0) -> (utterances, skipped)`` with the
corpus's raw labels, and the constants ``DEFAULT_INCLUDE``, ``DEFAULT_MERGE`` and
``ALL_LABELS`` that :func:`apply_label_set` turns a :class:`~camser.config.LabelsConfig` into a
class list with.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType

from ..config import LabelsConfig
from ..errors import CamserError, ConfigError
from ..types import Utterance
from . import cremad, csv_manifest, emodb, iemocap, ravdess, tess
from .manifest import read_manifest, read_skipped, summarize, write_manifest

READERS: dict[str, ModuleType] = {
    "iemocap": iemocap,
    "ravdess": ravdess,
    "cremad": cremad,
    "emodb": emodb,
    "tess": tess,
    "csv": csv_manifest,
}

__all__ = ["READERS", "CorpusScan", "get_reader", "scan_corpus", "apply_label_set",
           "write_manifest", "read_manifest", "read_skipped", "summarize"]


@dataclass
class CorpusScan:
    """What a scan found: usable utterances (raw labels) and ``(path, reason)`` of the rest."""

    utterances: list[Utterance] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def get_reader(name: str) -> ModuleType:
    """The reader module registered as ``name``; an unknown name is a one-line error."""
    try:
        return READERS[name]
    except KeyError:
        raise CamserError(f"corpus.name: unknown corpus '{name}' (known: {', '.join(READERS)})") from None


def scan_corpus(name: str, root: str | Path, min_duration_s: float = 0.1) -> CorpusScan:
    """Scan the corpus ``name`` at ``root`` (the CSV file for ``csv``). Files shorter than
    ``min_duration_s`` seconds are skipped like unreadable ones."""
    reader = get_reader(name)
    if root is None:
        raise CamserError(f"corpus.root: not set (the {name} corpus folder)")
    root_path = Path(root).expanduser()
    if not root_path.exists():
        raise CamserError(f"{root}: {name} corpus not found (no such file or folder)")
    if name != "csv" and not root_path.is_dir():
        raise CamserError(f"{root}: {name} corpus root must be a folder")
    utterances, skipped = reader.scan(root_path, min_duration_s=min_duration_s)
    return CorpusScan(utterances, skipped)


def apply_label_set(utterances: list[Utterance], name: str,
                    labels: LabelsConfig | None) -> tuple[list[Utterance], list[str]]:
    """Merge labels and keep the utterances of the label set.

    ``labels.merge`` None → the corpus's ``DEFAULT_MERGE`` ({} → merge nothing);
    ``labels.include`` None → the corpus's ``DEFAULT_INCLUDE`` (None there meaning "all"),
    ``"all"`` → every category present (after merging), sorted, or an explicit list (names
    after merging) whose order is the class order. Returns the kept utterances (labels
    replaced by the merged ones) and the class names. A listed class no utterance has is a
    :class:`ConfigError`: it would be a class nothing can be learned or scored on.
    """
    reader = get_reader(name)
    labels = labels or LabelsConfig()
    merge = dict(reader.DEFAULT_MERGE if labels.merge is None else labels.merge)
    include = reader.DEFAULT_INCLUDE if labels.include is None else labels.include

    merged = [replace(u, label=merge[u.label]) if u.label in merge else u for u in utterances]
    present = {u.label for u in merged}
    if include == "all" or include is None:
        if reader.ALL_LABELS is None:
            categories = present
        else:  # leaves out non-categories such as IEMOCAP's "xxx" (no majority)
            categories = {m.label for u, m in zip(utterances, merged) if u.label in reader.ALL_LABELS}
        classes = sorted(categories)
    elif isinstance(include, str):
        raise ConfigError(f"labels.include: expected a list of labels or 'all', got '{include}'")
    else:
        classes = list(dict.fromkeys(include))
        absent = [c for c in classes if c not in present]
        if absent:
            raise ConfigError(f"labels.include: no utterance of the {name} corpus has label "
                              f"'{absent[0]}' (labels after merging: {', '.join(sorted(present)) or 'none'})")
    if not classes:
        raise ConfigError(f"labels.include: the {name} corpus has no utterances in the label set")
    wanted = set(classes)
    return [u for u in merged if u.label in wanted], classes
