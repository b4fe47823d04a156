"""Write files safely: a reader never sees a half-written file, a failure leaves none, and a
write never replaces what the path names with something else.

- A regular file (or a new path) is written through a temporary file in the same folder and
  renamed over it, keeping an existing file's permission bits.
- A symbolic link is followed: its target gets the data (atomically, in the target's folder)
  and the link stays a link.
- A FIFO or a character device (``-o /dev/null``, ``-o /dev/stdout``) is written directly:
  renaming over it would replace the device or pipe with a regular file (as root, breaking
  ``/dev/null`` for the whole machine). A folder, a socket or a block device is refused.

``same_file`` and ``check_not_an_input`` tell a command that its output would overwrite one of
its inputs (symlinks and hard links resolved, as ``os.path.samefile`` does).

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "out.bin"
>>> write_atomic(path, b"graphc")
>>> path.read_bytes()
b'graphc'
>>> write_atomic("/dev/null", b"discarded")
"""

from __future__ import annotations

import io
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from graphc.errors import GraphcError, UsageError


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISFIFO, "a FIFO")):
        if test(mode):
            return name
    return "a regular file"


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path``: atomically for a regular file (mode kept), through a
    symlink to its target, directly into a FIFO or character device; refuse a folder, a
    socket or a block device."""
    given = Path(path)
    # realpath follows every link, a dangling one too: its target is created, the link kept.
    target = Path(os.path.realpath(given))
    where = str(given) if target == given.absolute() else f"{given} (-> {target})"
    try:
        mode: int | None = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as err:
        raise GraphcError(f"cannot write {where!r}: {err.strerror}") from None
    if mode is not None and not stat.S_ISREG(mode):
        if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
            _write_directly(target, data, where)
            return
        raise GraphcError(f"cannot write {where!r}", expected="a regular file, a FIFO or a "
                          "character device", got=_kind(mode),
                          hint="Give the path of a file to write.")
    _replace(target, data, where, None if mode is None else stat.S_IMODE(mode))


def _write_directly(target: Path, data: bytes, where: str) -> None:
    try:
        # No O_CREAT, no O_TRUNC games: the device or pipe is opened as it is and stays so.
        fd = os.open(target, os.O_WRONLY)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError as err:
        raise GraphcError(f"cannot write {where!r}: {err.strerror or err}") from None


def _replace(target: Path, data: bytes, where: str, mode: int | None) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as err:
        raise GraphcError(f"cannot write {where!r}: {err.strerror}",
                          hint="Check that the folder exists and is writable.") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if mode is None:
            # mkstemp creates the file 0600; give a new file the mode a plain open() would.
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise GraphcError(f"cannot write {where!r}: {err.strerror or err}") from None
        raise


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Return whether two paths name the same file: ``os.path.samefile`` when both exist
    (symlinks and hard links resolved), else whether their resolved paths are equal.

    >>> same_file("/dev/null", "/dev/../dev/null")
    True
    """
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_not_an_input(output: str | os.PathLike[str],
                       inputs: Iterable[str | os.PathLike[str] | None],
                       option: str = "-o") -> None:
    """Raise UsageError if ``output`` is the same file as one of ``inputs`` (``None`` entries
    are skipped); a character device or FIFO output (``/dev/null``) is never refused.

    >>> check_not_an_input("model.onnx", ["model.py"])
    >>> check_not_an_input("/dev/null", ["/dev/null"])
    """
    try:
        mode = os.stat(output).st_mode
    except OSError:
        mode = None
    if mode is not None and (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
        return
    for source in inputs:
        if source is not None and same_file(output, source):
            raise UsageError(f"{option} {str(output)!r} would overwrite an input",
                             expected="an output path that is none of the inputs",
                             got=f"the same file as {str(source)!r}",
                             hint="Write the output to another file.")


def figure_bytes(fig: Any, fmt: str, dpi: float = 110, rc: dict[str, Any] | None = None,
                 **savefig: Any) -> bytes:
    """Return a matplotlib figure saved as ``fmt`` (png, svg, pdf), without the date, version
    or random ids that would make two runs of the same figure differ."""
    import matplotlib

    metadata = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None},
                "pdf": {"CreationDate": None, "Creator": None, "Producer": None}}.get(fmt)
    buffer = io.BytesIO()
    # SVG ids are random unless salted.
    with matplotlib.rc_context({"svg.hashsalt": "graphc", **(rc or {})}):
        fig.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata, **savefig)
    return buffer.getvalue()


def write_figure(fig: Any, path: str | os.PathLike[str], dpi: float = 110) -> None:
    """Save a matplotlib figure to ``path`` (its suffix names the format), reproducibly
    (``figure_bytes``) and atomically (``write_atomic``), and close it."""
    import matplotlib.pyplot as plt

    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    data = figure_bytes(fig, fmt, dpi)
    plt.close(fig)
    write_atomic(path, data)
