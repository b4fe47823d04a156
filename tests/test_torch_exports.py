"""Files exported from PyTorch (tests/data/make_torch_exports.py: opset 17, a symbolic batch)
with ``view``, ``flatten``, ``GELU``, ``interpolate`` (nearest, bilinear, bicubic),
``chunk``/``split`` and ``hardswish``: each imports, the interpreter agrees with onnxruntime and
with PyTorch's outputs stored next to the file, the inference pipeline keeps those outputs,
and the shape arithmetic is folded to constants (``x.view(x.size(0), -1)`` keeps a symbolic
batch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphc.cli import main
from graphc.interpret import run
from graphc.onnxio.export import to_onnx
from graphc.onnxio.importer import from_onnx
from graphc.onnxio.runtime import run_onnxruntime
from graphc.ops.base import rng_array
from graphc.pipeline import resolve, run_pipeline

DATA = Path(__file__).parent / "data"
NAMES = ["view", "gelu", "interpolate", "bicubic", "chunk", "hardswish", "gelu_opset20"]
# What each file holds after import: the ops PyTorch's exporter wrote for the module.
EXPECTED_OPS = {
    "view": {"Conv", "Relu", "Reshape", "Gemm"},
    "gelu": {"Flatten", "Gemm", "Div", "Erf", "Add", "Mul", "Tanh"},
    "interpolate": {"Conv", "Resize"},
    "bicubic": {"Conv", "Resize"},
    "chunk": {"Conv", "Slice", "Sigmoid", "Mul", "Max", "Add", "Split", "Sub", "Concat",
              "ReduceMean", "Unsqueeze"},
    "hardswish": {"Conv", "HardSwish", "GlobalAveragePool", "Relu", "HardSigmoid", "Mul",
                  "Flatten", "Gemm"},
    "gelu_opset20": {"Flatten", "Gemm", "Gelu"},
}
SHAPE_OPS = {"Shape", "Size", "Gather"}


def stored(name: str) -> tuple[Path, np.ndarray, np.ndarray]:
    """Return the file, its input and PyTorch's output."""
    with np.load(DATA / f"torch_{name}.npz") as npz:
        return DATA / f"torch_{name}.onnx", npz["x"], npz["y"]


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    """Within 1e-5 of the output's scale: float32 arithmetic in another order."""
    assert got.shape == want.shape and got.dtype == want.dtype
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("name", NAMES)
def test_import_matches_onnxruntime_and_pytorch(name: str) -> None:
    path, x, y = stored(name)
    g = from_onnx(path, batch=x.shape[0])
    assert {g.op(n) for n in g.op_nodes()} == EXPECTED_OPS[name]
    got = run(g, {"x": x})["y"]
    assert_close(got, run_onnxruntime(path.read_bytes(), {"x": x})["y"])
    assert_close(got, y)


@pytest.mark.parametrize("name", NAMES)
def test_inference_pipeline_keeps_pytorch_s_outputs(name: str) -> None:
    path, x, y = stored(name)
    g = from_onnx(path, batch=x.shape[0])
    compiled, reports = run_pipeline(g, resolve(None, "inference"))
    assert [r.name for r in reports] == resolve(None, "inference")
    assert len(compiled.op_nodes()) <= len(g.op_nodes())
    assert_close(run(compiled, {"x": x})["y"], y)
    assert_close(run_onnxruntime(to_onnx(compiled), {"x": x})["y"], y)


def test_shape_arithmetic_folds_to_constants_and_says_so() -> None:
    path, x, _ = stored("chunk")
    g = from_onnx(path, batch=x.shape[0])
    assert not SHAPE_OPS & {g.op(n) for n in g.op_nodes()}
    # chunk(3, dim=1) of 6 channels: Slice ends computed from Shape, as constants 2, 4, 6.
    notes = g.meta["import_notes"]
    assert [n.split(" = ")[1].split(" at")[0] for n in notes] == ["[2]", "[4]", "[6]"]
    assert notes[0].startswith("folded Shape '/Shape' -> Gather '/Gather' -> Add '/Add' -> "
                               "Div '/Div' -> Mul '/Mul' into the constant '/Mul_output_0'")
    assert notes[0].endswith("at batch 2; graphc's shapes are static")


def test_view_keeps_a_symbolic_batch() -> None:
    path, x, y = stored("view")
    g = from_onnx(path, batch=x.shape[0])
    reshape = next(n for n in g.op_nodes() if g.op(n) == "Reshape")
    shape = g.const_value(g.in_values(reshape)[1])
    np.testing.assert_array_equal(shape, [0, -1])
    assert g.meta["import_notes"] == [
        "folded Shape '/Shape' -> Gather '/Gather' -> Unsqueeze '/Unsqueeze' -> Concat "
        "'/Concat' into the constant '/Concat_output_0' = [0, -1] (0: Reshape '/Reshape' "
        "keeps the batch); graphc's shapes are static"]
    # The written file runs at another batch size: three samples, the first one repeated.
    model = to_onnx(g)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    three = np.concatenate([x, x[:1]])
    assert_close(run_onnxruntime(model, {"x": three})["y"], np.concatenate([y, y[:1]]))


def test_channel_shuffle_keeps_the_batch_as_minus_one() -> None:
    # ShuffleNet's x.view(x.size(0), groups, c // groups, h, w): the batch becomes -1, which
    # onnxruntime runs faster than 0 there (no other entry is -1).
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="/Shape"),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(
            np.array(0, np.int64))),
        helper.make_node("Gather", ["s", "zero"], ["n"], name="/Gather", axis=0),
        helper.make_node("Constant", [], ["axes"], value=numpy_helper.from_array(
            np.array([0], np.int64))),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"], name="/Unsqueeze"),
        helper.make_node("Constant", [], ["rest"], value=numpy_helper.from_array(
            np.array([2, 3, 5], np.int64))),
        helper.make_node("Concat", ["n1", "rest"], ["shape"], name="/Concat", axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["grouped"], name="/Reshape"),
        helper.make_node("Transpose", ["grouped"], ["y"], name="/Transpose", perm=[0, 2, 1, 3]),
    ]
    graph = helper.make_graph(
        nodes, "shuffle", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 2, 5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    g = from_onnx(model, batch=2)
    assert g.const_value(g.in_values("grouped")[1]).tolist() == [-1, 2, 3, 5]
    assert g.meta["import_notes"][0].endswith("= [-1, 2, 3, 5] (-1: Reshape '/Reshape' keeps "
                                              "the batch); graphc's shapes are static")
    x = np.arange(120, dtype=np.float32).reshape(4, 6, 5)
    want = x.reshape(4, 2, 3, 5).transpose(0, 2, 1, 3)
    np.testing.assert_array_equal(run_onnxruntime(to_onnx(g), {"x": x})["y"], want)


def test_compile_verbose_prints_the_folded_shapes(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path, _, _ = stored("interpolate")
    out = tmp_path / "interpolate.onnx"
    assert main(["compile", str(path), "--pipeline", "inference", "-v", "--verify",
                 "-o", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "  import       folded Shape '/Shape' -> Slice '/Slice' -> Concat '/Concat' into the " \
           "constant '/Concat_output_0' = [1, 2, 10, 14] at batch 1; graphc's shapes are " \
           "static" in lines
    assert any(line.startswith("  verify       ok") for line in lines)


def test_resize_scales_are_settings_not_parameters() -> None:
    # The same file with its Resize scales as initializers (as many exporters write them).
    path, x, y = stored("interpolate")
    model = onnx.load(path)
    constants = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}
    for node in list(model.graph.node):
        if node.op_type == "Resize" and node.input[2] in constants:
            const = constants[node.input[2]]
            model.graph.initializer.append(numpy_helper.from_array(
                numpy_helper.to_array(const.attribute[0].t), node.input[2]))
            model.graph.node.remove(const)
    g = from_onnx(model, batch=x.shape[0])
    scales = [v.node for n in g.op_nodes() if g.op(n) == "Resize"
              for v in g.in_values(n)[2:3] if v is not None]
    assert scales and not set(scales) & set(g.params())
    # The two convolutions' weights and biases only: (4, 3, 3, 3) + 4 and (2, 4, 3, 3) + 2.
    assert g.num_params() == 4 * 3 * 9 + 4 + 2 * 4 * 9 + 2
    assert_close(run(g, {"x": x})["y"], y)


def test_a_tensor_made_from_a_shape_is_not_folded_at_import() -> None:
    # Expand(0, Shape(x)): zeros of x's shape, 64 x 80 values, stays a node at import.
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="/Shape"),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(
            np.array(0.0, np.float32))),
        helper.make_node("Expand", ["zero", "s"], ["zeros"], name="/Expand"),
        helper.make_node("Add", ["x", "zeros"], ["y"], name="/Add"),
    ]
    graph = helper.make_graph(
        nodes, "zeros_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 80])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 80])])
    g = from_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert [g.op(n) for n in g.op_nodes()] == ["Expand", "Add"]
    assert g.const_value(g.in_values("zeros")[1]).tolist() == [64, 80]
    x = rng_array((64, 80), seed=3)
    np.testing.assert_array_equal(run(g, {"x": x})["y"], x)
