"""Import of quantized ONNX files made by other tools, checked against onnxruntime.

The files: onnxruntime.quantization.quantize_static's QDQ output for a small CNN and an MLP
(U8S8, S8S8 and U8U8, per channel and per tensor), quantize_dynamic's DynamicQuantizeLinear +
MatMulInteger output, and a file written with QLinearConv and QLinearMatMul; the contrib ops of
the QOperator format (and of UseQDQContribOps) are refused. The float models are built with
onnx.helper with seeded weights, BatchNorm already folded (notes/onnxruntime-cpu.md: an unfolded
one is folded by onnxruntime on the quantized grid, which moves the fused run by 14%).

Two references (notes/onnxruntime-cpu.md, "verifying int8 files"):

- exact: onnxruntime with graph optimizations off (``ORT_DISABLE_ALL``) computes the ops as
  written. The interpreter agrees to 1e-5 of each float tensor's scale, and every integer
  tensor (each QuantizeLinear output, exposed as an extra graph output) is identical, except at
  a tie of a float sum (``matches_unoptimized``). Measured: 2 ties in 2,400 inputs, else 0.
- fused: the default session fuses the QDQ patterns into int8 kernels (QLinearConv, QGemm,
  QLinearMatMul, QLinearAdd) that requantize the int32 accumulator with one rounding where the
  file rounds after a float op; the two can land one step apart at each requantization, and
  the tolerance is one output step per requantizing layer (``FUSED_STEPS``) with the same
  argmax. The int8-weight files are quantized with ``reduce_range=True`` (7-bit weights): on an
  x86 CPU without VNNI onnxruntime's uint8 x int8 kernels add pairs of products in int16 with
  saturation (VPMADDUBSW), so with full-range int8 weights the fused run does not compute what
  the file says. Measured on this AMD EPYC (AVX2, no VNNI), 64 input batches, full-range
  weights, fused run against the interpreter: CNN up to 27 output steps (argmax changed in 10
  batches), MLP up to 31 (16 batches), U8S8 and S8S8 alike for the MLP (onnxruntime turns int8
  activations into uint8 inside its fusions). With 7-bit int8 weights, and with full-range
  uint8 weights (U8U8), 0 steps in every configuration.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from graphc.errors import OpError
from graphc.interpret import run
from graphc.ir import CONST, Value
from graphc.onnxio.export import to_onnx
from graphc.onnxio.importer import from_onnx

F32 = TensorProto.FLOAT
# activation and weight types; uint8 weights (zero point 128) are exact on every CPU.
TYPES = {"U8S8": (QuantType.QUInt8, QuantType.QInt8), "S8S8": (QuantType.QInt8, QuantType.QInt8),
         "U8U8": (QuantType.QUInt8, QuantType.QUInt8)}
CONFIGS = [(model, types, per_channel) for model in ("cnn", "mlp") for types in TYPES
           for per_channel in (True, False)]
# The requantizing layers on the longest path (CNN: conv1, conv2, add, fc; MLP: fc1, fc2
# MatMul, its bias Add, fc3): each may round one output step differently when fused.
FUSED_STEPS = 4
EXACT = 1e-5
# How close to a half step (in steps) a float32 value must be for a one-bit difference in a
# Conv or Gemm sum to round it the other way; the one seen was 2e-5 steps away.
TIE = 1e-4


def init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def model_of(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], name: str,
             in_shape: list, out_shape: list) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", F32, in_shape)],
                              [helper.make_tensor_value_info("y", F32, out_shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def cnn() -> onnx.ModelProto:
    """Conv+Relu, Conv, residual Add, Relu, MaxPool, Flatten, Gemm (BatchNorm folded)."""
    rng = np.random.default_rng(0)

    def conv(ci: int, co: int) -> tuple[np.ndarray, np.ndarray]:
        w = rng.standard_normal((co, ci, 3, 3)) * np.sqrt(2 / (9 * ci))
        return w.astype(np.float32), (rng.standard_normal(co) * 0.1).astype(np.float32)

    (w1, b1), (w2, b2) = conv(1, 8), conv(8, 8)
    nodes = [
        helper.make_node("Conv", ["x", "conv1.weight", "conv1.bias"], ["c1"], name="conv1",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "conv2.weight", "conv2.bias"], ["c2"], name="conv2",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["r1", "c2"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["p"], name="pool", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["y"], name="fc", transB=1),
    ]
    inits = [init("conv1.weight", w1), init("conv1.bias", b1), init("conv2.weight", w2),
             init("conv2.bias", b2),
             init("fc.weight", (rng.standard_normal((10, 128)) / 11).astype(np.float32)),
             init("fc.bias", (rng.standard_normal(10) * 0.1).astype(np.float32))]
    return model_of(nodes, inits, "cnn", [2, 1, 8, 8], [2, 10])


def mlp() -> onnx.ModelProto:
    """Reshape, Gemm, Relu, MatMul + Add, Relu, Gemm, with a symbolic batch."""
    rng = np.random.default_rng(1)

    def rand(shape: tuple[int, ...], scale: float) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["x2"], name="flatten"),
        helper.make_node("Gemm", ["x2", "fc1.weight", "fc1.bias"], ["h1"], name="fc1",
                         transB=1),
        helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
        helper.make_node("MatMul", ["a1", "fc2.weight"], ["m2"], name="fc2/MatMul"),
        helper.make_node("Add", ["m2", "fc2.bias"], ["h2"], name="fc2/Add"),
        helper.make_node("Relu", ["h2"], ["a2"], name="relu2"),
        helper.make_node("Gemm", ["a2", "fc3.weight", "fc3.bias"], ["y"], name="fc3", transB=1),
    ]
    inits = [init("shape", np.array([-1, 16], np.int64)),
             init("fc1.weight", rand((32, 16), 0.25)), init("fc1.bias", rand((32,), 0.1)),
             init("fc2.weight", rand((32, 24), 0.18)), init("fc2.bias", rand((24,), 0.1)),
             init("fc3.weight", rand((10, 24), 0.2)), init("fc3.bias", rand((10,), 0.1))]
    return model_of(nodes, inits, "mlp", ["N", 2, 8], ["N", 10])


MODELS = {"cnn": cnn, "mlp": mlp}
BATCH = {"cnn": 2, "mlp": 4}
# The output-channel axis of each layer's weight: 0 for Conv and Gemm(transB), 1 for MatMul.
WEIGHT_AXES = {"cnn": {"conv1": 0, "conv2": 0, "fc": 0}, "mlp": {"fc1": 0, "fc2": 1, "fc3": 0}}


def inputs(model: str, count: int, seed: int, spread: float = 1.0) -> list[np.ndarray]:
    """Seeded inputs: non-negative images for the CNN, normal vectors for the MLP; ``spread``
    above 1 goes past the calibrated range, so that QuantizeLinear saturates."""
    rng = np.random.default_rng(seed)
    if model == "cnn":
        return [(rng.random((2, 1, 8, 8)) * 4 * spread).astype(np.float32)
                for _ in range(count)]
    return [(rng.standard_normal((4, 2, 8)) * spread).astype(np.float32) for _ in range(count)]


class Reader(CalibrationDataReader):
    """Calibration feeds for quantize_static: a few seeded inputs."""

    def __init__(self, xs: list[np.ndarray]) -> None:
        self.feeds = iter([{"x": x} for x in xs])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """Return a function making (and caching) quantize_static's file for a configuration."""
    # quantize_static logs a pre-processing advice per call on the root logger.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    folder = tmp_path_factory.mktemp("quantized")
    made: dict[tuple, onnx.ModelProto] = {}

    def make(model: str, types: str, per_channel: bool, reduce_range: bool = False,
             quant_format: QuantFormat = QuantFormat.QDQ, **options) -> onnx.ModelProto:
        key = (model, types, per_channel, reduce_range, quant_format, repr(sorted(options.items())))
        if key not in made:
            name = "_".join(str(k) for k in key[:4]) + f"_{quant_format.name}"
            source, target = folder / f"{name}.f.onnx", folder / f"{name}.q.onnx"
            onnx.save(MODELS[model](), source)
            activation, weight = TYPES[types]
            quantize_static(source, target, Reader(inputs(model, 8, seed=10)),
                            quant_format=quant_format, per_channel=per_channel,
                            activation_type=activation, weight_type=weight,
                            reduce_range=reduce_range, **options)
            made[key] = onnx.load(target)
        return made[key]

    yield make
    root.setLevel(level)


def session(model: onnx.ModelProto, optimized: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def fused_ops(model: onnx.ModelProto, folder: Path) -> set[str]:
    """Return the op types of the graph onnxruntime runs after its optimizations."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(folder / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return {n.op_type for n in onnx.load(folder / "optimized.onnx").graph.node}


def ort_run(model: onnx.ModelProto, x: np.ndarray, optimized: bool) -> dict[str, np.ndarray]:
    names = [o.name for o in model.graph.output]
    return dict(zip(names, session(model, optimized).run(None, {"x": x}), strict=True))


def with_hidden_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy whose graph also outputs every integer result (of QuantizeLinear and the
    integer ops) and the float input of each QuantizeLinear that a node computes."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    typed = {v.name: v for v in onnx.shape_inference.infer_shapes(out).graph.value_info}
    computed = {o for node in out.graph.node for o in node.output}
    names = [o.name for o in out.graph.output]
    for node in out.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] in computed:
            names.append(node.input[0])
        if node.op_type in ("QuantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger",
                            "DynamicQuantizeLinear"):
            names.append(node.output[0])
    for name in dict.fromkeys(names):
        if name not in {o.name for o in out.graph.output}:
            out.graph.output.append(typed[name])
    return out


def matches_unoptimized(g, exposed: onnx.ModelProto, x: np.ndarray) -> bool:
    """Compare the interpreter with onnxruntime without optimizations on one input: every value
    of ``with_hidden_outputs`` within EXACT of its scale (floats) or identical (integers).

    One exception, a tie: numpy and onnxruntime sum a Conv or Gemm in different orders, so the
    float32 results may differ in the last bit, and where ``v / scale`` is a half step the two
    round to neighbouring integers (seen on 2 of 2,400 inputs: 7.2194586 against 7.219459,
    163.49998 and 163.5 steps, after the first Conv). Such an integer tensor may differ by one
    where onnxruntime's value is within TIE steps of a half step, and nothing after it is
    compared (it follows other integers). Returns whether the input was compared in full.
    """
    got, want = run(g, {"x": x}), ort_run(exposed, x, optimized=False)
    assert list(got) == list(want)
    inits = {t.name: numpy_helper.to_array(t) for t in exposed.graph.initializer}
    for node in exposed.graph.node:
        q, v = node.output[0], node.input[0]
        if node.op_type != "QuantizeLinear" or np.array_equal(got[q], want[q]):
            continue
        # A graph input is quantized elementwise, with no sum before it: no tie excuses it.
        assert v in want, f"{q} differs"
        assert_exact({v: got[v]}, {v: want[v]})
        scale = inits[node.input[1]]
        assert scale.size == 1, "activations are quantized per tensor"
        steps = want[v].astype(np.float64) / float(scale)
        near_tie = np.abs(steps - np.floor(steps) - 0.5) <= TIE
        diff = got[q].astype(np.int64) - want[q].astype(np.int64)
        assert np.all((diff == 0) | ((np.abs(diff) == 1) & near_tie)), q
        return False
    assert_exact(got, want)
    return True


def output_step(model: onnx.ModelProto) -> float:
    """Return the scale of the QuantizeLinear whose DequantizeLinear gives the output y."""
    nodes = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return float(inits[nodes["y"].input[1]])


def dequantized_constants(g) -> dict[str, tuple[str, int | None]]:
    """Return constant name -> (dtype, axis) for each DequantizeLinear of a constant."""
    found = {}
    for node in g.op_nodes():
        x = g.in_values(node)[0]
        if g.op(node) == "DequantizeLinear" and g.op(x.node) == CONST:
            found[x.node] = (str(g.type_of(x).dtype), g.attrs(node).get("axis"))
    return found


def assert_exact(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    """Float outputs within EXACT of their scale, integer outputs identical."""
    assert list(got) == list(want)
    for name, w in want.items():
        assert got[name].dtype == w.dtype and got[name].shape == w.shape, name
        if w.dtype.kind == "f":
            scale = max(float(np.abs(w).max()), 1e-30)
            assert float(np.abs(got[name] - w).max()) <= EXACT * scale, name
        else:
            np.testing.assert_array_equal(got[name], w, err_msg=name)


# ----- quantize_static, QDQ ---------------------------------------------------------------


@pytest.mark.parametrize(("model", "types", "per_channel"), CONFIGS)
def test_qdq_file_matches_unoptimized_onnxruntime(quantized, model, types, per_channel):
    q = quantized(model, types, per_channel)
    assert [(o.domain, o.version) for o in q.opset_import] == [("", 17)]
    exposed = with_hidden_outputs(q)
    g = from_onnx(exposed, batch=BATCH[model])
    ops = {g.op(n) for n in g.op_nodes()}
    float_ops = {"cnn": {"Conv", "Add", "MaxPool", "Flatten", "Gemm"},
                 "mlp": {"Reshape", "Gemm", "MatMul", "Add"}}[model]
    assert ops == {"QuantizeLinear", "DequantizeLinear"} | float_ops
    weight = "uint8" if types == "U8U8" else "int8"
    want = {f"{layer}.weight_quantized": (weight, axis if per_channel else None)
            for layer, axis in WEIGHT_AXES[model].items()}
    want |= {f"{layer}.bias_quantized": ("int32", 0 if per_channel else None)
             for layer in WEIGHT_AXES[model] if layer != "fc2"}
    if model == "mlp":
        # A MatMul's separate bias Add is quantized like an activation, on its own grid.
        want["fc2.bias_quantized"] = ("int8" if types == "S8S8" else "uint8", None)
    assert dequantized_constants(g) == want
    xs = inputs(model, 6, seed=20) + inputs(model, 2, seed=21, spread=1.5)
    full = sum(matches_unoptimized(g, exposed, x) for x in xs)
    # Ties are rare (2 inputs in 2,400 measured): nearly every input compares in full.
    assert full >= len(xs) - 2


@pytest.mark.parametrize(("model", "types", "per_channel"), CONFIGS)
def test_qdq_file_fused_run_is_within_a_step_per_layer(quantized, model, types, per_channel,
                                                       tmp_path):
    q = quantized(model, types, per_channel, reduce_range=types != "U8U8")
    # The default session runs int8 kernels (on AVX2, S8S8 convolutions stay float).
    assert fused_ops(q, tmp_path) & {"QLinearConv", "QGemm", "QLinearMatMul"}
    exposed = with_hidden_outputs(q)
    g = from_onnx(exposed, batch=BATCH[model])
    step = output_step(q)
    # The fused session runs the file itself: extra outputs could keep a pattern from fusing.
    fused = session(q, optimized=True)
    xs = inputs(model, 16, seed=30)
    assert sum(matches_unoptimized(g, exposed, x) for x in xs) >= len(xs) - 2
    for x in xs:
        got = run(g, {"x": x})["y"]
        want = fused.run(None, {"x": x})[0]
        assert float(np.abs(got - want).max()) <= FUSED_STEPS * step * (1 + EXACT)
        np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))


def quantized_weights(g) -> list[str]:
    """The integer constants read as a DequantizeLinear's x: the int8 weights, int32 biases."""
    return [v.node for n in g.op_nodes() if g.op(n) == "DequantizeLinear"
            for v in g.in_values(n)[:1] if g.op(v.node) == CONST]


def test_qdq_parameters_are_the_weights_in_any_precision(quantized):
    # Fully quantized: the int8 weights and int32 biases are the parameters; zero points and
    # scales are settings. The count is the float model's (what graphc's quantize-int8 reports).
    g = from_onnx(quantized("cnn", "U8S8", True), batch=2)
    consts = [n for n in g.nx if g.op(n) == CONST]
    weights = quantized_weights(g)
    assert sorted(g.params()) == sorted(weights)
    assert {str(g.type_of(Value(n)).dtype) for n in weights} == {"int8", "int32"}
    assert {str(g.type_of(Value(n)).dtype) for n in consts} == {"int8", "int32", "uint8",
                                                                  "float32"}
    float_model = from_onnx(cnn(), batch=2)
    assert g.num_params() == float_model.num_params()
    # Only the convolutions quantized: the Gemm's float weight and bias are parameters too.
    partial = from_onnx(quantized("cnn", "U8S8", True, op_types_to_quantize=["Conv"]), batch=2)
    assert sorted(partial.params()) == sorted([*quantized_weights(partial), "fc.weight",
                                               "fc.bias"])
    assert partial.num_params() == float_model.num_params()


@pytest.mark.parametrize(("model", "types", "per_channel"), [("cnn", "U8S8", True),
                                                             ("mlp", "S8S8", False)])
def test_qdq_file_export_round_trip(quantized, model, types, per_channel):
    q = quantized(model, types, per_channel)
    g = from_onnx(q, batch=BATCH[model])
    exported = to_onnx(g)
    onnx.checker.check_model(exported, full_check=True)
    assert [o.name for o in exported.graph.output] == ["y"]
    assert {n.op_type for n in exported.graph.node} == {n.op_type for n in q.graph.node}
    if model == "mlp":
        assert exported.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    for x in inputs(model, 4, seed=40):
        want = ort_run(q, x, optimized=False)
        assert_exact(ort_run(exported, x, optimized=False), want)
        # The same ops in the same form: onnxruntime fuses the export as it fuses the file.
        np.testing.assert_array_equal(ort_run(exported, x, optimized=True)["y"],
                                      ort_run(q, x, optimized=True)["y"])
    if model == "mlp":
        x = np.random.default_rng(41).standard_normal((7, 2, 8)).astype(np.float32)
        np.testing.assert_array_equal(ort_run(exported, x, optimized=False)["y"],
                                      ort_run(q, x, optimized=False)["y"])


@pytest.mark.parametrize(("model", "options"), [
    ("cnn", {"quant_format": QuantFormat.QOperator}),
    ("mlp", {"quant_format": QuantFormat.QOperator}),
    ("cnn", {"extra_options": {"UseQDQContribOps": True}}),
])
def test_contrib_op_file_is_refused_with_the_qdq_hint(quantized, model, options):
    q = quantized(model, "U8S8", True, **options)
    contrib = [n for n in q.graph.node if n.domain == "com.microsoft"]
    assert contrib and {n.op_type for n in contrib} <= {
        "QGemm", "QLinearAdd", "QuantizeLinear", "DequantizeLinear"}
    first = contrib[0]
    with pytest.raises(OpError) as info:
        from_onnx(q)
    message = str(info.value)
    assert message.startswith(f"node {first.name!r} ({first.op_type}): the op is not in the "
                              "default ONNX domain; expected domain '' (ai.onnx), got "
                              "'com.microsoft' (onnxruntime contrib ops in this file: ")
    for node in contrib[:4]:
        assert f"{node.op_type} {node.name!r}" in message
    assert "quant_format=QuantFormat.QDQ" in message


# ----- files with integer ops --------------------------------------------------------------


def test_quantize_dynamic_file_matches_onnxruntime(tmp_path):
    source, target = tmp_path / "mlp.onnx", tmp_path / "mlp.dynamic.onnx"
    onnx.save(mlp(), source)
    # 7-bit weights: onnxruntime's MatMulInteger on uint8 x int8 saturates in int16 on CPUs
    # without VNNI even with optimizations off (graphc/ops/quant_conv.py).
    quantize_dynamic(source, target, weight_type=QuantType.QInt8, reduce_range=True)
    q = onnx.load(target)
    exposed = with_hidden_outputs(q)
    g = from_onnx(exposed, batch=4)
    assert {g.op(n) for n in g.op_nodes()} == {
        "Reshape", "DynamicQuantizeLinear", "MatMulInteger", "Cast", "Mul", "Add", "Relu"}
    # The int8 weights (MatMulInteger's b) and the float biases are the parameters; the weight
    # scales (multiplied by DynamicQuantizeLinear's scale) are settings.
    int8 = [v.node for n in g.op_nodes() if g.op(n) == "MatMulInteger"
            for v in g.in_values(n)[1:2]]
    assert sorted(g.params()) == sorted([*int8, "fc1.bias", "fc2.bias", "fc3.bias"])
    assert g.num_params() == from_onnx(mlp(), batch=4).num_params()
    for x in inputs("mlp", 6, seed=50) + inputs("mlp", 2, seed=51, spread=3.0):
        want = ort_run(exposed, x, optimized=False)
        assert_exact(run(g, {"x": x}), want)
        assert_exact({"y": ort_run(q, x, optimized=True)["y"]}, {"y": want["y"]})


def qlinear_model(activation: type, weight: type, per_channel: bool) -> onnx.ModelProto:
    """QuantizeLinear, QLinearConv (int32 bias), uint8/int8 MaxPool and Reshape,
    QLinearMatMul, DequantizeLinear: the QOperator form in default-domain ops only."""
    rng = np.random.default_rng(7)

    def ints(shape: tuple[int, ...], dtype: type, low: int, high: int) -> np.ndarray:
        return rng.integers(low, high + 1, shape).astype(dtype)

    # uint8 x int8 weights in [-64, 63]: onnxruntime's QLinearConv / QLinearMatMul kernels run
    # even with optimizations off, and saturate full-range int8 weights without VNNI.
    low, high = (-64, 63) if weight == np.int8 else (0, 255)
    w_zero = 0 if weight == np.int8 else 128
    a_zero = (128, 0, 100) if activation == np.uint8 else (0, -128, -20)

    def per(values: np.ndarray, dtype: type) -> np.ndarray:
        return values.astype(dtype) if per_channel else values[:1].reshape(()).astype(dtype)

    inits = [
        init("x_scale", np.float32(0.02)), init("x_zp", activation(a_zero[0])),
        init("w1", ints((6, 2, 3, 3), weight, low, high)),
        init("w1_scale", per(np.linspace(0.002, 0.01, 6), np.float32)),
        init("w1_zp", per(np.full(6, w_zero), weight)),
        init("h_scale", np.float32(0.05)), init("h_zp", activation(a_zero[1])),
        init("b1", ints((6,), np.int32, -3000, 3000)),
        init("shape", np.array([-1, 54], np.int64)),
        init("w2", ints((54, 10), weight, low, high)),
        init("w2_scale", per(np.linspace(0.003, 0.02, 10), np.float32)),
        init("w2_zp", per(np.full(10, w_zero), weight)),
        init("y_scale", np.float32(0.04)), init("y_zp", activation(a_zero[2])),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"], name="quant_x"),
        helper.make_node("QLinearConv", ["xq", "x_scale", "x_zp", "w1", "w1_scale", "w1_zp",
                                         "h_scale", "h_zp", "b1"], ["hq"], name="conv1",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("MaxPool", ["hq"], ["pq"], name="pool", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Reshape", ["pq", "shape"], ["fq"], name="flatten"),
        helper.make_node("QLinearMatMul", ["fq", "h_scale", "h_zp", "w2", "w2_scale", "w2_zp",
                                           "y_scale", "y_zp"], ["yq"], name="fc"),
        helper.make_node("DequantizeLinear", ["yq", "y_scale", "y_zp"], ["y"], name="dequant_y"),
    ]
    return model_of(nodes, inits, "qlinear", [2, 2, 12, 12], [2, 10])


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize(("activation", "weight"), [(np.uint8, np.int8), (np.uint8, np.uint8),
                                                    (np.int8, np.int8)])
def test_qlinear_file_matches_onnxruntime_and_round_trips(activation, weight, per_channel):
    model = with_hidden_outputs(qlinear_model(activation, weight, per_channel))
    onnx.checker.check_model(model, full_check=True)
    g = from_onnx(model)
    assert [g.op(n) for n in g.op_nodes()] == ["QuantizeLinear", "QLinearConv", "MaxPool",
                                               "Reshape", "QLinearMatMul", "DequantizeLinear"]
    assert g.type_of(Value("hq")).dtype == activation
    # The parameters are QLinearConv's w and bias and QLinearMatMul's b.
    assert sorted(g.params()) == ["b1", "w1", "w2"]
    exported = to_onnx(g)
    onnx.checker.check_model(exported, full_check=True)
    rng = np.random.default_rng(60)
    for _ in range(4):
        x = rng.uniform(-3.0, 3.0, (2, 2, 12, 12)).astype(np.float32)
        want = ort_run(model, x, optimized=False)
        assert_exact(run(g, {"x": x}), want)
        assert_exact(ort_run(model, x, optimized=True), want)
        assert_exact(ort_run(exported, x, optimized=False), want)
