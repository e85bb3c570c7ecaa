"""Everything a run needs before training: the labelled corpus and its cached features."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..augment import augmented_copies, original_id
from ..config import ExperimentConfig
from ..corpora import apply_label_set, read_manifest, scan_corpus
from ..errors import CamserError
from ..features.store import KINDS
from ..types import Utterance


@dataclass
class PreparedData:
    utterances: list[Utterance]
    labels: list[str]
    stores: dict          # feature kind → FeatureStore (rows = the shared segment table)
    # utterance-level stores a model asked for (rows = utterances: openSMILE functionals, text
    # token embeddings), keyed by batch key; see camser.models.prepare_utterance_inputs
    utterance_stores: dict = field(default_factory=dict)
    # features.augment: the augmented copies of the utterances (rows in the segment stores;
    # training data only, never in ``utterances``, which folds and statistics are made of)
    augmented: list[Utterance] = field(default_factory=list)

    @property
    def every_utterance(self) -> list[Utterance]:
        """The utterances of the segment stores' rows: originals, then augmented copies."""
        return self.utterances + self.augmented

    @property
    def copies(self) -> dict[str, list[str]]:
        """Original id → ids of its augmented copies."""
        out: dict[str, list[str]] = {}
        for c in self.augmented:
            out.setdefault(original_id(c.id), []).append(c.id)
        return out

    def label_index(self) -> dict[str, int]:
        """Utterance id (copies included) → index into ``labels``."""
        return {u.id: self.labels.index(u.label) for u in self.every_utterance}

    def with_copies(self, ids: list[str]) -> list[str]:
        """``ids`` followed by their augmented copies (a training set)."""
        copies = self.copies
        return list(ids) + [c for uid in ids for c in copies.get(uid, ())]


def default_cache_dir(cfg: ExperimentConfig) -> Path:
    """features.cache_dir, else <prepared>/cache, else $CAMSER_CACHE or ~/.cache/camser.
    Stores are named by a hash of corpus + configuration, so sharing a folder is safe."""
    if cfg.features.cache_dir:
        return Path(cfg.features.cache_dir).expanduser()
    if cfg.corpus.prepared:
        return Path(cfg.corpus.prepared) / "cache"
    return Path(os.environ.get("CAMSER_CACHE", Path.home() / ".cache" / "camser"))


def load_utterances(cfg: ExperimentConfig) -> tuple[list[Utterance], list[str]]:
    """The corpus (a prepared manifest, or a scan of corpus.root) with the label set applied."""
    if cfg.corpus.prepared:
        utterances = read_manifest(cfg.corpus.prepared)
    elif cfg.corpus.root:
        scan = scan_corpus(cfg.corpus.name, cfg.corpus.root, min_duration_s=cfg.audio.min_duration_s)
        utterances = scan.utterances
    else:
        raise CamserError("corpus: set corpus.prepared (a `camser prepare` folder) or corpus.root")
    utterances, labels = apply_label_set(utterances, cfg.corpus.name, cfg.labels)
    if not utterances:
        raise CamserError(f"labels.include: no utterance of corpus '{cfg.corpus.name}' has one of these labels")
    return utterances, labels


def prepare_data(cfg: ExperimentConfig, input_keys: set[str] | None = None, progress: bool | None = True,
                 rank: int = 0, world: int = 1, log=None) -> PreparedData:
    """Load the corpus and extract (or reuse) the features the model reads: the segment stores
    of ``input_keys`` (batch keys; None = ``features.kinds``) and the utterance-level stores the
    configured model prepares for itself (text embeddings, openSMILE functionals).

    Under torchrun every rank calls it (``rank`` of ``world``): the segment stores are
    extracted in shares, one per rank; the utterance-level ones by rank 0 while the others wait.
    ``progress``: a bar (True; None: on a terminal only); ``log``: paced progress lines instead
    of a bar (every ``output.progress_every_s``)."""
    from ..features.extract import extract_features  # heavy imports only when needed
    from ..models import prepare_utterance_inputs
    from ..runtime import wait_for_all_ranks

    utterances, labels = load_utterances(cfg)
    kinds = ([k for k in sorted(input_keys) if k in KINDS] if input_keys is not None
             else list(cfg.features.kinds))
    cache = default_cache_dir(cfg)
    progress = progress if rank == 0 else False
    augmented = augmented_copies(utterances, cfg.features.augment.specs) if kinds else []
    stores = extract_features(utterances + augmented, cfg, cache, kinds=kinds, progress=progress, rank=rank,
                              world=world, log=log, progress_every_s=cfg.output.progress_every_s)

    if rank > 0:
        wait_for_all_ranks()                 # rank 0 writes them; the others then find them complete
    utterance_stores = prepare_utterance_inputs(cfg, utterances, cache, progress=progress)
    if rank == 0 and world > 1:
        wait_for_all_ranks()
    return PreparedData(utterances, labels, stores, utterance_stores, augmented)
