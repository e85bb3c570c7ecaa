"""The prepared-corpus files: ``manifest.csv`` (one row per usable utterance) and
``skipped.csv`` (every file left out, with the reason), plus a human summary of both.

The manifest is what later steps read instead of re-scanning the corpus, so it stores
absolute paths and the durations measured during the scan.
"""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Iterable

from ..errors import CamserError
from ..types import Utterance
from ..fileio import atomic_write

MANIFEST_COLUMNS = ("id", "path", "label", "speaker", "session", "duration_s", "text")
SKIPPED_COLUMNS = ("path", "reason")


def _write_csv(path: Path, header: Iterable[str], rows: Iterable[Iterable]) -> None:
    """Write to a temporary name then rename, so a reader never sees half a file."""
    with atomic_write(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def write_manifest(directory: str | Path, utterances: Iterable[Utterance],
                   skipped: Iterable[tuple[str, str]] = ()) -> Path:
    """Write ``directory/manifest.csv`` and ``directory/skipped.csv``; returns the manifest path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = directory / "manifest.csv"
    _write_csv(manifest, MANIFEST_COLUMNS, (
        (u.id, str(Path(u.path).absolute()), u.label, u.speaker, u.session, repr(float(u.duration_s)),
         u.text if u.text is not None else "")
        for u in utterances))
    _write_csv(directory / "skipped.csv", SKIPPED_COLUMNS, ((str(p), r) for p, r in skipped))
    return manifest


def read_manifest(path: str | Path) -> list[Utterance]:
    """Utterances of a ``manifest.csv`` (or of the folder holding one). An empty text cell
    reads back as ``None``."""
    path = Path(path)
    manifest = path / "manifest.csv" if path.is_dir() else path
    if not manifest.is_file():
        raise CamserError(f"{manifest}: manifest not found (run `camser prepare` first)")
    out = []
    try:
        with open(manifest, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise CamserError(f"{manifest}: not a manifest (missing column '{missing[0]}')")
            for line_no, row in enumerate(reader, start=2):
                try:
                    duration_s = float(row["duration_s"])
                except (TypeError, ValueError):
                    raise CamserError(f"{manifest}:{line_no}: bad duration_s {row['duration_s']!r}") from None
                if not row["id"] or not row["path"] or not row["label"]:
                    raise CamserError(f"{manifest}:{line_no}: empty id, path or label")
                out.append(Utterance(id=row["id"], path=row["path"], label=row["label"],
                                     speaker=row["speaker"], session=row["session"] or row["speaker"],
                                     duration_s=duration_s, text=row["text"] or None))
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise CamserError(f"{manifest}: cannot read the manifest ({e})") from None
    return out


def read_skipped(path: str | Path) -> list[tuple[str, str]]:
    """``[(path, reason), ...]`` from ``skipped.csv`` (or the folder holding it); [] if absent."""
    path = Path(path)
    skipped = path / "skipped.csv" if path.is_dir() else path
    if not skipped.is_file():
        return []
    with open(skipped, newline="", encoding="utf-8") as f:
        return [(r["path"], r["reason"]) for r in csv.DictReader(f)]


def _table(title: str, counts: Counter, total_s: Counter) -> list[str]:
    width = max([len(str(k)) for k in counts] + [5])
    lines = [f"{title}:"]
    for key in sorted(counts):
        lines.append(f"  {str(key):<{width}}  {counts[key]:>6}  {total_s[key] / 3600:7.2f} h")
    return lines


def summarize(utterances: Iterable[Utterance], skipped: Iterable[tuple[str, str]] = (),
              max_skipped_shown: int = 5) -> str:
    """Counts (and hours) per label, speaker and session, total hours and the skipped files."""
    utterances = list(utterances)
    skipped = list(skipped)
    total_s = sum(u.duration_s for u in utterances)
    lines = [f"{len(utterances)} utterances, {total_s / 3600:.2f} h"
             + (f" (mean {total_s / len(utterances):.2f} s, longest {max(u.duration_s for u in utterances):.2f} s)"
                if utterances else "")]
    for title, key in (("per label", "label"), ("per speaker", "speaker"), ("per session", "session")):
        counts, seconds = Counter(), Counter()
        for u in utterances:
            counts[getattr(u, key)] += 1
            seconds[getattr(u, key)] += u.duration_s
        lines += _table(title, counts, seconds)
    lines.append(f"skipped: {len(skipped)} files")
    for p, reason in skipped[:max_skipped_shown]:
        lines.append(f"  {p}: {reason}")
    if len(skipped) > max_skipped_shown:
        lines.append(f"  ... and {len(skipped) - max_skipped_shown} more (see skipped.csv)")
    return "\n".join(lines)
