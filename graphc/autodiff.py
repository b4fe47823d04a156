"""Reverse-mode automatic differentiation over the IR, from each op's vjp rule.

``gradient_graph(g)`` returns a graph that computes the loss and its gradient with respect to
the chosen inputs and parameters, built from IR ops only, so it runs on graphc's interpreter and
on onnxruntime. A value read by several nodes accumulates one gradient term per use.

An op's ``vjp(ctx, grads)`` receives the gradients of its outputs (``None`` where none flows)
and returns one gradient per input (``None`` where the input gets none, e.g. shapes or axes).

>>> import numpy as np
>>> from graphc.dsl import GraphBuilder
>>> from graphc.interpret import run
>>> b = GraphBuilder("course")
>>> x, y, z = b.inputs("x", "y", "z")
>>> f = b.output((x + y) * z, "f")
>>> grads = run(gradient_graph(b.build(), wrt=["x", "y", "z"]), {"x": -2, "y": 5, "z": -4})
>>> [float(grads[k]) for k in ("f", "df/dx", "df/dy", "df/dz")]
[-12.0, -4.0, -4.0, 3.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import networkx as nx
import numpy as np

from graphc import ops
from graphc.errors import GraphcError, unknown
from graphc.ir import CONST, INPUT, Graph, Value
from graphc.ops.base import TensorType


class GradCtx:
    """What a vjp rule sees of one forward node, and how it adds gradient nodes to the graph."""

    def __init__(self, g: Graph, node: str) -> None:
        self.g = g
        self.node = node
        self.inputs: list[Value | None] = g.in_values(node)
        self.outputs = [Value(node, k) for k in range(len(g.types(node)))]
        self.attrs: dict[str, Any] = ops.get(g.op(node)).full_attrs(g.attrs(node))
        self.in_types: list[TensorType | None] = [
            None if v is None else g.type_of(v) for v in self.inputs]
        self.out_types = list(g.types(node))

    def op(self, op: str, *inputs: Value | None, **attrs: Any) -> Value:
        """Add one op application named after the forward node (``fc1.grad.matmul``)."""
        return self.g.add_node(op, list(inputs), attrs, name=f"{self.node}.grad.{op.lower()}")

    def const(self, value: Any, dtype: Any) -> Value:
        """Add a constant (not trained) of ``dtype``."""
        return self.g.add_const(f"{self.node}.grad.c", value, dtype=dtype)

    def type(self, value: Value) -> TensorType:
        return self.g.type_of(value)

    def reshape(self, value: Value, shape: Sequence[int]) -> Value:
        if self.type(value).shape == tuple(shape):
            return value
        return self.op("Reshape", value, self.const(np.array(shape, np.int64), np.int64))

    def unbroadcast(self, grad: Value, shape: Sequence[int]) -> Value:
        """Sum ``grad`` over the axes that numpy broadcasting added or stretched to reach its
        shape from ``shape`` (the gradient of a broadcast is a sum)."""
        shape = tuple(shape)
        have = self.type(grad).shape
        if have == shape:
            return grad
        lead = len(have) - len(shape)
        axes = list(range(lead)) + [lead + i for i, d in enumerate(shape)
                                    if d == 1 and have[lead + i] != 1]
        if axes:
            grad = self.op("ReduceSum", grad, self.const(np.array(axes, np.int64), np.int64),
                           keepdims=1)
        return self.reshape(grad, shape)

    def transpose_last(self, value: Value) -> Value:
        """Swap the last two axes."""
        rank = len(self.type(value).shape)
        perm = list(range(rank - 2)) + [rank - 1, rank - 2]
        return self.op("Transpose", value, perm=perm)


def _accumulate(g: Graph, node: str, terms: list[Value]) -> Value:
    total = terms[0]
    for term in terms[1:]:
        total = g.add_node("Add", [total, term], name=f"{node}.grad.sum")
    return total


def backward(g: Graph, loss: Value, wrt: Sequence[Value]) -> dict[Value, Value | None]:
    """Add to ``g`` (in place) the nodes computing d(sum of loss)/d(v) for every v in ``wrt``.

    Returns each wrt value's gradient, or None where the loss does not depend on it.
    """
    wanted = set(wrt)
    relevant = nx.ancestors(g.nx, loss.node) | {loss.node}
    reaches = set()
    for v in wanted:
        reaches |= nx.descendants(g.nx, v.node) | {v.node}
    order = [n for n in g.topo() if n in relevant and n in reaches]
    dtype = g.type_of(loss).dtype
    seed = g.add_const(f"{loss.node}.grad.seed", np.ones(g.type_of(loss).shape, dtype))
    terms: dict[Value, list[Value]] = {loss: [seed]}
    for node in reversed(order):
        if g.op(node) in (INPUT, CONST):
            continue
        out_grads = [terms.get(Value(node, k)) for k in range(len(g.types(node)))]
        if not any(out_grads):
            continue
        opdef = ops.get(g.op(node))
        if opdef.vjp is None:
            raise GraphcError(f"{opdef.name} has no gradient rule", where=g.format_node(node),
                              hint="Differentiate with respect to values before this node, or "
                                   "use an op that has one (see docs/ops.md).")
        ctx = GradCtx(g, node)
        summed = [None if t is None else _accumulate(g, node, t) for t in out_grads]
        try:
            in_grads = opdef.vjp(ctx, summed)
        except GraphcError as err:
            raise err.located(g.format_node(node)) from None
        for value, grad in zip(ctx.inputs, in_grads, strict=False):
            if value is None or grad is None or value.node not in reaches:
                continue
            if g.type_of(grad) != g.type_of(value):
                raise GraphcError(f"the vjp of {opdef.name} gave a gradient of the wrong type",
                                  where=g.format_node(node), expected=str(g.type_of(value)),
                                  got=str(g.type_of(grad)))
            terms.setdefault(value, []).append(grad)
    return {v: _accumulate(g, v.node, terms[v]) if v in terms else None for v in wrt}


def gradient_graph(g: Graph, output: str | None = None, wrt: Sequence[str] | None = None
                   ) -> Graph:
    """Return a new graph whose outputs are the loss (a graph output, summed if it is not a
    scalar) and ``d<loss>/d<name>`` for each name in ``wrt`` (default: every trainable
    parameter). A name the loss does not depend on gets a gradient of zeros."""
    g = g.copy(f"{g.name}_grad")
    names = g.output_names()
    if output is None:
        loss = g.outputs[0]
        output = names[0]
    elif output in names:
        loss = g.outputs[names.index(output)]
    else:
        raise unknown("output", output, names, where=f"graph {g.name}")
    known = list(g.inputs) + g.params()
    chosen = g.params() if wrt is None else list(wrt)
    for name in chosen:
        if name not in known:
            raise unknown("input or parameter", name, known, where=f"graph {g.name}")
    grads = backward(g, loss, [Value(n) for n in chosen])
    outputs = [loss]
    for name in chosen:
        grad = grads[Value(name)]
        if grad is None:
            ttype = g.type_of(Value(name))
            grad = g.add_const(f"d{output}/d{name}.zeros", np.zeros(ttype.shape, ttype.dtype))
        outputs.append(g.add_node("Identity", [grad], name=f"d{output}/d{name}"))
    g.outputs = outputs
    g.remove_dead()
    return g
