"""Models: CA-MSER and the baselines of the same literature, built from an experiment's
``model:`` section through one registry (:mod:`camser.models.registry`), each one of the two
kinds of :mod:`camser.models.base`:

* ``torch`` (:class:`~camser.models.base.SegmentModel`): CA-MSER (``camser``), ``lstm``,
  ``query2label``, ``multimodal``, and a seed ``ensemble`` of any of them — batches of segment features → logits, trained by epochs;
* ``sklearn`` (:class:`~camser.models.base.UtteranceModel`): ``mlp``, ``opensmile``,
  ``linear``, ``random`` — one vector per utterance, ``fit`` / ``predict_proba``.
"""
from __future__ import annotations

# importing a model module registers it
from . import baselines, camser, classic, ensemble, multimodal  # noqa: F401
from .base import SegmentModel, UtteranceModel
from .camser import ABLATIONS, CAMSER, PRESETS, CAMSERConfig, config_from_section
from .registry import (REGISTRY, ModelRecord, build_model, check_model_section, check_vote, load_pretrained,
                       model_kind, model_record, prepare_utterance_inputs, register_model, required_inputs,
                       saveable_models)

__all__ = ["ABLATIONS", "CAMSER", "CAMSERConfig", "PRESETS", "REGISTRY", "ModelRecord", "SegmentModel",
           "UtteranceModel", "build_model", "check_model_section", "check_vote", "config_from_section",
           "load_pretrained", "model_kind",
           "model_record", "prepare_utterance_inputs", "register_model", "required_inputs", "saveable_models"]
