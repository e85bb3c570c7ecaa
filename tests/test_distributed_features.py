"""Feature extraction under torchrun: every rank computes a share of the rows into one cache,
and the stores are byte for byte those one process writes, fresh or resumed; rank 1 prints
nothing."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from camser.demo import tiny_wav2vec2
from camser.features.extract import _shares
from camser.features.store import DONE, MARKER, FeatureStore

from conftest import prepared_corpus

REPO = Path(__file__).resolve().parents[1]
N_UTTERANCES = 8
SSL_BATCH = 3
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1"}         # the same thread count in every process: same reduction order


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """8 synthetic utterances cut into 1 s segments, a tiny random wav2vec2, and the reference
    cache written by one process."""
    root = tmp_path_factory.mktemp("ddp_features")
    prepared = prepared_corpus(root, n_sessions=1, utterances_per_speaker=N_UTTERANCES // 2)
    encoder = tiny_wav2vec2(root / "encoder")
    config = root / "features.yaml"
    config.write_text("corpus: {name: iemocap}\n"
                      "features: {kinds: [mfcc, spectrogram, ssl], "
                      f"ssl: {{model: '{encoder}', layer: all, batch_size: {SSL_BATCH}}}}}\n"
                      "segments: {length_s: 1.0}\n")
    args = ["features", str(prepared), "--config", str(config)]
    single = subprocess.run([sys.executable, "-m", "camser.cli", *args,
                             "--set", f"features.cache_dir={root / 'single'}"],
                            capture_output=True, text=True, env=ENV, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    return SimpleNamespace(root=root, args=args, reference=root / "single")


def _torchrun(ws, cache: Path, logs: Path) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 -m camser.cli features …``, each rank's output
    in ``logs/…/attempt_0/<rank>/std{out,err}.log``."""
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "--log-dir", str(logs), "--redirects", "3", "-m", "camser.cli", *ws.args,
                           "--set", f"features.cache_dir={cache}"],
                          capture_output=True, text=True, env=ENV, timeout=300)


def _rank_output(logs: Path, rank: int) -> str:
    files = sorted(logs.glob(f"*/attempt_0/{rank}/std*.log"))
    assert len(files) == 2, files
    return "".join(f.read_text() for f in files)


def _files(cache: Path) -> dict[str, bytes]:
    return {str(f.relative_to(cache)): f.read_bytes() for f in sorted(cache.rglob("*")) if f.is_file()}


def test_two_ranks_write_the_stores_of_one_process_byte_for_byte(ws, tmp_path):
    run = _torchrun(ws, tmp_path / "cache", tmp_path / "logs")
    assert run.returncode == 0, (run.stderr + _rank_output(tmp_path / "logs", 0))[-3000:]
    reference = _files(ws.reference)
    assert {Path(f).name for f in reference} == {"data.npy", "index.csv", "meta.json", DONE, MARKER}
    assert _files(tmp_path / "cache") == reference            # no rank's done mask left behind
    assert _rank_output(tmp_path / "logs", 1) == ""            # only rank 0 prints
    rank0 = _rank_output(tmp_path / "logs", 0)
    assert all(f"{kind} " in rank0 for kind in ("mfcc", "spectrogram", "ssl"))
    # rank 0's progress bar counted only the utterances of its share: rank 1 did the rest
    shown = {int(n) for n in re.findall(r"\d+/(\d+) \[", rank0)}
    assert shown and max(shown) < N_UTTERANCES


def test_a_resumed_sharded_extraction_keeps_done_rows_and_ends_the_same(ws, tmp_path):
    """An interrupted run (simulated: a single-process mask and rank 1's mask mark whole units
    done, every other row holds garbage) is finished by two ranks: the rows marked done are not
    recomputed (a sentinel in one survives), all others come out as one process writes them."""
    cache = tmp_path / "cache"
    shutil.copytree(ws.reference, cache)
    sentinels = {}
    for folder in sorted(cache.iterdir()):
        store = FeatureStore.open(folder)
        ids = [s.utterance_id for s in store.index]
        starts = [r for r in range(len(ids)) if r == 0 or ids[r] != ids[r - 1]] + [len(ids)]
        if store.kind == "ssl":                # whole batches [k·B, (k+1)·B)
            by_process, by_rank1 = range(SSL_BATCH, 2 * SSL_BATCH), range(4 * SSL_BATCH, 6 * SSL_BATCH)
        else:                                  # whole utterances
            by_process, by_rank1 = range(starts[1], starts[2]), range(starts[3], starts[5])
        (folder / MARKER).unlink()
        for name, rows in ((DONE, by_process), ("done.rank1.npy", by_rank1)):
            mask = np.zeros(len(ids), dtype=bool)
            mask[list(rows)] = True
            np.save(folder / name, mask)
        data = np.load(folder / "data.npy", mmap_mode="r+")
        todo = np.ones(len(ids), dtype=bool)
        todo[list(by_process) + list(by_rank1)] = False
        data[todo] = np.nan
        data[by_rank1[0]] = sentinels[folder.name] = 7
        data.flush()
        del data

    run = _torchrun(ws, cache, tmp_path / "logs")
    assert run.returncode == 0, (run.stderr + _rank_output(tmp_path / "logs", 0))[-3000:]
    reference, resumed = _files(ws.reference), _files(cache)
    assert resumed.keys() == reference.keys()
    for name in reference:
        if not name.endswith("data.npy"):
            assert resumed[name] == reference[name], name
    for folder in sorted(cache.iterdir()):
        got = FeatureStore.open(folder).array
        want = FeatureStore.open(ws.reference / folder.name).array
        kept = np.all(got == sentinels[folder.name], axis=tuple(range(1, got.ndim)))
        assert kept.sum() == 1, folder.name                       # the done row was not recomputed
        np.testing.assert_array_equal(got[~kept], want[~kept])    # bit for bit, no NaN left


def _units_whole(owner: np.ndarray, starts) -> bool:
    return all(len(set(owner[a:b])) <= 1 for a, b in pairwise(starts))


@pytest.mark.parametrize("world", [2, 3, 5])
def test_shares_split_the_remaining_work_without_splitting_a_unit(world):
    lengths = np.random.default_rng(world).integers(1, 5, size=40)      # segments per utterance
    first_row = [0, *np.cumsum(lengths).tolist()]
    n = first_row[-1]
    done = np.zeros(n, dtype=bool)
    done[:first_row[10]] = True                     # resumed: mfcc done for 10 utterances,
    ssl_done = np.zeros(n, dtype=bool)
    ssl_done[:(first_row[10] // 3 + 3) * 3] = True   # ssl for the batches up to 3 beyond them
    writers = {"mfcc": SimpleNamespace(done=done), "ssl": SimpleNamespace(done=ssl_done)}
    owned = [_shares(writers, first_row, 3, r, world) for r in range(world)]
    for kind, starts in (("mfcc", first_row), ("ssl", [*range(0, n, 3), n])):
        masks = np.array([o[kind] for o in owned])
        assert (masks.sum(0) == 1).all(), kind                 # every row on exactly one rank
        owner = masks.argmax(0)
        assert (np.diff(owner) >= 0).all(), kind               # contiguous shares in rank order
        assert _units_whole(owner, starts), kind
    # each rank's work left is an equal share, give or take a unit of each kind at either end
    work = np.array([sum(int((o[k] & ~writers[k].done).sum()) for k in writers) for o in owned])
    total = int((~done).sum() + (~ssl_done).sum())
    assert work.sum() == total
    assert np.abs(work - total / world).max() <= 2 * (4 + 3) + 2, (work, total / world)


def test_one_process_owns_every_row():
    writers = {"mfcc": SimpleNamespace(done=np.zeros(5, dtype=bool))}
    assert _shares(writers, [0, 2, 5], 3, 0, 1)["mfcc"].all()
