"""The paper's Table 2: every ablation row is the same experiment with other model switches,
run on the same folds and seeds, then one comparison table."""
from __future__ import annotations

from pathlib import Path

from ..config import load_config
from ..errors import ConfigError
from ..reports.results import write_json
from ..reports.tables import comparison_table
from .compare import system_line, system_model
from .cv import run_cv


def run_ablation(config_path, overrides: list[str], out_dir, rows: list[str] | None = None,
                 log=print, progress: bool | None = None) -> tuple[str, list[dict]]:
    from ..models.camser import ABLATIONS

    out = Path(out_dir)
    names = rows or list(ABLATIONS)
    unknown = [r for r in names if r not in ABLATIONS]
    if unknown:
        raise ConfigError(f"--rows: unknown row '{unknown[0]}' (rows: {', '.join(ABLATIONS)})")
    table_rows, markdown, table = [], "", []
    for name in names:
        log(f"== ablation row: {name}")
        cfg = load_config(config_path, overrides, data={"model": dict(ABLATIONS[name])})
        results = run_cv(cfg, out / name, log=log, progress=progress)
        if results:             # rank 0: the table of the rows so far, so a stopped run leaves one
            table_rows.append((name, results, str(out / name)))
            log(system_line(name, system_model(cfg), results, out / name))
            markdown, table = comparison_table(table_rows)
            if len(table_rows) < len(names):
                markdown = (f"*{len(table_rows)} of {len(names)} rows so far: the same command "
                            "resumes the others.*\n\n" + markdown)
            (out / "ablation.md").write_text(markdown)
            write_json(out / "ablation.json", table)
    return markdown, table
