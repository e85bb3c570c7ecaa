"""Comparison tables across runs (``camser ablation`` / ``camser compare``)."""
from __future__ import annotations

from pathlib import Path

# (summary key prefix, column title); higher is better for all of them.
COLUMNS = (("wa", "WA %"), ("ua", "UA %"), ("f1", "macro-F1 %"))


def pct(x, digits: int = 2) -> str:
    """A fraction as a percentage string; None → an en dash."""
    return "–" if x is None else f"{100 * x:.{digits}f}"


def mean_std(mean, std, digits: int = 2) -> str:
    """``"70.12 ± 1.30"`` (percent) from fractions; the ± part only when std is known."""
    if mean is None:
        return "–"
    return pct(mean, digits) if std is None else f"{pct(mean, digits)} ± {pct(std, digits)}"


def _summary(obj: dict) -> dict:
    # Accept a whole results.json as well as its "summary".
    return obj.get("summary", obj) if isinstance(obj, dict) else {}


def comparison_table(rows: list[tuple[str, dict, str]]) -> tuple[str, list[dict]]:
    """Markdown table and a JSON-able list: one row per system with its feature normalisation
    (strict or transductive), WA, UA and macro-F1 as mean ± std over folds in percent and its
    run directory; the best mean of each column is bold (ties, at the printed precision, are
    all bold)."""
    entries = []
    for name, summary, run_dir in rows:
        s = _summary(summary)
        entry = {"name": str(name)}
        for key, _ in COLUMNS:
            entry[f"{key}_mean"] = s.get(f"{key}_mean")
            entry[f"{key}_std"] = s.get(f"{key}_std")
            entry[f"{key}_pooled"] = s.get(f"{key}_pooled")
        norm = (summary.get("normalize") or {}) if isinstance(summary, dict) else {}
        entry["normalize"] = norm.get("mode", "none")
        entry["transductive"] = bool(norm.get("transductive", False))
        entry["run_dir"] = None if run_dir is None else str(Path(run_dir))
        entries.append(entry)

    # Compare at the printed precision, so two cells that read the same are both bold.
    best = {}
    for key, _ in COLUMNS:
        values = [round(100 * e[f"{key}_mean"], 2) for e in entries if e[f"{key}_mean"] is not None]
        best[key] = max(values) if values else None
    for e in entries:
        e["best"] = [key for key, _ in COLUMNS if e[f"{key}_mean"] is not None
                     and round(100 * e[f"{key}_mean"], 2) == best[key]]

    header = "| system | normalisation | " + " | ".join(title for _, title in COLUMNS) + " | run |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 3)]
    for e in entries:
        cells = []
        for key, _ in COLUMNS:
            cell = mean_std(e[f"{key}_mean"], e[f"{key}_std"])
            cells.append(f"**{cell}**" if key in e["best"] else cell)
        run = f"`{e['run_dir']}`" if e["run_dir"] else "–"
        norm = e["normalize"] + (" (transductive)" if e["transductive"] else " (strict)")
        lines.append(f"| {_md_escape(e['name'])} | {norm} | " + " | ".join(cells) + f" | {run} |")
    return "\n".join(lines) + "\n", entries


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")
