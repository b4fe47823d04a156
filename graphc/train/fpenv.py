"""The calling thread's floating-point environment, kept out of reach of onnxruntime.

onnxruntime's ``session.set_denormal_as_zero`` turns on flush-to-zero and denormals-are-zero
on the thread that creates the session, for good: after it, ``numpy.float32(1e-40) * 1`` is 0 in
the whole Python thread. :class:`FlushToZero` keeps the flags to the steps that need them: the
session is created inside it, the environment it leaves is captured, the caller's restored, and
each step runs inside ``with ftz:`` (two C calls, about a microsecond). Where the C library's
``fegetenv``/``fesetenv`` cannot be reached, :attr:`FlushToZero.available` is False and the
caller does without the option.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_ENV_BYTES = 512  # larger than fenv_t on every platform (32 bytes on x86-64 glibc)


def _libm():
    for name in (ctypes.util.find_library("m"), "libm.so.6", None):
        try:
            lib = ctypes.CDLL(name)
            lib.fegetenv, lib.fesetenv  # noqa: B018 - both must exist
            return lib
        except (OSError, AttributeError, TypeError):
            continue
    return None


class FlushToZero:
    """Run code with the floating-point environment onnxruntime set up, then restore the caller's.

    >>> import numpy as np
    >>> ftz = FlushToZero()
    >>> with ftz.capture():
    ...     pass                    # a session created here may change the environment
    >>> bool(np.float32(1e-40) * np.float32(1) > 0)
    True
    """

    def __init__(self) -> None:
        self._lib = _libm()
        self._inner = ctypes.create_string_buffer(_ENV_BYTES)
        self._outer = ctypes.create_string_buffer(_ENV_BYTES)

    @property
    def available(self) -> bool:
        return self._lib is not None

    def capture(self) -> _Capture:
        """A context whose body's final environment is kept for later ``with self:`` blocks."""
        return _Capture(self)

    def __enter__(self) -> FlushToZero:
        if self._lib is not None:
            self._lib.fegetenv(self._outer)
            self._lib.fesetenv(self._inner)
        return self

    def __exit__(self, *exc) -> None:
        if self._lib is not None:
            self._lib.fesetenv(self._outer)


class _Capture:
    def __init__(self, owner: FlushToZero) -> None:
        self.owner = owner

    def __enter__(self) -> FlushToZero:
        lib = self.owner._lib
        if lib is not None:
            lib.fegetenv(self.owner._outer)
        return self.owner

    def __exit__(self, *exc) -> None:
        lib = self.owner._lib
        if lib is not None:
            lib.fegetenv(self.owner._inner)
            lib.fesetenv(self.owner._outer)
