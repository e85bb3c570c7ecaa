"""Self-supervised speech encoder frames (wav2vec2, HuBERT, WavLM, data2vec-audio, Whisper).

One class, :class:`SSLEncoder`, hides the two input conventions of Hugging Face audio encoders:

* the wav2vec2 family takes the raw waveform, optionally normalised per chunk to zero mean and
  unit variance (whatever the checkpoint's feature extractor says, unless
  ``features.ssl.normalize`` overrides it);
* Whisper takes an 80-bin log-mel spectrogram. Its encoder is rebuilt for the segment length
  (``max_source_positions = n_mel_frames // 2``, the first rows of ``embed_positions`` kept), so a
  3 s segment is encoded as 3 s — 300 mel frames → 150 output frames — not padded to 30 s.

All preprocessing is done in torch (:meth:`SSLEncoder.forward_torch`), so the same code serves
frozen extraction (:meth:`SSLEncoder.encode`, under ``torch.inference_mode``) and end-to-end
fine-tuning with gradients flowing into ``.module``.
"""
from __future__ import annotations

import contextlib
import functools
import os
import socket
import warnings
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import SSLConfig
from ..errors import CamserError, ConfigError, first_line

WAVEFORM_FAMILY = "waveform"   # wav2vec2, HuBERT, WavLM, data2vec-audio, ... (input_values)
WHISPER_FAMILY = "whisper"     # log-mel input_features


class SSLEncoder:
    """A pretrained audio encoder turned into fixed-size frame features for one segment length.

    ``cfg.model`` is a hub id or a local folder; ``segment_samples`` is the segment length in
    samples at ``sample_rate`` Hz (the encoders are trained on 16 kHz). ``cfg.layer`` picks
    the output: ``"last"`` or an index into the hidden states (0 = the embeddings before the
    first transformer layer) → ``(T, D)`` per segment; ``"all"`` → ``(L+1, T, D)``;
    ``"mean"`` → the mean of all ``L+1`` hidden states, ``(T, D)``.
    """

    def __init__(self, cfg: SSLConfig, segment_samples: int, device: str | torch.device = "cpu",
                 sample_rate: int = 16_000):
        self.cfg = cfg
        self.segment_samples = int(segment_samples)
        self.device = torch.device(device)
        self.sample_rate = sample_rate
        config = _from_hub_or_folder(_auto_config, cfg.model, "model configuration")
        self.model_type = config.model_type
        self.family = WHISPER_FAMILY if self.model_type == "whisper" else WAVEFORM_FAMILY
        if self.family == WHISPER_FAMILY:
            self._init_whisper(cfg.model)
        else:
            self._init_waveform(cfg.model)
        expected_sr = getattr(self._feature_extractor, "sampling_rate", 16_000)
        if sample_rate != expected_sr:
            raise ConfigError(f"audio.sample_rate: {cfg.model} expects {expected_sr} Hz audio, got {sample_rate}")
        self.module.to(self.device).eval()
        mcfg = self.module.config
        self.n_layers = int(getattr(mcfg, "num_hidden_layers", None) or mcfg.encoder_layers)
        self.hidden_size = int(getattr(mcfg, "hidden_size", None) or mcfg.d_model)
        self.layer = _parse_layer(cfg.layer, self.n_layers)
        if not isinstance(cfg.frame_pool, int) or isinstance(cfg.frame_pool, bool) or cfg.frame_pool < 1:
            raise ConfigError(f"features.ssl.frame_pool: expected a positive integer, got {cfg.frame_pool!r}")
        self.frame_pool = cfg.frame_pool

    # ------------------------------------------------------------------ construction

    def _init_waveform(self, model: str) -> None:
        from transformers import AutoFeatureExtractor, AutoModel

        module = _from_hub_or_folder(AutoModel.from_pretrained, model, "model")
        if getattr(module, "main_input_name", None) != "input_values":
            raise ConfigError(f"features.ssl.model: {model} ({self.model_type}) is not a speech encoder "
                              "(expected wav2vec2, HuBERT, WavLM, data2vec-audio or Whisper)")
        self.module = module
        try:
            self._feature_extractor = AutoFeatureExtractor.from_pretrained(model, **_offline_kwargs(model))
            default_norm = bool(getattr(self._feature_extractor, "do_normalize", True))
        except Exception:  # no preprocessor_config.json: Wav2Vec2FeatureExtractor's default
            self._feature_extractor = None
            default_norm = True
        self.normalize = default_norm if self.cfg.normalize is None else bool(self.cfg.normalize)
        n = torch.tensor(self.segment_samples)
        self.frames_per_segment = int(module._get_feat_extract_output_lengths(n))

    def _init_whisper(self, model: str) -> None:
        from transformers import WhisperFeatureExtractor, WhisperForAudioClassification

        try:
            fe = WhisperFeatureExtractor.from_pretrained(model, **_offline_kwargs(model))
        except Exception:  # a folder without preprocessor_config.json: Whisper's standard front end
            fe = None
        full = _from_hub_or_folder(WhisperForAudioClassification.from_pretrained, model, "model")
        encoder = full.encoder
        if fe is None:
            fe = WhisperFeatureExtractor(feature_size=encoder.config.num_mel_bins)
        self._feature_extractor = fe
        self.normalize = False
        n_mel = self.segment_samples // fe.hop_length
        n_mel -= n_mel % 2                      # conv2 has stride 2: an even number of mel frames
        positions = n_mel // 2
        if positions < 1 or positions > encoder.embed_positions.num_embeddings:
            seconds = encoder.embed_positions.num_embeddings * 2 * fe.hop_length / fe.sampling_rate
            raise ConfigError(f"segments.length_s: Whisper encodes 0.02 to {seconds:g} s, "
                              f"got {self.segment_samples} samples")
        _shorten_whisper_positions(encoder, positions)
        self.module = encoder
        self.n_mel_frames = n_mel
        self.frames_per_segment = positions
        self._register_whisper_frontend(fe)

    def _register_whisper_frontend(self, fe) -> None:
        """Keep the log-mel constants (Hann window, mel filters) as tensors on the device."""
        self._n_fft = int(fe.n_fft)
        self._hop = int(fe.hop_length)
        self._window = torch.hann_window(self._n_fft, device=self.device)
        self._mel_filters = torch.as_tensor(np.asarray(fe.mel_filters).T, dtype=torch.float32,
                                            device=self.device)       # (n_mels, n_fft // 2 + 1)

    # ------------------------------------------------------------------ shapes

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of one segment's features: ``(T, D)``, or ``(L+1, T, D)`` for layer ``"all"``."""
        frames = -(-self.frames_per_segment // self.frame_pool)
        if self.layer == "all":
            return (self.n_layers + 1, frames, self.hidden_size)
        return (frames, self.hidden_size)

    # ------------------------------------------------------------------ torch path

    def preprocess_torch(self, audio: torch.Tensor) -> torch.Tensor:
        """Waveforms ``(B, samples)`` → the encoder's input (differentiable)."""
        if self.family == WHISPER_FAMILY:
            return self.whisper_log_mel(audio)
        if self.normalize:
            mean = audio.mean(dim=-1, keepdim=True)
            var = audio.var(dim=-1, keepdim=True, unbiased=False)
            audio = (audio - mean) / torch.sqrt(var + 1e-7)   # as Wav2Vec2FeatureExtractor
        return audio

    def whisper_log_mel(self, audio: torch.Tensor) -> torch.Tensor:
        """``(B, samples)`` → ``(B, n_mels, n_mel_frames)``: WhisperFeatureExtractor's log-mel
        (centred reflect-padded STFT, hop 10 ms, power → mel → log10, clipped at each example's
        maximum − 8, scaled by (x + 4) / 4) without its padding to 30 s."""
        window = self._window.to(audio.device)
        stft = torch.stft(audio, self._n_fft, self._hop, window=window, center=True, pad_mode="reflect",
                          return_complex=True)
        power = (stft[..., :-1].abs() ** 2).contiguous()
        mel = self._mel_filters.to(audio.device) @ power
        log_spec = torch.clamp(mel, min=1e-10).log10()
        peak = log_spec.amax(dim=(-2, -1), keepdim=True)
        log_spec = torch.maximum(log_spec, peak - 8.0)
        return ((log_spec + 4.0) / 4.0)[..., : self.n_mel_frames]

    def forward_torch(self, audio: torch.Tensor) -> torch.Tensor:
        """Waveforms ``(B, segment_samples)`` float32 → the selected representation
        ``(B, T, D)`` (or ``(B, L+1, T, D)`` for ``"all"``). Gradients flow into ``.module``;
        train/eval mode is the caller's (``.module.train()`` enables the model's own dropout and,
        for wav2vec2, SpecAugment-style masking when its config asks for it)."""
        if audio.dim() != 2 or audio.shape[-1] != self.segment_samples:
            raise ValueError(f"expected audio of shape (batch, {self.segment_samples}), got {tuple(audio.shape)}")
        x = self.preprocess_torch(audio)
        need_all = self.layer != "last"
        # oneDNN (mkldnn) was measured for the exact-length (3 s) Whisper-base encoder: 8 × 3 s
        # through encode() took 0.32–0.33 s with it and 0.32–0.35 s without (torch 2.13 CPU,
        # 2 threads), so it is left on. An earlier report had it ~9× slower elsewhere; if that
        # shows up, wrap this call in ``torch.backends.mkldnn.flags(enabled=False)``.
        if self.family == WHISPER_FAMILY:
            out = self.module(input_features=x, output_hidden_states=need_all)
        else:
            out = self.module(input_values=x, output_hidden_states=need_all)
        if self.layer == "last":
            return self._pool_frames(out.last_hidden_state)
        hidden = out.hidden_states
        if isinstance(self.layer, int):
            return self._pool_frames(hidden[self.layer])
        stacked = torch.stack(tuple(hidden), dim=1)          # (B, L+1, T, D), embeddings first
        return self._pool_frames(stacked if self.layer == "all" else stacked.mean(dim=1))

    def _pool_frames(self, x: torch.Tensor) -> torch.Tensor:
        """Average ``frame_pool`` consecutive frames (the last group may be shorter)."""
        if self.frame_pool == 1:
            return x
        lead, (t, d) = x.shape[:-2], x.shape[-2:]
        y = F.avg_pool1d(x.reshape(-1, t, d).transpose(1, 2), self.frame_pool, ceil_mode=True)
        return y.transpose(1, 2).reshape(*lead, -1, d)

    # ------------------------------------------------------------------ frozen path

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """Frozen features: ``(B, segment_samples)`` float32 → float32 ``(B, *output_shape)``."""
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        was_training = self.module.training
        self.module.eval()
        try:
            with torch.inference_mode():
                out = self.forward_torch(x)
        finally:
            self.module.train(was_training)
        return out.float().cpu().numpy()

    def describe(self) -> dict:
        """What a cache records about the encoder."""
        return {"model": self.cfg.model, "model_type": self.model_type, "layer": self.layer,
                "normalize": self.normalize, "n_layers": self.n_layers, "hidden_size": self.hidden_size,
                "frames_per_segment": self.frames_per_segment, "frame_pool": self.frame_pool}


# ---------------------------------------------------------------------- helpers

def _parse_layer(layer: int | str, n_layers: int) -> int | str:
    if isinstance(layer, str) and layer.strip().lstrip("-").isdigit():
        layer = int(layer)
    if isinstance(layer, bool) or not isinstance(layer, (int, str)):
        raise ConfigError(f"features.ssl.layer: expected last, all, mean or an integer, got {layer!r}")
    if isinstance(layer, str):
        if layer not in ("last", "all", "mean"):
            raise ConfigError(f"features.ssl.layer: expected last, all, mean or an integer, got {layer!r}")
        return layer
    if not -(n_layers + 1) <= layer <= n_layers:
        raise ConfigError(f"features.ssl.layer: {layer} is out of range for a model with {n_layers} "
                          f"layers (0..{n_layers}, 0 = embeddings)")
    return layer % (n_layers + 1)


def _shorten_whisper_positions(encoder: nn.Module, positions: int) -> None:
    """Make a WhisperEncoder accept ``2 * positions`` mel frames: its forward checks the input
    length against ``config.max_source_positions`` and adds all of ``embed_positions``."""
    old = encoder.embed_positions
    new = nn.Embedding(positions, old.embedding_dim)
    with torch.no_grad():
        new.weight.copy_(old.weight[:positions])
    new.requires_grad_(False)
    new.to(old.weight.device, old.weight.dtype)
    encoder.embed_positions = new
    encoder.config.max_source_positions = positions
    encoder.max_source_positions = positions


def _auto_config(model: str, **kwargs):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model, **kwargs)


def _looks_local(model: str) -> bool:
    """A path rather than a hub id ("name" or "org/name")."""
    return (os.path.isabs(model) or model.startswith((".", "~")) or model.count("/") > 1
            or os.sep != "/" and os.sep in model)


def _from_hub_or_folder(load: Callable, model: str, what: str, field: str = "features.ssl.model"):
    """Call ``load(model)`` quietly, turning the usual failures into one-line CamserErrors that
    name the config ``field`` the model came from. A hub id on a machine that can't reach the
    hub is looked up in the local cache only, so a missing model fails at once (the hub client
    would retry five times, ~25 s)."""
    path = Path(os.path.expanduser(model))
    if _looks_local(model) and not path.exists():
        raise ConfigError(f"{field}: {model}: no such folder")
    offline = None if path.exists() else _hub_unreachable()
    try:
        with _quiet_transformers():
            if offline:
                return load(model, local_files_only=True)
            return load(str(path) if path.exists() else model)
    except CamserError:
        raise
    except Exception as e:
        if path.is_dir():
            raise CamserError(f"{field}: could not load the {what} from folder {model} "
                              f"({first_line(e)})") from None
        if offline:
            raise CamserError(
                f"{field}: the Hugging Face hub is unreachable ({offline}) and '{model}' is not in "
                f"the local cache; give a local folder instead: --set {field}=/path/to/folder") from None
        if _is_download_failure(e):
            raise CamserError(
                f"{field}: could not download '{model}' from the Hugging Face hub (unreachable, or no "
                f"such model: {first_line(e)[:100]}); give a local folder instead: "
                f"--set {field}=/path/to/folder") from None
        raise


def _offline_kwargs(model: str) -> dict:
    """``local_files_only=True`` for a hub id while the hub is unreachable (no retried requests)."""
    local = Path(os.path.expanduser(model)).exists()
    return {"local_files_only": True} if not local and _hub_unreachable() else {}


def _hub_unreachable() -> str | None:
    """Why the Hugging Face hub can't be reached, known without a request: offline mode is on,
    or the hub's host name does not resolve. None: try it. Behind a proxy the name may only
    resolve for the proxy, so it is not checked then."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    host = urlsplit(constants.ENDPOINT).hostname or "huggingface.co"
    return None if _resolves(host) else f"{host} does not resolve"


@functools.lru_cache(maxsize=None)
def _resolves(host: str) -> bool:
    """Whether ``host`` has an address (once per process: a machine is offline for a whole run)."""
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


def _is_download_failure(e: Exception) -> bool:
    if isinstance(e, (OSError, ConnectionError, TimeoutError)):
        return True
    mod = type(e).__module__.split(".")[0]
    return mod in ("requests", "urllib3", "httpx", "httpcore", "huggingface_hub")


@contextlib.contextmanager
def _quiet_transformers():
    """Silence load-time chatter (weight progress bars, "newly initialised" notes for the
    Whisper classification head we discard) while loading, then restore the settings."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


class FinetuneEncoder(torch.nn.Module):
    """The SSL encoder as a trainable submodule: audio (B, samples) → frames, gradients included."""

    def __init__(self, ssl):
        super().__init__()
        self.ssl = ssl
        self.encoder = ssl.module          # registered: its parameters are trained

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.ssl.forward_torch(audio)
