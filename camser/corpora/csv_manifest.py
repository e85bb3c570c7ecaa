"""Any corpus described by a CSV file: ``path,label,speaker[,session][,text][,id]``.

Paths are relative to the CSV file's folder (absolute paths also work), so a corpus folder
with its CSV can be moved as a whole. ``session`` defaults to the speaker. The utterance id is
the ``id`` column when there is one, else the file stem, else (when stems repeat) the path
relative to the CSV's folder without its extension.
"""
from __future__ import annotations

import csv
from pathlib import Path

from ._common import ScanCollector, Skipped
from ..errors import CamserError
from ..types import Utterance

ALL_LABELS = None            # whatever the CSV holds
DEFAULT_INCLUDE = None       # every label of the CSV
DEFAULT_MERGE: dict[str, str] = {}

REQUIRED = ("path", "label", "speaker")


def find_csv(root: str | Path) -> Path:
    """The CSV file itself, or ``manifest.csv`` inside a folder."""
    root = Path(root)
    return root / "manifest.csv" if root.is_dir() else root


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    """Rows of the CSV as dicts; a missing required column is a :class:`CamserError`."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            for col in REQUIRED:
                if col not in columns:
                    raise CamserError(f"{csv_path}: missing column '{col}' (header must have {','.join(REQUIRED)}[,session][,text])")
            reader.fieldnames = columns
            return [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except OSError as e:
        raise CamserError(f"{csv_path}: cannot read ({e.strerror or e})") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise CamserError(f"{csv_path}: not a readable CSV file ({e})") from None


def scan(root: str | Path, min_duration_s: float = 0.0) -> tuple[list[Utterance], list[Skipped]]:
    """Every row of the CSV whose audio can be read."""
    csv_path = find_csv(root)
    base = csv_path.parent
    rows = read_rows(csv_path)
    stems = [Path(r["path"]).stem for r in rows]
    stems_unique = len(set(stems)) == len(stems)
    found = ScanCollector(min_duration_s)
    for line_no, row in enumerate(rows, start=2):
        rel = row["path"]
        if not rel or not row["label"] or not row["speaker"]:
            found.skip(f"{csv_path}:{line_no}", "empty path, label or speaker")
            continue
        path = base / rel
        if row.get("id"):
            utt_id = row["id"]
        elif stems_unique:
            utt_id = path.stem
        else:
            utt_id = Path(rel).with_suffix("").as_posix()
        found.add(utt_id, path, row["label"], speaker=row["speaker"],
                  session=row.get("session") or row["speaker"], text=row.get("text") or None)
    return found.result()
