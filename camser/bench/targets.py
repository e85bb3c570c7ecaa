"""The targets the measurements must reach (on a 2-core CPU), in one table.

Each target names the figure it judges by its path in ``bench.json``'s ``measurements``.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}


@dataclass(frozen=True)
class Target:
    id: str
    what: str
    path: tuple[str, ...]      # into bench.json["measurements"]
    op: str
    threshold: float
    unit: str


TARGETS: tuple[Target, ...] = (
    Target("ssl_extraction_rtf",
           "SSL extraction with wav2vec2-base (best batch size and oneDNN setting)",
           ("features", "ssl_wav2vec2", "best", "rtf"), "<=", 0.2, "RTF"),
    Target("epoch_cpu",
           "Epoch of the CPU-practical configuration over ~11 000 cached segments "
           "(all 13 hidden states stacked, as configs/iemocap_cpu.yaml caches them)",
           ("training", "train_cpu_stacked", "epoch_s"), "<", 60.0, "s"),
    Target("epoch_cpu_last_layer",
           "Epoch of the CPU-practical configuration over ~11 000 cached segments (last layer only)",
           ("training", "train_cpu", "epoch_s"), "<", 60.0, "s"),
    Target("cv_speedup",
           "Full 5-fold CV of the CPU-practical configuration (stacked layers) vs the encoder "
           "recomputed and fine-tuned every epoch, same epochs",
           ("training", "cv_ratio", "variants", "train_cpu_stacked", "ratio"), ">=", 50.0, "×"),
    Target("cv_speedup_last_layer",
           "Full 5-fold CV of the CPU-practical configuration (last layer) vs the encoder "
           "recomputed and fine-tuned every epoch, same epochs",
           ("training", "cv_ratio", "variants", "train_cpu", "ratio"), ">=", 50.0, "×"),
    Target("predict_rtf",
           "predict() end to end on a 60 s file, wav2vec2-base, PyTorch fp32",
           ("inference", "predict", "rtf"), "<=", 0.25, "RTF"),
    Target("peak_memory",
           "Peak memory of any measurement (private RSS; memory-mapped feature pages excluded, "
           "see peak_memory in bench.json)",
           ("peak_memory", "peak_private_mb"), "<=", 4096.0, "MiB"),
)


def lookup(tree: dict, path: tuple[str, ...]):
    node = tree
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def _status_of(tree: dict, path: tuple[str, ...]) -> str | None:
    """The status string of the measurement the path runs through (e.g. "skipped: …")."""
    node = tree
    status = None
    for key in path:
        if not isinstance(node, dict):
            break
        status = node.get("status", status)
        node = node.get(key)
    return status


def evaluate(measurements: dict) -> list[dict]:
    """Every target with its measured value and ``met`` / ``missed`` / ``not measured (…)``."""
    rows = []
    for t in TARGETS:
        value = lookup(measurements, t.path)
        if value is None:
            why = _status_of(measurements, t.path)
            status = f"not measured ({why})" if why and why != "ok" else "not measured"
        else:
            status = "met" if OPS[t.op](value, t.threshold) else "missed"
        rows.append({"id": t.id, "what": t.what, "figure": ".".join(t.path), "op": t.op,
                     "threshold": t.threshold, "unit": t.unit, "value": value, "status": status})
    return rows
