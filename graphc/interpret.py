"""The numpy interpreter: graphc's reference semantics and the oracle of every test.

>>> import numpy as np
>>> from graphc.models import backprop_example
>>> g = backprop_example.build()
>>> run(g, {"x": -2.0, "y": 5.0, "z": -4.0})["f"]
array(-12., dtype=float32)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from graphc import ops
from graphc.errors import GraphcError, OpError
from graphc.ir import CONST, INPUT, Graph, Value


def check_feeds(g: Graph, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Return ``feeds`` as arrays of the inputs' dtypes; raise on a missing or misshaped one."""
    unknown = sorted(set(feeds) - set(g.inputs))
    if unknown:
        raise GraphcError(f"graph {g.name!r} has no input {unknown[0]!r}",
                          expected="inputs " + ", ".join(g.inputs), got=", ".join(unknown))
    arrays = {}
    for name in g.inputs:
        want = g.type_of(Value(name))
        if name not in feeds:
            raise GraphcError(f"input {name!r} is not given", where=g.format_node(name),
                              expected=f"an array of shape {want.shape}", got="nothing")
        array = np.asarray(feeds[name])
        if array.dtype != want.dtype:
            if not np.can_cast(array.dtype, want.dtype, casting="same_kind"):
                raise GraphcError(f"input {name!r} has the wrong dtype",
                                  where=g.format_node(name), expected=str(want.dtype),
                                  got=str(array.dtype))
            array = array.astype(want.dtype)
        if array.shape != want.shape:
            raise GraphcError(f"input {name!r} has the wrong shape", where=g.format_node(name),
                              expected=want.shape, got=array.shape)
        arrays[name] = array
    return arrays


def run_node(g: Graph, node: str, inputs: list[np.ndarray | None]) -> list[np.ndarray]:
    """Run one node's numpy reference; errors name the node."""
    opdef = ops.get(g.op(node))
    try:
        # Overflow to inf and log(0) = -inf are the semantics onnxruntime has too; no warnings.
        with np.errstate(all="ignore"):
            return opdef.ref(inputs, opdef.full_attrs(g.attrs(node)))
    except GraphcError as err:
        raise err.located(g.format_node(node)) from None
    except (ValueError, TypeError, IndexError, ZeroDivisionError, FloatingPointError) as err:
        raise OpError(f"the numpy reference failed: {err}", where=g.format_node(node)) from err


def run(g: Graph, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Run ``g`` on ``feeds`` (input name -> array); return output name -> array.

    Intermediate values are freed as soon as their last user has run.
    """
    env = _execute(g, feeds, keep_all=False)
    return {name: env[v] for name, v in zip(g.output_names(), g.outputs, strict=True)}


def run_all(g: Graph, feeds: Mapping[str, Any]) -> dict[Value, np.ndarray]:
    """Run ``g`` on ``feeds`` and return every value it has: inputs, constants and each output
    of each op node, by ``Value``."""
    return _execute(g, feeds, keep_all=True)


def _execute(g: Graph, feeds: Mapping[str, Any], keep_all: bool) -> dict[Value, np.ndarray]:
    env: dict[Value, np.ndarray] = {Value(k): v for k, v in check_feeds(g, feeds).items()}
    order = g.topo()
    remaining = {n: g.nx.out_degree(n) for n in order}
    keep = set(g.outputs)
    for node in order:
        op = g.op(node)
        if op == INPUT:
            continue
        if op == CONST:
            env[Value(node)] = g.nx.nodes[node]["value"]
            continue
        values = g.in_values(node)
        outs = run_node(g, node, [None if v is None else env[v] for v in values])
        for k, (array, want) in enumerate(zip(outs, g.types(node), strict=False)):
            if array.shape != want.shape or array.dtype != want.dtype:
                raise OpError(f"output {k} of the numpy reference disagrees with the shape rule",
                              where=g.format_node(node), expected=str(want),
                              got=f"{array.shape} {array.dtype}")
            env[Value(node, k)] = array
        if keep_all:
            continue
        for v in values:
            if v is None:
                continue
            remaining[v.node] -= 1
            if remaining[v.node] == 0:
                for k in range(len(g.types(v.node))):
                    if Value(v.node, k) not in keep:
                        env.pop(Value(v.node, k), None)
    return env
