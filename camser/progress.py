"""Progress through long work: a live bar on a terminal, paced plain lines in a log file.

Below the drivers on purpose, so that any long loop (an epoch, a validation pass, feature
extraction) reports the same way.
"""
from __future__ import annotations

import sys
import time
from typing import Callable

from tqdm.auto import tqdm


def show_bar(progress: bool | None) -> bool:
    """Whether to draw a live progress bar: ``progress`` True/False forces it on/off; None →
    only on an interactive terminal (stderr a tty), so log files, CI and tests get none."""
    return sys.stderr.isatty() if progress is None else bool(progress)


class PassProgress:
    """Progress through one pass over batches (an epoch's training, a validation pass): with
    ``bar``, a tqdm bar with ETA on stderr (the terminal only: never in ``log``, so not in
    run.log); otherwise, when ``every_s > 0``, a plain line through ``log`` at most every
    ``every_s`` seconds (batch k/n, elapsed, ETA, running loss), so that a long epoch written to
    a file is not silent either. It reads a clock, never a random generator: no number changes."""

    clock = staticmethod(time.monotonic)        # tests substitute a fake clock

    def __init__(self, what: str, total: int, log: Callable[[str], None], bar: bool, every_s: float,
                 unit: str = "batch"):
        self.what, self.total, self.log, self.every_s, self.unit = what, total, log, every_s, unit
        self.done = 0
        self.started = self.last = self.clock()
        self.bar = (tqdm(total=total, desc=what, unit=unit, leave=False, file=sys.stderr, dynamic_ncols=True)
                    if bar else None)

    def __enter__(self) -> "PassProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Take the bar off the terminal (lines need nothing)."""
        if self.bar is not None:
            self.bar.close()

    def update(self, loss: float | None = None) -> None:
        """One more batch done; ``loss``: the running mean training loss."""
        self.done += 1
        if self.bar is not None:
            if loss is not None:
                self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            self.bar.update()
            return
        if self.every_s <= 0 or self.done >= self.total:     # the epoch's own line follows the last batch
            return
        now = self.clock()
        if now - self.last < self.every_s:
            return
        self.last = now
        elapsed = now - self.started
        eta = elapsed / self.done * (self.total - self.done)
        loss_part = "" if loss is None else f", loss {loss:.4f}"
        self.log(f"{self.what}: {self.unit} {self.done}/{self.total} ({100 * self.done // self.total}%), "
                 f"{tqdm.format_interval(elapsed)} elapsed, ETA {tqdm.format_interval(eta)}{loss_part}")
