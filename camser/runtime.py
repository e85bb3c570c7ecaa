"""Where and how torch runs: the device a config names, the thread count of a run, and the
process group of a ``torchrun`` job (RANK / WORLD_SIZE in the environment)."""
from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import timedelta

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


# ---------------------------------------------------------------------- torchrun

def rank_and_world() -> tuple[int, int]:
    """(this process's rank, the number of processes): torchrun's RANK and WORLD_SIZE, (0, 1) alone."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: str = "cpu") -> tuple[int, int]:
    """Join torchrun's process group (nccl for a CUDA ``device``, else gloo) unless joined
    already; → :func:`rank_and_world`. Alone it does nothing."""
    rank, world = rank_and_world()
    if world > 1 and not torch.distributed.is_initialized():
        if resolve_device(device).type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))   # "cuda": this rank's GPU of its node
            torch.distributed.init_process_group("nccl")
        else:
            torch.distributed.init_process_group("gloo")
    return rank, world


_LONG_WAIT = {"group": None}


def wait_for_all_ranks() -> None:
    """A barrier over every rank that waits as long as the slowest needs: shares of a feature
    extraction can finish hours apart (a resumed share, a slower node), far beyond the default
    group's timeout (10–30 min), so it runs on a gloo group of its own with a week's timeout."""
    init_distributed()
    if _LONG_WAIT["group"] is None:
        _LONG_WAIT["group"] = torch.distributed.new_group(backend="gloo", timeout=timedelta(days=7))
    torch.distributed.barrier(group=_LONG_WAIT["group"])
