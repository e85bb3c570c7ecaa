"""The README's demo and test-suite figures, measured and written in (so they are generated,
not typed, and say on what machine they were taken).

    python benchmarks/readme_figures.py                 # run `camser demo`, count the tests, rewrite README.md
    python benchmarks/readme_figures.py --only tests    # the test count only (~1 min)
    python benchmarks/readme_figures.py --suite         # also run the whole test suite and record its time
    python benchmarks/readme_figures.py --suite-log LOG # ... or read it from the output of a `pytest -q` run
    python benchmarks/readme_figures.py --check         # measure again, rewrite nothing; exit 1 if out of date

The demo runs in a new folder; on an AVX-512 CPU a second time with the kernels held to AVX2
(``AVX2_ENV``), because its numbers depend on the instruction set (see camser/demo.py).

Each figure lives in README.md between ``<!-- figures:NAME {json} -->`` and
``<!-- /figures:NAME -->``: the JSON holds the measurement and the machine, the text between
the markers is rendered from it (``RENDER``). ``--check`` fails when that text was edited by
hand, when the demo's UA/WA or the collected test count differ from the recorded ones; times
are printed, not compared (they depend on the machine and its load).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MEASUREMENTS = ("demo", "tests")
# On an AVX-512 CPU the demo runs a second time with torch's, oneDNN's, MKL's and OpenBLAS's
# kernels held to AVX2: what the same code gives with another instruction set (an indication of
# the spread between machines, not a prediction for any one of them).
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
            "OPENBLAS_CORETYPE": "Haswell"}

BLOCK = re.compile(r"<!-- figures:(?P<name>[a-z_]+)(?: (?P<data>\{.*?\}))? -->\n(?P<body>.*?)"
                   r"<!-- /figures:(?P=name) -->", re.S)
OPENING = re.compile(r"<!-- figures:([a-z_]+)[ \-]")


# ---------------------------------------------------------------------------- the markers

def encode(data: dict) -> str:
    """``data`` as one line of JSON that cannot close an HTML comment ("--" only occurs inside
    strings, where ``\\u002d`` is the same character)."""
    return json.dumps(data, sort_keys=True, ensure_ascii=False).replace("--", "-\\u002d")


def read_blocks(text: str) -> dict[str, tuple[dict, str]]:
    """name → (its JSON data, the text between the markers). A marker without its pair, or a
    name used twice, is an error (the rewrite would otherwise eat or miss text)."""
    blocks = {}
    for m in BLOCK.finditer(text):
        name = m["name"]
        if name in blocks:
            raise ValueError(f"figures:{name} occurs twice")
        blocks[name] = (json.loads(m["data"]) if m["data"] else {}, m["body"])
    opened = OPENING.findall(text)
    unpaired = sorted(set(opened) - set(blocks)) or sorted(n for n in blocks if opened.count(n) > 1)
    if unpaired:
        raise ValueError(f"figures:{unpaired[0]}: opening marker without its closing one (or twice)")
    return blocks


def replace_block(text: str, name: str, data: dict, body: str) -> str:
    """``text`` with block ``name``'s data and body replaced; everything else unchanged."""
    if name not in read_blocks(text):
        raise ValueError(f"no <!-- figures:{name} --> … <!-- /figures:{name} --> block")
    body = body if body.endswith("\n") else body + "\n"

    def sub(m: re.Match) -> str:
        if m["name"] != name:
            return m[0]
        return f"<!-- figures:{name} {encode(data)} -->\n{body}<!-- /figures:{name} -->"
    return BLOCK.sub(sub, text)


def stale_blocks(text: str) -> list[str]:
    """The blocks whose text is not what their data renders to (edited by hand)."""
    return [name for name, (data, body) in read_blocks(text).items()
            if name in RENDER and body != RENDER[name](data) + "\n"]


# ---------------------------------------------------------------------------- rendering

def duration(seconds: float) -> str:
    s = round(seconds)
    if s < 100:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def machine_text(m: dict) -> str:
    load = f", load average {m['load']:.1f} at the start" if m.get("load") is not None else ""
    cores = f"{m['cores']} cores" + (f" ({m['usable_cores']} usable)" if m.get("usable_cores") not in
                                     (None, m["cores"]) else "")
    blas = f", numpy's BLAS {m['blas']}" if m.get("blas") else ""
    return (f"{m['cpu']} ({m['isa']}), {cores}, {m['memory_gb']:.0f} GB{load}; {m['os']}, "
            f"Python {m['python']}, torch {m['torch']}{blas}")


def provenance(d: dict) -> str:
    return d["date"] + (f", commit {d['commit']}" if d.get("commit") else "")


def render_demo(d: dict) -> str:
    n = d["threads"]
    threads = "torch's default threads" if n is None else f"torch and numpy's BLAS on {n} thread{'s' * (n > 1)}"
    lines = [f"**`{d['command']}`** ({provenance(d)}):",
             f"- cross-validated UA **{100 * d['ua']:.1f} %**, WA {100 * d['wa']:.1f} % over {d['folds']} "
             f"leave-one-session-out folds (chance 25 %)",
             f"- {duration(d['wall_s'])} wall, {round(d['cpu_s'])} CPU-seconds, {threads}"]
    if r := d.get("avx2"):
        env = " ".join(f"{k}={v}" for k, v in r["env"].items())
        lines.append(f"- the same machine with the kernels held to AVX2 (`{env}`): UA **{100 * r['ua']:.1f} %**, "
                     f"WA {100 * r['wa']:.1f} % ({duration(r['wall_s'])})")
    lines.append(f"- machine: {machine_text(d['machine'])}")
    return "\n".join(lines)


def render_tests(d: dict) -> str:
    text = f"**Test suite** ({provenance(d)}): **{d['collected']} tests** collected."
    s = d.get("suite")
    if s:
        counts = ", ".join(f"{s[k]} {k}" for k in ("passed", "skipped", "failed", "error", "errors",
                                                    "xfailed", "xpassed") if s.get(k))
        note = f"; {s['note']}" if s.get("note") else ""
        text += (f"\n- the last full run recorded here: {counts} in {duration(s['wall_s'])} "
                 f"({provenance(s)}, {s['tests']} tests then{note})"
                 + (f"; machine: {machine_text(s['machine'])}" if s.get("machine") else ""))
    return text


RENDER = {"demo": render_demo, "tests": render_tests}


# ---------------------------------------------------------------------------- measuring

def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True).stdout.strip()


def commit() -> str:
    """HEAD, with "+changes" when files other than README.md differ from it or are new."""
    head = _git("rev-parse", "--short=10", "HEAD") or "unknown"
    dirty = _git("status", "--porcelain", "--", ".", ":!README.md")   # untracked files too (tests count)
    return head + ("+changes" if dirty else "")


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = " ".join(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    except (ValueError, OSError, AttributeError):
        memory_gb = float("nan")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    try:
        import numpy  # noqa: F401  (loads its BLAS, which threadpoolctl then reports)
        from threadpoolctl import threadpool_info
        names = {"openblas": "OpenBLAS", "mkl": "MKL", "blis": "BLIS", "flexiblas": "FlexiBLAS"}
        blas = next((f"{names.get(i['internal_api'], i['internal_api'])} {i.get('version') or ''} "
                     f"{i.get('architecture') or ''}".split()
                     for i in threadpool_info() if i["user_api"] == "blas"), None)
        blas = " ".join(blas) if blas else None
    except ImportError:
        blas = None
    return {"cpu": cpu, "isa": torch.backends.cpu.get_cpu_capability(), "cores": os.cpu_count(),
            "usable_cores": usable, "memory_gb": round(memory_gb, 1),
            "load": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "os": f"{platform.system()} {platform.machine()}", "python": platform.python_version(),
            "torch": torch.__version__.split("+")[0], "blas": blas}


def stamp() -> dict:
    return {"date": dt.date.today().isoformat(), "commit": commit()}


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_demo(quick: bool, folder: Path, env: dict | None = None) -> dict:
    """``camser demo`` into ``folder``, which must not exist (a reused one would resume, not
    rerun): its cross-validated UA/WA, folds, thread count, wall and CPU seconds."""
    if folder.exists():
        raise SystemExit(f"{folder} exists: the demo would reuse it; give a new --out")
    command = ["demo", *(["--quick"] if quick else [])]
    cpu0, t0 = _children_cpu(), time.perf_counter()
    subprocess.run([sys.executable, "-m", "camser.cli", *command, "--out", str(folder)], cwd=REPO,
                   env={**_env(), **(env or {})}, stdout=sys.stderr, check=True)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    results = json.loads((folder / "run" / "results.json").read_text())
    s = results["summary"]
    return {"command": " ".join(["camser", *command]), "ua": round(s["ua_mean"], 4), "wa": round(s["wa_mean"], 4),
            "folds": len(results["folds"]), "threads": results["config"]["train"]["num_threads"],
            "wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}


def measure_demo(quick: bool = False, out: Path | None = None, avx2: bool = True) -> dict:
    """The demo's figures and the machine; on an AVX-512 CPU (and ``avx2``) also those of a
    second run with the kernels held to AVX2 (``AVX2_ENV``)."""
    info = {**stamp(), "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="camser-demo-") as tmp:
        figures = {**run_demo(quick, Path(out or tmp) / "demo"), **info}
        if avx2 and info["machine"]["isa"].upper().startswith("AVX512"):
            r = run_demo(quick, Path(out or tmp) / "demo_avx2", AVX2_ENV)
            figures["avx2"] = {"ua": r["ua"], "wa": r["wa"], "wall_s": r["wall_s"], "env": AVX2_ENV}
    return figures


def count_tests() -> int:
    """``pytest --collect-only -q``'s count (collection errors are an error here)."""
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                       cwd=REPO, env=_env(), capture_output=True, text=True)
    m = re.search(r"^(\d+) tests? collected(.*)$", r.stdout, re.M)
    if r.returncode != 0 or not m or "error" in m[2]:
        raise SystemExit(f"pytest --collect-only failed (exit {r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return int(m[1])


def parse_suite(output: str) -> dict:
    """The counts and seconds of a pytest run's final summary line
    (``270 passed, 1 skipped in 1921.33s (0:32:01)``)."""
    lines = re.findall(r"^=*\s*((?:\d+ [a-z]+(?:, )?)+) in ([\d.]+)s", output, re.M)
    if not lines:
        raise ValueError("no pytest summary line (`N passed, … in S s`) in the output")
    counts, seconds = lines[-1]
    out = {word: int(n) for n, word in re.findall(r"(\d+) ([a-z]+)", counts)}
    out["tests"] = sum(v for k, v in out.items() if k not in ("error", "errors", "warning", "warnings"))
    out["wall_s"] = float(seconds)
    return out


def run_suite() -> dict:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=REPO, env=_env(),
                       capture_output=True, text=True)
    sys.stderr.write(r.stdout[-3000:])
    suite = parse_suite(r.stdout)
    suite["wall_s"] = round(time.perf_counter() - t0, 1)
    return suite


# ---------------------------------------------------------------------------- the command

def check(text: str, fresh: dict[str, dict]) -> list[str]:
    """What makes ``text``'s figures out of date against the ``fresh`` measurements."""
    problems = [f"figures:{n}: the text was edited by hand (rerun the script to regenerate it)"
                for n in stale_blocks(text)]
    blocks = read_blocks(text)
    if "demo" in fresh:
        old, new = blocks["demo"][0], fresh["demo"]
        for key in ("command", "ua", "wa", "folds", "threads"):
            a, b = old.get(key), new[key]
            if key in ("ua", "wa") and a is not None:
                a, b = f"{100 * a:.1f}", f"{100 * b:.1f}"
            if a != b:
                differs = [k for k in ("isa", "torch") if old.get("machine", {}).get(k) != new["machine"][k]]
                recorded = ", ".join(old["machine"][k] for k in differs)
                why = (f" (recorded with another {' and '.join(differs)}: {recorded}; the demo's numbers "
                       "depend on them)" if differs else "")
                problems.append(f"figures:demo: {key} is {b} here, {a} in the README{why}")
        a, b = (old.get("avx2") or {}), (new.get("avx2") or {})
        for key in ("ua", "wa"):
            if key in a and key in b and f"{100 * a[key]:.1f}" != f"{100 * b[key]:.1f}":
                problems.append(f"figures:demo: {key} held to AVX2 is {100 * b[key]:.1f} here, "
                                f"{100 * a[key]:.1f} in the README")
        print(f"demo: {duration(new['wall_s'])} wall, {new['cpu_s']:.0f} CPU-s here "
              f"(README: {duration(old.get('wall_s', 0))}, {old.get('cpu_s', 0):.0f} CPU-s; not compared)")
    if "tests" in fresh:
        a, b = blocks["tests"][0].get("collected"), fresh["tests"]["collected"]
        if a != b:
            problems.append(f"figures:tests: {b} tests collected, the README says {a}")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--readme", type=Path, default=README)
    p.add_argument("--only", default=",".join(MEASUREMENTS), help="what to measure, comma-separated: demo, tests")
    p.add_argument("--quick", action="store_true", help="`camser demo --quick` (default: what the README "
                                                        "recorded; else the full demo)")
    p.add_argument("--no-avx2", action="store_true", help="skip the demo's second run with the kernels held to "
                                                           "AVX2 (made on AVX-512 CPUs only)")
    p.add_argument("--out", type=Path, default=None, help="keep the demo's folder under this new folder")
    p.add_argument("--suite", action="store_true", help="also run the whole test suite (long) and record it")
    p.add_argument("--suite-log", type=Path, default=None,
                   help="record the full run from this `python -m pytest -q` output instead of running it")
    p.add_argument("--suite-note", default=None, help="a note for the recorded full run (e.g. what shared the CPU)")
    p.add_argument("--check", action="store_true", help="measure and compare; rewrite nothing; exit 1 when out of date")
    a = p.parse_args(argv)
    only = [w.strip() for w in a.only.split(",") if w.strip()]
    if unknown := set(only) - set(MEASUREMENTS):
        p.error(f"--only: unknown {sorted(unknown)}; choose from {', '.join(MEASUREMENTS)}")
    text = a.readme.read_text()
    blocks = read_blocks(text)
    if missing := set(only) - set(blocks):
        p.error(f"{a.readme} has no figures:{sorted(missing)[0]} block")

    fresh: dict[str, dict] = {}
    if "demo" in only:
        quick = a.quick or blocks["demo"][0].get("command", "").endswith("--quick")
        fresh["demo"] = measure_demo(quick, a.out, avx2=not a.no_avx2)
    if "tests" in only:
        fresh["tests"] = {"collected": count_tests(), **stamp(), "suite": blocks["tests"][0].get("suite")}
        suite = None
        if a.suite:
            suite = run_suite()
        elif a.suite_log:
            suite = parse_suite(a.suite_log.read_text(errors="replace"))
        if suite is not None:
            suite.update(stamp(), machine=machine(), note=a.suite_note)
            fresh["tests"]["suite"] = suite

    if a.check:
        problems = check(text, fresh)
        for line in problems:
            print(line)
        print("README figures up to date" if not problems else f"README figures out of date ({len(problems)})")
        return 1 if problems else 0
    for name, data in fresh.items():
        text = replace_block(text, name, data, RENDER[name](data))
    a.readme.write_text(text)
    for name, data in fresh.items():
        print(RENDER[name](data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
