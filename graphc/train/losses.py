"""Losses and penalties, written with the DSL so that autodiff differentiates them.

- ``mse(pred, target)``: mean of the squared differences.
- ``cross_entropy(logits, target)``: -mean over samples of sum_k target_k log softmax(z)_k, from
  the logits with a stable log-softmax; ``target`` holds class probabilities (one-hot, or soft
  labels from mixup or a teacher).
- ``distillation(student, teacher, target, alpha, beta, tau)``: the course's
  L = alpha H(y, softmax(z_s)) + beta H(softmax(z_t / tau), softmax(z_s / tau)) exactly as
  written; ``tau_squared=True`` multiplies the soft term by tau^2 (Hinton et al. 2015: the soft
  term's gradient with respect to z_s is (softmax(z_s / tau) - softmax(z_t / tau)) / tau, which
  shrinks as 1 / tau^2 for large tau; the factor keeps it on the hard term's scale when tau
  changes).
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

import math
from collections.abc import Sequence

import numpy as np

from graphc import nn
from graphc.dsl import Tensor
from graphc.errors import ShapeError, UsageError, unknown


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
                 beta: float = 0.5, tau: float = 4.0, tau_squared: bool = False) -> Tensor:
    """Return alpha H(y, softmax(z_s)) + beta [tau^2] H(softmax(z_t / tau), softmax(z_s / tau)).

    ``student`` and ``teacher`` are logits, ``target`` the probabilities y (one-hot, or a
    teacher's soft labels); the tau^2 factor only with ``tau_squared``. The teacher's side is
    an input of the loss: no gradient flows into it.

    >>> from graphc.dsl import GraphBuilder
    >>> from graphc.interpret import run
    >>> b = GraphBuilder("kd", dtype=np.float64)
    >>> zs, zt, y = (b.input(n, (1, 2)) for n in ("zs", "zt", "y"))
    >>> _ = b.output(distillation(zs, zt, y, alpha=0.0, beta=1.0, tau=1.0), "loss")
    >>> round(float(run(b.build(), {"zs": [[0.0, 0.0]], "zt": [[5.0, 5.0]], "y": [[1.0, 0.0]]})
    ...             ["loss"]), 6)  # H(1/2, 1/2) = log 2
    0.693147
    """
    _same_shape(student, target, "distillation")
    _same_shape(student, teacher, "distillation")
    check_distillation(tau, alpha, beta)
    soft_teacher = nn.softmax(teacher, axis=-1, temperature=tau)
    soft = _soft_cross_entropy(soft_teacher, student, temperature=tau)
    weight = beta * (tau * tau if tau_squared else 1.0)
    return alpha * _soft_cross_entropy(target, student) + weight * soft


def check_distillation(tau: float, alpha: float, beta: float, *, flags: bool = False) -> None:
    """Refuse a temperature that is not positive, or weights that are negative or both 0
    (``flags``: name the command-line options ``--T``, ``--alpha``, ``--beta`` in the error).

    >>> check_distillation(4.0, 0.0, 0.0)
    Traceback (most recent call last):
    ...
    graphc.errors.UsageError: distillation: the distillation weights alpha and beta are both 0; \
expected alpha + beta > 0, got alpha 0.0, beta 0.0. Weigh the hard term (alpha), the soft term \
(beta), or both.
    """
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
        raise UsageError("the distillation temperature must be positive",
                         where="--T" if flags else "distillation", expected="T > 0, e.g. 4",
                         got=tau)
    for name, value in (("alpha", alpha), ("beta", beta)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise UsageError(f"the distillation weight {name} must be >= 0",
                             where=f"--{name}" if flags else "distillation",
                             expected=f"{name} >= 0, e.g. 0.5", got=value)
    if alpha == 0 and beta == 0:
        raise UsageError("the distillation weights alpha and beta are both 0",
                         where="--alpha, --beta" if flags else "distillation",
                         expected="alpha + beta > 0", got=f"alpha {alpha}, beta {beta}",
                         hint="Weigh the hard term (alpha), the soft term (beta), or both.")


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
