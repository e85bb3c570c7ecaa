"""openSMILE functionals of whole utterances (eGeMAPS, ComParE 2016, IS09 emotion, ...).

``functionals_store(utterances, cfg, "eGeMAPSv02", cache_dir)`` → a one-row-per-utterance
:class:`~camser.features.store.FeatureStore` at ``<cache_dir>/opensmile-<set>-<hash>/``; the hash
covers the feature set, the opensmile version, the audio settings and the corpus. Each file
is loaded as every other feature sees it (``audio.sample_rate``, pre-emphasis) and processed
whole by ``opensmile.Smile(feature_set, FeatureLevel.Functionals)``.

Feature sets (``model.feature_set``) are the configuration names; the opensmile package
(2.6.0, checked) names them as in :data:`FEATURE_SETS`. IS09 is the INTERSPEECH 2009 Emotion
Challenge set (``is09-13/IS09_emotion.conf``, 384 functionals), which opensmile ships as
``FeatureSet.IS09``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import ExperimentConfig, config_hash
from ..errors import CamserError, ConfigError
from ..types import Utterance
from .store import FORMAT_VERSION, FeatureStore, audio_settings, corpus_fingerprint
from .utterance import extract_utterance_store

# configuration name → opensmile.FeatureSet member (dimensions with opensmile 2.6.0)
FEATURE_SETS = {
    "eGeMAPSv02": "eGeMAPSv02",          # 88
    "eGeMAPSv01b": "eGeMAPSv01b",        # 88
    "GeMAPSv01b": "GeMAPSv01b",          # 62
    "ComParE_2016": "ComParE_2016",      # 6373
    "IS09_emotion": "IS09",              # 384
    "IS10_paraling": "IS10",             # 1582
    "IS13_ComParE": "IS13",              # 6373
    "emobase": "emobase",                # 988
}


def check_feature_set(name: str) -> str:
    if name not in FEATURE_SETS:
        raise ConfigError(f"model.feature_set: {name!r} is not one of {', '.join(FEATURE_SETS)}")
    return name


def _opensmile():
    try:
        import opensmile
    except ImportError:
        raise CamserError("model.name: opensmile needs the opensmile package "
                          "(pip install opensmile, or camser[baselines])") from None
    return opensmile


def make_smile(feature_set: str):
    """An ``opensmile.Smile`` computing ``feature_set``'s functionals."""
    opensmile = _opensmile()
    member = getattr(opensmile.FeatureSet, FEATURE_SETS[check_feature_set(feature_set)], None)
    if member is None:
        raise CamserError(f"model.feature_set: the installed opensmile {opensmile.__version__} has no "
                          f"{FEATURE_SETS[feature_set]} feature set")
    return opensmile.Smile(feature_set=member, feature_level=opensmile.FeatureLevel.Functionals)


def functionals_config(feature_set: str, cfg: ExperimentConfig) -> dict:
    """What the numbers depend on (the store hash covers it, with the corpus)."""
    return {"format_version": FORMAT_VERSION, "kind": "opensmile", "feature_set": feature_set,
            "opensmile": _opensmile().__version__, "audio": audio_settings(cfg)}


def functionals_store(utterances: Sequence[Utterance], cfg: ExperimentConfig, feature_set: str,
                      cache_dir: str | Path, progress: bool = True) -> FeatureStore:
    """The (cached) functionals of every utterance: float32 ``(n_utterances, n_features)``."""
    from .extract import load_corpus_audio, prepare_waveform

    utterances = list(utterances)
    config = functionals_config(check_feature_set(feature_set), cfg)
    h = config_hash(config, corpus_fingerprint(utterances))
    path = Path(cache_dir) / f"opensmile-{feature_set}-{h}"
    if FeatureStore.complete_at(path):
        return FeatureStore.open(path)
    smile = make_smile(feature_set)
    sr = cfg.audio.sample_rate

    def compute(batch: list[Utterance]) -> np.ndarray:
        rows = []
        for u in batch:
            y = prepare_waveform(load_corpus_audio(u.path, cfg), cfg)
            rows.append(smile.process_signal(y, sr).to_numpy(dtype=np.float32)[0])
        return np.stack(rows)

    return extract_utterance_store(path, "opensmile", utterances, sr, (len(smile.feature_names),), np.float32,
                                   compute, config, h, batch_size=32, progress=progress,
                                   extra={"feature_names": list(smile.feature_names)})
