"""``camser sweep CONFIG --out DIR``: a hyper-parameter search over an experiment, on Optuna.

The search space is YAML: a ``sweep:`` section of the experiment file (other commands ignore
it), or ``--space FILE`` (the same mapping, with or without the ``sweep:`` key), plus
``--set key=[v1,v2]``: a list given to a field that takes no list is a grid axis::

    sweep:
      sampler: grid | tpe | random   # default: grid when every parameter is a list, else tpe
      n_trials: 20                   # tpe / random (the grid runs each point once)
      metric: ua                     # ua | wa | f1_macro: the mean over the trial's folds
      objective: inner               # inner (default) | outer, see below
      inner_folds: 3                 # inner: speaker-grouped folds per outer fold
      seed: 0                        # sampler seed (worker i uses seed + i)
      startup_trials: 4              # tpe: random trials first (default min(10, max(2, n_trials // 3)))
      heartbeat_s: 60                # a worker silent for 3 × this long has died: its trial reruns
      nested: false                  # inner: then score each outer fold with its own choice
      params:
        train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
        train.batch_size: {type: int, low: 16, high: 64, step: 16}
        model.dropout: [0.1, 0.3]    # a list: categorical values (the grid's axis)

Every parameter is checked before anything is extracted: it must be a field of the
configuration (or of its model), each value (a range's ends) must load, ranges must not be
empty. ``corpus``, ``labels`` and ``protocol`` fields define the folds the trials are compared
on and can't be swept. A mistake is one line naming ``sweep.…`` (exit 2).

Storage: an Optuna study in ``sqlite:///DIR/study.db``, or any SQLAlchemy URL (``--storage
postgresql://…``) so that processes on several machines share one study (``--study NAME``,
default the config's name; a study made from another config or space is refused).
``--workers N`` starts N worker processes (``camser sweep … --worker I``) on the one study.
Each trial is a normal ``camser cv`` run folder, ``DIR/trials/NNNN`` (NNNN: the trial's
number; a rerun trial keeps the folder of the trial it reruns), written by
:func:`camser.training.cv.run_cv`. Resuming: rerun the same command. A trial
whose worker died (killed, machine lost: its process is gone, or its Optuna heartbeat stopped)
or was interrupted is queued again with the same parameters and continues in the same folder,
so its finished folds are not retrained; finished trials are never rerun. A trial that raised
an error stays failed, with its one-line error in ``sweep.md`` (and the traceback in its
``run.log``). Raising ``n_trials`` and rerunning extends a tpe/random search.

Objective — which speakers choose the parameters:

* ``inner`` (default): only training speakers. For each outer fold of the experiment's
  protocol (``protocol.folds`` selects them), the utterances of its training and validation
  speakers are cut into ``inner_folds`` speaker-grouped folds (scikit-learn ``GroupKFold``); its
  test speakers are in none of them. These inner folds are written to ``DIR/inner_folds.csv``
  and every trial is a cv run with ``protocol.scheme: csv`` on that file (validation speakers
  are chosen inside each inner fold's training side as ``protocol.validation`` says), so the
  existing cross-validation does the work and the trial folder is an ordinary run folder.
  No inner fold holds a test speaker of its own outer fold. With several outer folds the
  trial's value pools them, and together their training speakers include every outer test
  speaker: scoring ``best.yaml`` on the outer folds is then not a nested estimate. The
  per-outer-fold choices in ``sweep.md`` are (each saw none of its fold's test speakers); with a
  single outer fold (``protocol.folds: [k]``, or ``holdout``) the best choice itself is.
  ``nested: true`` then trains and scores each outer fold with its own choice
  (``DIR/nested/outer<k>``, cv run folders that resume) and reports their mean as the nested
  estimate (``sweep.json`` ``nested``, a section of ``sweep.md``).
* ``outer``: the trial is the experiment's own cross-validation, scored on the outer test
  folds. The choice then saw the test folds, and every table says so.

Outputs (rewritten at the end of every run, from the study): ``DIR/sweep.json`` (every trial:
number, params, value, state, error, run folder), ``DIR/sweep.md`` (trials best first, failed
trials with their errors, figures), ``DIR/best.yaml`` (the full configuration with the best
parameters, the experiment's own protocol: ready for ``camser cv`` or ``camser train``),
``DIR/figures/sweep_<param>.png`` (metric against each parameter) and ``DIR/run.log``.
``--track mlflow``: the sweep is an MLflow run, each trial a nested run (see
:mod:`camser.tracking`).

This package is a driver (:mod:`.space`: the search space; :mod:`.inner`: inner folds;
:mod:`.study`: the Optuna study and its outputs); nothing below it imports it.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

from ..config import load_config
from ..errors import CamserError, ConfigError
from ..tracking import make_tracker, run_log
from .space import METRICS, check_model, check_space, parse_spec, read_space, split_overrides
from .study import Sweep, format_value, redact_url


# ---------------------------------------------------------------- entry point

def build_sweep(config, overrides: list[str], out, space=None, storage: str | None = None,
                study: str | None = None, tracker=None, log: Callable[[str], None] = print) -> Sweep:
    """Read and check everything (config, space, folds) before anything is written or
    extracted; → a :class:`Sweep`. Mistakes raise a one-line :class:`ConfigError`."""
    try:
        import optuna  # noqa: F401
    except ImportError as e:
        raise CamserError(f"camser sweep needs optuna ({e.name} is missing): pip install 'camser[sweep]'") from None
    plain, grid = split_overrides(config, overrides)
    cfg = load_config(config, plain)
    check_model(cfg.model)
    spec = parse_spec(read_space(config, space), grid)
    check_space(spec, cfg)
    from ..tracking import Tracker
    return Sweep(cfg, spec, Path(out), storage, study, tracker or Tracker(), log)


def run_sweep(config, overrides: list[str], out, space=None, storage: str | None = None,
              study: str | None = None, workers: int = 1, track: str = "none", worker: int | None = None,
              log: Callable[[str], None] = print) -> dict | None:
    """``camser sweep``: check, open (or resume) the study, run the trials (here, or in
    ``workers`` processes), write the reports. ``worker``: run as worker process ``worker``
    of a sweep started elsewhere (trials only, no reports). → sweep.json's content."""
    if workers < 1:
        raise ConfigError(f"--workers: expected at least 1, got {workers}")
    out = Path(out)
    sweep = build_sweep(config, overrides, out, space, storage, study, log=log)
    sweep.prepare_folds()                       # still nothing extracted; DIR exists from here
    prefix = f"[worker {worker}] " if worker is not None else ""
    tee = run_log(out / "run.log", log, header=f"camser sweep into {out}" + (f" (worker {worker})" if prefix else ""))
    sweep.log = lambda m: tee(prefix + m)
    tracker = sweep.tracker = make_tracker(track, **({} if track in (None, "none") else {"log": sweep.log}))
    if worker is not None:
        sweep.work(worker)
        return None
    study_obj = sweep.open_study(create=True)
    n_done = sum(t.state.is_finished() for t in study_obj.get_trials(deepcopy=False))
    sweep.log(f"sweep: {sweep.spec.sampler}, {sweep.spec.n_trials} trials, objective {sweep.spec.objective} "
              f"({METRICS[sweep.spec.metric][1]}), study {sweep.study_name!r} at {redact_url(sweep.storage_url)}"
              + (f" ({n_done} trials finished already)" if n_done else ""))
    tracker.start(out, sweep.cfg.name, f"{sweep.study_name} sweep",
                  tags={"camser.command": "sweep", "camser.run_dir": str(out)})
    tracker.log_params({**{f"sweep.{k}": v for k, v in sweep.spec.to_dict().items() if k != "params"},
                        "sweep.params": json.dumps(sweep.spec.to_dict()["params"])})
    try:
        if workers == 1:
            sweep.work(0)
        else:
            _spawn_workers(config, overrides, out, space, sweep, workers, track)
    except KeyboardInterrupt:
        tracker.end("KILLED")
        raise
    summary = sweep.report(study_obj)
    c = summary["counts"]
    if sweep.spec.nested and summary["per_outer_fold"] and not c["running"] + c["waiting"]:
        summary = sweep.report(study_obj, nested=sweep.nested_estimate(summary["per_outer_fold"]))
    if summary["best"]:
        b = summary["best"]
        sweep.log(f"best: trial {b['number']} {METRICS[sweep.spec.metric][1]} {100 * b['value']:.2f} "
                  f"({', '.join(f'{k}={format_value(v)}' for k, v in b['params'].items())})")
    sweep.log(f"sweep: {c['complete']} complete, {c['failed']} failed; {out / 'sweep.md'}, {out / 'best.yaml'}")
    tracker.log_metrics({"best_value": summary["best"]["value"]} if summary["best"] else {})
    tracker.log_metrics({f"n_{k}": v for k, v in c.items()})
    tracker.log_artifacts(out, ("sweep.md", "sweep.json", "best.yaml", "inner_folds.csv", "run.log", "figures"))
    unfinished = c["running"] + c["waiting"]
    tracker.end("FINISHED" if not unfinished else "FAILED")
    if unfinished:
        raise CamserError(f"{out}: {unfinished} of {sweep.spec.n_trials} trials unfinished (a worker stopped; "
                          "see its run.log); rerun the same command to resume")
    return summary


def _spawn_workers(config, overrides, out, space, sweep: Sweep, workers: int, track: str) -> None:
    cmd = [sys.executable, "-m", "camser.cli", "sweep", str(config), "--out", str(out),
           "--storage", sweep.storage_url, "--study", sweep.study_name, "--track", track or "none"]
    for o in overrides or []:
        cmd += ["--set", o]
    if space is not None:
        cmd += ["--space", str(space)]
    procs = [subprocess.Popen(cmd + ["--worker", str(i)]) for i in range(workers)]
    sweep.log(f"started {workers} worker processes (pids {', '.join(str(p.pid) for p in procs)})")
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.wait()
        raise
    for i, code in enumerate(codes):
        if code != 0:
            sweep.log(f"warning: worker {i} exited with status {code}")


def cli(a) -> int:
    """The ``camser sweep`` subcommand (arguments: see camser.cli)."""
    run_sweep(a.config, a.overrides, a.out, space=a.space, storage=a.storage, study=a.study,
              workers=a.workers, track=a.track, worker=a.worker)
    return 0


__all__ = ["Sweep", "build_sweep", "check_space", "cli", "parse_spec", "read_space", "run_sweep", "split_overrides"]
