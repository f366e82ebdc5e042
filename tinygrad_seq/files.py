"""Writing files whole or not at all: checkpoints, pictures and plots.

The bytes go to a temporary file in the target's folder, are fsynced, and ``os.replace`` swaps it in:
a crash, a full disk or Ctrl-C mid-write leaves the previous file as it was and no temporary behind.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any


def check_folder(path: Path, op: str) -> None:
    """Refuse, before any work, a ``path`` whose folder is missing or is not a folder, or which is a
    folder itself (the error would otherwise name the temporary file)."""
    if not path.parent.is_dir():
        missing = not path.parent.exists()
        raise (FileNotFoundError if missing else NotADirectoryError)(
            f"{op}({str(path)!r}): {str(path.parent)!r} "
            f"{'does not exist' if missing else 'is not a folder'}; create the folder first")
    if path.is_dir():
        raise IsADirectoryError(f"{op}({str(path)!r}): that is a folder; give a file name in it")


def write_synced(file: Any, payload: bytes) -> None:
    """Write all of ``payload`` and force it to disk before the rename makes it visible."""
    file.write(payload)
    file.flush()
    os.fsync(file.fileno())


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, payload: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as file:
            write_synced(file, payload)
        os.replace(temporary, path)
    except BaseException:  # interrupted too: never leave the temporary file behind
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
