"""The package's shape: each layer imports only the layers below it, no import cycles, and one
model contract that every registered model keeps (build tiny, train a step or fit, save,
load, same predictions)."""
from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from camser.config import TrainConfig
from camser.models import REGISTRY, SegmentModel, UtteranceModel, build_model, load_pretrained
from camser.training.trainer import make_optimizer, train_step

PACKAGE = Path(__file__).resolve().parents[1] / "camser"

# The drivers sit on top; nothing below them may import them.
DRIVERS = ("camser.training", "camser.bench", "camser.cli", "camser.demo", "camser.serve", "camser.sweep")
BELOW_DRIVERS = ("camser.models", "camser.inference", "camser.reports", "camser.features", "camser.corpora",
                 "camser.metrics", "camser.protocols", "camser.runtime", "camser.fileio", "camser.progress", "camser.audio",
                 "camser.segments", "camser.config", "camser.types", "camser.errors")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every camser module ``name`` imports, at module level or inside a function."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # ``from pkg import module`` imports the module; ``from module import name`` the module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t == "camser" or t.startswith("camser."))
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {t for t in _imports(name, path, modules) if t in modules} for name, path in modules.items()}


def _under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_layers_below_the_drivers_never_import_a_driver():
    bad = sorted(f"{src} imports {dst}" for src, dsts in _graph().items() if _under(src, BELOW_DRIVERS)
                 for dst in dsts if _under(dst, DRIVERS))
    assert not bad, "\n".join(bad)


def test_the_import_walk_sees_imports_inside_functions(tmp_path):
    # the checker itself can fail: a function-level import of a driver is found
    src = tmp_path / "camser" / "models" / "x.py"
    src.parent.mkdir(parents=True)
    src.write_text("def f():\n    from ..training.cv import run_cv\n    from .. import training\n")
    modules = {"camser.models.x": src, "camser.training": src, "camser.training.cv": src}
    assert _imports("camser.models.x", src, modules) == {"camser.training.cv", "camser.training"}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    # a package's __init__ importing its own submodules is not a cycle: edges to a parent
    # package are dropped (importing a submodule runs the parent's __init__ by construction)
    graph = {src: {d for d in dsts if not src.startswith(d + ".")} for src, dsts in _graph().items()}
    assert _cycles(graph) == []
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


# ---------------------------------------------------------------------- the model contract

# A tiny build of every registered model: a new model must add its row here.
TINY_CAMSER = dict(mfcc_frames=12, mfcc_dim=40, lstm_hidden=8, lstm_layers=2, spec_frames=20, spec_bins=16,
                   image_size=(64, 64), alexnet_weights="random", cnn_channels=(4, 8), ssl_dim=16,
                   ssl_frames=10, attn_dim=8, branch_dim=8, head_hidden=8)
TINY = {
    "camser": ({"name": "camser", "preset": "plus", **TINY_CAMSER},
               {"mfcc": (12, 40), "spectrogram": (20, 16), "ssl": (3, 10, 16)}),
    "lstm": ({"name": "lstm", "feature": "mfcc", "window_frames": 6, "hidden": 8, "mlp_hidden": 8}, {"mfcc": (12, 40)}),
    "query2label": ({"name": "query2label", "feature": "ssl", "d_model": 8, "heads": 2, "ffn_dim": 16},
                    {"ssl": (10, 16)}),
    "multimodal": ({"name": "multimodal", "modalities": ["audio"], "fusion": "self", "d_model": 8, "heads": 2,
                    "ffn_dim": 16, "head_hidden": 8}, {"ssl": (10, 16)}),
    "ensemble": ({"name": "ensemble", "n_members": 2, "member": {"name": "lstm", "feature": "mfcc", "window_frames": 6,
                                                                  "hidden": 8, "mlp_hidden": 8}}, {"mfcc": (12, 40)}),
    "mlp": ({"name": "mlp", "features": ["mfcc"], "hidden": 8, "max_iter": 20}, {}),
    "opensmile": ({"name": "opensmile"}, {}),
    "linear": ({"name": "linear", "C": [0.1, 1.0], "inner_folds": 2}, {}),
    "random": ({"name": "random"}, {}),
}


def test_every_registered_model_has_a_tiny_build():
    assert set(REGISTRY) == set(TINY)


def _batch(dims: dict, n: int = 6) -> dict:
    g = torch.Generator().manual_seed(0)
    batch = {k: torch.randn(n, *shape, generator=g) for k, shape in dims.items()}
    batch["valid"] = torch.ones(n)
    return batch


@pytest.mark.parametrize("name", sorted(TINY))
def test_model_contract(name, tmp_path):
    section, dims = TINY[name]
    record = REGISTRY[name]
    assert record.inputs(dict(section)) is not None
    if record.kind == "sklearn":
        model = build_model(section, 4, dims, seed=0)
        assert isinstance(model, UtteranceModel)
        rng = np.random.default_rng(0)
        X, y = rng.normal(size=(40, 5)), np.arange(40) % 4
        model.fit(X, y, groups=np.arange(40) % 4)
        p = model.predict_proba(X)
        assert p.shape == (40, 4) and np.allclose(p.sum(1), 1.0)
        again = build_model(section, 4, dims, seed=0).fit(X, y, groups=np.arange(40) % 4)
        np.testing.assert_array_equal(again.predict_proba(X), p)     # same seed, same answers
        return
    torch.manual_seed(0)
    model = build_model(section, 4, dims)
    assert isinstance(model, SegmentModel) and model.model_name == name
    assert set(model.inputs) <= set(dims) and record.load is not None
    batch = _batch(dims)
    stores = {k: SimpleNamespace(array=batch[k].numpy()) for k in dims}
    model.fit_normalizers(stores, np.arange(6))        # statistics of the training rows
    keys = [*model.inputs, *(k for k in model.optional_inputs if k in batch)]
    feed = {k: batch[k] for k in keys}
    cfg = TrainConfig()
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    step = train_step(model, dict(feed), torch.arange(6) % 4, make_optimizer(model.parameters(), cfg), cfg,
                      torch.device("cpu"))
    assert torch.isfinite(step.loss) and step.speakers_named == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))   # it learned something
    model.eval()
    with torch.no_grad():
        expected = model(feed)
    model.save_pretrained(tmp_path / name)
    loaded = load_pretrained(tmp_path / name).eval()
    assert type(loaded) is type(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(feed), expected)
