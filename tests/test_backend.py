"""graphc.backend (ONNX's Backend interface), and what the import does for it: inputs bound to
the values fed or given (--bind), old opsets upgraded, LayerNormalization's Mean and InvStdDev.

Every number is checked against onnxruntime on the same file, or by hand.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import graphc
from graphc import testing
from graphc.autodiff import gradient_graph
from graphc.backend import GraphcBackend, prepare, run_model, run_node, supports_device
from graphc.cli import main
from graphc.errors import ExportError, GraphcError, UsageError
from graphc.interpret import run
from graphc.ir import Graph, Value
from graphc.onnxio.export import to_onnx
from graphc.onnxio.importer import from_onnx, run_onnx
from graphc.onnxio.runtime import run_onnxruntime


def tensor(name: str, elem: int, shape: list | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def model_of(nodes: list[onnx.NodeProto], inputs: list, outputs: list, opset: int = 17,
             inits: list | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "m", inputs, outputs, initializer=inits or [])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def reshape_model() -> onnx.ModelProto:
    """Relu then Reshape whose target shape is a graph input (as ONNX's node tests feed it)."""
    return model_of([helper.make_node("Relu", ["x"], ["r"], name="/Relu"),
                     helper.make_node("Reshape", ["r", "shape"], ["y"], name="/Reshape")],
                    [tensor("x", TensorProto.FLOAT, [2, 3, 4]),
                     tensor("shape", TensorProto.INT64, [2])],
                    [tensor("y", TensorProto.FLOAT, [None, None])])


X = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)


# ----- the Backend interface ---------------------------------------------------------------


def test_graphc_backend_is_the_module_and_runs_a_model_like_onnxruntime():
    assert graphc.backend.prepare is prepare and "backend" in dir(graphc)
    model = reshape_model()
    feeds = {"x": X, "shape": np.array([4, 6], np.int64)}
    rep = prepare(model)
    want = run_onnxruntime(model, feeds)["y"]
    by_list = rep.run([X, feeds["shape"]])
    by_dict = rep.run(feeds)
    assert by_list._fields == ("y",)
    for got in (by_list.y, by_dict[0], run_model(model, [X, feeds["shape"]])[0]):
        assert got.dtype == np.float32 and got.shape == (4, 6)
        np.testing.assert_array_equal(got, want)
    # Other values for the bound input: the graph is specialized again.
    np.testing.assert_array_equal(rep.run([X, np.array([3, 8], np.int64)])[0],
                                  np.maximum(X, 0).reshape(3, 8))


def test_run_node_and_supports_device():
    node = helper.make_node("Pow", ["a", "b"], ["c"])
    a, b = np.float32([[1.5, 2.0, 3.0]]), np.int64([2, 3, -1])
    (c,) = run_node(node, [a, b])
    np.testing.assert_allclose(c, np.float32([[2.25, 8.0, 1 / 3]]), rtol=1e-6)
    assert c.dtype == np.float32
    (c,) = run_node(node, {"a": np.int64([2, 3]), "b": np.float32([0.5, 2.0])}, opset_version=15)
    np.testing.assert_array_equal(c, np.int64([1, 9]))  # int ** float truncates, as ONNX says
    assert supports_device("CPU") and not supports_device("CUDA")
    assert GraphcBackend.is_compatible(reshape_model())
    assert graphc.backend.is_compatible(reshape_model())
    det = model_of([helper.make_node("Det", ["x"], ["y"])],
                   [tensor("x", TensorProto.FLOAT, [2, 2])], [tensor("y", TensorProto.FLOAT, [])])
    assert not GraphcBackend.is_compatible(det)
    assert not GraphcBackend.supports_device("no-such-device")
    with pytest.raises(UsageError, match=r"graphc runs on the CPU only; expected 'CPU', got "
                                         r"'CUDA'"):
        prepare(reshape_model(), "CUDA")


def test_wrong_number_of_inputs_is_refused():
    with pytest.raises(UsageError, match=r"the number of inputs does not match the model; "
                                         r"expected 2 \(x, shape\), got 1"):
        prepare(reshape_model()).run([X])


def test_symbolic_batch_follows_the_inputs():
    model = model_of([helper.make_node("Softmax", ["x"], ["y"], axis=-1)],
                     [tensor("x", TensorProto.FLOAT, ["N", 5])],
                     [tensor("y", TensorProto.FLOAT, ["N", 5])])
    rep = prepare(model)
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 5)).astype(np.float32)
        got = rep.run([x])[0]
        np.testing.assert_allclose(got, run_onnxruntime(model, {"x": x})["y"], rtol=1e-6)


def test_uint32_arithmetic_runs_like_onnxruntime():
    model = model_of([helper.make_node("Mul", ["a", "b"], ["c"])],
                     [tensor("a", TensorProto.UINT32, [3]), tensor("b", TensorProto.UINT32, [3])],
                     [tensor("c", TensorProto.UINT32, [3])])
    feeds = {"a": np.uint32([4000000000, 7, 3]), "b": np.uint32([2, 6, 5])}
    got = prepare(model).run(feeds)[0]
    assert got.dtype == np.uint32
    np.testing.assert_array_equal(got, run_onnxruntime(model, feeds)["c"])  # wraps around


# ----- inputs bound to values --------------------------------------------------------------


def test_run_onnx_binds_the_shape_it_is_fed():
    got = run_onnx(reshape_model(), {"x": X, "shape": np.array([-1, 4], np.int64)})
    np.testing.assert_array_equal(got["y"], np.maximum(X, 0).reshape(-1, 4))


def test_without_a_value_the_refusal_names_the_input_and_the_option():
    with pytest.raises(GraphcError) as info:
        from_onnx(reshape_model())
    text = str(info.value)
    assert text.startswith("node '/Reshape' (Reshape): Reshape needs a constant shape input; "
                           "expected an int64 initializer, got graph input 'shape'.")
    assert "--bind shape=V1,V2,..." in text and "bind={'shape': values}" in text


def test_from_onnx_bind_makes_the_input_a_constant():
    g = from_onnx(reshape_model(), bind={"shape": [6, 4]})
    assert g.inputs == ["x"] and g.op("shape") == "Const"
    np.testing.assert_array_equal(run(g, {"x": X})["y"], np.maximum(X, 0).reshape(6, 4))
    assert "bound graph input 'shape' = [6, 4]; graphc's shapes are static" in \
        g.meta["import_notes"]


@pytest.mark.parametrize(("bind", "message"), [
    ({"shap": [6, 4]}, r"bind: unknown graph input 'shap'; expected one of 'shape', 'x', got "
                       r"'shap'\. Did you mean 'shape'\?"),
    ({"shape": [6, 4, 1]}, r"graph input 'shape' has another size than its value; expected 2 "
                           r"value\(s\) for shape \(2,\), got 3 value\(s\)"),
    ({"shape": [6.5, 4]}, r"graph input 'shape' holds int64, and a value does not fit"),
])
def test_bad_bind_values_are_refused(bind, message):
    with pytest.raises(UsageError, match=message):
        from_onnx(reshape_model(), bind=bind)


def test_pad_and_reduce_settings_fed_as_inputs():
    nodes = [helper.make_node("Pad", ["x", "pads", "value"], ["p"], mode="constant"),
             helper.make_node("ReduceSum", ["p", "axes"], ["y"], keepdims=0)]
    model = model_of(nodes, [tensor("x", TensorProto.FLOAT, [2, 3]),
                             tensor("pads", TensorProto.INT64, [4]),
                             tensor("value", TensorProto.FLOAT, []),
                             tensor("axes", TensorProto.INT64, [1])],
                     [tensor("y", TensorProto.FLOAT, [3])], opset=18)
    feeds = {"x": X[0, :2, :3].copy(), "pads": np.int64([1, 0, 0, 2]),
             "value": np.float32(0.5), "axes": np.int64([1])}
    got = run_onnx(model, feeds)["y"]
    np.testing.assert_allclose(got, run_onnxruntime(model, feeds)["y"], rtol=1e-6)
    # By hand: rows padded with 2 values 0.5 on the right, one padded row of 5 x 0.5 on top.
    np.testing.assert_allclose(got, [2.5, *(feeds["x"].sum(axis=1) + 1.0)], rtol=1e-6)


def test_compile_bind_writes_a_file_without_the_input(tmp_path, capsys):
    source, out = tmp_path / "reshape.onnx", tmp_path / "out.onnx"
    onnx.save(reshape_model(), str(source))
    assert main(["compile", str(source), "-o", str(out), "--bind", "shape=6,4", "-v",
                 "--verify"]) == 0
    printed = capsys.readouterr().out
    assert "  import       bound graph input 'shape' = [6, 4]; graphc's shapes are static" in \
        printed and "verify       ok" in printed
    compiled = onnx.load(str(out))
    assert [i.name for i in compiled.graph.input] == ["x"]
    np.testing.assert_array_equal(run_onnxruntime(compiled, {"x": X})["y"],
                                  np.maximum(X, 0).reshape(6, 4))
    assert main(["compile", str(source), "-o", str(out)]) == 1
    line = testing.one_error_line(capsys.readouterr().err)
    assert "got graph input 'shape'" in line and "--bind shape=" in line


@pytest.mark.parametrize(("argv", "message"), [
    (["cnn", "--bind", "a=1"], "--bind: graph inputs are bound in an .onnx MODEL only; "
                               "expected an .onnx file, got 'cnn'."),
    (["{model}", "--bind", "shape=a,b"], "--bind: the value is not a graph input name and "
                                         "numbers; expected NAME=V1,V2,... (NAME= for no "
                                         "values), got 'shape=a,b'."),
    (["{model}", "--bind", "shape=3,8", "--bind", "shape=8,3"],
     "--bind: the graph input is bound twice; expected one --bind per input, got 'shape'."),
])
def test_compile_bind_usage_errors(tmp_path, capsys, argv, message):
    source = tmp_path / "reshape.onnx"
    onnx.save(reshape_model(), str(source))
    argv = [a.format(model=source) for a in argv]
    assert main(["compile", *argv, "-o", str(tmp_path / "out.onnx")]) == 2
    assert testing.one_error_line(capsys.readouterr().err) == f"graphc: error: {message}"
    assert not (tmp_path / "out.onnx").exists()


# ----- old opsets --------------------------------------------------------------------------


def old_model(opset: int) -> onnx.ModelProto:
    """BatchNormalization (its opset-9 form) and a Dropout, as the ONNX model zoo's files have."""
    rng = np.random.default_rng(3)
    inits = [helper.make_tensor(name, TensorProto.FLOAT, [3], vals)
             for name, vals in (("s", rng.uniform(0.5, 1.5, 3)), ("b", rng.standard_normal(3)),
                                ("m", rng.standard_normal(3)), ("v", rng.uniform(0.5, 2, 3)))]
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["bn"],
                              epsilon=1e-3),
             # Dropout's ratio is an attribute up to opset 10, an input from 12.
             helper.make_node("Dropout", ["bn"], ["y"], **({"ratio": 0.3} if opset < 12 else {}))]
    return model_of(nodes, [tensor("x", TensorProto.FLOAT, [2, 3, 4])],
                    [tensor("y", TensorProto.FLOAT, [2, 3, 4])], opset=opset, inits=inits)


@pytest.mark.parametrize("opset", [7, 9, 12])
def test_old_opsets_are_upgraded_and_run_like_onnxruntime(opset):
    model = old_model(opset)
    g = from_onnx(model)
    assert g.meta["upgraded_from"] == opset and g.meta["opset"] == 13
    assert g.meta["import_notes"][0] == (f"upgraded opset {opset} to opset 13 "
                                         "(onnx.version_converter)")
    np.testing.assert_allclose(run_onnx(model, {"x": X})["y"],
                               run_onnxruntime(model, {"x": X})["y"], rtol=1e-5, atol=1e-6)


def test_what_the_converter_cannot_convert_is_refused_with_its_message():
    model = model_of([helper.make_node("NoSuchOp", ["x"], ["y"])],
                     [tensor("x", TensorProto.FLOAT, [2])], [tensor("y", TensorProto.FLOAT, [2])],
                     opset=9)
    with pytest.raises(GraphcError, match=r"ONNX graph 'm': opset 9 cannot be upgraded to opset "
                                          r"13: .*has no registered schema.*; expected a model "
                                          r"onnx.version_converter converts to 13, got opset 9"):
        from_onnx(model)


def test_compile_verbose_reports_the_upgrade(tmp_path, capsys):
    source = tmp_path / "old.onnx"
    onnx.save(old_model(9), str(source))
    assert main(["compile", str(source), "-o", str(tmp_path / "new.onnx"), "-v"]) == 0
    assert "  import       upgraded opset 9 to opset 13 (onnx.version_converter)" in \
        capsys.readouterr().out


# ----- LayerNormalization's Mean and InvStdDev ---------------------------------------------


def scale_of(axis: int) -> np.ndarray:
    shape = (2, 3, 4)[axis:]
    return np.linspace(0.5, 1.5, int(np.prod(shape))).reshape(shape)


def layernorm_graph(axis: int, dtype: type = np.float32, stash: int = 1) -> Graph:
    g = Graph("ln")
    x = g.add_input("x", (2, 3, 4), dtype)
    g.add_const("scale", scale_of(axis).astype(dtype))
    y = g.add_node("LayerNormalization", [x, Value("scale")],
                   {"axis": axis, "stash_type": stash},
                   name="y")
    g.outputs = [y, Value("y", 1), Value("y", 2)]
    return g


@pytest.mark.parametrize("axis", [1, -1])
def test_layernorm_mean_and_inv_std_dev_match_onnxruntime_and_hand_numbers(axis):
    g = layernorm_graph(axis)
    ours = run(g, {"x": X})
    theirs = run_onnxruntime(g, {"x": X})
    axes = tuple(range(axis % 3, 3))
    mean = X.astype(np.float64).mean(axis=axes, keepdims=True)
    inv = 1 / np.sqrt(X.astype(np.float64).var(axis=axes, keepdims=True) + 1e-5)
    for got in (list(ours.values()), list(theirs.values())):
        assert got[1].shape == got[2].shape == mean.shape and got[1].dtype == np.float32
        np.testing.assert_allclose(got[1], mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[2], inv, rtol=1e-5)
        np.testing.assert_allclose(got[0], (X - mean) * inv * scale_of(axis), rtol=1e-4,
                                   atol=1e-5)


@pytest.mark.parametrize("outputs", [(1,), (2,), (0, 1, 2)])
def test_layernorm_statistics_gradients_match_finite_differences(outputs):
    g = layernorm_graph(1, np.float64, stash=11)
    rng = np.random.default_rng(5)
    terms = []
    for k in outputs:
        r = g.add_const(f"r{k}", rng.standard_normal(g.type_of(Value("y", k)).shape))
        terms.append(g.add_node("ReduceSum", [g.add_node("Mul", [Value("y", k), r])],
                                {"keepdims": 0}))
    loss = terms[0]
    for term in terms[1:]:
        loss = g.add_node("Add", [loss, term])
    g.outputs = [g.add_node("Identity", [loss], name="loss")]
    x = X.astype(np.float64)
    grads = run(gradient_graph(g, output="loss", wrt=["x"]), {"x": x})["dloss/dx"]
    h = 1e-6
    for index in [(0, 0, 0), (0, 1, 3), (1, 2, 1)]:
        up, down = x.copy(), x.copy()
        up[index] += h
        down[index] -= h
        fd = (run(g, {"x": up})["loss"] - run(g, {"x": down})["loss"]) / (2 * h)
        assert abs(grads[index] - fd) <= 1e-6 * max(1.0, abs(fd)), (index, grads[index], fd)


# ----- settings the node tests needed --------------------------------------------------------


@pytest.mark.parametrize("reduction", ["max", "min"])
def test_scatter_max_and_min_run_like_onnxruntime_from_opset_18(reduction):
    g = Graph("scatter")
    data = g.add_input("data", (2, 3), np.float32)
    indices = g.add_const("indices", np.array([[0, 2, 0], [0, 0, 1]], np.int64))
    updates = g.add_input("updates", (2, 3), np.float32)
    g.outputs = [g.add_node("ScatterElements", [data, indices, updates],
                            {"axis": 1, "reduction": reduction}, name="y")]
    feeds = {"data": np.float32([[1, 5, 3], [4, 0, 6]]),
             "updates": np.float32([[2, 7, 9], [8, -1, 2]])}
    # Row 0: column 0 combines 1 with 2 and 9, column 2 combines 3 with 7; row 1: column 0
    # combines 4 with 8 and -1, column 1 combines 0 with 2.
    want = {"max": [[9, 5, 7], [8, 2, 6]], "min": [[1, 5, 3], [-1, 0, 6]]}[reduction]
    np.testing.assert_array_equal(run(g, feeds)["y"], np.float32(want))
    np.testing.assert_array_equal(run_onnxruntime(to_onnx(g, 18), feeds)["y"], np.float32(want))
    with pytest.raises(ExportError, match=rf"ScatterElements reduction '{reduction}' needs a "
                                          r"newer opset; expected opset >= 18, got 17"):
        to_onnx(g, 17)


def test_reduce_max_of_bool_is_any_from_opset_20():
    g = Graph("any")
    x = g.add_input("x", (2, 3), np.bool_)
    axes = g.add_const("axes", np.array([1], np.int64))
    g.outputs = [g.add_node("ReduceMax", [x, axes], {"keepdims": 0}, name="y")]
    feeds = {"x": np.array([[False, True, False], [False, False, False]])}
    np.testing.assert_array_equal(run(g, feeds)["y"], [True, False])
    np.testing.assert_array_equal(run_onnxruntime(to_onnx(g, 20), feeds)["y"], [True, False])
    with pytest.raises(ExportError, match=r"ReduceMax of bool needs opset 20 or newer"):
        to_onnx(g, 18)
