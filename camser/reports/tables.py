"""Comparison tables across runs (``camser ablation`` / ``camser compare``)."""
from __future__ import annotations

import csv
from pathlib import Path

from ..metrics import paired_comparison

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

    tested = add_significance(entries)
    header = ("| system | normalisation | " + " | ".join(title for _, title in COLUMNS)
              + (" | vs best UA: Δ [95 % CI], McNemar p" if tested else "") + " | run |")
    lines = [header, "|" + "---|" * (len(COLUMNS) + 3 + tested)]
    for e in entries:
        cells = []
        for key, _ in COLUMNS:
            cell = mean_std(e[f"{key}_mean"], e[f"{key}_std"])
            cells.append(f"**{cell}**" if key in e["best"] else cell)
        if tested:
            cells.append(_significance_cell(e.get("vs_best")))
        run = f"`{e['run_dir']}`" if e["run_dir"] else "–"
        norm = e["normalize"] + (" (transductive)" if e["transductive"] else " (strict)")
        lines.append(f"| {_md_escape(e['name'])} | {norm} | " + " | ".join(cells) + f" | {run} |")
    if tested:
        lines += ["", "vs best: each system paired with the best by mean UA on the test utterances both "
                  "predicted (repeat k of one with repeat k of the other); UA difference in points over "
                  "those utterances pooled, its 95 % bootstrap interval (utterances resampled), and "
                  "McNemar's exact p on the utterances exactly one of the two gets right."]
    return "\n".join(lines) + "\n", entries


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _predictions(run_dir) -> dict | None:
    """A run's ``predictions.csv`` as {(utterance id, k): (true, predicted)}, ``k`` counting an
    utterance's rows in seed order (so runs with other seeds still pair repeat by repeat)."""
    path = Path(run_dir) / "predictions.csv" if run_dir else None
    if path is None or not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: (r["utterance_id"], int(r["seed"])))
    out, seen = {}, {}
    for r in rows:
        k = seen[r["utterance_id"]] = seen.get(r["utterance_id"], -1) + 1
        out[(r["utterance_id"], k)] = (r["true"], r["predicted"])
    return out


def add_significance(entries: list[dict]) -> bool:
    """Each system against the best by mean UA, on the test utterances both predicted (from
    their ``predictions.csv``): ``entry["vs_best"]`` = :func:`~camser.metrics.paired_comparison`
    (UA difference with a bootstrap interval, McNemar's p). False when fewer than two runs
    have predictions."""
    preds = {e["name"]: _predictions(e.get("run_dir")) for e in entries}
    scored = [e for e in entries if preds[e["name"]] is not None and e.get("ua_mean") is not None]
    if len(scored) < 2:
        return False
    best = max(scored, key=lambda e: e["ua_mean"])
    ref = preds[best["name"]]
    for e in scored:
        if e is best:
            e["vs_best"] = {"best": True}
            continue
        keys = sorted(set(preds[e["name"]]) & set(ref))
        if not keys:
            continue
        labels = sorted({v for k in keys for v in (*ref[k], *preds[e["name"]][k])})
        index = {label: i for i, label in enumerate(labels)}
        true = [index[ref[k][0]] for k in keys]
        e["vs_best"] = {"against": best["name"], **paired_comparison(
            true, [index[preds[e["name"]][k][1]] for k in keys], [index[ref[k][1]] for k in keys], len(labels))}
    return True


def _significance_cell(result: dict | None) -> str:
    if not result:
        return "–"
    if result.get("best"):
        return "best"
    return (f"{100 * result['delta_ua']:+.2f} [{100 * result['ci_low']:+.2f}, {100 * result['ci_high']:+.2f}], "
            f"p = {result['p_mcnemar']:.3g}")
