"""BinarySign: the activation of binary networks, with the straight-through gradient.

``BinarySign(x) = +1 where x >= 0, else -1``, in x's float dtype. Unlike ONNX ``Sign``, the
sign of 0 is +1: a binary network needs every activation in {-1, +1} (XNOR-Net, Rastegari et
al. 2016), and a 0 would drop its term from the sum. Exported as
``Where(GreaterOrEqual(x, 0), 1, -1)`` with constants of x's dtype (-0.0 >= 0 holds, so
-0.0 gives +1 too; NaN gives -1).

Its derivative is 0 wherever it exists, which would stop training; the vjp is the
straight-through estimator of binarized networks (Hubara et al. 2016)::

    dx = dy * (|x| <= 1)

i.e. the gradient of ``clip(x, -1, 1)``, passed where the input is in [-1, 1] (bounds included)
and zero outside. Finite differences check it only outside [-1, 1], where both are 0; the
examples inside that window give x as a constant (see ``_examples``) and tests/test_binarize.py
asserts the estimator's values by hand.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.ops.base import (
    Example,
    LowerCtx,
    NodeView,
    OpDef,
    TensorType,
    elementwise_flops,
    need_float,
    nonfinite_examples,
    onnx_dtype,
    rng_array,
)


def _infer(in_types: list[TensorType | None], attrs: dict[str, Any],
           consts: list[np.ndarray | None]) -> list[TensorType]:
    need_float(in_types[0], "the input of BinarySign")
    return [TensorType(in_types[0].shape, np.dtype(in_types[0].dtype))]


def binary_sign(x: np.ndarray) -> np.ndarray:
    """Return +1 where ``x >= 0`` and -1 elsewhere, in x's dtype (sign(0) = +1).

    >>> binary_sign(np.array([-2.0, -0.0, 0.0, 0.5], np.float32)).tolist()
    [-1.0, 1.0, 1.0, 1.0]
    """
    x = np.asarray(x)
    return np.where(x >= 0, x.dtype.type(1), x.dtype.type(-1)).astype(x.dtype)


def _ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    return [binary_sign(inputs[0])]


def _lower(ctx: LowerCtx, view: NodeView) -> None:
    dtype = np.dtype(view.in_types[0].dtype)
    zero = ctx.const(view.name + ".zero", np.array(0, dtype))
    plus = ctx.const(view.name + ".plus", np.array(1, dtype))
    minus = ctx.const(view.name + ".minus", np.array(-1, dtype))
    mask = ctx.fresh(view.name + "_ge")
    ctx.node("GreaterOrEqual", [view.inputs[0], zero], [mask])
    ctx.node("Where", [mask, plus, minus], view.outputs)


def _vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """Straight-through estimator: dx = dy * (|x| <= 1)."""
    (x,) = ctx.inputs
    dtype = ctx.in_types[0].dtype
    inside = ctx.op("LessOrEqual", ctx.op("Abs", x), ctx.const(1.0, dtype))
    return [ctx.op("Mul", grads[0], ctx.op("Cast", inside, to=onnx_dtype(dtype)))]


def _examples() -> tuple[Example, ...]:
    rng = np.random.default_rng(81)
    # Outside [-1, 1] the estimator is 0 like the derivative, so the table-driven finite
    # differences check the vjp there.
    outside = (rng.uniform(1.05, 3.0, (2, 3, 4)) * rng.choice([-1.0, 1.0], (2, 3, 4)))
    # Zeros, both signed zeros and the window's bounds: x is a constant here, because inside
    # [-1, 1] the estimator is not the derivative (which is 0, or a jump at 0).
    edges = np.array([-2.0, -1.0, -0.5, -1e-3, -0.0, 0.0, 1e-3, 0.5, 1.0, 2.0], np.float32)
    return (
        Example((outside.astype(np.float32),), name="outside-window"),
        Example((outside.astype(np.float64)[0],), name="outside-window-f64"),
        Example((edges,), consts=(0,), name="zeros-and-window-const"),
        Example((rng_array((3, 4), seed=82, low=-0.9, high=0.9).astype(np.float64),),
                consts=(0,), name="window-f64-const"),
    )


OPS: list[OpDef] = [
    OpDef(
        name="BinarySign",
        doc="Sign with sign(0) = +1 in the input's float dtype, straight-through gradient "
            "where |x| <= 1 (graphc op for binary networks, exported as Where(x >= 0, 1, -1)).",
        inputs=("X",),
        outputs=("Y",),
        attrs={},
        infer=_infer,
        ref=_ref,
        lower=_lower,
        vjp=_vjp,
        flops=elementwise_flops(1),
        nonfinite=nonfinite_examples(_examples(), 0, 1),
        examples=_examples(),
    ),
]
