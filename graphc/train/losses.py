"""Losses and penalties, written with the DSL so that autodiff differentiates them.

- ``mse(pred, target)``: mean of the squared differences.
- ``cross_entropy(logits, target)``: -mean over samples of sum_k target_k log softmax(z)_k, from
  the logits with a stable log-softmax; ``target`` holds class probabilities (one-hot, or soft
  labels from mixup or a teacher).
- ``distillation(student, teacher, target, alpha, beta, tau)``: the course's
  L = alpha H(y, softmax(z_s)) + beta H(softmax(z_t / tau), softmax(z_s / tau)), with the
  customary tau^2 factor on the second term unless ``tau_squared=False`` (it keeps the soft
  term's gradients on the same scale as the hard term's when tau changes).
- ``l2_penalty``, ``l1_penalty`` on chosen weights, and ``group_penalty``: the sum over output
  channels of each channel's L2 (or L1) norm, which drives whole channels to zero for
  structured pruning.

>>> import numpy as np
>>> from graphc.dsl import GraphBuilder
>>> from graphc.interpret import run
>>> b = GraphBuilder("ce", dtype=np.float64)
>>> z, y = b.input("z", (1, 3)), b.input("y", (1, 3))
>>> _ = b.output(cross_entropy(z, y), "loss")
>>> round(float(run(b.build(), {"z": [[0.0, 0.0, 0.0]], "y": [[1.0, 0.0, 0.0]]})["loss"]), 6)
1.098612
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from graphc import nn
from graphc.dsl import Tensor
from graphc.errors import GraphcError, ShapeError, unknown


def _same_shape(a: Tensor, b: Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise ShapeError(f"{what}: prediction and target shapes differ", expected=a.shape,
                         got=b.shape, hint="Give the target in the prediction's shape "
                                           "(one-hot or probabilities for classes).")


def _axes(x: Tensor, axes: Sequence[int]) -> Tensor:
    return x.builder.const(np.array(list(axes), np.int64), name="axes", dtype=np.int64)


def _mean(x: Tensor) -> Tensor:
    return x.builder.op("ReduceMean", x, keepdims=0)


def _sum(x: Tensor, axes: Sequence[int] | None = None) -> Tensor:
    if axes is None:
        return x.builder.op("ReduceSum", x, keepdims=0)
    return x.builder.op("ReduceSum", x, _axes(x, axes), keepdims=0)


def mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error: mean((pred - target)^2) over every element."""
    _same_shape(pred, target, "mse")
    d = pred - target
    return _mean(d * d)


def _soft_cross_entropy(target: Tensor, logits: Tensor, temperature: float = 1.0) -> Tensor:
    logp = nn.log_softmax(logits, axis=-1, temperature=temperature)
    return -_mean(_sum(target * logp, axes=[-1 % logits.ndim]))


def cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy H(target, softmax(logits)), averaged over the samples (axis 0)."""
    _same_shape(logits, target, "cross_entropy")
    return _soft_cross_entropy(target, logits)


def distillation(student: Tensor, teacher: Tensor, target: Tensor, *, alpha: float = 0.5,
                 beta: float = 0.5, tau: float = 4.0, tau_squared: bool = True) -> Tensor:
    """alpha H(y, softmax(z_s)) + beta [tau^2] H(softmax(z_t / tau), softmax(z_s / tau))."""
    _same_shape(student, target, "distillation")
    _same_shape(student, teacher, "distillation")
    if tau <= 0:
        raise GraphcError("distillation temperature must be positive", expected="tau > 0",
                          got=tau)
    soft_teacher = nn.softmax(teacher, axis=-1, temperature=tau)
    soft = _soft_cross_entropy(soft_teacher, student, temperature=tau)
    weight = beta * (tau * tau if tau_squared else 1.0)
    return alpha * _soft_cross_entropy(target, student) + weight * soft


def l2_penalty(weights: Sequence[Tensor]) -> Tensor:
    """sum of w^2 over the given weights."""
    return sum(_sum(w * w) for w in weights)  # type: ignore[return-value]


def l1_penalty(weights: Sequence[Tensor]) -> Tensor:
    """sum of |w| over the given weights (subgradient 0 at 0)."""
    return sum(_sum(w.builder.op("Abs", w)) for w in weights)  # type: ignore[return-value]


GROUP_NORMS = ("l2", "l1")


def group_penalty(weight: Tensor, norm: str = "l2", eps: float = 1e-12) -> Tensor:
    """sum over output channels (axis 0) of the channel's L2 norm sqrt(sum w^2 + eps), or of
    its L1 norm: the group lasso that zeroes whole channels."""
    if norm not in GROUP_NORMS:
        raise unknown("group norm", norm, GROUP_NORMS)
    rest = list(range(1, weight.ndim))
    if norm == "l1":
        return _sum(_sum(weight.builder.op("Abs", weight), rest))
    return _sum(nn.sqrt(_sum(weight * weight, rest) + eps))
