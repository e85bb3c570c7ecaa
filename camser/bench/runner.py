"""``camser bench``: plan the measurements, run each in its own process, write the results.

Every measurement runs in a fresh worker process (``python -m camser.bench.worker``) so its
peak memory is its own and no warm-up or thread setting leaks between them; a quick run puts
all of them in one worker (seconds matter more than clean peaks there).
"""
from __future__ import annotations

import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable

from ..errors import CamserError
from .common import SIZES
from .report import render_markdown
from .targets import evaluate
from ..fileio import write_text

SCHEMA = "camser-bench/1"

# name → (group, "module:function", kwargs, runs on the GPU too, timeout in seconds for a full run)
MEASUREMENTS: dict[str, tuple[str, str, dict, bool, int]] = {
    "mfcc": ("features", "camser.bench.features:measure_frame_kind", {"kind": "mfcc"}, False, 1800),
    "spectrogram": ("features", "camser.bench.features:measure_frame_kind", {"kind": "spectrogram"}, False, 1800),
    "ssl_wav2vec2": ("features", "camser.bench.features:measure_ssl", {"which": "wav2vec2"}, True, 3600),
    "ssl_whisper": ("features", "camser.bench.features:measure_ssl", {"which": "whisper"}, True, 3600),
    "train_data": ("training", "camser.bench.training:prepare_data", {}, False, 3600),
    "train_cpu": ("training", "camser.bench.training:train_frozen", {"stacked": False}, True, 3600),
    "train_cpu_stacked": ("training", "camser.bench.training:train_frozen", {"stacked": True}, True, 5400),
    "train_paper": ("training", "camser.bench.training:train_paper", {}, True, 3600),
    "train_finetune": ("training", "camser.bench.training:train_finetune", {}, True, 3600),
    "predict": ("inference", "camser.bench.inference:measure_predict", {}, True, 1800),
    "onnx": ("inference", "camser.bench.inference:measure_onnx", {}, False, 3600),
    "int8_ua": ("inference", "camser.bench.quantization:measure_int8_ua", {}, False, 3600),
}
GROUPS = ("features", "training", "inference")
DERIVED = {"cv_ratio": "training"}


def select(only: list[str] | None) -> list[str]:
    """Measurement names for ``--only`` (names and/or groups, comma or space separated)."""
    if not only:
        return list(MEASUREMENTS)
    wanted: set[str] = set()
    for item in (x.strip() for chunk in only for x in chunk.split(",")):
        if not item:
            continue
        if item in GROUPS:
            wanted |= {n for n, m in MEASUREMENTS.items() if m[0] == item}
        elif item in MEASUREMENTS:
            wanted.add(item)
        else:
            raise CamserError(f"--only: unknown measurement '{item}' (known: {', '.join(GROUPS)}, "
                              f"{', '.join(MEASUREMENTS)})")
    if any(n.startswith("train_") and n != "train_data" for n in wanted):
        wanted.add("train_data")                  # the synthetic stores they train on
    return [n for n in MEASUREMENTS if n in wanted]


# ---------------------------------------------------------------------- machine

def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _mem_total_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 ** 2, 2)
    except OSError:
        pass
    return None


def _versions() -> dict:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for dist in ("camser", "torch", "transformers", "numpy", "librosa", "soundfile", "soxr",
                 "onnxruntime", "onnx"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def machine_info() -> dict:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {"cpu_model": _cpu_model(), "cpu_cores": os.cpu_count(), "cpu_cores_usable": affinity,
            "memory_gb": _mem_total_gb(), "load_average_start": [round(x, 2) for x in os.getloadavg()],
            "thread_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
                           if os.environ.get(k) is not None},
            "versions": _versions()}


# ---------------------------------------------------------------------- workers

def _run_worker(spec: dict, spec_path: Path, timeout_s: float, log: Callable[[str], None]) -> dict:
    """One worker process; → its results (whatever it finished) plus its own rusage peak."""
    spec_path.write_text(json.dumps(spec))
    out_path = Path(spec["out"])
    out_path.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "camser.bench.worker", str(spec_path)],
                            env=env, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    status, rusage, timed_out = None, None, False

    def kill() -> tuple:
        try:
            os.killpg(proc.pid, 9)                # the worker and anything it started
        except ProcessLookupError:
            pass
        return os.wait4(proc.pid, 0)

    try:
        while True:
            pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status, rusage = st, ru
                break
            if time.monotonic() > deadline:
                timed_out = True
                _, status, rusage = kill()
                break
            time.sleep(0.2)
    except BaseException:                         # Ctrl-C: the worker has its own session, stop it too
        kill()
        proc.returncode = -9
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    results = json.loads(out_path.read_text()) if out_path.is_file() else {"tasks": {}, "torch": None}
    for task in spec["tasks"]:
        name = task["name"]
        if name not in results["tasks"]:
            why = (f"timed out after {timeout_s:.0f} s" if timed_out
                   else f"worker exited with status {proc.returncode}")
            results["tasks"][name] = {"status": f"failed: {why}"}
            log(f"[bench] {name}: failed ({why})")
    results["max_rss_mb"] = round(rusage.ru_maxrss / 1024, 1) if rusage is not None else None
    return results


def _key(name: str, device: str) -> str:
    return name if device == "cpu" else f"{name}@{device}"


def run_bench(out_dir: str | Path, quick: bool = False, only: list[str] | None = None,
              shared: str | Path | None = None, tmp: str | Path | None = None, keep: bool = False,
              command: str | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Run the selected measurements and write ``OUT/bench.json`` and ``OUT/bench.md``."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    names = select(only)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if shared is None:
        shared = Path(__file__).resolve().parents[3] / "shared"
    shared = Path(shared)
    sizes = SIZES["quick" if quick else "full"]
    if tmp is not None:
        Path(tmp).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="camser-bench-", dir=tmp))
    started = time.time()
    report = {"schema": SCHEMA, "command": command, "argv": list(sys.argv),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "quick": quick,
              "comparable_with_targets": not quick, "selected": names, "sizes": sizes,
              "shared": str(shared) if shared.is_dir() else None, "scratch": str(work),
              "machine": machine_info()}
    groups: dict[str, dict] = {g: {} for g in GROUPS}
    worker_peaks: dict[str, float | None] = {}
    params = {"stacked": "train_cpu_stacked" in names}
    base = {"work": str(work), "sizes": sizes, "shared": str(shared) if shared.is_dir() else None,
            "params": params}

    def tasks_for(device: str) -> list[dict]:
        return [{"name": _key(n, device), "func": MEASUREMENTS[n][1], "kwargs": MEASUREMENTS[n][2],
                 "device": device} for n in names if device == "cpu" or MEASUREMENTS[n][3]]

    def run(tasks: list[dict], label: str, timeout_s: float) -> dict:
        spec = {**base, "tasks": tasks, "out": str(work / f"result-{label}.json")}
        res = _run_worker(spec, work / f"spec-{label}.json", timeout_s, log)
        for t in tasks:
            entry = res["tasks"][t["name"]]
            groups[MEASUREMENTS[t["name"].split("@")[0]][0]][t["name"]] = entry
        worker_peaks[label] = res.get("max_rss_mb")
        return res

    torch_info = None
    try:
        cpu_tasks = tasks_for("cpu")
        if quick:
            torch_info = run(cpu_tasks, "quick", 900)["torch"]
        else:
            for t in cpu_tasks:
                res = run([t], t["name"], MEASUREMENTS[t["name"]][4])
                torch_info = torch_info or res.get("torch")
        if torch_info and torch_info.get("cuda_available") and not quick:
            for t in tasks_for("cuda"):
                run([t], t["name"].replace("@", "-"), MEASUREMENTS[t["name"].split("@")[0]][4])
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)

    if any(n.startswith("train_") for n in names):
        from .training import cv_ratio
        groups["training"]["cv_ratio"] = cv_ratio(groups, sizes)
    report["machine"].update(torch_info or {})
    report["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    report["measurements"] = {**groups, "peak_memory": _peak_memory(groups, worker_peaks, quick)}
    report["targets"] = evaluate(report["measurements"])
    report["duration_s"] = round(time.time() - started, 1)
    _write_json(out / "bench.json", report)
    (out / "bench.md").write_text(render_markdown(report))
    log(f"[bench] wrote {out / 'bench.json'} and {out / 'bench.md'} ({report['duration_s']} s)")
    return report


def _peak_memory(groups: dict, worker_peaks: dict, quick: bool) -> dict:
    per = {}
    for g in GROUPS:
        for name, entry in groups[g].items():
            proc = entry.get("process") if isinstance(entry, dict) else None
            if proc:
                per[name] = {"peak_private_mb": proc.get("peak_private_mb"), "peak_rss_mb": proc.get("peak_rss_mb")}
    private = [v["peak_private_mb"] for v in per.values() if v["peak_private_mb"] is not None]
    rss = [v["peak_rss_mb"] for v in per.values() if v["peak_rss_mb"] is not None]
    return {"peak_private_mb": max(private) if private else None, "peak_rss_mb": max(rss) if rss else None,
            "per_measurement": per, "worker_max_rss_mb": worker_peaks,
            "scope": ("one worker process for all measurements (quick run): peaks include what earlier "
                      "measurements left allocated" if quick else "one worker process per measurement"),
            "definitions": {
                "peak_private_mb": "largest RssAnon (memory the process holds itself) sampled every 20 ms",
                "peak_rss_mb": "VmHWM: every resident page, including pages of the memory-mapped feature "
                               "stores (file-backed page cache the kernel reclaims under pressure)",
                "worker_max_rss_mb": "ru_maxrss of each worker process, from wait4"}}


def _finite(obj):
    """NaN/inf → None (JSON has neither)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _write_json(path: Path, obj: dict) -> None:
    write_text(path, json.dumps(_finite(obj), indent=2, allow_nan=False, default=str) + "\n")


def command_line(a) -> str:
    """The `camser bench` command that reproduces a parsed invocation."""
    parts = ["camser", "bench", "--out", str(a.out)]
    if a.quick:
        parts.append("--quick")
    if a.only:
        parts += ["--only", ",".join(a.only)]
    if a.shared:
        parts += ["--shared", str(a.shared)]
    if a.tmp:
        parts += ["--tmp", str(a.tmp)]
    if a.keep:
        parts.append("--keep")
    return shlex.join(parts)
