"""Runs measurements in its own process: ``python -m camser.bench.worker SPEC.json``.

The spec lists the tasks (``{"name", "func": "module:function", "kwargs", "device"}``), the
sizes and the scratch folder; results are written to ``spec["out"]`` after every task, so a
killed worker still leaves what it finished. Each task's peak memory is read from ``/proc``
(see :class:`~camser.bench.common.MemoryWatch`).
"""
from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .common import MemoryWatch, Skip
from ..errors import first_line
from ..fileio import write_text


@dataclass
class Context:
    work: Path
    sizes: dict
    shared: Path | None
    device: str = "cpu"
    params: dict = field(default_factory=dict)
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)


def torch_info() -> dict:
    import torch
    info = {"torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
            "mkldnn_available": torch.backends.mkldnn.is_available(),
            "mkldnn_enabled_default": torch.backends.mkldnn.enabled,
            "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_version"] = torch.version.cuda
    return info


def _gpu_peak_reset(device: str) -> bool:
    if not device.startswith("cuda"):
        return False
    import torch
    if not torch.cuda.is_available():
        return False
    torch.cuda.reset_peak_memory_stats()
    return True


def _write(path: Path, obj: dict) -> None:
    write_text(path, json.dumps(obj, indent=1, default=str))


def run_tasks(spec: dict) -> dict:
    out_path = Path(spec["out"])
    results: dict = {"tasks": {}, "torch": None}
    shared = Path(spec["shared"]) if spec.get("shared") else None
    for task in spec["tasks"]:
        ctx = Context(Path(spec["work"]), spec["sizes"], shared, task.get("device", "cpu"), spec.get("params", {}))
        ctx.log(f"[bench] {task['name']} ({ctx.device}) …")
        module, fn_name = task["func"].split(":")
        started = time.perf_counter()
        gpu = _gpu_peak_reset(ctx.device)
        with MemoryWatch() as mem:
            try:
                fn = getattr(importlib.import_module(module), fn_name)
                entry = {"status": "ok", **fn(ctx, **task.get("kwargs", {}))}
            except Skip as e:
                entry = {"status": f"skipped: {e}"}
            except Exception as e:  # one failed measurement must not lose the others
                entry = {"status": f"failed: {first_line(e, with_type=True)}",
                         "traceback": traceback.format_exc(limit=6).splitlines()[-12:]}
        entry["process"] = {**mem.result(), "wall_s": round(time.perf_counter() - started, 2), "pid": os.getpid()}
        if gpu:
            import torch
            entry["process"]["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
        ctx.log(f"[bench] {task['name']}: {entry['status']} ({entry['process']['wall_s']} s)")
        results["tasks"][task["name"]] = entry
        if results["torch"] is None and "torch" in sys.modules:
            results["torch"] = torch_info()
        _write(out_path, results)
    if results["torch"] is None:
        results["torch"] = torch_info()
    _write(out_path, results)
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text())
    run_tasks(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
