"""Transfer learning: find a model's head, give it another number of classes, split parameters.

The *head* is the last layer: the ``Gemm``, or ``MatMul`` (optionally followed by an ``Add`` of
a constant bias), that produces the graph's first output, possibly through ``Identity`` nodes.
``replace_head(g, classes)`` returns a copy whose head has ``classes`` outputs, with a freshly
initialized weight (He normal, ``std = sqrt(2 / fan_in)``, drawn from the seed and the
parameter's name exactly as ``GraphBuilder.param`` draws it) and a zero bias, under the SAME
parameter names, so checkpoints keep their names. ``head_params`` and ``body_params`` split the
trainable parameters for freezing (``graphc train --freeze``).

It refuses a first output that no such layer produces (e.g. a ``Sigmoid`` after the last
linear layer), a weight or bias that is not a trainable constant, and a weight or bias that
other nodes share.

>>> from graphc.models import load
>>> g = replace_head(load("cnn").build(), 5)
>>> head_params(g), g.type_of(g.outputs[0]).shape, head_classes(g)
(['fc.weight', 'fc.bias'], (1, 5), 5)
>>> body_params(g)[:2]
['block1.conv.weight', 'block1.bn.weight']
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import networkx as nx
import numpy as np

from graphc.errors import GraphcError, UsageError
from graphc.ir import CONST, Graph, Value
from graphc.ops.base import type_of


@dataclass(frozen=True)
class Head:
    """Where a graph's head is: the layer ``node`` (its output feeds the first graph output),
    the weight and bias constants, and the weight axis that counts the classes."""

    node: str
    weight: str
    bias: str | None
    class_axis: int

    @property
    def params(self) -> list[str]:
        return [self.weight] + ([self.bias] if self.bias else [])


def _refuse(g: Graph, node: str, what: str, got: str) -> GraphcError:
    return GraphcError(f"cannot find the model's head: {what}", where=g.format_node(node),
                       expected="a Gemm, or a MatMul (+ Add of a bias), producing the first "
                                "output (possibly through Identity)", got=got,
                       hint="Transfer learning needs a linear last layer.")


def _param(g: Graph, value: Value | None, layer: str, role: str) -> str:
    """Return the node of the trainable constant ``value`` used only by ``layer``."""
    if value is None or g.op(value.node) != CONST or not g.nx.nodes[value.node].get("trainable"):
        got = "nothing" if value is None else f"%{value.node} = {g.op(value.node)}"
        raise _refuse(g, layer, f"its {role} is not a trainable constant", got)
    users = {dst for dst, _ in g.users(value)}
    if users != {layer} or value in g.outputs:
        others = sorted(users - {layer})
        raise _refuse(g, layer, f"its {role} %{value.node} is shared", f"also used by "
                      f"{', '.join('%' + u for u in others) or 'a graph output'}")
    return value.node


def find_head(g: Graph) -> Head:
    """Return where ``g``'s head is (see the module docstring), or raise GraphcError."""
    if not g.outputs:
        raise GraphcError("cannot find the model's head: the graph has no outputs",
                          where=f"graph {g.name}")
    value = g.outputs[0]
    while g.op(value.node) == "Identity":
        value = g.in_values(value.node)[0]
    node = value.node
    op = g.op(node)
    if op == "Gemm":
        ins = g.in_values(node)
        weight = _param(g, ins[1], node, "weight")
        bias = _param(g, ins[2], node, "bias") if len(ins) > 2 and ins[2] is not None else None
        axis = 0 if g.attrs(node).get("transB", 0) else 1
        return Head(node, weight, bias, axis)
    if op == "Add":
        ins = g.in_values(node)
        for k in (0, 1):
            if g.op(ins[k].node) == "MatMul" and g.op(ins[1 - k].node) == CONST:
                bias_value = ins[1 - k]
                matmul = ins[k].node
                break
        else:
            raise _refuse(g, node, "it is an Add but not of a MatMul and a constant bias",
                          f"Add({', '.join(g.op(v.node) for v in ins)})")
        if len(g.users(Value(matmul))) != 1:
            raise _refuse(g, matmul, "the MatMul's output is used outside the head",
                          f"{len(g.users(Value(matmul)))} users")
        weight = _param(g, g.in_values(matmul)[1], matmul, "weight")
        bias = _param(g, bias_value, node, "bias")
        return Head(node, weight, bias, -1)
    if op == "MatMul":
        return Head(node, _param(g, g.in_values(node)[1], node, "weight"), None, -1)
    raise _refuse(g, node, f"the first output comes from a {op}", op)


def head_params(g: Graph) -> list[str]:
    """Return the names of the head's parameters: its weight, then its bias if any."""
    return find_head(g).params


def body_params(g: Graph) -> list[str]:
    """Return the trainable parameters that are not the head's, in topological order."""
    head = set(head_params(g))
    return [p for p in g.params() if p not in head]


def head_classes(g: Graph, state: Mapping[str, np.ndarray] | None = None) -> int:
    """Return the number of classes (outputs) of ``g``'s head; with ``state`` (e.g. a
    checkpoint's arrays), the number its head weight there has."""
    head = find_head(g)
    shape = g.type_of(Value(head.weight)).shape
    if state is not None and head.weight in state:
        shape = np.shape(state[head.weight])
        if len(shape) != len(g.type_of(Value(head.weight)).shape):
            raise GraphcError(f"the weights for {head.weight!r} have the wrong rank",
                              where=g.format_node(head.weight),
                              expected=g.type_of(Value(head.weight)).shape, got=shape)
    return int(shape[head.class_axis])


def _fresh_weight(name: str, shape: tuple[int, ...], class_axis: int, dtype: np.dtype,
                  seed: int) -> np.ndarray:
    """He-normal weight drawn like ``GraphBuilder.param(name, ..., init="he")`` draws a
    ``(classes, features)`` weight, transposed to the layer's layout."""
    axis = class_axis % len(shape)
    classes = shape[axis]
    fan_in = int(np.prod(shape)) // classes
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    rows = rng.standard_normal(size=(classes, fan_in), dtype=np.float32)
    rows *= np.float32(np.sqrt(2.0 / fan_in))
    if axis == 0:
        value = rows.reshape(shape)
    else:
        # (classes, fan_in) -> the layer's (..., fan_in, classes) layout
        value = np.moveaxis(rows.reshape((classes, *[d for k, d in enumerate(shape)
                                                     if k != axis])), 0, axis)
    return np.ascontiguousarray(value, dtype=dtype)


def _set_const(g: Graph, name: str, value: np.ndarray) -> None:
    value.flags.writeable = False
    g.nx.nodes[name]["value"] = value
    g.nx.nodes[name]["types"] = [type_of(value)]


def replace_head(g: Graph, classes: int, seed: int = 0) -> Graph:
    """Return a copy of ``g`` whose head has ``classes`` outputs: a fresh He-normal weight
    and a zero bias under the same parameter names (``g`` itself is not changed).

    >>> from graphc.models import load
    >>> g = load("mlp").build()
    >>> new = replace_head(g, 3, seed=1)
    >>> new.const_value(Value("fc3.weight")).shape, g.const_value(Value("fc3.weight")).shape
    ((3, 64), (10, 64))
    """
    if isinstance(classes, bool) or not isinstance(classes, (int, np.integer)) or classes < 1:
        raise UsageError("the number of classes must be a positive integer",
                         where="replace_head", expected="an int >= 1", got=repr(classes))
    head = find_head(g)
    new = g.copy()
    weight = new.const_value(Value(head.weight))
    assert weight is not None
    shape = list(weight.shape)
    axis = head.class_axis % len(shape)
    old_classes = shape[axis]
    shape[axis] = int(classes)
    _set_const(new, head.weight, _fresh_weight(head.weight, tuple(shape), axis, weight.dtype,
                                               seed))
    if head.bias is not None:
        bias = new.const_value(Value(head.bias))
        assert bias is not None
        bias_shape = list(bias.shape)
        # A bias broadcast over the classes (shape (1,) or scalar) keeps its shape.
        if bias_shape and bias_shape[-1] == old_classes:
            bias_shape[-1] = int(classes)
        _set_const(new, head.bias, np.zeros(bias_shape, bias.dtype))
    # Re-infer the types downstream of the new constants, in topological order.
    changed = nx.descendants(new.nx, head.weight) | nx.descendants(new.nx, head.bias or
                                                                   head.weight)
    for node in new.topo():
        if node in changed:
            try:
                new.nx.nodes[node]["types"] = new.infer(node)
            except GraphcError as err:
                raise GraphcError(f"cannot give the head {classes} classes: a layer after it "
                                  f"does not fit ({err.what})", where=new.format_node(node),
                                  expected=err.expected, got=err.got) from None
    new.verify()
    return new
