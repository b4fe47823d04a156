"""Matrix products: MatMul (numpy matmul semantics) and Gemm (alpha * A' B' + beta * C).

The references only multiply, add and transpose, so they also run on object arrays of sympy
symbols.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphc.errors import ShapeError
from graphc.ops.base import (
    Attr,
    Example,
    NodeView,
    OpDef,
    TensorType,
    need_broadcast_to,
    need_rank,
    nonfinite_example,
    optional_inputs,
    rng_array,
    same_dtype,
)


def _need_inner(k_a: int, k_b: int, hint: str) -> None:
    if k_a != k_b:
        raise ShapeError("A and B disagree on the inner dimension", expected=k_b, got=k_a,
                         hint=hint)


# --- MatMul -----------------------------------------------------------------------------------


def _matmul_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                  consts: list[np.ndarray | None]) -> list[TensorType]:
    a, b = in_types
    dtype = same_dtype(in_types, "MatMul")
    if not a.shape or not b.shape:
        raise ShapeError("MatMul needs inputs of rank 1 or more", expected="rank >= 1",
                         got=f"shapes {a.shape} and {b.shape}")
    # A 1-D operand is promoted to a matrix and the added dimension is dropped again.
    a2 = (1, *a.shape) if len(a.shape) == 1 else a.shape
    b2 = (*b.shape, 1) if len(b.shape) == 1 else b.shape
    _need_inner(a2[-1], b2[-2], hint=f"A is {a.shape} and B is {b.shape}: the last dimension "
                "of A must equal the second-to-last dimension of B.")
    try:
        batch = tuple(int(d) for d in np.broadcast_shapes(a2[:-2], b2[:-2]))
    except ValueError:
        raise ShapeError("MatMul batch dimensions do not broadcast",
                         expected="batch dimensions equal or 1",
                         got=f"shapes {a.shape} and {b.shape}") from None
    rows = (a2[-2],) if len(a.shape) > 1 else ()
    cols = (b2[-1],) if len(b.shape) > 1 else ()
    return [TensorType(batch + rows + cols, dtype)]


def _matmul_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    a, b = inputs
    return [np.asarray(np.matmul(a, b))]


def _matmul_flops(view: NodeView) -> int:
    return 2 * view.out_types[0].size * view.in_types[0].shape[-1]



def _matmul_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """dA = dY B^T and dB = A^T dY, summed over broadcast batch axes; 1-D operands are
    promoted to (1, K) and (K, 1) as numpy's matmul does, and the gradients reshaped back."""
    a, b = ctx.inputs
    a_shape, b_shape = ctx.in_types[0].shape, ctx.in_types[1].shape
    a2s = (1, *a_shape) if len(a_shape) == 1 else a_shape
    b2s = (*b_shape, 1) if len(b_shape) == 1 else b_shape
    y2s = (*np.broadcast_shapes(a2s[:-2], b2s[:-2]), a2s[-2], b2s[-1])
    dy = ctx.reshape(grads[0], y2s)
    a2, b2 = ctx.reshape(a, a2s), ctx.reshape(b, b2s)
    da = ctx.unbroadcast(ctx.op("MatMul", dy, ctx.transpose_last(b2)), a2s)
    db = ctx.unbroadcast(ctx.op("MatMul", ctx.transpose_last(a2), dy), b2s)
    return [ctx.reshape(da, a_shape), ctx.reshape(db, b_shape)]


MATMUL = OpDef(
    name="MatMul",
    vjp=_matmul_vjp,
    doc="Matrix product with numpy matmul semantics: batch broadcast, 1-D operands promoted.",
    inputs=("A", "B"),
    outputs=("Y",),
    attrs={},
    infer=_matmul_infer,
    ref=_matmul_ref,
    flops=_matmul_flops,
    nonfinite=(nonfinite_example(Example((rng_array((3, 4), seed=91),
                                          rng_array((4, 5), seed=92))), ports=(0, 1)),),
    examples=(
        Example(inputs=(rng_array((3, 4), seed=1), rng_array((4, 5), seed=2)), name="2d"),
        Example(inputs=(rng_array((2, 3, 4), seed=3), rng_array((4, 5), seed=4)), consts=(1,),
                name="batched-3d-2d"),
        Example(inputs=(rng_array((4,), seed=5), rng_array((4, 5), seed=6)), name="vector-matrix"),
        Example(inputs=(rng_array((2, 3, 4), seed=7), rng_array((4,), seed=8)),
                name="matrix-vector"),
        Example(inputs=(rng_array((4,), seed=9), rng_array((4,), seed=10)), name="dot"),
    ),
)


# --- Gemm -------------------------------------------------------------------------------------


def _gemm_dims(a: tuple[int, ...], b: tuple[int, ...],
               attrs: dict[str, Any]) -> tuple[int, int, int, int]:
    """Return (M, K of A, K of B, N) after applying transA and transB."""
    m, k_a = (a[1], a[0]) if attrs["transA"] else (a[0], a[1])
    k_b, n = (b[1], b[0]) if attrs["transB"] else (b[0], b[1])
    return m, k_a, k_b, n


def _gemm_infer(in_types: list[TensorType | None], attrs: dict[str, Any],
                consts: list[np.ndarray | None]) -> list[TensorType]:
    a, b, c = optional_inputs(in_types, 3)
    dtype = same_dtype(in_types, "Gemm")
    need_rank(a, 2, "Gemm input A")
    need_rank(b, 2, "Gemm input B")
    m, k_a, k_b, n = _gemm_dims(a.shape, b.shape, attrs)
    _need_inner(k_a, k_b, hint=f"A is {a.shape} (transA={attrs['transA']}) and B is {b.shape} "
                f"(transB={attrs['transB']}); check the layer's in_features against the size "
                "of its input.")
    if c is not None:
        need_broadcast_to(c.shape, (m, n), "Gemm input C")
    return [TensorType((m, n), dtype)]


def _gemm_ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
    a, b, c = optional_inputs(inputs, 3)
    y = (a.T if attrs["transA"] else a) @ (b.T if attrs["transB"] else b)
    # Skipping unit factors keeps the reference exact and the symbolic expressions clean.
    if attrs["alpha"] != 1.0:
        y = attrs["alpha"] * y
    if c is not None:
        y = y + (c if attrs["beta"] == 1.0 else attrs["beta"] * c)
    return [np.asarray(y).astype(a.dtype, copy=False)]


def _gemm_flops(view: NodeView) -> int:
    m, k_a, _, n = _gemm_dims(view.in_types[0].shape, view.in_types[1].shape, view.full_attrs)
    return 2 * m * n * k_a



def _gemm_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """With A' = op(A), B' = op(B): dA' = alpha dY B'^T, dB' = alpha A'^T dY, dC = beta dY
    summed to C's shape. Each is one Gemm whose trans flags absorb every transpose:
    dA = dY B'^T (or B' dY^T when transA), dB = A'^T dY (or dY^T A' when transB)."""
    a, b = ctx.inputs[0], ctx.inputs[1]
    dy = grads[0]
    dtype = ctx.out_types[0].dtype
    alpha, beta = ctx.attrs["alpha"], ctx.attrs["beta"]
    trans_a, trans_b = int(ctx.attrs["transA"]), int(ctx.attrs["transB"])
    if trans_a:
        da = ctx.op("Gemm", b, dy, transA=trans_b, transB=1, alpha=alpha)
    else:
        da = ctx.op("Gemm", dy, b, transB=1 - trans_b, alpha=alpha)
    if trans_b:
        db = ctx.op("Gemm", dy, a, transA=1, transB=trans_a, alpha=alpha)
    else:
        db = ctx.op("Gemm", a, dy, transA=1 - trans_a, alpha=alpha)
    out = [da, db]
    if len(ctx.inputs) > 2 and ctx.inputs[2] is not None:
        dc = dy if beta == 1.0 else ctx.op("Mul", dy, ctx.const(beta, dtype))
        out.append(ctx.unbroadcast(dc, ctx.in_types[2].shape))
    return out

GEMM = OpDef(
    name="Gemm",
    vjp=_gemm_vjp,
    doc="General matrix product Y = alpha * A' B' + beta * C, with C broadcast to (M, N).",
    inputs=("A", "B", "C?"),
    outputs=("Y",),
    attrs={
        "alpha": Attr("float", 1.0),
        "beta": Attr("float", 1.0),
        "transA": Attr("int", 0),
        "transB": Attr("int", 0),
    },
    infer=_gemm_infer,
    ref=_gemm_ref,
    flops=_gemm_flops,
    nonfinite=(nonfinite_example(Example((rng_array((3, 4), seed=93), rng_array((4, 5), seed=94),
                                          rng_array((5,), seed=95))), ports=(0, 1, 2)),),
    examples=(
        Example(inputs=(rng_array((3, 4), seed=11), rng_array((5, 4), seed=12),
                        rng_array((5,), seed=13)), attrs={"transB": 1}, consts=(1, 2),
                name="linear-layer"),
        Example(inputs=(rng_array((4, 3), seed=14), rng_array((4, 5), seed=15),
                        rng_array((3, 5), seed=16)), attrs={"transA": 1}, name="trans-a"),
        Example(inputs=(rng_array((3, 4), seed=17), rng_array((4, 5), seed=18),
                        rng_array((3, 1), seed=19)), attrs={"alpha": 0.5, "beta": 2.0},
                name="alpha-beta"),
        Example(inputs=(rng_array((3, 4), seed=20), rng_array((4, 5), seed=21)), name="no-c"),
    ),
)


OPS: list[OpDef] = [MATMUL, GEMM]
