"""The feature cache: layout, reuse, invalidation, resume after a kill, completion marker."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import camser.features.extract as extract_mod
from camser.audio import load_audio
from camser.config import ExperimentConfig, SegmentsConfig, SSLConfig
from camser.errors import CamserError
from camser.features import (FeatureStore, compute_features, extract_features, prepare_waveform,
                             resampled_length, segment_table)
from camser.features.store import DONE, MARKER
from camser.types import Segment, Utterance

SR = 16_000


def _write(path: Path, seconds: float, sr: int = SR, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    y = 0.3 * np.sin(2 * np.pi * (150 + 50 * seed) * t) + 0.02 * rng.standard_normal(t.size)
    sf.write(str(path), y.astype(np.float32), sr)
    return path


@pytest.fixture(scope="module")
def tiny_w2v(tmp_path_factory):
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("w2v")
    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(32, 32), conv_stride=(5, 5), conv_kernel=(10, 10),
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, vocab_size=12)
    Wav2Vec2Model(cfg).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folder)
    return str(folder)


@pytest.fixture()
def corpus(tmp_path):
    """Five short files (one at 22.05 kHz) → 1 s segments: 1 + 2 + 3 + 1 + 2 = 9 rows."""
    specs = [(0.7, SR), (1.3, SR), (2.2, 22_050), (1.0, SR), (1.6, SR)]
    utts = []
    for i, (sec, sr) in enumerate(specs):
        p = _write(tmp_path / f"u{i}.wav", sec, sr, seed=i)
        utts.append(Utterance(f"u{i}", str(p), "neu", f"s{i % 2}", f"s{i % 2}", sec))
    return utts


def _cfg(model: str, **ssl) -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.segments = SegmentsConfig(length_s=1.0)
    cfg.audio.pre_emphasis = 0.97
    cfg.features.ssl = SSLConfig(model=model, batch_size=2, **ssl)
    return cfg


def _counting_loader(monkeypatch, fail_after: int | None = None) -> list:
    calls = []

    def load(path, *a, **k):
        if fail_after is not None and len(calls) >= fail_after:
            raise KeyboardInterrupt("simulated kill")
        calls.append(path)
        return load_audio(path, *a, **k)

    monkeypatch.setattr(extract_mod, "load_audio", load)
    return calls


# ---------------------------------------------------------------------- segment table

@pytest.mark.parametrize("file_sr", [8_000, 16_000, 22_050, 44_100, 48_000])
def test_header_length_equals_loaded_length(tmp_path, file_sr):
    for k, sec in enumerate([0.5, 1.2345, 2.71828, 3.0]):
        p = _write(tmp_path / f"a{k}.wav", sec, file_sr)
        assert resampled_length(p, SR) == len(load_audio(p, SR))


def test_segment_table_in_utterance_order(corpus, tiny_w2v):
    table = segment_table(corpus, _cfg(tiny_w2v))
    assert [s.utterance_id for s in table] == ["u0", "u1", "u1", "u2", "u2", "u2", "u3", "u4", "u4"]
    assert table[1:3] == [Segment("u1", 0, 0, SR), Segment("u1", 1, SR, 2 * SR)]


# ---------------------------------------------------------------------- extraction

def test_extract_writes_expected_stores(corpus, tiny_w2v, tmp_path):
    cfg = _cfg(tiny_w2v)
    stores = extract_features(corpus, cfg, tmp_path / "cache", progress=False)
    assert set(stores) == {"mfcc", "spectrogram", "ssl"}
    assert stores["mfcc"].array.shape == (9, 100, 40) and stores["mfcc"].dtype == np.float32
    assert stores["spectrogram"].array.shape == (9, 100, 200)
    assert stores["ssl"].array.dtype == np.float16 and stores["ssl"].array.shape[0] == 9
    for kind, st in stores.items():
        assert st.is_complete and len(st) == 9
        assert st.path.parent == tmp_path / "cache" and st.path.name.startswith(f"{kind}-")
        assert not st.array.flags.writeable                # read-only memmap
        meta = json.loads((st.path / "meta.json").read_text())
        assert meta["kind"] == kind and meta["shape"] == list(st.array.shape) and meta["hash"] in st.path.name
        assert meta["config"]["audio"]["pre_emphasis"] == 0.97
    st = stores["mfcc"]
    assert st.rows_of("u2") == [3, 4, 5] and st.row("u4", 1) == 8 and st.rows_of("nope") == []
    # values: exactly what the per-utterance computation gives
    from camser.features import SSLEncoder

    enc = SSLEncoder(cfg.features.ssl, SR)
    table = segment_table(corpus, cfg)
    for u in corpus:
        rows = stores["mfcc"].rows_of(u.id)
        y = prepare_waveform(load_audio(u.path, SR), cfg, resampled_length(u.path, SR))
        direct = compute_features(y, [table[r] for r in rows], cfg, ["mfcc", "spectrogram", "ssl"], enc)
        np.testing.assert_array_equal(stores["mfcc"].array[rows], direct["mfcc"])
        np.testing.assert_array_equal(stores["spectrogram"].array[rows], direct["spectrogram"])
        np.testing.assert_allclose(stores["ssl"].array[rows].astype(np.float32), direct["ssl"],
                                   rtol=2e-3, atol=2e-3)      # float16 storage


def test_second_run_reuses_without_loading_audio(corpus, tiny_w2v, tmp_path, monkeypatch):
    cfg = _cfg(tiny_w2v)
    first = extract_features(corpus, cfg, tmp_path, progress=False)

    def boom(*a, **k):
        raise AssertionError("audio loaded on a cache hit")

    monkeypatch.setattr(extract_mod, "load_audio", boom)
    monkeypatch.setattr(extract_mod.sf, "info", boom)
    again = extract_features(corpus, cfg, tmp_path, progress=False)
    for kind in first:
        assert again[kind].path == first[kind].path
        np.testing.assert_array_equal(again[kind].array, first[kind].array)


def test_config_change_makes_a_new_store(corpus, tiny_w2v, tmp_path, monkeypatch):
    cfg = _cfg(tiny_w2v)
    first = extract_features(corpus, cfg, tmp_path, kinds=["mfcc", "spectrogram"], progress=False)
    cfg2 = _cfg(tiny_w2v)
    cfg2.features.mfcc.n_mfcc = 20
    calls = _counting_loader(monkeypatch)
    second = extract_features(corpus, cfg2, tmp_path, kinds=["mfcc", "spectrogram"], progress=False)
    assert second["mfcc"].path != first["mfcc"].path and second["mfcc"].array.shape[-1] == 20
    assert second["spectrogram"].path == first["spectrogram"].path     # untouched kind reused
    assert len(calls) == len(corpus)
    # pre-emphasis, silence trimming, segment length and the corpus itself change every kind's hash
    for change in (lambda c: setattr(c.audio, "pre_emphasis", 0.0),
                   lambda c: setattr(c.audio, "trim_db", 30.0),
                   lambda c: setattr(c.segments, "length_s", 0.5)):
        c = _cfg(tiny_w2v)
        change(c)
        out = extract_features(corpus, c, tmp_path, kinds=["spectrogram"], progress=False)
        assert out["spectrogram"].path != first["spectrogram"].path
    lines = []
    out = extract_features(corpus[:-1], cfg, tmp_path, kinds=["spectrogram"], progress=False, log=lines.append)
    assert out["spectrogram"].path != first["spectrogram"].path and len(out["spectrogram"]) == 7
    # the same settings for another list of files: the log says why it extracts again
    assert [line for line in lines if line.startswith("features: ")] == [
        f"features: {first['spectrogram'].path} holds spectrogram with these settings for another list of "
        "files (files added, removed, reordered or of other lengths, or a cache made before files counted "
        f"by their real path); extracting spectrogram again into {out['spectrogram'].path.name}"]
    lines.clear()
    extract_features(corpus[:-1], cfg, tmp_path, kinds=["spectrogram"], progress=False, log=lines.append)
    assert not lines                                   # found: nothing to say


def test_silence_trimming_off_keeps_the_caches_made_before_it_existed(tiny_w2v):
    """``audio.trim_db`` at its default (off) is not in the hash: stores made before the field
    existed are still found."""
    from camser.features.store import kind_config

    assert "trim_db" not in kind_config("mfcc", _cfg(tiny_w2v))["audio"]
    cfg = _cfg(tiny_w2v)
    cfg.audio.trim_db = 30.0
    assert kind_config("mfcc", cfg)["audio"]["trim_db"] == 30.0


def test_one_corpus_reached_by_two_paths_shares_its_cache(corpus, tiny_w2v, tmp_path):
    """``../data`` from two checkouts, or a symlink, names the same files: the same stores;
    other files with the same ids and durations (a re-recording) do not."""
    import dataclasses

    from camser.features import store_path

    base = store_path(tmp_path, "mfcc", corpus, _cfg(tiny_w2v))
    folder = Path(corpus[0].path).parent
    (tmp_path / "elsewhere").mkdir()
    roundabout = [dataclasses.replace(u, path=str(tmp_path / "elsewhere" / ".." / os.path.relpath(u.path, tmp_path)))
                  if Path(u.path).is_relative_to(tmp_path) else u for u in corpus]
    link = tmp_path / "link"
    link.symlink_to(folder)
    linked = [dataclasses.replace(u, path=str(link / Path(u.path).name)) if Path(u.path).parent == folder else u
              for u in corpus]
    assert roundabout != corpus and linked != corpus
    assert store_path(tmp_path, "mfcc", roundabout, _cfg(tiny_w2v)) == base
    assert store_path(tmp_path, "mfcc", linked, _cfg(tiny_w2v)) == base
    moved = [dataclasses.replace(u, path=str(tmp_path / "copy" / Path(u.path).name)) for u in corpus]
    assert store_path(tmp_path, "mfcc", moved, _cfg(tiny_w2v)) != base


def test_ssl_hash_covers_model_layer_dtype_but_not_batch_size(corpus, tiny_w2v, tmp_path):
    from camser.features import store_path

    import shutil

    base = store_path(tmp_path, "ssl", corpus, _cfg(tiny_w2v))
    copy = shutil.copytree(tiny_w2v, tmp_path / "copy")          # another folder: other weights, maybe
    assert store_path(tmp_path, "ssl", corpus, _cfg(tiny_w2v)) == base
    for other in (_cfg(tiny_w2v, layer="all"), _cfg(tiny_w2v, dtype="float32"),
                  _cfg(tiny_w2v, normalize=False), _cfg(str(copy))):
        assert store_path(tmp_path, "ssl", corpus, other) != base
    # the same folder spelled differently is the same model
    assert store_path(tmp_path, "ssl", corpus, _cfg(tiny_w2v + "/../" + Path(tiny_w2v).name)) == base
    bigger = _cfg(tiny_w2v)
    bigger.features.ssl.batch_size = 7
    assert store_path(tmp_path, "ssl", corpus, bigger) == base
    # the same files re-copied in place (new modification times) keep the cache; new weights don't
    import os
    before = store_path(tmp_path, "ssl", corpus, _cfg(str(copy)))
    for f in Path(copy).iterdir():
        os.utime(f)
    assert store_path(tmp_path, "ssl", corpus, _cfg(str(copy))) == before
    weights = Path(copy) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert store_path(tmp_path, "ssl", corpus, _cfg(str(copy))) != before


def test_killed_extraction_resumes_to_identical_arrays(corpus, tiny_w2v, tmp_path, monkeypatch):
    cfg = _cfg(tiny_w2v)
    clean = extract_features(corpus, cfg, tmp_path / "clean", progress=False)

    _counting_loader(monkeypatch, fail_after=3)         # dies while loading the 4th file
    with pytest.raises(KeyboardInterrupt):
        extract_features(corpus, cfg, tmp_path / "killed", progress=False)
    folders = sorted((tmp_path / "killed").iterdir())
    assert len(folders) == 3
    for folder in folders:
        assert not FeatureStore.complete_at(folder) and not (folder / MARKER).exists()
        with pytest.raises(CamserError, match="incomplete"):
            FeatureStore.open(folder)
        partial = FeatureStore.open(folder, allow_incomplete=True)
        assert 0 < partial.done.sum() < len(partial) and not partial.is_complete

    calls = _counting_loader(monkeypatch)
    resumed = extract_features(corpus, cfg, tmp_path / "killed", progress=False)
    assert 0 < len(calls) < len(corpus)                    # picked up where it stopped
    for kind in clean:
        assert resumed[kind].is_complete
        np.testing.assert_array_equal(resumed[kind].array, clean[kind].array)


# ---------------------------------------------------------------------- the store itself

def _index(n: int) -> list[Segment]:
    return [Segment(f"utt,{i // 2}", i % 2, (i % 2) * 10, (i % 2) * 10 + 10) for i in range(n)]


def test_store_roundtrip_and_marker_written_last(tmp_path):
    idx = _index(5)
    st = FeatureStore.create(tmp_path / "k-abc", "mfcc", idx, (3, 2), "float32", config={"a": 1}, hash="abc")
    values = np.arange(30, dtype=np.float32).reshape(5, 3, 2)
    st.write(slice(0, 5), values)
    st.mark_done(range(5))
    st.flush()
    assert not st.is_complete and not (tmp_path / "k-abc" / MARKER).exists()
    done = st.finalize()
    assert done.is_complete and (tmp_path / "k-abc" / MARKER).is_file()
    assert not list((tmp_path / "k-abc").glob("*.tmp"))
    back = FeatureStore.open(tmp_path / "k-abc")
    np.testing.assert_array_equal(back.array, values)
    assert isinstance(back.array, np.memmap) and back.index == idx   # ids with commas survive the CSV
    assert back.rows_of("utt,1") == [2, 3] and len(back) == 5
    assert back.meta["config"] == {"a": 1} and back.hash == "abc"
    with pytest.raises(CamserError, match="read-only"):
        back.write([0], values[:1])


def test_incomplete_store_never_reads_as_complete(tmp_path):
    path = tmp_path / "k-1"
    st = FeatureStore.create(path, "mfcc", _index(4), (2,), "float32", hash="1")
    st.write(slice(0, 4), np.ones((4, 2), np.float32))
    st.mark_done(range(4))
    st.flush()                                   # every row done, but never finalised
    (path / (MARKER + ".tmp")).write_text("complete\n")   # a marker write cut short
    assert not FeatureStore.complete_at(path) and not st.is_complete
    with pytest.raises(CamserError, match="incomplete"):
        FeatureStore.open(path)
    assert np.load(path / DONE).all()
    with pytest.raises(CamserError, match="not computed"):
        FeatureStore.create(tmp_path / "k-2", "mfcc", _index(4), (2,), "float32", hash="2").finalize()


def test_create_resumes_matching_store_and_restarts_a_different_one(tmp_path):
    path = tmp_path / "k-1"
    st = FeatureStore.create(path, "mfcc", _index(4), (2,), "float32", hash="1")
    st.write([0, 1], np.full((2, 2), 7, np.float32))
    st.mark_done([0, 1])
    st.flush()
    again = FeatureStore.create(path, "mfcc", _index(4), (2,), "float32", hash="1")
    assert again.done.tolist() == [True, True, False, False] and again.array[1, 0] == 7
    other = FeatureStore.create(path, "mfcc", _index(4), (3,), "float32", hash="1")
    assert not other.done.any() and other.array.shape == (4, 3)


def test_ranks_keep_own_done_masks_and_finalize_merges_them_into_the_one_process_folder(tmp_path):
    values = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    alone = FeatureStore.create(tmp_path / "alone", "mfcc", _index(6), (3,), "float16", hash="1")
    alone.write([4, 0, 1, 5, 2, 3], values[[4, 0, 1, 5, 2, 3]])     # any order, cast on the way
    alone.mark_done(range(6))
    alone.finalize()

    path = tmp_path / "shared"
    with pytest.raises(CamserError, match="rank 1 found no store"):
        FeatureStore.create(path, "mfcc", _index(6), (3,), "float16", hash="1", rank=1)
    r0 = FeatureStore.create(path, "mfcc", _index(6), (3,), "float16", hash="1", rank=0)
    r1 = FeatureStore.create(path, "mfcc", _index(6), (3,), "float16", hash="1", rank=1)
    r0.write(slice(0, 2), values[:2])
    r1.write([3, 5], values[[3, 5]])
    for store, rows in ((r0, [0, 1]), (r1, [3, 5])):
        store.mark_done(rows)
        store.flush()
    assert sorted(p.name for p in path.glob("done*")) == [DONE, "done.rank0.npy", "done.rank1.npy"]
    assert not np.load(path / DONE).any()                 # no rank rewrites the shared mask
    assert FeatureStore.open(path, allow_incomplete=True).done.tolist() == [1, 1, 0, 1, 0, 1]
    with pytest.raises(CamserError, match="2 of 6 rows were not computed"):
        r0.finalize()
    resumed = FeatureStore.create(path, "mfcc", _index(6), (3,), "float16", hash="1")   # one process, later
    assert resumed.done.tolist() == [1, 1, 0, 1, 0, 1]
    resumed.write([2, 4], values[[2, 4]])
    resumed.mark_done([2, 4])
    resumed.finalize()
    assert sorted(p.name for p in path.iterdir()) == sorted(p.name for p in (tmp_path / "alone").iterdir())
    for f in (tmp_path / "alone").iterdir():
        assert (path / f.name).read_bytes() == f.read_bytes(), f.name


def test_duplicate_ids_and_unknown_kinds_are_errors(corpus, tiny_w2v, tmp_path):
    cfg = _cfg(tiny_w2v)
    with pytest.raises(CamserError, match="more than once"):
        extract_features(corpus + corpus[:1], cfg, tmp_path, progress=False)
    with pytest.raises(CamserError, match="unknown feature kind"):
        extract_features(corpus, cfg, tmp_path, kinds=["mfcc", "pitch"], progress=False)


_KILL_SCRIPT = """
import os, signal, sys
import camser.features.extract as ex
from camser.audio import load_audio
calls = []
def load(path, *a, **k):
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)      # no finally, no flush: a real kill
    calls.append(path)
    return load_audio(path, *a, **k)
ex.load_audio = load
import pickle
import torch
torch.set_num_threads(int(sys.argv[2]))   # the parent's count: it changes reduction order
utts, cfg, cache = pickle.loads(bytes.fromhex(sys.argv[1]))
ex.extract_features(utts, cfg, cache, progress=False)
"""


def test_sigkilled_extraction_resumes_to_identical_arrays(corpus, tiny_w2v, tmp_path, monkeypatch):
    import os
    import pickle
    import signal
    import subprocess
    import sys

    cfg = _cfg(tiny_w2v)
    clean = extract_features(corpus, cfg, tmp_path / "clean", progress=False)
    arg = pickle.dumps((corpus, cfg, str(tmp_path / "killed"))).hex()
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    import torch
    proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, arg, str(torch.get_num_threads())], env=env,
                          capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert not any(FeatureStore.complete_at(f) for f in (tmp_path / "killed").iterdir())
    calls = _counting_loader(monkeypatch)
    resumed = extract_features(corpus, cfg, tmp_path / "killed", progress=False)
    assert 0 < len(calls) < len(corpus)
    for kind in clean:
        np.testing.assert_array_equal(resumed[kind].array, clean[kind].array)


def _small_store(tmp_path) -> tuple[FeatureStore, np.ndarray]:
    index = [Segment("u", i, 0, 1) for i in range(20)]
    store = FeatureStore.create(tmp_path / "ssl-x", "ssl", index, (3, 4), np.float16)
    values = np.random.default_rng(0).standard_normal((20, 3, 4)).astype(np.float16)
    store.write(slice(0, 20), values)
    store.mark_done(slice(0, 20))
    store.finalize()
    return FeatureStore.open(tmp_path / "ssl-x"), values


def test_read_rows_equals_memmap_rows(tmp_path):
    reopened, values = _small_store(tmp_path)
    rows = np.array([0, 5, 6, 19])
    np.testing.assert_array_equal(reopened.read_rows(rows), values[rows])
    np.testing.assert_array_equal(reopened.read_rows(rows), np.asarray(reopened.array[rows]))


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise on this OS")
def test_prefetch_asks_once_per_run_of_consecutive_rows(tmp_path, monkeypatch):
    store, _ = _small_store(tmp_path)
    calls = []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, offset, length, advice: calls.append((offset, length, advice)))
    store.prefetch(np.array([1, 2, 3, 7, 9, 10]))
    row, base = 3 * 4 * 2, store.array.offset
    assert calls == [(base + 1 * row, 3 * row, os.POSIX_FADV_WILLNEED), (base + 7 * row, row, os.POSIX_FADV_WILLNEED),
                     (base + 9 * row, 2 * row, os.POSIX_FADV_WILLNEED)]


def test_gather_upcasts_and_keeps_the_asked_order(tmp_path):
    from camser.features.batches import gather
    store, values = _small_store(tmp_path)
    rows = np.array([19, 0, 6, 5])
    batch = gather({"ssl": store}, rows)
    assert batch["ssl"].dtype == torch.float32
    np.testing.assert_array_equal(batch["ssl"].numpy(), values[rows].astype(np.float32))


def test_with_prefetch_asks_for_the_next_batch_before_yielding_this_one():
    from camser.features.batches import SegmentSet, with_prefetch
    asked = []

    class Recorder:
        def prefetch(self, rows):
            asked.append(list(rows))

    segs = SegmentSet(np.array([10, 11, 12, 13, 14]), np.zeros(5, dtype=np.int64), ["u"] * 5)
    batches = [np.array([4, 0]), np.array([2, 1]), np.array([3])]
    seen = []
    for idx in with_prefetch(iter(batches), {"ssl": Recorder()}, segs):
        seen.append((list(idx), len(asked)))
    # batch 0 comes with batch 1's rows (sorted) already asked for, batch 1 with batch 2's
    assert seen == [([4, 0], 1), ([2, 1], 2), ([3], 2)]
    assert asked == [[11, 12], [13]]


def test_read_rows_without_posix_fadvise(tmp_path, monkeypatch):
    """Where the OS has no posix_fadvise (macOS) prefetch does nothing and reads still work."""
    monkeypatch.delattr(os, "posix_fadvise", raising=False)
    store, values = _small_store(tmp_path)
    rows = np.array([2, 3, 11])
    np.testing.assert_array_equal(store.read_rows(rows), values[rows])
