"""quantize-int8: the emitted QDQ pattern, its numbers against the interpreter and fp32, the
profile check, per-layer fallback, refusals and idempotence."""

from __future__ import annotations

import numpy as np
import pytest

from graphc import GraphBuilder, nn
from graphc.compress.latency import runtime_weight_dequantize
from graphc.errors import UsageError
from graphc.interpret import run
from graphc.ir import Value
from graphc.models import load
from graphc.onnxio.export import to_bytes
from graphc.onnxio.runtime import run_onnxruntime, session
from graphc.passes.quantize_int8 import quantize_int8
from graphc.pipeline import run_pipeline
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
