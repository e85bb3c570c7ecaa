"""``camser evaluate``: score a trained model on another corpus (cross-corpus evaluation).

Corpora name their emotions differently (IEMOCAP ``ang``, RAVDESS ``angry``, EmoDB ``anger``)
and have different sets. Each corpus label is mapped to a model label by the first rule
that applies:

1. the ``--label-map`` file (YAML or JSON ``{corpus label: model label}``; ``null`` drops it);
2. a corpus label that is a model label maps to itself;
3. the corpus's default merge (IEMOCAP: ``exc`` → ``hap``), then rules 2 and 4 on the result;
4. a built-in alias (:data:`ALIASES`, case-insensitive) when exactly one model label is in
   the same group: angry/anger/ang, happy/happiness/hap/joy, neutral/neu, sad/sadness,
   fearful/fear/fea, disgust/disgusted/dis, surprised/surprise/sur, boredom/bored/bor,
   excited/exc, frustrated/frustration/fru, calm.

Anything else is dropped (e.g. RAVDESS ``calm`` for a 4-class IEMOCAP model: calm is not
neutral unless a label map says so) and counted per corpus label. The rest is predicted
utterance by utterance exactly as ``camser predict`` would, and scored as one fold covering
the whole corpus: ``results.json`` in ``camser cv``'s schema, plus the report, the
confusion figure and ``predictions.csv``.
"""
from __future__ import annotations

import csv
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import yaml
from tqdm.auto import tqdm

from ..corpora import get_reader, scan_corpus
from ..errors import CamserError, ConfigError, first_line
from ..reports.results import build_results, versions, write_json
from ..metrics import compute_metrics
from ..progress import show_bar

ALIASES: list[set[str]] = [
    {"ang", "angry", "anger"},
    {"hap", "happy", "happiness", "joy"},
    {"neu", "neutral"},
    {"sad", "sadness"},
    {"fea", "fear", "fearful"},
    {"dis", "disgust", "disgusted"},
    {"sur", "surprise", "surprised"},
    {"bor", "boredom", "bored"},
    {"exc", "excited"},
    {"fru", "frustrated", "frustration"},
    {"calm"},
]


def read_label_map(path: str | Path | None) -> dict[str, str | None]:
    """A YAML/JSON mapping file → ``{corpus label: model label or None}``."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise CamserError(f"{p}: label map not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise CamserError(f"{p}: not valid YAML/JSON ({first_line(e)})") from None
    if not isinstance(data, dict) or not all(v is None or isinstance(v, str) for v in data.values()):
        raise CamserError(f"{p}: expected a mapping of corpus label → model label (or null to drop)")
    return {str(k): v for k, v in data.items()}


def check_label_map(label_map: dict[str, str | None] | None, model_labels: list[str]) -> dict:
    """The map itself, once every target is a model label (or None)."""
    label_map = dict(label_map or {})
    for src, dst in label_map.items():
        if dst is not None and dst not in model_labels:
            raise ConfigError(f"label map: {src} → {dst}, but the model's labels are {', '.join(model_labels)}")
    return label_map


def map_labels(corpus_labels, model_labels: list[str], corpus: str,
               label_map: dict[str, str | None] | None = None) -> dict[str, str | None]:
    """``{corpus label: model label, or None to drop}`` by the rules in the module docstring."""
    label_map = check_label_map(label_map, model_labels)
    known = set(model_labels)
    merge = get_reader(corpus).DEFAULT_MERGE

    def direct(label: str) -> str | None:
        if label in known:
            return label
        group = next((g for g in ALIASES if label.lower() in g), set())
        hits = [m for m in model_labels if m.lower() in group]
        return hits[0] if len(hits) == 1 else None

    out = {}
    for label in sorted(set(corpus_labels)):
        if label in label_map:
            out[label] = label_map[label]
        elif label in known:
            out[label] = label
        elif label in merge:
            out[label] = direct(merge[label])
        else:
            out[label] = direct(label)
    return out


ADAPT = ("none", "corpus", "speaker")
_ADAPT_TEXT = {"none": "the training speakers' feature statistics (no adaptation)",
               "corpus": "adapted: the evaluated corpus's own feature statistics (transductive, no labels)",
               "speaker": "adapted: each evaluated speaker's own feature statistics (transductive, no labels)"}


def evaluate_model(model_dir: str | Path, corpus: str, root: str | Path, out_dir: str | Path,
                   label_map: str | Path | dict | None = None, log: Callable[[str], None] = print,
                   progress: bool | None = None, device: str = "auto", encoder: str | None = None,
                   batch_size: int | None = None, adapt: str = "none", restrict_labels: bool = False) -> dict:
    """Predict every utterance of ``corpus`` at ``root`` whose label maps to a model label and
    write ``out_dir/results.json`` (+ report, ``predictions.csv``). Returns the results dict,
    whose ``evaluation`` section holds the label mapping, what was dropped, the adaptation and
    whether the decision was restricted.

    ``adapt`` (a model trained with ``features.normalize``): ``corpus`` standardises the
    features by the statistics of the whole evaluated corpus, ``speaker`` by those of each
    speaker's own recordings (no label is read; transductive), ``none`` by the training
    speakers'. ``restrict_labels``: the decision is the most probable of the model labels the
    corpus maps to (an 8-class model scored on a 4-class corpus can't answer outside the 4)."""
    from ..reports.run_report import write_run_report
    from .recognizer import EmotionRecognizer

    started = time.time()
    out = Path(out_dir)
    recognizer = EmotionRecognizer.from_pretrained(model_dir, device=device, encoder=encoder,
                                                   batch_size=batch_size)
    labels = recognizer.labels
    mapping_in = check_label_map(label_map if isinstance(label_map, dict) else read_label_map(label_map),
                                 labels)                  # before the (slower) corpus scan
    scan = scan_corpus(corpus, root, min_duration_s=recognizer.cfg.audio.min_duration_s)
    if not scan.utterances:
        raise CamserError(f"{root}: no usable {corpus} utterances ({len(scan.skipped)} files skipped)")
    mapping = map_labels([u.label for u in scan.utterances], labels, corpus, mapping_in)
    unused = sorted(set(mapping_in) - set(mapping))
    if unused:
        log(f"label map: the corpus has no label {', '.join(unused)}")
    kept = [u for u in scan.utterances if mapping[u.label] is not None]
    dropped = Counter(u.label for u in scan.utterances if mapping[u.label] is None)
    log(f"{len(scan.utterances)} utterances of {corpus}; mapped: "
        + ", ".join(f"{k}→{v}" for k, v in mapping.items() if v is not None)
        + ("; dropped (label unknown to the model): "
           + ", ".join(f"{k} {n}" for k, n in sorted(dropped.items())) if dropped else ""))
    if not kept:
        raise CamserError(f"{root}: no utterance has a label the model knows ({', '.join(labels)}); "
                          "pass --label-map")

    if adapt not in ADAPT:
        raise CamserError(f"--adapt: {adapt!r} is not one of {', '.join(ADAPT)}")
    if adapt != "none" and recognizer.training_normalization is None:
        raise CamserError(f"--adapt {adapt}: {model_dir} was trained with features.normalize=none; "
                          "adaptation needs a model trained with corpus or speaker normalisation")
    groups = ({"": kept} if adapt != "speaker" else
              {s: [u for u in kept if u.speaker == s] for s in sorted({u.speaker for u in kept})})
    rows, failed = [], []
    bar = tqdm(total=len(kept), desc="evaluate", unit="utt", disable=not show_bar(progress))   # None: a tty only
    for group in groups.values():
        if adapt != "none":
            recognizer.adapt([u.path for u in group])
        for u, p in zip(group, recognizer.predict_iter([u.path for u in group], errors="return")):
            bar.update()
            if p.ok:
                rows.append((u, p))
            else:
                failed.append((u.path, p.error))
                log(f"skipped: {p.error}")
    bar.close()
    if not rows:
        raise CamserError(f"{root}: none of the {len(kept)} utterances could be predicted")

    allowed = [lab for lab in labels if lab in set(mapping.values())] if restrict_labels else labels
    y_true = np.array([labels.index(mapping[u.label]) for u, _ in rows])
    y_pred = np.array([labels.index(max(allowed, key=p.probabilities.__getitem__)) for _, p in rows])
    metrics = compute_metrics(y_true, y_pred, labels)
    meta = recognizer.metadata
    speakers = sorted({u.speaker for u, _ in rows})
    entry = {"fold": 1, "repeat": 0, "seed": meta.get("seed"), "test_speakers": speakers, "val_speakers": [],
             "epochs": meta.get("training", {}).get("epochs"),
             "best_epoch": meta.get("training", {}).get("best_epoch"), **metrics}
    protocol = {"scheme": "cross-corpus", "validation": "clean", "folds": [{
        "fold": 1, "name": f"{corpus} (whole corpus)", "test_speakers": speakers, "val_speakers": [],
        "train_speakers": [], "n_train": 0, "n_val": 0, "n_test": len(rows), "optimistic": False,
        "warning": None}]}
    results = build_results(recognizer.cfg.to_dict(), versions(), protocol, labels,
                            [entry], y_true, y_pred)
    results["seeds"] = [meta.get("seed")]
    results["evaluation"] = {
        "model_dir": str(Path(model_dir).resolve()), "corpus": corpus, "root": str(Path(root).resolve()),
        "label_map": mapping, "n_utterances": len(scan.utterances), "n_scored": len(rows),
        "dropped": dict(sorted(dropped.items())), "failed": [{"path": p, "error": e} for p, e in failed],
        "skipped_files": len(scan.skipped), "adapt": adapt,
        "restrict_labels": restrict_labels, "decision_labels": allowed}
    results["normalize"] = {"mode": recognizer.metadata.get("normalize", "none"), "adapt": adapt,
                            "transductive": adapt != "none",
                            "description": _ADAPT_TEXT[adapt]}
    results["wall_s"] = round(time.time() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", results)
    _write_predictions(out / "predictions.csv", rows, mapping, labels, y_pred)
    write_run_report(out, results, [entry])
    return results


def _write_predictions(path: Path, rows, mapping: dict, labels: list[str], y_pred) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "path", "speaker", "label", "true", "pred", *[f"p_{lab}" for lab in labels]])
        for (u, p), pred in zip(rows, y_pred):
            w.writerow([u.id, u.path, u.speaker, u.label, mapping[u.label], labels[pred],
                        *[f"{p.probabilities[lab]:.6f}" for lab in labels]])


def summary_line(results: dict) -> str:
    """``WA … UA … macro-F1 … on N utterances (dropped: …)`` for the CLI."""
    fold, ev = results["folds"][0], results["evaluation"]
    dropped = ", ".join(f"{k} {n}" for k, n in ev["dropped"].items()) or "none"
    how = f"adapt {ev.get('adapt', 'none')}" + (", decision over the mapped labels only"
                                                if ev.get("restrict_labels") else "")
    return (f"WA {100 * fold['wa']:.2f}  UA {100 * fold['ua']:.2f}  macro-F1 {100 * fold['f1_macro']:.2f}  "
            f"on {ev['n_scored']} utterances of {ev['corpus']} (dropped: {dropped}; {how})")


__all__ = ["ALIASES", "evaluate_model", "map_labels", "read_label_map", "summary_line"]
