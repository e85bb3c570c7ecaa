"""The human-readable report of a run: ``report.md`` and a self-contained ``report.html``.

Both are rendered from one list of blocks so they always say the same thing. Markdown links the
figures relatively (the run folder can be moved); HTML embeds them as base64 (one file to mail).
"""
from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import weight_text
from ..fileio import write_text
from ..metrics import metrics_from_confusion
from ..protocols import PAPER_WARNING
from .plots import normalize_rows
from .tables import mean_std, pct

# Figure-key prefix → report section, in report order.
FIGURE_SECTIONS = (("confusion", "Confusion matrix"),
                   ("tsne", "t-SNE of the learned representations"),
                   ("weights", "What the model weights: SSL layers and frames"),
                   ("curves", "Training curves"))


# ------------------------------------------------------------------ blocks

@dataclass
class _H:
    level: int
    text: str


@dataclass
class _P:
    text: str


@dataclass
class _Warn:
    text: str


@dataclass
class _List:
    items: list[str]


@dataclass
class _Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class _Img:
    title: str
    path: Path


def _md(blocks, run_dir: Path) -> str:
    out = []
    for b in blocks:
        if isinstance(b, _H):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, _P):
            out.append(b.text)
        elif isinstance(b, _Warn):
            out.append(f"> **Warning:** {b.text}")
        elif isinstance(b, _List):
            out.append("\n".join(f"- {x}" for x in b.items))
        elif isinstance(b, _Table):
            cell = lambda x: str(x).replace("|", "\\|")  # noqa: E731
            lines = ["| " + " | ".join(map(cell, b.header)) + " |",
                     "|" + "---|" * len(b.header)]
            lines += ["| " + " | ".join(map(cell, r)) + " |" for r in b.rows]
            out.append("\n".join(lines))
        elif isinstance(b, _Img):
            rel = os.path.relpath(b.path, run_dir).replace(os.sep, "/")
            out.append(f"**{b.title}**\n\n![{b.title}]({rel})")
    return "\n\n".join(out) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.warning{background:#fff4e5;border-left:4px solid #e69500;padding:.6em 1em}
figure{display:inline-block;margin:.5em 1em .5em 0}img{max-width:100%}figcaption{font-weight:600}"""


def _html(blocks, title: str) -> str:
    e = html.escape
    out = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
           f"<style>{_CSS}</style></head><body>"]
    for b in blocks:
        if isinstance(b, _H):
            out.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, _P):
            out.append(f"<p>{e(b.text)}</p>")
        elif isinstance(b, _Warn):
            out.append(f"<p class=\"warning\"><strong>Warning:</strong> {e(b.text)}</p>")
        elif isinstance(b, _List):
            out.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in b.items) + "</ul>")
        elif isinstance(b, _Table):
            head = "".join(f"<th>{e(str(h))}</th>" for h in b.header)
            body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>"
                           for r in b.rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(b, _Img):
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            out.append(f"<figure><figcaption>{e(b.title)}</figcaption>"
                       f"<img alt=\"{e(b.title)}\" src=\"data:image/png;base64,{data}\"></figure>")
    out.append("</body></html>\n")
    return "\n".join(out)


# ------------------------------------------------------------------ content

def _config_items(config: dict) -> list[str]:
    """A few lines that identify the experiment; the full config is in results.json."""
    c = config or {}
    g = lambda *keys: _dig(c, keys)  # noqa: E731
    items = []
    for label, value in (
        ("corpus", g("corpus", "name")),
        ("labels", g("labels", "include")),
        ("model", g("model", "name")),
        ("features", g("features", "kinds")),
        ("SSL encoder", g("features", "ssl", "model")),
        ("segments", None if g("segments", "length_s") is None else f"{g('segments', 'length_s')} s"),
        ("training", _join(("mode", g("train", "mode")), ("lr", g("train", "lr")),
                           ("batch", g("train", "batch_size")), ("max epochs", g("train", "max_epochs")),
                           ("seeds", g("train", "seeds")))),
    ):
        if value not in (None, "", []):
            items.append(f"{label}: {_fmt(value)}")
    return items


def _dig(d, keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _fmt(v) -> str:
    return ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def _join(*pairs) -> str:
    return "; ".join(f"{k} {_fmt(v)}" for k, v in pairs if v is not None)


def _num(v) -> str:
    return "–" if v is None else str(v)


def _blocks(results: dict, figures: dict, run_dir: Path) -> tuple[str, list]:
    config = results.get("config") or {}
    protocol = results.get("protocol") or {}
    labels = list(results.get("labels") or [])
    folds = list(results.get("folds") or [])
    summary = results.get("summary") or {}
    title = f"camser report — {config.get('name', run_dir.name)}"

    b: list = [_H(1, title)]
    items = _config_items(config)
    if items:
        b.append(_List(items))

    b.append(_H(2, "Protocol"))
    validation = protocol.get("validation", "clean")
    b.append(_List([f"scheme: {protocol.get('scheme')}",
                    f"validation: {validation}" + {
                        "paper": " (validation = test fold)",
                        "none": " (no validation speakers: every training speaker trains, the last "
                                "epoch is kept)"}.get(validation, " (validation speakers held out from the "
                                                                  "training side)")]
                   + [f"{k}: {_fmt(v)}" for k, v in protocol.items()
                      if k not in ("scheme", "validation", "warning", "optimistic", "folds")
                      and not isinstance(v, dict)]))
    if validation == "paper" or protocol.get("optimistic"):
        b.append(_Warn(protocol.get("warning") or PAPER_WARNING))
    norm = results.get("normalize") or {}
    if norm:
        b.append(_P(f"Feature normalisation: {norm.get('description', norm.get('mode'))}."))
        if norm.get("transductive"):
            b.append(_Warn("these figures are transductive: each test speaker's features were "
                           "standardised with statistics of that speaker's own (unlabelled) audio. "
                           "Compare them only with other speaker-normalised figures."))
    split_rows = [f for f in protocol.get("folds") or [] if isinstance(f, dict)]
    if split_rows:   # Fold.to_dict() entries: who is tested / validates on each fold
        b.append(_Table(["fold", "name", "test speakers", "validation speakers", "train", "val", "test"],
                        [[_num(f.get("fold")), _num(f.get("name")), _fmt(f.get("test_speakers") or []),
                          _fmt(f.get("val_speakers") or []), _num(f.get("n_train")),
                          _num(f.get("n_val")), _num(f.get("n_test"))] for f in split_rows]))

    b.append(_H(2, "Summary"))
    n_entries = len(folds)
    repeats = sorted({f.get("repeat") for f in folds if f.get("repeat") is not None})
    b.append(_P(f"Percentages. Mean ± population std over {n_entries} fold"
                f"{'×repeat' if len(repeats) > 1 else ''} entries; pooled = over all test "
                f"utterances of all folds."))
    b.append(_Table(["metric", "mean ± std", "pooled"], [
        ["WA (accuracy)", mean_std(summary.get("wa_mean"), summary.get("wa_std")), pct(summary.get("wa_pooled"))],
        ["UA (mean class recall)", mean_std(summary.get("ua_mean"), summary.get("ua_std")), pct(summary.get("ua_pooled"))],
        ["macro-F1", mean_std(summary.get("f1_mean"), summary.get("f1_std")), pct(summary.get("f1_pooled"))],
    ]))
    plain = summary.get("originals_only")
    if plain:
        b.append(_P("Test-time augmentation: each test utterance was scored on its original audio and "
                    "its augmented copies, probabilities averaged. The original audio alone: UA "
                    f"{mean_std(plain.get('ua_mean'), plain.get('ua_std'))}, WA "
                    f"{mean_std(plain.get('wa_mean'), plain.get('wa_std'))}."))
    voters = summary.get("voters")
    if voters:
        weight = weight_text(((results.get("config") or {}).get("vote") or {}).get("weight", 0.5))
        chosen = summary.get("vote_weight_chosen")
        if chosen:
            weight += " (chosen: " + ", ".join(f"{w} in {n} runs" for w, n in chosen.items()) + ")"
        n_other = len(voters) - 1
        others = "a second model's" if n_other == 1 else f"{n_other} other models' (each)"
        b.append(_P(f"A vote (soft voting): the network's class probabilities averaged with {others}, "
                    f"fitted on the same training speakers ({weight}; the network's 1 − weight, "
                    "normalised). Each alone: "
                    + "; ".join(f"{name} UA {mean_std(v.get('ua_mean'), v.get('ua_std'))}, WA "
                                f"{mean_std(v.get('wa_mean'), v.get('wa_std'))}" for name, v in voters.items())
                    + "."))

    per_seed = (results.get("seed_summary") or {}).get("per_seed") or {}
    if len(per_seed) > 1:
        ss = results["seed_summary"]
        b.append(_P("Per seed, the mean over its folds; then the mean ± std of those seed means "
                    "(how much the result moves with the seed alone)."))
        b.append(_Table(["seed", "folds", "WA %", "UA %", "macro-F1 %"],
                        [[seed, _num(v["n_folds"]), pct(v["wa"]), pct(v["ua"]), pct(v["f1"])]
                         for seed, v in per_seed.items()]
                        + [["across seeds", "", mean_std(ss["wa_mean"], ss["wa_std"]),
                            mean_std(ss["ua_mean"], ss["ua_std"]), mean_std(ss["f1_mean"], ss["f1_std"])]]))

    if folds:
        b.append(_H(2, "Folds"))
        b.append(_Table(
            ["fold", "repeat", "seed", "test speakers", "n", "WA %", "UA %", "F1 %", "epochs", "best epoch"],
            [[_num(f.get("fold")), _num(f.get("repeat")), _num(f.get("seed")),
              _fmt(f.get("test_speakers") or []), _num(f.get("n_test")), pct(f.get("wa")),
              pct(f.get("ua")), pct(f.get("f1_macro")), _num(f.get("epochs")),
              _num(f.get("best_epoch"))] for f in folds]))

    pooled_cm = _pooled_confusion(folds, len(labels))
    if labels and (pooled_cm is not None or any(f.get("recall") for f in folds)):
        b.append(_H(2, "Per class"))
        pooled = metrics_from_confusion(pooled_cm, labels) if pooled_cm is not None else {}
        rows = []
        for name in labels:
            per_fold = [f["recall"][name] for f in folds
                        if f.get("recall") and f["recall"].get(name) is not None]
            ms = (mean_std(float(np.mean(per_fold)), float(np.std(per_fold))) if per_fold else "–")
            rows.append([name, ms, *(pct(pooled.get(k, {}).get(name)) for k in ("recall", "precision", "f1"))])
        b.append(_Table(["class", "recall % mean ± std over folds", "pooled recall %", "pooled precision %",
                         "pooled F1 %"], rows))

    speakers: dict[str, list] = {}
    for f in folds:
        for spk, m in (f.get("per_speaker") or {}).items():
            speakers.setdefault(spk, []).append(m)
    if speakers:
        b.append(_H(2, "Per speaker"))
        b.append(_P("Each test speaker's UA and WA (mean over the seeds that tested it), worst first."))
        rows = sorted(((spk, float(np.mean([m["ua"] for m in ms])), float(np.mean([m["wa"] for m in ms])),
                        ms[0]["n"]) for spk, ms in speakers.items()), key=lambda r: r[1])
        b.append(_Table(["speaker", "UA %", "WA %", "utterances"],
                        [[spk, pct(ua), pct(wa), _num(n)] for spk, ua, wa, n in rows]))
    weights = [f["layer_weights"] for f in folds if f.get("layer_weights")]
    if weights and len({len(w) for w in weights}) == 1:
        w = np.asarray(weights)
        b.append(_H(2, "Learned SSL layer weights"))
        b.append(_P("Softmax weight of each cached hidden state (0 = the encoder's input embeddings), "
                    f"mean ± std over {len(w)} fold runs; uniform = {1 / w.shape[1]:.3f}."))
        b.append(_Table(["hidden state", "weight"],
                        [[str(i), f"{m:.3f} ± {sd:.3f}"] for i, (m, sd) in enumerate(zip(w.mean(0), w.std(0)))]))

    sections = _figure_sections(figures)
    confusion_figs = sections.pop("Confusion matrix", [])
    if confusion_figs or pooled_cm is not None:
        b.append(_H(2, "Confusion matrix"))
        b.extend(confusion_figs)
        if pooled_cm is not None:
            b.append(_P("Pooled over all folds, row-normalised (% of each true class; "
                        "rows = true, columns = predicted):"))
            norm = normalize_rows(pooled_cm) * 100
            b.append(_Table(["true \\ predicted"] + labels,
                            [[name] + [f"{v:.1f}" for v in norm[i]] for i, name in enumerate(labels)]))
    for section, imgs in sections.items():
        b.append(_H(2, section))
        b.extend(imgs)

    versions = results.get("versions") or {}
    if versions:
        b.append(_H(2, "Versions"))
        b.append(_List([f"{k}: {v}" for k, v in versions.items() if v is not None]))
    return title, b


def _pooled_confusion(folds, k: int):
    """Sum of the folds' confusion matrices = the confusion over all test utterances."""
    mats = [np.asarray(f["confusion"]) for f in folds if f.get("confusion") is not None]
    mats = [m for m in mats if m.shape == (k, k)]
    if not mats or k == 0:
        return None
    total = np.sum(mats, axis=0)
    return total if total.sum() > 0 else None


def _figure_sections(figures: dict) -> dict[str, list[_Img]]:
    sections: dict[str, list[_Img]] = {title: [] for _, title in FIGURE_SECTIONS}
    sections["Other figures"] = []
    for key, path in (figures or {}).items():
        if path is None or not Path(path).is_file():
            continue   # a figure that wasn't made (e.g. output.tsne: false) is just left out
        section = next((t for prefix, t in FIGURE_SECTIONS if str(key).startswith(prefix)),
                       "Other figures")
        sections[section].append(_Img(str(key).replace("_", " "), Path(path)))
    return {k: v for k, v in sections.items() if v}


def write_report(run_dir, results: dict, figures: dict) -> tuple[Path, Path]:
    """Write ``run_dir/report.md`` and ``run_dir/report.html``; returns their paths.

    ``figures`` maps a key to a PNG path; the key's prefix picks the section (``confusion…``,
    ``tsne…``, ``curves…``, anything else under "Other figures") and the key, with ``_`` as
    spaces, is the caption (e.g. ``tsne_weighted_SSL``, ``tsne_fused``, ``curves_fold1``)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    title, blocks = _blocks(results, figures, run_dir)
    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    _write_text(md_path, _md(blocks, run_dir))
    _write_text(html_path, _html(blocks, title))
    return md_path, html_path


def _write_text(path: Path, text: str) -> None:
    write_text(path, text)
