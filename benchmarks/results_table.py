"""The README's result tables from finished run folders (so the figures there can be
regenerated, not typed): per run, UA/WA/macro-F1 as mean ± std over fold × seed entries, the
mean ± std of the per-seed means, the normalisation, the wall time; then per-class recall and
the worst test speakers of each run.

    python benchmarks/results_table.py runs/ravdess_linear runs/ravdess_camser_plus ...
    python benchmarks/results_table.py --levers runs/levers/*      # one row per lever run
    python benchmarks/results_table.py --levers runs/levers/* --reference runs/ravdess_camser_plus
                                         # + each lever's UA change on the same fold × seed entries
    python benchmarks/results_table.py --val-curve runs/levers/trim   # validation UA per epoch
    python benchmarks/results_table.py --ablation runs/ablation_trim runs/ablation_trim_speaker
                                         # the paper's Table 2 rows, one column group per ablation folder

A run scored with test-time augmentation (``features.augment.test_time``) gets a second row,
``… (originals only)``: the same models scored on the original audio alone.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def load(run: Path, originals_only: bool = False) -> dict:
    """results.json; ``originals_only``: its fold entries scored as the run's test-time copies
    never existed (their ``originals_only`` WA/UA/macro-F1)."""
    r = json.loads((run / "results.json").read_text())
    if originals_only:
        r["folds"] = [{**f, "wa": f["originals_only"]["wa"], "ua": f["originals_only"]["ua"],
                       "f1_macro": f["originals_only"]["f1_macro"]} for f in r["folds"]]
    return r


def seed_means(results: dict, key: str = "ua") -> list[float]:
    by_seed: dict = {}
    for f in results["folds"]:
        by_seed.setdefault(f["seed"], []).append(f[key])
    return [float(np.mean(v)) for _, v in sorted(by_seed.items())]


def row(run: Path, originals_only: bool = False) -> dict:
    r = load(run, originals_only)
    norm = (r.get("normalize") or {}).get("mode", "none")
    seeds = seed_means(r)

    def stat(key):             # mean ± population std over the fold × seed entries (as the summary)
        values = [f[key] for f in r["folds"]]
        return float(np.mean(values)), float(np.std(values))
    return {"run": str(run), "name": r["config"]["name"] + (" (originals only)" if originals_only else ""),
            "normalize": norm, "n": len(r["folds"]), "seeds": sorted({f["seed"] for f in r["folds"]}),
            "ua": stat("ua"), "wa": stat("wa"), "f1": stat("f1_macro"),
            "seed_ua": (float(np.mean(seeds)), float(np.std(seeds))), "wall_s": r.get("wall_s")}


def has_originals_only(run: Path) -> bool:
    return all("originals_only" in f for f in load(run)["folds"])


def paired_change(run: Path, reference: Path, originals_only: bool = False,
                  reference_originals: bool = False) -> tuple[float, float, int] | None:
    """UA of ``run`` − UA of ``reference`` on the (fold, seed) entries both have: the mean over
    seeds of the per-seed mean difference, its std over seeds, and the number of entries.
    ``reference_originals``: the reference scored on the originals only (when it can be)."""
    ref_view = reference_originals and has_originals_only(reference)
    ref = {(f["fold"], f["seed"]): f["ua"] for f in load(reference, ref_view)["folds"]}
    by_seed: dict = {}
    for f in load(run, originals_only)["folds"]:
        if (f["fold"], f["seed"]) in ref:
            by_seed.setdefault(f["seed"], []).append(f["ua"] - ref[(f["fold"], f["seed"])])
    if not by_seed:
        return None
    means = [float(np.mean(v)) for v in by_seed.values()]
    return float(np.mean(means)), float(np.std(means)), sum(len(v) for v in by_seed.values())


def validation_curve(run: Path) -> list[float]:
    """Validation UA after each epoch, averaged over the run's fold × seed entries (the
    ``history`` of every ``folds/*/result.json``; epochs that some entries lack are left out)."""
    curves = [[h["val_ua"] for h in json.loads(f.read_text())["history"] if "val_ua" in h]
              for f in sorted((run / "folds").glob("*/result.json"))]
    n = min((len(c) for c in curves), default=0)
    return [float(np.mean([c[e] for c in curves])) for e in range(n)]


def ablation_table(folders: list[Path]) -> list[str]:
    """The paper's Table 2 rows (``ABLATIONS``, in its order) against one column group per
    ``camser ablation`` folder: UA and WA (mean ± std over fold × seed entries) and the row's UA
    change against the full model (the last row) on the same entries, mean ± std over seeds.
    A row not run (yet) reads "–"."""
    from camser.models.camser import ABLATIONS

    names = list(ABLATIONS)
    full = names[-1]
    done = {(folder, name) for folder in folders for name in names if (folder / name / "results.json").is_file()}
    head = "| row |"
    for folder in folders:
        modes = {row(folder / name)["normalize"] for name in names if (folder, name) in done}
        head += f" {folder.name} ({', '.join(sorted(modes)) or '–'}): UA % | WA % | UA vs `{full}` |"
    lines = [head, "|---|" + "---|---|---|" * len(folders)]
    for name in names:
        cells = []
        for folder in folders:
            if (folder, name) not in done:
                cells += ["–"] * 3
                continue
            r = row(folder / name)
            d = paired_change(folder / name, folder / full) if name != full and (folder, full) in done else None
            cells += [pm(r["ua"]), pm(r["wa"]), "–" if d is None else f"{100 * d[0]:+.1f} ± {100 * d[1]:.1f}"]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return lines


def pm(pair) -> str:
    return f"{100 * pair[0]:.1f} ± {100 * pair[1]:.1f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--levers", action="store_true", help="name rows by their folder (lever runs)")
    p.add_argument("--reference", type=Path, help="a run to pair every row with: UA change on the "
                   "same (fold, seed) entries, mean ± std over seeds")
    p.add_argument("--val-curve", action="store_true", help="print each run's validation UA per epoch "
                   "(mean over its fold × seed entries) instead of the tables")
    p.add_argument("--pair-originals", action="store_true", help="pair a row's originals-only view with "
                   "the reference's originals-only view (default: with the reference as scored)")
    p.add_argument("--ablation", action="store_true", help="the runs are `camser ablation` folders: "
                   "one table of the paper's rows, a column group per folder")
    a = p.parse_args(argv)
    if a.ablation:
        print("\n".join(ablation_table(a.runs)))
        return 0
    runs = [r for r in a.runs if (r / "results.json").is_file()]
    if a.val_curve:
        for path in runs:
            curve = validation_curve(path)
            print(f"{path.name}: " + ("validation UA % per epoch " + ", ".join(f"{100 * v:.1f}" for v in curve)
                                      if curve else "no validation UA recorded (protocol.validation: none?)"))
        return 0
    # (run folder, its originals-only view?) for every row
    views = [(r, plain) for r in runs for plain in ((False, True) if has_originals_only(r) else (False,))]
    rows = [row(r, plain) for r, plain in views]
    extra = " | UA change vs reference (entries) |" if a.reference else " |"
    print("| run | normalisation | UA % | WA % | macro-F1 % | UA of the seed means | fold×seed entries | wall" + extra)
    print("|---|---|---|---|---|---|---|---|" + ("---|" if a.reference else ""))
    for r, (path, plain) in zip(rows, views):
        name = (path.name + " (originals only)" * plain) if a.levers else r["name"]
        wall = "–" if r["wall_s"] is None else f"{r['wall_s'] / 60:.1f} min"
        change = ""
        if a.reference:
            d = paired_change(path, a.reference, plain, reference_originals=plain and a.pair_originals)
            change = " – |" if d is None else f" {100 * d[0]:+.1f} ± {100 * d[1]:.1f} ({d[2]}) |"
        print(f"| `{name}` | {r['normalize']} | {pm(r['ua'])} | {pm(r['wa'])} | {pm(r['f1'])} | "
              f"{pm(r['seed_ua'])} ({len(r['seeds'])} seed{'s' * (len(r['seeds']) > 1)}) | {r['n']} | {wall} |"
              + change)
    if a.levers:
        return 0
    print()
    labels = load(runs[0])["labels"]
    print("| run | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for path in runs:
        r = load(path)
        rec = {lab: np.mean([f["recall"][lab] for f in r["folds"]]) for lab in labels}
        print(f"| `{r['config']['name']}` | " + " | ".join(f"{100 * rec[lab]:.0f}" for lab in labels) + " |")
    print()
    print("| run | worst test actors (UA %) | best |")
    print("|---|---|---|")
    for path in runs:
        r = load(path)
        per: dict = {}
        for f in r["folds"]:
            for spk, m in (f.get("per_speaker") or {}).items():
                per.setdefault(spk, []).append(m["ua"])
        ranked = sorted((float(np.mean(v)), s) for s, v in per.items())
        fmt = lambda items: ", ".join(f"{s} {100 * u:.0f}" for u, s in items)   # noqa: E731
        print(f"| `{r['config']['name']}` | {fmt(ranked[:4])} | {fmt(ranked[-3:])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
