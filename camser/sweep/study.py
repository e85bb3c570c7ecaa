"""A sweep's Optuna study: its workers, trials (each a ``camser cv`` run folder), resume and outputs."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import socket
import time
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import yaml

from ..config import ExperimentConfig, load_config
from ..errors import CamserError, ConfigError, first_line
from ..tracking import flatten, redact, run_log
from .inner import inner_folds, outer_of, write_if_changed
from .space import METRICS, SweepSpec, with_params


# settings that don't change a trial's numbers (or, for the paths, may differ between the
# machines sharing a study): a study may be resumed or joined with other values
RESUMABLE = ("features.cache_dir", "train.num_threads", "train.device", "output",
             "corpus.root", "corpus.prepared", "corpus.folds_csv")
MAX_RETRY = 3                 # reruns of a trial whose worker died
POLL_S = 2.0                  # how often an idle worker looks at the study


# ---------------------------------------------------------------- processes

def _process_token() -> str:
    """pid and start time: a later process that reuses the pid is not taken for it."""
    pid = os.getpid()
    try:
        start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        start = "?"
    return f"{pid}:{start}"


def _alive(token: str) -> bool:
    try:
        pid, start = token.split(":", 1)
        pid = int(pid)
    except ValueError:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True
    return fields[0] != "Z" and (start == "?" or fields[19] == start)


@contextmanager
def _file_lock(path: Path):
    try:
        import fcntl
    except ImportError:                      # no fcntl (Windows): one worker per cache, please
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _one_line(e: BaseException) -> str:
    return first_line(e, limit=500, with_type=not isinstance(e, CamserError))


class _Surplus(Exception):
    """A trial started after the budget was spent by other workers (it is not counted)."""


def format_value(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def redact_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return redact(url)


# ---------------------------------------------------------------- the sweep

class Sweep:
    """A sweep over ``cfg`` (the configuration without the swept values) into ``out``."""

    def __init__(self, cfg: ExperimentConfig, spec: SweepSpec, out: Path, storage: str | None,
                 study_name: str | None, tracker, log: Callable[[str], None]):
        self.cfg, self.spec, self.out = cfg, spec, Path(out)
        self.storage_url = storage or f"sqlite:///{(self.out / 'study.db').resolve()}"
        self.study_name = study_name or cfg.name
        self.tracker = tracker
        self.log = log
        self.worker = 0
        self.inner_csv = (self.out / "inner_folds.csv").resolve()
        self.outer = []
        self._retry = None

    # ------------------------------------------------------------ setup
    def prepare_folds(self) -> None:
        """Inner: write DIR/inner_folds.csv and check that cv can build its folds; outer:
        check the experiment's folds. Nothing is extracted."""
        from ..training.experiment import load_utterances
        from ..protocols import make_folds
        if self.spec.objective == "outer":
            utterances, _ = load_utterances(self.cfg)
            self.outer = make_folds(utterances, self.cfg.protocol, folds_csv=self.cfg.corpus.folds_csv)
            return
        rows, self.outer = inner_folds(self.cfg, self.spec.inner_folds)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["fold", "split", "file_stem"])
        w.writerows(rows)
        self.out.mkdir(parents=True, exist_ok=True)
        write_if_changed(self.inner_csv, buf.getvalue())
        probe = self.trial_config({})
        utterances, _ = load_utterances(probe)
        make_folds(utterances, probe.protocol, folds_csv=probe.corpus.folds_csv)

    def trial_config(self, values: dict) -> ExperimentConfig:
        data = with_params(self.cfg, values)
        if self.spec.objective == "inner":
            data["protocol"].update(scheme="csv", folds=None)
            data["corpus"]["folds_csv"] = str(self.inner_csv)
        return load_config(None, data=data)

    def fingerprint(self) -> str:
        from ..config import config_hash
        flat = {k: v for k, v in flatten(self.cfg.to_dict()).items()
                if k != "name" and not any(k == r or k.startswith(r + ".") for r in RESUMABLE)}
        spec = {k: v for k, v in self.spec.to_dict().items() if k not in ("n_trials", "nested")}
        return config_hash(flat, spec)

    def _storage(self):
        import optuna
        retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
        self._retry = (retry or optuna.storages.RetryFailedTrialCallback)(max_retry=MAX_RETRY)
        callback = ({"heartbeat_stale_trial_callback": self._retry} if retry else {"failed_trial_callback": self._retry})
        engine = {"connect_args": {"timeout": 120}} if self.storage_url.startswith("sqlite") else {}
        hb = self.spec.heartbeat_s
        try:
            return optuna.storages.RDBStorage(self.storage_url, engine_kwargs=engine, heartbeat_interval=hb,
                                              grace_period=3 * hb, **callback)
        except Exception as e:
            raise CamserError(f"--storage {redact_url(self.storage_url)}: can't open it ({_one_line(e)})") from None

    def _sampler(self):
        import optuna
        seed = self.spec.seed + self.worker
        if self.spec.sampler == "grid":
            return optuna.samplers.GridSampler({p.key: p.choices(True) for p in self.spec.params}, seed=seed)
        if self.spec.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.spec.startup_trials, constant_liar=True)

    def open_study(self, create: bool):
        import optuna
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        storage = self._storage()
        print_name = f"study {self.study_name!r} at {redact_url(self.storage_url)}"
        if create:
            study = optuna.create_study(study_name=self.study_name, storage=storage, sampler=self._sampler(),
                                        direction="maximize", load_if_exists=True)
            attrs = study.user_attrs
            if "camser.fingerprint" not in attrs and not study.get_trials(deepcopy=False):
                study.set_user_attr("camser.fingerprint", self.fingerprint())
                study.set_user_attr("camser.spec", self.spec.to_dict())
        else:
            try:
                study = optuna.load_study(study_name=self.study_name, storage=storage, sampler=self._sampler())
            except KeyError:
                raise CamserError(f"{print_name}: not found (start the sweep without --worker first)") from None
        if study.user_attrs.get("camser.fingerprint") != self.fingerprint():
            raise ConfigError(f"--study: {print_name} holds another sweep (another configuration, space or "
                              "objective); choose another --study NAME or --out")
        return study

    # ------------------------------------------------------------ trials
    def _tally(self, trials) -> tuple[list, set]:
        """(the trials that count against n_trials, the numbers of trials rerun as another)."""
        retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
        live = [t for t in trials if t.number not in retried and not t.user_attrs.get("surplus")]
        return live, retried

    def requeue_abandoned(self, study) -> None:
        """Trials whose worker on this host is gone, or that were interrupted, are queued
        again with the same parameters (Optuna's heartbeat does the same, later, for
        workers elsewhere)."""
        from optuna.trial import TrialState
        host = socket.gethostname()
        trials = study.get_trials(deepcopy=False)
        _, retried = self._tally(trials)
        for t in trials:
            token = t.user_attrs.get("process")
            if t.state == TrialState.RUNNING and t.user_attrs.get("host") == host and token and not _alive(token):
                try:
                    study.tell(t.number, state=TrialState.FAIL)
                except Exception:            # another process got there first
                    continue
                self.log(f"trial {t.number}: its worker (pid {token.split(':')[0]}) is gone; queued again")
            elif not (t.state == TrialState.FAIL and t.user_attrs.get("interrupted") and t.number not in retried):
                continue
            frozen = next(x for x in study.get_trials(deepcopy=True) if x.number == t.number)
            self._retry(study, frozen)

    def objective(self, trial) -> float:
        study = trial.study
        live, _ = self._tally(study.get_trials(deepcopy=False))
        if sum(t.number < trial.number for t in live) >= self.spec.n_trials:
            trial.set_user_attr("surplus", True)
            raise _Surplus(f"trial {trial.number}: the {self.spec.n_trials} trials were taken by other workers")
        number = trial.user_attrs.get("run_number", trial.number)     # a rerun keeps its folder
        run_dir = self.out / "trials" / f"{number:04d}"
        for k, v in {"run_number": number, "run_dir": str(run_dir.resolve()), "host": socket.gethostname(),
                     "process": _process_token(), "worker": self.worker, "error": None, "interrupted": False}.items():
            trial.set_user_attr(k, v)
        values = {p.key: p.suggest(trial, self.spec.grid) for p in self.spec.params}
        shown = ", ".join(f"{k}={format_value(v)}" for k, v in values.items())
        again = f" (rerun of trial {number})" if number != trial.number else ""
        self.log(f"trial {trial.number}{again}: {shown} → {run_dir}")
        quiet = run_log(run_dir / "run.log", lambda m: None)
        try:
            from ..training.cv import prepare_run_data, run_cv
            cfg = self.trial_config(values)
            with _file_lock(self.out / ".features.lock"):     # one process extracts a missing store
                prepare_run_data(cfg, progress=False)
            tracker = self.tracker.child(self.out, run_name=f"{self.study_name} trial {number:04d}",
                                         params={f"sweep.{k}": format_value(v) for k, v in values.items()})
            results = run_cv(cfg, run_dir, log=lambda m: None, progress=False, tracker=tracker)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except Exception as e:
            error = _one_line(e)
            trial.set_user_attr("error", error)
            quiet(f"trial failed: {error}\n{traceback.format_exc()}")
            self.log(f"trial {trial.number} failed: {error}")
            raise
        key, name = METRICS[self.spec.metric]
        s = results["summary"]
        value = float(s[f"{key}_mean"])
        trial.set_user_attr("summary", {k: round(float(s[k]), 6) for k in
                                        ("wa_mean", "wa_std", "ua_mean", "ua_std", "f1_mean", "f1_std") if k in s})
        if self.spec.objective == "inner":
            names = {f["fold"]: f.get("name", "") for f in results.get("protocol", {}).get("folds", [])}
            per: dict[str, list] = {}
            for entry in results["folds"]:
                o = outer_of(names.get(entry["fold"], ""))
                if o is not None:
                    per.setdefault(str(o), []).append(float(entry[self.spec.metric]))
            trial.set_user_attr("per_outer", {o: sum(v) / len(v) for o, v in per.items()})
        self.log(f"trial {trial.number}: {name} {100 * value:.2f} ± {100 * s[f'{key}_std']:.2f}")
        return value

    def work(self, worker: int) -> None:
        """Run trials until the study has its n_trials (waiting for other workers' running
        trials to finish, or to be found dead and queued again)."""
        import optuna
        from optuna.trial import TrialState
        self.worker = worker
        study = self.open_study(create=False)
        while True:
            self.requeue_abandoned(study)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                optuna.storages.fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            live, _ = self._tally(trials)
            if any(t.state == TrialState.WAITING for t in trials) or len(live) < self.spec.n_trials:
                study.optimize(self.objective, n_trials=1, catch=(Exception,))
            elif any(t.state == TrialState.RUNNING for t in live):
                time.sleep(POLL_S)
            else:
                return

    # ------------------------------------------------------------ results
    def trial_records(self, study) -> list[dict]:
        trials = study.get_trials(deepcopy=False)
        _, retried = self._tally(trials)
        rerun_as = {}
        for t in trials:
            for n in t.system_attrs.get("retry_history", []):
                rerun_as[n] = t.number
        params = {p.key: p for p in self.spec.params}
        records = []
        for t in trials:
            if t.user_attrs.get("surplus"):
                continue
            state = t.state.name.lower()
            if t.number in retried:
                state = "rerun"
            elif state == "fail":
                state = "failed"
            error = t.user_attrs.get("error")
            if state == "rerun":
                error = f"its worker stopped; rerun as trial {rerun_as[t.number]}"
            elif state == "failed" and not error:
                error = "its worker stopped (no heartbeat)"
            records.append({
                "number": t.number, "state": state, "value": t.value,
                "params": {k: params[k].decode(v) if k in params else v for k, v in t.params.items()},
                "summary": t.user_attrs.get("summary"), "per_outer": t.user_attrs.get("per_outer"),
                "error": error, "run_dir": t.user_attrs.get("run_dir"), "host": t.user_attrs.get("host"),
                "worker": t.user_attrs.get("worker"),
            })
        order = {"complete": 0, "running": 1, "waiting": 2, "failed": 3, "rerun": 4}
        records.sort(key=lambda r: (order.get(r["state"], 5), -(r["value"] if r["value"] is not None else -math.inf),
                                    r["number"]))
        return records

    def objective_note(self, short: bool = False) -> str:
        metric = METRICS[self.spec.metric][1]
        if self.spec.objective == "outer":
            return ("**Chosen on the outer test folds: the choice saw the test folds, so these figures are "
                    "optimistic.**" if short else
                    f"Objective: mean {metric} over the experiment's outer test folds. **The choice saw the test "
                    "folds: the best trial's figures are optimistic, not an estimate for new speakers.**")
        outer = [f.index for f in self.outer]
        if short:
            return ("Chosen on inner folds of training speakers only: no inner fold held a test speaker of its "
                    "outer fold" + ("." if len(outer) == 1 else
                                    " (pooled over the outer folds: not a nested estimate; see per outer fold)."))
        text = (f"Objective: mean {metric} over {self.spec.inner_folds} speaker-grouped inner folds of the training "
                f"speakers of outer fold{'s' if len(outer) > 1 else ''} {', '.join(map(str, outer))} "
                f"({self.cfg.protocol.scheme}); no inner fold holds a test speaker of its outer fold. ")
        if len(outer) == 1:
            return text + (f"The choice saw none of outer fold {outer[0]}'s test speakers, so best.yaml's score "
                           "on that fold is a clean estimate.")
        return text + ("Pooled over the outer folds, whose training speakers together include every outer test "
                       "speaker: scoring best.yaml on the outer folds is not a nested estimate. The choices per "
                       "outer fold below are (each saw none of its fold's test speakers)"
                       + ("; the nested estimate scores each outer fold with its own." if self.spec.nested else "."))

    def nested_estimate(self, per_outer: list[dict]) -> dict:
        """``sweep.nested``: each outer fold trained and scored with the choice made on its own
        inner folds (``DIR/nested/outer<k>``, ordinary cv run folders that resume); the mean over
        them is a nested estimate: no choice saw the test speakers it is scored on."""
        from ..training.cv import run_cv
        name = METRICS[self.spec.metric][1]
        rows = []
        for p in per_outer:
            data = with_params(self.cfg, p["params"])
            data["protocol"]["folds"] = [p["outer_fold"]]
            run_dir = self.out / "nested" / f"outer{p['outer_fold']}"
            self.log(f"nested: outer fold {p['outer_fold']} with trial {p['trial']}'s choice → {run_dir}")
            results = run_cv(load_config(None, data=data), run_dir, log=lambda m: None, progress=False)
            scores = [float(f[self.spec.metric]) for f in results["folds"]]
            rows.append({"outer_fold": p["outer_fold"], "trial": p["trial"], "params": p["params"],
                         "value": sum(scores) / len(scores), "n_seeds": len(scores), "run_dir": str(run_dir.resolve())})
        values = [r["value"] for r in rows]
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
        self.log(f"nested estimate: {name} {100 * mean:.2f} ± {100 * std:.2f} over {len(rows)} outer folds")
        return {"metric": self.spec.metric, "value": mean, "std": std, "outer_folds": rows}

    def report(self, study, nested: dict | None = None) -> dict:
        from ..reports.results import write_json
        records = self.trial_records(study)
        complete = [r for r in records if r["state"] == "complete"]
        best = complete[0] if complete else None
        metric_key, metric_name = METRICS[self.spec.metric]
        per_outer = []
        if self.spec.objective == "inner":
            for f in self.outer:
                scored = [r for r in complete if (r["per_outer"] or {}).get(str(f.index)) is not None]
                if scored:
                    top = max(scored, key=lambda r: (r["per_outer"][str(f.index)], -r["number"]))
                    per_outer.append({"outer_fold": f.index, "name": f.name, "test_speakers": f.test_speakers,
                                      "trial": top["number"], "params": top["params"],
                                      "value": top["per_outer"][str(f.index)]})
        figures = self.plot(complete)
        out = {
            "study": self.study_name, "storage": redact_url(self.storage_url), "sampler": self.spec.sampler,
            "metric": self.spec.metric, "objective": self.spec.objective,
            "saw_test_folds": self.spec.objective == "outer", "objective_note": self.objective_note(),
            "n_trials": self.spec.n_trials, "space": self.spec.to_dict()["params"],
            "counts": {s: sum(r["state"] == s for r in records) for s in ("complete", "failed", "running", "waiting", "rerun")},
            "best": best and {k: best[k] for k in ("number", "params", "value", "summary", "run_dir")},
            "per_outer_fold": per_outer, "nested": nested, "trials": records, "figures": figures,
        }
        write_json(self.out / "sweep.json", out)
        if best:
            best_cfg = load_config(None, data=with_params(self.cfg, best["params"]))
            head = (f"# best of the sweep in {self.out} (study {self.study_name!r}): trial {best['number']}, "
                    f"{metric_name} {100 * best['value']:.2f} ({self.spec.objective} objective"
                    f"{'; chosen on the outer test folds' if self.spec.objective == 'outer' else ''})\n")
            (self.out / "best.yaml").write_text(head + yaml.safe_dump(best_cfg.to_dict(), sort_keys=False))
        (self.out / "sweep.md").write_text(self.markdown(out, records, per_outer, figures))
        return out

    def markdown(self, summary: dict, records: list[dict], per_outer: list[dict], figures: list[str]) -> str:
        keys = [p.key for p in self.spec.params]
        metric_name = METRICS[self.spec.metric][1]
        c = summary["counts"]
        lines = [f"# Sweep: {self.cfg.name}", "", self.objective_note(), "",
                 f"Sampler {self.spec.sampler} (seed {self.spec.seed}), {self.spec.n_trials} trials: "
                 f"{c['complete']} complete, {c['failed']} failed"
                 + (f", {c['running']} running" if c["running"] else "") + (f", {c['waiting']} waiting" if c["waiting"] else "")
                 + f". Study `{self.study_name}` at `{summary['storage']}`. {metric_name}: mean ± std over the "
                 "trial's folds, percent.", ""]
        if summary["best"]:
            b = summary["best"]
            lines += [f"Best: trial {b['number']} ({', '.join(f'{k}={format_value(v)}' for k, v in b['params'].items())}), "
                      f"{metric_name} {100 * b['value']:.2f}; its configuration: best.yaml.", ""]
        lines += ["## Trials, best first", "", self.objective_note(short=True), "",
                  "| rank | trial | " + " | ".join(keys) + f" | {metric_name} | ± | state | run folder |",
                  "|---:|---:|" + "---|" * len(keys) + "---:|---:|---|---|"]
        key = METRICS[self.spec.metric][0]
        rank = 0
        for r in records:
            if r["state"] in ("failed", "rerun"):
                continue
            rank += r["state"] == "complete"
            s = r["summary"] or {}
            value = f"{100 * r['value']:.2f}" if r["value"] is not None else ""
            std = f"{100 * s[f'{key}_std']:.2f}" if f"{key}_std" in s else ""
            lines.append(f"| {rank if r['state'] == 'complete' else ''} | {r['number']} | "
                         + " | ".join(format_value(r["params"].get(k, "")) for k in keys)
                         + f" | {value} | {std} | {r['state']} | {self._rel(r['run_dir'])} |")
        if per_outer:
            lines += ["", "## Per outer fold (nested choices)", "",
                      "Each row's choice saw only that outer fold's training speakers (never its test speakers).", "",
                      "| outer fold | test speakers | best trial | " + " | ".join(keys) + f" | inner {metric_name} |",
                      "|---:|---|---:|" + "---|" * len(keys) + "---:|"]
            for p in per_outer:
                lines.append(f"| {p['outer_fold']} | {', '.join(p['test_speakers'])} | {p['trial']} | "
                             + " | ".join(format_value(p["params"].get(k, "")) for k in keys) + f" | {100 * p['value']:.2f} |")
        nested = summary.get("nested")
        if nested:
            lines += ["", "## Nested estimate", "",
                      f"Each outer fold trained and scored with its own choice above (`nested/outer<k>`): none saw "
                      f"the test speakers it is scored on. {metric_name} {100 * nested['value']:.2f} ± "
                      f"{100 * nested['std']:.2f} (mean ± std over {len(nested['outer_folds'])} outer folds).", "",
                      "| outer fold | trial | " + " | ".join(keys) + f" | outer {metric_name} | run folder |",
                      "|---:|---:|" + "---|" * len(keys) + "---:|---|"]
            for r in nested["outer_folds"]:
                lines.append(f"| {r['outer_fold']} | {r['trial']} | "
                             + " | ".join(format_value(r["params"].get(k, "")) for k in keys)
                             + f" | {100 * r['value']:.2f} | {self._rel(r['run_dir'])} |")
        failed = [r for r in records if r["state"] in ("failed", "rerun")]
        if failed:
            lines += ["", "## Failed and rerun trials", "", "| trial | " + " | ".join(keys) + " | error | run folder |",
                      "|---:|" + "---|" * len(keys) + "---|---|"]
            for r in failed:
                err = (r["error"] or "").replace("|", "\\|")
                lines.append(f"| {r['number']} | " + " | ".join(format_value(r["params"].get(k, "")) for k in keys)
                             + f" | {err} | {self._rel(r['run_dir'])} |")
        if figures:
            lines += ["", f"## {metric_name} against each parameter", "", self.objective_note(short=True), ""]
            lines += [f"![{Path(f).stem}]({f})" for f in figures]
        return "\n".join(lines) + "\n"

    def _rel(self, path: str | None) -> str:
        if not path:
            return ""
        try:
            return str(Path(path).relative_to(self.out.resolve()))
        except ValueError:
            return path

    def plot(self, complete: list[dict]) -> list[str]:
        """figures/sweep_<param>.png: each complete trial's metric against the parameter's
        value (the best one starred) → paths relative to DIR."""
        if not complete:
            return []
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        figs = self.out / "figures"
        figs.mkdir(parents=True, exist_ok=True)
        metric_name = METRICS[self.spec.metric][1]
        paths = []
        for p in self.spec.params:
            xs = [r["params"].get(p.key) for r in complete]
            ys = [100 * r["value"] for r in complete]
            fig = Figure(figsize=(4.8, 3.4), dpi=110)
            FigureCanvasAgg(fig)
            ax = fig.add_subplot(1, 1, 1)
            numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
            if numeric:
                pos = xs
                if p.log or (min(xs) > 0 and max(xs) >= 20 * min(xs)):
                    ax.set_xscale("log")
            else:
                labels = list(dict.fromkeys(format_value(x) for x in xs))
                pos = [labels.index(format_value(x)) for x in xs]
                ax.set_xticks(range(len(labels)))
                ax.set_xticklabels(labels, rotation=30 if max(map(len, labels)) > 6 else 0)
            ax.scatter(pos, ys, s=28, alpha=0.75, color="tab:blue", label="trials")
            ax.scatter([pos[0]], [ys[0]], s=140, marker="*", color="tab:red", label="best")
            ax.set_xlabel(p.key)
            ax.set_ylabel(f"{metric_name} (%)")
            where = "outer test folds" if self.spec.objective == "outer" else "inner folds"
            ax.set_title(f"{metric_name} ({where}) vs {p.key}", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            fig.tight_layout()
            name = "sweep_" + re.sub(r"[^A-Za-z0-9._-]", "_", p.key) + ".png"
            fig.savefig(figs / name)
            paths.append(f"figures/{name}")
        return paths


