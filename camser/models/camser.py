"""CA-MSER (Zou et al., ICASSP 2022): co-attention based multi-level acoustic fusion.

Three branches, each ending in a ``branch_dim`` (128) vector:

* MFCC (B, 300, 40) → per-frame L2 norm → BiLSTM → 128                       (``mfcc``)
* spectrogram (B, 300, 200) dB → 3-channel image → AlexNet → 128             (``spec``)
* SSL frames (B, T_w, D_w) [or (B, L, T_w, D_w) → layer weights] → frame
  weights from the co-attention → weighted sum → 128                          (``w2e``)

The co-attention query is concat(mfcc vector, spectrogram vector): the utterance-level views
decide which SSL frames matter. Head: concat → 128 → 128 → n_classes (dropout 0.1, ReLU).

Every ablation row of the paper's Table 2 is a configuration of these same parts
(:data:`ABLATIONS`); :data:`PRESETS` holds the published ("paper") and a CPU-practical ("cpu")
configuration.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import checked, from_dict
from ..errors import CamserError, ConfigError
from ..features.batches import FeatureBatches
from .base import SegmentModel
from .registry import register_model
from .blocks import (ALEXNET_IMAGENET_URL, AlexNetSpectrogramEncoder, BatchScaler, BiLSTMEncoder, Standardizer,
                     CoAttention, LayerWeights, SmallSpecCNN, frame_mask, load_alexnet_imagenet, mean_pool,
                     pool_by_owner, stats_pool)


# Every field declares its allowed values (checked by from_dict when a model section or a
# config.json is read; tests/test_model_config_fuzz.py checks that each one does).
@dataclass
class CAMSERConfig:
    n_classes: int = checked(4, ge=1)
    # MFCC branch
    mfcc_dim: int = checked(40, ge=1)
    mfcc_frames: int = checked(300, ge=1)      # only binding for mfcc_pool=flatten
    mfcc_time_pool: int = checked(1, ge=1)     # average-pool MFCC frames by this factor before the LSTM (fewer
                                               # sequential steps)
    # l2 (published: each frame L2-normalised) | standard (fitted on train) | none
    mfcc_norm: str = checked("l2", choices=("l2", "standard", "none"))
    lstm_hidden: int = checked(256, ge=1)      # per direction
    lstm_layers: int = checked(2, ge=1)
    lstm_dropout: float = checked(0.5, ge=0, lt=1)   # between LSTM layers (lstm_layers > 1)
    mfcc_pool: str = checked("flatten", choices=("flatten", "mean"))   # flatten (published: 300×512 → 128) | mean
    # spectrogram branch
    spec_encoder: str = checked("alexnet", choices=("alexnet", "cnn"))  # alexnet (published) | cnn (SmallSpecCNN,
                                                                         # CPU-cheap)
    spec_bins: int = checked(200, ge=1)
    spec_frames: int = checked(300, ge=1)      # informational: both encoders accept any length
    alexnet_weights: str = ALEXNET_IMAGENET_URL   # URL, local .pth path, or "random"
    image_size: tuple[int, int] = checked((256, 384), ge=64, items=True)   # [height, width]; AlexNet's minimum 64
    cnn_channels: tuple[int, ...] = checked((8, 16, 32, 64), ge=1, items=True, min_items=1)
    cnn_input_pool: int = checked(1, ge=1)     # average-pool the spectrogram by this factor before the CNN
    # SSL branch
    ssl_dim: int = checked(768, ge=1)
    ssl_frames: int = checked(149, ge=1)       # only binding for coattention=relu
    ssl_layers: int | None = checked(None, ge=1)   # L for a stacked-layers input (B, L, T, D)
    ssl_layer_norm: bool = False       # normalise each SSL layer's frames before weighting (SUPERB)
    # relu (published) | softmax (length-independent) | none (mean pool)
    coattention: str = checked("relu", choices=("relu", "softmax", "none"))
    # a statistics-pooled (mean + std) SSL vector beside the co-attention one: none | weighted (of the
    # layer-weighted frames) | layers (of each cached layer)
    ssl_stats: str = checked("none", choices=("none", "weighted", "layers"))
    ssl_time_pool: int = checked(1, ge=1)      # average-pool the SSL frames in time by this factor first (cheaper)
    mask_padding: bool = False         # leave the last segment's zero padding out of SSL pooling (reads ``valid``)
    attn_dim: int = checked(128, ge=1)         # query/key size for coattention=softmax
    # which levels are used
    use_mfcc: bool = True
    use_spec: bool = True
    use_ssl: bool = True
    # sizes of the fusion
    branch_dim: int = checked(128, ge=1)
    head_hidden: int = checked(128, ge=1)
    dropout: float = checked(0.1, ge=0, lt=1)
    # training: probability of zeroing a sample's MFCC / spectrogram vector
    branch_dropout: float = checked(0.0, ge=0, lt=1)
    fuse_drivers: bool = True          # the MFCC / spectrogram vectors join the head's input (the paper); false:
                                       # they only drive the co-attention over the SSL frames

    def __post_init__(self):
        """Rules between fields (each field's own values are declared above; from_dict checks
        them), and image_size's shape for a config made in Python rather than read."""
        self.image_size = tuple(self.image_size)
        self.cnn_channels = tuple(self.cnn_channels)
        if len(self.image_size) != 2 or not all(isinstance(x, int) and x >= 64 for x in self.image_size):
            raise ConfigError(f"model.image_size: expected [height, width], each at least 64 "
                              f"(AlexNet's minimum), got {list(self.image_size)}")
        if self.ssl_time_pool > 1 and self.coattention == "relu":
            raise ConfigError("model.ssl_time_pool: needs coattention softmax or none (relu is tied to the frame count)")
        if not self.fuse_drivers and not self.use_ssl:
            raise ConfigError("model.fuse_drivers: false needs use_ssl (the drivers then only steer the SSL branch)")
        if not (self.use_mfcc or self.use_spec or self.use_ssl):
            raise ConfigError("model.use_ssl: at least one of use_mfcc, use_spec, use_ssl must be true")

    @property
    def inputs(self) -> tuple[str, ...]:
        """The batch keys the model reads (``ssl`` is replaced by ``audio`` when the model is
        given an encoder; see :attr:`CAMSER.inputs`)."""
        return tuple(k for k, used in (("mfcc", self.use_mfcc), ("spectrogram", self.use_spec),
                                        ("ssl", self.use_ssl)) if used)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["image_size"], d["cnn_channels"] = list(self.image_size), list(self.cnn_channels)
        return d


# The published model is the dataclass default; "cpu" keeps the three levels and the
# co-attention but with cheap branches (seconds per batch on a laptop CPU).
PRESETS: dict[str, dict] = {
    "paper": {},
    "cpu": {"spec_encoder": "cnn", "lstm_hidden": 64, "lstm_layers": 1, "lstm_dropout": 0.0,
            "mfcc_pool": "mean", "mfcc_norm": "standard", "cnn_input_pool": 2, "mfcc_time_pool": 3, "coattention": "softmax",
            "ssl_layer_norm": True},
    # "cpu" plus what made it generalise across speakers on RAVDESS (README, Results): the SSL
    # branch also statistics-pools every cached layer (batch-standardised), padding is masked,
    # and the MFCC / spectrogram vectors steer the co-attention without joining the head (they
    # memorise the training speakers). Its configs cache SSL frames pooled in time
    # (features.ssl.frame_pool) and train on whole utterances (train.unit: utterance).
    "plus": {"spec_encoder": "cnn", "lstm_hidden": 64, "lstm_layers": 1, "lstm_dropout": 0.0,
             "mfcc_pool": "mean", "mfcc_norm": "standard", "cnn_input_pool": 3, "mfcc_time_pool": 5,
             "coattention": "softmax", "ssl_layer_norm": True, "ssl_stats": "layers", "mask_padding": True,
             "fuse_drivers": False, "dropout": 0.3, "branch_dropout": 0.5},
}

# The 10 rows of Table 2. Rows without "+coatt" mean-pool the SSL frames; "+coatt" rows keep
# the configured co-attention mode (relu for "paper", softmax for "cpu"). "w2e+coatt" has no
# MFCC/spectrogram vector to drive the co-attention, so its query is the mean of the SSL frames
# itself (a learned self-driven frame attention) — our reading of that row.
_NONE = {"coattention": "none", "fuse_drivers": True}     # no co-attention: the branches are concatenated
ABLATIONS: dict[str, dict] = {
    "mfcc":                {"use_mfcc": True,  "use_spec": False, "use_ssl": False, **_NONE},
    "spec":                {"use_mfcc": False, "use_spec": True,  "use_ssl": False, **_NONE},
    "w2e":                 {"use_mfcc": False, "use_spec": False, "use_ssl": True,  **_NONE},
    "mfcc+w2e":            {"use_mfcc": True,  "use_spec": False, "use_ssl": True,  **_NONE},
    "spec+w2e":            {"use_mfcc": False, "use_spec": True,  "use_ssl": True,  **_NONE},
    "mfcc+spec+w2e":       {"use_mfcc": True,  "use_spec": True,  "use_ssl": True,  **_NONE},
    "w2e+coatt":           {"use_mfcc": False, "use_spec": False, "use_ssl": True},
    "mfcc+w2e+coatt":      {"use_mfcc": True,  "use_spec": False, "use_ssl": True},
    "spec+w2e+coatt":      {"use_mfcc": False, "use_spec": True,  "use_ssl": True},
    "mfcc+spec+w2e+coatt": {"use_mfcc": True,  "use_spec": True,  "use_ssl": True},
}


class CAMSER(SegmentModel):
    """``CAMSER(config, encoder=None)``; ``forward(batch) -> logits (B, n_classes)``.

    ``batch``: ``mfcc`` (B, T, 40), ``spec`` (B, T, F) in dB, ``ssl`` (B, T_w, D_w) or
    (B, L, T_w, D_w) and optionally ``ssl_mask`` (B, T_w). With an ``encoder`` (a module mapping
    ``audio`` (B, samples) to frames, e.g. a wrapped wav2vec2) the SSL frames come from
    ``batch["audio"]`` and the encoder trains end to end.

    The spectrogram scaling is fitted on the training split: call :meth:`fit_spectrogram`
    before training. ``load_pretrained=False`` skips fetching the ImageNet AlexNet weights
    (used by :meth:`from_pretrained`, which restores all weights anyway).
    """

    model_name, config_class = "camser", CAMSERConfig
    # given ``owner`` in a batch (whole-utterance training), it pools an utterance's segments
    pools_segments = True

    def __init__(self, config: CAMSERConfig, encoder: nn.Module | None = None, *,
                 load_pretrained: bool = True):
        super().__init__()
        self.config = cfg = config
        bd, p = cfg.branch_dim, cfg.dropout
        n_branches = 0
        if encoder is not None and not cfg.use_ssl:
            raise CamserError("an SSL encoder was given but model.use_ssl is false")
        self.encoder = encoder                           # None: SSL frames come from batch["ssl"]

        if cfg.use_mfcc:
            if cfg.mfcc_norm == "standard":
                self.mfcc_standardizer = Standardizer(cfg.mfcc_dim)
            self.mfcc_encoder = BiLSTMEncoder(cfg.mfcc_dim, cfg.lstm_hidden, cfg.lstm_layers,
                                              cfg.lstm_dropout, cfg.mfcc_pool,
                                              -(-cfg.mfcc_frames // cfg.mfcc_time_pool), bd, p)
            n_branches += cfg.fuse_drivers

        if cfg.use_spec:
            if cfg.spec_encoder == "alexnet":
                self.spec_encoder = AlexNetSpectrogramEncoder(cfg.spec_bins, cfg.image_size)
                if load_pretrained and cfg.alexnet_weights != "random":
                    load_alexnet_imagenet(self.spec_encoder.alexnet, cfg.alexnet_weights)
            else:
                self.spec_encoder = SmallSpecCNN(cfg.spec_bins, cfg.cnn_channels, input_pool=cfg.cnn_input_pool)
            self.spec_drop = nn.Dropout(p)
            self.spec_proj = nn.Linear(self.spec_encoder.out_dim, bd)
            n_branches += cfg.fuse_drivers

        if cfg.use_ssl:
            self.layer_weights = LayerWeights(cfg.ssl_layers, cfg.ssl_layer_norm)
            if cfg.coattention == "none":
                self.w2e_drop = nn.Dropout(p)
                self.w2e_proj = nn.Linear(cfg.ssl_dim, bd)
            else:
                # query = concat of the MFCC/spectrogram vectors present, else the SSL mean
                query_dim = bd * (cfg.use_mfcc + cfg.use_spec) or cfg.ssl_dim
                self.coattention = CoAttention(query_dim, cfg.ssl_dim, cfg.ssl_frames,
                                               cfg.coattention, bd, cfg.attn_dim, p)
            n_branches += 1
            if cfg.ssl_stats != "none":
                width = 2 * cfg.ssl_dim * (cfg.ssl_layers or 1 if cfg.ssl_stats == "layers" else 1)
                self.stats_norm = BatchScaler(width)    # a StandardScaler the batches fit
                self.stats_drop = nn.Dropout(p)
                self.stats_proj = nn.Linear(width, bd)
                n_branches += 1

        self.head = nn.Sequential(
            nn.Dropout(p), nn.Linear(n_branches * bd, cfg.head_hidden), nn.ReLU(),
            nn.Dropout(p), nn.Linear(cfg.head_hidden, cfg.head_hidden), nn.ReLU(),
            nn.Linear(cfg.head_hidden, cfg.n_classes),
        )

    # ------------------------------------------------------------------ inputs

    @property
    def inputs(self) -> tuple[str, ...]:
        """Batch keys this model reads."""
        return tuple("audio" if (k == "ssl" and self.encoder is not None) else k
                     for k in self.config.inputs)

    @property
    def optional_inputs(self) -> tuple[str, ...]:
        """Keys read when the batch has them: ``valid`` (real-audio fraction of each segment)
        with ``mask_padding``; ``owner`` (training/scoring whole utterances: the utterance of
        each segment, whose segments are pooled before the head)."""
        return ("valid",) if self.config.mask_padding else ()

    def batch_builder(self, data, sample_rate: int):
        """Batches with ``valid`` when padding is masked; None → the plain cached features."""
        if not self.config.mask_padding:
            return None
        return FeatureBatches(data.stores, data.every_utterance, sample_rate, keys=self.inputs)

    def fit_spectrogram(self, arrays: Iterable) -> "CAMSER":
        """Fit the per-bin spectrogram scaling on TRAINING spectrograms ((T, F) arrays or
        (N, T, F) batches, streamed once). No-op when the spectrogram branch is off."""
        if self.config.use_spec:
            self.spec_encoder.fit(arrays)
        return self

    def fit_mfcc(self, arrays: Iterable) -> "CAMSER":
        """Fit the MFCC standardisation (``mfcc_norm: standard``) on TRAINING MFCCs; else a no-op."""
        if self.config.use_mfcc and self.config.mfcc_norm == "standard":
            self.mfcc_standardizer.fit(arrays)
        return self

    def fit_normalizers(self, stores: dict, rows, chunk: int = 256) -> "CAMSER":
        """The training loop's hook: fit the spectrogram scaling (and the MFCC standardisation)
        on the training ``rows`` of the feature stores, read ``chunk`` sorted rows at a time."""
        rows = np.sort(np.asarray(rows))                 # sorted reads are sequential on a memmap
        if self.config.use_mfcc and self.config.mfcc_norm == "standard":
            self.fit_mfcc(stores["mfcc"].array[rows[i:i + chunk]] for i in range(0, len(rows), chunk))
        if not self.config.use_spec:
            return self
        store = stores.get("spectrogram")
        if store is None:
            raise CamserError("no spectrogram features to fit the spectrogram scaling on")
        return self.fit_spectrogram(store.array[rows[i:i + chunk]] for i in range(0, len(rows), chunk))

    def _get(self, batch: dict, key: str) -> torch.Tensor:
        if key not in batch:
            raise CamserError(f"the batch has no '{key}' (this model reads {', '.join(self.inputs)})")
        return batch[key]

    def _ssl_statistics(self, frames: torch.Tensor, mask, layers: torch.Tensor) -> torch.Tensor:
        """Mean + std over real frames: of the layer-weighted frames (``weighted``), or of every
        cached layer, concatenated (``layers``: the linear probe's strongest input; ``layers``
        is :meth:`_ssl_layers`' output)."""
        if self.config.ssl_stats == "weighted" or self.encoder is not None:
            return stats_pool(frames, mask)
        x = layers if layers.dim() == 4 else layers.unsqueeze(1)
        if self.config.ssl_time_pool > 1:
            x = F.avg_pool2d(x, (self.config.ssl_time_pool, 1), ceil_mode=True)
        b, n_layers, t, d = x.shape
        m = None if mask is None else mask.unsqueeze(1).expand(b, n_layers, t).reshape(b * n_layers, t)
        return stats_pool(x.reshape(b * n_layers, t, d), m).reshape(b, -1)

    def _ssl_layers(self, batch: dict) -> torch.Tensor:
        """The SSL hidden states as float, ``(B, L, T, D)`` or ``(B, T, D)``, each layer's frames
        normalised once here (``ssl_layer_norm``) for both the layer weighting and the
        statistics: the cached fp16 → float copy and the norm are a large part of a step."""
        if self.encoder is not None:
            out = self.encoder(self._get(batch, "audio"))
            out = out if torch.is_tensor(out) else out.last_hidden_state
        else:
            out = self._get(batch, "ssl")
        out = out.float()
        return F.layer_norm(out, out.shape[-1:]) if self.config.ssl_layer_norm else out

    def _ssl_frames(self, layers: torch.Tensor) -> torch.Tensor:
        frames = self.layer_weights(layers, normalized=True)         # (B, T, D)
        if self.config.ssl_time_pool > 1:
            frames = F.avg_pool1d(frames.transpose(1, 2), self.config.ssl_time_pool,
                                  ceil_mode=True).transpose(1, 2)
        return frames

    # ------------------------------------------------------------------ forward

    def forward(self, batch: dict, return_embeddings: bool = False):
        """→ logits ``(B, n_classes)``; with ``return_embeddings`` → ``(logits, emb)`` where
        ``emb`` holds, for the branches used: ``mfcc``, ``spec``, ``w2e`` (the 128-d vectors),
        ``w2e_raw`` (the weighted / mean SSL frame sum, D-dim), ``attention`` (B, T_w frame
        weights, co-attention only) and ``fused`` (the concatenation the head sees)."""
        cfg = self.config
        emb: dict[str, torch.Tensor] = {}

        if cfg.use_mfcc:
            mfcc = self._get(batch, "mfcc").float()
            if cfg.mfcc_norm == "l2":
                mfcc = F.normalize(mfcc, p=2, dim=-1)
            elif cfg.mfcc_norm == "standard":
                mfcc = self.mfcc_standardizer(mfcc)
            if cfg.mfcc_time_pool > 1:
                mfcc = F.avg_pool1d(mfcc.transpose(1, 2), cfg.mfcc_time_pool, ceil_mode=True).transpose(1, 2)
            emb["mfcc"] = self.mfcc_encoder(mfcc)

        if cfg.use_spec:
            h = self.spec_encoder(self._get(batch, "spectrogram"))
            emb["spectrogram"] = F.relu(self.spec_proj(self.spec_drop(h)))

        if self.training and cfg.branch_dropout > 0:
            # modality dropout: drop a sample's whole MFCC / spectrogram vector now and then, so
            # the head can't lean on the branches that memorise the training speakers fastest
            for k in ("mfcc", "spectrogram"):
                if k in emb:
                    keep = torch.rand(emb[k].shape[0], 1, device=emb[k].device) >= cfg.branch_dropout
                    emb[k] = emb[k] * keep.to(emb[k].dtype)

        if cfg.use_ssl:
            layers = self._ssl_layers(batch)
            frames = self._ssl_frames(layers)
            mask = batch.get("ssl_mask")
            if mask is None and cfg.mask_padding and "valid" in batch:
                mask = frame_mask(batch["valid"], frames.shape[1])
            if cfg.coattention == "none":
                emb["ssl_raw"] = mean_pool(frames, mask)
                emb["ssl"] = F.relu(self.w2e_proj(self.w2e_drop(emb["ssl_raw"])))
            else:
                drivers = [emb[k] for k in ("mfcc", "spectrogram") if k in emb]
                query = torch.cat(drivers, -1) if drivers else mean_pool(frames, mask)
                emb["ssl"], emb["ssl_raw"], emb["attention"] = self.coattention(query, frames, mask)
            if cfg.ssl_stats != "none":
                stats = self.stats_norm(self._ssl_statistics(frames, mask, layers))
                emb["ssl_stats"] = F.relu(self.stats_proj(self.stats_drop(stats)))

        heads = ("mfcc", "spectrogram", "ssl", "ssl_stats") if cfg.fuse_drivers else ("ssl", "ssl_stats")
        fused = torch.cat([emb[k] for k in heads if k in emb], dim=-1)
        if "owner" in batch:          # whole utterances: their segments' vectors pooled before the head
            fused = pool_by_owner(fused, batch["owner"])
        emb["fused"] = fused
        logits = self.head(emb["fused"])
        return (logits, emb) if return_embeddings else logits

    # ------------------------------------------------------------------ save / load

    def config_dict(self) -> dict:
        return self.config.to_dict()

    @classmethod
    def from_config(cls, config: CAMSERConfig, encoder: nn.Module | None = None) -> "CAMSER":
        # the ImageNet AlexNet weights are not fetched: the saved weights replace them
        return cls(config, encoder, load_pretrained=False)


# ---------------------------------------------------------------- from an experiment's model section

def config_from_section(section: dict, n_classes: int, feature_dims: dict | None = None) -> CAMSERConfig:
    """The experiment YAML's ``model:`` mapping → :class:`CAMSERConfig`.

    Applied in order: ``preset`` (paper | cpu), ``ablation`` (a key of :data:`ABLATIONS`), the
    section's own fields, then sizes read from the data (``feature_dims``: ``mfcc`` (T, 40),
    ``spec``/``spectrogram`` (T, F), ``ssl`` (T, D) or (L, T, D)). A field set in the section
    that disagrees with the data is an error.
    """
    s = dict(section or {})
    s.pop("name", None)
    preset, ablation = s.pop("preset", "paper"), s.pop("ablation", None)
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ConfigError(f"model.preset: {preset!r} is not one of {', '.join(PRESETS)}")
    if ablation is not None and (not isinstance(ablation, str) or ablation not in ABLATIONS):
        raise ConfigError(f"model.ablation: {ablation!r} is not one of {', '.join(ABLATIONS)}")
    if "n_classes" in s and s["n_classes"] != n_classes:
        raise ConfigError(f"model.n_classes: {s['n_classes']!r}, but the label set has {n_classes} classes")

    data = {"n_classes": n_classes}
    dims = dict(feature_dims or {})
    if dims.get("mfcc") is not None:
        data["mfcc_frames"], data["mfcc_dim"] = _shape(dims["mfcc"], "mfcc", (2,))
    if dims.get("spectrogram") is not None:
        data["spec_frames"], data["spec_bins"] = _shape(dims["spectrogram"], "spectrogram", (2,))
    if dims.get("ssl") is not None:
        shape = _shape(dims["ssl"], "ssl", (2, 3))
        data["ssl_layers"] = shape[0] if len(shape) == 3 else None
        data["ssl_frames"], data["ssl_dim"] = shape[-2:]
    for k, v in data.items():
        if k in s and s[k] != v and k != "n_classes":
            raise ConfigError(f"model.{k}: {s[k]!r}, but the features give {v!r}")

    cfg = from_dict(CAMSERConfig, {**PRESETS[preset], **ABLATIONS.get(ablation, {}), **s, **data}, "model")
    if ablation and ablation.endswith("+coatt") and cfg.coattention == "none":
        raise ConfigError(f"model.coattention: ablation {ablation!r} needs relu or softmax, not none")
    return cfg


def _shape(shape, name: str, ranks: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(int(x) for x in shape)
    if len(shape) not in ranks:
        raise CamserError(f"feature '{name}' has shape {shape}; expected {' or '.join(map(str, ranks))} "
                          "dimensions per segment")
    return shape


def _section_config(section: dict) -> CAMSERConfig:
    # n_classes is not known yet: any valid placeholder builds the config
    return config_from_section(section, section.get("n_classes", 1))


def _camser_inputs(section: dict) -> set[str]:
    return set(_section_config(section).inputs)


@register_model("camser", inputs=_camser_inputs, loader=CAMSER.from_pretrained, config=CAMSERConfig,
                check=_section_config)
def _build_camser(section: dict, n_classes: int, feature_dims: dict,
                  encoder: nn.Module | None = None) -> CAMSER:
    return CAMSER(config_from_section(section, n_classes, feature_dims), encoder)
