"""Atomic file writes: the one primitive every writer of this package uses.

No upstream counterpart. The bytes go to a temporary file beside the target, are fsync'ed, then
take the target's name in one rename, so a reader (or a crash) sees the old file or the whole new
one, never half of one. It lives in the lowest layer so that `modules/` (the embedding cache, the
matmul calibration) and `data/` (audio_write) use it as well as `utils/export.py`.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def _fsync(path: str | Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # some platforms cannot open a folder; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, fsync it, then move it to `path` atomically.

    Args:
        path: the file to write (its folder is created).
        write: writes the content to the path it is given.
        overwrite: replace an existing `path`; without it an existing file is a FileExistsError
            (also when another process creates it meanwhile).
    Returns:
        `path`.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give the path of the file to write")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it, or choose "
                              "another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; give it the mode a plain open() would
        write(tmp)
        _fsync(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if `path` appeared meanwhile: no silent overwrite
            except FileExistsError:
                raise FileExistsError(f"{path} was created by someone else while it was being written; pass "
                                      "overwrite=True to replace it") from None
            except OSError:  # a file system without hard links: the check above has to do
                os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync(path.parent, directory=True)
    return path
