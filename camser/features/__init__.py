"""Features of fixed-length segments: MFCC, spectrogram, SSL encoder frames, and their cache.

``extract_features(utterances, cfg, cache_dir)`` → ``{kind: FeatureStore}`` is the entry point;
the per-kind modules compute one utterance's features and are what inference reuses.
"""
from .extract import (compute_features, extract_features, frames_per_segment, preemphasis,
                      prepare_waveform, resampled_length, segment_table)
from .mfcc import mfcc, mfcc_segments
from .spectrogram import spectrogram_segments, utterance_spectrogram
from .ssl import SSLEncoder
from .store import KINDS, FeatureStore, feature_hash, store_path

__all__ = [
    "KINDS", "FeatureStore", "SSLEncoder", "compute_features", "extract_features", "feature_hash",
    "frames_per_segment", "mfcc", "mfcc_segments", "preemphasis", "prepare_waveform",
    "resampled_length", "segment_table", "spectrogram_segments", "store_path", "utterance_spectrogram",
]
