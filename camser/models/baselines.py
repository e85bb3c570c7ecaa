"""Frame-level baselines from the literature, trained like CA-MSER on the cached segment features.

* ``lstm`` — :class:`FrameLSTM`: an LSTM over fixed-length windows of one frame-level feature
  (``model.feature``: ``melspec``, ``spectrogram``, ``mfcc``, ``chroma`` or ``ssl``), its last
  hidden state into a 2-layer MLP. Training sees one random window of ``window_frames`` frames
  per segment per epoch; evaluation pools (mean log-probability) all windows covering the
  segment's real audio, ``eval_hop`` frames apart (the segment → utterance pooling follows).
* ``query2label`` — :class:`Query2Label` (Liu et al., 2021): a transformer decoder whose
  queries are one learnable embedding per class, attending over the frames; one binary logit
  per class (:class:`~camser.models.blocks.GroupWiseLinear`), trained with binary
  cross-entropy on one-hot targets (:meth:`Query2Label.training_loss`); prediction = argmax.

Both are configurations of the same parts: :class:`FrameInput` (standardisation fitted on the
training split for acoustic frames; per-layer layer norm and learned layer weights for SSL
frames; the real-frame mask from the batch's ``valid`` fraction) and the blocks in
:mod:`camser.models.blocks`. ``window_frames`` and the hops count frames of the chosen
feature: 10 ms for melspec/spectrogram/mfcc/chroma (hop 160 at 16 kHz), 20 ms for wav2vec2 /
Whisper frames.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import checked, from_dict
from ..errors import CamserError, ConfigError
from ..features.batches import LEGACY_NAMES, FeatureBatches, current_name
from ..features.store import KINDS
from .base import SegmentModel
from .registry import register_model
from .blocks import (ClassifierHead, GroupWiseLinear, LayerWeights, Standardizer, frame_mask,
                     sinusoidal_positions, take_windows, window_starts)

# model.feature's values: a frame feature's store kind, or (still read) an older name of one
FRAME_FEATURE = {"choices": KINDS, "pattern": "|".join(k for k, v in LEGACY_NAMES.items() if v in KINDS)}


def feature_key(feature: str, field: str = "model.feature") -> str:
    """``model.feature`` → the feature's name (a store kind; ``spec``, an older name, still reads)."""
    if not isinstance(feature, str) or current_name(feature) not in KINDS:
        raise ConfigError(f"{field}: {feature!r} is not one of {', '.join(KINDS)}")
    return current_name(feature)


def config_from(cls, section: dict, n_classes: int, data: dict | None = None):
    """A baseline's ``model:`` mapping (minus ``name``) + sizes read from the data → ``cls``.
    Unknown fields are errors naming the field; a size set in the section that disagrees with
    the data is an error too."""
    s = dict(section or {})
    s.pop("name", None)
    if "n_classes" in s and s["n_classes"] != n_classes:
        raise ConfigError(f"model.n_classes: {s['n_classes']!r}, but the label set has {n_classes} classes")
    data = dict(data or {})
    for k, v in data.items():
        if k in s and s[k] != v:
            raise ConfigError(f"model.{k}: {s[k]!r}, but the features give {v!r}")
    return from_dict(cls, {**s, **data, "n_classes": n_classes}, "model")


def frame_dims(shape, key: str) -> dict:
    """A per-segment feature shape ``(T, D)`` or ``(L, T, D)`` → input_frames/dim/layers."""
    shape = tuple(int(x) for x in shape)
    if len(shape) not in (2, 3):
        raise CamserError(f"feature '{key}' has shape {shape}; expected (frames, dim) or (layers, frames, dim)")
    return {"input_layers": shape[0] if len(shape) == 3 else None, "input_frames": shape[-2],
            "input_dim": shape[-1]}


# ---------------------------------------------------------------- the shared input stage

class FrameInput(nn.Module):
    """One frame-level feature of the batch → normalised frames ``(B, T, D)`` and the real-frame
    mask ``(B, T)`` (from ``batch["valid"]``; all frames when absent).

    Acoustic frames are standardised per dimension with statistics of the training split
    (:meth:`fit`; buffers, so they travel with the weights). SSL frames are layer-normalised
    frame by frame (no parameters, as SUPERB does — hidden states of different depths differ
    in scale by orders of magnitude) and, when every layer is cached ``(B, L, T, D)``, mixed by
    learned softmax layer weights. ``normalize=False`` passes the frames through unchanged."""

    def __init__(self, key: str, dim: int, n_layers: int | None = None, normalize: bool = True):
        super().__init__()
        self.key, self.dim, self.n_layers, self.normalize = key, dim, n_layers, normalize
        if key == "ssl":
            self.layer_weights = LayerWeights(n_layers)
        elif n_layers:
            raise CamserError(f"feature '{key}' has stacked layers; only SSL frames may")
        elif normalize:
            self.standardizer = Standardizer(dim)

    def fit(self, store, rows, valid: np.ndarray | None = None, chunk: int = 256) -> "FrameInput":
        """Fit the standardisation on the training ``rows`` of ``store`` (no-op for SSL frames).
        ``valid`` (per store row, the real-audio fraction) leaves the zero padding's frames out."""
        if self.key == "ssl" or not self.normalize:
            return self
        rows = np.sort(np.asarray(rows))

        def frames():
            for i in range(0, len(rows), chunk):
                block = np.asarray(store.array[rows[i:i + chunk]], dtype=np.float32)
                if valid is None:
                    yield block
                    continue
                t = block.shape[1]
                n = np.clip(np.ceil(valid[rows[i:i + chunk]] * t), 1, t)
                yield block[np.arange(t)[None, :] < n[:, None]]          # (real frames, D)
        self.standardizer.fit(frames())
        return self

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if self.key not in batch:
            raise CamserError(f"the batch has no '{self.key}' (this model reads {self.key})")
        x = batch[self.key].float()
        if self.key == "ssl":
            if self.normalize:
                x = F.layer_norm(x, x.shape[-1:])
            x = self.layer_weights(x)
        elif self.normalize:
            x = self.standardizer(x)
        return x, frame_mask(batch.get("valid"), x.shape[1], x.shape[0], x.device)


class FrameModel(SegmentModel):
    """What the frame-level baselines share: the input stage, the inputs they declare, fitting
    the normalisation on the training rows and the batch builder adding ``valid``."""

    # read when the batch has it (the real-audio fraction of each segment; see frame_mask)
    optional_inputs = ("valid",)

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.key = feature_key(config.feature)
        self.frames = FrameInput(self.key, config.input_dim, config.input_layers, config.normalize)

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.key,)

    def fit_normalizers(self, stores: dict, rows) -> "FrameModel":
        """Fit the input standardisation on the training ``rows``; once :meth:`batch_builder`
        has been made (the cross-validation loop does that first), only real frames count."""
        store = stores.get(self.key)
        if store is None:
            raise CamserError(f"no '{self.key}' features to fit the input normalisation on")
        self.frames.fit(store, rows, getattr(self, "_valid", None))
        return self

    def batch_builder(self, data, sample_rate: int):
        builder = FeatureBatches(data.stores, data.every_utterance, sample_rate, keys=self.inputs)
        self._valid = builder.valid          # per store row: the real-audio fraction
        return builder


# ---------------------------------------------------------------- LSTM on windows

# Every field declares its allowed values (checked by from_dict; tests/test_model_config_fuzz.py).
@dataclass
class LSTMConfig:
    n_classes: int = checked(4, ge=1)
    feature: str = checked("melspec", **FRAME_FEATURE)   # melspec | spectrogram | mfcc | chroma | ssl
    window_frames: int = checked(100, ge=1)    # training: one random window per segment per epoch
    eval_hop: int | None = checked(None, ge=1)   # evaluation windows' spacing; null → window_frames // 2
    hidden: int = checked(128, ge=1)
    layers: int = checked(1, ge=1)
    bidirectional: bool = False
    mlp_hidden: int = checked(128, ge=1)       # the 2-layer MLP: hidden → mlp_hidden → n_classes
    dropout: float = checked(0.2, ge=0, lt=1)
    normalize: bool = True
    # read from the data
    input_dim: int = checked(128, ge=1)
    input_frames: int = checked(300, ge=1)
    input_layers: int | None = checked(None, ge=1)


class FrameLSTM(FrameModel):
    """``lstm``: see the module docstring. ``forward(batch) → (B, n_classes)``: logits in
    training mode (one random window per segment), the mean of the windows' log-probabilities
    in evaluation mode."""

    model_name, config_class = "lstm", LSTMConfig

    def __init__(self, config: LSTMConfig):
        super().__init__(config)
        c = config
        self.lstm = nn.LSTM(c.input_dim, c.hidden, num_layers=c.layers, batch_first=True,
                            bidirectional=c.bidirectional, dropout=c.dropout if c.layers > 1 else 0.0)
        self.head = ClassifierHead(c.hidden * (2 if c.bidirectional else 1), c.n_classes, c.mlp_hidden, 2, c.dropout)

    def encode(self, windows: torch.Tensor) -> torch.Tensor:
        """``(N, W, D)`` → the last layer's final hidden state ``(N, H)`` (both directions)."""
        _, (h, _) = self.lstm(windows)
        return torch.cat([h[-2], h[-1]], -1) if self.config.bidirectional else h[-1]

    def forward(self, batch: dict, return_embeddings: bool = False):
        x, mask = self.frames(batch)
        b, t, _ = x.shape
        w = min(self.config.window_frames, t)
        n_valid = mask.sum(1)
        if self.training:
            span = (n_valid - w).clamp_min(0)
            # drawn on the CPU generator, which the training checkpoints save and restore
            starts = (torch.rand(b).to(x.device) * (span + 1)).long().clamp(max=span)
            h = self.encode(take_windows(x, starts.unsqueeze(1), w)[:, 0])
            logits, emb = self.head(h), h
        else:
            starts, wmask = window_starts(n_valid, w, self.config.eval_hop or max(w // 2, 1), n_frames=t)
            k = starts.shape[1]
            h = self.encode(take_windows(x, starts, w).reshape(b * k, w, -1)).reshape(b, k, -1)
            m = wmask.unsqueeze(-1).to(h.dtype)
            logits = (F.log_softmax(self.head(h).float(), -1) * m).sum(1) / m.sum(1)
            emb = (h * m).sum(1) / m.sum(1)
        return (logits, {"fused": emb}) if return_embeddings else logits


def _frame_inputs(default_feature: str):
    return lambda section: {feature_key(section.get("feature", default_feature))}


def _no_finetune(name: str, encoder) -> None:
    if encoder is not None:
        raise ConfigError(f"train.mode: finetune is implemented for model.name camser only, not {name}")


@register_model("lstm", loader=FrameLSTM.from_pretrained, inputs=_frame_inputs(LSTMConfig.feature), config=LSTMConfig)
def _build_lstm(section: dict, n_classes: int, feature_dims: dict, encoder=None) -> FrameLSTM:
    _no_finetune("lstm", encoder)
    key = feature_key(section.get("feature", LSTMConfig.feature))
    data = frame_dims(feature_dims[key], key) if key in feature_dims else {}
    return FrameLSTM(config_from(LSTMConfig, section, n_classes, data))


# ---------------------------------------------------------------- Query2Label

@dataclass
class Query2LabelConfig:
    n_classes: int = checked(4, ge=1)
    feature: str = checked("melspec", **FRAME_FEATURE)   # melspec | ssl (any frame-level feature works)
    d_model: int = checked(128, ge=1)
    heads: int = checked(4, ge=1)
    encoder_layers: int = checked(1, ge=0)     # self-attention over the frames before the decoder (0: none)
    decoder_layers: int = checked(2, ge=1)
    ffn_dim: int = checked(256, ge=1)
    dropout: float = checked(0.1, ge=0, lt=1)
    positions: bool = True           # add sine/cosine positions to the frames
    normalize: bool = True
    # read from the data
    input_dim: int = checked(128, ge=1)
    input_frames: int = checked(300, ge=1)
    input_layers: int | None = checked(None, ge=1)

    def __post_init__(self):
        if self.d_model % self.heads:
            raise ConfigError(f"model.heads: {self.heads} does not divide model.d_model {self.d_model}")


class Query2Label(FrameModel):
    """``query2label``: class queries → transformer decoder over the projected frames →
    one logit per class. :meth:`training_loss` is BCE on one-hot targets (the training loop
    uses a model's ``training_loss`` when it has one)."""

    model_name, config_class = "query2label", Query2LabelConfig

    def __init__(self, config: Query2LabelConfig):
        super().__init__(config)
        c = config
        self.proj = nn.Linear(c.input_dim, c.d_model)
        self.encoder = None
        if c.encoder_layers:
            layer = nn.TransformerEncoderLayer(c.d_model, c.heads, c.ffn_dim, c.dropout, batch_first=True,
                                               norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, c.encoder_layers, enable_nested_tensor=False)
        self.queries = nn.Parameter(torch.randn(c.n_classes, c.d_model) * 0.02)
        layer = nn.TransformerDecoderLayer(c.d_model, c.heads, c.ffn_dim, c.dropout, batch_first=True,
                                           norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, c.decoder_layers)
        self.norm = nn.LayerNorm(c.d_model)
        self.fc = GroupWiseLinear(c.n_classes, c.d_model)

    def forward(self, batch: dict, return_embeddings: bool = False):
        x, mask = self.frames(batch)
        m = self.proj(x)
        if self.config.positions:
            m = m + sinusoidal_positions(m.shape[1], m.shape[2], m.device)
        pad = ~mask
        if self.encoder is not None:
            m = self.encoder(m, src_key_padding_mask=pad)
        q = self.queries.unsqueeze(0).expand(m.shape[0], -1, -1)
        h = self.norm(self.decoder(q, m, memory_key_padding_mask=pad))       # (B, C, d)
        logits = self.fc(h)
        return (logits, {"fused": h.mean(1)}) if return_embeddings else logits

    def training_loss(self, logits: torch.Tensor, target: torch.Tensor,
                      label_smoothing: float = 0.0) -> torch.Tensor:
        # one binary decision per class query (the paper's loss); label smoothing does not apply
        return F.binary_cross_entropy_with_logits(logits, F.one_hot(target, logits.shape[-1]).to(logits.dtype))


@register_model("query2label", loader=Query2Label.from_pretrained, inputs=_frame_inputs(Query2LabelConfig.feature),
                config=Query2LabelConfig)
def _build_query2label(section: dict, n_classes: int, feature_dims: dict, encoder=None) -> Query2Label:
    _no_finetune("query2label", encoder)
    key = feature_key(section.get("feature", Query2LabelConfig.feature))
    data = frame_dims(feature_dims[key], key) if key in feature_dims else {}
    return Query2Label(config_from(Query2LabelConfig, section, n_classes, data))
