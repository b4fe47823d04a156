"""The activations PyTorch models export beyond the course's: Erf, Gelu, HardSigmoid and
HardSwish (ONNX semantics; Gelu is an ONNX op from opset 20 and is written as Erf arithmetic,
as PyTorch writes it, below that).

HardSigmoid and HardSwish are piecewise linear (and quadratic) and are declared as formulas
(graphc.ops.elementwise), so their derivatives come from sympy; their kinks take the slope of
the first branch that holds there: 0 at both ends of HardSigmoid, and for HardSwish 0 at
x = -3 and 1 at x = 3. Erf and Gelu have no elementary numpy form; their references compute
erf in float64 (scipy, installed with scikit-learn) and their gradient rules are written by hand:
erf'(x) = 2/sqrt(pi) exp(-x^2) and Gelu'(x) = Phi(x) + x phi(x) (tanh form: its derivative).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from graphc.errors import OpError
from graphc.ops.base import (
    Attr,
    Example,
    LowerCtx,
    NodeView,
    OpDef,
    TensorType,
    elementwise_flops,
    need_float,
    nonfinite_example,
    rng_array,
)
from graphc.ops.elementwise import elementwise

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
TANH_CUBIC = 0.044715
GELU_FORMS = ("none", "tanh")


def _erf64(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf  # scipy is slow to import: only when erf is computed

    return erf(np.asarray(x, dtype=np.float64))


def _float_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                 consts: list[np.ndarray | None]) -> list[TensorType]:
    need_float(in_types[0], "the input")
    return [in_types[0]]


def _examples(low: float, high: float, **attrs: Any) -> tuple[Example, ...]:
    return (
        Example((rng_array((2, 3, 4), seed=1, low=low, high=high),), attrs, name="3d"),
        Example((np.array([-6.0, -2.5, -1.0, -1e-3, 0.0, 1e-3, 0.5, 2.0, 7.0], np.float32),),
                attrs, name="points"),
        Example((rng_array((3, 5), seed=2, low=low, high=high, dtype=np.float16),), attrs,
                name="float16"),
    )


def _nonfinite(low: float, high: float, **attrs: Any) -> tuple[Example, ...]:
    return (nonfinite_example(_examples(low, high, **attrs)[0]),)


# --- Erf --------------------------------------------------------------------------------------


def _erf_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    return [_erf64(x).astype(x.dtype)]


def _erf_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """d erf(x) = 2/sqrt(pi) exp(-x^2) dx."""
    x, dtype = ctx.inputs[0], ctx.out_types[0].dtype
    gauss = ctx.op("Exp", ctx.op("Neg", ctx.op("Mul", x, x)))
    local = ctx.op("Mul", gauss, ctx.const(2.0 / math.sqrt(math.pi), dtype))
    return [ctx.op("Mul", grads[0], local)]


ERF = OpDef(
    name="Erf",
    doc="The error function erf(x) = 2/sqrt(pi) times the integral of exp(-t^2) from 0 to x.",
    inputs=("input",),
    outputs=("output",),
    attrs={},
    infer=_float_infer,
    ref=_erf_ref,
    examples=_examples(-3.0, 3.0),
    nonfinite=_nonfinite(-3.0, 3.0),
    flops=elementwise_flops(1),
    vjp=_erf_vjp,
)


# --- Gelu -------------------------------------------------------------------------------------


def _gelu_form(attrs: dict[str, Any]) -> str:
    form = attrs["approximate"]
    if form not in GELU_FORMS:
        raise OpError("Gelu approximate is not a form ONNX defines",
                      expected=" or ".join(repr(f) for f in GELU_FORMS), got=repr(form))
    return form


def _gelu_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                consts: list[np.ndarray | None]) -> list[TensorType]:
    _gelu_form(attrs)
    return _float_infer(in_types, attrs, consts)


def _gelu_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    x = inputs[0]
    x64 = x.astype(np.float64)
    if _gelu_form(attrs) == "tanh":
        y = 0.5 * x64 * (1.0 + np.tanh(SQRT_2_OVER_PI * (x64 + TANH_CUBIC * x64 ** 3)))
    else:
        y = 0.5 * x64 * (1.0 + _erf64(x64 / math.sqrt(2.0)))
    return [y.astype(x.dtype)]


def _gelu_lower(ctx: LowerCtx, view: NodeView) -> None:
    """One Gelu node from opset 20; below, PyTorch's arithmetic: x * (1 + erf(x / sqrt 2))
    * 0.5, or for the tanh form x * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) * 0.5."""
    form = _gelu_form(view.full_attrs)
    if ctx.opset >= 20:
        attrs = {"approximate": form} if "approximate" in view.attrs else {}
        ctx.node("Gelu", view.inputs, view.outputs, **attrs)
        return
    dtype = view.in_types[0].dtype
    x, name = view.inputs[0], view.name

    def const(label: str, value: float) -> str:
        return ctx.const(f"{name}.{label}", np.array(value, dtype=dtype))

    def step(op: str, a: str, b: str, label: str) -> str:
        out = ctx.fresh(f"{name}_{label}")
        ctx.node(op, [a, b], [out])
        return out

    if form == "tanh":
        cube = step("Mul", step("Mul", x, x, "square"), x, "cube")
        inner = step("Add", x, step("Mul", cube, const("c", TANH_CUBIC), "cubic"), "inner")
        scaled = step("Mul", inner, const("k", SQRT_2_OVER_PI), "scaled")
        curve = ctx.fresh(f"{name}_tanh")
        ctx.node("Tanh", [scaled], [curve])
    else:
        scaled = step("Div", x, const("sqrt2", math.sqrt(2.0)), "scaled")
        curve = ctx.fresh(f"{name}_erf")
        ctx.node("Erf", [scaled], [curve])
    gate = step("Add", curve, const("one", 1.0), "gate")
    product = step("Mul", x, gate, "product")
    ctx.node("Mul", [product, const("half", 0.5)], view.outputs)


def _gelu_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """Gelu'(x) = Phi(x) + x phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2 and phi(x) =
    exp(-x^2 / 2) / sqrt(2 pi); the tanh form: (1 + t) / 2 + x (1 - t^2) k (1 + 3c x^2) / 2
    with t = tanh(k (x + c x^3))."""
    x, dtype = ctx.inputs[0], ctx.out_types[0].dtype

    def c(value: float) -> Any:
        return ctx.const(value, dtype)

    square = ctx.op("Mul", x, x)
    if _gelu_form(ctx.attrs) == "tanh":
        inner = ctx.op("Add", x, ctx.op("Mul", ctx.op("Mul", square, x), c(TANH_CUBIC)))
        t = ctx.op("Tanh", ctx.op("Mul", inner, c(SQRT_2_OVER_PI)))
        cdf = ctx.op("Mul", ctx.op("Add", t, c(1.0)), c(0.5))
        slope = ctx.op("Mul", ctx.op("Sub", c(1.0), ctx.op("Mul", t, t)),
                       ctx.op("Add", c(1.0), ctx.op("Mul", square, c(3 * TANH_CUBIC))))
        pdf_term = ctx.op("Mul", ctx.op("Mul", x, slope), c(0.5 * SQRT_2_OVER_PI))
    else:
        cdf = ctx.op("Mul", ctx.op("Add", ctx.op("Erf", ctx.op("Mul", x, c(1 / math.sqrt(2.0)))),
                                   c(1.0)), c(0.5))
        pdf = ctx.op("Mul", ctx.op("Exp", ctx.op("Mul", square, c(-0.5))),
                     c(1 / math.sqrt(2 * math.pi)))
        pdf_term = ctx.op("Mul", x, pdf)
    return [ctx.op("Mul", grads[0], ctx.op("Add", cdf, pdf_term))]


GELU = OpDef(
    name="Gelu",
    doc="Gaussian error linear unit x * Phi(x) (approximate='tanh': the tanh form).",
    inputs=("X",),
    outputs=("Y",),
    attrs={"approximate": Attr("str", "none")},
    infer=_gelu_infer,
    ref=_gelu_ref,
    # No float16 example: below opset 20 the lowering rounds each step to float16.
    examples=(*_examples(-4.0, 4.0)[:2], *_examples(-4.0, 4.0, approximate="tanh")[:2]),
    nonfinite=(*_nonfinite(-4.0, 4.0), *_nonfinite(-4.0, 4.0, approximate="tanh")),
    lower=_gelu_lower,
    flops=elementwise_flops(8),
    vjp=_gelu_vjp,
)


# --- HardSigmoid, HardSwish -------------------------------------------------------------------


def _hard_sigmoid(m: Any, x: Any, alpha: Any, beta: Any) -> Any:
    line = alpha * x + beta
    return m.Piecewise((0, line <= 0), (1, line >= 1), (line, True))


def _sixth(m: Any) -> Any:
    # sympy's 1/6 is exact and lambdify prints it as (1/6): numpy computes the same double.
    return m.Rational(1, 6) if hasattr(m, "Rational") else 1 / 6


def _hard_swish(m: Any, x: Any) -> Any:
    half = m.Rational(1, 2) if hasattr(m, "Rational") else 0.5
    return x * m.Piecewise((0, x <= -3), (1, x >= 3), (_sixth(m) * x + half, True))


def _hard_examples(**attrs: Any) -> tuple[Example, ...]:
    # Away from the kinks (the finite differences would straddle them).
    return (
        Example((rng_array((2, 3, 4), seed=3, low=-5.0, high=5.0),), attrs, name="3d"),
        Example((np.array([-7.0, -2.9, -1.0, 0.0, 0.7, 2.9, 3.1, 9.0], np.float32),), attrs,
                name="points"),
    )


HARD_SIGMOID = elementwise(
    "HardSigmoid", "max(0, min(1, alpha * x + beta)) (derivative 0 at both kinks).",
    _hard_sigmoid, attrs={"alpha": Attr("float", 0.2), "beta": Attr("float", 0.5)},
    examples=(*_hard_examples(), *_hard_examples(alpha=1 / 6, beta=0.5)),
    nonfinite=(nonfinite_example(_hard_examples()[0]),), floats_only=True)

HARD_SWISH = elementwise(
    "HardSwish", "x * max(0, min(1, x / 6 + 1/2)) (derivative 0 at x = -3, 1 at x = 3).",
    _hard_swish, examples=_hard_examples(),
    nonfinite=(nonfinite_example(_hard_examples()[0]),), floats_only=True)


OPS: list[OpDef] = [ERF, GELU, HARD_SIGMOID, HARD_SWISH]
