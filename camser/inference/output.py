"""``camser predict``'s side of things: which files to read, and the table/JSON/CSV it writes.

JSON is a list with one object per input (``Prediction.to_dict()``: ``path``, ``label``,
``probabilities``, ``segments``, and ``error`` for inputs that failed). CSV has one row per
input (``path, label, duration_s, n_segments, p_<label>…, error``) or, with ``segments``, one
row per segment (``path, start_s, end_s, label, p_<label>…, error``; a failed input gets one
row with only its path and error). The table is for people: one line per input, with the
timeline below it when asked for.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Iterable

from .results import Prediction

# What libsndfile reads (mp3 since libsndfile 1.1); matched case-insensitively.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
                    ".au", ".snd", ".caf", ".w64", ".rf64")
FORMATS = ("table", "json", "csv")


def find_audio(paths: Iterable[str | Path]) -> tuple[list[str], list[Prediction]]:
    """Expand ``paths``: a folder → its audio files (recursive, sorted, without macOS ``._``
    files); a file → itself, whatever its extension; a missing path → itself (its prediction
    then fails with "file not found"). Returns (files, problems): a folder with no audio
    file in it is a problem, reported like a failed file."""
    files, problems = [], []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*")
                           if f.suffix.lower() in AUDIO_EXTENSIONS and f.is_file()
                           and not any(part.startswith("._") for part in f.relative_to(p).parts))
            if not found:
                problems.append(Prediction(str(p), None, error=f"{p}: no audio files in this folder "
                                                               f"(looked for {', '.join(AUDIO_EXTENSIONS)})"))
            files += found
        else:
            files.append(str(p))
    return files, problems


def render(predictions: list[Prediction], labels: list[str], fmt: str, segments: bool = False) -> str:
    """The whole output as text in ``fmt`` (table, json or csv)."""
    if fmt == "json":
        return json.dumps([p.to_dict() for p in predictions], indent=2) + "\n"
    if fmt == "csv":
        return _csv(predictions, labels, segments)
    if fmt == "table":
        return _table(predictions, segments)
    raise ValueError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")


def _csv(predictions: list[Prediction], labels: list[str], segments: bool) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    probs = [f"p_{lab}" for lab in labels]
    if segments:
        w.writerow(["path", "start_s", "end_s", "label", *probs, "error"])
        for p in predictions:
            if not p.ok:
                w.writerow([p.path, "", "", "", *[""] * len(labels), p.error])
            for s in p.segments:
                w.writerow([p.path, f"{s.start_s:.3f}", f"{s.end_s:.3f}", s.label,
                            *[f"{s.probabilities[lab]:.6f}" for lab in labels], ""])
    else:
        w.writerow(["path", "label", "duration_s", "n_segments", *probs, "error"])
        for p in predictions:
            if p.ok:
                w.writerow([p.path, p.label, f"{p.duration_s:.3f}", len(p.segments),
                            *[f"{p.probabilities[lab]:.6f}" for lab in labels], ""])
            else:
                w.writerow([p.path, "", "", "", *[""] * len(labels), p.error])
    return buf.getvalue()


def _table(predictions: list[Prediction], segments: bool) -> str:
    width = max([len(str(p.path)) for p in predictions] + [4])
    lines = [f"{'path':<{width}}  {'label':<8} {'p':>5}  {'duration':>8}  {'segments':>8}"]
    for p in predictions:
        if not p.ok:
            lines.append(f"{str(p.path):<{width}}  error: {p.error}")
            continue
        lines.append(f"{str(p.path):<{width}}  {p.label:<8} {p.probabilities[p.label]:5.2f}  "
                     f"{p.duration_s:7.1f}s  {len(p.segments):8d}")
        if segments:
            for s in p.segments:
                lines.append(f"  {s.start_s:8.1f}–{s.end_s:8.1f} s  {s.label:<8} {s.probabilities[s.label]:5.2f}")
    return "\n".join(lines) + "\n"
