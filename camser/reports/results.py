"""results.json: the one record of a cross-validation run (config, versions, folds, summary)."""
from __future__ import annotations

import dataclasses
import json
import math
import platform
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

from ..metrics import summarize_folds
from ..protocols import PAPER_WARNING
from ..fileio import atomic_write

# The schema's order; extra keys a caller passes (e.g. val_speakers) follow these.
FOLD_KEYS = ("fold", "repeat", "seed", "test_speakers", "n_test", "wa", "ua", "f1_macro",
             "f1_weighted", "recall", "confusion", "epochs", "best_epoch")


def to_jsonable(obj):
    """numpy scalars/arrays, Paths, dataclasses, tuples/sets → JSON types; NaN/inf → None
    (JSON has no NaN)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _fold_entry(f: dict) -> dict:
    f = dict(f)
    if "n_test" not in f and "n" in f:      # compute_metrics's "n" is the fold's n_test
        f["n_test"] = f["n"]
    f.pop("n", None)
    entry = {k: f.get(k) for k in FOLD_KEYS}
    entry.update({k: v for k, v in f.items() if k not in entry})
    return entry


def build_results(config: dict, versions: dict, protocol: dict, labels, folds: list[dict],
                  pooled_true, pooled_pred) -> dict:
    """Assemble results.json. ``folds``: one dict per fold × repeat holding ``fold``,
    ``repeat``, ``seed``, ``test_speakers``, ``epochs``, ``best_epoch`` and the output of
    ``compute_metrics`` (its ``n`` becomes ``n_test``). ``pooled_true``/``pooled_pred``: all
    test utterances of all entries. With ``validation == "paper"`` the protocol also carries
    ``optimistic: true`` and the ``warning`` reports print."""
    labels = [str(x) for x in labels]
    proto = dict(to_jsonable(protocol))
    proto.setdefault("scheme", None)
    proto.setdefault("validation", "clean")
    if proto["validation"] == "paper":
        proto["optimistic"] = True
        proto.setdefault("warning", PAPER_WARNING)
    return to_jsonable({
        "config": config,
        "versions": versions,
        "protocol": proto,
        "labels": labels,
        "folds": [_fold_entry(f) for f in folds],
        "summary": summarize_folds(folds, pooled_true, pooled_pred, labels),
    })


def _version(dist: str) -> str | None:
    # Package metadata, not an import: importing torch/transformers takes seconds.
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    """Versions of Python, camser and the libraries that shape the numbers, plus the platform."""
    from .. import __version__
    return {
        "python": sys.version.split()[0],
        "camser": __version__,
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "numpy": np.__version__,
        "librosa": _version("librosa"),
        "sklearn": _version("scikit-learn"),
        "platform": platform.platform(),
    }


def write_json(path, obj) -> Path:
    """Write JSON atomically: a temporary file in the same folder, fsync, then rename, so a
    reader never sees half a file."""
    path = Path(path)
    with atomic_write(path, "w") as fh:
        json.dump(to_jsonable(obj), fh, indent=2, allow_nan=False)
        fh.write("\n")
    return path


def read_json(path) -> dict:
    return json.loads(Path(path).read_text())
