"""quantize-int8: the emitted QDQ pattern, its numbers against the interpreter and fp32, the
profile check, per-layer fallback, refusals and idempotence."""

from __future__ import annotations

import numpy as np
import pytest

from graphc import GraphBuilder, nn
from graphc.compress.latency import executed_ops, runtime_weight_dequantize
from graphc.errors import UsageError
from graphc.interpret import run
from graphc.ir import Value
from graphc.models import load
from graphc.onnxio.export import to_bytes
from graphc.onnxio.runtime import run_onnxruntime, session
from graphc.passes.quantize_int8 import quantize_int8
from graphc.pipeline import resolve, run_pipeline
from graphc.rewrite import PassReport


def folded(name: str):
    g, _ = run_pipeline(load(name).build(), ["remove-dropout", "fold-batchnorm"])
    return g


def digits_like(g, n: int = 48, seed: int = 0) -> np.ndarray:
    # Nonnegative pixel-like inputs of the model's shape (the digits are 0..16 scaled to 0..1).
    shape = g.type_of(Value(g.inputs[0])).shape
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, *shape[1:])).astype(np.float32)


@pytest.fixture(scope="module")
def cnn_int8():
    g = folded("cnn")
    report = PassReport("quantize-int8")
    h = quantize_int8(g, calibration=digits_like(g), prefer="size", weight_range="reduced",
                      report=report)
    return g, h, report


def producer(g, node: str, port: int) -> str:
    return g.in_values(node)[port].node


def test_every_layer_has_the_fused_pattern(cnn_int8):
    g, h, report = cnn_int8
    layers = [n for n in h.op_nodes() if h.op(n) in ("Conv", "Gemm")]
    assert len(layers) == 4
    for node in layers:
        x, w = producer(h, node, 0), producer(h, node, 1)
        assert h.op(x) == "DequantizeLinear"
        assert h.const_value(h.in_values(x)[2]).dtype == np.uint8  # uint8 activations
        assert h.op(w) == "DequantizeLinear"
        wq, ws, wz = (h.const_value(v) for v in h.in_values(w))
        assert wq.dtype == np.int8 and np.abs(wq).max() == 63  # reduced range, scale = max/63
        assert not wz.any() and ws.shape == (wq.shape[h.attrs(w)["axis"]],)
        # The bias is int32 with scale s_x * s_w, inside the layer (never a separate Add).
        b = producer(h, node, 2)
        bq, bs, _ = (h.const_value(v) for v in h.in_values(b))
        assert bq.dtype == np.int32
        s_x = h.const_value(h.in_values(x)[1])
        np.testing.assert_allclose(bs, s_x * ws, rtol=1e-6)
        np.testing.assert_allclose(bq * bs, g.const_value(g.in_values(node)[2]), atol=bs.max())
    assert not [n for n in h.op_nodes() if h.op(n) == "Add"]
    # Each Conv's output goes through a QuantizeLinear after its ReLU (the fusable form).
    for node in (n for n in layers if h.op(n) == "Conv"):
        (relu, _), = h.users(Value(node))
        assert h.op(relu) == "Relu"
        assert [h.op(u) for u, _ in h.users(Value(relu))] == ["QuantizeLinear"]
    assert "quantized    4 of 4 layers" in report.notes


def test_interpreter_computes_what_the_file_says(cnn_int8):
    _, h, _ = cnn_int8
    feeds = {"x": digits_like(h, 1, seed=5)}
    want = run(h, feeds)["logits"]
    # onnxruntime without its int8 fusion runs the QDQ ops as written: the same numbers.
    exact = session(to_bytes(h), threads=1, config={"session.disable_quant_qdq": "1"})
    got = exact.run(None, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_int8_outputs_are_close_to_fp32(cnn_int8):
    g, h, _ = cnn_int8
    x = digits_like(g, 16, seed=9)
    fp32, int8 = to_bytes(g), to_bytes(h)
    errors = []
    for k in range(len(x)):
        want = run_onnxruntime(fp32, {"x": x[k:k + 1]})["logits"]
        got = run_onnxruntime(int8, {"x": x[k:k + 1]})["logits"]  # the fused int8 kernels
        errors.append(np.sqrt(np.mean((got - want) ** 2) / np.mean(want**2)))
    # Four layers on 8-bit grids (7-bit weights): a few percent of the output, no more.
    assert np.mean(errors) < 0.05


def test_no_weight_is_dequantized_at_run_time(cnn_int8):
    _, h, _ = cnn_int8
    assert runtime_weight_dequantize(to_bytes(h), {"x": digits_like(h, 1)}) == []


def test_mlp_gemms_and_per_tensor_weights():
    g = folded("mlp")
    h = quantize_int8(g, calibration=digits_like(g), prefer="size", per_channel=False)
    gemms = [n for n in h.op_nodes() if h.op(n) == "Gemm"]
    assert len(gemms) == 3
    for node in gemms:
        scale = h.const_value(h.in_values(producer(h, node, 1))[1])
        assert scale.shape == ()
    assert runtime_weight_dequantize(to_bytes(h), {"x": digits_like(h, 1)}) == []


def outlier_model():
    b = GraphBuilder("outlier")
    x = b.input("x", (1, 16))
    h = nn.relu(nn.linear(x, 16, name="fc1"))
    b.output(nn.linear(h, 4, name="fc2"), "y")
    return b.build()


def test_a_sensitive_layer_stays_fp32():
    g = outlier_model()
    rng = np.random.default_rng(3)
    data = rng.standard_normal((32, 16)).astype(np.float32)
    report = PassReport("quantize-int8")
    quantize_int8(g, calibration=data, prefer="size", report=report)
    assert "quantized    2 of 2 layers" in report.notes
    # One sample 10,000x larger stretches both layers' input grids: every other sample falls
    # into a step or two, and the output error with either layer in int8 is ~97%.
    data[0] *= 10_000
    report = PassReport("quantize-int8")
    h = quantize_int8(g, calibration=data, prefer="size", report=report)
    fallbacks = [n for n in report.notes if " fp32: output error " in n]
    assert [n.split()[0] for n in fallbacks] == ["fc1", "y"]
    assert all(float(n.split("error ")[1].split("%")[0]) > 50 for n in fallbacks)
    assert h.op(producer(h, "fc1", 1)) == "Const"  # fc1 kept its fp32 weight
    assert "quantized    0 of 2 layers" in report.notes


def test_refusals_and_idempotence(cnn_int8):
    _, h, _ = cnn_int8
    report = PassReport("quantize-int8")
    again = quantize_int8(h, calibration=digits_like(h), prefer="size", report=report)
    assert len(again.op_nodes()) == len(h.op_nodes())
    assert all("weight is not a constant" in reason for _, reason in report.refusals)
    with pytest.raises(UsageError, match="calibration data"):
        quantize_int8(h)
    with pytest.raises(UsageError, match="calibration data does not fit"):
        quantize_int8(folded("cnn"), calibration=np.zeros((4, 3, 5), np.float32))


def test_same_input_same_bytes():
    g = folded("cnn")
    data = digits_like(g)
    a = quantize_int8(g, calibration=data, prefer="size", weight_range="full")
    b = quantize_int8(g, calibration=data, prefer="size", weight_range="full")
    assert to_bytes(a) == to_bytes(b)


# ----- the QOperator form ---------------------------------------------------------------------


def unfused_session(model: bytes):
    # session.disable_quant_qdq only stops the QDQ fusions; QLinearConv and the rest of
    # onnxruntime's rewrites (NHWC, com.microsoft kernels) need every optimization off.
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def cnn_qop():
    g = folded("cnn")
    report = PassReport("quantize-int8")
    h = quantize_int8(g, calibration=digits_like(g), prefer="size", weight_range="reduced",
                      format="qoperator", report=report)
    return g, h, report


def ops_of(h) -> list[str]:
    return [h.op(n) for n in h.op_nodes()]


def test_qoperator_convs_are_qlinearconv_with_uint8_between(cnn_qop):
    g, h, report = cnn_qop
    ops = ops_of(h)
    assert ops.count("QLinearConv") == 3 and "Conv" not in ops
    assert "Relu" not in ops  # each ReLU folded into its Conv's output grid
    for node in (n for n in h.op_nodes() if h.op(n) == "QLinearConv"):
        x, sx, zx, w, sw, zw, sy, zy, b = h.in_values(node)
        assert h.type_of(x).dtype == np.uint8 and h.types(node)[0].dtype == np.uint8
        wq = h.const_value(w)
        assert wq.dtype == np.int8 and np.abs(wq).max() == 63
        assert h.const_value(sw).shape == (wq.shape[0],) and not h.const_value(zw).any()
        assert h.const_value(b).dtype == np.int32
        assert h.const_value(zy) == 0 and h.const_value(zy).dtype == np.uint8  # ReLU range
    # uint8 flows from layer to layer, through MaxPool and Flatten.
    assert producer(h, "block2.conv", 0) == "block1.conv"
    pool = producer(h, "block3.conv", 0)
    assert h.op(pool) == "MaxPool" and producer(h, pool, 0) == "block2.conv"
    # QuantizeLinear and DequantizeLinear only where float begins and ends: the input, and
    # the QDQ Gemm head (uint8 in, its weight and int32 bias fused into QGemm).
    assert ops.count("QuantizeLinear") == 1 and producer(h, "block1.conv", 0) == "x_quantize"
    head = producer(h, "logits", 0)
    assert h.op(head) == "DequantizeLinear"
    assert h.op(producer(h, head, 0)) == "Flatten" and h.type_of(h.in_values(head)[0]).dtype \
        == np.uint8
    assert ops.count("DequantizeLinear") == 3
    assert h.const_value(h.in_values(producer(h, "logits", 2))[0]).dtype == np.int32
    assert "quantized    4 of 4 layers" in report.notes
    assert sorted(ops) == sorted(["QuantizeLinear", "QLinearConv", "QLinearConv", "MaxPool",
                                  "QLinearConv", "MaxPool", "Flatten", "DequantizeLinear",
                                  "DequantizeLinear", "DequantizeLinear", "Gemm"])


def test_qoperator_keeps_the_qdq_layers_and_grids(cnn_int8, cnn_qop):
    _, qdq, _ = cnn_int8
    _, qop, _ = cnn_qop
    for conv in ("block1.conv", "block2.conv", "block3.conv"):
        (relu, _), = qdq.users(Value(conv))
        (quant, _), = qdq.users(Value(relu))
        want = [qdq.const_value(v) for v in qdq.in_values(quant)[1:]]
        got = [qop.const_value(v) for v in qop.in_values(conv)[6:8]]
        assert [float(a) for a in got] == [float(a) for a in want]
        np.testing.assert_array_equal(qop.const_value(qop.in_values(conv)[3]),
                                      qdq.const_value(qdq.in_values(producer(qdq, conv, 1))[0]))
    np.testing.assert_array_equal(
        qop.const_value(qop.in_values(producer(qop, "logits", 1))[0]),
        qdq.const_value(qdq.in_values(producer(qdq, "logits", 1))[0]))


def test_qoperator_interpreter_is_onnxruntime_unoptimized(cnn_qop):
    _, h, _ = cnn_qop
    model = to_bytes(h)
    exact = unfused_session(model)
    for seed in range(4):
        feeds = {"x": digits_like(h, 1, seed=20 + seed)}
        want = run(h, feeds)["logits"]
        got = exact.run(None, feeds)[0]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_qoperator_fused_run_agrees_within_a_step(cnn_qop):
    _, h, _ = cnn_qop
    fused = session(to_bytes(h), threads=1)
    # One step of the head's input grid moves the logits by at most s_x * max_o sum|W[o]|.
    head = producer(h, "logits", 0)
    s_x = float(h.const_value(h.in_values(head)[1]))
    wq, ws, _ = (h.const_value(v) for v in h.in_values(producer(h, "logits", 1)))
    step = s_x * float(np.max(np.abs(wq * ws[:, None]).sum(axis=1)))
    for seed in range(8):
        feeds = {"x": digits_like(h, 1, seed=40 + seed)}
        want = run(h, feeds)["logits"]
        got = fused.run(None, feeds)[0]
        # 7-bit weights: onnxruntime's 16-bit pair sums do not saturate, so it is this close.
        assert np.abs(got - want).max() <= step


def test_qoperator_close_to_fp32_and_runs_int8_kernels(cnn_qop):
    g, h, _ = cnn_qop
    fp32, int8 = to_bytes(g), to_bytes(h)
    x = digits_like(g, 16, seed=9)
    errors = []
    for k in range(len(x)):
        want = run_onnxruntime(fp32, {"x": x[k:k + 1]})["logits"]
        got = run_onnxruntime(int8, {"x": x[k:k + 1]})["logits"]
        errors.append(np.sqrt(np.mean((got - want) ** 2) / np.mean(want**2)))
    assert np.mean(errors) < 0.05
    feeds = {"x": x[:1]}
    assert runtime_weight_dequantize(int8, feeds) == []
    ran = [op for _, op in executed_ops(int8, feeds)]
    assert ran.count("QLinearConv") == 3 and "QGemm" in ran
    assert not {"Conv", "FusedConv", "Gemm", "DequantizeLinear"} & set(ran)


def pooled_model():
    # A padded MaxPool and a Reshape between two int8 convs: both run on uint8.
    b = GraphBuilder("pooled", seed=1)
    x = b.input("x", (1, 2, 7, 7))
    h = nn.relu(nn.conv2d(x, 4, 3, padding=1, name="c1"))
    h = nn.max_pool2d(h, 3, stride=2, padding=1, name="pool")
    h = nn.relu(nn.conv2d(h, 6, 3, padding=1, name="c2"))
    b.output(nn.linear(nn.flatten(h), 3, name="fc"), "y")
    return b.build()


def test_qoperator_padded_maxpool_on_uint8():
    g = pooled_model()
    data = np.random.default_rng(4).standard_normal((8, 2, 7, 7)).astype(np.float32)
    h = quantize_int8(g, calibration=data, prefer="size", weight_range="reduced",
                      max_error=1.0, format="qoperator")
    pool = producer(h, "c2", 0)
    assert h.op(pool) == "MaxPool" and h.types(pool)[0].dtype == np.uint8
    assert h.op(producer(h, "c1", 0)) == "QuantizeLinear"  # a signed input: zero point > 0
    model = to_bytes(h)
    for k in range(3):
        feeds = {"x": data[k:k + 1]}
        want = run(h, feeds)["y"]
        np.testing.assert_allclose(unfused_session(model).run(None, feeds)[0], want, rtol=0,
                                   atol=1e-5 * np.abs(want).max())
    assert runtime_weight_dequantize(model, {"x": data[:1]}) == []


def test_qoperator_refusals_and_idempotence(cnn_qop):
    _, h, _ = cnn_qop
    report = PassReport("quantize-int8")
    again = quantize_int8(h, calibration=digits_like(h), prefer="size", format="qoperator",
                          report=report)
    assert ops_of(again) == ops_of(h)
    with pytest.raises(UsageError, match="unknown int8 format"):
        quantize_int8(h, calibration=digits_like(h), format="qlinear")
    with pytest.raises(UsageError, match="does not apply to --dynamic"):
        quantize_int8(h, format="qoperator", dynamic=True)


# ----- the dynamic form -----------------------------------------------------------------------


def inference(name: str):
    g, _ = run_pipeline(load(name).build(), resolve(pipeline="inference"))
    return g


@pytest.fixture(scope="module")
def mlp_dynamic():
    g = inference("mlp")
    report = PassReport("quantize-int8")
    h = quantize_int8(g, dynamic=True, prefer="size", weight_range="reduced", report=report)
    return g, h, report


def test_dynamic_gemms_become_dynamic_quantize_and_matmul_integer(mlp_dynamic):
    g, h, report = mlp_dynamic
    ops = ops_of(h)
    assert "Gemm" not in ops and ops.count("DynamicQuantizeLinear") == 3
    assert ops.count("MatMulInteger") == 3 and "DequantizeLinear" not in ops
    for layer in ("fc1", "fc2", "logits"):
        gemm_w = g.const_value(g.in_values(layer)[1])  # (N, K), transB=1
        add = layer  # the layer's id now names its output: y = acc * (s_x * s_w) + b
        assert h.op(add) == "Add"
        np.testing.assert_array_equal(h.const_value(h.in_values(add)[1]),
                                      g.const_value(g.in_values(layer)[2]))  # float bias
        mul = producer(h, add, 0)
        cast, scale = producer(h, mul, 0), producer(h, mul, 1)
        assert h.op(cast) == "Cast" and h.op(scale) == "Mul"
        mmi = producer(h, cast, 0)
        a, w, za, zw = h.in_values(mmi)
        assert h.op(a.node) == "DynamicQuantizeLinear" and za == Value(a.node, 2)
        wq = h.const_value(w)
        assert wq.dtype == np.int8 and wq.shape == gemm_w.T.shape and np.abs(wq).max() == 63
        assert h.const_value(zw).shape == (wq.shape[1],) and not h.const_value(zw).any()
        xs, ws = h.in_values(scale)
        assert xs == Value(a.node, 1)
        np.testing.assert_allclose(wq * h.const_value(ws), gemm_w.T,
                                   atol=float(h.const_value(ws).max()) / 2 * 1.0001)
    assert h.outputs == [Value("logits")] and h.output_names() == g.output_names()
    assert "error        not measured" in " ".join(report.notes)
    assert "quantized    3 of 3 layers" in report.notes


def test_dynamic_interpreter_is_onnxruntime_unoptimized(mlp_dynamic):
    _, h, _ = mlp_dynamic
    exact = unfused_session(to_bytes(h))
    rng = np.random.default_rng(7)
    for _ in range(4):
        feeds = {"x": rng.uniform(0, 16, (1, 64)).astype(np.float32)}
        want = run(h, feeds)["logits"]
        np.testing.assert_allclose(exact.run(None, feeds)[0], want, rtol=0,
                                   atol=1e-6 * np.abs(want).max())


def test_dynamic_fuses_close_to_fp32_no_weight_dequantize(mlp_dynamic):
    g, h, _ = mlp_dynamic
    model = to_bytes(h)
    rng = np.random.default_rng(8)
    feeds = {"x": rng.uniform(0, 16, (1, 64)).astype(np.float32)}
    ran = [op for _, op in executed_ops(model, feeds)]
    assert ran.count("DynamicQuantizeMatMul") == 3
    assert not {"MatMulInteger", "DynamicQuantizeLinear", "DequantizeLinear", "Gemm"} & set(ran)
    assert runtime_weight_dequantize(model, feeds) == []
    errors = []
    for _ in range(16):
        feeds = {"x": rng.uniform(0, 16, (1, 64)).astype(np.float32)}
        want = run_onnxruntime(to_bytes(g), feeds)["logits"]
        got = run_onnxruntime(model, feeds)["logits"]
        # The fused kernel and the interpreter: 7-bit weights keep the products exact.
        np.testing.assert_allclose(got, run(h, feeds)["logits"], rtol=0,
                                   atol=1e-5 * np.abs(want).max())
        errors.append(np.sqrt(np.mean((got - want) ** 2) / np.mean(want**2)))
    assert np.mean(errors) < 0.05


def test_dynamic_leaves_convs_and_measures_error_with_data():
    g = inference("cnn")
    report = PassReport("quantize-int8")
    h = quantize_int8(g, calibration=digits_like(g), dynamic=True, prefer="size",
                      report=report)
    assert ops_of(h).count("Conv") == 3 and ops_of(h).count("MatMulInteger") == 1
    covered = [n for n in report.notes if "dynamic quantization covers Gemm/MatMul" in n]
    assert [n.split()[0] for n in covered] == ["block1.conv", "block2.conv", "block3.conv"]
    assert [n.split()[0] for n in report.notes if " int8: output error " in n] == ["logits"]
    assert "quantized    1 of 1 layers" in report.notes


def test_dynamic_speed_is_timed_on_random_inputs():
    g = inference("mlp")
    report = PassReport("quantize-int8")
    h = quantize_int8(g, dynamic=True, rounds=3, report=report)
    assert any(n.startswith("latency      on random inputs") for n in report.notes)
    kept = ops_of(h).count("MatMulInteger")
    slow = [n for n in report.notes if "x fp32 time" in n]
    # Which layers pay depends on the CPU; the report accounts for every layer either way.
    assert f"quantized    {kept} of 3 layers" in report.notes
    assert kept + len([n for n in slow if not n.startswith("all layers")]) == 3 or \
        any(n.startswith("all layers fp32") for n in slow)


def test_dynamic_matmul_and_idempotence():
    b = GraphBuilder("proj", seed=2)
    x = b.input("x", (2, 3, 8))
    w = b.param("w", (8, 5))
    b.output(b.op("MatMul", x, w, name="proj"), "y")
    g = b.build()
    h = quantize_int8(g, dynamic=True, prefer="size")
    assert ops_of(h) == ["DynamicQuantizeLinear", "MatMulInteger", "Cast", "Mul", "Mul"]
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 3, 8)).astype(np.float32)}
    np.testing.assert_allclose(unfused_session(to_bytes(h)).run(None, feeds)[0],
                               run(h, feeds)["y"], rtol=0, atol=1e-6)
    assert "DynamicQuantizeMatMul" in [op for _, op in executed_ops(to_bytes(h), feeds)]
    assert ops_of(quantize_int8(h, dynamic=True, prefer="size")) == ops_of(h)


def test_cli_dynamic_needs_no_calibration(tmp_path, capsys):
    from graphc.cli import main

    out = tmp_path / "m.onnx"
    assert main(["compile", "mlp", "--pipeline", "inference", "--passes", "quantize-int8",
                 "--dynamic", "--prefer", "size", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "quantized    3 of 3 layers" in printed and "error        not measured" in printed
    import onnx

    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("DynamicQuantizeLinear") == 3 and ops.count("MatMulInteger") == 3
    assert main(["compile", "mlp", "--format", "qoperator", "-o", str(out)]) == 2
    assert "--format only apply to quantize-int8" in capsys.readouterr().err


@pytest.mark.parametrize("form", ["qdq", "qoperator"])
def test_an_int8_gemm_before_an_fp32_layer_still_fuses(form):
    # onnxruntime's QDQ selector fuses nothing for Gemm -> Relu -> (not a QuantizeLinear):
    # the ReLU is written as LeakyRelu(alpha=0), which it does not take for a clip.
    g = outlier_model()
    data = np.random.default_rng(3).standard_normal((32, 16)).astype(np.float32)
    h = quantize_int8(g, calibration=data, prefer="size", fp32_layers=["y"], format=form)
    relu = h.users(Value("fc1"))[0][0]
    assert h.op(relu) == "LeakyRelu" and h.attrs(relu)["alpha"] == 0.0
    feeds = {"x": data[:1]}
    assert runtime_weight_dequantize(to_bytes(h), feeds) == []
    assert [op for _, op in executed_ops(to_bytes(h), feeds)] == [
        "QuantizeLinear", "QGemm", "LeakyRelu", "Gemm"]
    np.testing.assert_allclose(run(h, feeds)["y"], unfused_session(to_bytes(h)).run(None, feeds)[0],
                               rtol=0, atol=1e-5)


# ----- speed: each layer timed on its own -----------------------------------------------------


def cnn_grids(g):
    from graphc.compress.calibrate import calibration_batches
    from graphc.compress.int8 import find_layers
    from graphc.passes.quantize_int8 import _grids

    layers = {la.node: la for la in find_layers(g)}
    batches = calibration_batches(g, digits_like(g))
    return layers, _grids(g, list(layers.values()), batches, "minmax", 99.99)


def quantize_params(model, node_op: str) -> list[tuple[float, int]]:
    # (scale, zero point) of each QuantizeLinear / QLinearConv output grid in an ONNX model.
    from onnx import numpy_helper

    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type == node_op:
            s, z = node.input[1:3] if node_op == "QuantizeLinear" else node.input[6:8]
            found.append((float(init[s]), int(init[z])))
    return found


def test_one_layer_model_is_the_layer_alone():
    from graphc.passes.quantize_int8 import _one_layer

    g = folded("cnn")
    layers, grids = cnn_grids(g)
    h, one = _one_layer(g, layers["block2.conv"])
    assert h.inputs == ["block1.relu"] and h.type_of(Value("block1.relu")) == g.type_of(
        Value("block1.relu"))
    assert [(n, h.op(n)) for n in h.op_nodes()] == [("block2.conv", "Conv"),
                                                     ("block2.relu", "Relu")]
    assert h.outputs == [Value("block2.relu")] and one.out_point == Value("block2.relu")
    assert h.attrs("block2.conv") == g.attrs("block2.conv")
    for port in (1, 2):  # the same weight and bias
        np.testing.assert_array_equal(h.const_value(h.in_values("block2.conv")[port]),
                                      g.const_value(g.in_values("block2.conv")[port]))
    # A Gemm alone: no ReLU (its out point is none), float in and out.
    head, one = _one_layer(g, layers["logits"])
    assert ops_of(head) == ["Gemm"] and one.out_point is None
    # With a uint8 grid the input is uint8, dequantized first (as inside an int8 chain).
    grid = grids[Value("block1.relu")]
    h8, _ = _one_layer(g, layers["block2.conv"], grid)
    (name,) = h8.inputs
    assert h8.type_of(Value(name)).dtype == np.uint8
    dq = h8.in_values("block2.conv")[0].node
    assert h8.op(dq) == "DequantizeLinear"
    assert float(h8.const_value(h8.in_values(dq)[1])) == np.float32(grid.scale)
    assert int(h8.const_value(h8.in_values(dq)[2])) == grid.zero_point


@pytest.mark.parametrize("form", ["qdq", "qoperator"])
def test_one_layer_int8_model_is_fused_on_the_graphs_grids(form):
    import onnx

    from graphc.compress.int8 import build
    from graphc.compress.int8_forms import to_qoperator
    from graphc.passes.quantize_int8 import _layer_models

    g = folded("cnn")
    layers, grids = cnn_grids(g)

    def make(h, chosen, on):
        q = build(h, chosen, on, qmax=63)
        return to_qoperator(q) if form == "qoperator" else q

    layer = layers["block2.conv"]
    in_grid, out_grid = grids[Value("block1.relu")], grids[Value("block2.relu")]
    (fp32, int8), feeds = _layer_models(g, layer, make, grids, False, False)
    assert feeds["block1.relu"].min() >= in_grid.lo and feeds["block1.relu"].max() <= in_grid.hi
    assert [op for _, op in executed_ops(fp32, feeds)].count("Conv") == 1
    ran = [op for _, op in executed_ops(int8, feeds)]
    assert "QLinearConv" in ran and "Conv" not in ran and "FusedConv" not in ran
    assert runtime_weight_dequantize(int8, feeds) == []
    model = onnx.load_model_from_string(int8)
    grid_of = [(float(np.float32(gr.scale)), gr.zero_point) for gr in (in_grid, out_grid)]
    if form == "qdq":
        assert quantize_params(model, "QuantizeLinear") == grid_of  # the input's, the output's
    else:
        assert quantize_params(model, "QuantizeLinear") == grid_of[:1]
        assert quantize_params(model, "QLinearConv") == grid_of[1:]
    # Inside an int8 chain: uint8 in and out, no QuantizeLinear or DequantizeLinear left.
    (fp32, int8), feeds = _layer_models(g, layer, make, grids, True, True)
    assert feeds["block1.relu.uint8"].dtype == np.uint8 and "block1.relu" in feeds
    ran = [op for _, op in executed_ops(int8, feeds)]
    assert "QLinearConv" in ran and not {"QuantizeLinear", "DequantizeLinear"} & set(ran)
    assert [op for _, op in executed_ops(fp32, feeds)].count("Conv") == 1  # fp32 stays fp32
    model = onnx.load_model_from_string(int8)
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8


def fake_measure(ratios, calls):
    """A stand-in for graphc.compress.latency.measure: the int8 model (the second) takes
    ``ratios[its graph name]`` of fp32 time in every round."""
    import onnx

    from graphc.compress.latency import Timing

    def measure(models, feeds, *, rounds=21, **_):
        name = onnx.load_model_from_string(models[1]).graph.name
        calls.append((name, dict(feeds)))
        r = ratios[name]
        return [Timing("fp32", 1e-3, 1e-3, 1e-3, 1.0, 1.0, 1.0, 10, rounds),
                Timing("int8", r * 1e-3, r * 1e-3, r * 1e-3, r, r, r, 10, rounds)]

    return measure


def test_speed_is_decided_by_each_layers_own_timing(monkeypatch):
    import graphc.compress.latency as latency

    g = folded("cnn")
    ratios = {"cnn.block1.conv": 0.5, "cnn.block2.conv": 1.3, "cnn.block3.conv": 0.99,
              "cnn.logits": 0.6, "cnn": 0.8}
    calls: list = []
    monkeypatch.setattr(latency, "measure", fake_measure(ratios, calls))
    report = PassReport("quantize-int8")
    h = quantize_int8(g, calibration=digits_like(g), weight_range="reduced", report=report)
    # One timing per layer, in order, then the whole model with the layers kept.
    assert [name for name, _ in calls] == ["cnn.block1.conv", "cnn.block2.conv",
                                           "cnn.block3.conv", "cnn.logits", "cnn"]
    notes = [n for n in report.notes if "time" in n or n.startswith("latency")]
    assert notes == [
        "latency      each layer alone, then the model, at batch 1; 15 interleaved rounds, "
        "1 thread",
        "block1.conv  int8: 0.50x the fp32 layer's time on this CPU (float in, uint8 out)",
        # block1.conv is int8 before it: its input is uint8, its output is read by block3.
        "block2.conv  fp32: 1.30x fp32 time in int8 on this CPU (uint8 in, uint8 out)",
        # A tie (under 1.0 but not under the margin) stays fp32.
        "block3.conv  fp32: 0.99x fp32 time in int8 on this CPU (float in, uint8 out)",
        "logits       int8: 0.60x the fp32 layer's time on this CPU (float in, float out)"]
    assert calls[1][1]["block1.relu.uint8"].dtype == np.uint8
    assert "quantized    2 of 4 layers" in report.notes
    assert h.op(producer(h, "block1.conv", 1)) == "DequantizeLinear"
    assert h.op(producer(h, "logits", 1)) == "DequantizeLinear"
    for fp32 in ("block2.conv", "block3.conv"):
        assert h.op(producer(h, fp32, 1)) == "Const"
    # The whole model slower: nothing is quantized, whatever the layers said alone.
    ratios["cnn"] = 1.02
    calls.clear()
    report = PassReport("quantize-int8")
    h = quantize_int8(g, calibration=digits_like(g), weight_range="reduced", report=report)
    assert calls[-1][0] == "cnn"
    assert "all layers fp32: the int8 model took 1.02x fp32 time on this CPU" in report.notes
    assert "quantized    0 of 4 layers" in report.notes
    assert "QuantizeLinear" not in ops_of(h)


def test_a_layer_kept_fp32_runs_in_fp32_on_onnxruntime():
    # onnxruntime quantizes a float Conv between a DequantizeLinear and a QuantizeLinear by
    # itself; the layer graphc keeps in fp32 must run as a float Conv and compute what the
    # interpreter computes.
    from graphc.compress.latency import executed_ops

    g = folded("cnn")
    h = quantize_int8(g, calibration=digits_like(g), prefer="size", weight_range="reduced",
                      fp32_layers=["block2.conv"])
    assert h.op(producer(h, "block2.conv", 1)) == "Const"
    feeds = {"x": digits_like(g, 1, seed=3)}
    ran = executed_ops(to_bytes(h), feeds)
    int8_convs = sorted(name.split("_token")[0] for name, op in ran if op == "QLinearConv")
    assert int8_convs == ["block1.conv", "block3.conv"]
    assert any(op in ("Conv", "FusedConv") and "block2" in name for name, op in ran)
    want = run(h, feeds)["logits"]
    got = session(to_bytes(h), threads=1).run(None, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def residual_net(batch: int = 1):
    """conv -> relu -> maxpool -> [conv -> relu -> conv] + identity -> relu -> conv -> relu
    -> global average pool -> fc: a ResNet basic block between int8 convolutions."""
    b = GraphBuilder("residual", seed=0)
    x = b.input("x", (batch, 3, 16, 16))
    h = nn.max_pool2d(nn.relu(nn.conv2d(x, 8, 3, padding=1, name="stem")), 2)
    y = nn.conv2d(nn.relu(nn.conv2d(h, 8, 3, padding=1, name="a")), 8, 3, padding=1, name="b")
    h = nn.relu(y + h, name="sum_relu")
    h = nn.relu(nn.conv2d(h, 8, 3, padding=1, name="c"))
    b.output(nn.linear(nn.flatten(nn.global_avg_pool(h)), 4, name="fc"), "y")
    return b.build()


def test_a_residual_add_between_int8_layers_runs_on_uint8():
    g = residual_net()
    rng = np.random.default_rng(0)
    h = quantize_int8(g, calibration=rng.standard_normal((16, 3, 16, 16)).astype(np.float32),
                      prefer="size")
    (add,) = [n for n in h.op_nodes() if h.op(n) == "Add"]
    assert [h.op(v.node) for v in h.in_values(add)] == ["DequantizeLinear"] * 2
    (relu, _), = h.users(Value(add))
    assert [h.op(u) for u, _ in h.users(Value(relu))] == ["QuantizeLinear"]
    # The maxpool feeds the next conv and the sum through one QuantizeLinear: uint8 MaxPool.
    (pool,) = [n for n in h.op_nodes() if h.op(n) == "MaxPool"]
    assert [h.op(u) for u, _ in h.users(Value(pool))] == ["QuantizeLinear"]
    feeds = {"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)}
    ops = [op for _, op in executed_ops(to_bytes(h), feeds)]
    assert "QLinearAdd" in ops and "Add" not in ops and "Relu" not in ops
    # uint8 up to the global average pool, which reads the last dequantized value.
    body = ops[:ops.index("GlobalAveragePool")]
    assert "MaxPool" not in body and body.count("DequantizeLinear") == 1
    # The file means what the interpreter computes; fused, within a few quantization steps.
    exact = session(to_bytes(h), threads=1, config={"session.disable_quant_qdq": "1"})
    want = run(h, feeds)["y"]
    np.testing.assert_allclose(exact.run(None, feeds)[0], want, rtol=0, atol=1e-5)
    fp32 = run(g, feeds)["y"]
    assert np.abs(run_onnxruntime(to_bytes(h), feeds)["y"] - fp32).max() < 0.05 * np.abs(
        fp32).max()


@pytest.mark.parametrize("size, kernel, stride, pad", [(16, 7, 2, 3), (15, 7, 2, 3),
                                                       (13, 3, 2, 1), (17, 5, 2, 0),
                                                       (17, 4, 2, 0),
                                                       (12, 4, 2, 2)])
def test_a_strided_stem_conv_runs_on_space_to_depth(monkeypatch, size, kernel, stride, pad):
    b = GraphBuilder("stem", seed=1)
    x = b.input("x", (1, 3, size, size))
    h = nn.relu(nn.conv2d(x, 8, kernel, stride=stride, padding=pad, name="stem"))
    h = nn.relu(nn.conv2d(h, 8, 3, padding=1, name="next"))
    b.output(nn.linear(nn.flatten(nn.global_avg_pool(h)), 4, name="fc"), "y")
    g = b.build()
    rng = np.random.default_rng(2)
    calibration = rng.standard_normal((8, 3, size, size)).astype(np.float32)
    h = quantize_int8(g, calibration=calibration, prefer="size")
    conv = next(n for n in h.op_nodes() if h.op(n) == "Conv")
    dq = h.in_values(conv)[0].node
    moved = h.in_values(dq)[0].node
    assert h.op(moved) == "SpaceToDepth" and h.attrs(moved)["blocksize"] == stride
    assert h.op(h.in_values(moved)[0].node) == "Pad"
    taps = -(-kernel // stride)
    assert list(h.attrs(conv)["kernel_shape"]) == [taps, taps]
    assert list(h.attrs(conv)["strides"]) == [1, 1]
    feeds = {"x": rng.standard_normal((1, 3, size, size)).astype(np.float32)}
    # The same integers as the strided conv: onnxruntime's fused int8 file gives the same bits.
    monkeypatch.setattr("graphc.compress.int8.STEM_CHANNELS", 0)
    plain = quantize_int8(g, calibration=calibration, prefer="size")
    assert "SpaceToDepth" not in [plain.op(n) for n in plain.op_nodes()]
    got = run_onnxruntime(to_bytes(h), feeds)["y"]
    np.testing.assert_array_equal(got, run_onnxruntime(to_bytes(plain), feeds)["y"])
    # The interpreter computes the file's ops as written: the same within float32 rounding.
    np.testing.assert_allclose(run(h, feeds)["y"], run(plain, feeds)["y"], rtol=1e-5,
                               atol=1e-5)


def test_a_pruned_stem_weight_stays_a_bitmask():
    # The stem's int8 weight is <weight>.s2d.int8: quantize-int8 stores it as a bitmask again
    # like every pruned weight (it was left dense, and the file was 1.96x as large).
    from graphc.compress import sparse
    from graphc.passes.prune_magnitude import prune_magnitude

    b = GraphBuilder("pruned_stem", seed=1)
    x = b.input("x", (1, 3, 16, 16))
    h = nn.relu(nn.conv2d(x, 64, 7, stride=2, padding=3, name="stem"))
    b.output(nn.linear(nn.flatten(nn.global_avg_pool(h)), 4, name="fc"), "y")
    calibration = np.random.default_rng(3).standard_normal((8, 3, 16, 16)).astype(np.float32)
    h = quantize_int8(prune_magnitude(b.build(), sparsity=0.9), calibration=calibration,
                      prefer="size")
    assert "SpaceToDepth" in [h.op(n) for n in h.op_nodes()]
    assert "stem.weight.s2d.int8" in sparse.encoded_weights(h)


def test_quantization_aware_training_simulates_the_residual_adds():
    # QAT fake-quantizes the junctions where quantize-int8 quantizes them: the int8 file runs
    # its Add on uint8 and computes what training simulated. A record from before (no
    # "junctions") rebuilds without them, and its file keeps the Add in float as it trained.
    from graphc.compress.qat import prepare, qat_graph

    g = residual_net()
    rng = np.random.default_rng(0)
    batches = [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(4)]
    qat, record = prepare(g, batches)
    assert record["junctions"] is True
    old = {k: v for k, v in record.items() if k != "junctions"}
    for model, dequantized in ((qat, 2), (qat_graph(g, old), 1)):
        h = quantize_int8(model, prefer="size")
        (add,) = [n for n in h.op_nodes() if h.op(n) == "Add"]
        assert [h.op(v.node) for v in h.in_values(add)].count("DequantizeLinear") == dequantized
        if model is qat:
            want, got = run(qat, batches[0])["y"], run(h, batches[0])["y"]
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_a_gemm_chain_is_the_same_in_any_layer_order_and_fuses_whole():
    # build() placed each layer's input QuantizeLinear while it walked the layers, so when fc1
    # was handled its ReLU still fed fc2 directly, and _keep_fusable made it LeakyRelu(alpha=0):
    # onnxruntime then ran QGemm, a float LeakyRelu and a QuantizeLinear per layer, and the
    # layers given in the other order made another file. Every activation is placed first now.
    from graphc.compress import calibrate
    from graphc.compress.int8 import build, find_layers, needed_values

    g = folded("mlp")
    layers = find_layers(g)
    ranges = calibrate.measure_ranges(g, [{"x": digits_like(g, 1)}], needed_values(g, layers))
    grids = {v: calibrate.activation_grid(*r) for v, r in ranges.items()}
    h = build(g, layers, grids)
    assert to_bytes(h) == to_bytes(build(g, layers[::-1], grids))
    assert "LeakyRelu" not in [h.op(n) for n in h.op_nodes()]
    ops = [op for _, op in executed_ops(to_bytes(h), {"x": digits_like(g, 1)})]
    assert ops == ["QuantizeLinear", "QGemm", "QGemm", "QGemm"]
