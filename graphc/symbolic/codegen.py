"""Code generation for symbolic backprop: the straight-line program as Python code (the
compiled evaluator) and as a scalar ONNX model (float64, one node per sympy operation).

>>> import sympy as sp
>>> x, y = sp.symbols("x y")
>>> f = compile_program([(y, x**2 + 1)], [x], [y, 2 * x])
>>> f(3.0)
[10.0, 6.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import sympy as sp

from graphc.errors import GraphcError
from graphc.ops.elementwise import SYMPY_FUNCTIONS, SYMPY_RELATIONS

if TYPE_CHECKING:
    from graphc.symbolic.chain_rule import BackpropResult


# ----- compiled evaluation --------------------------------------------------------------------

_NUMPY_FUNCS = {"exp": "np.exp", "log": "np.log", "tanh": "np.tanh", "sqrt": "np.sqrt",
                "Abs": "np.abs"}


def _code(e: sp.Expr, names: Mapping[sp.Symbol, str]) -> str:
    """Print one local expression as numpy code (a small printer: sympy's own printer costs
    ~0.2 ms a line, which dominates on a few thousand nodes)."""
    if e in names:
        return names[e]
    if e is sp.true:
        return "True"
    if e is sp.false:
        return "False"
    if e.is_Number:
        return repr(float(e))
    if e.is_Add:
        return "(" + " + ".join(_code(a, names) for a in e.args) + ")"
    if e.is_Mul:
        return "(" + "*".join(_code(a, names) for a in e.args) + ")"
    if e.is_Pow:
        return f"({_code(e.base, names)}**{_code(e.exp, names)})"
    if isinstance(e, sp.Piecewise):
        text = "np.nan"
        for value, cond in reversed(e.args):
            text = f"np.where({_code(cond, names)}, {_code(value, names)}, {text})"
        return text
    if e.is_Relational:
        return f"({_code(e.lhs, names)} {e.rel_op} {_code(e.rhs, names)})"
    if isinstance(e, (sp.And, sp.Max)):
        func = "np.logical_and" if isinstance(e, sp.And) else "np.maximum"
        text = _code(e.args[0], names)
        for a in e.args[1:]:
            text = f"{func}({text}, {_code(a, names)})"
        return text
    name = _NUMPY_FUNCS.get(type(e).__name__)
    if name is not None:
        return f"{name}({', '.join(_code(a, names) for a in e.args)})"
    raise GraphcError(f"cannot compile {type(e).__name__} in {e}",
                      hint="Evaluate with sympy instead (BackpropResult.value/grad).")


def compile_program(program: Sequence[tuple[sp.Symbol, sp.Expr]], args: Sequence[sp.Symbol],
                    outputs: Sequence[sp.Expr]) -> Any:
    """Return a Python function of ``args`` that runs ``program`` and returns ``outputs``."""
    names: dict[sp.Symbol, str] = {}
    for s in [*args, *(t for t, _ in program)]:
        names[s] = f"v{len(names)}"
    lines = [f"def _program({', '.join(names[a] for a in args)}):"]
    lines += [f"    {names[t]} = {_code(e, names)}" for t, e in program]
    lines.append(f"    return [{', '.join(_code(o, names) for o in outputs)}]")
    namespace: dict[str, Any] = {"np": np}
    with np.errstate(all="ignore"):
        exec(compile("\n".join(lines), "<graphc.symbolic>", "exec"), namespace)  # noqa: S102
    return namespace["_program"]


# ----- ONNX -----------------------------------------------------------------------------------



class _OnnxLowering:
    """Lowers the straight-line program to scalar ONNX nodes (float64), one node per sympy
    operation, sharing repeated subexpressions."""

    def __init__(self, names: dict[sp.Expr, str]) -> None:
        from onnx import helper, numpy_helper

        self.helper = helper
        self.numpy_helper = numpy_helper
        self.names = names
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.counter = 0

    def fresh(self) -> str:
        self.counter += 1
        return f"t{self.counter}"

    def node(self, op: str, inputs: list[str], out: str | None = None) -> str:
        out = out or self.fresh()
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=out))
        return out

    def value(self, e: sp.Expr) -> str:
        if e in self.names:
            return self.names[e]
        name = self._lower(e)
        self.names[e] = name
        return name

    def constant(self, v: float | bool) -> str:
        name = self.fresh()
        dtype = np.bool_ if isinstance(v, bool) else np.float64
        self.initializers.append(self.numpy_helper.from_array(np.array(v, dtype=dtype), name))
        return name

    def _chain(self, op: str, args: Sequence[sp.Expr]) -> str:
        acc = self.value(args[0])
        for a in args[1:]:
            acc = self.node(op, [acc, self.value(a)])
        return acc

    def _lower_named(self, e: sp.Expr, name: str) -> str:
        """Lower ``e`` so that its last node's output is called ``name``."""
        value = self._lower(e)
        if self.nodes and self.nodes[-1].output[0] == value:
            self.nodes[-1].output[0] = name
            self.nodes[-1].name = name
            return name
        return self.node("Identity", [value], name)

    def _lower(self, e: sp.Expr) -> str:
        if e is sp.true or e is sp.false:
            return self.constant(bool(e))
        if e.is_Number:
            return self.constant(float(e))
        if e.is_Add:
            return self._chain("Add", e.args)
        if e.is_Mul:
            if e.args[0] == -1:
                return self.node("Neg", [self.value(sp.Mul(*e.args[1:]))])
            return self._chain("Mul", e.args)
        if e.is_Pow:
            base, exp = self.value(e.base), e.exp
            if exp == -1:
                return self.node("Reciprocal", [base])
            if exp == 2:
                return self.node("Mul", [base, base])
            if exp == sp.Rational(1, 2):
                return self.node("Sqrt", [base])
            if exp == sp.Rational(-1, 2):
                return self.node("Reciprocal", [self.node("Sqrt", [base])])
            return self.node("Pow", [base, self.value(exp)])
        if isinstance(e, sp.Piecewise):
            text = self.constant(float("nan"))
            for value, cond in reversed(e.args):
                text = self.node("Where", [self.value(cond), self.value(value), text])
            return text
        if e.is_Relational:
            return self.node(SYMPY_RELATIONS[e.rel_op], [self.value(e.lhs), self.value(e.rhs)])
        if isinstance(e, sp.And):
            return self._chain("And", e.args)
        if isinstance(e, sp.Max):
            return self.node("Max", [self.value(a) for a in e.args])
        op = SYMPY_FUNCTIONS.get(type(e).__name__)
        if op is not None:
            return self.node(op, [self.value(e.args[0])])
        raise GraphcError(f"cannot lower {type(e).__name__} in {e} to ONNX")


def gradient_onnx(result: BackpropResult, opset: int = 17) -> Any:
    """Return an ONNX model (float64 scalars) computing the objective and every requested
    gradient from the leaves (inputs and parameters), one node per scalar operation.

    Inputs are named like the leaves (``x``, ``fc1.weight[0,1]``), outputs ``f`` and
    ``df/dx``.
    """
    import onnx
    from onnx import helper

    leaves = result.leaves()
    names: dict[sp.Expr, str] = {s: s.name for s in leaves}
    low = _OnnxLowering(names)
    for target, expr in result.program():
        names[target] = low.node("Identity", [low.value(expr)], target.name) \
            if expr in names or expr.is_Number else low._lower_named(expr, target.name)
    wanted = [(result.objective.name, result.objective)] + [
        (f"d{result.objective.name}/d{s.name}", result.adjoints.get(s, sp.Integer(0)))
        for s in result.wrt]
    outputs = []
    for name, expr in wanted:
        value = low.value(expr)
        if value != name:
            value = low.node("Identity", [value], name)
        outputs.append(helper.make_tensor_value_info(name, onnx.TensorProto.DOUBLE, []))
    graph = helper.make_graph(
        low.nodes, f"{result.graph.name}_grad",
        [helper.make_tensor_value_info(s.name, onnx.TensorProto.DOUBLE, []) for s in leaves],
        outputs, low.initializers)
    from graphc.onnxio.export import _ir_version
    from graphc.version import __version__

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="graphc", producer_version=__version__,
                              ir_version=_ir_version(opset))
    return model
