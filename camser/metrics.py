"""Classification metrics, segment→utterance pooling and the cross-validation summary.

Plain numpy (no scikit-learn at run time) so the numbers are easy to audit; the tests check them
against scikit-learn. All rates are fractions in [0, 1] as plain Python floats (JSON-ready).

- WA (weighted accuracy) = overall accuracy.
- UA (unweighted accuracy) = mean per-class recall over the classes present in ``y_true``
  (= scikit-learn's ``balanced_accuracy_score``).
- macro-/weighted-F1 follow scikit-learn's ``f1_score`` defaults: classes present in either
  ``y_true`` or ``y_pred``; a class never predicted has precision 0.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _encode(y, labels: Sequence[str], what: str) -> np.ndarray:
    """Label names (or integer indices into ``labels``) → integer indices."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D sequence, got shape {arr.shape}")
    if arr.dtype.kind in "iu":
        if arr.size and (arr.min() < 0 or arr.max() >= len(labels)):
            raise ValueError(f"{what}: index out of range for {len(labels)} labels")
        return arr.astype(np.int64)
    index = {str(name): i for i, name in enumerate(labels)}
    try:
        return np.fromiter((index[str(v)] for v in arr), dtype=np.int64, count=arr.size)
    except KeyError as e:
        raise ValueError(f"{what}: label {e.args[0]!r} is not one of {list(labels)}") from None


def confusion_matrix(y_true, y_pred, labels: Sequence[str]) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class, over all ``labels``."""
    t = _encode(y_true, labels, "y_true")
    p = _encode(y_pred, labels, "y_pred")
    if len(t) != len(p):
        raise ValueError(f"y_true and y_pred differ in length ({len(t)} vs {len(p)})")
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def metrics_from_confusion(cm: np.ndarray, labels: Sequence[str]) -> dict:
    """The metrics of :func:`compute_metrics` from a confusion matrix (e.g. summed over folds)."""
    cm = np.asarray(cm, dtype=np.int64)
    n = int(cm.sum())
    if n == 0:
        raise ValueError("no samples to score")
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1).astype(float)      # true count per class
    predicted = cm.sum(axis=0).astype(float)    # predicted count per class
    in_true = support > 0

    recall = np.divide(tp, support, out=np.zeros_like(tp), where=in_true)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    scored = in_true | (predicted > 0)          # scikit-learn's default label set for F1

    return {
        "wa": float(tp.sum() / n),
        "ua": float(recall[in_true].mean()),
        "f1_macro": float(f1[scored].mean()),
        "f1_weighted": float((f1 * support).sum() / support.sum()),
        # Recall of a class absent from y_true is undefined: None (JSON null), not a fake 0.
        "recall": {str(name): (float(recall[i]) if in_true[i] else None)
                   for i, name in enumerate(labels)},
        # precision of a class never predicted, F1 of a class in neither: None as well
        "precision": {str(name): (float(precision[i]) if predicted[i] > 0 else None)
                      for i, name in enumerate(labels)},
        "f1": {str(name): (float(f1[i]) if scored[i] else None) for i, name in enumerate(labels)},
        "confusion": cm.tolist(),
        "n": n,
    }


def compute_metrics(y_true, y_pred, labels: list[str]) -> dict:
    """``{"wa", "ua", "f1_macro", "f1_weighted", "recall": {label: r}, "confusion", "n"}``.

    ``y_true``/``y_pred`` hold label names or integer indices into ``labels``. ``recall`` has
    every label; a label absent from ``y_true`` gets ``None``.
    """
    return metrics_from_confusion(confusion_matrix(y_true, y_pred, labels), labels)


def pool_segments(utterance_ids: Sequence[str], segment_log_probs) -> tuple[list[str], np.ndarray]:
    """Segment predictions → utterance predictions: the mean of an utterance's segments'
    log-probabilities. Utterances come back in order of first appearance."""
    ids = list(utterance_ids)
    lp = np.asarray(segment_log_probs, dtype=np.float64)
    if lp.ndim != 2 or lp.shape[0] != len(ids):
        raise ValueError(f"expected ({len(ids)}, n_classes) log-probabilities, got shape {lp.shape}")
    first_seen: dict[str, int] = {}
    row = np.fromiter((first_seen.setdefault(u, len(first_seen)) for u in ids),
                      dtype=np.int64, count=len(ids))
    sums = np.zeros((len(first_seen), lp.shape[1]))
    np.add.at(sums, row, lp)
    counts = np.bincount(row, minlength=len(first_seen))
    return list(first_seen), sums / counts[:, None]


def summarize_folds(folds: list[dict], pooled_true, pooled_pred, labels: list[str]) -> dict:
    """Mean and std over the fold entries (one per fold × repeat) plus pooled scores over all
    test utterances of all folds (and repeats, if the caller pooled them)."""
    if not folds:
        raise ValueError("no folds to summarize")
    out: dict[str, float] = {}
    for key, name in (("wa", "wa"), ("ua", "ua"), ("f1_macro", "f1")):
        values = np.array([f[key] for f in folds], dtype=float)
        out[f"{name}_mean"] = float(values.mean())
        # Population std (ddof=0) over the fold×repeat entries: describes the folds we ran
        # rather than estimating a wider population (which ddof=1 would).
        out[f"{name}_std"] = float(values.std(ddof=0))
    pooled = compute_metrics(pooled_true, pooled_pred, labels)
    out["wa_pooled"] = pooled["wa"]
    out["ua_pooled"] = pooled["ua"]
    out["f1_pooled"] = pooled["f1_macro"]
    return out


def per_group_metrics(groups: Sequence[str], y_true, y_pred, labels: list[str]) -> dict:
    """WA and UA per group (e.g. per test speaker): ``{group: {"n", "wa", "ua"}}``, sorted."""
    groups = np.asarray(list(groups))
    t, p = np.asarray(y_true), np.asarray(y_pred)
    out = {}
    for g in sorted(set(groups.tolist())):
        m = groups == g
        r = compute_metrics(t[m], p[m], labels)
        out[str(g)] = {"n": int(m.sum()), "wa": r["wa"], "ua": r["ua"]}
    return out


def seed_summary(folds: list[dict]) -> dict:
    """Per seed, the cross-validation means over its folds; then the mean and std of those
    per-seed means (how much a result moves with the seed, apart from the fold spread):
    ``{"per_seed": {seed: {"wa", "ua", "f1", "n_folds"}}, "wa_mean", "wa_std", ...}``."""
    by_seed: dict[int, list[dict]] = {}
    for f in folds:
        by_seed.setdefault(int(f["seed"]), []).append(f)
    per_seed = {seed: {"wa": float(np.mean([f["wa"] for f in fs])), "ua": float(np.mean([f["ua"] for f in fs])),
                       "f1": float(np.mean([f["f1_macro"] for f in fs])), "n_folds": len(fs)}
                for seed, fs in sorted(by_seed.items())}
    out: dict = {"per_seed": {str(k): v for k, v in per_seed.items()}}
    for name in ("wa", "ua", "f1"):
        values = np.array([v[name] for v in per_seed.values()])
        out[f"{name}_mean"] = float(values.mean())
        out[f"{name}_std"] = float(values.std(ddof=0))
    return out


def unweighted_accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """UA of each row of ``(B, n)`` index arrays (vectorised over resamples)."""
    y_true, y_pred = np.atleast_2d(y_true), np.atleast_2d(y_pred)
    recalls = []
    for c in range(n_classes):
        support = (y_true == c).sum(1)
        hits = ((y_true == c) & (y_pred == c)).sum(1)
        recalls.append(np.where(support > 0, hits / np.maximum(support, 1), np.nan))
    return np.nanmean(np.stack(recalls, 1), axis=1)


def paired_comparison(y_true, pred_a, pred_b, n_classes: int, n_boot: int = 2000, seed: int = 0) -> dict:
    """System A against system B on the same utterances: the UA difference A − B with a 95 %
    percentile bootstrap interval (utterances resampled with replacement) and McNemar's exact
    test on the utterances exactly one of the two gets right (two-sided p)."""
    from scipy.stats import binomtest

    t, a, b = (np.asarray(x, dtype=np.int64) for x in (y_true, pred_a, pred_b))
    if not (len(t) == len(a) == len(b)) or len(t) == 0:
        raise ValueError(f"paired_comparison: expected equal, non-empty lengths, got {len(t)}, {len(a)}, {len(b)}")
    delta = float(unweighted_accuracy(t, a, n_classes)[0] - unweighted_accuracy(t, b, n_classes)[0])
    idx = np.random.default_rng(seed).integers(0, len(t), size=(n_boot, len(t)))
    boot = unweighted_accuracy(t[idx], a[idx], n_classes) - unweighted_accuracy(t[idx], b[idx], n_classes)
    only_a = int(((a == t) & (b != t)).sum())
    only_b = int(((a != t) & (b == t)).sum())
    p = 1.0 if only_a + only_b == 0 else float(binomtest(only_a, only_a + only_b, 0.5).pvalue)
    return {"n": int(len(t)), "delta_ua": delta, "ci_low": float(np.quantile(boot, 0.025)),
            "ci_high": float(np.quantile(boot, 0.975)), "only_a": only_a, "only_b": only_b, "p_mcnemar": p}
