"""ONNX import: PyTorch-shaped models at opsets 13..newest, zoo round trips, refusals, run_onnx.

The models are written with onnx.helper in the shapes PyTorch's exporter (torch.onnx.export,
dynamo=False) emits: node names like ``/conv1/Conv``, values like ``/conv1/Conv_output_0``,
parameters like ``conv1.weight``, input ``input``, output ``output``, batch ``batch_size``. The
reference is always onnxruntime running the original model.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphc
from graphc import nn
from graphc.errors import GraphcError, OpError, UsageError
from graphc.interpret import run
from graphc.ir import CONST
from graphc.models import MODELS, load
from graphc.onnxio.export import max_opset, to_bytes, to_onnx
from graphc.onnxio.importer import from_onnx, newest_opset, run_onnx, supported_ops
from graphc.onnxio.load import file_bytes
from graphc.onnxio.runtime import run_onnxruntime

NEWEST = newest_opset()
BATCH = 2


# ----- model builders (PyTorch's shapes, written with onnx.helper) ---------------------------


def rand(shape: tuple[int, ...], seed: int, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


def init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def constant(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [f"{name}_output_0"], name=name,
                            value=numpy_helper.from_array(np.asarray(array)))


def make(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], opset: int,
         in_shape: list, out_shape: list, name: str = "main_graph",
         outputs: tuple[str, ...] = ("output",)) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, out_shape) for o in outputs],
        inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=min(helper.find_min_ir_version_for(
                                 [helper.make_opsetid("", opset)]), 10),
                             producer_name="pytorch", producer_version="2.13.0")


def cnn_model(opset: int) -> onnx.ModelProto:
    """Conv(+bias) -> BatchNorm -> Relu -> MaxPool -> Dropout(ratio, False) -> Flatten -> Gemm."""
    bn_attrs = {"epsilon": 9.999999747378752e-06, "momentum": 0.8999999761581421}
    if opset >= 14:
        bn_attrs["training_mode"] = 0
    nodes = [
        helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"],
                         ["/conv1/Conv_output_0"], name="/conv1/Conv", dilations=[1, 1],
                         group=1, kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("BatchNormalization",
                         ["/conv1/Conv_output_0", "bn1.weight", "bn1.bias", "bn1.running_mean",
                          "bn1.running_var"], ["/bn1/BatchNormalization_output_0"],
                         name="/bn1/BatchNormalization", **bn_attrs),
        helper.make_node("Relu", ["/bn1/BatchNormalization_output_0"], ["/Relu_output_0"],
                         name="/Relu"),
        helper.make_node("MaxPool", ["/Relu_output_0"], ["/pool/MaxPool_output_0"],
                         name="/pool/MaxPool", ceil_mode=0, dilations=[1, 1],
                         kernel_shape=[2, 2], pads=[0, 0, 0, 0], strides=[2, 2]),
        constant("/drop/Constant", np.array(0.25, np.float32)),
        constant("/drop/Constant_1", np.array(False)),
        helper.make_node("Dropout", ["/pool/MaxPool_output_0", "/drop/Constant_output_0",
                                     "/drop/Constant_1_output_0"],
                         ["/drop/Dropout_output_0", "/drop/Dropout_output_1"],
                         name="/drop/Dropout"),
        helper.make_node("Flatten", ["/drop/Dropout_output_0"], ["/Flatten_output_0"],
                         name="/Flatten", axis=1),
        helper.make_node("Gemm", ["/Flatten_output_0", "fc.weight", "fc.bias"], ["output"],
                         name="/fc/Gemm", alpha=1.0, beta=1.0, transB=1),
    ]
    inits = [
        init("conv1.weight", rand((4, 1, 3, 3), 1)), init("conv1.bias", rand((4,), 2)),
        init("bn1.weight", rand((4,), 3, 0.5, 1.5)), init("bn1.bias", rand((4,), 4)),
        init("bn1.running_mean", rand((4,), 5)), init("bn1.running_var", rand((4,), 6, 0.5, 2)),
        init("fc.weight", rand((10, 64), 7)), init("fc.bias", rand((10,), 8)),
    ]
    return make(nodes, inits, opset, ["batch_size", 1, 8, 8], ["batch_size", 10])


def linear_model(opset: int) -> onnx.ModelProto:
    """Linear as MatMul(x, W^T) + Add(bias, .), a scalar Constant, a constant-shape Reshape."""
    reshape_attrs = {"allowzero": 0} if opset >= 14 else {}
    nodes = [
        helper.make_node("MatMul", ["input", "onnx::MatMul_21"], ["/fc1/MatMul_output_0"],
                         name="/fc1/MatMul"),
        helper.make_node("Add", ["fc1.bias", "/fc1/MatMul_output_0"], ["/fc1/Add_output_0"],
                         name="/fc1/Add"),
        helper.make_node("LeakyRelu", ["/fc1/Add_output_0"], ["/act/LeakyRelu_output_0"],
                         name="/act/LeakyRelu", alpha=0.1),
        helper.make_node("Constant", [], ["/Constant_output_0"], name="/Constant",
                         value_float=0.5),
        helper.make_node("Mul", ["/act/LeakyRelu_output_0", "/Constant_output_0"],
                         ["/Mul_output_0"], name="/Mul"),
        constant("/Constant_1", np.array([-1, 18], np.int64)),
        helper.make_node("Reshape", ["/Mul_output_0", "/Constant_1_output_0"],
                         ["/Reshape_output_0"], name="/Reshape", **reshape_attrs),
        helper.make_node("Gemm", ["/Reshape_output_0", "fc2.weight", "fc2.bias"], ["output"],
                         name="/fc2/Gemm", alpha=1.0, beta=1.0, transB=1),
    ]
    inits = [
        init("fc1.bias", rand((6,), 11)), init("onnx::MatMul_21", rand((8, 6), 12)),
        init("fc2.weight", rand((5, 18), 13)), init("fc2.bias", rand((5,), 14)),
    ]
    return make(nodes, inits, opset, ["batch_size", 3, 8], ["batch_size", 5])


def norm_model(opset: int) -> onnx.ModelProto:
    """Conv -> GroupNormalization (from opset 18; per group before 21) -> LayerNormalization."""
    nodes = [helper.make_node("Conv", ["input", "conv.weight", "conv.bias"],
                              ["/conv/Conv_output_0"], name="/conv/Conv", kernel_shape=[1, 1])]
    inits = [init("conv.weight", rand((4, 4, 1, 1), 21)), init("conv.bias", rand((4,), 22))]
    last = "/conv/Conv_output_0"
    if opset >= 18:
        per = 2 if opset < 21 else 4
        nodes.append(helper.make_node("GroupNormalization", [last, "gn.weight", "gn.bias"],
                                      ["/gn/GroupNormalization_output_0"],
                                      name="/gn/GroupNormalization", epsilon=1e-5,
                                      num_groups=2))
        inits += [init("gn.weight", rand((per,), 23, 0.5, 1.5)), init("gn.bias", rand((per,), 24))]
        last = "/gn/GroupNormalization_output_0"
    nodes.append(helper.make_node("LayerNormalization", [last, "ln.weight", "ln.bias"],
                                  ["output"], name="/ln/LayerNormalization", axis=-1,
                                  epsilon=9.999999747378752e-06))
    inits += [init("ln.weight", rand((3,), 25, 0.5, 1.5)), init("ln.bias", rand((3,), 26))]
    return make(nodes, inits, opset, ["batch_size", 4, 3, 3], ["batch_size", 4, 3, 3])


BUILDERS = {"cnn": cnn_model, "linear": linear_model, "norm": norm_model}
IN_SHAPES = {"cnn": (1, 8, 8), "linear": (3, 8), "norm": (4, 3, 3)}
CASES = [("cnn", o) for o in (13, 15, 17, 18, 21, NEWEST)]
CASES += [("linear", o) for o in (13, 17, 21, NEWEST)]
CASES += [("norm", o) for o in (17, 18, 21, NEWEST)]


def feeds_for(kind: str, batch: int = BATCH, seed: int = 0) -> dict[str, np.ndarray]:
    return {"input": rand((batch, *IN_SHAPES[kind]), 100 + seed, -2.0, 2.0)}


def assert_close(got: dict, want: dict, rel: float) -> None:
    assert list(got) == list(want)
    for name in want:
        assert got[name].shape == want[name].shape, name
        scale = max(1.0, float(np.max(np.abs(want[name]))))
        diff = float(np.max(np.abs(got[name].astype(np.float64) - want[name])))
        assert diff <= rel * scale, (name, diff)


def onnx_value_names(model: onnx.ModelProto) -> set[str]:
    g = model.graph
    names = {i.name for i in g.input} | {t.name for t in g.initializer}
    return names | {o for n in g.node for o in n.output if o}


# ----- PyTorch-shaped models at every opset --------------------------------------------------


@pytest.mark.parametrize(("kind", "opset"), CASES)
def test_import_matches_onnxruntime_and_round_trips(kind, opset):
    model = BUILDERS[kind](opset)
    if not (kind == "norm" and 18 <= opset < 21):
        # The checker calls GroupNormalization-18 deprecated; onnxruntime still runs it.
        onnx.checker.check_model(model, full_check=True)
    feeds = feeds_for(kind)
    want = run_onnxruntime(model, feeds)

    g = from_onnx(model, batch=BATCH)
    assert g.name == "main_graph"
    assert g.inputs == ["input"] and g.output_names() == ["output"]
    assert g.meta["dynamic_batch"] is True
    assert_close(run(g, feeds), want, 1e-5)

    for export_opset in sorted({17, max(17, min(opset, max_opset()))}):
        exported = to_onnx(g, export_opset)
        onnx.checker.check_model(exported, full_check=True)
        assert [o.name for o in exported.graph.output] == ["output"]
        assert exported.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
        assert_close(run_onnxruntime(exported, feeds), want, 1e-6)
        # Every initializer and every value a node uses keeps its name.
        used = {i for n in model.graph.node for i in n.input if i} | {"output"}
        kept = onnx_value_names(exported)
        assert used - {"/drop/Constant_1_output_0"} <= kept, sorted(used - kept)
        # The dynamic batch survives: another batch size runs too.
        other = feeds_for(kind, batch=3, seed=1)
        assert_close(run_onnxruntime(exported, other), run_onnxruntime(model, other), 1e-6)


def test_cnn_import_structure_and_parameters():
    g = from_onnx(cnn_model(13))
    assert [g.op(n) for n in g.op_nodes()] == [
        "Conv", "BatchNormalization", "Relu", "MaxPool", "Dropout", "Flatten", "Gemm"]
    assert "/conv1/Conv_output_0" in g.nx and g.op("/conv1/Conv_output_0") == "Conv"
    assert g.attrs("output") == {"alpha": 1.0, "beta": 1.0, "transB": 1}
    assert g.params() == ["conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias", "fc.weight",
                          "fc.bias"]
    for name in ("bn1.running_mean", "bn1.running_var", "/drop/Constant_output_0",
                 "/drop/Constant_1_output_0"):
        assert g.op(name) == CONST and not g.nx.nodes[name]["trainable"]
    assert g.type_of(graphc.Value("input")).shape == (1, 1, 8, 8)
    mask = [line for line in str(g).splitlines() if "Dropout(" in line][0]
    assert mask.startswith("  %/drop/Dropout_output_0, %/drop/Dropout_output_0.mask = ")


def test_linear_import_keeps_constants_and_matmul_add():
    g = from_onnx(linear_model(17), batch=4)
    assert [g.op(n) for n in g.op_nodes()] == ["MatMul", "Add", "LeakyRelu", "Mul", "Reshape",
                                               "Gemm"]
    assert g.const_value(graphc.Value("/Constant_output_0")).dtype == np.float32
    assert g.const_value(graphc.Value("/Constant_1_output_0")).tolist() == [-1, 18]
    assert not g.nx.nodes["/Constant_output_0"]["trainable"]
    assert g.nx.nodes["onnx::MatMul_21"]["trainable"]
    assert g.type_of(graphc.Value("output")).shape == (4, 5)


def test_group_norm_18_becomes_per_channel():
    g = from_onnx(norm_model(18))
    scale = g.const_value(graphc.Value("gn.weight"))
    groups = numpy_helper.to_array(norm_model(18).graph.initializer[2])
    np.testing.assert_array_equal(scale, np.repeat(groups, 2))
    assert g.nx.nodes["gn.weight"]["trainable"]


def test_group_norm_18_shared_scale_gets_a_new_name():
    model = norm_model(18)
    graph = model.graph
    graph.node.append(helper.make_node("Identity", ["gn.weight"], ["extra"], name="/extra"))
    graph.output.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [2]))
    feeds = feeds_for("norm")
    g = from_onnx(model, batch=BATCH)
    assert g.type_of(graphc.Value("gn.weight")).shape == (2,)
    assert "gn.weight_converted" in g.nx
    assert_close(run(g, feeds), run_onnxruntime(model, feeds), 1e-5)


def test_group_norm_18_computed_scale_is_refused():
    model = norm_model(18)
    model.graph.node.insert(0, helper.make_node("Neg", ["gn.weight"], ["neg"], name="/neg"))
    model.graph.node[2].input[1] = "neg"
    with pytest.raises(OpError, match=r"node '/gn/GroupNormalization' \(GroupNormalization\):"
                                      r" GroupNormalization-18 scale is per group"):
        from_onnx(model)


def test_old_exporter_initializers_listed_as_inputs_are_constants():
    model = cnn_model(13)
    for tensor in model.graph.initializer:
        model.graph.input.append(helper.make_tensor_value_info(
            tensor.name, tensor.data_type, list(tensor.dims)))
    g = from_onnx(model)
    assert g.inputs == ["input"]
    assert g.op("conv1.weight") == CONST


def test_identity_of_an_initializer_becomes_a_constant():
    # PyTorch shares equal buffers through Identity: bn1.running_var = Identity(bn1.weight).
    model = cnn_model(13)
    graph = model.graph
    ones = np.ones(4, np.float32)
    for tensor in graph.initializer:
        if tensor.name in ("bn1.weight", "bn1.running_var"):
            tensor.CopyFrom(init(tensor.name, ones))
    keep = [t for t in graph.initializer if t.name != "bn1.running_var"]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    graph.node.insert(0, helper.make_node("Identity", ["bn1.weight"], ["bn1.running_var"],
                                          name="Identity_0"))
    feeds = feeds_for("cnn")
    g = from_onnx(model, batch=BATCH)
    assert g.op("bn1.running_var") == CONST
    assert not g.nx.nodes["bn1.running_var"]["trainable"]
    assert g.nx.nodes["bn1.weight"]["trainable"]
    assert_close(run(g, feeds), run_onnxruntime(model, feeds), 1e-5)


def test_nodes_out_of_order_are_sorted():
    model = cnn_model(17)
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(reversed(nodes))
    feeds = feeds_for("cnn")
    assert_close(run(from_onnx(model, batch=BATCH), feeds), run_onnxruntime(cnn_model(17),
                                                                               feeds), 1e-5)


def test_used_dropout_mask_is_the_second_output():
    model = cnn_model(13)
    model.graph.output.append(helper.make_tensor_value_info(
        "/drop/Dropout_output_1", TensorProto.BOOL, ["batch_size", 4, 4, 4]))
    result = run_onnx(model, feeds_for("cnn"))
    assert list(result) == ["output", "/drop/Dropout_output_1"]
    assert result["/drop/Dropout_output_1"].dtype == np.bool_
    assert result["/drop/Dropout_output_1"].all()


def test_unused_maxpool_indices_are_ignored_and_used_ones_imported():
    model = cnn_model(17)
    model.graph.node[3].output.append("/pool/MaxPool_output_1")
    feeds = feeds_for("cnn")
    assert_close(run(from_onnx(model, batch=BATCH), feeds), run_onnxruntime(model, feeds), 1e-5)
    model.graph.output.append(helper.make_tensor_value_info(
        "/pool/MaxPool_output_1", TensorProto.INT64, None))
    got, want = run_onnx(model, feeds), run_onnxruntime(model, feeds)
    assert list(got) == list(want) == ["output", "/pool/MaxPool_output_1"]
    np.testing.assert_array_equal(got["/pool/MaxPool_output_1"], want["/pool/MaxPool_output_1"])


def test_pad_18_axes_are_folded_into_pads():
    nodes = [
        constant("/Constant", np.array([1, 2, 0, 1], np.int64)),
        constant("/Constant_1", np.array([-1, 2], np.int64)),
        helper.make_node("Pad", ["input", "/Constant_output_0", "", "/Constant_1_output_0"],
                         ["output"], name="/pad/Pad", mode="reflect"),
    ]
    model = make(nodes, [], 18, [1, 2, 3, 4], [1, 2, 4, 6])
    feeds = {"input": rand((1, 2, 3, 4), 3)}
    g = from_onnx(model)
    assert g.const_value(graphc.Value("/Constant_output_0")).tolist() == [0, 0, 2, 1, 0, 0, 1, 0]
    assert_close(run(g, feeds), run_onnxruntime(model, feeds), 1e-6)


def test_heaviside_is_read_back_from_greater_or_equal_and_cast():
    b = graphc.GraphBuilder("step")
    x = b.input("x", (2, 3))
    b.output(nn.heaviside(x * 2.0, 0.25, name="step"), "y")
    g = b.build()
    first = to_bytes(g)
    g2 = from_onnx(first)
    assert g2.op("y") == "Heaviside" and g2.attrs("y") == {"threshold": 0.25}
    assert to_bytes(g2) == first


def test_greater_or_equal_and_cast_outside_the_step_function_import_as_themselves():
    # A lone GreaterOrEqual (bool output), and a Cast of a comparison to another type.
    nodes = [constant("/Constant", np.array(0.0, np.float32)),
             helper.make_node("GreaterOrEqual", ["input", "/Constant_output_0"], ["output"],
                              name="/ge"),
             helper.make_node("GreaterOrEqual", ["/Constant_output_0", "input"], ["/le"],
                              name="/le"),
             helper.make_node("Cast", ["/le"], ["mask"], name="/cast", to=TensorProto.INT64)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "input", TensorProto.FLOAT, [2, 3])], [
            helper.make_tensor_value_info("output", TensorProto.BOOL, [2, 3]),
            helper.make_tensor_value_info("mask", TensorProto.INT64, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    g = from_onnx(model)
    assert [g.op(n) for n in g.op_nodes()] == ["GreaterOrEqual", "GreaterOrEqual", "Cast"]
    x = np.array([[-1.0, 0.0, 0.5], [2.0, -0.0, -3.0]], np.float32)
    got, want = run(g, {"input": x}), run_onnxruntime(model, {"input": x})
    assert list(got) == list(want) == ["output", "mask"]
    for name in want:
        assert got[name].dtype == want[name].dtype
        np.testing.assert_array_equal(got[name], want[name])


def test_output_that_is_an_input_runs_under_its_onnx_name():
    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["output"], name="/Relu")], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("input", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.array([-1.0, 2.0], np.float32)
    result = run_onnx(model, {"input": x})
    assert list(result) == ["output", "input"]
    np.testing.assert_array_equal(result["input"], x)
    # An input keeps its name, so the IR calls the output that passes it through input_out.
    assert from_onnx(model).output_names() == ["output", "input_out"]


def test_output_that_is_a_constant_keeps_its_name_unless_ops_use_it():
    nodes = [helper.make_node("Constant", [], ["shape"], name="/Constant", value_ints=[2, 1]),
             helper.make_node("Reshape", ["input", "shape"], ["output"], name="/Reshape"),
             helper.make_node("Constant", [], ["scale"], name="/Constant_1", value_float=2.0)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [2, 1]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
         helper.make_tensor_value_info("scale", TensorProto.FLOAT, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    g = from_onnx(model)
    assert g.output_names() == ["output", "shape_out", "scale"]
    x = np.array([-1.0, 2.0], np.float32)
    got = run_onnxruntime(to_onnx(g), {"input": x})
    assert list(got) == ["output", "shape_out", "scale"]
    for a, b in zip(got.values(), run_onnxruntime(model, {"input": x}).values(), strict=True):
        np.testing.assert_array_equal(a, b)


# ----- the zoo: export -> import -> export ---------------------------------------------------


def _lowered_to_several_nodes(kind: str) -> graphc.Graph:
    b = graphc.GraphBuilder(kind, seed=2)
    x = b.input("x", (2, 4, 5, 5))
    if kind == "gelu":
        y = b.op("Gelu", x)
    elif kind == "gelu_tanh":
        y = b.op("Gelu", x, approximate="tanh")
    elif kind == "group_norm":
        y = nn.group_norm(x, 2)
    elif kind == "mirror_pad":
        y = nn.pad(x, [0, 0, 1, 2, 0, 0, 2, 1], mode="symmetric")
    else:
        y = b.op("Im2Col", x, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    b.output(y, "y")
    return b.build()


@pytest.mark.parametrize("kind", ["gelu", "gelu_tanh", "group_norm", "mirror_pad", "im2col"])
def test_ops_lowered_to_several_nodes_round_trip_byte_identical(kind):
    """Gelu below opset 20, GroupNormalization below 21, symmetric Pad and Im2Col become
    several ONNX nodes; each is named after its output, as the importer names it back."""
    g = _lowered_to_several_nodes(kind)
    first = to_bytes(g, 17)
    assert len(onnx.load_from_string(first).graph.node) > 1
    again = from_onnx(first)
    assert to_bytes(again, 17) == first
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 4, 5, 5)).astype(np.float32)}
    assert_close(run(again, feeds), run(g, feeds), 1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_zoo_round_trip_is_byte_identical(name):
    module = load(name)
    g = module.build()
    first = to_bytes(g)
    g2 = from_onnx(first)
    assert g2.inputs == g.inputs and g2.output_names() == g.output_names()
    assert to_bytes(g2) == first
    if name != "resnet18":  # equal bytes say enough; its interpreter runs take seconds
        feeds = module.example_inputs()
        # Not bit-equal on the interpreter: the file rounds float attributes (BatchNorm's
        # epsilon=1e-5) to float32, the DSL graph holds them as Python floats.
        assert_close(run(g2, feeds), run(g, feeds), 1e-6)
        assert_close(run_onnxruntime(to_bytes(g2), feeds), run_onnxruntime(first, feeds), 1e-6)
    # Only the DSL's plain constants (a fixed input x0) can become parameters on the way back.
    assert set(g.params()) <= set(g2.params())
    assert set(g2.params()) - set(g.params()) <= {"x0"}


def test_export_then_import_at_the_newest_runnable_opset():
    g = load("cnn").build()
    model = to_onnx(g, max_opset())
    feeds = load("cnn").example_inputs()
    assert_close(run(from_onnx(model), feeds), run_onnxruntime(model, feeds), 1e-5)


# ----- refusals ------------------------------------------------------------------------------


def view_model() -> onnx.ModelProto:
    """PyTorch's x.view(x.size(0), -1): Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    nodes = [
        helper.make_node("Shape", ["input"], ["/Shape_output_0"], name="/Shape"),
        constant("/Constant", np.array(0, np.int64)),
        helper.make_node("Gather", ["/Shape_output_0", "/Constant_output_0"],
                         ["/Gather_output_0"], name="/Gather", axis=0),
        constant("Constant_6", np.array([0], np.int64)),
        helper.make_node("Unsqueeze", ["/Gather_output_0", "Constant_6_output_0"],
                         ["/Unsqueeze_output_0"], name="/Unsqueeze"),
        constant("/Constant_1", np.array([-1], np.int64)),
        helper.make_node("Concat", ["/Unsqueeze_output_0", "/Constant_1_output_0"],
                         ["/Concat_output_0"], name="/Concat", axis=0),
        helper.make_node("Reshape", ["input", "/Concat_output_0"], ["output"], name="/Reshape"),
    ]
    return make(nodes, [], 13, ["batch_size", 4, 4], ["batch_size", 16])


def test_view_shape_arithmetic_folds_to_a_constant_reshape():
    model = view_model()
    g = from_onnx(model, batch=3)
    assert [g.op(n) for n in g.op_nodes()] == ["Reshape"]
    assert g.const_value(g.in_values("output")[1]).tolist() == [0, -1]
    x = np.arange(48, dtype=np.float32).reshape(3, 4, 4)
    assert_close(run(g, {"input": x}), run_onnxruntime(model, {"input": x}), 0.0)


def test_unsupported_op_names_node_and_lists_supported_ops():
    model = view_model()
    # ConstantOfShape: a tensor made from a shape (torch.zeros(x.shape)), not in the op set.
    model.graph.node[0].op_type = "ConstantOfShape"
    model.graph.node[0].name = "/ConstantOfShape"
    with pytest.raises(OpError) as info:
        from_onnx(model)
    text = str(info.value)
    assert text.startswith("node '/ConstantOfShape' (ConstantOfShape): unsupported op "
                           "'ConstantOfShape'; expected one of ")
    for op in supported_ops():
        assert repr(op) in text
    assert "Heaviside" not in text
    assert "torch.flatten" in text


def test_unsupported_attribute_is_refused():
    model = cnn_model(17)
    model.graph.node[0].attribute.append(helper.make_attribute("foo", 1))
    with pytest.raises(OpError, match=r"node '/conv1/Conv' \(Conv\): unknown attribute of Conv "
                                      r"at opset 17 'foo'; expected one of 'auto_pad', "):
        from_onnx(model)


def test_attribute_value_graphc_cannot_run_is_refused():
    # stash_type 16 is bfloat16, a type graphc does not have.
    nodes = [constant("/Constant", np.ones(3, np.float32)),
             helper.make_node("LayerNormalization", ["input", "/Constant_output_0"], ["output"],
                              name="/ln/LayerNormalization", stash_type=16)]
    model = make(nodes, [], 17, [1, 2, 3], [1, 2, 3])
    with pytest.raises(OpError, match=r"node '/ln/LayerNormalization' \(LayerNormalization\): "
                                      r"LayerNormalization stash_type names a type graphc does "
                                      r"not have; expected 1 \(f32\), 10 \(f16\) or 11 \(f64\), "
                                      r"got 16"):
        from_onnx(model)


def test_attribute_newer_than_the_opset_is_refused():
    nodes = [helper.make_node("AveragePool", ["input"], ["output"], name="/pool/AveragePool",
                              kernel_shape=[2, 2], dilations=[1, 1])]
    model = make(nodes, [], 18, [1, 1, 4, 4], [1, 1, 3, 3])
    with pytest.raises(OpError, match=r"unknown attribute of AveragePool at opset 18 "
                                      r"'dilations'"):
        from_onnx(model)


def test_op_newer_than_the_opset_is_refused():
    model = norm_model(17)
    model.opset_import[0].version = 16
    with pytest.raises(OpError, match=r"LayerNormalization does not exist at opset 16; "
                                      r"expected opset >= 17"):
        from_onnx(model)


def test_other_domain_is_refused():
    model = cnn_model(17)
    model.graph.node[2].domain = "com.microsoft"
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.raises(OpError, match=r"node '/Relu' \(Relu\): the op is not in the default "
                                      r"ONNX domain; expected domain '' \(ai.onnx\), got "
                                      r"'com.microsoft'"):
        from_onnx(model)


@pytest.mark.parametrize("opset", [NEWEST + 1])
def test_opset_out_of_range_is_refused(opset):
    # Older opsets are upgraded (tests/test_backend.py).
    model = cnn_model(13)
    model.opset_import[0].version = opset
    with pytest.raises(GraphcError, match=rf"opset {opset} cannot be imported; expected an "
                                          rf"opset from 13 to {NEWEST}"):
        from_onnx(model)


def test_batchnorm_training_mode_is_refused():
    model = cnn_model(15)
    bn = model.graph.node[1]
    bn.attribute[[a.name for a in bn.attribute].index("training_mode")].i = 1
    with pytest.raises(OpError, match=r"node '/bn1/BatchNormalization' \(BatchNormalization\): "
                                      r"BatchNormalization in training mode .* got "
                                      r"training_mode=1\. Export the model in eval mode"):
        from_onnx(model)


def test_batchnorm_13_with_statistics_outputs_is_refused():
    # PyTorch's training export at opset 13 names the running and saved statistics.
    model = cnn_model(13)
    model.graph.node[1].output.extend(
        [f"/bn1/BatchNormalization_output_{k}" for k in range(1, 5)])
    with pytest.raises(OpError, match=r"training mode .* got 5 outputs"):
        from_onnx(model)


def test_second_symbolic_dimension_is_refused():
    model = linear_model(17)
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "seq"
    with pytest.raises(GraphcError, match=r"graph input 'input': axis 1 of the input is "
                                          r"symbolic; expected a fixed size .*got 'seq'\."):
        from_onnx(model)


def test_missing_and_non_onnx_files_are_refused(tmp_path):
    with pytest.raises(GraphcError, match=r"ONNX file '.*nope.onnx' does not exist"):
        from_onnx(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf at all")
    with pytest.raises(GraphcError, match=r"ONNX file '.*bad.onnx' is not an ONNX model"):
        from_onnx(bad)
    with pytest.raises(GraphcError, match=r"is not a file"):
        from_onnx(tmp_path)
    with pytest.raises(GraphcError, match=r"the ONNX bytes are not an ONNX model"):
        from_onnx(b"\x00\x01garbage")
    with pytest.raises(UsageError, match=r"cannot import this object as ONNX"):
        from_onnx(42)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"batch must be a positive integer"):
        from_onnx(cnn_model(13), batch=0)


# ----- external data -------------------------------------------------------------------------


def save_external(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "cnn.onnx"
    onnx.save_model(cnn_model(17), path, save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    return path


def relocate(path: Path, location: str) -> None:
    model = onnx.load(path, load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(model, path)


def test_external_data_inside_the_folder_loads(tmp_path):
    path = save_external(tmp_path)
    feeds = feeds_for("cnn", batch=1)
    assert_close(run_onnx(path, feeds), run_onnxruntime(cnn_model(17), feeds), 1e-5)


@pytest.mark.parametrize("where", ["parent", "absolute", "symlink"])
def test_external_data_outside_the_folder_is_refused(tmp_path, where):
    path = save_external(tmp_path)
    outside = tmp_path / "outside.bin"
    outside.write_bytes((path.parent / "weights.bin").read_bytes())
    if where == "parent":
        location = "../outside.bin"
    elif where == "absolute":
        location = str(outside)
    else:
        os.symlink(outside, path.parent / "link.bin")
        location = "link.bin"
    relocate(path, location)
    with pytest.raises(GraphcError, match=r"tensor 'conv1.weight': external data path leaves "
                                          r"the model's folder"):
        from_onnx(path)


def test_external_data_without_a_folder_is_refused(tmp_path):
    path = save_external(tmp_path)
    model = onnx.load(path, load_external_data=False)
    with pytest.raises(GraphcError, match=r"external data but has no folder to read it from"):
        from_onnx(model)
    with pytest.raises(GraphcError, match=r"no folder"):
        from_onnx(model.SerializeToString())
    # A model loaded with its data (onnx.load's default) imports.
    assert from_onnx(onnx.load(path)).inputs == ["input"]


def test_file_bytes_read_external_data_in_and_run_from_another_folder(tmp_path, monkeypatch):
    save_external(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    data = file_bytes(Path("..") / "model" / "cnn.onnx")
    feeds = feeds_for("cnn", batch=2)
    assert_close(run_onnxruntime(data, feeds), run_onnxruntime(cnn_model(17), feeds), 1e-6)
    plain = tmp_path / "plain.onnx"
    onnx.save_model(cnn_model(17), plain)
    assert file_bytes(plain) == plain.read_bytes()


def test_missing_external_data_file_is_refused(tmp_path):
    path = save_external(tmp_path)
    (path.parent / "weights.bin").unlink()
    with pytest.raises(GraphcError, match=r"external data file does not exist"):
        from_onnx(path)


# ----- run_onnx ------------------------------------------------------------------------------


def test_run_onnx_on_a_path_and_a_model(tmp_path):
    model = cnn_model(17)
    path = tmp_path / "cnn.onnx"
    onnx.save_model(model, path)
    feeds = feeds_for("cnn", batch=3)
    want = run_onnxruntime(model, feeds)
    assert_close(graphc.run_onnx(path, feeds), want, 1e-5)
    assert_close(graphc.run_onnx(str(path), feeds), want, 1e-5)
    assert_close(graphc.run_onnx(model, feeds), want, 1e-5)
    assert_close(graphc.run_onnx(model.SerializeToString(), feeds), want, 1e-5)


def test_run_onnx_refuses_inputs_that_disagree_on_the_batch():
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"], name="/Add")], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 2]) for n in "ab"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(GraphcError, match=r"the inputs disagree on the batch size"):
        run_onnx(model, {"a": np.zeros((2, 2), np.float32), "b": np.zeros((3, 2), np.float32)})


@pytest.mark.parametrize("opset", [13, 17, 18])
@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax"])
def test_reduce_axes_attribute_or_input_imports_at_every_opset(op, opset):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    if opset < 18:
        nodes = [helper.make_node(op, ["x"], ["y"], name="r", axes=[0, 2], keepdims=0)]
        inits = []
    else:
        nodes = [helper.make_node(op, ["x", "axes"], ["y"], name="r", keepdims=0)]
        inits = [numpy_helper.from_array(np.array([0, 2], np.int64), "axes")]
    model = helper.make_model(helper.make_graph(nodes, "reduce", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", opset)])
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)}
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = run_onnx(model, feeds)["y"]
    assert got.shape == want.shape == (3,)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    g = from_onnx(model)
    assert run_onnxruntime(to_onnx(g, 17), feeds)["y"].shape == (3,)
