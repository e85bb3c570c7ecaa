"""What runs the model on a batch of segment inputs. The recognizer only needs ``inputs``,
``n_classes`` and ``log_probs(batch)``, so another runtime (e.g. an ONNX session over an
exported model) can stand in for :class:`TorchBackend` without touching the rest."""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F


class Backend(Protocol):
    inputs: tuple[str, ...]      # batch keys read: mfcc, spec, ssl or audio

    def log_probs(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """``{key: (B, ...) float32}`` → ``(B, n_classes)`` float32 log-probabilities."""
        ...


class TorchBackend:
    """A trained torch model in eval mode on ``device``; the same forward and log-softmax as
    :func:`camser.training.trainer.predict_segments`, so numbers match cross-validation's."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.inputs = tuple(getattr(model, "inputs", ("mfcc", "spec", "ssl")))
        # keys read when the batch has them (``valid``: frame baselines mask padding with it)
        self.optional = tuple(k for k in getattr(model, "optional_inputs", ()) if k not in self.inputs)

    @torch.no_grad()
    def log_probs(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        self.model.eval()
        keys = [*self.inputs, *(k for k in self.optional if k in batch)]
        tensors = {k: torch.from_numpy(np.ascontiguousarray(batch[k])).to(self.device) for k in keys}
        logits = self.model(tensors)
        return F.log_softmax(logits.float(), dim=-1).cpu().numpy()
