"""The on-disk feature cache: one memory-mapped array per (feature kind, configuration hash).

A store is a folder ``<cache_dir>/<kind>-<hash>/``::

    data.npy     rows = segments, (n_rows, *row_shape); float32 (float16 allowed for SSL frames)
    index.csv    row, utterance_id, segment_index, start, end
    meta.json    kind, shape, dtype, hash and the configuration that produced it
    done.npy     per-row done mask, rewritten atomically during extraction (resume point)
    COMPLETE     written last (temporary name, fsync, rename): only then is the store readable

A sharded extraction (several processes, see :mod:`camser.features.extract`) writes the rows
of ``data.npy`` in place from every process and keeps one done mask per process,
``done.rank<k>.npy``, so no file is rewritten by two processes; the done rows are the union of
every mask present (a resumed run, with any number of processes, starts from all of them), and
finalising merges them into ``done.npy`` and removes them, so the finished folder is the same,
byte for byte, as one process makes.

The hash covers everything the numbers depend on — the corpus (ordered utterance ids, paths,
durations), the audio and segment settings and the kind's feature settings — so a changed
configuration gets a new folder and an unchanged one is found again.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..config import FEATURE_KINDS as KINDS, ExperimentConfig, config_hash
from ..errors import CamserError
from ..types import Segment, Utterance
from ..fileio import write_bytes

FORMAT_VERSION = 1          # bump when the feature computation changes: old caches are not reused
DATA, INDEX, META, DONE, MARKER = "data.npy", "index.csv", "meta.json", "done.npy", "COMPLETE"
RANK_DONE = "done.rank{}.npy"           # one process's done mask in a sharded extraction


# ---------------------------------------------------------------------- naming

def audio_settings(cfg: ExperimentConfig) -> dict:
    """``cfg.audio`` as a store's hash covers it. ``trim_db`` is left out when off (the default),
    so caches made before the field existed stay valid."""
    audio = dataclasses.asdict(cfg.audio)
    if audio.get("trim_db") is None:
        audio.pop("trim_db")
    return audio


def kind_config(kind: str, cfg: ExperimentConfig) -> dict:
    """The settings a kind's numbers depend on (what its hash covers, with the corpus).

    SSL's ``batch_size`` is left out: it changes speed, not the features."""
    if kind not in KINDS:
        raise CamserError(f"features.kinds: unknown feature kind '{kind}' (known: {', '.join(KINDS)})")
    section = dataclasses.asdict(getattr(cfg.features, kind))
    if kind == "ssl":
        section.pop("batch_size", None)
        if section.get("frame_pool") == 1:      # the default: caches made before the field existed stay valid
            section.pop("frame_pool")
        local = Path(os.path.expanduser(section["model"]))
        if local.is_dir():          # one folder, however it is spelled, is one model
            section["model"] = str(local.resolve())
        section["model_files"] = _model_fingerprint(cfg.features.ssl.model)
    return {"format_version": FORMAT_VERSION, "kind": kind,
            "audio": audio_settings(cfg), "segments": dataclasses.asdict(cfg.segments),
            kind: section}


def corpus_fingerprint(utterances: Sequence[Utterance]) -> str:
    """Hash of the ordered (id, path, duration) triples: row order follows the utterance order.
    Paths count as the files they name (``realpath``): one corpus reached as ``../data`` from
    two checkouts, or through a symlink, shares its cache."""
    return config_hash([[u.id, os.path.realpath(u.path), round(float(u.duration_s), 6)] for u in utterances],
                       n=16)


def feature_hash(kind: str, utterances: Sequence[Utterance], cfg: ExperimentConfig) -> str:
    return config_hash(kind_config(kind, cfg), corpus_fingerprint(utterances))


def same_settings_elsewhere(cache_dir: str | Path, kind: str, cfg: ExperimentConfig) -> list[Path]:
    """Complete ``kind`` stores in ``cache_dir`` with ``cfg``'s settings for that kind: when the
    store a run asks for is not among them, another list of files made them (files added,
    removed, reordered, of other lengths, or a cache made before files counted by their real
    path), which is why that run extracts again."""
    want = json.loads(json.dumps(kind_config(kind, cfg), default=str))
    found = []
    for path in sorted(Path(cache_dir).glob(f"{kind}-*"), key=lambda p: p.stat().st_mtime):   # newest last
        try:
            meta = json.loads((path / META).read_text())
        except (OSError, ValueError):
            continue
        if meta.get("config") == want and FeatureStore.complete_at(path):
            found.append(path)
    return found


def store_path(cache_dir: str | Path, kind: str, utterances: Sequence[Utterance], cfg: ExperimentConfig) -> Path:
    """``<cache_dir>/<kind>-<hash>``."""
    return Path(cache_dir) / f"{kind}-{feature_hash(kind, utterances, cfg)}"


def _model_fingerprint(model: str) -> list | None:
    """For a local model folder, its files' names, sizes and content digests, so weights
    replaced in place (a fine-tuned checkpoint saved over the old one) give a new cache, while
    a copy of the same folder (new modification times) keeps it. None for hub ids (the id
    names the weights)."""
    p = Path(os.path.expanduser(model))
    if not p.is_dir():
        return None
    return [[f.name, f.stat().st_size, _file_digest(f)] for f in sorted(p.iterdir()) if f.is_file()]


_DIGESTS: dict[tuple, str] = {}     # (path, size, mtime) → digest: each file is read once per process


def _file_digest(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


# ---------------------------------------------------------------------- the store

class FeatureStore:
    """A feature array on disk with its segment index.

    Read: ``FeatureStore.open(path)`` (complete stores only, unless ``allow_incomplete``);
    ``store.array`` is a read-only memmap, ``store.rows_of(utterance_id)`` its rows.
    Write: ``FeatureStore.create(...)``, then :meth:`write` / :meth:`mark_done`, :meth:`flush`
    now and then (that is the resume point) and :meth:`finalize` at the end.
    """

    def __init__(self, path: Path, meta: dict, index: list[Segment], array: np.ndarray,
                 done: np.ndarray, writable: bool):
        self.path = Path(path)
        self.meta = meta
        self.index = index
        self.array = array
        self.done = done
        self.writable = writable
        self.done_name = DONE                       # the mask file this writer flushes
        self._rows: dict[str, list[int]] | None = None
        self._row_of: dict[tuple[str, int], int] | None = None
        self._fd: int | None = None                 # for read_rows
        self._wfd: int | None = None                # for write

    def __del__(self):
        for fd in (getattr(self, "_fd", None), getattr(self, "_wfd", None)):
            if fd is not None:
                os.close(fd)

    # ------------------------------------------------------------------ opening

    @staticmethod
    def complete_at(path: str | Path) -> bool:
        """Whether ``path`` holds a finished store (its completion marker exists)."""
        return (Path(path) / MARKER).is_file()

    @classmethod
    def open(cls, path: str | Path, allow_incomplete: bool = False) -> "FeatureStore":
        """Open a store for reading, memory-mapped (``mmap_mode="r"``).

        An unfinished store (no completion marker) raises CamserError unless
        ``allow_incomplete``; its ``done`` mask then says which rows hold data."""
        path = Path(path)
        if not (path / META).is_file():
            raise CamserError(f"{path}: not a feature store (no {META})")
        complete = cls.complete_at(path)
        if not complete and not allow_incomplete:
            raise CamserError(f"{path}: feature store is incomplete (extraction interrupted?); "
                              "run the feature extraction again to finish it")
        meta = json.loads((path / META).read_text())
        index = _read_index(path / INDEX)
        array = np.load(path / DATA, mmap_mode="r")
        done = np.ones(len(index), dtype=bool) if complete else _read_done(path, len(index), need_main=False)
        return cls(path, meta, index, array, done, writable=False)

    @classmethod
    def create(cls, path: str | Path, kind: str, index: Sequence[Segment], row_shape: Sequence[int],
               dtype: str | np.dtype, config: dict | None = None, hash: str | None = None,
               extra: dict | None = None, rank: int | None = None) -> "FeatureStore":
        """Open ``path`` for writing ``len(index)`` rows of ``row_shape``.

        An unfinished store with the same kind, hash, shape, dtype and index is resumed (its done
        rows kept); anything else there is cleared. A complete store is returned read-only.
        ``rank`` (one of several processes writing the store): this writer keeps its done marks in
        ``done.rank<k>.npy``; rank 0 creates or clears the folder, the others (called after it)
        only open what it made."""
        path = Path(path)
        index = list(index)
        shape = [len(index), *map(int, row_shape)]
        dtype = np.dtype(dtype).name
        meta = {"format_version": FORMAT_VERSION, "kind": kind, "shape": shape, "dtype": dtype,
                "hash": hash, "config": config or {}, **(extra or {})}
        if cls.complete_at(path):
            return cls.open(path)
        if not index:
            raise CamserError(f"{path}: nothing to store (no segments)")
        store = cls._try_resume(path, meta, index)
        if store is None and rank:
            raise CamserError(f"{path}: rank {rank} found no store to write into (rank 0 creates it first)")
        if store is None:
            if path.exists():
                shutil.rmtree(path)
            path.mkdir(parents=True)
            _atomic_write(path / META, json.dumps(meta, indent=2, default=str).encode())
            _atomic_write(path / INDEX, _index_csv(index).encode())
            np.lib.format.open_memmap(path / DATA, mode="w+", dtype=dtype, shape=tuple(shape))  # the file
            store = cls(path, meta, index, np.load(path / DATA, mmap_mode="r"),
                        np.zeros(len(index), dtype=bool), writable=True)
            store.flush()                           # done.npy: the folder is whole from here on
        if rank is not None:
            store.done_name = RANK_DONE.format(rank)
        return store

    @classmethod
    def _try_resume(cls, path: Path, meta: dict, index: list[Segment]) -> "FeatureStore | None":
        try:
            old = json.loads((path / META).read_text())
            same = all(old.get(k) == meta[k] for k in ("format_version", "kind", "shape", "dtype", "hash"))
            if not same or _read_index(path / INDEX) != index:
                return None
            array = np.load(path / DATA, mmap_mode="r")
            done = _read_done(path, len(index), need_main=True)
            if list(array.shape) != meta["shape"] or array.dtype.name != meta["dtype"]:
                return None
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            return None
        return cls(path, old, index, array, done, writable=True)

    # ------------------------------------------------------------------ reading

    @property
    def is_complete(self) -> bool:
        return self.complete_at(self.path)

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def hash(self) -> str | None:
        return self.meta.get("hash")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def __len__(self) -> int:
        return len(self.index)

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (sorted ascending) copied out with positioned reads, not through the
        memory map: pages read this way stay in the OS page cache without counting towards this
        process's resident memory, so a training epoch over a cache larger than the RAM budget
        keeps a flat RSS."""
        rows = np.asarray(rows, dtype=np.int64)
        arr = self.array
        out = np.empty((len(rows), *arr.shape[1:]), dtype=arr.dtype)
        if not isinstance(arr, np.memmap):                 # an in-memory store (tests)
            out[:] = arr[rows]
            return out
        row_bytes, fd = self._row_bytes, self._file()
        self.prefetch(rows)
        flat = out.reshape(len(rows), -1).view(np.uint8)
        for i, r in enumerate(rows):
            n = os.preadv(fd, [flat[i]], arr.offset + int(r) * row_bytes)
            if n != row_bytes:
                raise CamserError(f"{self.path / DATA}: short read at row {r} (truncated cache?)")
        return out

    @property
    def _row_bytes(self) -> int:
        return int(np.prod(self.array.shape[1:])) * self.array.dtype.itemsize

    def _file(self) -> int:
        """The data file's descriptor for positioned reads, opened once."""
        if self._fd is None:
            self._fd = os.open(self.array.filename, os.O_RDONLY)
        return self._fd

    def prefetch(self, rows: np.ndarray) -> None:
        """Ask the OS to start reading ``rows`` (sorted ascending) into its page cache and return
        at once. All of a batch's reads then run in parallel instead of one row after another
        (5x on a cold cache here), and a trainer that prefetches the next batch before computing
        this one hides the disk altogether. A no-op for in-memory stores and where the OS has no
        ``posix_fadvise``."""
        arr = self.array
        if not isinstance(arr, np.memmap) or not hasattr(os, "posix_fadvise") or len(rows) == 0:
            return
        fd, row_bytes = self._file(), self._row_bytes
        rows = np.asarray(rows, dtype=np.int64)
        for start, stop in _runs(rows):                  # one call per run of consecutive rows
            os.posix_fadvise(fd, arr.offset + int(rows[start]) * row_bytes, (stop - start) * row_bytes,
                             os.POSIX_FADV_WILLNEED)

    def rows_of(self, utterance_id: str) -> list[int]:
        """Rows of an utterance's segments, in segment order ([] if unknown)."""
        if self._rows is None:
            rows: dict[str, list[int]] = {}
            for r, seg in enumerate(self.index):
                rows.setdefault(seg.utterance_id, []).append(r)
            self._rows = rows
        return list(self._rows.get(utterance_id, []))

    def row(self, utterance_id: str, segment_index: int) -> int:
        """The row of one segment; KeyError if absent."""
        if self._row_of is None:
            self._row_of = {(s.utterance_id, s.index): r for r, s in enumerate(self.index)}
        return self._row_of[(utterance_id, segment_index)]

    def __repr__(self) -> str:
        state = "complete" if self.is_complete else f"{int(self.done.sum())}/{len(self)} rows done"
        return f"FeatureStore({str(self.path)!r}, {self.kind}, shape={self.shape}, {self.dtype}, {state})"

    # ------------------------------------------------------------------ writing

    def write(self, rows: Sequence[int] | slice, values: np.ndarray) -> None:
        """Put ``values`` into ``rows`` (cast to the store dtype). Not yet marked done.

        Positioned writes of the rows' bytes, not stores through the memory map: a mapped page is
        written back whole, so processes on two machines sharing a page of a network file system
        would overwrite each other's neighbouring rows."""
        self._check_writable()
        rows = np.arange(len(self))[rows] if isinstance(rows, slice) else np.asarray(list(rows), dtype=np.int64)
        if not len(rows):
            return
        values = np.ascontiguousarray(np.broadcast_to(np.asarray(values).astype(self.dtype, copy=False),
                                                      (len(rows), *self.shape[1:])))
        if self._wfd is None:
            self._wfd = os.open(self.path / DATA, os.O_WRONLY)
        flat, row_bytes = values.reshape(len(rows), -1).view(np.uint8), self._row_bytes
        for start, stop in _runs(rows):
            view, at = memoryview(flat[start:stop]).cast("B"), self.array.offset + int(rows[start]) * row_bytes
            while view:
                n = os.pwrite(self._wfd, view, at)
                view, at = view[n:], at + n

    def mark_done(self, rows: Iterable[int] | slice) -> None:
        self._check_writable()
        self.done[rows if isinstance(rows, slice) else list(rows)] = True

    def flush(self) -> None:
        """Data to disk first, then the done mask (atomically): a row is never recorded as done
        before its numbers are on disk, so a killed extraction resumes from a consistent point."""
        self._check_writable()
        if self._wfd is not None:
            os.fsync(self._wfd)
        buf = io.BytesIO()
        np.save(buf, self.done)
        _atomic_write(self.path / self.done_name, buf.getvalue())

    def finalize(self) -> "FeatureStore":
        """Flush, merge every rank's done mask into ``done.npy`` (a sharded extraction: called by
        one process once all have flushed) and write the completion marker (last); returns the
        store opened read-only."""
        self.flush()
        self.done = _read_done(self.path, len(self), need_main=False)
        if not self.done.all():
            missing = int((~self.done).sum())
            raise CamserError(f"{self.path}: {missing} of {len(self)} rows were not computed")
        if self.done_name != DONE:
            self.done_name = DONE
            self.flush()
        for f in self.path.glob(RANK_DONE.format("*")):   # merged into done.npy above
            f.unlink()
        _atomic_write(self.path / MARKER, b"complete\n")
        self.writable = False
        if self._wfd is not None:
            os.close(self._wfd)
            self._wfd = None
        return FeatureStore.open(self.path)

    def _check_writable(self) -> None:
        if not self.writable:
            raise CamserError(f"{self.path}: feature store is open read-only")


# ---------------------------------------------------------------------- files

def _index_csv(index: Sequence[Segment]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["row", "utterance_id", "segment_index", "start", "end"])
    for r, s in enumerate(index):
        w.writerow([r, s.utterance_id, s.index, s.start, s.end])
    return buf.getvalue()


def _read_index(path: Path) -> list[Segment]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return [Segment(row["utterance_id"], int(row["segment_index"]), int(row["start"]), int(row["end"]))
                for row in reader]


def _read_done(path: Path, n: int, need_main: bool) -> np.ndarray:
    """The done rows of an unfinished store: the union of ``done.npy`` and every rank's mask.
    ``need_main``: a folder without ``done.npy`` was never fully created (FileNotFoundError)."""
    files = sorted(path.glob(RANK_DONE.format("*")))
    if need_main or (path / DONE).is_file():
        files.insert(0, path / DONE)
    done = np.zeros(n, dtype=bool)
    for f in files:
        mask = np.load(f)
        if mask.shape != (n,):
            raise ValueError(f"{f}: {mask.shape} rows, expected {n}")
        done |= mask.astype(bool)
    return done


def _runs(rows: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` positions in ``rows`` of its runs of consecutive values."""
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    return list(zip([0, *breaks.tolist()], [*breaks.tolist(), len(rows)]))


def _atomic_write(path: Path, data: bytes) -> None:
    write_bytes(path, data, sync_folder=True)
