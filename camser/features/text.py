"""Token embeddings of the transcripts from a frozen BERT-style text encoder, cached.

``text_store(utterances, "bert-base-uncased", cache_dir)`` → a one-row-per-utterance
:class:`~camser.features.store.FeatureStore` at ``<cache_dir>/text-<hash>/`` holding each
transcript's last-layer token embeddings, ``(n_utterances, N, D)``: ``[CLS]`` first, then the
word pieces and ``[SEP]``, truncated to ``max_tokens``; ``N`` is the longest tokenised transcript
(at most ``max_tokens``). Rows past a transcript's tokens are exactly zero, which is how readers
find its length (:func:`token_mask`; a real token's embedding is never the zero vector). A
missing transcript (``Utterance.text`` None) is the empty string: ``[CLS] [SEP]``.

The encoder is frozen, so it runs once per corpus rather than once per batch and epoch; the
hash covers the encoder (hub id, or the local folder's resolved path and its files' names,
sizes and times), ``max_tokens``, the storage dtype and every (utterance id, transcript).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..config import config_hash
from ..errors import ConfigError
from ..types import Utterance
from .ssl import _from_hub_or_folder
from .store import FORMAT_VERSION, FeatureStore, _model_fingerprint, corpus_fingerprint
from .utterance import extract_utterance_store

FIELD = "model.text_encoder"


class TextEncoder:
    """A Hugging Face tokenizer + encoder (``model`` is a hub id or a local folder), frozen."""

    def __init__(self, model: str, device: str | torch.device = "cpu", max_tokens: int = 128,
                 field: str = FIELD):
        from transformers import AutoModel, AutoTokenizer

        self.model_name = model
        self.device = torch.device(device)
        self.max_tokens = int(max_tokens)
        self.tokenizer = _from_hub_or_folder(AutoTokenizer.from_pretrained, model, "tokenizer", field)
        self.module = _from_hub_or_folder(AutoModel.from_pretrained, model, "model", field)
        self.module.to(self.device).eval()
        self.hidden_size = int(self.module.config.hidden_size)

    def _tokenize(self, texts: list[str], **kwargs):
        return self.tokenizer(list(texts), truncation=True, max_length=self.max_tokens, **kwargs)

    def lengths(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, special tokens included, after truncation."""
        return [len(ids) for ids in self._tokenize(list(texts))["input_ids"]]

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], n_tokens: int | None = None) -> np.ndarray:
        """float32 ``(B, n_tokens, D)`` last-layer embeddings, zero past each text's tokens."""
        enc = self._tokenize(list(texts), padding=True, return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        hidden = self.module(**enc).last_hidden_state.float()
        hidden = hidden * enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out = hidden.cpu().numpy()
        n = n_tokens or out.shape[1]
        if out.shape[1] < n:
            out = np.pad(out, ((0, 0), (0, n - out.shape[1]), (0, 0)))
        return np.ascontiguousarray(out[:, :n])


def transcript(u: Utterance) -> str:
    return u.text if u.text else ""


def token_mask(embeddings: torch.Tensor) -> torch.Tensor:
    """``(B, N, D)`` cached token embeddings → ``(B, N)`` True where a real token is."""
    return embeddings.abs().sum(-1) > 0


def text_config(model: str, max_tokens: int, dtype: str) -> dict:
    local = Path(os.path.expanduser(model))
    return {"format_version": FORMAT_VERSION, "kind": "text",
            "model": str(local.resolve()) if local.is_dir() else model,
            "model_files": _model_fingerprint(model), "max_tokens": int(max_tokens), "dtype": dtype}


def text_store(utterances: Sequence[Utterance], model: str, cache_dir: str | Path, max_tokens: int = 128,
               dtype: str = "float16", device: str | torch.device = "cpu", batch_size: int = 32,
               progress: bool = True, sample_rate: int = 16_000) -> FeatureStore:
    """The (cached) token embeddings of every utterance's transcript (see the module docstring)."""
    if dtype not in ("float16", "float32"):
        raise ConfigError(f"model.text_dtype: expected float16 or float32, got {dtype!r}")
    if not isinstance(max_tokens, int) or max_tokens < 2:
        raise ConfigError(f"model.max_text_tokens: expected an integer ≥ 2, got {max_tokens!r}")
    utterances = list(utterances)
    config = text_config(model, max_tokens, dtype)
    h = config_hash(config, corpus_fingerprint(utterances), [[u.id, transcript(u)] for u in utterances])
    path = Path(cache_dir) / f"text-{h}"
    if FeatureStore.complete_at(path):
        return FeatureStore.open(path)
    encoder = TextEncoder(model, device=device, max_tokens=max_tokens)
    n_tokens = max(encoder.lengths([transcript(u) for u in utterances]))

    def compute(batch: list[Utterance]) -> np.ndarray:
        return encoder.encode([transcript(u) for u in batch], n_tokens)

    return extract_utterance_store(path, "text", utterances, sample_rate, (n_tokens, encoder.hidden_size),
                                   np.dtype(dtype), compute, config, h, batch_size=batch_size,
                                   progress=progress,
                                   extra={"encoder": {"model": model, "hidden_size": encoder.hidden_size}})
