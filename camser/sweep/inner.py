"""Inner speaker-grouped folds: what an ``objective: inner`` sweep scores its trials on."""
from __future__ import annotations

import os
import re
from pathlib import Path


from ..config import ExperimentConfig
from ..errors import ConfigError


# ---------------------------------------------------------------- inner folds

def inner_folds(cfg: ExperimentConfig, k: int) -> tuple[list[tuple[str, str, str]], list]:
    """Rows ``(fold, split, utterance id)`` of the inner speaker-grouped folds of every outer
    fold of ``cfg`` (see the module docstring), and the outer folds."""
    import numpy as np
    from sklearn.model_selection import GroupKFold

    from ..training.experiment import load_utterances
    from ..protocols import make_folds
    utterances, _ = load_utterances(cfg)
    outer = make_folds(utterances, cfg.protocol, folds_csv=cfg.corpus.folds_csv)
    rows = []
    for f in outer:
        test = set(f.test_ids)
        allowed = (set(f.train_ids) | set(f.val_ids)) - test
        pool = [u for u in utterances if u.id in allowed]
        groups = np.array([u.speaker for u in pool])
        n_speakers = len(set(groups.tolist()))
        if n_speakers < k:
            raise ConfigError(f"sweep.inner_folds: outer fold {f.index} ({f.name}) has {n_speakers} training "
                              f"speakers, fewer than {k} inner folds")
        for i, (_, te) in enumerate(GroupKFold(n_splits=k).split(np.zeros(len(pool)), groups=groups), start=1):
            held = set(te.tolist())
            name = f"outer{f.index}-inner{i}"
            rows += [(name, "test" if j in held else "train", u.id) for j, u in enumerate(pool)]
    return rows, outer


def write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_text() == text:
        return
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def outer_of(fold_name: str) -> int | None:
    m = re.search(r"outer(\d+)-inner\d+", fold_name or "")
    return int(m.group(1)) if m else None


