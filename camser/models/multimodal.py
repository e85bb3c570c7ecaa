"""Audio + text fusion (``model.name: multimodal``): SSL audio frames and a BERT-style text
encoder's token embeddings of the transcript, fused by attention, pooled and classified.

* audio: the cached SSL frames of the segment (:class:`~camser.models.baselines.FrameInput`:
  per-layer layer norm, learned layer weights when every layer is cached), projected to
  ``d_model``, padding frames masked;
* text: the utterance's transcript through a frozen text encoder (``model.text_encoder``, a
  Hugging Face id or a local folder; default ``bert-base-uncased``). Its last-layer token
  embeddings are computed once per corpus and cached (:mod:`camser.features.text`), so no
  tokenising or BERT forward pass happens during training; every segment of an utterance sees
  the whole transcript. A missing transcript is the empty string (``[CLS] [SEP]``).
* fusion (``model.fusion``): ``self`` — transformer self-attention over the concatenated audio
  and text token sequences (a learned modality embedding tells them apart); ``cross`` — per
  layer, audio attends to text and text attends to audio
  (:class:`~camser.models.blocks.CrossAttentionBlock`, both updated from the previous layer).
  With a single modality (``model.modalities: [audio]`` or ``[text]``) fusion is
  self-attention over that modality's tokens.
* pooling, per modality: statistics pooling (mean and std, ``stats_pool: true``) or the mean
  only (``stats_pool: false``); ``text_cls: true`` takes the text side's ``[CLS]`` position
  instead of pooling the text tokens. The pooled vectors are concatenated into a 2-layer MLP.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import checked
from ..errors import ConfigError
from ..features.batches import FeatureBatches
from .base import SegmentModel
from .registry import register_model
from .baselines import FrameInput, _no_finetune, config_from, frame_dims
from .blocks import ClassifierHead, CrossAttentionBlock, mean_pool, stats_pool

MODALITIES = ("audio", "text")
FUSIONS = ("self", "cross")


# Every field declares its allowed values (checked by from_dict; tests/test_model_config_fuzz.py).
@dataclass
class MultimodalConfig:
    n_classes: int = checked(4, ge=1)
    # distinct (in any order)
    modalities: list[str] = checked(lambda: ["audio", "text"], choices=MODALITIES, items=True, min_items=1)
    fusion: str = checked("cross", choices=FUSIONS)   # self | cross
    text_encoder: str = "bert-base-uncased"   # hub id or local folder (frozen; embeddings cached)
    max_text_tokens: int = checked(128, ge=2)   # [CLS] and [SEP] at least
    # storage dtype of the cached token embeddings
    text_dtype: str = checked("float16", choices=("float16", "float32"))
    stats_pool: bool = True           # mean and std (false: mean only)
    text_cls: bool = False            # the text side's [CLS] position instead of pooled tokens
    d_model: int = checked(128, ge=1)
    heads: int = checked(4, ge=1)
    layers: int = checked(1, ge=1)
    ffn_dim: int = checked(256, ge=1)
    head_hidden: int = checked(128, ge=1)
    dropout: float = checked(0.1, ge=0, lt=1)
    normalize: bool = True            # layer norm of the SSL frames (per layer)
    # read from the data
    audio_dim: int = checked(768, ge=1)
    audio_frames: int = checked(149, ge=1)
    audio_layers: int | None = checked(None, ge=1)
    text_dim: int = checked(768, ge=1)
    text_tokens: int = checked(128, ge=1)

    def __post_init__(self):
        """Rules between fields and items (each field's own values are declared above)."""
        if len(set(self.modalities)) != len(self.modalities):
            raise ConfigError(f"model.modalities: expected distinct items, got {self.modalities!r}")
        self.modalities = [m for m in MODALITIES if m in self.modalities]
        if self.text_cls and "text" not in self.modalities:
            raise ConfigError("model.text_cls: true needs 'text' in model.modalities")
        if self.d_model % self.heads:
            raise ConfigError(f"model.heads: {self.heads} does not divide model.d_model {self.d_model}")


class MultimodalSER(SegmentModel):
    """``forward(batch) → (B, n_classes)`` logits; ``batch``: ``ssl`` (B, [L,] T, D) and
    ``valid`` (B,) for audio, ``text`` (B, N, D_t) zero-padded token embeddings for text."""

    model_name, config_class = "multimodal", MultimodalConfig

    optional_inputs = ("valid",)      # the audio frames' real-audio fraction, when the batch has it

    def __init__(self, config: MultimodalConfig):
        super().__init__()
        self.config = c = config
        d = c.d_model
        self.use_audio, self.use_text = "audio" in c.modalities, "text" in c.modalities
        if self.use_audio:
            self.audio = FrameInput("ssl", c.audio_dim, c.audio_layers, c.normalize)
            self.audio_proj = nn.Linear(c.audio_dim, d)
        if self.use_text:
            self.text_proj = nn.Linear(c.text_dim, d)
        self.modality = nn.Parameter(torch.zeros(2, d))
        nn.init.normal_(self.modality, std=0.02)
        self.cross = self.use_audio and self.use_text and c.fusion == "cross"
        if self.cross:
            self.audio_from_text = nn.ModuleList(CrossAttentionBlock(d, c.heads, c.ffn_dim, c.dropout)
                                                 for _ in range(c.layers))
            self.text_from_audio = nn.ModuleList(CrossAttentionBlock(d, c.heads, c.ffn_dim, c.dropout)
                                                 for _ in range(c.layers))
        else:
            layer = nn.TransformerEncoderLayer(d, c.heads, c.ffn_dim, c.dropout, batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        per = 2 * d if c.stats_pool else d
        width = (per if self.use_audio else 0) + ((d if c.text_cls else per) if self.use_text else 0)
        self.head = ClassifierHead(width, c.n_classes, c.head_hidden, 2, c.dropout)

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(k for k, used in (("ssl", self.use_audio), ("text", self.use_text)) if used)

    def batch_builder(self, data, sample_rate: int):
        text = data.utterance_stores.get("text") if self.use_text else None
        if self.use_text and text is None:
            raise ConfigError("model.modalities: 'text' needs the text embeddings (prepared by the cv run)")
        return FeatureBatches(data.stores, data.every_utterance, sample_rate,
                              keys=["ssl"] if self.use_audio else [], text_store=text)

    def _pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return stats_pool(x, mask) if self.config.stats_pool else mean_pool(x, mask)

    def forward(self, batch: dict, return_embeddings: bool = False):
        from ..features.text import token_mask
        seqs, masks = [], []
        if self.use_audio:
            frames, amask = self.audio(batch)
            seqs.append(self.audio_proj(frames) + self.modality[0])
            masks.append(amask)
        if self.use_text:
            if "text" not in batch:
                raise ConfigError("the batch has no 'text' (this model reads the transcripts' token embeddings)")
            tokens = batch["text"].float()
            masks.append(token_mask(tokens))
            seqs.append(self.text_proj(tokens) + self.modality[1])

        if self.cross:
            a, t = seqs
            for a_blk, t_blk in zip(self.audio_from_text, self.text_from_audio):
                a, t = a_blk(a, t, masks[1]), t_blk(t, a, masks[0])
            seqs = [a, t]
        else:
            lengths = [s.shape[1] for s in seqs]
            joint = self.encoder(torch.cat(seqs, 1), src_key_padding_mask=~torch.cat(masks, 1))
            seqs = list(torch.split(joint, lengths, dim=1))
        seqs = [self.norm(s) for s in seqs]

        pooled = {}
        if self.use_audio:
            pooled["audio"] = self._pool(seqs[0], masks[0])
        if self.use_text:
            pooled["text"] = seqs[-1][:, 0] if self.config.text_cls else self._pool(seqs[-1], masks[-1])
        fused = torch.cat(list(pooled.values()), -1)
        logits = self.head(fused)
        return (logits, {**pooled, "fused": fused}) if return_embeddings else logits


def _section_config(section: dict) -> MultimodalConfig:
    """The section's own fields, checked (sizes left at their defaults)."""
    return config_from(MultimodalConfig, section, section.get("n_classes", 1))


def _inputs(section: dict) -> set[str]:
    c = _section_config(section)
    keys = {"ssl"} if "audio" in c.modalities else {"mfcc"}   # text only: MFCC rows index the segments
    return keys | ({"text"} if "text" in c.modalities else set())


def _prepare(cfg, utterances, cache_dir, progress: bool = True) -> dict:
    c = _section_config(cfg.model)
    if "text" not in c.modalities:
        return {}
    from ..features.text import text_store
    from ..runtime import resolve_device
    return {"text": text_store(utterances, c.text_encoder, cache_dir, max_tokens=c.max_text_tokens,
                               dtype=c.text_dtype, device=resolve_device(cfg.train.device), progress=progress,
                               sample_rate=cfg.audio.sample_rate)}


@register_model("multimodal", loader=MultimodalSER.from_pretrained, inputs=_inputs, prepare=_prepare,
                config=MultimodalConfig)
def _build_multimodal(section: dict, n_classes: int, feature_dims: dict, encoder=None) -> MultimodalSER:
    _no_finetune("multimodal", encoder)
    c = _section_config(section)
    data = {}
    if "audio" in c.modalities and "ssl" in feature_dims:
        dims = frame_dims(feature_dims["ssl"], "ssl")
        data.update(audio_dim=dims["input_dim"], audio_frames=dims["input_frames"], audio_layers=dims["input_layers"])
    if "text" in c.modalities and "text" in feature_dims:
        data.update(text_tokens=int(feature_dims["text"][0]), text_dim=int(feature_dims["text"][1]))
    return MultimodalSER(config_from(MultimodalConfig, section, n_classes, data))
