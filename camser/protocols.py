"""Speaker-independent cross-validation folds.

Schemes (``protocol.scheme``):

- ``loso``: leave one session out (IEMOCAP: 5 folds, two speakers each).
- ``loso_speaker``: leave one speaker out (IEMOCAP: 10 folds).
- ``lnso``: leave N speakers out: the naturally sorted speakers cut into consecutive groups of
  ``protocol.n_speakers`` (the last group may be smaller).
- ``csv``: predefined folds from a CSV such as EmoBox's ``folds_emobox.csv``
  (``fold,split,file_stem[,speaker,emotion]``); ``split`` is train/test (or val/valid/dev).
- ``holdout``: one fold, the last ``protocol.n_speakers`` speakers as the test set.

Validation (``protocol.validation``):

- ``clean``: ``protocol.val_speakers`` speakers are taken from the training side of each fold
  (never a test speaker; train and validation disjoint by speaker).
- ``none``: no validation speakers; every training speaker trains (with ``train.keep: last``
  the epoch count is fixed beforehand, so nothing needs held-out speakers; more data per fold).
- ``paper``: validation = test, as the published CA-MSER code does. The test fold then picks the
  checkpoint, so its numbers are optimistic; such folds carry ``optimistic=True`` and ``warning``.
"""
from __future__ import annotations

import csv
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .config import PROTOCOL_SCHEMES as SCHEMES, VALIDATION_MODES as VALIDATION, ProtocolConfig
from .errors import CamserError, ConfigError
from .types import Utterance

PAPER_WARNING = ("protocol.validation=paper: the validation set is the test fold (as in the "
                 "published code), so the test fold chose the epoch and these numbers are "
                 "optimistic.")

_CSV_TRAIN = {"train", "training"}
_CSV_TEST = {"test", "testing"}
_CSV_VAL = {"val", "valid", "validation", "dev", "development"}


@dataclass
class Fold:
    """One train/validation/test split. ``index`` is 1-based and stable whatever
    ``protocol.folds`` selects; id lists keep the corpus order."""

    index: int
    test_ids: list[str]
    train_ids: list[str]
    val_ids: list[str]
    test_speakers: list[str]
    val_speakers: list[str]
    name: str
    train_speakers: list[str] = field(default_factory=list)
    optimistic: bool = False
    warning: str | None = None

    def to_dict(self) -> dict:
        """A JSON-able description without the id lists (for logs and results)."""
        return {"fold": self.index, "name": self.name, "test_speakers": self.test_speakers,
                "val_speakers": self.val_speakers, "train_speakers": self.train_speakers,
                "n_train": len(self.train_ids), "n_val": len(self.val_ids),
                "n_test": len(self.test_ids), "optimistic": self.optimistic,
                "warning": self.warning}


def natural_key(s: str) -> list:
    """"2" < "10", "Ses01F" < "Ses02M": digits compare as numbers."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(s)) if t]


def _sorted(items) -> list[str]:
    return sorted(set(items), key=natural_key)


# ------------------------------------------------------------------ test/train splits

@dataclass
class _Split:
    name: str
    test: list[Utterance]
    train: list[Utterance]
    val: list[Utterance] | None = None   # predefined validation (csv only)


def _by(utterances: list[Utterance], attr: str) -> dict[str, list[Utterance]]:
    groups: dict[str, list[Utterance]] = defaultdict(list)
    for u in utterances:
        groups[getattr(u, attr)].append(u)
    return groups


def _leave_groups_out(utterances, groups: list[list[str]], attr: str, title) -> list[_Split]:
    splits = []
    for group in groups:
        held = set(group)
        splits.append(_Split(title(group),
                             [u for u in utterances if getattr(u, attr) in held],
                             [u for u in utterances if getattr(u, attr) not in held]))
    return splits


def _speaker_groups(speakers: list[str], n: int) -> list[list[str]]:
    return [speakers[i:i + n] for i in range(0, len(speakers), n)]


def _csv_splits(utterances: list[Utterance], folds_csv) -> list[_Split]:
    path = Path(folds_csv)
    if not path.is_file():
        raise CamserError(f"{path}: folds CSV not found")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing_cols = {"fold", "split", "file_stem"} - set(header)
        if missing_cols:
            raise CamserError(f"{path}: missing column(s) {', '.join(sorted(missing_cols))} "
                              f"(expected fold,split,file_stem[,speaker,emotion])")
        rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    if not rows:
        raise CamserError(f"{path}: no rows")

    # Match CSV stems to utterance ids: the id itself, else the id's or the path's file stem
    # (readers may prefix ids with a folder).
    by_id = {u.id: u for u in utterances}
    by_stem: dict[str, Utterance] = {}
    for u in utterances:
        for key in (Path(u.id).stem, Path(u.path).stem):
            by_stem.setdefault(key, u)
    lookup = lambda stem: by_id.get(stem) or by_stem.get(stem)  # noqa: E731

    absent = sorted({r["file_stem"] for r in rows if lookup(r["file_stem"]) is None})
    if absent:
        raise CamserError(f"{path}: {len(absent)} file stem(s) are not in the corpus "
                          f"(e.g. {', '.join(absent[:3])})")

    fold_names = list(dict.fromkeys(r["fold"] for r in rows))
    fold_names.sort(key=natural_key)
    splits = []
    for fname in fold_names:
        role: dict[str, str] = {}
        for r in rows:
            if r["fold"] != fname:
                continue
            split = r["split"].lower()
            kind = ("test" if split in _CSV_TEST else "train" if split in _CSV_TRAIN
                    else "val" if split in _CSV_VAL else None)
            if kind is None:
                raise CamserError(f"{path}: fold {fname}: unknown split {r['split']!r} "
                                  f"(expected train, test or val)")
            uid = lookup(r["file_stem"]).id
            if role.setdefault(uid, kind) != kind:
                raise CamserError(f"{path}: fold {fname}: {r['file_stem']} is in both "
                                  f"{role[uid]} and {kind}")
        # Corpus utterances without a row in this fold are left out of it.
        pick = lambda kind: [u for u in utterances if role.get(u.id) == kind]  # noqa: E731
        val = pick("val")
        splits.append(_Split(f"fold {fname}", pick("test"), pick("train"), val or None))
    return splits


# ------------------------------------------------------------------ validation speakers

def _gender(speaker: str) -> str | None:
    return speaker[-1] if len(speaker) > 1 and speaker[-1] in "FM" else None


def _choose_val_speakers(splits: list[_Split], n_val: int) -> list[list[str]]:
    """Deterministic validation speakers for each split, from its training speakers.

    Preference order per pick: a speaker who shares no session with the test fold (IEMOCAP
    session partners share dialogues, and so crosstalk); one used least often as validation in
    earlier folds (so folds rotate); alternating gender when every id ends in F/M; then the
    first speaker after the test speakers in sorted order. Computed over all splits before
    ``protocol.folds`` selects, so a fold's choice doesn't depend on which folds run.
    """
    all_speakers = _sorted(u.speaker for s in splits for u in s.test + s.train)
    position = {s: i for i, s in enumerate(all_speakers)}
    gendered = all(_gender(s) for s in all_speakers)
    sessions = defaultdict(set)
    for s in splits:
        for u in s.test + s.train:
            sessions[u.speaker].add(u.session)
    used: Counter = Counter()
    chosen = []
    for i, split in enumerate(splits):
        test_speakers = {u.speaker for u in split.test}
        test_sessions = {u.session for u in split.test}
        candidates = _sorted(u.speaker for u in split.train if u.speaker not in test_speakers)
        if len(candidates) <= n_val:
            raise ConfigError(f"protocol.val_speakers: {split.name} has {len(candidates)} "
                              f"training speaker(s); {n_val} for validation would leave none "
                              f"to train on")
        start = max((position[s] for s in test_speakers), default=-1) + 1
        picks: list[str] = []
        for j in range(n_val):
            want = "FM"[(i + j) % 2]
            picks.append(min((c for c in candidates if c not in picks), key=lambda c: (
                bool(sessions[c] & test_sessions),
                used[c],
                gendered and _gender(c) != want,
                (position[c] - start) % len(all_speakers))))
        used.update(picks)
        chosen.append(_sorted(picks))
    return chosen


# ------------------------------------------------------------------ folds

def make_folds(utterances: list[Utterance], cfg: ProtocolConfig, folds_csv=None) -> list[Fold]:
    """Build the folds of ``cfg.scheme`` with ``cfg.validation``, keeping only ``cfg.folds``
    (1-based) when given. ``folds_csv`` is needed by ``scheme=csv``."""
    if cfg.scheme not in SCHEMES:
        raise ConfigError(f"protocol.scheme: {cfg.scheme!r} is not one of {', '.join(SCHEMES)}")
    if cfg.validation not in VALIDATION:
        raise ConfigError(f"protocol.validation: {cfg.validation!r} is not one of "
                          f"{', '.join(VALIDATION)}")
    if cfg.scheme in ("lnso", "holdout") and cfg.n_speakers < 1:
        raise ConfigError(f"protocol.n_speakers: must be at least 1, got {cfg.n_speakers}")
    if cfg.validation == "clean" and cfg.val_speakers < 1:
        raise ConfigError(f"protocol.val_speakers: must be at least 1 with validation=clean, "
                          f"got {cfg.val_speakers}")
    utterances = list(utterances)
    if not utterances:
        raise CamserError("no utterances to split into folds")

    speakers = _sorted(u.speaker for u in utterances)
    if cfg.scheme == "loso":
        groups = [[s] for s in _sorted(u.session for u in utterances)]
        splits = _leave_groups_out(utterances, groups, "session", lambda g: f"session {g[0]}")
    elif cfg.scheme == "loso_speaker":
        splits = _leave_groups_out(utterances, [[s] for s in speakers], "speaker",
                                   lambda g: f"speaker {g[0]}")
    elif cfg.scheme == "lnso":
        splits = _leave_groups_out(utterances, _speaker_groups(speakers, cfg.n_speakers),
                                   "speaker", lambda g: f"speakers {', '.join(g)}")
    elif cfg.scheme == "holdout":
        held = speakers[-cfg.n_speakers:]
        splits = _leave_groups_out(utterances, [held], "speaker",
                                   lambda g: f"holdout {', '.join(g)}")
    else:
        if folds_csv is None:
            raise ConfigError("corpus.folds_csv: required by protocol.scheme=csv")
        splits = _csv_splits(utterances, folds_csv)

    for s in splits:
        if not s.test or not s.train:
            raise CamserError(f"{s.name}: empty {'test' if not s.test else 'training'} set "
                              f"(protocol.scheme={cfg.scheme})")

    if cfg.validation == "clean":
        needs = [s for s in splits if s.val is None]
        val_choice = dict(zip(map(id, needs), _choose_val_speakers(needs, cfg.val_speakers)))

    order = {u.id: i for i, u in enumerate(utterances)}   # keep the corpus order in id lists
    folds = []
    for index, s in enumerate(splits, start=1):
        test_speakers = _sorted(u.speaker for u in s.test)
        if cfg.validation == "paper":
            # Predefined validation rows (csv) go back to training: the test fold validates.
            train = s.train + (s.val or [])
            val, val_speakers = s.test, test_speakers
        elif cfg.validation == "none":
            # Predefined validation rows (csv) train too: nothing is selected on them.
            train, val, val_speakers = s.train + (s.val or []), [], []
        elif s.val is not None:
            train, val = s.train, s.val
            val_speakers = _sorted(u.speaker for u in val)
        else:
            val_speakers = val_choice[id(s)]
            held = set(val_speakers)
            train = [u for u in s.train if u.speaker not in held]
            val = [u for u in s.train if u.speaker in held]
        train = sorted(train, key=lambda u: order[u.id])
        folds.append(Fold(
            index=index,
            test_ids=[u.id for u in s.test],
            train_ids=[u.id for u in train],
            val_ids=[u.id for u in val],
            test_speakers=test_speakers,
            val_speakers=list(val_speakers),
            name=s.name,
            train_speakers=_sorted(u.speaker for u in train),
            optimistic=cfg.validation == "paper",
            warning=PAPER_WARNING if cfg.validation == "paper" else None,
        ))

    if cfg.folds:
        bad = [i for i in cfg.folds if not 1 <= i <= len(folds)]
        if bad:
            raise ConfigError(f"protocol.folds: {bad} out of range (this protocol has folds "
                              f"1..{len(folds)})")
        wanted = set(cfg.folds)
        folds = [f for f in folds if f.index in wanted]
    return folds


def training_split(utterances: list[Utterance], cfg: ProtocolConfig) -> Fold:
    """One split over the whole corpus for training a final model: no test set, and
    ``cfg.val_speakers`` speakers held out for early stopping, chosen as ``validation: clean``
    chooses them in cross-validation; with ``validation: none`` every speaker trains (the epoch
    count is fixed: ``train.keep: last``). ``cfg.scheme`` and ``folds`` don't apply (there is no
    test fold to leave out)."""
    utterances = list(utterances)
    if cfg.validation == "none":
        if not utterances:
            raise CamserError("no utterances to train on")
        return Fold(index=1, test_ids=[], train_ids=[u.id for u in utterances], val_ids=[],
                    test_speakers=[], val_speakers=[], name="all speakers",
                    train_speakers=_sorted(u.speaker for u in utterances))
    if cfg.val_speakers < 1:
        raise ConfigError(f"protocol.val_speakers: must be at least 1 to train a model (early "
                          f"stopping needs validation speakers), got {cfg.val_speakers}")
    utterances = list(utterances)
    if not utterances:
        raise CamserError("no utterances to train on")
    (val_speakers,) = _choose_val_speakers([_Split("the whole corpus", [], utterances)], cfg.val_speakers)
    held = set(val_speakers)
    train = [u for u in utterances if u.speaker not in held]
    return Fold(index=1, test_ids=[], train_ids=[u.id for u in train],
                val_ids=[u.id for u in utterances if u.speaker in held], test_speakers=[],
                val_speakers=list(val_speakers), name="all speakers",
                train_speakers=_sorted(u.speaker for u in train))
