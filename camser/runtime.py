"""Where and how torch runs: the device a config names and the thread count of a run."""
from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int | None):
    """``torch.set_num_threads(n)`` for the duration only: the thread count is process-global
    and changes reduction order (last-bit differences), so a run must not leak it to callers."""
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
