"""Elementwise ops over any number of inputs: Max, Min, Sum and Mean (ONNX opset 13+), with
numpy broadcasting across all of them.

Max and Min give NaN where any input is NaN (the IEEE maximum, as numpy and onnxruntime compute
it). Their gradient goes, at each element, to the first input that holds the result (a tie
sends it to the earliest input, as MaxPool's gradient goes to the first maximum); Sum's goes to
every input and Mean's to every input divided by the count. Formulas (graphc.ops.elementwise)
have one or two inputs, so these rules are written out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from graphc.errors import ShapeError
from graphc.ops.base import (
    DTYPE_SHORT,
    Example,
    OpDef,
    TensorType,
    broadcast_shapes,
    nonfinite_example,
    rng_array,
    same_dtype,
)

FLOATS = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16))
# Max and Min take every integer type ONNX has; onnxruntime's CPU kernels lack int16 and uint16
# (graphc's interpreter computes them).
INTEGERS = tuple(np.dtype(t) for t in (np.int64, np.int32, np.int16, np.int8, np.uint64,
                                       np.uint32, np.uint16, np.uint8))


def _variadic(name: str, doc: str, combine: Callable[[list[np.ndarray]], np.ndarray],
              vjp: Callable[..., list[Any]], allowed: tuple[np.dtype, ...],
              examples: tuple[Example, ...], nonfinite: tuple[Example, ...]) -> OpDef:
    def infer(in_types: list[TensorType | None], attrs: dict[str, Any],
              consts: list[np.ndarray | None]) -> list[TensorType]:
        dtype = same_dtype(in_types, name)
        if dtype not in allowed:
            raise ShapeError(f"{name} does not take this dtype",
                             expected=", ".join(DTYPE_SHORT[d] for d in allowed),
                             got=DTYPE_SHORT.get(dtype, str(dtype)))
        return [TensorType(broadcast_shapes(*(t.shape for t in in_types)), dtype)]

    def ref(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
        shape = np.broadcast_shapes(*(x.shape for x in inputs))
        out = np.asarray(combine(list(inputs)), dtype=inputs[0].dtype)
        return [np.broadcast_to(out, shape).copy()]

    return OpDef(name=name, doc=doc, inputs=("data_0*",), outputs=("result",), attrs={},
                 infer=infer, ref=ref, examples=examples, nonfinite=nonfinite,
                 flops=lambda view: max(1, len(view.inputs) - 1) * view.out_types[0].size,
                 vjp=vjp)


def _fold(fn: Callable[[Any, Any], Any]) -> Callable[[list[np.ndarray]], np.ndarray]:
    def combine(inputs: list[np.ndarray]) -> np.ndarray:
        out = inputs[0]
        for x in inputs[1:]:
            out = fn(out, x)
        return out

    return combine


def _mean(inputs: list[np.ndarray]) -> np.ndarray:
    total = _fold(np.add)(inputs)
    return total / np.asarray(len(inputs), dtype=inputs[0].dtype)


def _extreme_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """Each element's gradient goes to the first input equal to the result there."""
    dy, y = grads[0], ctx.outputs[0]
    zero = ctx.const(0.0, ctx.out_types[0].dtype)
    out, taken = [], None
    for x, t in zip(ctx.inputs, ctx.in_types, strict=True):
        holds = ctx.op("Equal", x, y)
        mask = holds if taken is None else ctx.op("And", holds, ctx.op("Not", taken))
        taken = holds if taken is None else ctx.op("Or", taken, holds)
        out.append(ctx.unbroadcast(ctx.op("Where", mask, dy, zero), t.shape))
    return out


def _sum_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """Every input gets dY, summed back to its shape."""
    return [ctx.unbroadcast(grads[0], t.shape) for t in ctx.in_types]


def _mean_vjp(ctx: Any, grads: list[Any]) -> list[Any]:
    """Every input gets dY / n, summed back to its shape."""
    scaled = ctx.op("Mul", grads[0], ctx.const(1.0 / len(ctx.inputs), ctx.out_types[0].dtype))
    return [ctx.unbroadcast(scaled, t.shape) for t in ctx.in_types]


def _examples(integers: bool, float64: bool = True) -> tuple[Example, ...]:
    examples = (
        Example((rng_array((2, 3, 4), seed=1),), name="one"),
        Example((rng_array((2, 3), seed=2), rng_array((2, 3), seed=3)), name="two"),
        Example((rng_array((2, 3, 4), seed=4), rng_array((3, 1), seed=5),
                 rng_array((4,), seed=6)), name="three-broadcast"),
        Example((rng_array((3, 4), seed=7, dtype=np.float64), rng_array((1, 4), seed=8,
                                                                          dtype=np.float64)),
                name="float64"),
        Example((rng_array((3, 4), seed=11, dtype=np.float16), rng_array((3, 4), seed=12,
                                                                          dtype=np.float16)),
                name="float16"),
        Example((rng_array((2, 5), seed=9), np.array(0.25, np.float32)), consts=(1,),
                name="const-scalar"),
    )
    if not float64:
        examples = tuple(e for e in examples if e.name != "float64")
    if integers:
        ints = np.random.default_rng(10)
        examples += (
            Example((ints.integers(-9, 9, (2, 4)), ints.integers(-9, 9, (4,))), name="int64"),
            Example((ints.integers(0, 1 << 40, (3, 2), dtype=np.uint64),
                     ints.integers(0, 1 << 40, (3, 1), dtype=np.uint64)), name="uint64"),
            Example((ints.integers(0, 1 << 31, (2, 3), dtype=np.uint32),
                     ints.integers(0, 1 << 31, (2, 3), dtype=np.uint32)), name="uint32"),
        )
    return examples


def _nonfinite() -> tuple[Example, ...]:
    two, broadcast = _examples(False)[1:3]
    return (nonfinite_example(two, ports=(0, 1), name="nonfinite-two"),
            nonfinite_example(broadcast, ports=(0, 2), name="nonfinite-broadcast"))


MAX = _variadic("Max", "Elementwise maximum of the inputs with numpy broadcasting (NaN wins).",
                _fold(np.maximum), _extreme_vjp, FLOATS + INTEGERS, _examples(True),
                _nonfinite())
MIN = _variadic("Min", "Elementwise minimum of the inputs with numpy broadcasting (NaN wins).",
                _fold(np.minimum), _extreme_vjp, FLOATS + INTEGERS, _examples(True),
                _nonfinite())
SUM = _variadic("Sum", "Elementwise sum of the inputs with numpy broadcasting.", _fold(np.add),
                _sum_vjp, FLOATS, _examples(False), _nonfinite())
MEAN = _variadic("Mean", "Elementwise mean of the inputs with numpy broadcasting.", _mean,
                 _mean_vjp, FLOATS, _examples(False, float64=False), _nonfinite())

OPS: list[OpDef] = [MAX, MIN, SUM, MEAN]
