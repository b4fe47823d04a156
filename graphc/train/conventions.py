"""The course's conventions where they differ from ONNX's, as graph rewrites a run can ask for.

Dropout: ONNX's Dropout (and ``nn.dropout``'s default) is inverted: training divides the kept
units by the keep probability p, inference does nothing. The course's original convention
zeroes units in training and multiplies by p at test time; both give the expected value p x
at training time relative to a test time output of p x. ``dropout_at_test(g)`` turns every
inverted Dropout of ``g`` into the course's form: a Dropout followed by a constant Mul by p,
which the training step sees as "zero or 1/p, times p" = "zero or 1", and which inference keeps
as the multiplication by p (what ``nn.dropout(x, keep=p, scale_at="test")`` builds).

>>> from graphc.models import load
>>> g = dropout_at_test(load("mlp").build())
>>> [g.op(n) for n in g.op_nodes() if n.startswith("drop1")]
['Dropout', 'Mul']
>>> round(float(g.const_value(g.in_values("drop1.scale")[1])), 6)
0.8
"""

from __future__ import annotations

import numpy as np

from graphc.errors import GraphcError, unknown
from graphc.ir import Graph, Value
from graphc.shapes import dropout_ratio

DROPOUT_SCALINGS = ("train", "test")


def dropout_at_test(g: Graph) -> Graph:
    """Return ``g`` with each inverted Dropout scaled at test time instead (see the module)."""
    g = g.copy()
    for node in [n for n in g.op_nodes() if g.op(n) == "Dropout"]:
        if _scaled_at_test(g, node):
            continue
        ratio = dropout_ratio(g, node)
        if ratio is None:
            raise GraphcError("a Dropout ratio fed at run time cannot be moved to test time",
                              where=g.format_node(node), expected="a constant ratio",
                              got=g.op(g.in_values(node)[1].node))
        dtype = g.type_of(Value(node)).dtype
        name = g.fresh_name(f"{node}.scale")
        if Value(node) in g.outputs:
            # The output keeps its name: the Mul takes it, the Dropout a new one.
            name, dropout = node, g.fresh_name(f"{node}.dropout")
            g.rename({node: dropout})
            node = dropout
        keep = g.add_const(g.fresh_name(f"{node}.keep"), np.asarray(1.0 - ratio, dtype))
        scaled = g.add_node("Mul", [Value(node), keep], name=name)
        g.replace_all_uses(Value(node), scaled, keep=[scaled.node])
    return g


def with_dropout_scaling(g: Graph, scaling: str) -> Graph:
    """Return ``g`` with its Dropout layers scaled at ``scaling`` time (``train``: as built)."""
    if scaling not in DROPOUT_SCALINGS:
        raise unknown("dropout scaling", scaling, DROPOUT_SCALINGS, where="--dropout-scaling")
    return dropout_at_test(g) if scaling == "test" else g


def _scaled_at_test(g: Graph, node: str) -> bool:
    """Whether the Dropout's only user is a Mul by its keep probability (the at-test form)."""
    users = g.users(Value(node))
    if len(users) != 1 or g.op(users[0][0]) != "Mul" or Value(node) in g.outputs:
        return False
    ratio = dropout_ratio(g, node)
    other = g.in_values(users[0][0])[1 - users[0][1]]
    factor = g.const_value(other) if other is not None else None
    return (ratio is not None and factor is not None and np.size(factor) == 1
            and abs(float(factor) - (1.0 - ratio)) < 1e-6)
