"""`camser bench`: measured speed and memory, and the targets they must reach.

``camser bench --out DIR [--quick] [--only NAMES]`` writes ``DIR/bench.json`` (every figure,
the machine and the exact command) and ``DIR/bench.md`` (the targets met / missed, then the
figures). The targets are one table, :data:`camser.bench.targets.TARGETS`.

Measurements (``--only`` takes these names and/or the group names):

* ``features``: ``mfcc``, ``spectrogram``, ``ssl_wav2vec2`` (wav2vec2-base architecture,
  random weights), ``ssl_whisper`` (the Whisper-base encoder in ``../shared``) — throughput
  and real-time factor at batch sizes 1, 8, 32; SSL with oneDNN on and off;
* ``training``: ``train_data`` (synthetic IEMOCAP-sized feature stores), ``train_cpu``,
  ``train_cpu_stacked`` (CPU-practical CA-MSER, frozen cached frames), ``train_paper``
  (published configuration, extrapolated), ``train_finetune`` (encoder recomputed and
  fine-tuned every epoch, extrapolated), and the derived ``cv_ratio``;
* ``inference``: ``predict`` (``EmotionRecognizer.predict`` on a 60 s file) and ``onnx``.

Each measurement runs in its own worker process (peak memory from ``/proc``); with CUDA the
GPU variants run too. ``--quick`` shrinks every size: a smoke test of the benchmark itself.
"""
from __future__ import annotations


def run_bench(*args, **kwargs):
    from .runner import run_bench as run
    return run(*args, **kwargs)


__all__ = ["run_bench"]
