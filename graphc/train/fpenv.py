"""Flush-to-zero for the training steps, kept out of the caller's floating-point environment.

Optimizer state of weights whose gradient stays 0 decays into subnormal numbers, which are slow
on CPUs. onnxruntime's ``session.set_denormal_as_zero`` flushes them on the session's own pool
threads, but on the calling thread it acts only for the first session created in the process,
and then for good (``numpy.float32(1e-40) * 1`` is 0 in the whole Python thread from then on).
:class:`FlushToZero` sets the flags itself, around each step only: ``with ftz:`` saves the
caller's environment, sets flush-to-zero and denormals-are-zero, and restores it after (two C
calls, about a microsecond). ``ftz.preserve()`` guards the session's creation, so that the
caller's environment is the same after it. The flags are set through the C library's
``fegetenv``/``fesetenv`` where the layout of its ``fenv_t`` is known (Linux on x86-64: the SSE
control register ``MXCSR``); elsewhere :attr:`FlushToZero.available` is False and the steps run
with the caller's environment.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import platform
import struct
import sys
from collections.abc import Iterator

_ENV_BYTES = 512  # larger than fenv_t on every platform (32 bytes on x86-64 glibc)
_MXCSR_OFFSET = 28  # glibc's x86-64 fenv_t: the x87 environment, then __mxcsr
_MXCSR_FTZ_DAZ = 0x8040  # bit 15 flush-to-zero, bit 6 denormals-are-zero


def _libm():
    if not (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")):
        return None
    for name in (ctypes.util.find_library("m"), "libm.so.6", None):
        try:
            lib = ctypes.CDLL(name)
            lib.fegetenv, lib.fesetenv  # noqa: B018 - both must exist
            return lib
        except (OSError, AttributeError, TypeError):
            continue
    return None


class FlushToZero:
    """Run code with subnormal numbers flushed to zero, then restore the caller's environment.

    >>> import numpy as np
    >>> ftz = FlushToZero()
    >>> with ftz:
    ...     inside = np.float32(1e-40) * np.float32(1)
    >>> bool(inside == 0) == ftz.available
    True
    >>> bool(np.float32(1e-40) * np.float32(1) > 0)
    True
    """

    def __init__(self) -> None:
        self._lib = _libm()
        self._outer = ctypes.create_string_buffer(_ENV_BYTES)
        self._inner = ctypes.create_string_buffer(_ENV_BYTES)

    @property
    def available(self) -> bool:
        return self._lib is not None

    @contextlib.contextmanager
    def preserve(self) -> Iterator[None]:
        """A context after which the caller's environment is what it was before it."""
        saved = ctypes.create_string_buffer(_ENV_BYTES)
        if self._lib is not None:
            self._lib.fegetenv(saved)
        try:
            yield
        finally:
            if self._lib is not None:
                self._lib.fesetenv(saved)

    def __enter__(self) -> FlushToZero:
        if self._lib is not None:
            self._lib.fegetenv(self._outer)
            ctypes.memmove(self._inner, self._outer, _ENV_BYTES)
            (mxcsr,) = struct.unpack_from("<I", self._inner, _MXCSR_OFFSET)
            struct.pack_into("<I", self._inner, _MXCSR_OFFSET, mxcsr | _MXCSR_FTZ_DAZ)
            self._lib.fesetenv(self._inner)
        return self

    def __exit__(self, *exc) -> None:
        if self._lib is not None:
            self._lib.fesetenv(self._outer)
