"""The figures of a cross-validation run (pooled confusion, the paper's t-SNE plots of the
weighted SSL (the paper's W2E) and fused vectors, training curves) and its Markdown/HTML report."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..features.batches import current_name

from .plots import plot_confusion, plot_curves, plot_frame_weights, plot_layer_weights, plot_tsne
from .report import write_report


def write_run_report(out: Path, results: dict, entries: list[dict]) -> tuple[Path, Path]:
    figs_dir = out / "figures"
    figs_dir.mkdir(parents=True, exist_ok=True)
    labels = results["labels"]
    figures = {}
    pooled = np.sum([np.asarray(e["confusion"]) for e in entries], axis=0)
    figures["confusion_pooled_over_folds"] = plot_confusion(pooled, labels, figs_dir / "confusion.png")

    # t-SNE of the first fold's test segments (as in the paper's Fig. 2)
    if results["config"].get("output", {}).get("tsne", True) and entries:
        first = entries[0]
        emb_file = out / "folds" / f"fold{first['fold']:02d}_seed{first['seed']}" / "embeddings.npz"
        if emb_file.exists():
            emb = np.load(emb_file)
            emb = {current_name(k): emb[k] for k in emb.files}          # older runs: "w2e"
            names = [labels[i] for i in emb["labels"]]
            for key, title in (("ssl", "weighted SSL"), ("fused", "fused features")):
                if key in emb and len(emb[key]) >= 5:
                    figures[f"tsne_{title.replace(' ', '_')}"] = plot_tsne(
                        emb[key], names, figs_dir / f"tsne_{key}.png",
                        title=f"t-SNE of the {title} (fold {first['fold']} test segments)", seed=0)
            if "attention" in emb and emb["attention"].ndim == 2 and len(emb["attention"]):
                figures["weights_frames"] = plot_frame_weights(
                    emb["attention"], emb["labels"], labels, figs_dir / "frame_weights.png",
                    title=f"Mean co-attention frame weight per true class (fold {first['fold']} test segments)")
    layer_weights = [e["layer_weights"] for e in entries if e.get("layer_weights")]
    if layer_weights and len({len(w) for w in layer_weights}) == 1:
        figures["weights_layers"] = plot_layer_weights(layer_weights, figs_dir / "layer_weights.png")
    if results["config"].get("output", {}).get("curves", True):
        for e in entries:
            if e.get("history"):
                tag = f"fold{e['fold']:02d}_seed{e['seed']}"
                figures[f"curves_{tag}"] = plot_curves(e["history"], figs_dir / f"curves_{tag}.png",
                                                       best_epoch=e.get("best_epoch"))
    return write_report(out, results, figures)
