"""Features of fixed-length segments: MFCC, spectrogram, chroma, mel spectrogram, SSL encoder
frames, and their cache; utterance-level openSMILE functionals and text-encoder token
embeddings (for the baselines) are cached the same way, one row per utterance.

``extract_features(utterances, cfg, cache_dir)`` → ``{kind: FeatureStore}`` is the entry point;
the per-kind modules compute one utterance's features and are what inference reuses.
"""
from .extract import (compute_features, extract_features, frames_per_segment, preemphasis,
                      prepare_waveform, resampled_length, segment_table)
from .chroma import chroma, chroma_segments
from .melspec import melspec, melspec_segments
from .mfcc import mfcc, mfcc_segments
from .spectrogram import spectrogram_segments, utterance_spectrogram
from .ssl import SSLEncoder
from .store import KINDS, FeatureStore, feature_hash, store_path

__all__ = [
    "KINDS", "FeatureStore", "SSLEncoder", "chroma", "chroma_segments", "compute_features",
    "extract_features", "feature_hash", "frames_per_segment", "melspec", "melspec_segments", "mfcc",
    "mfcc_segments", "preemphasis", "prepare_waveform", "resampled_length", "segment_table",
    "spectrogram_segments", "store_path", "utterance_spectrogram",
]
