"""Run logs and experiment tracking for ``camser cv``, ``camser train`` and ``camser sweep``.

Every run folder gets ``run.log``: the lines the run printed (its ``log`` callable), each with a
timestamp, appended when the run resumes (:func:`run_log`).

``--track mlflow`` also sends the run to MLflow (:class:`MLflowTracker`, imported lazily: the
``track`` extra). The run folder stays the source of truth: tracking copies what the folder
holds (the flattened configuration as params, each fold × seed's per-epoch curves as
``fold01_seed0/train_loss`` … with the epoch as step, the fold and summary metrics, and the
artefacts ``results.json``, ``report.md``/``.html``, ``config.yaml``, ``run.log``,
``figures/``). The store is MLflow's own choice: ``MLFLOW_TRACKING_URI`` when set, else MLflow's
default local store in the working directory (MLflow 3: ``sqlite:///mlflow.db`` with artefacts
under ``./mlruns``; ``mlflow ui`` there shows it). The MLflow experiment is the config's
``name``. ``RUN_DIR/mlflow.json`` remembers the run id, so a resumed run logs into the same
MLflow run and folds already logged are not logged twice. A tracking error after the run has
started is a warning in the log, never the end of the run.

The default tracker (:class:`Tracker`) does nothing.
"""
from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from .errors import CamserError, first_line

TRACKERS = ("none", "mlflow")
STATE_FILE = "mlflow.json"
# what a cv run folder holds that is worth copying (figures/ is a folder)
CV_ARTEFACTS = ("results.json", "report.md", "report.html", "config.yaml", "run.log", "figures")


def run_log(path: str | Path, log: Callable[[str], None] = print, header: str | None = None) -> Callable[[str], None]:
    """``log``, also appending each line to the plain-text file ``path`` with a timestamp
    (``header`` first: a line that marks where this invocation starts)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(line: str) -> None:
        with path.open("a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {line}\n")

    if header is not None:
        write(f"== {header} (pid {os.getpid()} on {socket.gethostname()})")

    def tee(msg: str) -> None:
        write(str(msg))
        log(msg)
    tee.file = path
    return tee


def redact(uri: str) -> str:
    """A URI with its password (``scheme://user:secret@host``) replaced by ``***``."""
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", uri)


def flatten(tree: dict, prefix: str = "") -> dict:
    """``{"train": {"lr": 1e-3}}`` → ``{"train.lr": 1e-3}``."""
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        out.update(flatten(v, key + ".") if isinstance(v, dict) and v else {key: v})
    return out


def make_tracker(kind: str | None, **kwargs) -> "Tracker":
    """``--track`` → a tracker: ``none`` (or None) → :class:`Tracker`; ``mlflow`` →
    :class:`MLflowTracker` (``kwargs``: its options)."""
    if kind in (None, "none"):
        return Tracker()
    if kind == "mlflow":
        return MLflowTracker(**kwargs)
    raise CamserError(f"--track: {kind!r} is not one of {', '.join(TRACKERS)}")


class Tracker:
    """The no-op tracker, and the interface: a run is opened with :meth:`cv_run` or
    :meth:`start` and fed through the primitives :meth:`log_params`, :meth:`log_metrics`,
    :meth:`log_artifacts`, :meth:`end`. Subclasses implement the primitives."""

    enabled = False
    run_id: str | None = None
    log: Callable[[str], None] = staticmethod(print)
    run_name: str | None = None       # default run name (else the run folder's name)
    extra_params: dict = {}           # logged with every run's params (a sweep trial's parameters)

    # ------------------------------------------------------------ primitives
    def start(self, out: Path, experiment: str, run_name: str, tags: dict | None = None) -> None:
        pass

    def log_params(self, params: dict) -> None:
        pass

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        pass

    def log_artifacts(self, out: Path, names) -> None:
        pass

    def end(self, status: str = "FINISHED") -> None:
        pass

    def _logged(self) -> set:
        return set()

    def _mark_logged(self, key: str) -> None:
        pass

    # ------------------------------------------------------------ runs
    def log_curves(self, history: list[dict], prefix: str = "") -> None:
        """Per-epoch records (``epoch``, ``train_loss``, ``val_loss``, ``val_wa``, ``val_ua``, ``lr``)
        as metrics with the epoch as step."""
        for record in history or []:
            step = int(record.get("epoch", 0))
            self.log_metrics({f"{prefix}{k}": v for k, v in record.items() if k != "epoch"}, step=step)

    def log_fold(self, entry: dict) -> None:
        """A finished fold × seed of a cv run: its curves and test metrics (once per run)."""
        tag = f"fold{int(entry['fold']):02d}_seed{entry['seed']}"
        if not self.enabled or tag in self._logged():
            return
        self.log_curves(entry.get("history") or [], prefix=f"{tag}/")
        self.log_metrics({f"{tag}/{k}": entry[k] for k in ("wa", "ua", "f1_macro") if k in entry})
        self._mark_logged(tag)

    @contextmanager
    def _run(self, command: str, cfg, out: Path, log, run_name: str | None, params: dict | None):
        """A run of ``command`` for the block: opened with the flattened config as params,
        closed as KILLED / FAILED if the block raises (the block closes it when it succeeds)."""
        if log is not None:
            self.log = log
        self.start(out, cfg.name, run_name or self.run_name or Path(out).name,
                   tags={"camser.command": command, "camser.run_dir": str(out)})
        self.log_params({**flatten(cfg.to_dict()), **self.extra_params, **(params or {})})
        try:
            yield self
        except KeyboardInterrupt:
            self.end("KILLED")
            raise
        except BaseException:
            self.end("FAILED")
            raise

    def cv_run(self, cfg, out: Path, log: Callable[[str], None] | None = None, run_name: str | None = None,
               params: dict | None = None):
        """Track the cv run of ``cfg`` into ``out`` for the duration of the block; the block
        calls ``.log_fold(entry)`` per finished fold and ``.cv_done(out, results)`` at the end.
        ``log``: where the tracker's own lines go; ``params``: extra params (a sweep trial's)."""
        return self._run("cv", cfg, out, log, run_name, params)

    def child(self, parent_dir: str | Path, run_name: str | None = None, params: dict | None = None) -> "Tracker":
        """A tracker for a run nested under the run of ``parent_dir`` (no-op here)."""
        return Tracker()

    def train_run(self, cfg, out: Path, log: Callable[[str], None] | None = None):
        """Track ``camser train`` into the model folder ``out``; the block calls
        ``.train_done(out)`` once the folder is written."""
        return self._run("train", cfg, out, log, None, None)

    def train_done(self, out: Path) -> None:
        """The end of ``camser train``: the curves (``history.json``), the validation scores
        and the model folder's small files (not the weights); the run is closed."""
        if not self.enabled:
            return
        out = Path(out)
        if (out / "history.json").is_file():
            self.log_curves(json.loads((out / "history.json").read_text()))
        if (out / "camser.json").is_file():
            training = json.loads((out / "camser.json").read_text()).get("training", {})
            self.log_metrics({k: v for k, v in training.items() if isinstance(v, (int, float))})
        self.log_artifacts(out, ("camser.json", "experiment.yaml", "features.yaml", "history.json", "run.log"))
        self.end("FINISHED")

    def cv_done(self, out: Path, results: dict) -> None:
        """The end of a cv run: folds finished by an earlier invocation, the summary
        metrics, the artefacts; the run is closed."""
        if not self.enabled:
            return
        for f in sorted((out / "folds").glob("*/result.json")):
            self.log_fold(json.loads(f.read_text()))
        self.log_metrics({k: v for k, v in (results.get("summary") or {}).items() if isinstance(v, (int, float))})
        if results.get("wall_s") is not None:
            self.log_metrics({"wall_s": results["wall_s"]})
        self.log_artifacts(out, CV_ARTEFACTS)
        self.end("FINISHED")


class MLflowTracker(Tracker):
    """MLflow through its client API (explicit run ids, so several runs, nested ones
    included, can live in one process). ``parent_dir``: a run folder whose ``mlflow.json``
    names the parent run (a sweep's trials are children of the sweep's run).
    ``tracking_uri``: default ``MLFLOW_TRACKING_URI``, else MLflow's default."""

    enabled = True

    def __init__(self, tracking_uri: str | None = None, parent_dir: str | Path | None = None,
                 log: Callable[[str], None] = print):
        try:
            import mlflow  # noqa: F401
            from mlflow.tracking import MlflowClient
        except ImportError as e:
            raise CamserError(f"--track mlflow needs mlflow ({e.name} is missing): "
                              "pip install 'camser[track]'") from None
        import mlflow
        self.uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()
        self.client = MlflowClient(tracking_uri=self.uri)
        self.parent_dir = Path(parent_dir) if parent_dir is not None else None
        self.log = log
        self.run_id = None
        self.state_path: Path | None = None
        self.state: dict = {}

    def child(self, parent_dir: str | Path, run_name: str | None = None,
              params: dict | None = None) -> "MLflowTracker":
        """A tracker for a run nested under the run of ``parent_dir``, same store (named
        ``run_name``, ``params`` logged with its own)."""
        child = MLflowTracker(self.uri, parent_dir=parent_dir, log=self.log)
        child.run_name, child.extra_params = run_name, dict(params or {})
        return child

    def _guard(self, what: str, fn, *args, **kwargs):
        if not self.enabled:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as e:              # the run folder is the record: tracking may fail
            self.enabled = False
            self.log(f"warning: mlflow: {what} failed ({first_line(e, with_type=True)}); "
                     "tracking stops for this run")
            return None

    def _experiment_id(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        try:
            return self.client.create_experiment(name)
        except Exception:                   # another process created it meanwhile
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def start(self, out: Path, experiment: str, run_name: str, tags: dict | None = None) -> None:
        out = Path(out)
        self.state_path = out / STATE_FILE
        old = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        try:
            run = None
            if old.get("run_id") and old.get("tracking_uri") == redact(self.uri):
                try:
                    run = self.client.get_run(old["run_id"])
                except Exception:
                    run = None              # deleted from the store: a new run
            if run is not None:
                self.client.update_run(run.info.run_id, status="RUNNING")
                self.state = old
            else:
                tags = {**(tags or {}), "camser.host": socket.gethostname(), "camser.argv": " ".join(sys.argv)[:5000]}
                parent = self._parent_id()
                if parent:
                    tags["mlflow.parentRunId"] = parent
                run = self.client.create_run(self._experiment_id(experiment), run_name=run_name, tags=tags)
                self.state = {"tracking_uri": redact(self.uri), "run_id": run.info.run_id,
                              "experiment": experiment, "logged": []}
        except Exception as e:
            raise CamserError(f"--track mlflow: can't open a run at {redact(self.uri)} "
                              f"({first_line(e, with_type=True)})") from None
        self.run_id = self.state["run_id"]
        self.enabled = True
        self._save()
        self.log(f"mlflow: run {self.run_id} in experiment {experiment!r} at {redact(self.uri)}")

    def _parent_id(self) -> str | None:
        if self.parent_dir is None:
            return None
        p = self.parent_dir / STATE_FILE
        if not p.is_file():
            return None
        state = json.loads(p.read_text())
        return state.get("run_id") if state.get("tracking_uri") == redact(self.uri) else None

    def _save(self) -> None:
        tmp = self.state_path.with_name(STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        os.replace(tmp, self.state_path)

    def _logged(self) -> set:
        return set(self.state.get("logged", []))

    def _mark_logged(self, key: str) -> None:
        if self.enabled:
            self.state.setdefault("logged", []).append(key)
            self._save()

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        def do():
            have = self.client.get_run(self.run_id).data.params
            # params are immutable in MLflow: a resumed run may differ only in settings that
            # don't change its numbers (threads, device, ...); those keep their first value
            items = [Param(str(k)[:250], str(v)[:6000]) for k, v in params.items() if str(k)[:250] not in have]
            for i in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[i:i + 100])
        self._guard("logging params", do)

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        from mlflow.entities import Metric

        def do():
            now = int(time.time() * 1000)
            items = [Metric(str(k), float(v), now, int(step or 0)) for k, v in metrics.items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v]
            for i in range(0, len(items), 1000):
                self.client.log_batch(self.run_id, metrics=items[i:i + 1000])
        self._guard("logging metrics", do)

    def log_artifacts(self, out: Path, names) -> None:
        def do():
            for name in names:
                p = Path(out) / name
                if p.is_dir():
                    self.client.log_artifacts(self.run_id, str(p), artifact_path=name)
                elif p.is_file():
                    self.client.log_artifact(self.run_id, str(p))
        self._guard("logging artefacts", do)

    def end(self, status: str = "FINISHED") -> None:
        self._guard("closing the run", self.client.set_terminated, self.run_id, status)
