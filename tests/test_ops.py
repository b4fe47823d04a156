"""Table-driven tests over the op registry: every example of every op, on every checked opset.

For each example (``examples`` and the ``nonfinite`` ones, with NaN and infinities among the
inputs): the numpy reference against onnxruntime, NaN and infinities exactly (same positions,
same signs) and finite values within 1e-5 relative to the finite output scale; and the op's
shape rule against ``onnx.shape_inference``. An example marked ``onnxruntime_differs`` is
compared where the reference gives a finite value or +inf. Adding an op with examples adds its
tests here without editing this file.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from graphc import ops
from graphc.errors import OpError
from graphc.interpret import run
from graphc.ir import Graph, Value
from graphc.onnxio.export import max_opset, to_onnx
from graphc.onnxio.runtime import run_onnxruntime

CASES = [
    pytest.param(op, example, id=f"{op.name}-{example.name or k}")
    for op in ops.REGISTRY.values()
    for k, example in enumerate((*op.examples, *op.nonfinite))
]


def one_node_graph(op: ops.OpDef, example: ops.Example) -> Graph:
    """Return a graph applying ``op`` to the example: consts as Const nodes, the rest inputs."""
    g = Graph(f"{op.name.lower()}_example")
    values: list[Value | None] = []
    for k, array in enumerate(example.inputs):
        if array is None:
            values.append(None)
        elif k in example.consts:
            values.append(g.add_const(f"c{k}", array))
        else:
            values.append(g.add_input(f"in{k}", array.shape, array.dtype))
    out = g.add_node(op.name, values, example.attrs, name="y")
    g.outputs = [Value(out.node, k) for k in range(len(g.types(out.node)))]
    g.verify()
    return g


def feeds_of(example: ops.Example) -> dict[str, np.ndarray]:
    return {f"in{k}": a for k, a in enumerate(example.inputs)
            if a is not None and k not in example.consts}


def assert_close(expected: dict[str, np.ndarray], got: dict[str, np.ndarray],
                 only_where: str = "") -> None:
    """Assert equal NaN positions, equal infinities (position and sign) and finite values
    within 1e-5 of the finite output scale. With ``only_where`` (a known onnxruntime
    difference), elements the reference gives as NaN or -inf are left out."""
    for (name, want), have in zip(expected.items(), got.values(), strict=True):
        assert have.shape == want.shape, name
        assert have.dtype == want.dtype, name
        if want.dtype.kind != "f":
            np.testing.assert_array_equal(have, want, err_msg=name)
            continue
        keep = ~(np.isnan(want) | (want == -np.inf)) if only_where else np.ones(want.shape, bool)
        want, have = want[keep], have[keep]
        assert np.array_equal(np.isnan(have), np.isnan(want)), (name, want, have)
        infinite = np.isinf(want)
        assert np.array_equal(np.isinf(have), infinite), (name, want, have)
        assert np.array_equal(have[infinite], want[infinite]), (name, want, have)
        finite = np.isfinite(want)
        scale = max(1.0, float(np.max(np.abs(want[finite])))) if finite.any() else 1.0
        np.testing.assert_allclose(have[finite], want[finite], rtol=0, atol=1e-5 * scale,
                                   err_msg=name)


@pytest.mark.parametrize("opset", [17, max_opset()])
@pytest.mark.parametrize(("op", "example"), CASES)
def test_reference_matches_onnxruntime(op: ops.OpDef, example: ops.Example, opset: int) -> None:
    g = one_node_graph(op, example)
    feeds = feeds_of(example)
    assert_close(run(g, feeds), run_onnxruntime(to_onnx(g, opset), feeds),
                 example.onnxruntime_differs)


@pytest.mark.parametrize(("op", "example"), CASES)
def test_shape_rule_matches_onnx_shape_inference(op: ops.OpDef, example: ops.Example) -> None:
    g = one_node_graph(op, example)
    model = to_onnx(g, 17)
    del model.graph.output[:]  # let shape inference, not our declared outputs, say the types
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    known = {vi.name: vi.type.tensor_type for vi in inferred.graph.value_info}
    for v in g.outputs:
        onnx_type = known[g.value_name(v)]
        shape = tuple(d.dim_value for d in onnx_type.shape.dim)
        assert shape == g.type_of(v).shape
        assert onnx.helper.tensor_dtype_to_np_dtype(onnx_type.elem_type) == g.type_of(v).dtype


@pytest.mark.parametrize("op", list(ops.REGISTRY.values()), ids=list(ops.REGISTRY))
def test_every_op_is_declared_whole(op: ops.OpDef) -> None:
    assert op.examples, f"{op.name} has no examples"
    assert op.doc.endswith(".") and "\n" not in op.doc, f"{op.name} has no one-line doc"
    assert op.flops is not None, f"{op.name} has no FLOP count"
    for name, attr in op.attrs.items():
        assert attr.kind in ("int", "float", "str", "ints", "floats"), (op.name, name)


@pytest.mark.parametrize("op", list(ops.REGISTRY.values()), ids=list(ops.REGISTRY))
def test_every_op_on_floats_has_nonfinite_examples(op: ops.OpDef) -> None:
    # Float data (rank 2 or more, not a constant): scales and bounds are not data.
    floats = any(a is not None and a.dtype.kind == "f" and a.ndim >= 2 and k not in e.consts
                 for e in op.examples for k, a in enumerate(e.inputs))
    assert bool(op.nonfinite) == floats, f"{op.name}: nonfinite examples for float data only"
    for example in op.nonfinite:
        values = np.concatenate([np.ravel(a) for a in example.inputs
                                 if a is not None and a.dtype.kind == "f"])
        assert not np.isfinite(values).all(), (op.name, example.name)


def test_the_issue_op_set_is_registered() -> None:
    wanted = """Add Sub Mul Div Neg Exp Log Sqrt Pow MatMul Gemm Conv ConvTranspose Pad MaxPool
        AveragePool GlobalAveragePool GlobalMaxPool BatchNormalization LayerNormalization
        InstanceNormalization GroupNormalization Dropout Heaviside Sigmoid Tanh Relu LeakyRelu
        Softmax LogSoftmax Flatten Reshape Transpose Concat Identity Clip""".split()
    assert sorted(set(wanted) - set(ops.REGISTRY)) == []


def _example_attrs(op: str) -> list[dict]:
    return [e.attrs for e in ops.REGISTRY[op].examples]


def test_examples_cover_the_hard_convolution_cases() -> None:
    convs = _example_attrs("Conv")
    assert any(2 in a.get("strides", ()) for a in convs)
    assert any(2 in a.get("dilations", ()) for a in convs)
    assert any(a.get("group", 1) > 1 for a in convs)
    assert {"SAME_UPPER", "SAME_LOWER", "VALID"} <= {a.get("auto_pad") for a in convs}
    assert "reflect" in {a.get("mode") for a in _example_attrs("Pad")}
    pools = _example_attrs("AveragePool")
    assert {0, 1} <= {a.get("count_include_pad", 0) for a in pools}


def test_unknown_op_lists_the_known_ones() -> None:
    with pytest.raises(OpError) as info:
        ops.get("Convv")
    assert "unknown op 'Convv'" in str(info.value)
    assert "Did you mean 'Conv'?" in str(info.value)


def test_relu_and_leaky_relu_kink_conventions_come_from_the_formula() -> None:
    import sympy as sp

    relu = ops.REGISTRY["Relu"].formula
    x = relu.args[0]
    assert sp.diff(relu.expr, x).subs(x, 0) == 0
    # The course: LeakyReLU(x) = (x < 0) * alpha * x + (x >= 0) * x, so the slope at 0 is 1.
    leaky = ops.REGISTRY["LeakyRelu"].formula
    x = leaky.args[0]
    alpha = sp.Symbol("alpha", real=True)
    assert sp.diff(leaky.expr, x).subs(x, 0) == 1
    assert sp.diff(leaky.expr, x).subs(x, -1) == alpha
    course = sp.Piecewise((alpha * x, x < 0), (0, True)) + sp.Piecewise((x, x >= 0), (0, True))
    for at in (-2, -1, 0, 1, 3):
        assert sp.simplify((leaky.expr - course).subs(x, at)) == 0


FORMULA_CASES = [case for case in CASES if case.values[0].formula is not None]


@pytest.mark.parametrize(("op", "example"), FORMULA_CASES)
def test_numpy_reference_is_the_formula_lambdified(op: ops.OpDef, example: ops.Example) -> None:
    # The reference evaluates the formula's rule with numpy (no sympy at run time); it must
    # compute exactly what sympy's lambdify of the formula's expression computes.
    import sympy as sp

    formula = op.formula
    attrs = op.full_attrs(example.attrs)
    fn = sp.lambdify([*formula.args, *(sp.Symbol(p, real=True) for p in formula.params)],
                     formula.expr, modules="numpy")
    # In full: numpy's x ** 0.5 with a broadcast exponent is sqrt(x), NaN at -inf (pow: +inf).
    shape = np.broadcast_shapes(*(a.shape for a in example.inputs))
    inputs = [np.array(np.broadcast_to(a, shape)).reshape(-1) for a in example.inputs]
    want = np.asarray(fn(*inputs, *(attrs[p] for p in formula.params)), inputs[0].dtype)
    if formula.nan_in_nan_out:
        for x in inputs:
            want = np.where(np.isnan(x), x, want)
    got = op.ref(list(example.inputs), attrs)[0]
    np.testing.assert_array_equal(got, np.broadcast_to(want, inputs[0].shape).reshape(shape))


def test_onnx_dtype_numbers_are_onnx_s() -> None:
    from graphc.ops.base import ONNX_DTYPES, onnx_dtype

    for dtype, number in ONNX_DTYPES.items():
        assert onnx.helper.np_dtype_to_tensor_dtype(dtype) == number, dtype
    assert onnx_dtype(np.uint16) == onnx.TensorProto.UINT16


def test_attributes_newer_than_the_opset_are_refused_at_export() -> None:
    from graphc.errors import ExportError
    from graphc.ops.base import rng_array

    g = Graph("dilated_pool")
    x = g.add_input("x", (1, 2, 7, 7))
    g.outputs = [g.add_node("AveragePool", [x], {"kernel_shape": (2, 2), "dilations": (2, 2)})]
    feeds = {"x": rng_array((1, 2, 7, 7), seed=3)}
    assert_close(run(g, feeds), run_onnxruntime(to_onnx(g, 19), feeds))
    with pytest.raises(ExportError, match="dilations of AveragePool does not exist at opset 17"):
        to_onnx(g, 17)
