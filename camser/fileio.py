"""Files that are either whole or absent.

Every file a reader or a resumed run may open while it is being written (results, reports,
checkpoints, cache indexes, manifests, ONNX metadata) goes through :func:`atomic_write`: write
to a temporary name in the same folder, fsync, rename over the target. A killed process leaves
the previous version (or nothing), never half a file.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb", encoding: str | None = None,
                 newline: str | None = None, sync_folder: bool = False):
    """``with atomic_write(path, "w") as f: ...`` — ``f`` is a temporary file beside ``path``
    that replaces it when the block ends without an exception (and is removed otherwise).
    ``sync_folder`` also fsyncs the folder, so the rename itself survives a power cut."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)                  # mkstemp makes it owner-only
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sync_folder:
        _fsync_folder(path.parent)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes, sync_folder: bool = False) -> Path:
    with atomic_write(path, "wb", sync_folder=sync_folder) as f:
        f.write(data)
    return Path(path)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:                           # platforms without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
