"""The `camser` command: thin argument parsing over the package's layers.

prepare → corpora · features → features · cv / ablation / compare → training + reports · train / predict /
evaluate / export-onnx → inference · serve → serve · demo → all of it on a generated corpus. A user
mistake prints one line (`camser: error: …`) and exits 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import CamserError


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: …)" to an option's help, unless there is no default to show."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Every (sub)command shows its defaults: subparsers are built with the parent's class."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def _load_experiment(path, overrides, data=None):
    """The experiment config, the model section's own fields included: a mistake is one line
    (exit 2) before any run folder or config.yaml is written. Config errors come before
    torch is imported."""
    from .config import load_config
    cfg = load_config(path, overrides, data=data)
    from .models import check_model_section, check_vote
    check_model_section(cfg.model)
    check_vote(cfg.model, [v["model"] for v in cfg.vote.voters])
    return cfg


def _add_config_args(p: argparse.ArgumentParser, config_required: bool = True) -> None:
    if config_required:
        p.add_argument("config", help="experiment YAML file (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.lr=1e-4 (repeatable)")


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder", default=None, help="the SSL encoder (hub id or folder), if not where "
                                                   "the model folder says")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--batch-size", type=int, default=None, help="segments per forward pass")


def cmd_prepare(a) -> int:
    from .corpora import scan_corpus, summarize, write_manifest
    scan = scan_corpus(a.corpus, a.root, min_duration_s=a.min_duration)
    write_manifest(a.out, scan.utterances, scan.skipped)
    print(summarize(scan.utterances, scan.skipped))
    print(f"wrote {Path(a.out) / 'manifest.csv'} and {Path(a.out) / 'skipped.csv'}")
    return 0


def cmd_features(a) -> int:
    from .config import load_config
    cfg = load_config(a.config, a.overrides, data={"corpus": {"prepared": str(a.dir)}})
    from .augment import augmented_copies
    from .features.extract import extract_features
    from .runtime import init_distributed
    from .training.experiment import default_cache_dir, load_utterances
    rank, world = init_distributed()         # under torchrun each rank extracts a share of the rows
    utterances, labels = load_utterances(cfg)
    utterances += augmented_copies(utterances, cfg.features.augment.specs)   # features.augment
    stores = extract_features(utterances, cfg, default_cache_dir(cfg), progress=True, rank=rank, world=world,
                              log=print)
    for kind, store in stores.items() if rank == 0 else ():
        print(f"{kind:12s} {tuple(store.array.shape)} {store.array.dtype}  {store.path}")
    return 0


def _add_track_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--track", choices=("none", "mlflow"), default="none",
                   help="also log the run to MLflow (MLFLOW_TRACKING_URI, else MLflow's default local store "
                        "in the working directory); the run folder stays the record")


def _tracker(a):
    from .tracking import make_tracker
    return make_tracker(a.track)


def cmd_cv(a) -> int:
    cfg = _load_experiment(a.config, a.overrides)
    from .training.cv import run_cv
    results = run_cv(cfg, a.out, tracker=_tracker(a))
    if results:
        _print_summary(results, a.out)
    return 0


def _print_summary(results: dict, out) -> None:
    s = results["summary"]
    print(f"WA {100 * s['wa_mean']:.2f} ± {100 * s['wa_std']:.2f}  UA {100 * s['ua_mean']:.2f} ± "
          f"{100 * s['ua_std']:.2f}  macro-F1 {100 * s['f1_mean']:.2f}  (pooled WA {100 * s['wa_pooled']:.2f}, "
          f"UA {100 * s['ua_pooled']:.2f})")
    norm = results.get("normalize") or {}
    if norm:
        print(f"normalisation: {norm.get('description', norm.get('mode'))}")
    for name, v in (s.get("voters") or {}).items():
        print(f"vote: {name} alone UA {100 * v['ua_mean']:.2f} ± {100 * v['ua_std']:.2f}")
    if s.get("vote_weight_chosen"):
        print("vote: weight chosen on the validation speakers: "
              + ", ".join(f"{w} in {n} fold × seed runs" for w, n in s["vote_weight_chosen"].items()))
    print(f"results: {Path(out) / 'results.json'}  report: {Path(out) / 'report.html'}")


def cmd_ablation(a) -> int:
    _load_experiment(a.config, a.overrides)
    from .training.ablation import run_ablation
    markdown, _ = run_ablation(a.config, a.overrides, a.out, rows=a.rows)
    print(markdown)
    return 0


def cmd_compare(a) -> int:
    for path in a.configs:          # all of them, before the first system runs (run folders: by compare)
        if not Path(path).is_dir():
            _load_experiment(path, a.overrides)
    from .training.compare import run_compare
    run_compare(a.configs, a.overrides, a.out)
    return 0


def cmd_synth(a) -> int:
    from .corpora.synthetic import generate_iemocap
    root = generate_iemocap(a.out, n_sessions=a.sessions, utterances_per_speaker=a.per_speaker, seed=a.seed)
    print(f"synthetic IEMOCAP-layout corpus: {root}")
    return 0


def cmd_train(a) -> int:
    cfg = _load_experiment(a.config, a.overrides)
    from .training.train_model import train_model
    train_model(cfg, a.out, tracker=_tracker(a))
    return 0


def cmd_sweep(a) -> int:
    from .sweep import cli
    return cli(a)


def cmd_predict(a) -> int:
    """Exit status: 0 when at least one input was predicted (failures are reported per file on
    stderr and in the output's error field), 2 when none was."""
    from tqdm.auto import tqdm

    from .inference.output import find_audio, render
    from .inference.recognizer import EmotionRecognizer

    files, problems = find_audio(a.paths)
    recognizer = EmotionRecognizer.from_pretrained(a.model_dir, encoder=a.encoder, device=a.device,
                                                   batch_size=a.batch_size, onnx=a.onnx)
    if a.adapt_from:
        recognizer.adapt(a.adapt_from)
    results = list(problems)
    for p in problems:
        tqdm.write(f"camser: {p.error}", file=sys.stderr)
    bar = tqdm(total=len(files), desc="predict", unit="file", file=sys.stderr, disable=len(files) < 2)
    for p in recognizer.predict_iter(files, errors="return"):
        if not p.ok:
            tqdm.write(f"camser: {p.error}", file=sys.stderr)
        results.append(p)
        bar.update(1)
    bar.close()
    text = render(results, recognizer.labels, a.format, segments=a.segments)
    if a.output:
        Path(a.output).write_text(text)
    else:
        sys.stdout.write(text)
    n_ok = sum(p.ok for p in results)
    if n_ok < len(results):
        print(f"camser: {len(results) - n_ok} of {len(results)} inputs failed", file=sys.stderr)
    return 0 if n_ok else 2


def cmd_serve(a) -> int:
    try:
        from .serve.app import serve
    except ImportError as e:
        raise CamserError(f"camser serve needs the serve extra ({e.name} is missing): "
                          "pip install 'camser[serve]'") from None
    from .inference.recognizer import EmotionRecognizer
    for option in ("max_upload_mb", "max_audio_s", "request_timeout_s", "body_timeout_s"):
        if not getattr(a, option) > 0:
            raise CamserError(f"--{option.replace('_', '-')}: must be positive, got {getattr(a, option):g}")
    recognizer = EmotionRecognizer.from_pretrained(a.model_dir, encoder=a.encoder, device=a.device,
                                                   batch_size=a.batch_size, onnx=a.onnx)
    if a.adapt_from:                 # one site's (or speaker's) statistics for every request
        recognizer.adapt(a.adapt_from)
    print(f"serving {a.model_dir} ({', '.join(recognizer.labels)}; {'onnx' if a.onnx else 'torch'}) "
          f"on http://{a.host}:{a.port}/  (API: /v1/predict, /v1/model, /healthz, /docs)", file=sys.stderr)
    serve(recognizer, host=a.host, port=a.port, max_upload_bytes=int(a.max_upload_mb * 1024 * 1024),
          max_audio_s=a.max_audio_s, request_timeout_s=a.request_timeout_s, body_timeout_s=a.body_timeout_s)
    return 0


def cmd_export_onnx(a) -> int:
    from .inference.onnx_export import export_onnx
    export_onnx(a.model_dir, a.out, source=a.source, quantize=a.quantize, encoder=a.encoder, opset=a.opset)
    return 0


def cmd_evaluate(a) -> int:
    from .inference.evaluate import evaluate_model, summary_line
    results = evaluate_model(a.model_dir, a.corpus, a.root, a.out, label_map=a.label_map,
                             device=a.device, encoder=a.encoder, batch_size=a.batch_size,
                             adapt=a.adapt, restrict_labels=a.restrict_labels)
    print(summary_line(results))
    print(f"results: {Path(a.out) / 'results.json'}  report: {Path(a.out) / 'report.html'}")
    return 0


def cmd_bench(a) -> int:
    from .bench.runner import command_line, run_bench
    report = run_bench(a.out, quick=a.quick, only=a.only, shared=a.shared, tmp=a.tmp, keep=a.keep,
                       command=command_line(a))
    for t in report["targets"]:
        print(f"{t['status']:>12s}  {t['id']}: {t['value']} ({t['op']} {t['threshold']:g} {t['unit']})")
    print(f"results: {Path(a.out) / 'bench.json'}  table: {Path(a.out) / 'bench.md'}")
    return 0


def cmd_demo(a) -> int:
    from .demo import run_demo
    run_demo(a.out, quick=a.quick, encoder=a.encoder)
    return 0


def _add_adapt_from_arg(s, whose: str = "the inputs'") -> None:
    s.add_argument("--adapt-from", nargs="+", default=None, metavar="PATH",
                   help=f"recordings (files/folders) of the same speaker or site: their feature statistics "
                        f"standardise {whose} features instead of the training speakers' (no labels; needs "
                        f"a model trained with features.normalize)")


def _add_onnx_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx", type=Path, default=None, metavar="FILE",
                   help="run this ONNX file (from `camser export-onnx`) with onnxruntime instead of torch; "
                        "MODEL_DIR still supplies the labels and feature settings")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    p = _Parser(prog="camser", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"camser {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("prepare", help="scan a corpus → DIR/manifest.csv + DIR/skipped.csv and a summary")
    s.add_argument("--corpus", required=True, help="iemocap | ravdess | cremad | emodb | tess | csv")
    s.add_argument("--root", required=True, help="corpus folder (for csv: the manifest CSV file)")
    s.add_argument("--out", required=True, type=Path, help="output folder")
    s.add_argument("--min-duration", type=float, default=0.1, help="skip files shorter than this (s)")
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("features", help="extract (or reuse) the cached features of a prepared corpus",
                       description="Extract (or reuse, or resume) the cached features of a prepared corpus. Under "
                                   "torchrun every rank computes a share of the rows into the same cache.")
    s.add_argument("dir", type=Path, help="folder written by `camser prepare`")
    s.add_argument("--config", default=None, help="experiment YAML (features, segments, audio sections); "
                   "none: the built-in defaults (mfcc, spectrogram and facebook/wav2vec2-base frames)")
    _add_config_args(s, config_required=False)
    s.set_defaults(func=cmd_features)

    s = sub.add_parser("cv", help="cross-validate an experiment → RUN_DIR/results.json + report")
    _add_config_args(s)
    s.add_argument("--out", required=True, type=Path, help="run folder (rerun the same command to resume)")
    _add_track_arg(s)
    s.set_defaults(func=cmd_cv)

    s = sub.add_parser("sweep", help="hyper-parameter search (Optuna) → DIR/sweep.md, sweep.json, best.yaml",
                       description="Search the experiment's hyper-parameters: the space is the config's sweep: "
                                   "section, --space FILE, or --set key=[v1,v2] (a grid axis). Each trial is a "
                                   "cv run folder DIR/trials/NNNN; rerun the same command to resume. See "
                                   "camser/sweep/.")
    _add_config_args(s)
    s.add_argument("--out", required=True, type=Path, help="sweep folder (rerun the same command to resume)")
    s.add_argument("--space", type=Path, default=None, help="YAML search space (instead of the config's sweep:)")
    s.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna storage, any SQLAlchemy URL (default: sqlite:///DIR/study.db); share one to "
                        "run workers on several machines")
    s.add_argument("--study", default=None, metavar="NAME", help="study name (default: the config's name)")
    s.add_argument("--workers", type=int, default=1, help="worker processes sharing the study")
    s.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    _add_track_arg(s)
    s.set_defaults(func=cmd_sweep)

    s = sub.add_parser("ablation", help="the paper's Table 2 variants on the same folds → one table")
    _add_config_args(s)
    s.add_argument("--out", required=True, type=Path, help="DIR: each row runs into DIR/<row>/; the table is "
                   "DIR/ablation.md + ablation.json (rerun the same command to resume)")
    s.add_argument("--rows", nargs="*", default=None, help="only these rows (default: all 10)")
    s.set_defaults(func=cmd_ablation)

    s = sub.add_parser("train", help="train one model on a whole corpus → MODEL_DIR, for new audio")
    _add_config_args(s)
    s.add_argument("--out", required=True, type=Path, help="model folder to write (rerun to resume)")
    _add_track_arg(s)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("predict", help="emotion of audio files/folders with a trained model",
                       description="Predict the emotion of audio files and folders (recursive) with a "
                                   "model folder from `camser train`. Exit status 0 when at least one "
                                   "input was predicted (the others are reported one line each on "
                                   "stderr and carry an error field), 2 when none was.")
    s.add_argument("model_dir", type=Path, help="folder written by `camser train`")
    s.add_argument("paths", nargs="+", help="audio files and/or folders")
    _add_adapt_from_arg(s)
    s.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format")
    s.add_argument("--output", type=Path, default=None, help="write here instead of stdout")
    s.add_argument("--segments", action="store_true", help="table/csv: the per-segment timeline too "
                                                           "(JSON always has it)")
    _add_onnx_arg(s)
    _add_runtime_args(s)
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("serve", help="an HTTP service (and a web page) for a trained model",
                       description="Serve a model folder over HTTP: POST /v1/predict (multipart field "
                                   "'file'), GET /v1/model, GET /healthz, the OpenAPI schema at "
                                   "/openapi.json and an upload/record page at /. Needs the serve extra.")
    s.add_argument("model_dir", type=Path, help="folder written by `camser train`")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: all)")
    s.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    s.add_argument("--max-upload-mb", type=float, default=25.0, help="largest accepted upload (MB)")
    s.add_argument("--max-audio-s", type=float, default=600.0,
                   help="longest accepted recording (seconds, read from its header before decoding; "
                        "longer: 413)")
    s.add_argument("--request-timeout-s", type=float, default=120.0,
                   help="time limit of a request from its arrival to its answer, upload, wait and model "
                        "included (then 408 while uploading, 504 after)")
    s.add_argument("--body-timeout-s", type=float, default=10.0,
                   help="longest pause while an upload is sent (then 408)")
    _add_adapt_from_arg(s, "every request's")
    _add_onnx_arg(s)
    _add_runtime_args(s)
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("export-onnx", help="export a trained model to ONNX (optionally int8-quantised)",
                       description="Export a model folder to an ONNX file with a dynamic batch axis and "
                                   "check it against PyTorch. --from features: inputs are the model's "
                                   "(mfcc, spec, ssl frames); --from audio: the SSL encoder is inside the "
                                   "graph (inputs mfcc, spec and the segment's audio). Needs the onnx extra.")
    s.add_argument("model_dir", type=Path, help="folder written by `camser train`")
    s.add_argument("out", type=Path, help="the ONNX file to write (OUT.onnx)")
    s.add_argument("--from", dest="source", choices=("features", "audio"), default="features",
                   help="graph inputs: the model's features, or audio with the SSL encoder inside")
    s.add_argument("--quantize", choices=("int8",), default=None, help="dynamic int8 quantisation (onnxruntime)")
    s.add_argument("--opset", type=int, default=18, help="ONNX opset (at least 17)")
    s.add_argument("--encoder", default=None, help="the SSL encoder (hub id or folder), if not where "
                                                   "the model folder says")
    s.set_defaults(func=cmd_export_onnx)

    s = sub.add_parser("evaluate", help="score a trained model on another corpus → DIR/results.json")
    s.add_argument("model_dir", type=Path, help="folder written by `camser train`")
    s.add_argument("--corpus", required=True, help="iemocap | ravdess | cremad | emodb | tess | csv")
    s.add_argument("--root", required=True, help="corpus folder (for csv: the manifest CSV file)")
    s.add_argument("--label-map", default=None, help="YAML/JSON {corpus label: model label} (null drops); "
                                                     "default: same names and common aliases")
    s.add_argument("--out", required=True, type=Path, help="DIR for results.json, the report and predictions.csv")
    s.add_argument("--adapt", choices=("none", "corpus", "speaker"), default="none",
                   help="standardise the features by the evaluated corpus's own statistics (corpus) or each "
                        "speaker's (speaker), no labels read; needs a model trained with features.normalize "
                        "(default: %(default)s, the training speakers' statistics)")
    s.add_argument("--restrict-labels", action="store_true",
                   help="decide among the model labels the corpus maps to only (e.g. 4 of an 8-class model)")
    _add_runtime_args(s)
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("compare", help="several systems (one YAML each) on identical folds → one table")
    s.add_argument("configs", nargs="+", metavar="CONFIG", help="experiment YAML files, one per system; a "
                   "finished `camser cv` run folder is read instead of run (--set does not apply to it)")
    _add_config_args(s, config_required=False)
    s.add_argument("--out", required=True, type=Path, help="DIR: each system runs into DIR/<config name>/; "
                   "the table is DIR/compare.md + compare.json")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("synth", help="write a synthetic corpus in IEMOCAP's layout")
    s.add_argument("--out", required=True, type=Path, help="folder to write (the corpus is OUT/IEMOCAP_full_release)")
    s.add_argument("--sessions", type=int, default=3, help="sessions, each with a female and a male speaker")
    s.add_argument("--per-speaker", type=int, default=16, help="utterances per speaker")
    s.add_argument("--seed", type=int, default=0, help="random seed (the same seed writes the same corpus)")
    s.set_defaults(func=cmd_synth)

    s = sub.add_parser("bench", help="measure speed and memory → DIR/bench.json + DIR/bench.md (targets met/missed)",
                       description="Measure feature extraction, training and inference speed and peak memory "
                                   "against the targets (camser/bench/targets.py). The full run takes a while "
                                   "and wants a quiet machine; --quick is a smoke test of seconds.")
    s.add_argument("--out", required=True, type=Path, help="output folder")
    s.add_argument("--quick", action="store_true", help="tiny sizes and models (smoke test; figures meaningless)")
    s.add_argument("--only", action="append", default=None, metavar="NAMES",
                   help="comma-separated measurements or groups (features, training, inference; "
                        "see camser/bench/__init__.py); repeatable")
    s.add_argument("--shared", type=Path, default=None, help="the shared data folder (default: ../shared)")
    s.add_argument("--tmp", type=Path, default=None, help="scratch folder for models and synthetic feature "
                                                          "stores (a full run writes ~40 GB; default: system temp)")
    s.add_argument("--keep", action="store_true", help="keep the scratch folder")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("demo", help="the whole chain on a generated corpus, offline, in about a minute")
    s.add_argument("--out", type=Path, default=Path("camser-demo"), help="folder for the corpus, run and model")
    s.add_argument("--quick", action="store_true", help="smaller corpus and fewer epochs (for tests)")
    s.add_argument("--encoder", default=None,
                   help="a pretrained SSL encoder (hub id or local folder); default: a small random-weight wav2vec2")
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
