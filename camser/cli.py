"""The `camser` command: thin argument parsing over the package's layers.

prepare → corpora · features → features · cv / ablation → training + reports · demo → all of it
on a generated corpus. A user mistake prints one line (`camser: error: …`) and exits 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import CamserError


def _add_config_args(p: argparse.ArgumentParser, config_required: bool = True) -> None:
    if config_required:
        p.add_argument("config", help="experiment YAML file (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.lr=1e-4 (repeatable)")


def cmd_prepare(a) -> int:
    from .corpora import scan_corpus, summarize, write_manifest
    scan = scan_corpus(a.corpus, a.root, min_duration_s=a.min_duration)
    write_manifest(a.out, scan.utterances, scan.skipped)
    print(summarize(scan.utterances, scan.skipped))
    print(f"wrote {Path(a.out) / 'manifest.csv'} and {Path(a.out) / 'skipped.csv'}")
    return 0


def cmd_features(a) -> int:
    from .config import load_config
    from .training.experiment import default_cache_dir, load_utterances
    from .features.extract import extract_features
    cfg = load_config(a.config, a.overrides, data={"corpus": {"prepared": str(a.dir)}})
    utterances, labels = load_utterances(cfg)
    stores = extract_features(utterances, cfg, default_cache_dir(cfg), progress=True)
    for kind, store in stores.items():
        print(f"{kind:12s} {tuple(store.array.shape)} {store.array.dtype}  {store.path}")
    return 0


def cmd_cv(a) -> int:
    from .config import load_config
    from .training.cv import run_cv
    cfg = load_config(a.config, a.overrides)
    results = run_cv(cfg, a.out)
    if results:
        _print_summary(results, a.out)
    return 0


def _print_summary(results: dict, out) -> None:
    s = results["summary"]
    print(f"WA {100 * s['wa_mean']:.2f} ± {100 * s['wa_std']:.2f}  UA {100 * s['ua_mean']:.2f} ± "
          f"{100 * s['ua_std']:.2f}  macro-F1 {100 * s['f1_mean']:.2f}  (pooled WA {100 * s['wa_pooled']:.2f}, "
          f"UA {100 * s['ua_pooled']:.2f})")
    print(f"results: {Path(out) / 'results.json'}  report: {Path(out) / 'report.html'}")


def cmd_ablation(a) -> int:
    from .training.ablation import run_ablation
    run_ablation(a.config, a.overrides, a.out, rows=a.rows)
    return 0


def cmd_synth(a) -> int:
    from .corpora.synthetic import generate_iemocap
    root = generate_iemocap(a.out, n_sessions=a.sessions, utterances_per_speaker=a.per_speaker, seed=a.seed)
    print(f"synthetic IEMOCAP-layout corpus: {root}")
    return 0


def cmd_demo(a) -> int:
    from .demo import run_demo
    run_demo(a.out, quick=a.quick)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    p = argparse.ArgumentParser(prog="camser", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"camser {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("prepare", help="scan a corpus → DIR/manifest.csv + DIR/skipped.csv and a summary")
    s.add_argument("--corpus", required=True, help="iemocap | ravdess | cremad | emodb | tess | csv")
    s.add_argument("--root", required=True, help="corpus folder (for csv: the manifest CSV file)")
    s.add_argument("--out", required=True, type=Path, help="output folder")
    s.add_argument("--min-duration", type=float, default=0.1, help="skip files shorter than this (s)")
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("features", help="extract (or reuse) the cached features of a prepared corpus")
    s.add_argument("dir", type=Path, help="folder written by `camser prepare`")
    s.add_argument("--config", default=None, help="experiment YAML (features, segments, audio sections)")
    _add_config_args(s, config_required=False)
    s.set_defaults(func=cmd_features)

    s = sub.add_parser("cv", help="cross-validate an experiment → RUN_DIR/results.json + report")
    _add_config_args(s)
    s.add_argument("--out", required=True, type=Path, help="run folder (rerun the same command to resume)")
    s.set_defaults(func=cmd_cv)

    s = sub.add_parser("ablation", help="the paper's Table 2 variants on the same folds → one table")
    _add_config_args(s)
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--rows", nargs="*", default=None, help="only these rows (default: all 10)")
    s.set_defaults(func=cmd_ablation)

    s = sub.add_parser("synth", help="write a synthetic corpus in IEMOCAP's layout")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--sessions", type=int, default=3)
    s.add_argument("--per-speaker", type=int, default=16)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_synth)

    s = sub.add_parser("demo", help="the whole chain on a generated corpus, offline, in a few minutes")
    s.add_argument("--out", type=Path, default=Path("camser-demo"))
    s.add_argument("--quick", action="store_true", help="smaller corpus and fewer epochs (for tests)")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CamserError as e:
        print(f"camser: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("camser: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
