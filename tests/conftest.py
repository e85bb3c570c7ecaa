"""Shared fixtures: a tiny trained model folder (once per test session) and a real uvicorn server
on 127.0.0.1 for an ASGI app (test_serve, test_onnx, test_browser)."""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]


def prepared_corpus(root: Path, n_sessions: int = 3, utterances_per_speaker: int = 16) -> Path:
    """A synthetic IEMOCAP-layout corpus under ``root/corpus``, prepared into ``root/prepared``."""
    from camser.corpora import scan_corpus, write_manifest
    from camser.corpora.synthetic import generate_iemocap
    corpus = generate_iemocap(root / "corpus", n_sessions=n_sessions,
                              utterances_per_speaker=utterances_per_speaker, seed=1)
    scan = scan_corpus("iemocap", corpus)
    write_manifest(root / "prepared", scan.utterances, scan.skipped)
    return root / "prepared"


def _tiny_cfg(root: Path, encoder: Path, *overrides):
    from camser.config import load_config
    return load_config(REPO / "camser/configs/demo.yaml", list(overrides), data={
        "corpus": {"prepared": str(root / "prepared")},
        "features": {"ssl": {"model": str(encoder)}},
        "train": {"max_epochs": 2, "min_epochs": 1, "num_threads": 1},
    })


@pytest.fixture(scope="session")
def tiny_model_folder(tmp_path_factory):
    """A CPU-preset CA-MSER model folder trained for 2 epochs on a synthetic corpus (2 sessions ×
    2 speakers × 8 turns) with a tiny random wav2vec2 (frozen frames, all layers): ~20 s."""
    import torch

    from camser.corpora import read_manifest, scan_corpus, write_manifest
    from camser.corpora.synthetic import generate_iemocap
    from camser.demo import tiny_wav2vec2
    from camser.training.train_model import train_model

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tiny_model_folder")
    corpus = generate_iemocap(root / "corpus", n_sessions=2, utterances_per_speaker=8, seed=1)
    scan = scan_corpus("iemocap", corpus)
    write_manifest(root / "prepared", scan.utterances, scan.skipped)
    encoder = tiny_wav2vec2(root / "encoder")
    train_model(_tiny_cfg(root, encoder), root / "model", log=lambda m: None, progress=False)
    utterances = [u for u in read_manifest(root / "prepared") if u.label in ("ang", "sad", "hap", "neu", "exc")]
    return SimpleNamespace(root=root, encoder=encoder, model_dir=root / "model", utterances=utterances,
                           cfg=lambda *o: _tiny_cfg(root, encoder, *o))


@pytest.fixture(scope="session")
def tiny_finetuned_folder(tiny_model_folder):
    """The same data with train.mode=finetune (the encoder inside the model; inputs mfcc, spec,
    audio), one epoch."""
    from camser.training.train_model import train_model

    out = tiny_model_folder.root / "finetuned"
    cfg = tiny_model_folder.cfg("train.mode=finetune", "features.ssl.layer=last", "train.max_epochs=1",
                         "train.batch_size=32")
    train_model(cfg, out, log=lambda m: None, progress=False)
    return out


def write_tone(path: Path, seconds: float, sr: int = 16000, f0: float = 180.0, seed: int = 0) -> Path:
    """A harmonic tone with a slow vibrato and a little noise, as 16-bit PCM WAV."""
    t = np.arange(int(round(seconds * sr))) / sr
    phase = 2 * np.pi * np.cumsum(f0 + 30 * np.sin(2 * np.pi * 0.5 * t)) / sr
    y = sum(np.sin(k * phase) / k for k in range(1, 5)) * 0.15
    y = y + 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    sf.write(path, y.astype(np.float32), sr, subtype="PCM_16")
    return path


class LiveServer:
    """A uvicorn server for ``app`` in a background thread on a free port of 127.0.0.1."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.time() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture
def live_server():
    """``live_server(app)`` → a started :class:`LiveServer` (``.url``), stopped after the test."""
    started = []

    def start(app) -> LiveServer:
        s = LiveServer(app).__enter__()
        started.append(s)
        return s

    yield start
    for s in started:
        s.__exit__(None, None, None)
