"""The errors graphc users see: one class, a few subclasses, one message format.

Every message reads ``<where>: <what is wrong>; expected <X>, got <Y>. <hint>`` where ``<where>``
is the printed node (or the layer, file or option at fault).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class GraphcError(Exception):
    """An error about the user's graph, model, file or command, with a readable message.

    >>> str(GraphcError("bad thing", where="%x = Input", expected="(1, 2)", got="(2, 1)"))
    '%x = Input: bad thing; expected (1, 2), got (2, 1).'
    """

    def __init__(
        self,
        what: str,
        *,
        where: str | None = None,
        expected: object = None,
        got: object = None,
        hint: str | None = None,
    ) -> None:
        self.what = what
        self.where = where
        self.expected = expected
        self.got = got
        self.hint = hint
        super().__init__(self.format())

    def format(self) -> str:
        text = f"{self.where}: {self.what}" if self.where else self.what
        if self.expected is not None and self.got is not None:
            text += f"; expected {self.expected}, got {self.got}"
        elif self.expected is not None:
            text += f"; expected {self.expected}"
        elif self.got is not None:
            text += f"; got {self.got}"
        text += "."
        if self.hint:
            text += f" {self.hint}"
        return text

    def located(self, where: str) -> GraphcError:
        """Return a copy of this error that names ``where`` (kept if one is already named)."""
        if self.where:
            return self
        return type(self)(
            self.what, where=where, expected=self.expected, got=self.got, hint=self.hint
        )


class ShapeError(GraphcError):
    """Shapes or dtypes that do not fit an op."""


class VerifyError(GraphcError):
    """A graph that breaks an IR invariant (see ``Graph.verify``)."""


class OpError(GraphcError):
    """An unknown op, a bad attribute, or an op that cannot run on its inputs."""


class ExportError(GraphcError):
    """A graph that cannot be written as ONNX at the requested opset."""


class UsageError(GraphcError):
    """A bad command-line or API argument (the CLI exits with status 2)."""


def unknown(
    kind: str,
    name: str,
    known: Iterable[str],
    *,
    where: str | None = None,
    cls: type[GraphcError] = GraphcError,
) -> GraphcError:
    """Return the error for an unknown ``name``: it lists the known names and the closest match.

    >>> str(unknown("padding", "sme", ["same", "valid"]))
    "unknown padding 'sme'; expected one of 'same', 'valid', got 'sme'. Did you mean 'same'?"
    """
    known = sorted(known)
    close = difflib.get_close_matches(str(name), known, n=1)
    return cls(
        f"unknown {kind} {name!r}",
        where=where,
        expected="one of " + ", ".join(repr(k) for k in known) if known else "none",
        got=repr(name),
        hint=f"Did you mean {close[0]!r}?" if close else None,
    )
