"""Elementwise ops, each declared as a sympy formula.

A formula is written once as ``rule(m, *inputs, **attributes)`` over a math module ``m``: with
``m = sympy`` it is the op's sympy expression, from which the derivative (for gradients and for
the symbolic backprop) is taken; with ``m = NUMPY_MATH`` the same rule computes the op on arrays,
which is its numpy reference (``tests/test_ops.py`` checks it equals sympy's ``lambdify`` of the
expression). sympy is imported here, on the first use of an expression or a derivative: compiling
and running a graph never imports it (it costs most of a second at start-up).

Kinks are declared with ``Piecewise`` so the derivative at the kink follows the course's
convention (ReLU'(0) = 0, LeakyReLU'(0) = 1: the course's ``(x < 0) * alpha * x + (x >= 0) * x``);
``Max(x, 0)`` would give 0.5 there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from types import SimpleNamespace
from typing import Any

import numpy as np

from graphc.errors import ShapeError
from graphc.ops.base import (
    FLOAT_DTYPES,
    Attr,
    Example,
    LowerCtx,
    NodeView,
    OpDef,
    TensorType,
    broadcast_shapes,
    elementwise_flops,
    need_float,
    nonfinite_example,
    onnx_dtype,
    rng_array,
    same_dtype,
)


def _numpy_piecewise(*pieces: tuple[Any, Any]) -> Any:
    # What sympy's lambdify prints for Piecewise: the first true condition's value.
    return np.select([cond for _, cond in pieces], [value for value, _ in pieces],
                     default=np.nan)


def _numpy_pow(a: Any, b: Any) -> Any:
    # numpy computes ``x ** 0.5`` for a scalar (or broadcast) exponent as sqrt(x), which is NaN
    # at -inf where pow (C's and onnxruntime's) gives +inf: give it the exponent in full.
    shape = np.broadcast_shapes(np.shape(a), np.shape(b))
    base = np.broadcast_to(a, shape).reshape(-1)
    exponent = np.array(np.broadcast_to(b, shape)).reshape(-1)
    return np.power(base, exponent).reshape(shape)


# The functions formulas may call, computed by numpy (sympy's names).
NUMPY_MATH = SimpleNamespace(exp=np.exp, log=np.log, sqrt=np.sqrt, tanh=np.tanh, Pow=_numpy_pow,
                             Piecewise=_numpy_piecewise)


@dataclass(frozen=True)
class Formula:
    """An elementwise op's formula ``rule(m, *inputs, **attributes)`` over a math module ``m``.

    ``expr`` is the sympy expression over the input symbols ``args`` (``x``, ``y``) and the
    attribute symbols named in ``params``; both are built on first use.

    >>> f = Formula(lambda m, x, alpha: m.Piecewise((x, x > 0), (alpha * x, True)), 1, ("alpha",))
    >>> f.expr
    Piecewise((x, x > 0), (alpha*x, True))
    >>> f.numpy([np.array([-2.0, 3.0])], {"alpha": 0.5})
    array([-1.,  3.])
    """

    rule: Callable[..., Any]
    nin: int
    params: tuple[str, ...]
    # NaN in, NaN out (onnxruntime's Relu, Abs and Sign): a Piecewise alone sends NaN to its
    # last branch, since NaN fails every comparison.
    nan_in_nan_out: bool = False

    @cached_property
    def args(self) -> tuple[Any, ...]:
        import sympy as sp

        return tuple(sp.symbols("x y", real=True)[:self.nin])

    @cached_property
    def expr(self) -> Any:
        import sympy as sp

        return self.rule(sp, *self.args, **{p: sp.Symbol(p, real=True) for p in self.params})

    def numpy(self, inputs: list[np.ndarray], attrs: dict[str, Any]) -> Any:
        """Return the formula computed on arrays, with the attributes' values (and NaN where
        an input is NaN if ``nan_in_nan_out``)."""
        out = self.rule(NUMPY_MATH, *inputs, **{p: attrs[p] for p in self.params})
        if self.nan_in_nan_out:
            for x in inputs:
                out = np.where(np.isnan(x), x, out)
        return out


def _infer(in_types: list[TensorType], attrs: dict[str, Any], consts: list) -> list[TensorType]:
    dtype = same_dtype(in_types, "an elementwise op")
    return [TensorType(broadcast_shapes(*(t.shape for t in in_types)), dtype)]


def _infer_float(in_types: list[TensorType], attrs: dict[str, Any], consts: list
                 ) -> list[TensorType]:
    need_float(in_types[0], "the input")
    return _infer(in_types, attrs, consts)


def elementwise(
    name: str,
    doc: str,
    rule: Callable[..., Any],
    nin: int = 1,
    attrs: dict[str, Attr] | None = None,
    examples: tuple[Example, ...] = (),
    lower: Callable[[LowerCtx, NodeView], None] | None = None,
    floats_only: bool = False,
    nonfinite: tuple[Example, ...] = (),
    nan_in_nan_out: bool = False,
) -> OpDef:
    """Return the OpDef of an elementwise op given as ``rule(m, *args, **attributes)``."""
    attrs = attrs or {}
    formula = Formula(rule, nin, tuple(sorted(attrs)), nan_in_nan_out)

    def ref(inputs: list[np.ndarray], full: dict[str, Any]) -> list[np.ndarray]:
        shape = np.broadcast_shapes(*(x.shape for x in inputs))
        out = formula.numpy(inputs, full)
        return [np.broadcast_to(np.asarray(out, dtype=inputs[0].dtype), shape).copy()]

    return OpDef(
        vjp=_formula_vjp(formula),
        name=name,
        doc=doc,
        inputs=("A", "B") if nin == 2 else ("X",),
        outputs=("Y",),
        attrs=attrs,
        infer=_infer_float if floats_only else _infer,
        ref=ref,
        examples=examples,
        lower=lower,
        flops=elementwise_flops(1),
        formula=formula,
        nonfinite=nonfinite,
    )


@functools.cache
def _derivatives(formula: Formula) -> tuple[Any, ...]:
    import sympy as sp

    return tuple(sp.diff(formula.expr, a) for a in formula.args)


def _formula_vjp(formula: Formula) -> Callable[..., list[Any]]:
    """Return the vjp of an elementwise op from its formula: dA = unbroadcast(dY * df/dA).

    The local derivative is sympy's, lowered to IR ops; sigmoid, tanh and exp use their
    derivative written in terms of their output (Y * (1 - Y), ...), as sympy proves it.
    """

    def vjp(ctx: Any, grads: list[Any]) -> list[Any]:
        import sympy as sp

        args, params = formula.args, formula.params
        dy = grads[0]
        dtype = ctx.out_types[0].dtype
        # ONNX float attributes are float32: the forward computes with alpha = 0.1f, so must
        # its derivative (the double nearest 0.1f, not the decimal 0.1).
        values = {s: sp.Float(float(np.float32(ctx.attrs[p])), 24)
                  for p in params for s in [sp.Symbol(p, real=True)]}
        env = {a: v for a, v in zip(args, ctx.inputs, strict=False)}
        in_terms_of_y = derivative_in_terms_of_output(ctx.g.op(ctx.node)) \
            if len(args) == 1 else None
        out = []
        for k, d in enumerate(_derivatives(formula)):
            if in_terms_of_y is not None:
                d = in_terms_of_y
                local_env = {sp.Symbol("Y", real=True): ctx.outputs[0]}
            else:
                d = d.xreplace(values)
                local_env = env
            if d == 0:
                out.append(None)
                continue
            local = expr_to_ir(ctx, d, local_env, dtype)
            grad = dy if local is None else ctx.op("Mul", dy, local)
            out.append(ctx.unbroadcast(grad, ctx.in_types[k].shape))
        return out

    return vjp


# The ONNX op of each sympy relation and function that derivative formulas contain.
@functools.cache
def derivative_in_terms_of_output(op: str) -> Any:
    """Return dy/dx of a unary elementwise op as a polynomial in its output ``Y``, or None.

    The polynomial is found from a few samples and then proved by sympy: sigmoid gives
    ``Y*(1 - Y)``, tanh ``1 - Y**2``, exp ``Y``.

    >>> derivative_in_terms_of_output("Sigmoid")
    Y*(1 - Y)
    """
    import sympy as sp

    formula = next((o.formula for o in OPS if o.name == op), None)
    if formula is None or len(formula.args) != 1 or formula.params:
        return None
    x = formula.args[0]
    f = formula.expr
    if f.has(sp.Piecewise):
        return None
    d = sp.diff(f, x)
    samples = [0.3, 0.7, 1.1, 1.9]
    fs = [float(f.subs(x, s)) for s in samples]
    ds = [float(d.subs(x, s)) for s in samples]
    coeffs, *_ = np.linalg.lstsq(np.array([[1, v, v * v] for v in fs]), np.array(ds), rcond=None)
    y = sp.Symbol("Y", real=True)
    poly = sum(sp.nsimplify(round(float(c), 9)) * y**k for k, c in enumerate(coeffs))
    if poly.is_zero or sp.Symbol("Y", real=True) not in poly.free_symbols:
        return None
    difference = (d - poly.subs(y, f)).rewrite(sp.exp)
    if sp.cancel(sp.expand(difference)) != 0 and sp.simplify(difference) != 0:
        return None
    return _readable(poly)


def _readable(poly: Any) -> Any:
    """Return the simplest-looking of a polynomial's expanded and factored forms.

    Fewest operations first, then fewest minus signs, then factored: sigmoid' reads
    ``Y*(1 - Y)`` and tanh' ``1 - Y**2``.
    """
    import sympy as sp

    factored = sp.factor(poly)
    candidates = [sp.expand(poly), factored]
    if factored.is_Mul and factored.args[0] == -1:
        rest = factored.args[1:]
        for k, f in enumerate(rest):
            if f.is_Add:
                candidates.append(sp.Mul(*rest[:k], -f, *rest[k + 1:]))
    return min(candidates, key=lambda e: (sp.count_ops(e), str(e).count("-"),
                                          0 if e.is_Mul else 1))


SYMPY_RELATIONS = {">": "Greater", ">=": "GreaterOrEqual", "<": "Less", "<=": "LessOrEqual",
                   "==": "Equal"}
SYMPY_FUNCTIONS = {"exp": "Exp", "log": "Log", "tanh": "Tanh", "Abs": "Abs"}


def expr_to_ir(ctx: Any, e: Any, env: dict[Any, Any], dtype: Any) -> Any:
    """Lower a small sympy expression over ``env``'s symbols to IR ops (None for the number 1,
    so multiplying by it adds no node)."""
    if e == 1:
        return None
    return _lower_expr(ctx, e, env, dtype)


def _lower_piecewise(ctx: Any, e: Any, env: dict[Any, Any], dtype: Any) -> Any:
    """Lower ``Piecewise((v1, c1), (v2, c2), ..., (vn, True))`` from the last branch up.

    While the branches are numbers, ``where(c, v, r)`` is ``r + (v - r) * cast(c)``: a Mul of a
    0/1 mask, which onnxruntime runs several times faster than Where (ReLU' is ``cast(x > 0)``).
    A branch that is an expression takes Where.
    """
    import sympy as sp

    result: Any = 0.0
    for value, cond in reversed(e.args):
        if cond is sp.true:
            result = float(value) if value.is_Number else _lower_expr(ctx, value, env, dtype)
            continue
        mask = _lower_expr(ctx, cond, env, dtype)
        if value.is_Number and isinstance(result, float):
            step = float(value) - result
            part = ctx.op("Cast", mask, to=onnx_dtype(dtype))
            if step != 1.0:
                part = ctx.op("Mul", part, ctx.const(step, dtype))
            result = part if result == 0.0 else ctx.op("Add", part, ctx.const(result, dtype))
            continue
        if isinstance(result, float):
            result = ctx.const(result, dtype)
        result = ctx.op("Where", mask, _lower_expr(ctx, value, env, dtype), result)
    return ctx.const(result, dtype) if isinstance(result, float) else result


def _lower_expr(ctx: Any, e: Any, env: dict[Any, Any], dtype: Any) -> Any:
    import sympy as sp

    if e in env:
        return env[e]
    if e.is_Number or e is sp.true or e is sp.false:
        value = bool(e) if e in (sp.true, sp.false) else float(e)
        return ctx.const(value, np.bool_ if isinstance(value, bool) else dtype)
    args = [_lower_expr(ctx, a, env, dtype) for a in e.args] \
        if not isinstance(e, sp.Piecewise) else []
    if e.is_Add or e.is_Mul:
        if e.is_Mul and e.args[0] == -1:
            return ctx.op("Neg", _lower_expr(ctx, sp.Mul(*e.args[1:]), env, dtype))
        total = args[0]
        for a in args[1:]:
            total = ctx.op("Add" if e.is_Add else "Mul", total, a)
        return total
    if e.is_Pow:
        base, exponent = args[0], e.exp
        if exponent == -1:
            return ctx.op("Div", ctx.const(1.0, dtype), base)
        if exponent == 2:
            return ctx.op("Mul", base, base)
        if exponent == sp.Rational(1, 2):
            return ctx.op("Sqrt", base)
        return ctx.op("Pow", base, args[1])
    if isinstance(e, sp.Piecewise):
        return _lower_piecewise(ctx, e, env, dtype)
    if e.is_Relational:
        return ctx.op(SYMPY_RELATIONS[e.rel_op], *args)
    if isinstance(e, (sp.And, sp.Or)):
        # sympy merges Piecewise branches of equal value: (x <= a) | (x >= b).
        total = args[0]
        for a in args[1:]:
            total = ctx.op(type(e).__name__, total, a)
        return total
    name = SYMPY_FUNCTIONS.get(type(e).__name__)
    if name is not None:
        return ctx.op(name, *args)
    from graphc.errors import GraphcError

    raise GraphcError(f"cannot lower {e} to IR ops")


def _unary_examples(low: float = -3.0, high: float = 3.0, **attrs: Any) -> tuple[Example, ...]:
    kinks = np.array([-1.0, -1e-3, 0.0, 1e-3, 1.0], dtype=np.float32)
    return (
        Example((rng_array((2, 3, 4), seed=1, low=low, high=high),), attrs, name="3d"),
        Example((kinks if low < 0 else np.abs(kinks) + 0.5,), attrs, name="kinks"),
    )


def _binary_examples(positive_b: bool = False) -> tuple[Example, ...]:
    low = 0.5 if positive_b else -2.0
    return (
        Example((rng_array((2, 3), seed=1), rng_array((2, 3), seed=2, low=low, high=2.0)),
                name="same-shape"),
        Example((rng_array((2, 3, 4), seed=3), rng_array((3, 1), seed=4, low=low, high=2.0)),
                name="broadcast"),
        Example((rng_array((4, 3), seed=5), rng_array((3,), seed=6, low=low, high=2.0)),
                consts=(1,), name="const-rhs"),
        Example((np.float32(-2.0).reshape(()), np.float32(5.0).reshape(())), name="scalars"),
    )


def _unary_nonfinite(low: float = -3.0, high: float = 3.0, **attrs: Any) -> tuple[Example, ...]:
    return (nonfinite_example(_unary_examples(low, high, **attrs)[0]),)


def _binary_nonfinite(positive_b: bool = False) -> tuple[Example, ...]:
    same, broadcast = _binary_examples(positive_b)[:2]
    return (nonfinite_example(same, ports=(0, 1)),
            nonfinite_example(broadcast, ports=(1,), name="nonfinite-broadcast"))


def _pow_nonfinite() -> tuple[Example, ...]:
    # Every IEEE special case of pow: negative and infinite bases with integer, half-integer
    # and infinite exponents, 0 ** negative, NaN ** 0 and 1 ** NaN.
    bases = np.array([-np.inf, -8.0, -1.0, -0.0, 0.0, 0.5, 1.0, 2.0, np.inf, np.nan], np.float32)
    exponents = np.array([-np.inf, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, np.inf, np.nan],
                         np.float32)
    return (
        Example((bases[:, None], exponents[None, :]), name="nonfinite-grid"),
        Example((bases, np.array(0.5, np.float32)), consts=(1,), name="nonfinite-sqrt"),
    )


def _lower_heaviside(ctx: LowerCtx, view: NodeView) -> None:
    # The step function is not an ONNX op: Y = Cast(X >= threshold) to X's float type.
    dtype = view.in_types[0].dtype
    threshold = ctx.const(view.name + ".threshold",
                          np.array(view.full_attrs["threshold"], dtype=dtype))
    mask = ctx.fresh(view.name + "_ge")
    ctx.node("GreaterOrEqual", [view.inputs[0], threshold], [mask])
    ctx.node("Cast", [mask], view.outputs, to=onnx_dtype(dtype))


def _sigmoid(m: Any, x: Any) -> Any:
    return 1 / (1 + m.exp(-x))


# Pow(A, B) may raise A to a B of another numeric dtype (ONNX's T and T1); Y has A's dtype.
POW_BASE_DTYPES = tuple(np.dtype(d) for d in (np.float32, np.float64, np.float16, np.int32,
                                              np.int64))


def _pow_infer(in_types: list[TensorType], attrs: dict[str, Any], consts: list
               ) -> list[TensorType]:
    a, b = in_types
    if np.dtype(a.dtype) == np.dtype(b.dtype):
        return _infer(in_types, attrs, consts)
    for what, t, allowed in (("base A", a, POW_BASE_DTYPES), ("exponent B", b, None)):
        if np.dtype(t.dtype) == np.bool_ or (allowed and np.dtype(t.dtype) not in allowed):
            raise ShapeError(f"Pow {what} of another dtype than the other input must be a "
                             "number of a type ONNX allows there", expected="f32, f64, f16, "
                             "i32 or i64" if allowed else "a float or integer tensor",
                             got=str(t))
    return [TensorType(broadcast_shapes(a.shape, b.shape), np.dtype(a.dtype))]


def _mixed_pow(op: OpDef) -> OpDef:
    """Return Pow's record taking an exponent of another dtype (float ** int, int ** float).

    The gradient of a float base with an integer exponent is dY B A^(B - 1), B cast to A's
    dtype; an integer exponent or an integer output gets none.
    """
    same = op.vjp

    def vjp(ctx: Any, grads: list[Any]) -> list[Any]:
        a_type, b_type = ctx.in_types
        if np.dtype(a_type.dtype) == np.dtype(b_type.dtype):
            return same(ctx, grads)
        if np.dtype(a_type.dtype) not in FLOAT_DTYPES or grads[0] is None:
            return [None, None]
        a, b = ctx.inputs
        dtype = a_type.dtype
        exponent = ctx.op("Cast", b, to=onnx_dtype(dtype))
        power = ctx.op("Pow", a, ctx.op("Sub", exponent, ctx.const(1.0, dtype)))
        local = ctx.op("Mul", exponent, power)
        return [ctx.unbroadcast(ctx.op("Mul", grads[0], local), a_type.shape), None]

    examples = (
        Example((rng_array((2, 3), seed=61, low=0.5, high=2.0),
                 np.array([[2, -1, 3]], np.int64)), consts=(1,), name="float-to-int"),
        Example((np.array([1, 2, 3, -4], np.int64), np.array([0.5, 2.0, 1.5, 3.0], np.float32)),
                name="int-to-float"),
    )
    return replace(op, infer=_pow_infer, vjp=vjp, examples=op.examples + examples)


OPS: list[OpDef] = [
    elementwise("Add", "Add two tensors with numpy broadcasting.", lambda m, a, b: a + b, 2,
                examples=_binary_examples(), nonfinite=_binary_nonfinite()),
    elementwise("Sub", "Subtract B from A with numpy broadcasting.", lambda m, a, b: a - b, 2,
                examples=_binary_examples(), nonfinite=_binary_nonfinite()),
    elementwise("Mul", "Multiply two tensors with numpy broadcasting.", lambda m, a, b: a * b, 2,
                examples=_binary_examples(), nonfinite=_binary_nonfinite()),
    elementwise("Div", "Divide A by B with numpy broadcasting.", lambda m, a, b: a / b, 2,
                examples=_binary_examples(positive_b=True),
                nonfinite=(*_binary_nonfinite(),
                           Example((np.array([1.0, -1.0, 0.0, -0.0, np.inf, np.nan], np.float32),
                                    np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0], np.float32)),
                                   name="by-zero"))),
    _mixed_pow(elementwise(
        "Pow", "Raise A to the power B (of A's dtype, or float ** int, int ** float) with "
        "numpy broadcasting.", lambda m, a, b: m.Pow(a, b), 2,
        examples=tuple(
            Example((np.abs(e.inputs[0]) + np.float32(0.5), e.inputs[1]), e.attrs,
                    e.consts, e.name)
            for e in _binary_examples()),
        nonfinite=_pow_nonfinite())),
    elementwise("Neg", "Negate: -x.", lambda m, x: -x, examples=_unary_examples(),
                nonfinite=_unary_nonfinite()),
    elementwise("Exp", "Exponential: e^x.", lambda m, x: m.exp(x), examples=_unary_examples(),
                nonfinite=_unary_nonfinite(), floats_only=True),
    elementwise("Log", "Natural logarithm (x > 0).", lambda m, x: m.log(x),
                examples=_unary_examples(0.1, 4.0), nonfinite=_unary_nonfinite(-1.0, 4.0),
                floats_only=True),
    elementwise("Sqrt", "Square root (x >= 0).", lambda m, x: m.sqrt(x),
                examples=_unary_examples(0.0, 4.0), nonfinite=_unary_nonfinite(-1.0, 4.0),
                floats_only=True),
    elementwise("Sigmoid", "Logistic sigmoid: 1 / (1 + e^-x).", _sigmoid,
                examples=_unary_examples(-8.0, 8.0), nonfinite=_unary_nonfinite(-8.0, 8.0),
                floats_only=True),
    elementwise("Tanh", "Hyperbolic tangent.", lambda m, x: m.tanh(x), examples=_unary_examples(),
                nonfinite=_unary_nonfinite(), floats_only=True),
    elementwise("Abs", "Absolute value |x| (derivative sign(x), 0 at 0).",
                lambda m, x: m.Piecewise((x, x > 0), (-x, x < 0), (0, True)),
                examples=_unary_examples(), nonfinite=_unary_nonfinite(), nan_in_nan_out=True),
    elementwise("Relu", "Rectified linear unit: x if x > 0 else 0 (derivative 0 at 0).",
                lambda m, x: m.Piecewise((x, x > 0), (0, True)), examples=_unary_examples(),
                nonfinite=_unary_nonfinite(), nan_in_nan_out=True, floats_only=True),
    # The course's LeakyReLU: the x >= 0 branch holds the kink, so the slope at 0 is 1 (ONNX
    # leaves it unspecified; the forward is the same either way).
    elementwise("LeakyRelu", "Leaky ReLU: x if x >= 0 else alpha * x (derivative 1 at 0).",
                lambda m, x, alpha: m.Piecewise((x, x >= 0), (alpha * x, True)),
                attrs={"alpha": Attr("float", 0.01)},
                examples=(*_unary_examples(), *_unary_examples(alpha=0.2)),
                nonfinite=_unary_nonfinite(alpha=0.2), floats_only=True),
    elementwise("Heaviside",
                "Step function: 1 if x >= threshold else 0 (the McCulloch-Pitts neuron).",
                lambda m, x, threshold: m.Piecewise((1, x >= threshold), (0, True)),
                attrs={"threshold": Attr("float", 0.0)},
                examples=(*_unary_examples(), *_unary_examples(threshold=0.5)),
                # NaN >= threshold is false: Heaviside(NaN) = 0, as its lowering computes.
                nonfinite=_unary_nonfinite(threshold=0.5), lower=_lower_heaviside,
                floats_only=True),
    elementwise("Sign", "Sign: 1 if x > 0, -1 if x < 0, else 0 (derivative 0).",
                lambda m, x: m.Piecewise((1, x > 0), (-1, x < 0), (0, True)),
                # No float 0 in the examples: the finite-difference test would see Sign's jump
                # there; the integer examples (which it skips) hold the zeros.
                examples=(
                    Example((rng_array((2, 3, 4), seed=1, low=-3.0, high=3.0),), name="3d"),
                    Example((np.array([-2.5, -1e-3, 1e-3, 0.25, 7.0], np.float32),),
                            name="near-zero"),
                    Example((np.array([-128, -1, 0, 1, 127], np.int8),), name="int8-zero"),
                    Example((np.array([[-5, 0], [0, 9]], np.int32),), name="int32-zero"),
                ),
                nonfinite=_unary_nonfinite(), nan_in_nan_out=True),
]
