"""``camser export-onnx``: a model folder → an ONNX file, and :class:`OnnxBackend` to run it.

Two graphs can be exported (``source``):

* ``features``: the model as it reads its batch, one graph input per key of
  ``camser.json``'s ``inputs`` (``mfcc`` (B, T, n_mfcc), ``spectrogram`` (B, T, bins), ``ssl``
  (B, T_w, D) or (B, L, T_w, D); a fine-tuned model reads ``audio`` (B, samples) instead of
  ``ssl``, its encoder being part of it). The SSL frames are computed outside, by the torch
  encoder the model folder references.
* ``audio``: for a model trained on frozen SSL frames, the SSL encoder goes inside the graph:
  ``audio`` (B, segment samples, at the model's rate) → the encoder's preprocessing and frames
  → the rounding through ``features.ssl.dtype`` the training cache applied → the model. The
  MFCC and spectrogram are still computed in numpy by the training feature code
  (:class:`~camser.inference.pipeline.FeaturePipeline`) and fed as the ``mfcc``/``spectrogram`` inputs:
  only the encoder moves into the graph, so running the file needs no transformers model.
  Whether an encoder exports depends on its operators (wav2vec2-family encoders do; a failure
  is reported as one line naming the encoder).

Every graph has a dynamic batch axis (dimension 0 of every input and of the output) and one
output, ``log_probs`` (B, n_classes): the log-softmax of the logits, what
:class:`~camser.inference.backend.TorchBackend` returns. Fixed-length axes stay fixed (the
segment length, the number of MFCC / spectrogram frames and bins, the SSL frame shape).
A model trained on whole utterances (``train.unit: utterance``) also takes ``owner``, the
(K, B) 0/1 matrix of which segment belongs to which of K utterances, and answers (K, n_classes):
its segments pooled before the head, as in training.

The export uses ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript; the
TorchScript exporter cannot export the SSL layer normalisation with a dynamic batch), opset 18
by default. Flags the model checks at run time (``fitted`` buffers of the normalisers) are
read once and frozen into the graph; an unfitted model is refused. After writing, the file is
run with onnxruntime on a batch of real features computed from a generated test signal and
compared with PyTorch (the largest absolute difference of probabilities is returned and
logged).

``quantize="int8"`` applies onnxruntime's dynamic quantisation
(:func:`onnxruntime.quantization.quantize_dynamic`, int8 weights of MatMul/Gemm and the
like, activations quantised on the fly): a smaller file and faster matrix products on CPU,
with probabilities that differ from the float model's by a little (not held to 1e-4).

The file records in its metadata (``camser.*`` keys) the labels, inputs, source, the model
folder's creation time and a digest of its ``config.json``: :meth:`OnnxBackend.check` refuses
a model folder the file was not exported from, since the folder still supplies the labels and
the feature configuration (``camser predict/serve MODEL_DIR --onnx FILE``).
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CamserError, first_line
from ..fileio import atomic_write
from .backend import FORMAT, FORMAT_VERSION, OUTPUT, OWNER, OnnxBackend, _config_digest, _require, membership

SOURCES = ("features", "audio")
QUANTIZE = ("int8",)
DEFAULT_OPSET = 18
_EXTERNAL_DATA_BYTES = 1_500_000_000      # above this, weights go to OUT.onnx.data (protobuf's 2 GB limit)


# ---------------------------------------------------------------------- export

def export_onnx(model_dir: str | Path, out: str | Path, *, source: str = "features",
                quantize: str | None = None, encoder: str | None = None, opset: int = DEFAULT_OPSET,
                log: Callable[[str], None] = print) -> dict:
    """Export the model of ``model_dir`` (written by ``camser train``) to the ONNX file ``out``.

    ``source``: ``features`` or ``audio`` (see the module docstring). ``quantize``: None or
    ``"int8"``. ``encoder``: the SSL encoder, if not where the folder says. Returns
    ``{"path", "inputs", "source", "opset", "exporter", "quantize", "max_abs_diff", "seconds"}``,
    ``max_abs_diff`` being the largest absolute difference between onnxruntime's and PyTorch's
    probabilities on a batch of real features."""
    _require("onnx")
    _require("onnxruntime")
    _require("onnxscript")
    from .model_dir import read_model_dir
    from .pipeline import FeaturePipeline
    from .recognizer import EmotionRecognizer

    if source not in SOURCES:
        raise CamserError(f"--from: expected {' or '.join(SOURCES)}, got {source!r}")
    if quantize not in (None, *QUANTIZE):
        raise CamserError(f"--quantize: expected {', '.join(QUANTIZE)}, got {quantize!r}")
    if not isinstance(opset, int) or opset < 17:
        raise CamserError(f"--opset: 17 or later (LayerNormalization), got {opset}")
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise CamserError(f"{out}: the output file should end in .onnx")
    started = time.time()
    md = read_model_dir(model_dir)
    recognizer = EmotionRecognizer.from_pretrained(md.path, encoder=encoder, device="cpu")
    model = recognizer.model
    if not isinstance(model, torch.nn.Module):
        raise CamserError(f"{md.path}: model '{md.meta.get('model_name')}' is not a torch network; "
                          "only those export to ONNX")
    model.eval()
    cfg = recognizer.cfg
    ssl = None
    names = tuple(recognizer.backend.inputs)
    if source == "audio" and "ssl" in names:
        ssl = recognizer.pipeline.encoder
        names = tuple("audio" if k == "ssl" else k for k in names)
        ssl.module.eval()
    elif source == "audio":
        log("the model's SSL encoder is already inside it (fine-tuned): the audio graph is the features graph"
            if "audio" in names else f"the model reads no SSL frames ({', '.join(names)}): "
            "the audio graph is the features graph")
    pipeline = FeaturePipeline(cfg, names, recognizer.pipeline.encoder if "ssl" in names else None)
    names += tuple(k for k in model.optional_inputs if k not in names)   # e.g. valid
    example = example_batch(pipeline)
    if recognizer.unit == "utterance":       # whole utterances: segments pooled before the head
        names += (OWNER,)
        example[OWNER] = np.repeat([0, 1], [1, len(example[names[0]]) - 1])   # two utterances
    graph = _Graph(model, names, ssl, cfg.features.ssl.dtype).eval()

    out.parent.mkdir(parents=True, exist_ok=True)
    target = out if quantize is None else out.with_name(out.stem + ".fp32.tmp.onnx")
    n_bytes = sum(p.numel() * p.element_size() for p in graph.parameters())
    exporter = f"torch.onnx.export(dynamo=True), torch {torch.__version__}"
    log(f"exporting {md.path} from {source} (inputs: {', '.join(names)}; opset {opset}) → {out}")
    n_segments = len(example[names[0]])
    args = tuple(torch.from_numpy(membership(example[k], n_segments) if k == OWNER else example[k])
                 for k in names)
    try:
        with _static_flags(graph), torch.no_grad(), _quiet():
            batch = torch.export.Dim("batch", min=1, max=1 << 16)
            utterances = torch.export.Dim("utterances", min=1, max=1 << 16)
            shapes = tuple({0: utterances, 1: batch} if k == OWNER else {0: batch} for k in names)
            torch.onnx.export(graph, args, str(target), input_names=list(names), output_names=[OUTPUT],
                              opset_version=opset, dynamo=True, external_data=n_bytes > _EXTERNAL_DATA_BYTES,
                              dynamic_shapes=(shapes,), verbose=False)
    except CamserError:
        raise
    except Exception as e:
        what = f"the encoder {cfg.features.ssl.model} inside the graph" if ssl is not None else "the model"
        hint = "; try --from features" if ssl is not None else ""
        raise CamserError(f"{md.path}: could not export {what} to ONNX ({first_line(e)}){hint}") from None

    if quantize is not None:
        try:
            quantize_int8(target, out)
        finally:
            _remove_onnx(target)
    _write_metadata(out, _metadata(md, names, source, quantize, exporter, cfg))

    with torch.no_grad():
        reference = graph(*args).numpy()
    backend = OnnxBackend(out)
    got = backend.log_probs(example)
    diff = float(np.abs(np.exp(got) - np.exp(reference)).max())
    seconds = round(time.time() - started, 1)
    log(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB{', int8' if quantize else ''}); onnxruntime vs "
        f"PyTorch on {len(got)} segments: max |Δp| = {diff:.2e}")
    if quantize is None and diff > 1e-4:
        log(f"warning: onnxruntime's probabilities differ from PyTorch's by up to {diff:.2e}")
    return {"path": str(out), "inputs": list(names), "source": source, "opset": opset, "exporter": exporter,
            "quantize": quantize, "max_abs_diff": diff, "seconds": seconds}


def quantize_int8(src: str | Path, dst: str | Path) -> Path:
    """onnxruntime's dynamic int8 quantisation of the ONNX file ``src`` → ``dst`` (metadata kept).

    The exporter's intermediate shape annotations (``value_info``) are dropped first: the
    quantiser re-infers shapes and trips over some of them (the LSTM's)."""
    onnx = _require("onnx")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    props = {p.key: p.value for p in model.metadata_props}
    del model.graph.value_info[:]
    plain = dst.with_name(dst.stem + ".plain.tmp.onnx")
    try:
        onnx.save(model, str(plain))
        del model
        with _quiet():
            quantize_dynamic(str(plain), str(dst), weight_type=QuantType.QInt8)
    except Exception as e:
        raise CamserError(f"{src}: int8 quantisation failed ({first_line(e)})") from None
    finally:
        _remove_onnx(plain)
    if props:
        _write_metadata(dst, props)
    return dst


def example_batch(pipeline, seconds: float | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Model inputs of a generated test signal (a gliding harmonic tone in a little noise) cut
    into at least two segments, by the training feature code: real features, and a batch of
    more than one so the exported batch axis stays dynamic."""
    sr = pipeline.sample_rate
    n = int(round(seconds * sr)) if seconds else pipeline.segment_samples + pipeline.hop_samples
    t = np.arange(n) / sr
    f0 = 140 + 60 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    y = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.4 * np.sin(2 * np.pi * 3 * t))
    y = 0.1 * y + 0.005 * np.random.default_rng(seed).standard_normal(n)
    windows = list(pipeline.waveform_windows(y.astype(np.float32), sr, "<export example>"))
    return {k: np.concatenate([w.features[k] for w in windows]) for k in windows[0].features}


# ---------------------------------------------------------------------- helpers

class _Graph(torch.nn.Module):
    """What is exported: the model's batch keys as positional inputs → log-probabilities; with
    ``ssl`` (an :class:`~camser.features.ssl.SSLEncoder`) the ``audio`` input is turned into SSL
    frames first, rounded through ``ssl_dtype`` as the training cache stored them."""

    def __init__(self, model, names, ssl=None, ssl_dtype: str = "float32"):
        super().__init__()
        self.model = model
        self.names = tuple(names)
        self.ssl = ssl
        self.encoder = ssl.module if ssl is not None else None      # registered: its weights export
        self.round_to = getattr(torch, ssl_dtype) if ssl_dtype != "float32" else None

    def forward(self, *inputs):
        batch = dict(zip(self.names, inputs))
        if self.ssl is not None:
            frames = self.ssl.forward_torch(batch.pop("audio"))
            if self.round_to is not None:
                frames = frames.to(self.round_to).float()
            batch["ssl"] = frames
        return F.log_softmax(self.model(batch).float(), dim=-1)


@contextlib.contextmanager
def _static_flags(module):
    """Replace 0-d bool buffers (the normalisers' ``fitted`` flags, checked with ``bool()`` in
    forward) by their Python value while exporting: torch.export can't branch on tensor data.
    An unfitted flag is refused (the model would only ever raise)."""
    swapped = []
    try:
        for name, sub in module.named_modules():
            for key, buf in list(sub._buffers.items()):
                if buf is not None and buf.dim() == 0 and buf.dtype == torch.bool:
                    if key == "fitted" and not bool(buf):
                        raise CamserError(f"{name or 'model'}: not fitted; the model can't be exported")
                    del sub._buffers[key]
                    object.__setattr__(sub, key, bool(buf))
                    swapped.append((sub, key, buf))
        yield
    finally:
        for sub, key, buf in swapped:
            object.__delattr__(sub, key)
            sub._buffers[key] = buf


@contextlib.contextmanager
def _quiet():
    """The dynamo exporter prints its progress to stdout and logs warnings (torchvision operators
    it can't register, …), the quantiser logs advice: keep the command's output to ours."""
    import io
    import logging
    import warnings
    from contextlib import redirect_stdout

    loggers = [logging.getLogger(), logging.getLogger("torch.onnx"), logging.getLogger("torch.export")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _metadata(md, names, source: str, quantize: str | None, exporter: str, cfg) -> dict[str, str]:
    from .. import __version__
    return {
        "camser.format": FORMAT, "camser.format_version": str(FORMAT_VERSION),
        "camser.labels": json.dumps(md.labels), "camser.inputs": json.dumps(list(names)),
        "camser.source": source, "camser.quantize": quantize or "",
        "camser.model_name": str(md.meta.get("model_name")),
        "camser.model_created": str(md.meta.get("created")),
        "camser.model_config_sha256": _config_digest(md.path),
        "camser.encoder": json.dumps(md.meta.get("encoder")),
        "camser.ssl_dtype": cfg.features.ssl.dtype, "camser.sample_rate": str(cfg.audio.sample_rate),
        "camser.exporter": exporter, "camser.version": __version__,
    }


def _write_metadata(path: Path, props: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_write(path) as f:
        f.write(model.SerializeToString())


def _remove_onnx(path: Path) -> None:
    Path(path).unlink(missing_ok=True)
    Path(str(path) + ".data").unlink(missing_ok=True)


__all__ = ["OnnxBackend", "SOURCES", "example_batch", "export_onnx", "quantize_int8"]
