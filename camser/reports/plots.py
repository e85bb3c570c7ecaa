"""Figures as PNG files: confusion matrix, t-SNE of embeddings, training curves.

Uses matplotlib's Agg backend through the object API (no pyplot state), so it works headless
and from worker threads.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def normalize_rows(confusion) -> np.ndarray:
    """Row-normalised confusion (each true class sums to 1; an empty row stays 0)."""
    cm = np.asarray(confusion, dtype=float)
    sums = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, sums, out=np.zeros_like(cm), where=sums > 0)


def plot_confusion(confusion, labels, path, normalize: bool = True, title: str | None = None) -> Path:
    """Confusion matrix (rows = true, columns = predicted); with ``normalize`` the cells are
    row percentages (per-class recall on the diagonal), else counts."""
    cm = np.asarray(confusion, dtype=float)
    values = normalize_rows(cm) * 100 if normalize else cm
    k = len(labels)
    fig = Figure(figsize=(1.0 + 0.8 * k, 0.8 + 0.7 * k))
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap="Blues", vmin=0, vmax=100 if normalize else max(values.max(), 1))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="% of true class" if normalize else "count")
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    high = values.max() * 0.6 if values.size else 0
    for i in range(k):
        for j in range(k):
            text = f"{values[i, j]:.1f}" if normalize else f"{int(values[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if values[i, j] > high else "black")
    return _save(fig, path)


def tsne_embed(vectors, seed: int = 0, max_points: int | None = 3000) -> tuple[np.ndarray, np.ndarray]:
    """2-D t-SNE of ``vectors`` (n, d); returns (points, indices of the rows used).

    Perplexity adapts to small n (it must stay below n); ``init="pca"`` and ``random_state``
    make it deterministic for a seed. Above ``max_points`` rows a seeded random subset is used
    (t-SNE is quadratic-ish and a full IEMOCAP fold would take minutes on a few cores)."""
    from sklearn.manifold import TSNE

    x = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1)
    idx = np.arange(len(x))
    if max_points and len(x) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(len(x), max_points, replace=False))
        x = x[idx]
    if x.shape[1] < 2:   # PCA initialisation needs two dimensions
        x = np.pad(x, ((0, 0), (0, 2 - x.shape[1])))
    n = len(x)
    if n < 4:   # too few points for t-SNE: show the first two coordinates
        return x[:, :2].copy(), idx
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
    perplexity = min(perplexity, n - 1.0)
    pts = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
               learning_rate="auto").fit_transform(x)
    return pts, idx


def plot_tsne(vectors, labels, path, title: str = "t-SNE", seed: int = 0,
              max_points: int | None = 3000) -> Path:
    """Scatter of a 2-D t-SNE of ``vectors`` coloured by ``labels`` (one per row)."""
    labels = np.asarray([str(x) for x in labels])
    if len(labels) != len(vectors):
        raise ValueError(f"{len(vectors)} vectors but {len(labels)} labels")
    pts, idx = tsne_embed(vectors, seed=seed, max_points=max_points)
    labels = labels[idx]
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["tab10"]
    for i, name in enumerate(dict.fromkeys(sorted(labels))):
        m = labels == name
        ax.scatter(pts[m, 0], pts[m, 1], s=8, alpha=0.75, color=cmap(i % 10), label=name)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(markerscale=2, fontsize=8, loc="best")
    return _save(fig, path)


def plot_curves(history: list[dict], path, best_epoch: int | None = None,
                title: str | None = None) -> Path:
    """Loss (train/val) and validation WA/UA per epoch; keys missing from ``history`` entries
    are skipped. ``best_epoch`` draws a marker at the chosen checkpoint."""
    fig = Figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]

    def series(ax, key, label):
        pts = [(e, h[key]) for e, h in zip(epochs, history) if h.get(key) is not None]
        if pts:
            xs, ys = zip(*pts)
            ys = [100 * y for y in ys] if key.startswith("val_") and key != "val_loss" else ys
            ax.plot(xs, ys, marker=".", label=label)

    series(ax_loss, "train_loss", "train loss")
    series(ax_loss, "val_loss", "validation loss")
    series(ax_acc, "val_wa", "validation WA")
    series(ax_acc, "val_ua", "validation UA")
    ax_loss.set_ylabel("loss")
    ax_acc.set_ylabel("%")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label="best epoch")
        if ax.lines:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_layer_weights(weights, path, title: str = "Learned SSL layer weights") -> Path:
    """Bars of the softmax layer weights (rows of ``weights``: folds × seeds) with their mean
    and the spread over rows; layer 0 is the encoder's input embeddings."""
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    fig = Figure(figsize=(1.5 + 0.5 * w.shape[1], 3.2))
    ax = fig.add_subplot()
    ax.bar(np.arange(w.shape[1]), w.mean(0), yerr=w.std(0) if len(w) > 1 else None, color="#4c72b0", capsize=3)
    ax.axhline(1.0 / w.shape[1], color="grey", linestyle="--", linewidth=1, label="uniform")
    ax.set_xlabel("hidden state (0 = embeddings)")
    ax.set_ylabel("weight")
    ax.set_xticks(np.arange(w.shape[1]))
    ax.legend(fontsize=8)
    ax.set_title(f"{title} (mean ± std over {len(w)} fold runs)", fontsize=9)
    return _save(fig, path)


def plot_frame_weights(attention, labels, names, path, title: str = "Co-attention frame weights") -> Path:
    """Mean co-attention weight at each frame position, one line per true class (``attention``:
    segments × frames; ``labels``: class index per segment; ``names``: class names)."""
    a = np.asarray(attention, dtype=float)
    lab = np.asarray(labels)
    fig = Figure(figsize=(7, 3.2))
    ax = fig.add_subplot()
    x = np.arange(a.shape[1])
    for i, name in enumerate(names):
        if (lab == i).any():
            ax.plot(x, a[lab == i].mean(0), label=name, linewidth=1)
    ax.set_xlabel("SSL frame of the segment")
    ax.set_ylabel("mean weight")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=4)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)
