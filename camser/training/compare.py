"""``camser compare``: several systems, one experiment YAML each, cross-validated on identical
folds (each into ``DIR/<config stem>/``, resumable like any ``camser cv`` run), then one table:
WA, UA and macro-F1 as mean ± std over folds, the best of each column in bold, each system's
run directory. A finished ``camser cv`` run folder may stand for a system: it is read, not
rerun (its ``config.yaml`` is checked like a YAML's)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from tqdm import tqdm

from ..config import load_config, weight_text
from ..errors import ConfigError
from ..reports.results import read_json, write_json
from ..reports.tables import COLUMNS, comparison_table, mean_std
from .cv import run_cv

# Sections the folds follow from: they must be equal across the systems compared.
SAME = ("corpus", "labels", "protocol")
# Sections that should be equal (the same segments, the same repeats): a difference is reported.
NOTED = ("audio", "segments")


def _differs(a, b, section: str) -> bool:
    if section == "corpus":                     # the same folder, however it is spelled
        return a.corpus.resolved() != b.corpus.resolved()
    return dataclasses.asdict(getattr(a, section)) != dataclasses.asdict(getattr(b, section))


def _is_run(path: Path) -> bool:
    """A finished ``camser cv`` run folder (rather than an experiment YAML)."""
    return path.is_dir()


def _load_system(path: Path, overrides: list[str]):
    if not _is_run(path):
        return load_config(path, overrides)
    if not (path / "results.json").is_file() or not (path / "config.yaml").is_file():
        raise ConfigError(f"{path}: not a finished camser cv run (no results.json and config.yaml)")
    return load_config(path / "config.yaml")


def system_model(cfg) -> str:
    """What a system is, in a few words: the model's name, and the second models of a vote."""
    name = cfg.model["name"]
    others = " + ".join(v["model"]["name"] for v in cfg.vote.voters)
    return f"{name} + {others} (vote, {weight_text(cfg.vote.weight)})" if others else name


def system_line(name: str, model: str, results: dict, run_dir) -> str:
    """One line per finished system, printed as soon as its cv ends (the table waits for all):
    model, normalisation, WA/UA/macro-F1 mean ± std in percent, wall time, run folder."""
    s = results["summary"]
    scores = "  ".join(f"{title.rstrip(' %')} {mean_std(s.get(f'{key}_mean'), s.get(f'{key}_std'))}"
                       for key, title in COLUMNS)
    wall = results.get("wall_s")
    took = "–" if wall is None else tqdm.format_interval(wall)
    norm = (results.get("normalize") or {}).get("mode", "none")
    return f"== {name} done: model {model}, normalisation {norm}: {scores} (%), wall {took}, run {run_dir}"


def run_compare(config_paths: list, overrides: list[str], out_dir, log=print,
                progress: bool | None = None) -> tuple[str, list[dict]]:
    """Run every config (``overrides`` apply to all) and write ``DIR/compare.md`` and
    ``DIR/compare.json``. A finished run folder among ``config_paths`` is read as it is (named
    by its folder; ``overrides`` do not apply to it). Configs whose corpus, labels or protocol
    differ from the first's are refused before anything runs: their folds would not be the same."""
    out = Path(out_dir)
    paths = [Path(p) for p in config_paths]
    if not paths:
        raise ConfigError("compare: give at least one experiment YAML")
    seen: dict[str, Path] = {}
    for p in paths:
        if p.stem in seen:
            raise ConfigError(f"{p}: same name as {seen[p.stem]} (each system runs into DIR/<config name>/)")
        seen[p.stem] = p
    configs = [_load_system(p, overrides) for p in paths]
    first, ref = paths[0], configs[0]
    for p, cfg in zip(paths[1:], configs[1:]):
        for section in SAME:
            if _differs(cfg, ref, section):
                raise ConfigError(f"{p}: its {section} section differs from {first}'s, so the systems "
                                  "would not be compared on identical folds")
        for section in NOTED:
            if _differs(cfg, ref, section):
                log(f"warning: {p}: its {section} section differs from {first}'s")
        if list(cfg.train.seeds) != list(ref.train.seeds):
            log(f"warning: {p}: train.seeds {cfg.train.seeds} differ from {first}'s {ref.train.seeds}")

    rows, models = [], {}
    for p, cfg in zip(paths, configs):
        run_dir = p if _is_run(p) else out / p.stem
        log(f"== {p.stem} (model {system_model(cfg)}{', a finished run' if _is_run(p) else ''})")
        results = read_json(p / "results.json") if _is_run(p) else run_cv(cfg, run_dir, log=log, progress=progress)
        if results:
            rows.append((p.stem, results, str(run_dir)))
            models[p.stem] = system_model(cfg)
            log(system_line(p.stem, models[p.stem], results, run_dir))
    if not rows:                # not rank 0 under torchrun
        return "", []
    markdown, table = comparison_table(rows)
    for entry in table:
        entry["model"] = models[entry["name"]]
    n_folds = len(rows[0][1].get("folds", []))
    intro = (f"Systems compared on identical folds: corpus {ref.corpus.name}, protocol {ref.protocol.scheme} "
             f"(validation {ref.protocol.validation}), {n_folds} fold×seed entries each. Percentages, "
             "mean ± std over folds; the best mean of each column in bold.\n\n")
    out.mkdir(parents=True, exist_ok=True)          # finished run folders alone create nothing there
    (out / "compare.md").write_text(intro + markdown)
    write_json(out / "compare.json", table)
    print(markdown)
    return markdown, table
