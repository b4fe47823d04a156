"""Symbolic backprop with sympy: the chain rule node by node, as the course teaches it.

Every scalar value of a (small) graph becomes one sympy symbol with a *local* expression over
the symbols it reads: a scalar graph maps one to one, and Gemm, MatMul and Conv on small tensors
are expanded neuron by neuron (their numpy references run on object arrays of symbols).
Backprop then walks the scalar nodes in reverse topological order: for each node v and each
input p of v it takes the local partial derivative dv/dp, multiplies it by the upstream gradient
df/dv and adds the product to df/dp. Every step is kept. Nothing ever differentiates or
simplifies a whole composed expression, so the cost stays linear in the graph's size.

>>> from graphc.models import load
>>> r = backprop(load("backprop_example").build(), at={"x": -2, "y": 5, "z": -4})
>>> r.value("f"), r.grad("x"), r.grad("y"), r.grad("z")
(-12.0, -4.0, -4.0, 3.0)
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy as sp

from graphc import ops
from graphc.errors import GraphcError, unknown
from graphc.ir import CONST, INPUT, Graph, Value
from graphc.ops.elementwise import derivative_in_terms_of_output
from graphc.symbolic.codegen import compile_program, gradient_onnx

# Scalar edges (an input of a scalar node) the default allows: measured in bench/symbolic.py so
# that a run stays under about 30 s on one core.
DEFAULT_LIMIT = 120_000

# Ops whose outputs only move, copy or select input elements: no new scalar nodes.
_MOVERS = {"Identity", "Flatten", "Reshape", "Transpose", "Concat", "Dropout", "Pad"}
# Ops expanded by graphc.symbolic itself (besides the elementwise formulas).
_EXPLICIT = {"BatchNormalization", "LayerNormalization", "InstanceNormalization",
             "GroupNormalization", "Clip", "Softmax", "LogSoftmax", "MaxPool", "GlobalMaxPool"}
# Ops whose numpy reference runs on object arrays of symbols (sums of products).
_LINEAR = {"Gemm", "MatMul", "Conv", "ConvTranspose", "AveragePool", "GlobalAveragePool"}


@dataclass
class ScalarNode:
    """One scalar value: its symbol, where it comes from, and its local expression."""

    symbol: sp.Symbol
    op: str
    ir_node: str
    index: tuple[int, ...]
    expr: sp.Expr | None = None
    parents: tuple[sp.Symbol, ...] = ()
    value: float = math.nan

    @property
    def is_leaf(self) -> bool:
        return self.expr is None


@dataclass
class Step:
    """One application of the chain rule: df/dp += (dv/dp) * (df/dv)."""

    node: sp.Symbol
    wrt: sp.Symbol
    local: sp.Expr
    upstream: sp.Symbol
    product: sp.Expr
    local_value: float
    upstream_value: float
    product_value: float


@dataclass
class Accumulation:
    """A value read by several nodes: its gradient is the sum of one term per path."""

    symbol: sp.Symbol
    terms: list[float]
    total: float


def _name(ir_name: str, index: tuple[int, ...], shape: tuple[int, ...]) -> str:
    if not shape or math.prod(shape) == 1 and ir_name:
        return ir_name
    return f"{ir_name}[{','.join(str(i) for i in index)}]"


LEAKY_KINKS = ("one", "alpha")


class _Expander:
    """Turns an IR graph into a straight-line program of scalar nodes."""

    def __init__(self, g: Graph, at: Mapping[str, Any], limit: int | None,
                 straight_through: bool) -> None:
        self.g = g
        self.at = at
        self.limit = limit
        self.straight_through = straight_through
        self.nodes: dict[sp.Symbol, ScalarNode] = {}
        self.order: dict[sp.Symbol, int] = {}
        # The same graph run in float64 on the numpy references: every scalar node's value.
        self.num: dict[Value, np.ndarray] = {}
        self.env: dict[Value, np.ndarray] = {}
        self.edges = 0

    def leaf(self, sym_name: str, op: str, ir_node: str, index: tuple[int, ...],
             value: float) -> sp.Symbol:
        symbol = sp.Symbol(sym_name, real=True)
        self.order[symbol] = len(self.order)
        self.nodes[symbol] = ScalarNode(symbol, op, ir_node, index, value=float(value))
        return symbol

    def inner(self, sym_name: str, op: str, ir_node: str, index: tuple[int, ...],
              expr: sp.Expr, rank: Mapping[sp.Symbol, int] | None = None,
              value: float = math.nan) -> sp.Expr:
        """Return a new scalar node for ``expr`` (or ``expr`` itself if it is a leaf/number).

        Its parents are listed in ``rank`` order (the op's inputs, port by port).
        """
        if expr.is_Symbol or expr.is_Number:
            return expr
        rank = rank or self.order
        parents = tuple(sorted((s for s in expr.free_symbols if s in self.order),
                               key=rank.__getitem__))
        self.edges += len(parents)
        if self.limit is not None and self.edges > self.limit:
            raise GraphcError(
                f"graph {self.g.name!r} is too big for symbolic backprop",
                expected=f"at most {self.limit:,} scalar edges",
                got=f"more than {self.limit:,} (stopped at node %{ir_node})",
                hint="Use numeric autodiff (reverse mode over whole tensors) for graphs this "
                     "size, or raise the limit (--limit) knowing the run may take minutes.")
        symbol = sp.Symbol(sym_name, real=True)
        self.order[symbol] = len(self.order)
        self.nodes[symbol] = ScalarNode(symbol, op, ir_node, index, expr, parents, value)
        return symbol

    def expand(self) -> None:
        g = self.g
        for node in g.topo():
            op = g.op(node)
            if op == INPUT:
                values = self._input_value(node)
                self.num[Value(node)] = values
                self.env[Value(node)] = self._leaves(node, "input", values)
            elif op == CONST:
                data = g.nx.nodes[node]
                value = data["value"]
                self.num[Value(node)] = value.astype(np.float64) \
                    if value.dtype.kind == "f" else value
                if data.get("trainable"):
                    self.env[Value(node)] = self._leaves(node, "param", value)
                else:
                    self.env[Value(node)] = np.vectorize(_number, otypes=[object])(
                        data["value"]) if data["value"].size else data["value"].astype(object)
            else:
                self._op(node, op)

    def _input_value(self, node: str) -> np.ndarray:
        shape = self.g.type_of(Value(node)).shape
        if node not in self.at:
            raise GraphcError(f"no value given for input {node!r}",
                              where=self.g.format_node(node),
                              expected=f"a value of shape {shape}", got="nothing",
                              hint=f"Give it with --at {node}=...")
        value = np.asarray(self.at[node], dtype=np.float64)
        if value.size == 1 and math.prod(shape) != 1:
            value = np.full(shape, float(value.reshape(-1)[0]))
        if value.size != math.prod(shape):
            raise GraphcError(f"input {node!r} has the wrong number of values",
                              where=self.g.format_node(node),
                              expected=f"{math.prod(shape)} (shape {shape})", got=value.size)
        return value.reshape(shape)

    def _leaves(self, node: str, kind: str, values: np.ndarray) -> np.ndarray:
        given = self.at.get(node) if kind == "param" else None
        if given is not None:
            values = np.asarray(given, dtype=np.float64).reshape(values.shape)
            self.num[Value(node)] = values
        out = np.empty(values.shape, dtype=object)
        for index in np.ndindex(values.shape):
            out[index] = self.leaf(_name(node, index, values.shape), kind, node, index,
                                   values[index])
        return out

    def _op(self, node: str, op: str) -> None:
        g = self.g
        opdef = ops.REGISTRY[op]
        values = g.in_values(node)
        inputs = [None if v is None else self.env[v] for v in values]
        attrs = opdef.full_attrs(g.attrs(node))
        where = g.format_node(node)
        if opdef.formula is not None:
            outs = [self._elementwise(opdef, inputs, attrs)]
        elif op == "Softmax" or op == "LogSoftmax":
            outs = [_softmax(inputs[0], attrs["axis"], log=op == "LogSoftmax")]
        elif op == "BatchNormalization":
            x, scale, bias, mean, var = inputs
            shape = (-1,) + (1,) * (x.ndim - 2)
            inv = np.vectorize(lambda v: 1 / sp.sqrt(v + attrs["epsilon"]), otypes=[object])
            outs = [(x - mean.reshape(shape)) * (scale * inv(var)).reshape(shape)
                    + bias.reshape(shape)]
        elif op in ("LayerNormalization", "InstanceNormalization", "GroupNormalization"):
            outs = [_normalize(op, inputs, attrs)]
        elif op == "Clip":
            outs = [_clip(inputs)]
        elif op in ("MaxPool", "GlobalMaxPool"):
            outs = [_max_pool(inputs[0], attrs, op == "GlobalMaxPool", where)]
        elif op in ("Gemm", "MatMul") and all(a is not None and a.ndim == 2
                                               for a in inputs[:2]):
            outs = [_matmul(inputs, attrs if op == "Gemm" else {})]
        elif op in _MOVERS or op in _LINEAR:
            try:
                outs = opdef.ref([None if a is None else a for a in inputs], attrs)
            except (TypeError, ValueError, AttributeError) as err:
                raise GraphcError(f"{op} cannot be expanded symbolically here ({err})",
                                  where=where) from None
            if op == "Dropout":
                outs = outs[:1]
        else:
            supported = sorted({*_MOVERS, *_LINEAR, *_EXPLICIT}
                               | {n for n, d in ops.REGISTRY.items() if d.formula is not None})
            raise GraphcError(f"symbolic backprop does not support {op}", where=where,
                              expected="one of " + ", ".join(supported), got=op,
                              hint="Use numeric autodiff (reverse mode over whole tensors) "
                                   "for this graph.")
        rank: dict[sp.Symbol, int] = {}
        for array in inputs:
            for cell in () if array is None else array.reshape(-1):
                if isinstance(cell, sp.Symbol):
                    rank.setdefault(cell, len(rank))
        # The formulas use float attributes as their short decimals (alpha = 0.01, not the
        # float32 0.00999999977648258); the values must be computed with the same numbers.
        short = {k: float(str(np.float32(v))) if isinstance(v, float) else v
                 for k, v in attrs.items()}
        with np.errstate(all="ignore"):
            numbers = opdef.ref([None if v is None else self.num[v] for v in values], short)
        for k, array in enumerate(outs):
            shape = g.types(node)[k].shape
            array = np.asarray(array, dtype=object).reshape(shape)
            self.num[Value(node, k)] = np.asarray(numbers[k], dtype=np.float64)
            name = g.value_name(Value(node, k))
            out = np.empty(shape, dtype=object)
            for index in np.ndindex(shape):
                out[index] = self.inner(_name(name, index, shape), op, node, index,
                                        sp.sympify(array[index]), rank,
                                        float(numbers[k][index]))
            self.env[Value(node, k)] = out

    def _elementwise(self, opdef: ops.OpDef, inputs: list[np.ndarray | None],
                     attrs: dict[str, Any]) -> np.ndarray:
        formula = opdef.formula
        # Attributes are float32 (as in ONNX): show 0.01, not 0.00999999977648258.
        params = {sp.Symbol(p, real=True): sp.Float(str(np.float32(attrs[p])))
                  for p in formula.params}
        expr = formula.expr.xreplace(params) if params else formula.expr
        arrays = np.broadcast_arrays(*inputs)
        out = np.empty(arrays[0].shape, dtype=object)
        for index in np.ndindex(out.shape):
            out[index] = expr.xreplace({a: arr[index] for a, arr in
                                        zip(formula.args, arrays, strict=True)})
        return out


def _matmul(inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> np.ndarray:
    """Y = alpha * op(A) op(B) + beta * C, each output one sympy Add built in one go (a numpy
    matmul on object arrays would rebuild the sum once per term)."""
    a, b = inputs[0], inputs[1]
    a = a.T if attrs.get("transA") else a
    b = b.T if attrs.get("transB") else b
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    c = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
    c = None if c is None else np.broadcast_to(c, (a.shape[0], b.shape[1]))
    out = np.empty((a.shape[0], b.shape[1]), dtype=object)
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            terms = [a[i, k] * b[k, j] for k in range(a.shape[1])]
            total = sp.Add(*terms)
            if alpha != 1.0:
                total = _number(alpha) * total
            if c is not None:
                total = total + (c[i, j] if beta == 1.0 else _number(beta) * c[i, j])
            out[i, j] = total
    return out


def _max_pool(x: np.ndarray, attrs: dict[str, Any], whole: bool, where: str) -> np.ndarray:
    """Each output is sympy Max over its window (explicit pads, no ceil_mode or dilation)."""
    n, c, h, w = x.shape
    if whole:
        kernel, strides, pads = (h, w), (1, 1), (0, 0, 0, 0)
    else:
        if attrs["auto_pad"] != "NOTSET" or attrs["ceil_mode"] or any(
                d != 1 for d in attrs["dilations"]):
            raise GraphcError("symbolic MaxPool needs explicit pads, no ceil_mode, no dilation",
                              where=where, hint="Use numeric autodiff for this graph.")
        kernel = tuple(attrs["kernel_shape"])
        strides = tuple(attrs["strides"]) or (1, 1)
        pads = tuple(attrs["pads"]) or (0, 0, 0, 0)
    oh = (h + pads[0] + pads[2] - kernel[0]) // strides[0] + 1
    ow = (w + pads[1] + pads[3] - kernel[1]) // strides[1] + 1
    out = np.empty((n, c, oh, ow), dtype=object)
    for b, ch, i, j in np.ndindex(out.shape):
        window = [x[b, ch, r, q]
                  for r in range(i * strides[0] - pads[0], i * strides[0] - pads[0] + kernel[0])
                  for q in range(j * strides[1] - pads[1], j * strides[1] - pads[1] + kernel[1])
                  if 0 <= r < h and 0 <= q < w]
        out[b, ch, i, j] = window[0] if len(window) == 1 else sp.Max(*window, evaluate=False)
    return out


def _standardize(x: np.ndarray, axes: tuple[int, ...], epsilon: float) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) over ``axes``, on an object array of sympy values."""
    count = math.prod(x.shape[a] for a in axes)
    mean = x.sum(axis=axes, keepdims=True) / count
    centered = x - mean
    var = (centered * centered).sum(axis=axes, keepdims=True) / count
    inv = np.vectorize(lambda v: 1 / sp.sqrt(v + _number(epsilon)), otypes=[object])
    return centered * inv(var)


def _normalize(op: str, inputs: list[np.ndarray | None], attrs: dict[str, Any]) -> np.ndarray:
    """Layer, instance and group normalization written out element by element."""
    x, scale = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    if op == "LayerNormalization":
        axis = attrs["axis"] % x.ndim
        y = _standardize(x, tuple(range(axis, x.ndim)), attrs["epsilon"]) * scale
        return y if bias is None else y + bias
    shape = (-1,) + (1,) * (x.ndim - 2)
    if op == "InstanceNormalization":
        y = _standardize(x, tuple(range(2, x.ndim)), attrs["epsilon"])
    else:
        groups = attrs["num_groups"]
        grouped = x.reshape(x.shape[0], groups, -1)
        y = _standardize(grouped, (2,), attrs["epsilon"]).reshape(x.shape)
    return y * scale.reshape(shape) + bias.reshape(shape)


def _clip(inputs: list[np.ndarray | None]) -> np.ndarray:
    """min(max(x, lo), hi) as a Piecewise per element (the bounds get no gradient inside)."""
    x = inputs[0]
    lo = inputs[1] if len(inputs) > 1 and inputs[1] is not None else None
    hi = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
    out = np.empty(x.shape, dtype=object)
    for index in np.ndindex(x.shape):
        v = x[index]
        pieces = []
        if lo is not None:
            pieces.append((lo.reshape(-1)[0], v < lo.reshape(-1)[0]))
        if hi is not None:
            pieces.append((hi.reshape(-1)[0], v > hi.reshape(-1)[0]))
        out[index] = sp.Piecewise(*pieces, (v, True)) if pieces else v
    return out


def _number(v: Any) -> sp.Expr:
    f = float(v)
    return sp.Integer(int(f)) if f.is_integer() else sp.Float(f)


def _softmax(z: np.ndarray, axis: int, log: bool) -> np.ndarray:
    z = np.moveaxis(z, axis, -1)
    out = np.empty(z.shape, dtype=object)
    for index in np.ndindex(z.shape[:-1]):
        row = list(z[index])
        total = sp.Add(*[sp.exp(v) for v in row])
        for j, v in enumerate(row):
            out[index + (j,)] = v - sp.log(total) if log else sp.exp(v) / total
    return np.moveaxis(out, -1, axis)


def _local_derivatives(node: ScalarNode, straight_through: bool,
                       leaky_kink: str = "one") -> dict[sp.Symbol, sp.Expr]:
    """Return dv/dp for every input p of node v, cheaply.

    A sum is differentiated term by term, touching only the terms that contain p (sympy.diff of
    an n-term sum costs O(n^2)). A unary activation's derivative is written in terms of its own
    output where sympy finds such a form (sigmoid' = y (1 - y)).
    """
    expr = node.expr
    if isinstance(expr, sp.Max):
        # The gradient goes to the first largest element (ties: the earliest wins).
        args = list(expr.args)
        out = {}
        for i, a in enumerate(args):
            wins = [a > b for b in args[:i]] + [a >= b for b in args[i + 1:]]
            out[a] = sp.Piecewise((1, sp.And(*wins)), (0, True))
        return {p: out.get(p, sp.Integer(0)) for p in node.parents}
    op_rule = ops.REGISTRY[node.op].formula if node.op in ops.REGISTRY else None
    if node.op == "Heaviside" and straight_through:
        return {p: sp.Integer(1) for p in node.parents}
    if node.op == "LeakyRelu" and leaky_kink == "alpha":
        # The other common convention: the kink belongs to the alpha branch.
        (p,) = node.parents
        (_, _), (negative, _) = expr.args
        return {p: sp.Piecewise((1, p > 0), (sp.diff(negative, p), True))}
    if op_rule is not None and len(node.parents) == 1 and len(op_rule.args) == 1:
        in_terms_of_y = derivative_in_terms_of_output(node.op)
        if in_terms_of_y is not None:
            return {node.parents[0]: in_terms_of_y.xreplace({sp.Symbol("Y", real=True):
                                                             node.symbol})}
    terms = expr.args if expr.is_Add else (expr,)
    by_parent: dict[sp.Symbol, list[sp.Expr]] = defaultdict(list)
    parents = set(node.parents)
    for term in terms:
        for s in term.free_symbols & parents:
            by_parent[s].append(term)
    return {p: sp.Add(*[_diff_term(t, p) for t in by_parent[p]]) for p in node.parents}


def _diff_term(term: sp.Expr, p: sp.Symbol) -> sp.Expr:
    """d(term)/dp, with the common cases of a linear layer done without sympy.diff."""
    if term == p:
        return sp.Integer(1)
    if term.is_Mul and term.args.count(p) == 1:
        others = [a for a in term.args if a != p]
        if not any(p in a.free_symbols for a in others):
            return sp.Mul(*others)
    return sp.diff(term, p)


@dataclass
class BackpropResult:
    """Every value and gradient of a graph at a point, the steps, and what can be built from it.

    ``value(name)`` and ``grad(name)`` look values up by symbol name; ``table()``, ``steps()``,
    ``formulas()`` give text, ``formulas(latex=True)`` LaTeX; ``draw(path)`` the picture;
    ``to_onnx()`` a model computing outputs and gradients.
    """

    graph: Graph
    nodes: dict[sp.Symbol, ScalarNode]
    objective: sp.Symbol
    wrt: list[sp.Symbol]
    adjoints: dict[sp.Symbol, sp.Symbol]
    gradient_exprs: dict[sp.Symbol, sp.Expr]
    gradient_values: dict[sp.Symbol, float]
    steps_list: list[Step] = field(default_factory=list)
    accumulations: list[Accumulation] = field(default_factory=list)
    straight_through: bool = False
    leaky_kink: str = "one"

    def symbol(self, name: str) -> sp.Symbol:
        for s in self.nodes:
            if s.name == name:
                return s
        raise GraphcError(f"no scalar value called {name!r}",
                          hint="Names are node names, with [i,j] for tensor elements.")

    def to_onnx(self, opset: int = 17) -> Any:
        """Return an ONNX model computing the objective and the gradients (see
        ``graphc.symbolic.codegen.gradient_onnx``)."""
        return gradient_onnx(self, opset)

    def value(self, name: str) -> float:
        return self.nodes[self.symbol(name)].value

    def grad(self, name: str) -> float:
        """Return d(objective)/d(name) (0 if the objective does not depend on it)."""
        return self.gradient_values.get(self.symbol(name), 0.0)

    def table(self) -> str:
        """Return a table of every scalar value and its gradient at the point."""
        rows = [("value", "op", "forward", f"d{self.objective.name}/d(value)")]
        for s, n in self.nodes.items():
            grad = self.adjoints.get(s)
            gval = _fmt(self.gradient_values.get(s, self._all_grads().get(s, 0.0))) \
                if grad is not None else "0"
            rows.append((s.name, n.op, _fmt(n.value), gval))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                           for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
                 for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def _all_grads(self) -> dict[sp.Symbol, float]:
        if not hasattr(self, "_grads"):
            vals: dict[sp.Symbol, float] = {}
            for st in self.steps_list:
                vals[st.wrt] = vals.get(st.wrt, 0.0) + st.product_value
            vals[self.objective] = 1.0
            self._grads = vals
        return self._grads

    def steps(self) -> str:
        """Return the chain rule step by step, in the order backprop applies it."""
        lines = []
        current = None
        obj = self.objective.name
        for st in self.steps_list:
            if st.node != current:
                current = st.node
                lines.append(f"{st.node.name} = {self.nodes[st.node].expr}"
                             f"    (value {_fmt(self.nodes[st.node].value)}, upstream "
                             f"d{obj}/d{st.node.name} = {_fmt(st.upstream_value)})")
            lines.append(f"  d{obj}/d{st.wrt.name} += local d{st.node.name}/d{st.wrt.name} "
                         f"* upstream d{obj}/d{st.node.name} = ({st.local}) * "
                         f"{_fmt(st.upstream_value)} = {_fmt(st.local_value)} * "
                         f"{_fmt(st.upstream_value)} = {_fmt(st.product_value)}")
        for acc in self.accumulations:
            terms = " + ".join(_fmt(t) for t in acc.terms)
            lines.append(f"d{obj}/d{acc.symbol.name} sums {len(acc.terms)} paths: {terms} = "
                         f"{_fmt(acc.total)}")
        return "\n".join(lines)

    def program(self) -> list[tuple[sp.Symbol, sp.Expr]]:
        """Return the straight-line program: forward nodes, then adjoints (one line each)."""
        fwd = [(s, n.expr) for s, n in self.nodes.items() if not n.is_leaf]
        back = [(adj, self.gradient_exprs[adj]) for s, adj in self.adjoints.items()
                if s != self.objective]
        return fwd + back

    def formulas(self, latex: bool = False, closed_form_limit: int = 40
                 ) -> str:
        """Return the forward and backward formulas, node by node (text or LaTeX).

        For graphs of at most ``closed_form_limit`` scalar nodes, the gradients are also given
        in closed form over the inputs, with common subexpressions shared (sympy.cse).
        """
        lines = []
        prog = self.program()
        wanted = [self.adjoints[s] for s in self.wrt if s in self.adjoints]
        names = latex_names([s for s, _ in prog] + list(self.nodes) + wanted, self.objective)
        show = (lambda e: sp.latex(e, symbol_names=names)) if latex else str
        for s, e in prog:
            lines.append(f"{show(s)} = {show(e)}")
        if len(self.nodes) <= closed_form_limit and wanted:
            subs: dict[sp.Symbol, sp.Expr] = {}
            for s, e in prog:
                subs[s] = e.xreplace(subs)
            closed = [subs.get(a, a) for a in wanted]
            shared, reduced = sp.cse(closed, order="none",
                                     symbols=sp.numbered_symbols("c", real=True))
            lines.append("")
            lines.append("closed form:" if not latex else r"\text{closed form:}")
            for s, e in shared:
                lines.append(f"{show(s)} = {show(e)}")
            for a, e in zip(wanted, reduced, strict=True):
                lines.append(f"{show(a)} = {show(e)}")
        sep = " \\\\\n" if latex else "\n"
        return sep.join(lines)

    def evaluator(self) -> Any:
        """Return a compiled function of the leaves (in ``self.leaves()`` order) that returns
        [objective, *gradients w.r.t. ``wrt``]: the node-by-node program as Python code.

        Arguments may be numbers or numpy arrays (a batch of points)."""
        outs = [self.objective] + [self.adjoints.get(s, sp.Integer(0)) for s in self.wrt]
        return compile_program(self.program(), self.leaves(), outs)

    def leaves(self) -> list[sp.Symbol]:
        return [s for s, n in self.nodes.items() if n.is_leaf]

    def finite_differences(self, h: float = 1e-6,
                           wrt: Sequence[sp.Symbol] | None = None) -> dict[sp.Symbol, float]:
        """Return central finite differences (f(p + h) - f(p - h)) / 2h for ``wrt`` (default:
        every ``self.wrt``), all perturbations in one vectorized run of the forward program."""
        prog = [(t, e) for t, e in self.program() if t in self.nodes]
        leaves = self.leaves()
        compiled = compile_program(prog, leaves, [self.objective])

        def forward(*args: float) -> float:
            return compiled(*args)[0]

        chosen = list(self.wrt if wrt is None else wrt)
        if not chosen:
            return {}
        # Column 2j perturbs chosen[j] by +h, column 2j + 1 by -h.
        columns = np.array([self.nodes[s].value for s in leaves])[:, None].repeat(
            2 * len(chosen), axis=1)
        position = {s: k for k, s in enumerate(leaves)}
        for j, s in enumerate(chosen):
            columns[position[s], 2 * j] += h
            columns[position[s], 2 * j + 1] -= h
        f = np.broadcast_to(np.asarray(forward(*columns), dtype=np.float64), (2 * len(chosen),))
        return {s: float(f[2 * j] - f[2 * j + 1]) / (2 * h) for j, s in enumerate(chosen)}

    def draw(self, path: str, max_nodes: int = 80) -> str:
        """Draw the graph with forward values above the edges and gradients below (.png or
        .svg); return the backend used ("graphviz" when `dot` is installed, else
        "matplotlib")."""
        from graphc.symbolic.draw import draw as draw_file

        return draw_file(self, path, max_nodes=max_nodes)

    def _repr_svg_(self) -> str | None:
        from graphc.symbolic.draw import render

        if len(self.nodes) > 80:
            return None
        return render(self, "svg").decode()

    def _repr_latex_(self) -> str:
        body = self.formulas(latex=True).replace(" = ", " &= ")
        return "$$\\begin{aligned}" + body + "\\end{aligned}$$"

    def _repr_html_(self) -> str:
        import html

        return "<pre>" + html.escape(self.table()) + "</pre>"

    def __str__(self) -> str:
        return self.table()


def backprop(g: Graph, at: Mapping[str, Any], wrt: Sequence[str] | None = None, *,
             output: str | None = None, limit: int | None = DEFAULT_LIMIT,
             straight_through: bool = False, leaky_kink: str = "one") -> BackpropResult:
    """Run symbolic backprop on ``g`` at the point ``at`` (input name -> value).

    The objective is the graph's output ``output`` (default: the first); a tensor output is
    summed. ``wrt`` names the inputs and parameters to differentiate by (default: every input
    and parameter). Parameters take their stored values unless ``at`` gives them.
    ``straight_through`` uses the straight-through estimator for Heaviside (derivative 1):
    the true derivative of a step is 0 almost everywhere, so a step-function network cannot
    learn by gradient descent without it. ``leaky_kink`` is LeakyReLU's slope at 0: ``"one"``
    (the course's (x < 0) alpha x + (x >= 0) x) or ``"alpha"`` (the kink in the alpha branch).
    """
    if leaky_kink not in LEAKY_KINKS:
        raise GraphcError(f"leaky_kink must be one of {', '.join(LEAKY_KINKS)}, got "
                          f"{leaky_kink!r}", hint='"one" is the course\'s convention')
    if limit is not None:
        _check_size(g, limit)
    known = set(g.inputs) | set(g.params())
    for name in at:
        if name not in known:
            raise unknown("input or parameter", name, known, where=f"graph {g.name}")
    ex = _Expander(g, at, limit, straight_through)
    ex.expand()
    nodes = ex.nodes
    out_value = _pick_output(g, output)
    cells = [c for c in ex.env[out_value].reshape(-1)]
    if len(cells) == 1 and isinstance(cells[0], sp.Symbol) and cells[0] in nodes:
        objective = cells[0]
    else:
        objective = ex.inner(f"sum({g.value_name(out_value)})", "Sum", out_value.node, (),
                             sp.Add(*cells))
        nodes[objective].value = float(sum(_val(nodes, c) for c in cells))
    wrt_syms = _wrt(g, nodes, wrt)
    result = BackpropResult(g, nodes, objective, wrt_syms, {}, {}, {},
                            straight_through=straight_through, leaky_kink=leaky_kink)
    _reverse(result)
    return result


def estimate_edges(g: Graph) -> int:
    """Return an upper estimate of the scalar edges of ``g``'s expansion, from shapes alone:
    each input and parameter element, and per op its FLOPs plus its output elements (a sum of
    K products has 2K + 1 inputs: 2K FLOPs and one more)."""
    from graphc.shapes import layer_table

    leaves = sum(g.type_of(Value(n)).size for n in g.inputs)
    leaves += sum(g.nx.nodes[n]["value"].size for n in g.params())
    return leaves + sum(r.flops + r.output.size for r in layer_table(g))


def _check_size(g: Graph, limit: int) -> None:
    size = estimate_edges(g)
    if size > limit:
        raise GraphcError(
            f"graph {g.name!r} is too big for symbolic backprop: about {size:,} scalar edges",
            expected=f"at most {limit:,} (the limit, where a run takes about 30 s)",
            got=f"{size:,}",
            hint="Use numeric autodiff (reverse mode over whole tensors) for graphs this "
                 "size, or raise the limit (--limit) knowing the run may take minutes.")


def _val(nodes: dict[sp.Symbol, ScalarNode], e: sp.Expr) -> float:
    return nodes[e].value if e in nodes else float(e)


def _pick_output(g: Graph, output: str | None) -> Value:
    names = g.output_names()
    if output is None:
        return g.outputs[0]
    if output not in names:
        raise unknown("output", output, names, where=f"graph {g.name}")
    return g.outputs[names.index(output)]


def _wrt(g: Graph, nodes: dict[sp.Symbol, ScalarNode], wrt: Sequence[str] | None
         ) -> list[sp.Symbol]:
    leaves = [s for s, n in nodes.items() if n.is_leaf]
    if wrt is None:
        return leaves
    chosen = []
    for name in wrt:
        hits = [s for s in leaves if s.name == name or nodes[s].ir_node == name]
        if not hits:
            known = sorted({nodes[s].ir_node for s in leaves} | {s.name for s in leaves})
            raise unknown("input or parameter", name, known, where=f"graph {g.name}")
        chosen += hits
    return chosen


def _reverse(r: BackpropResult) -> None:
    """Accumulate adjoints node by node in reverse order, keeping every step."""
    nodes = r.nodes
    contributions: dict[sp.Symbol, list[tuple[sp.Expr, float]]] = defaultdict(list)
    contributions[r.objective].append((sp.Integer(1), 1.0))
    grad_values: dict[sp.Symbol, float] = {}
    order = list(nodes)
    for s in reversed(order):
        terms = contributions.get(s)
        if not terms:
            continue
        total = float(sum(v for _, v in terms))
        if s == r.objective:
            adj: sp.Expr = sp.Integer(1)
        else:
            adj = sp.Symbol(f"d{r.objective.name}/d{s.name}", real=True)
            r.gradient_exprs[adj] = sp.Add(*[e for e, _ in terms])
        r.adjoints[s] = adj
        grad_values[s] = total
        if len(terms) > 1:
            r.accumulations.append(Accumulation(s, [v for _, v in terms], total))
        node = nodes[s]
        if node.is_leaf:
            continue
        for p, local in _local_derivatives(node, r.straight_through, r.leaky_kink).items():
            values = {q: nodes[q].value for q in local.free_symbols if q in nodes}
            local_value = float(local.xreplace(values)) if values or local.is_Number else \
                float(local)
            product_value = local_value * total
            contributions[p].append((local * adj, product_value))
            r.steps_list.append(Step(s, p, local, adj, local * adj, local_value, total,
                                     product_value))
    r.gradient_values.update({s: grad_values.get(s, 0.0) for s in r.wrt})


# ----- presentation ---------------------------------------------------------------------------


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def latex_names(symbols: Sequence[sp.Symbol], objective: sp.Symbol) -> dict[sp.Symbol, str]:
    """Return LaTeX names: ``fc1.weight[0,1]`` -> ``\\mathrm{fc1.weight}_{0,1}``, and
    ``df/dx`` -> ``\\frac{\\partial f}{\\partial x}``."""
    def one(name: str) -> str:
        base, _, index = name.partition("[")
        text = base if len(base) == 1 else r"\mathrm{" + base.replace("_", r"\_") + "}"
        return text + ("_{" + index.rstrip("]") + "}" if index else "")

    names = {}
    prefix = f"d{objective.name}/d"
    for s in symbols:
        if s.name.startswith(prefix) and s.name != objective.name:
            names[s] = (r"\frac{\partial " + one(objective.name) + r"}{\partial "
                        + one(s.name[len(prefix):]) + "}")
        else:
            names[s] = one(s.name)
    return names
