"""Shared layers: the spectrogram encoders (AlexNet, a small CNN), the MFCC BiLSTM, SSL layer
weighting, co-attention over SSL frames and pooling helpers.

Shapes used throughout: MFCC ``(B, T_m, 40)``, spectrogram ``(B, T_s, F)`` in dB (time first,
as the feature cache stores it), SSL frames ``(B, T_w, D_w)`` or ``(B, L, T_w, D_w)``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CamserError, first_line

ALEXNET_IMAGENET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------- pooling helpers

def mean_pool(x: torch.Tensor, mask: torch.Tensor | None = None, dim: int = 1) -> torch.Tensor:
    """Mean over ``dim``; ``mask`` (same shape as ``x`` without the last axis, True = keep)
    leaves padding frames out."""
    if mask is None:
        return x.mean(dim)
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(dim) / m.sum(dim).clamp_min(1.0)


def stats_pool(x: torch.Tensor, mask: torch.Tensor | None = None, dim: int = 1,
               eps: float = 1e-5) -> torch.Tensor:
    """Statistics pooling (x-vector style): concat(mean, std) over ``dim`` → ``2 * D``."""
    mu = mean_pool(x, mask, dim)
    var = mean_pool((x - mu.unsqueeze(dim)) ** 2, mask, dim)
    return torch.cat([mu, var.clamp_min(eps).sqrt()], dim=-1)


def pool_by_owner(x: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """Mean of the rows of ``x`` ``(N, D)`` that share an ``owner`` index ``(N,)`` (0 … K−1)
    → ``(K, D)``: an utterance's segment vectors pooled into one. ``owner`` may also be the
    ``(K, N)`` 0/1 membership matrix (what an exported ONNX graph takes: no data-dependent
    shapes)."""
    if owner.dim() == 2:
        member = owner.to(device=x.device, dtype=x.dtype)
        return (member @ x) / member.sum(1, keepdim=True).clamp_min(1.0)
    owner = owner.to(x.device).long()
    k = int(owner.max()) + 1 if owner.numel() else 0
    total = torch.zeros(k, x.shape[-1], dtype=x.dtype, device=x.device).index_add_(0, owner, x)
    count = torch.zeros(k, dtype=x.dtype, device=x.device).index_add_(0, owner, torch.ones_like(owner, dtype=x.dtype))
    return total / count.clamp_min(1.0).unsqueeze(1)


# ---------------------------------------------------------------- spectrogram scaling

class Standardizer(nn.Module):
    """Per-feature zero mean / unit variance with statistics fitted on the training split only
    (buffers, so they travel with the state dict). Unlike per-frame L2 normalisation it keeps
    the loudness (c0) that separates e.g. anger from sadness."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, arrays: Iterable) -> "Standardizer":
        dim = self.mean.numel()
        total = total_sq = None
        count = 0
        for a in arrays:
            a = torch.as_tensor(np.asarray(a)).reshape(-1, dim).to(torch.float64)
            total = a.sum(0) if total is None else total + a.sum(0)
            total_sq = (a * a).sum(0) if total_sq is None else total_sq + (a * a).sum(0)
            count += a.shape[0]
        if not count:
            raise CamserError("standardisation: fit() got no training features")
        mean = total / count
        self.mean.copy_(mean.float())
        self.std.copy_((total_sq / count - mean * mean).clamp_min(1e-8).sqrt().float())
        self.fitted.fill_(True)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.fitted):
            raise CamserError("feature standardisation is not fitted: call model.fit_normalizers(...) first")
        return (x - self.mean) / self.std


class BatchScaler(nn.BatchNorm1d):
    """Batch normalisation without a learned scale: a StandardScaler the training batches fit
    (running mean and variance). A training batch of one example (the last of an epoch whose
    size leaves one over) has no variance to standardise by: it is scaled by the running
    statistics instead, and leaves them as they were."""

    def __init__(self, width: int):
        super().__init__(width, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, training=False, eps=self.eps)
        return super().forward(x)


class BinMinMax(nn.Module):
    """Per-frequency-bin min-max scaling to [0, 1] (as the reference's MinMaxScaler), with the
    statistics fitted on the training split only and kept as buffers so they travel with the
    model's state dict."""

    def __init__(self, n_bins: int):
        super().__init__()
        self.register_buffer("bin_min", torch.zeros(n_bins))
        self.register_buffer("bin_max", torch.ones(n_bins))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, arrays: Iterable) -> "BinMinMax":
        """``arrays``: spectrograms (or batches of them) whose LAST axis is frequency, streamed
        once; only their per-bin min and max are kept."""
        lo = hi = None
        n_bins = self.bin_min.numel()
        for a in arrays:
            a = torch.as_tensor(np.asarray(a) if not torch.is_tensor(a) else a)
            if a.shape[-1] != n_bins:
                raise CamserError(f"spectrogram scaling: expected {n_bins} frequency bins on the "
                                  f"last axis, got shape {tuple(a.shape)}")
            a = a.reshape(-1, n_bins).to(torch.float64)
            amin, amax = a.amin(0), a.amax(0)
            lo = amin if lo is None else torch.minimum(lo, amin)
            hi = amax if hi is None else torch.maximum(hi, amax)
        if lo is None:
            raise CamserError("spectrogram scaling: fit() got no training spectrograms")
        self.bin_min.copy_(lo.to(self.bin_min.dtype))
        self.bin_max.copy_(hi.to(self.bin_max.dtype))
        self.fitted.fill_(True)
        return self

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """``(..., F)`` dB → ``(..., F)`` in [0, 1] (clipped, like the reference's uint8 image)."""
        if not bool(self.fitted):
            raise CamserError("spectrogram scaling is not fitted: call model.fit_spectrogram("
                              "<training-split spectrograms>) before training")
        scale = (self.bin_max - self.bin_min).clamp_min(1e-6)
        return ((spec - self.bin_min) / scale).clamp(0.0, 1.0)


class SpectrogramImage(nn.Module):
    """``(B, T, F)`` dB spectrogram → ``(B, 3, H, W)`` ImageNet-normalised image, as the
    reference prepares AlexNet input: per-bin min-max to [0, 1] (training statistics),
    frequency axis flipped so low frequencies sit at the bottom, resized (bilinear) to
    ``image_size`` (256×384 = the reference's ``Resize(256)`` of a 200×300 image), the grey
    level replicated to 3 channels, then ImageNet mean/std. Done per batch on the fly, so the
    images are never all held in memory. (The reference also rounds to uint8 before resizing;
    that quantisation is left out.)"""

    def __init__(self, n_bins: int = 200, image_size: tuple[int, int] = (256, 384)):
        super().__init__()
        self.scale = BinMinMax(n_bins)
        self.image_size = tuple(image_size)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def fit(self, arrays: Iterable) -> "SpectrogramImage":
        self.scale.fit(arrays)
        return self

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        x = self.scale(spec.float())                    # (B, T, F) in [0, 1]
        x = x.transpose(1, 2).flip(1).unsqueeze(1)      # (B, 1, F, T), high frequencies on top
        x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        return (x.expand(-1, 3, -1, -1) - self.mean) / self.std


# ---------------------------------------------------------------- AlexNet

def _alexnet_features() -> nn.Sequential:
    # Index layout is torchvision's, so its checkpoint keys (features.0/3/6/8/10) match.
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )


def _xavier_init(module: nn.Module) -> None:
    # The reference's init for a non-pretrained AlexNet: Xavier-uniform weights, zero biases.
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


class AlexNetFeatures(nn.Module):
    """AlexNet's convolutional trunk + adaptive pool: ``(B, 3, H, W)`` → ``(B, 256, 6, 6)``.
    Parameter names equal torchvision's (``features.*``); what CA-MSER uses (the reference
    discards the classifier output)."""

    out_dim = 256 * 6 * 6

    def __init__(self):
        super().__init__()
        self.features = _alexnet_features()
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        _xavier_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.avgpool(self.features(x))


class AlexNet(AlexNetFeatures):
    """torchvision's AlexNet with identical parameter names (``features.*``, ``classifier.1/4/6``),
    so the published ImageNet checkpoint loads with ``strict=True``."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(p=dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )
        _xavier_init(self.classifier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(super().forward(x), 1))


def load_alexnet_imagenet(model: AlexNetFeatures, source: str | Path = ALEXNET_IMAGENET_URL) -> AlexNetFeatures:
    """Load torchvision's ImageNet AlexNet weights into ``model`` (an :class:`AlexNet`, or an
    :class:`AlexNetFeatures`, which takes the ``features.*`` part). ``source`` is a local
    ``.pth`` file or an http(s) URL (cached by ``torch.hub``). Loading is strict: every
    parameter must come from the checkpoint."""
    src = str(source)
    hint = (f"pass a local copy of {ALEXNET_IMAGENET_URL.rsplit('/', 1)[-1]} as "
            "model.alexnet_weights=<path>, or model.alexnet_weights=random for random init")
    try:
        if src.startswith(("http://", "https://")):
            # check_hash: torchvision's file names carry a sha256 prefix (…-7be5be79.pth)
            state = torch.hub.load_state_dict_from_url(src, map_location="cpu", progress=False,
                                                       check_hash=True, weights_only=True)
        else:
            if not Path(src).is_file():
                raise FileNotFoundError(src)
            state = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:  # no network, missing file, corrupt download …
        reason = first_line(e, with_type=True)
        raise CamserError(f"{src}: can't load the ImageNet AlexNet weights ({reason}); {hint}") from None
    if not hasattr(model, "classifier"):  # trunk only: the classifier weights are not wanted
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CamserError(f"{src}: not a torchvision AlexNet checkpoint "
                          f"({first_line(e)}); {hint}") from None
    return model


class AlexNetSpectrogramEncoder(nn.Module):
    """The paper's spectrogram branch trunk: :class:`SpectrogramImage` → AlexNet features →
    flattened ``(B, 9216)``."""

    def __init__(self, n_bins: int = 200, image_size: tuple[int, int] = (256, 384)):
        super().__init__()
        self.image = SpectrogramImage(n_bins, image_size)
        self.alexnet = AlexNetFeatures()
        self.out_dim = AlexNetFeatures.out_dim

    def fit(self, arrays: Iterable) -> "AlexNetSpectrogramEncoder":
        self.image.fit(arrays)
        return self

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.alexnet(self.image(spec)), 1)


# ---------------------------------------------------------------- small CNN (CPU configuration)

class SmallSpecCNN(nn.Module):
    """A CPU-cheap CNN on the native ``(B, T, F)`` spectrogram: per-bin min-max scaling
    (training statistics), then conv3×3-BN-ReLU-maxpool2 blocks, then global mean+max pooling
    → ``2 * channels[-1]`` (or a Linear+ReLU to ``out_dim`` when given). ``input_pool`` > 1
    average-pools time and frequency first: most of the cost is in the full-resolution first
    block, and 10 ms × 20 Hz cells are finer than emotion cues need."""

    def __init__(self, n_bins: int = 200, channels: tuple[int, ...] = (8, 16, 32, 64),
                 out_dim: int | None = None, input_pool: int = 1):
        super().__init__()
        self.scale = BinMinMax(n_bins)
        self.input_pool = input_pool
        layers, c_in = [], 1
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c
        self.convs = nn.Sequential(*layers)
        self.proj = None if out_dim is None else nn.Sequential(nn.Linear(2 * c_in, out_dim), nn.ReLU())
        self.out_dim = out_dim or 2 * c_in

    def fit(self, arrays: Iterable) -> "SmallSpecCNN":
        self.scale.fit(arrays)
        return self

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        x = self.scale(spec.float()).unsqueeze(1)
        if self.input_pool > 1:
            x = F.avg_pool2d(x, self.input_pool, ceil_mode=True)
        # Channels-last activations and weights: oneDNN's fast layout on CPU, ~1.3x this CNN's
        # forward + backward and ~13 % off a CPU-preset training step (README, Benchmarks). The
        # weights stay contiguous (safetensors wants that) and are converted here: a tiny,
        # differentiable copy.
        x = x.contiguous(memory_format=torch.channels_last)
        for layer in self.convs:
            if isinstance(layer, nn.Conv2d):
                x = F.conv2d(x, layer.weight.contiguous(memory_format=torch.channels_last), layer.bias,
                             layer.stride, layer.padding, layer.dilation, layer.groups)
            else:
                x = layer(x)                                       # → (B, C, T', F')
        x = torch.cat([x.mean((2, 3)), x.amax((2, 3))], dim=1)   # length-independent
        return x if self.proj is None else self.proj(x)


# ---------------------------------------------------------------- MFCC BiLSTM

class BiLSTMEncoder(nn.Module):
    """Bidirectional LSTM over MFCC frames → ``out_dim`` vector.

    ``pool="flatten"`` (published): all frame outputs flattened (``frames * 2 * hidden``, e.g.
    300×512) → dropout → Linear → ReLU; ties the model to ``frames``.
    ``pool="mean"``: mean over time → dropout → Linear → ReLU; cheap and length-independent.
    """

    def __init__(self, input_dim: int = 40, hidden: int = 256, layers: int = 2,
                 lstm_dropout: float = 0.5, pool: str = "flatten", frames: int = 300,
                 out_dim: int = 128, dropout: float = 0.1):
        super().__init__()
        if pool not in ("flatten", "mean"):
            raise ValueError(f"BiLSTMEncoder pool must be 'flatten' or 'mean', got {pool!r}")
        self.lstm = nn.LSTM(input_dim, hidden, num_layers=layers, batch_first=True,
                            bidirectional=True, dropout=lstm_dropout if layers > 1 else 0.0)
        self.pool, self.frames = pool, frames
        in_proj = frames * 2 * hidden if pool == "flatten" else 2 * hidden
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(in_proj, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(x)                                        # (B, T, 2 * hidden)
        if self.pool == "flatten":
            if h.shape[1] != self.frames:
                raise CamserError(f"MFCC has {h.shape[1]} frames but the model was built for "
                                  f"{self.frames} (mfcc_pool=flatten); use mfcc_pool=mean for "
                                  "other lengths")
            h = torch.flatten(h, 1)
        else:
            h = h.mean(1)
        return F.relu(self.proj(self.drop(h)))


# ---------------------------------------------------------------- SSL layer weights

class LayerWeights(nn.Module):
    """SUPERB-style learnable softmax weights over stacked hidden layers: ``(B, L, T, D)`` →
    ``(B, T, D)``. Inputs already ``(B, T, D)`` pass through unchanged.

    ``layer_norm=True`` normalises each layer's frames (no parameters) first, as SUPERB does:
    hidden states of different depths differ in scale by orders of magnitude (Whisper's
    embeddings vs its upper layers), which otherwise swamps the learned weights."""

    def __init__(self, n_layers: int | None, layer_norm: bool = False):
        super().__init__()
        self.n_layers = n_layers
        self.layer_norm = layer_norm
        self.weights = nn.Parameter(torch.zeros(n_layers)) if n_layers else None

    def forward(self, x: torch.Tensor, normalized: bool = False) -> torch.Tensor:
        """``normalized=True``: ``x`` has had its layer norm already (the caller shares it)."""
        if self.layer_norm and not normalized:
            x = F.layer_norm(x, x.shape[-1:])
        if x.dim() == 3:
            return x
        if self.weights is None or x.shape[1] != self.n_layers:
            raise CamserError(f"SSL input has {x.shape[1]} stacked layers but the model was "
                              f"built for {self.n_layers or 'a single layer'} (model.ssl_layers)")
        w = torch.softmax(self.weights, 0).to(x.dtype)
        return torch.einsum("l,bltd->btd", w, x)


# ---------------------------------------------------------------- co-attention

class CoAttention(nn.Module):
    """Frame weights for the SSL frames from a query vector (concat of the MFCC and spectrogram
    vectors), weighted sum of the frames, then dropout → Linear(D → out_dim) → ReLU.

    ``mode="relu"`` (published): dropout → Linear(query → n_frames) → ReLU gives one
    unnormalised weight per frame position; ties the model to ``n_frames``.
    ``mode="softmax"`` (length-independent): the query is projected to ``attn_dim`` and each
    frame to ``attn_dim`` (a key); weights = softmax over frames of the scaled dot products.
    Works for any number of frames; ``mask`` (B, T) (True = real frame) leaves padding out.
    """

    def __init__(self, query_dim: int, frame_dim: int, n_frames: int | None = None,
                 mode: str = "relu", out_dim: int = 128, attn_dim: int = 128,
                 dropout: float = 0.1):
        super().__init__()
        if mode not in ("relu", "softmax"):
            raise ValueError(f"CoAttention mode must be 'relu' or 'softmax', got {mode!r}")
        self.mode, self.n_frames = mode, n_frames
        self.query_drop = nn.Dropout(dropout)
        if mode == "relu":
            if not n_frames:
                raise ValueError("CoAttention(mode='relu') needs n_frames")
            self.query = nn.Linear(query_dim, n_frames)
        else:
            self.query = nn.Linear(query_dim, attn_dim)
            self.key = nn.Linear(frame_dim, attn_dim)
        self.out_drop = nn.Dropout(dropout)
        self.proj = nn.Linear(frame_dim, out_dim)

    def weights(self, query: torch.Tensor, frames: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, Q)``, ``(B, T, D)`` → frame weights ``(B, T)``."""
        q = self.query(self.query_drop(query))
        if self.mode == "relu":
            if frames.shape[1] != self.n_frames:
                raise CamserError(f"SSL input has {frames.shape[1]} frames but the model was built "
                                  f"for {self.n_frames} (coattention=relu); use coattention=softmax "
                                  "for other lengths")
            w = F.relu(q)
            return w if mask is None else w * mask.to(w.dtype)
        scores = torch.einsum("bta,ba->bt", self.key(frames), q) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask.bool(), float("-inf"))
        return torch.softmax(scores, dim=1)

    def forward(self, query: torch.Tensor, frames: torch.Tensor,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """→ (``out_dim`` vector, weighted D-dim frame sum, weights ``(B, T)``)."""
        w = self.weights(query, frames, mask)
        pooled = torch.einsum("bt,btd->bd", w, frames)
        return F.relu(self.proj(self.out_drop(pooled))), pooled, w


# ---------------------------------------------------------------- frame masks and windows (baselines)

def frame_mask(valid: torch.Tensor | None, n_frames: int, batch: int | None = None,
               device=None) -> torch.Tensor:
    """``(B, n_frames)`` True for frames of real audio: the first ``ceil(valid · n_frames)``
    (at least 1), where ``valid`` ``(B,)`` is the real-audio fraction of each segment (the
    batch's ``valid`` key); all True when ``valid`` is None."""
    if valid is None:
        return torch.ones(batch, n_frames, dtype=torch.bool, device=device)
    n = (valid.float() * n_frames).ceil().clamp(1, n_frames)
    return torch.arange(n_frames, device=valid.device).unsqueeze(0) < n.unsqueeze(1)


def window_starts(n_valid: torch.Tensor, window: int, hop: int,
                  n_frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluation windows covering each item's real frames: ``k_i = ceil((n_i − W) / hop) + 1``
    windows spread evenly from frame 0 to ``n_i − W`` (one at 0 when ``n_i ≤ W``), so the last
    ends exactly at the last real frame. → ``starts`` ``(B, K)`` and ``mask`` ``(B, K)``
    (masked entries are 0). K is the largest ``k_i``, or with ``n_frames`` the most any item
    of that many frames can need: a shape that doesn't depend on the data (ONNX export)."""
    span = (n_valid - window).clamp_min(0)
    k = torch.div(span + hop - 1, hop, rounding_mode="floor") + 1
    k_max = int(k.max()) if n_frames is None else -(-max(n_frames - window, 0) // hop) + 1
    j = torch.arange(k_max, device=n_valid.device).unsqueeze(0)
    mask = j < k.unsqueeze(1)
    starts = torch.round(j * span.unsqueeze(1).float() / (k - 1).clamp_min(1).unsqueeze(1).float()).long()
    return torch.where(mask, starts, torch.zeros_like(starts)), mask


def take_windows(x: torch.Tensor, starts: torch.Tensor, window: int) -> torch.Tensor:
    """``x`` ``(B, T, D)``, ``starts`` ``(B, K)`` → ``(B, K, window, D)`` (a gather, no copy of
    the full unfolded tensor)."""
    offsets = starts.unsqueeze(-1) + torch.arange(window, device=x.device)          # (B, K, W)
    idx = offsets.reshape(x.shape[0], -1, 1).expand(-1, -1, x.shape[-1])
    return torch.gather(x, 1, idx).reshape(x.shape[0], starts.shape[1], window, x.shape[-1])


def sinusoidal_positions(n: int, dim: int, device=None) -> torch.Tensor:
    """``(n, dim)`` fixed sine/cosine position encodings (Vaswani et al.)."""
    pos = torch.arange(n, device=device, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10_000.0) / dim))
    out = torch.zeros(n, dim, device=device)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return out


# ---------------------------------------------------------------- heads and attention (baselines)

class ClassifierHead(nn.Module):
    """The MLP every baseline ends in: ``in_dim`` → [Linear → ReLU → Dropout] × (layers − 1) →
    Linear → ``n_classes`` (``layers=2``: one hidden layer of ``hidden`` units)."""

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 128, layers: int = 2, dropout: float = 0.1):
        super().__init__()
        mods, d = [], in_dim
        for _ in range(max(layers, 1) - 1):
            mods += [nn.Linear(d, hidden), nn.ReLU(), nn.Dropout(dropout)]
            d = hidden
        mods.append(nn.Linear(d, n_classes))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention: ``x ← x + MHA(LN(x), LN(y), LN(y))``, then
    ``x ← x + FFN(LN(x))``. ``y_mask`` ``(B, T_y)`` True = a real key."""

    def __init__(self, dim: int, heads: int = 4, ffn_dim: int = 256, dropout: float = 0.1):
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_mask: torch.Tensor | None = None) -> torch.Tensor:
        kv = self.norm_kv(y)
        pad = None if y_mask is None else ~y_mask.bool()
        h, _ = self.attn(self.norm_q(x), kv, kv, key_padding_mask=pad, need_weights=False)
        x = x + self.drop(h)
        return x + self.drop(self.ff(self.norm_ff(x)))


class GroupWiseLinear(nn.Module):
    """Query2Label's output layer: one linear unit per class on that class's query embedding,
    ``(B, C, D)`` → ``(B, C)`` logits."""

    def __init__(self, n_classes: int, dim: int):
        super().__init__()
        bound = 1.0 / math.sqrt(dim)
        self.weight = nn.Parameter(torch.empty(n_classes, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_classes).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.weight).sum(-1) + self.bias
