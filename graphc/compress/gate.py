"""Accuracy gates: a compressed model must stay within some points of its reference.

A gate compares two classifiers on the same held-out ``(x, y)``: the accuracy of each is the
share of samples whose highest score (argmax of the first output) is the label, measured on
onnxruntime (the file as it will run) or on the interpreter (ONNX semantics in numpy). The
candidate passes when ``100 * candidate >= 100 * reference - points``; a failure is a
GraphcError with both accuracies in it.

>>> gate = Gate(reference=0.9833, candidate=0.96, points=1.0,
...             reference_name="teacher", candidate_name="student")
>>> gate.passed
False
>>> gate.describe()
'student 96.00% vs teacher 98.33% (-2.33 points; gate 1.0 points)'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphc.errors import GraphcError, UsageError
from graphc.ir import Graph, Value

BACKENDS = ("onnxruntime", "interpreter")
# Accuracies are ratios of counts; this keeps a candidate exactly on the floor from failing
# on the last bit of a float subtraction.
_SLACK = 1e-9


def check_points(points: Any, where: str = "gate") -> float:
    """Return ``points`` as a float, or refuse a value that is not a finite number >= 0.

    >>> check_points(1)
    1.0
    """
    if isinstance(points, bool) or not isinstance(points, (int, float, np.floating, np.integer)) \
            or not math.isfinite(float(points)) or float(points) < 0:
        raise UsageError("the accuracy gate must be a number of points >= 0", where=where,
                         expected="e.g. 1.0 (within 1 point of the reference)", got=repr(points))
    return float(points)


def check_data(data: Any, where: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """Return held-out ``(x, y)`` as arrays, or refuse what is not samples with integer labels.

    >>> x, y = check_data((np.zeros((3, 4)), [0, 1, 1]))
    >>> x.shape, y.dtype.kind
    ((3, 4), 'i')
    """
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise UsageError("held-out data must be a pair (x, y)", where=where,
                         expected="(samples, integer labels)", got=type(data).__name__)
    x, y = np.asarray(data[0]), np.asarray(data[1])
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise UsageError("the labels must be one integer class per sample", where=where,
                         expected="a 1-D integer array", got=f"{y.dtype} of shape {y.shape}")
    if len(x) != len(y) or len(y) == 0:
        raise UsageError("held-out data needs one label per sample", where=where,
                         expected=f"{len(x)} labels (at least one)", got=len(y))
    return x, y


def _fit(g: Graph, x: np.ndarray, where: str) -> tuple[np.ndarray, int, str, Any]:
    """Return ``x`` reshaped to ``g``'s first input's per-sample shape, the batch size, the
    input's name and its dtype."""
    if not g.inputs:
        raise GraphcError(f"graph {g.name!r} has no input", where=where,
                          expected="a classifier with one input", got="no inputs")
    name = g.inputs[0]
    ttype = g.type_of(Value(name))
    if not ttype.shape:
        raise GraphcError(f"input {name!r} has no batch dimension", where=where,
                          expected="shape (batch, ...)", got="a scalar")
    per_sample = ttype.shape[1:]
    if int(np.prod(x.shape[1:])) != int(np.prod(per_sample)):
        raise GraphcError("the held-out samples do not fit the model's input", where=where,
                          expected=f"samples of shape {per_sample} ({name!r})",
                          got=f"samples of shape {x.shape[1:]}")
    return x.reshape((len(x), *per_sample)), ttype.shape[0], name, ttype.dtype


def scores(g: Graph, x: np.ndarray, *, backend: str = "onnxruntime",
           where: str = "accuracy") -> np.ndarray:
    """Return ``g``'s first output on every sample of ``x``, run in chunks of the graph's batch
    size (the last one padded with zeros) on onnxruntime or the interpreter.

    >>> from graphc.models import load
    >>> g = load("mlp").build()
    >>> scores(g, np.zeros((3, 64), np.float32)).shape
    (3, 10)
    """
    from graphc.train.loop import predict_in_batches

    if backend not in BACKENDS:
        from graphc.errors import unknown

        raise unknown("backend", backend, BACKENDS, cls=UsageError, where=where)
    if len(g.inputs) != 1:
        raise GraphcError(f"graph {g.name!r} has {len(g.inputs)} inputs", where=where,
                          expected="a classifier with one input",
                          got=", ".join(g.inputs) or "none")
    x, batch, name, dtype = _fit(g, x, where)
    output = g.output_names()[0]
    if backend == "onnxruntime":
        from graphc.onnxio.export import to_bytes
        from graphc.onnxio.runtime import session

        sess = session(to_bytes(g, dynamic_batch=False), threads=1)

        def one(chunk: np.ndarray) -> np.ndarray:
            return sess.run([output], {name: chunk})[0]
    else:
        from graphc.interpret import run

        def one(chunk: np.ndarray) -> np.ndarray:
            return run(g, {name: chunk})[output]
    return predict_in_batches(one, x, batch, dtype)


def accuracy(g: Graph, x: np.ndarray, y: np.ndarray, *, backend: str = "onnxruntime",
             where: str = "accuracy") -> float:
    """Return the share of samples of ``x`` whose highest score in ``g``'s first output is
    the label ``y`` (a fraction in [0, 1]).

    >>> from graphc.models import load
    >>> g = load("mlp").build()
    >>> x, y = np.zeros((4, 64), np.float32), np.array([0, 1, 2, 3])
    >>> accuracy(g, x, y) in (0.0, 0.25)
    True
    """
    x, y = check_data((x, y), where)
    predicted = scores(g, x, backend=backend, where=where)
    if predicted.ndim != 2:
        raise GraphcError("the model's output is not one score per class", where=where,
                          expected="(batch, classes)", got=predicted.shape)
    if int(y.max()) >= predicted.shape[1] or int(y.min()) < 0:
        raise GraphcError("a label is not a class of the model's output", where=where,
                          expected=f"labels 0..{predicted.shape[1] - 1}",
                          got=f"labels {int(y.min())}..{int(y.max())}")
    return float(np.mean(np.argmax(predicted, axis=1) == y))


@dataclass(frozen=True)
class Gate:
    """Two accuracies (fractions) on the same data and the points the candidate may lose."""

    reference: float
    candidate: float
    points: float
    reference_name: str = "reference"
    candidate_name: str = "candidate"

    @property
    def floor(self) -> float:
        """The lowest candidate accuracy that passes, in percent."""
        return 100 * self.reference - self.points

    @property
    def passed(self) -> bool:
        return 100 * self.candidate >= self.floor - _SLACK

    @property
    def change(self) -> float:
        """The candidate's accuracy minus the reference's, in points."""
        return 100 * (self.candidate - self.reference)

    def describe(self) -> str:
        """Return one line: both accuracies, the change in points and the gate."""
        return (f"{self.candidate_name} {100 * self.candidate:.2f}% vs {self.reference_name} "
                f"{100 * self.reference:.2f}% ({self.change:+.2f} points; gate {self.points:.1f} "
                "points)")

    def require(self, where: str, hint: str | None = None) -> None:
        """Raise GraphcError with both accuracies when the candidate is below the floor.

        >>> try:
        ...     Gate(0.9833, 0.96, 1.0, "teacher", "student").require("substitute-student")
        ... except GraphcError as err:
        ...     print(err.expected, "/", err.got)
        >= 97.33% (teacher 98.33% - 1.0 points) / 96.00%
        """
        if self.passed:
            return
        raise GraphcError(
            f"{self.candidate_name} accuracy {100 * self.candidate:.2f}% is more than "
            f"{self.points:.1f} points below {self.reference_name} {100 * self.reference:.2f}%",
            where=where,
            expected=f">= {self.floor:.2f}% ({self.reference_name} "
                     f"{100 * self.reference:.2f}% - {self.points:.1f} points)",
            got=f"{100 * self.candidate:.2f}%", hint=hint)


def compare(reference: Graph, candidate: Graph, data: Sequence[Any], *, points: float = 1.0,
            backend: str = "onnxruntime", names: tuple[str, str] = ("reference", "candidate"),
            where: str = "gate") -> Gate:
    """Measure both graphs' accuracy on held-out ``data = (x, y)``; return the ``Gate``
    (``gate.require(where)`` refuses a candidate below it).

    >>> from graphc.models import load
    >>> g = load("mlp").build()
    >>> x, y = np.ones((5, 64), np.float32), np.zeros(5, np.int64)
    >>> compare(g, g, (x, y), names=("before", "after")).passed
    True
    """
    points = check_points(points, where)
    x, y = check_data(data, where)
    return Gate(accuracy(reference, x, y, backend=backend, where=where),
                accuracy(candidate, x, y, backend=backend, where=where), points, *names)
