"""Write files atomically: a reader never sees a half-written file, a failure leaves none.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "out.bin"
>>> write_atomic(path, b"graphc")
>>> path.read_bytes()
b'graphc'
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from graphc.errors import GraphcError


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, so no half-written file remains."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise GraphcError(f"cannot write {str(path)!r}: {err.strerror}",
                          hint="Check that the folder exists and is writable.") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp creates the file 0600; give it the mode a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise GraphcError(f"cannot write {str(path)!r}: {err.strerror or err}") from None
        raise
