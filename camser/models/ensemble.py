"""Seed ensembles: N trained copies of one network whose probabilities are averaged.

``camser train`` with ``train.ensemble: N`` trains the members with seeds ``s … s+N−1`` and
saves them as one model folder: ``config.json`` names the ensemble and holds the member's own
configuration, ``model.safetensors`` every member's weights (``members.K.…``). The ensemble is
itself a :class:`~camser.models.base.SegmentModel` whose output is the log of the members' mean
probability, so ``predict``, ``serve`` and the ONNX export use it as they use one model.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import checked, from_dict
from ..errors import ConfigError
from .base import SegmentModel
from .registry import build_model, check_model_section, model_record, register_model


@dataclass
class EnsembleConfig:
    member: dict[str, Any] = field(default_factory=dict)     # a member's config.json: name + its fields
    n_members: int = checked(2, ge=1)


class Ensemble(SegmentModel):
    model_name, config_class = "ensemble", EnsembleConfig

    def __init__(self, config: EnsembleConfig, members: list[SegmentModel]):
        super().__init__()
        if len(members) != config.n_members or len(members) < 1:
            raise ConfigError(f"model.n_members: {config.n_members}, but {len(members)} members were given")
        if any("audio" in m.inputs for m in members):     # an SSL encoder inside reads raw audio
            raise ConfigError("train.ensemble: members with an SSL encoder inside (train.mode: finetune) "
                              "can't be ensembled; use train.mode: frozen")
        self.config = config
        self.members = nn.ModuleList(members)

    @classmethod
    def of(cls, members: list[SegmentModel]) -> "Ensemble":
        """The ensemble of trained ``members`` (same model and configuration)."""
        first = members[0]
        return cls(EnsembleConfig({"name": first.model_name, **first.config_dict()}, len(members)), members)

    @classmethod
    def from_config(cls, config: EnsembleConfig, **kwargs) -> "Ensemble":
        member_cls = SegmentModel.named(config.member.get("name"))
        fields = {k: v for k, v in config.member.items() if k != "name"}
        return cls(config, [member_cls.from_config(from_dict(member_cls.config_class, dict(fields), "model"))
                            for _ in range(config.n_members)])

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.members[0].inputs

    @property
    def optional_inputs(self) -> tuple[str, ...]:
        return self.members[0].optional_inputs

    @property
    def pools_segments(self) -> bool:
        return self.members[0].pools_segments

    def fit_normalizers(self, stores: dict, rows) -> "Ensemble":
        for member in self.members:
            member.fit_normalizers(stores, rows)
        return self

    def batch_builder(self, data, sample_rate: int):
        return self.members[0].batch_builder(data, sample_rate)     # the members read the same batches

    def forward(self, batch: dict, return_embeddings: bool = False):
        logps, emb = [], None
        for k, member in enumerate(self.members):
            if return_embeddings and k == 0:          # the first member's vectors stand for the ensemble
                logits, emb = member(batch, return_embeddings=True)
            else:
                logits = member(batch)
            logps.append(F.log_softmax(logits.float(), dim=-1))
        mean = torch.logsumexp(torch.stack(logps), dim=0) - math.log(len(logps))
        return (mean, emb) if return_embeddings else mean


@contextmanager
def _member_errors():
    """A member section's errors name its fields ``model.member.<field>``."""
    try:
        yield
    except ConfigError as e:
        msg = str(e)
        if msg.startswith("model."):
            raise ConfigError("model.member." + msg[len("model."):]) from None
        raise


def _check(section: dict) -> EnsembleConfig:
    """The ensemble's own fields, then the member section's (as :func:`check_model_section`)."""
    config = from_dict(EnsembleConfig, {k: v for k, v in section.items() if k != "name"}, "model")
    with _member_errors():
        check_model_section(config.member)
    return config


def _inputs(section: dict) -> set[str]:
    member = section.get("member") or {}
    with _member_errors():
        return set(model_record(member).inputs(dict(member)))


@register_model("ensemble", inputs=_inputs, loader=Ensemble.from_pretrained, config=EnsembleConfig, check=_check)
def _build_ensemble(section: dict, n_classes: int, feature_dims: dict, encoder=None) -> Ensemble:
    """``{"name": "ensemble", "member": {model section}, "n_members": N}``: N untrained members."""
    config = from_dict(EnsembleConfig, {k: v for k, v in section.items() if k != "name"}, "model")
    if encoder is not None:
        raise ConfigError("train.ensemble: members with an SSL encoder inside can't be ensembled")
    members = [build_model(config.member, n_classes, feature_dims) for _ in range(config.n_members)]
    return Ensemble(EnsembleConfig({"name": config.member.get("name"), **members[0].config_dict()},
                                   config.n_members), members)
