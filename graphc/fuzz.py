"""Random well-typed graphs for property tests: hypothesis strategies over graphc's op set.

``cases()`` draws a ``Case``: a graph of 1 to 20 op nodes built through ``GraphBuilder`` (chains
and DAGs whose values are shared by several nodes, several outputs, dead nodes, constant
subgraphs), its feeds, and the opset to export it at. Each op of ``graphc.fuzz_ops.GENERATORS``
draws its operands among the values built so far and its attributes within the op's valid
range; ops left out are listed, with the reason, in ``graphc.fuzz_ops.LEFT_OUT``.

Each value carries what is known of it, so that a graph's outputs are well defined on every
runtime, not only well typed:

- ``exact``: every runtime computes the same bits (inputs, constants, and ops such as Add, Relu,
  Transpose or MaxPool applied to exact values; not Exp, MatMul or a sum of three). Ops that are
  discontinuous (Sign, Round, comparisons, Cast to an integer, quantization) or that leave their
  domain at a boundary (Log, Sqrt, a denominator, Pow) read exact values only: one rounding
  step of difference would otherwise flip their result.
- ``bound``: the largest magnitude the value can have (``inf`` when it may hold NaN or an
  infinity). Ops whose onnxruntime kernels differ from ONNX's semantics on NaN (MaxPool,
  GlobalMaxPool, ReduceMax; see docs/ops.md) and casts to integers read finite values only.
  No value reaches +-3.4e38, on which float32 intermediates overflow where graphc's float64
  ones do not: Clip clips a value that may be infinite on both sides (a missing bound makes an
  infinity +-3.4e38; Clip passes NaN), and every pooling window holds an input cell.

An output that is not exact is compared at a scale of at least ``CANCELLATION_ULPS`` float32
ulps of the magnitude B it was computed from, over the rtol (``comparison_scales``): such a
value carries rounding noise of a few ulps of B even where it cancels to 0
(``ReduceMean(x - Transpose(x))`` is 0 on the interpreter and +-3e-8 on onnxruntime). B is the
smaller of the output's bound and the largest finite magnitude among the values it depends on
in this run (the bound alone can be far above them: Exp of a value bounded by 69).

Normalizations draw their epsilon from 1e-3 upwards: over a set of equal values, the rounding
noise of the mean divided by sqrt(epsilon) is the whole output, on every runtime differently.

Needs hypothesis (``pip install -e ".[test]"``).

>>> from hypothesis import given, settings
>>> @settings(max_examples=3, database=None)
... @given(cases(max_nodes=4))
... def check(case):
...     assert 1 <= len(case.graph.op_nodes()) <= 4 + len(case.graph.outputs)
>>> check()
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np
from hypothesis import strategies as st

from graphc.dsl import GraphBuilder
from graphc.fuzz_ops import FINITE, GENERATORS, Ctx, Slot
from graphc.interpret import run_all
from graphc.ir import Graph
from graphc.onnxio.runtime import default_rtol
from graphc.ops.base import with_specials

MAX_NODES = 20
OPSETS = (17, 18, 21)
CANCELLATION_ULPS = 64


@dataclass
class Case:
    """A drawn graph, its feeds, the opset to export it at, the ops drawn, the bound of each
    inexact float output whose bound is finite, and the scales ``comparison_scales`` computes
    from them (once)."""

    graph: Graph
    feeds: dict[str, np.ndarray]
    opset: int
    ops: list[str] = field(default_factory=list)
    bounds: dict[str, float] = field(default_factory=dict)
    scales: dict[str, float] | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        feeds = ", ".join(f"{k}: {v.shape} {v.dtype}" for k, v in self.feeds.items())
        return f"Case(opset {self.opset}; feeds {feeds})\n{self.graph}"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # How hypothesis shows a falsifying example: the graph as text.
        printer.text(repr(self))


def input_values(draw: Callable[..., Any], shape: tuple[int, ...], seed: int
                 ) -> tuple[np.ndarray, float]:
    """Return feeds for one float32 input and their bound: uniform, on a grid of halves (ties,
    zeros, equal neighbours), or with NaN, +inf and -inf among them."""
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["uniform", "grid", "specials"]))
    if kind == "grid":
        return (rng.integers(-4, 5, size=shape) / 2).astype(np.float32), 2.0
    values = rng.uniform(-3, 3, size=shape).astype(np.float32)
    if kind == "specials" and values.size:
        return with_specials(values, seed=seed % 1000), math.inf
    return values, 3.0


def spatial_shape(draw: Callable[..., Any]) -> tuple[int, ...]:
    rank = draw(st.integers(3, 5))
    return (draw(st.integers(1, 2)), draw(st.integers(1, 4)),
            *(draw(st.integers(1, 6 if rank < 5 else 4)) for _ in range(rank - 2)))


def plain_shape(draw: Callable[..., Any]) -> tuple[int, ...]:
    return tuple(draw(st.lists(st.integers(1, 5), min_size=0, max_size=4)))


@st.composite
def cases(draw: Callable[..., Any], max_nodes: int = MAX_NODES,
          ops: Sequence[str] | None = None) -> Case:
    """Draw a ``Case``: a random well-typed graph with 1 to ``max_nodes`` op nodes (from
    ``ops``, default every op of ``graphc.fuzz_ops.GENERATORS``), its feeds and its opset."""
    names = sorted(GENERATORS) if ops is None else list(ops)
    opset = draw(st.sampled_from(OPSETS))
    seed = draw(st.integers(0, 2**32 - 1))
    b = GraphBuilder("fuzz", seed=seed % 1000)
    ctx = Ctx(draw, b, opset, seed)
    feeds = {}
    for k in range(draw(st.integers(1, 3))):
        shape = spatial_shape(draw) if draw(st.booleans()) else plain_shape(draw)
        values, bound = input_values(draw, shape, seed + k)
        name = f"x{k}"
        feeds[name] = values
        ctx.add(b.input(name, shape), True, bound)
    count = draw(st.integers(1, max_nodes))
    used: list[str] = []
    tries = 0
    while len(used) < count and tries < 20 * count:
        tries += 1
        name = draw(st.sampled_from(names))
        before = len(ctx.slots)
        if GENERATORS[name](ctx) and len(ctx.slots) > before:
            used.append(name)
    made = ctx.slots[len(feeds):]
    if not made:
        # No op applied to these inputs (none of ``ops`` fits them): one Identity does.
        ctx.add(b.op("Identity", ctx.slots[0].tensor), True, ctx.slots[0].bound)
        made = ctx.slots[len(feeds):]
        used.append("Identity")
    outputs = [made[-1]]
    for slot in made[:-1]:
        if draw(st.integers(0, 3)) == 0:
            outputs.append(slot)
    bounds = {}
    for k, slot in enumerate(outputs):
        b.output(slot.tensor, f"y{k}")
        if not slot.exact and slot.finite and slot.dtype.kind == "f":
            bounds[f"y{k}"] = slot.bound
    return Case(b.build(), feeds, opset, used, bounds)


def comparison_scales(case: Case) -> dict[str, float]:
    """Return the least scale at which each of ``case.bounds``' outputs is compared: the
    ``cancellation_scale`` of the smaller of its bound and the largest finite magnitude among
    the values it depends on (the interpreter's, on ``case.feeds``)."""
    if case.scales is not None:
        return case.scales
    case.scales = {}
    if not case.bounds:
        return case.scales
    g = case.graph
    largest = {v: float(np.abs(a[np.isfinite(a)]).max(initial=0.0))
               for v, a in run_all(g, case.feeds).items() if a.dtype.kind == "f"}
    for name, value in zip(g.output_names(), g.outputs, strict=True):
        if name not in case.bounds:
            continue
        nodes = nx.ancestors(g.nx, value.node) | {value.node}
        seen = max((m for v, m in largest.items() if v.node in nodes), default=0.0)
        magnitude = min(case.bounds[name], seen)
        case.scales[name] = cancellation_scale(g.type_of(value).dtype, magnitude)
    return case.scales


def cancellation_scale(dtype: np.dtype, bound: float) -> float:
    """The scale below which a value of ``dtype`` computed from operands bounded by ``bound``
    is not compared: ``CANCELLATION_ULPS`` ulps of ``bound``, over the dtype's rtol.

    >>> round(cancellation_scale(np.dtype(np.float32), 6.0), 4)
    0.4578
    """
    rtol = default_rtol(dtype)
    return CANCELLATION_ULPS * float(np.finfo(dtype).eps) * bound / rtol if rtol else 0.0


__all__ = ["FINITE", "Case", "Ctx", "Slot", "cancellation_scale", "cases", "comparison_scales"]
