"""What every measurement shares: the sizes of a full and a quick run, timing, skipping, the
random-weight encoders built in code, and peak-memory readings from ``/proc``."""
from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path
from typing import Callable

SEGMENT_S = 3.0
SAMPLE_RATE = 16_000
MiB = 1024 * 1024

# Everything a measurement's size depends on. "quick" shrinks every number so that a smoke
# run takes seconds; its figures say nothing about speed.
SIZES: dict[str, dict] = {
    "full": {
        "warmup": 1, "feature_batch_sizes": [1, 8, 32], "feature_min_s": 3.0, "feature_min_reps": 3, "feature_max_reps": 30,
        "ssl_batch_sizes": [1, 8, 32], "ssl_min_s": 4.0, "ssl_min_reps": 2, "ssl_max_reps": 10,
        "ssl_layer": "all",
        "train_segments": 11_000, "segments_per_utterance": 2, "val_fraction": 0.1, "n_classes": 4,
        "train_batch": 64, "train_epochs": 3, "stacked_epochs": 2, "checkpoint": True,
        "paper_batch": 64, "paper_warmup": 1, "paper_steps": 4,
        "finetune_batch": 4, "finetune_warmup": 1, "finetune_steps": 3,
        "cv_folds": 5, "cv_epochs": 20,
        "predict_s": 60.0, "predict_reps": 3, "predict_cli": True,
        "tiny_models": False,
    },
    "quick": {
        "warmup": 0, "feature_batch_sizes": [1, 2], "feature_min_s": 0.0, "feature_min_reps": 1, "feature_max_reps": 1,
        "ssl_batch_sizes": [1, 2], "ssl_min_s": 0.0, "ssl_min_reps": 1, "ssl_max_reps": 1,
        "ssl_layer": "all",
        "train_segments": 32, "segments_per_utterance": 2, "val_fraction": 0.25, "n_classes": 4,
        "train_batch": 8, "train_epochs": 2, "stacked_epochs": 2, "checkpoint": False,
        "paper_batch": 2, "paper_warmup": 0, "paper_steps": 1,
        "finetune_batch": 2, "finetune_warmup": 0, "finetune_steps": 1,
        "cv_folds": 5, "cv_epochs": 20,
        "predict_s": 8.0, "predict_reps": 1, "predict_cli": False,
        "tiny_models": True,
    },
}

# Feature shapes per 3 s segment with wav2vec2-base (and the default MFCC / spectrogram settings).
W2V2_BASE_SHAPES = {"mfcc": (300, 40), "spectrogram": (300, 200), "ssl_last": (149, 768),
                    "ssl_all": (13, 149, 768)}
# The tiny random wav2vec2 of quick runs (camser.demo.tiny_wav2vec2: 2 layers, width 64).
TINY_SHAPES = {"mfcc": (300, 40), "spectrogram": (300, 200), "ssl_last": (149, 64), "ssl_all": (3, 149, 64)}


class Skip(Exception):
    """Raised by a measurement that cannot run here; recorded as ``"skipped: <reason>"``."""


# ---------------------------------------------------------------------- timing

def sync(device) -> None:
    """Wait for queued GPU work (timings on CUDA are otherwise only launch times)."""
    import torch
    if str(device).startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()


def time_calls(fn: Callable[[], object], min_reps: int, min_s: float, max_reps: int,
               warmup: int = 1, device="cpu") -> dict:
    """Call ``fn`` ``warmup`` times untimed, then until at least ``min_reps`` calls and
    ``min_s`` seconds (at most ``max_reps`` calls). → ``{"median_s", "min_s", "times_s", "reps"}``."""
    for _ in range(warmup):
        fn()
        sync(device)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < max(1, min_reps) or (time.perf_counter() - started < min_s and len(times) < max_reps):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": [round(x, 5) for x in times],
            "reps": len(times), "warmup": warmup}


def rnd(x: float | None, digits: int = 4):
    return None if x is None else round(float(x), digits)


# ---------------------------------------------------------------------- encoders built in code

def _atomic_dir(folder: Path, build: Callable[[Path], None]) -> Path:
    """Build a model folder under a temporary name and rename it into place (a killed run
    never leaves half a folder that a later task would load)."""
    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    if tmp.exists():
        import shutil
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    build(tmp)
    os.replace(tmp, folder)
    return folder


def wav2vec2_base(folder: Path, seed: int = 0) -> Path:
    """The wav2vec2-base architecture (``Wav2Vec2Config()`` defaults: 12 layers, width 768,
    95 M parameters) with random weights, saved as a Hugging Face folder: costs what the
    pretrained facebook/wav2vec2-base costs, without the hub."""
    def build(tmp: Path) -> None:
        import torch
        from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model
        torch.manual_seed(seed)
        Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(tmp)
        Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False).save_pretrained(tmp)
    return _atomic_dir(folder, build)


def tiny_wav2vec2(folder: Path) -> Path:
    from ..demo import tiny_wav2vec2 as build
    return _atomic_dir(folder, lambda tmp: build(tmp))


def tiny_whisper(folder: Path, seed: int = 0) -> Path:
    """A small random Whisper (width 64, 2 encoder layers) for quick runs."""
    def build(tmp: Path) -> None:
        import torch
        from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForAudioClassification
        torch.manual_seed(seed)
        cfg = WhisperConfig(d_model=64, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                            decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
                            num_mel_bins=80, max_source_positions=1500)
        WhisperForAudioClassification(cfg).save_pretrained(tmp)
        WhisperFeatureExtractor(feature_size=80).save_pretrained(tmp)
    return _atomic_dir(folder, build)


def bench_wav2vec2(work: Path, tiny: bool) -> tuple[Path, str]:
    """(folder, description) of the wav2vec2 used: base architecture, or tiny in quick runs."""
    if tiny:
        return tiny_wav2vec2(work / "tiny-wav2vec2"), "tiny random wav2vec2 (quick run; 2 layers, width 64)"
    return (wav2vec2_base(work / "wav2vec2-base-random"),
            "wav2vec2-base architecture (Wav2Vec2Config() defaults), random weights")


def whisper_folder(shared: Path | None) -> Path | None:
    if shared is None:
        return None
    p = Path(shared) / "models" / "whisper-base-encoder"
    return p if (p / "config.json").is_file() else None


# ---------------------------------------------------------------------- memory

def _status_kb(field: str, pid: str = "self") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM (peak RSS) to its current RSS (Linux ≥ 4.0). False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class MemoryWatch:
    """Peak memory of this process while a measurement runs.

    * ``peak_rss_mb``: VmHWM from ``/proc/self/status`` (reset at start where the kernel
      allows) — every resident page, including pages of memory-mapped feature stores, which
      are file-backed page cache the kernel can drop;
    * ``peak_private_mb``: the largest RssAnon seen by a sampling thread (every 20 ms) — the
      memory the process itself holds, what has to fit in RAM.
    """

    def __init__(self, interval_s: float = 0.02):
        self.interval_s = interval_s
        self._stop = threading.Event()
        self.peak_anon_kb = 0
        self._thread: threading.Thread | None = None
        self.reset_ok = False

    def _sample(self) -> None:
        while not self._stop.is_set():
            anon = _status_kb("RssAnon")
            if anon is not None and anon > self.peak_anon_kb:
                self.peak_anon_kb = anon
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "MemoryWatch":
        self.reset_ok = reset_peak_rss()
        self.peak_anon_kb = _status_kb("RssAnon") or 0
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        anon = _status_kb("RssAnon")
        if anon is not None:
            self.peak_anon_kb = max(self.peak_anon_kb, anon)

    def result(self) -> dict:
        hwm = _status_kb("VmHWM")
        return {"peak_rss_mb": rnd(hwm / 1024, 1) if hwm is not None else None,
                "peak_private_mb": rnd(self.peak_anon_kb / 1024, 1) if self.peak_anon_kb else None,
                "peak_rss_reset": self.reset_ok}


def free_disk_gb(path: Path) -> float:
    import shutil
    return shutil.disk_usage(path).free / 1024 ** 3
