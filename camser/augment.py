"""Augmented copies of training utterances, extracted into the feature cache beside the originals.

``features.augment`` lists the copies: every ``speeds`` value is a copy of each utterance played
that many times faster (0.9: 10 % slower and lower, as Kaldi's and SpeechBrain's speed
perturbation: the waveform resampled, tempo and pitch together), every ``noise_snr_db`` value a
copy with white noise at that signal-to-noise ratio (dB; a fixed noise per utterance, from
``seed``). A copy is an :class:`~camser.types.Utterance` of its own (id ``<id>@speed0.9``,
``<id>@noise10db-seed0``; same speaker, label and file) whose ``augment`` field says how its
audio is made from the file, so the feature store caches it like any other utterance and the
cache name changes with the copies.

Copies are training data only: cross-validation and ``camser train`` add the copies of a
fold's *training* utterances to its training set; validation and test sets, and every
statistic (speaker normalisation, corpus statistics), see original audio only.
"""
from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import soxr

from .types import Utterance

_SPEC = re.compile(r"speed(?P<speed>[0-9.]+)|noise(?P<snr>-?[0-9.]+)db-seed(?P<seed>-?[0-9]+)")


def copy_specs(speeds: Sequence[float], noise_snr_db: Sequence[float], seed: int = 0) -> list[str]:
    """The copy names of a ``features.augment`` section, in order (``speed0.9``, ``noise10db-seed0``)."""
    return [f"speed{s:g}" for s in speeds] + [f"noise{snr:g}db-seed{seed}" for snr in noise_snr_db]


def augmented_copies(utterances: Sequence[Utterance], specs: Sequence[str]) -> list[Utterance]:
    """One copy of every utterance per spec (spec-major order: every utterance's first copy,
    then the second, …)."""
    out = []
    for spec in specs:
        speed = _parse(spec)[0]
        out += [replace(u, id=f"{u.id}@{spec}", augment=spec, duration_s=u.duration_s / speed)
                for u in utterances]
    return out


def original_id(utterance_id: str) -> str:
    """The id of the utterance a copy was made from (an original's own id, ``@`` in it or not:
    only a copy's ``@<spec>`` suffix is taken off)."""
    head, sep, tail = utterance_id.rpartition("@")
    return head if sep and _SPEC.fullmatch(tail) else utterance_id


def augmented_length(n_samples: int, spec: str | None) -> int:
    """Samples a copy of an ``n_samples`` recording has (soxr's rounding: half up)."""
    speed = _parse(spec)[0] if spec else 1.0
    return n_samples if speed == 1.0 else int(np.floor(n_samples / speed + 0.5))


def augment_waveform(y: np.ndarray, sr: int, spec: str | None, key: str) -> np.ndarray:
    """The audio of a copy: ``y`` (mono, ``sr`` Hz) changed as ``spec`` says. ``key`` (the
    original utterance id) seeds the noise, so a copy is the same on every extraction."""
    if not spec:
        return y
    speed, snr_db, seed = _parse(spec)
    y = np.asarray(y, dtype=np.float32)
    if speed != 1.0:
        # resampled to sr / speed and played at sr: `speed` times faster (tempo and pitch)
        y = soxr.resample(y, sr, sr / speed).astype(np.float32)
    if snr_db is not None:
        rng = np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(key.encode())])
        power = float(np.mean(np.square(y, dtype=np.float64))) if y.size else 0.0
        sigma = np.sqrt(power / 10 ** (snr_db / 10))
        y = (y + sigma * rng.standard_normal(len(y))).astype(np.float32)
    return y


def _parse(spec: str) -> tuple[float, float | None, int]:
    m = _SPEC.fullmatch(spec)
    if m is None:
        raise ValueError(f"augmentation {spec!r}: expected speedS or noiseNdb-seedK")
    if m["speed"]:
        return float(m["speed"]), None, 0
    return 1.0, float(m["snr"]), int(m["seed"])


__all__ = ["augment_waveform", "augmented_copies", "augmented_length", "copy_specs", "original_id"]
