"""Writing files safely: the process umask, atomic writes, PNG and .npy encoders.

Every output file is written to a temporary name in the same folder and renamed into
place, so an interrupted run never leaves a half-written file under a final name.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import UnionCamError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _current_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600 files; outputs get the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def png_bytes(image, compress_level: int = 6) -> bytes:
    """A Pillow image encoded as PNG (zlib ``compress_level`` 0-9, default Pillow's 6)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    """An array in ``.npy`` format."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (as anything, a file included)."""
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


def check_writable_dir(out: Path, option: str = "--out") -> None:
    """Refuse an output folder a run could not write, before any work and without
    creating anything: ``out`` (or, if it does not exist yet, its nearest existing
    ancestor, where it will be created) must be a folder in which a file can be made."""
    existing = _existing_ancestor(out)
    if not existing.is_dir():
        what = "is a file" if existing == Path(os.path.abspath(out)) else f"lies under {existing}, a file"
        raise UnionCamError(f"{option} {out} {what}, not a folder; choose a folder to write to")
    try:
        handle, probe = tempfile.mkstemp(prefix=".unioncam-rt-write-probe-", dir=existing)
    except OSError as exc:
        where = "" if existing == Path(os.path.abspath(out)) else f" (it would be created in {existing})"
        raise UnionCamError(f"{option} {out} is not writable{where}: {exc.strerror or exc}; choose a folder you "
                            "can write to") from None
    os.close(handle)
    os.unlink(probe)
