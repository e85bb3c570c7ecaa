"""What runs a model on a batch of segment inputs: :class:`TorchBackend` (a torch model) or
:class:`OnnxBackend` (a file written by ``camser export-onnx``, run by onnxruntime). The
recognizer only needs ``inputs`` and ``log_probs(batch)`` (the :class:`Backend` protocol)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CamserError, first_line
from ..features.batches import current_name
from ..features.store import KINDS

# what `camser export-onnx` writes (see camser.inference.onnx_export)
FORMAT = "camser-onnx"
FORMAT_VERSION = 1
OUTPUT = "log_probs"
OWNER = "owner"          # the input of a whole-utterance model's graph: which segment is whose


class Backend(Protocol):
    inputs: tuple[str, ...]      # batch keys read: mfcc, spectrogram, ssl or audio
    pools_segments: bool         # takes ``owner`` and answers per utterance (train.unit: utterance)

    def log_probs(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """``{key: (B, ...) float32}`` → ``(B, n_classes)`` float32 log-probabilities; with an
        ``owner`` key (``(B,)`` int64, 0 … K−1: the utterance of each segment) and
        ``pools_segments``, ``(K, n_classes)``: one answer per utterance."""
        ...


class TorchBackend:
    """A trained torch model in eval mode on ``device``; the same forward and log-softmax as
    :func:`camser.training.trainer.predict_segments`, so numbers match cross-validation's."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.inputs = tuple(model.inputs)
        self.pools_segments = bool(model.pools_segments)
        # keys read when the batch has them (``valid``: frame baselines mask padding with it;
        # ``owner``: models that pool an utterance's segments before the head)
        self.optional = tuple(k for k in (*model.optional_inputs, *((OWNER,) if self.pools_segments else ()))
                              if k not in self.inputs)

    @torch.no_grad()
    def log_probs(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        self.model.eval()
        keys = [*self.inputs, *(k for k in self.optional if k in batch)]
        tensors = {k: torch.from_numpy(np.ascontiguousarray(batch[k])).to(self.device) for k in keys}
        logits = self.model(tensors)
        return F.log_softmax(logits.float(), dim=-1).cpu().numpy()


class OnnxBackend:
    """An exported model run by onnxruntime: the :class:`~camser.inference.backend.Backend`
    protocol (``inputs``, ``log_probs(batch)``), so :class:`~camser.inference.recognizer.
    EmotionRecognizer` uses it exactly as it uses the torch model
    (``EmotionRecognizer.from_pretrained(MODEL_DIR, onnx=FILE)``).

    ``device``: cuda uses onnxruntime's CUDA provider when it is installed, else the CPU.
    ``threads``: onnxruntime's intra-op threads (default: torch's thread count)."""

    def __init__(self, path: str | Path, device="cpu", threads: int | None = None):
        ort = _require("onnxruntime")
        self.path = Path(path)
        if not self.path.is_file():
            raise CamserError(f"{self.path}: ONNX file not found")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads is None:
            threads = torch.get_num_threads()
        options.intra_op_num_threads = int(threads)
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as e:
            raise CamserError(f"{self.path}: not a usable ONNX model ({first_line(e)})") from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self._feed_names = tuple(i.name for i in self.session.get_inputs())
        # a graph of a whole-utterance model also takes ``owner``: the (K, N) membership matrix
        self.pools_segments = OWNER in self._feed_names
        self.inputs = tuple(current_name(n) for n in self._feed_names if n != OWNER)   # older camsers' names
        outputs = [o.name for o in self.session.get_outputs()]
        if OUTPUT not in outputs:
            raise CamserError(f"{self.path}: no '{OUTPUT}' output (outputs: {', '.join(outputs)}); "
                              "export it with `camser export-onnx`")
        self.labels = json.loads(self.metadata["camser.labels"]) if "camser.labels" in self.metadata else None
        self.source = self.metadata.get("camser.source")
        self.quantize = self.metadata.get("camser.quantize") or None

    def check(self, md) -> None:
        """Refuse a model folder (:class:`~camser.inference.model_dir.ModelDir`) this file was
        not exported from: it supplies the labels and the feature configuration."""
        meta = self.metadata
        if meta.get("camser.format") != FORMAT:
            raise CamserError(f"{self.path}: not exported by `camser export-onnx` (no camser metadata); "
                              "export it from the model folder")
        if int(meta.get("camser.format_version", 0)) > FORMAT_VERSION:
            raise CamserError(f"{self.path}: written by a newer camser; upgrade camser")
        if self.labels != md.labels:
            raise CamserError(f"{self.path}: exported for labels {', '.join(self.labels or [])}, but "
                              f"{md.path} has {', '.join(md.labels)}")
        created, digest = meta.get("camser.model_created"), meta.get("camser.model_config_sha256")
        if (created and created != str(md.meta.get("created"))) or (digest and digest != _config_digest(md.path)):
            raise CamserError(f"{self.path}: exported from another model folder than {md.path} "
                              f"(model created {created}, this one {md.meta.get('created')}); export it again")
        unknown = [k for k in self.inputs if k not in (*KINDS, "audio", "valid")]
        if unknown:
            raise CamserError(f"{self.path}: unknown input '{unknown[0]}'")

    def log_probs(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        names = [n for n in self._feed_names if n != OWNER]
        feed = {name: np.ascontiguousarray(batch[k], dtype=np.float32) for name, k in zip(names, self.inputs)}
        if self.pools_segments:
            feed[OWNER] = membership(batch.get(OWNER), len(next(iter(feed.values()))))
        try:
            out = self.session.run([OUTPUT], feed)[0]
        except Exception as e:
            shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in feed.items())
            raise CamserError(f"{self.path}: onnxruntime failed on inputs {shapes} ({first_line(e)})") from None
        return np.asarray(out, dtype=np.float32)


def membership(owner: np.ndarray | None, n_segments: int) -> np.ndarray:
    """``owner`` (N,) → the (K, N) float32 0/1 matrix of which segment belongs to which
    utterance; None → every segment its own utterance (the identity)."""
    if owner is None:
        return np.eye(n_segments, dtype=np.float32)
    owner = np.asarray(owner, dtype=np.int64)
    k = int(owner.max()) + 1 if owner.size else 0
    return (owner[None, :] == np.arange(k)[:, None]).astype(np.float32)


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise CamserError(f"ONNX support needs the '{module}' package: pip install 'camser[onnx]'") from None


def _config_digest(model_dir: Path) -> str:
    return hashlib.sha256((Path(model_dir) / "config.json").read_bytes()).hexdigest()
