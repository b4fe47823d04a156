"""binarize: BinarySign and its straight-through gradient, bit packing, recognition of binary
layers by value, exactness of every lowering against the interpreter on the unlowered graph,
onnxruntime folding the unpacking, force mode, refusals and idempotence."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from graphc import nn
from graphc.autodiff import gradient_graph
from graphc.compress import binary, bits
from graphc.compress.binary_train import binary_graph, evaluate_weights
from graphc.dsl import GraphBuilder
from graphc.errors import UsageError
from graphc.interpret import run
from graphc.ir import CONST, Graph, Value
from graphc.models import load
from graphc.onnxio.export import to_bytes
from graphc.onnxio.runtime import session
from graphc.passes.binarize import binarize
from graphc.pipeline import resolve, run_pipeline
from graphc.rewrite import PassReport

F32 = np.float32
UNPACK_OPS = {"Cast", "Div", "Mul", "Sub", "GreaterOrEqual", "Where", "Pad", "Reshape",
              "Concat", "Split"}


def set_const(g: Graph, name: str, array: np.ndarray) -> None:
    array = np.array(array, F32)
    array.flags.writeable = False
    g.nx.nodes[name]["value"] = array


def numpy_binarized(w: np.ndarray, axis: int) -> np.ndarray:
    """alpha * sign(w), alpha = mean |w| per channel along axis, sign(0) = +1 (XNOR-Net)."""
    moved = np.moveaxis(w, axis, 0)
    alpha = np.abs(moved.astype(np.float64)).reshape(moved.shape[0], -1).mean(axis=1)
    alpha = alpha.astype(F32).reshape((-1,) + (1,) * (w.ndim - 1))
    return np.moveaxis(np.where(moved >= 0, alpha, -alpha), 0, axis).astype(F32)


def binary_cnn(batch: int = 2, seed: int = 0, *, signs: bool = True, pool_first: bool = False
               ) -> Graph:
    """The digits cnn's shape (16 -> 32 -> pool -> 64 -> pool -> fc 10) with BinarySign after
    every BatchNormalization (``signs``), inner conv weights alpha * sign(W), BN parameters
    with both signs of gamma; ``pool_first`` pools before the sign instead of after it."""
    b = GraphBuilder("bcnn", seed=seed)
    h = b.input("x", (batch, 1, 8, 8))
    for name, channels, pool in (("block1", 16, False), ("block2", 32, True),
                                 ("block3", 64, True)):
        with b.scope(name):
            h = nn.batch_norm(nn.conv2d(h, channels, 3, padding="same", bias=False,
                                        name="conv"), name="bn")
        if pool and pool_first:
            h = nn.max_pool2d(h, 2, name=f"{name}.pool")
        h = b.op("BinarySign", h, name=f"{name}.sign") if signs else nn.relu(h)
        if pool and not pool_first:
            h = nn.max_pool2d(h, 2, name=f"{name}.pool")
    b.output(nn.linear(nn.flatten(h), 10, name="fc"), "logits")
    g = b.build()
    rng = np.random.default_rng(seed + 1)
    for name in ("block1", "block2", "block3"):
        c = g.type_of(Value(f"{name}.bn.weight")).shape
        set_const(g, f"{name}.bn.weight", rng.uniform(0.5, 2, c) * rng.choice([-1, 1], c))
        set_const(g, f"{name}.bn.bias", rng.uniform(-1, 1, c))
        set_const(g, f"{name}.bn.running_mean", rng.uniform(-2, 2, c))
        set_const(g, f"{name}.bn.running_var", rng.uniform(0.5, 2, c))
    for name in ("block2.conv.weight", "block3.conv.weight"):
        set_const(g, name, numpy_binarized(g.const_value(Value(name)), 0))
    return g


def inference(g: Graph) -> Graph:
    h, _ = run_pipeline(g, resolve(pipeline="inference"))
    return h


def images(batch: int = 2, seed: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((batch, 1, 8, 8)).astype(F32)}


def optimized_ops(model: bytes, tmp_path) -> list[str]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]


def ort_run(g: Graph, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return session(to_bytes(g), threads=1).run(None, feeds)


# ----- BinarySign ---------------------------------------------------------------------------


def test_binary_sign_values_and_sign_of_zero_on_both_runtimes():
    b = GraphBuilder("sign")
    x = b.input("x", (7,))
    b.output(b.op("BinarySign", x), "y")
    g = b.build()
    feeds = {"x": np.array([-3.0, -1e-30, -0.0, 0.0, 1e-30, 0.5, 2.0], F32)}
    want = [-1, -1, 1, 1, 1, 1, 1]
    assert run(g, feeds)["y"].tolist() == want
    assert run(g, feeds)["y"].dtype == F32
    assert ort_run(g, feeds)[0].tolist() == want


def test_binary_sign_keeps_float64():
    b = GraphBuilder("sign64", dtype=np.float64)
    x = b.input("x", (3,))
    b.output(b.op("BinarySign", x), "y")
    y = run(b.build(), {"x": np.array([-2.0, 0.0, 3.0])})["y"]
    assert y.dtype == np.float64 and y.tolist() == [-1.0, 1.0, 1.0]


def test_straight_through_gradient_by_hand():
    b = GraphBuilder("ste", dtype=np.float64)
    x = b.input("x", (8,))
    b.output(b.op("BinarySign", x) * b.const(np.arange(1.0, 9.0)), "y")
    grads = run(gradient_graph(b.build(), wrt=["x"]),
                {"x": np.array([-2.0, -1.0, -0.999, -0.0, 0.0, 0.3, 1.0, 1.001])})
    # dy/dx = r * (|x| <= 1), bounds included, r = 1..8
    assert grads["dy/dx"].tolist() == [0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 0.0]


# ----- packing ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [8, 13, 64, 4608, 1001])
def test_packing_round_trip_against_numpy(n):
    signs = np.random.default_rng(n).random(n) < 0.5
    packed, tail = bits.pack(signs)
    assert packed.dtype == np.uint8 and packed.shape == (n // 8, 1)
    np.testing.assert_array_equal(packed.reshape(-1),
                                  np.packbits(signs[:8 * (n // 8)], bitorder="big"))
    np.testing.assert_array_equal(tail, signs[8 * (n // 8):].astype(np.int32))
    np.testing.assert_array_equal(bits.unpack(packed, tail), signs)
    g = Graph("unpack")
    t = g.add_const("t", tail) if tail.size else None
    flat = ("flat", "all") if t is not None else ("flat", None)
    g.outputs = [bits.unpack_in_graph(g, g.add_const("p", packed), t, "p", *flat)]
    got = run(g, {})[g.output_names()[0]]
    np.testing.assert_array_equal(got, np.unpackbits(packed.reshape(-1), bitorder="big")
                                  .tolist() + tail.tolist())


@pytest.mark.parametrize("sizes", [[8], [13], [135, 7, 64], [1, 1, 1], [4608, 1001, 9]])
def test_flags_packing_and_unpacking_against_numpy(sizes):
    rng = np.random.default_rng(sum(sizes))
    vectors = [rng.random(n) < 0.5 for n in sizes]
    packed, spans = bits.pack_flags(vectors)
    joined = np.concatenate(vectors)
    assert packed.dtype == np.uint8 and packed.shape == (-(-joined.size // 8), 1)
    np.testing.assert_array_equal(packed.reshape(-1), np.packbits(joined, bitorder="big"))
    assert [end - start for start, end in spans] == sizes and spans[0][0] == 0
    assert all(a[1] == b[0] for a, b in zip(spans[:-1], spans[1:], strict=True))
    g = Graph("flags")
    g.outputs = [bits.unpack_flags(g, g.add_const("p", packed), "p")]
    assert [g.op(n) for n in g.op_nodes()] == ["Mul", "GreaterOrEqual"]
    got = run(g, {})["p.on"]
    assert got.dtype == bool and got.shape == (packed.shape[0], 8)
    np.testing.assert_array_equal(session(to_bytes(g), threads=1).run(None, {})[0], got)
    got = got.reshape(-1)
    np.testing.assert_array_equal(got, np.unpackbits(packed.reshape(-1), bitorder="big"))
    for (start, end), v in zip(spans, vectors, strict=True):
        np.testing.assert_array_equal(got[start:end], v)


def test_sign_table_decodes_every_layer_from_one_constant(tmp_path):
    rng = np.random.default_rng(3)
    shapes = [((5, 3, 3, 3), np.float32), ((7, 4), np.int8), ((2, 3, 1, 1), np.int8),
              ((3, 6), np.float32)]
    g = Graph("signs")
    table = binary.SignTable(g)
    arrays = [rng.random(shape) < 0.5 for shape, _ in shapes]
    pairs = list(zip(arrays, shapes, strict=True))
    outs = [table.add(f"l{i}", a, dtype) for i, (a, (_, dtype)) in enumerate(pairs)]
    table.finish()
    g.outputs = outs
    g.verify()
    consts = [n for n in g.nx if g.op(n) == CONST and g.const_value(Value(n)).size > 8]
    assert consts == ["bits"]
    assert g.const_value(Value("bits")).size == -(-sum(a.size for a in arrays) // 8)
    ops = [g.op(n) for n in g.op_nodes()]
    # one Where (int8, as two layers read int8), one Split, the float32 layers Cast their part
    assert ops.count("Where") == 1 and ops.count("Split") == 1 and ops.count("Cast") == 2
    assert ops.count("Reshape") == 5 and "Pad" not in ops  # 95 bits: flattened first
    got = run(g, {})
    model = to_bytes(g)
    ort_got = session(model, threads=1).run(None, {})
    for i, (a, (_, dtype)) in enumerate(pairs):
        want = np.where(a, 1, -1).astype(dtype)
        assert got[f"l{i}"].dtype == dtype and ort_got[i].dtype == dtype
        np.testing.assert_array_equal(got[f"l{i}"], want)
        np.testing.assert_array_equal(ort_got[i], want)
    # whole bytes per layer: the (q, 8) bits are split as they are, no flattening
    whole = Graph("whole")
    t = binary.SignTable(whole)
    parts = [rng.random(shape) < 0.5 for shape in ((4, 2, 3, 3), (3, 8))]
    whole.outputs = [t.add(f"w{i}", a, np.float32) for i, a in enumerate(parts)]
    t.finish()
    assert [whole.op(n) for n in whole.op_nodes()].count("Reshape") == 2
    for i, a in enumerate(parts):
        np.testing.assert_array_equal(run(whole, {})[f"w{i}"], np.where(a, 1.0, -1.0))
    # one layer filling the whole bytes needs no Split
    one = Graph("one")
    t = binary.SignTable(one)
    one.outputs = [t.add("w", arrays[1][:4, :2], np.float32)]
    t.finish()
    assert "Split" not in [one.op(n) for n in one.op_nodes()]
    np.testing.assert_array_equal(run(one, {})["w"], np.where(arrays[1][:4, :2], 1.0, -1.0))


# ----- recognition --------------------------------------------------------------------------


def test_recognition_by_value_per_channel():
    w = numpy_binarized(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(F32), 0)
    signs, alpha = binary.binary_parts(w, 0)
    np.testing.assert_array_equal(signs, w >= 0)
    np.testing.assert_array_equal(alpha, np.abs(w).reshape(4, -1).max(axis=1))
    assert binary.binary_parts(w, 1) is None  # along inputs, channels mix magnitudes
    bad = w.copy()
    bad[2, 0, 0, 0] *= 1.0001
    assert binary.binary_parts(bad, 0) is None
    zero = w.copy()
    zero[1] = 0
    assert binary.binary_parts(zero, 0) is None  # a_c > 0
    one_sign = np.abs(w)
    assert binary.binary_parts(one_sign, 0) is not None
    np.testing.assert_array_equal(binary.binarized(w, 0), w)


def test_binary_layers_survive_batchnorm_folding_and_are_found():
    g = inference(binary_cnn())
    report = PassReport("binarize")
    h = binarize(g, prefer="integer", report=report)
    assert [n for n, _ in report.refusals] == ["block1.conv", "logits"]
    assert "weights not binary" in dict(report.refusals)["block1.conv"]
    assert [h.op(n) for n in h.op_nodes()].count("QLinearConv") == 2


# ----- exactness ----------------------------------------------------------------------------


@pytest.mark.parametrize("pool_first", [False, True])
@pytest.mark.parametrize("fold_bn", [True, False])
def test_all_binary_cnn_is_exact_and_chained(pool_first, fold_bn):
    g = binary_cnn(batch=4, pool_first=pool_first)
    g = inference(g) if fold_bn else g
    report = PassReport("binarize")
    h = binarize(g, prefer="integer", report=report)
    ops = [h.op(n) for n in h.op_nodes()]
    assert ops.count("QLinearConv") == 2 and "Conv" in ops  # block1 stays fp32
    assert "BatchNormalization" not in ops[ops.index("QLinearConv"):]
    # chained: the second QLinearConv reads the first's codes through MaxPool and Clip
    second = [n for n in h.op_nodes() if h.op(n) == "QLinearConv"][1]
    clip = h.in_values(second)[0].node
    assert h.op(clip) == "Clip" and h.op(h.in_values(clip)[0].node) == "MaxPool"
    feeds = images(4)
    want = run(g, feeds)["logits"]
    assert np.max(np.abs(run(h, feeds)["logits"] - want)) == 0
    # onnxruntime: the same fc on the same +-1 inputs as onnxruntime on the unlowered graph
    assert np.max(np.abs(ort_run(h, feeds)[0] - ort_run(g, feeds)[0])) == 0
    np.testing.assert_allclose(ort_run(h, feeds)[0], want, rtol=0, atol=1e-5)
    assert not any("within float32 rounding" in n for n in report.notes)


def sign_of(g: Graph, value: str) -> Graph:
    h = g.copy()
    h.outputs = [Value(value)]
    return h


def test_signs_equal_everywhere_in_the_integer_chain():
    g = inference(binary_cnn(batch=8))
    h = binarize(g, prefer="integer")
    feeds = images(8, seed=5)
    for block in ("block2", "block3"):
        want = run(sign_of(g, f"{block}.sign"), feeds)[f"{block}.sign"]
        # the thresholded QLinearConv's output: 0 for -1, >= 129 for +1
        q = f"b{block[-1]}.q"  # the integer conv of the k-th layer
        codes = run(sign_of(h, q), feeds)[q]
        assert set(np.unique(codes)) <= {0, 129, 255}
        np.testing.assert_array_equal(np.where(codes >= 129, 1.0, -1.0), want)


def binary_mlp(batch: int = 3, seed: int = 0, *, last_sign: bool = False,
               dyadic: bool = True) -> Graph:
    """x (batch, 20) -> fc1 fp32 -> BN -> sign -> fc2 binary -> BN -> sign -> fc3 binary
    [-> sign] -> fc4 fp32; with ``dyadic`` alphas k/16 and biases k/64, so that the float32
    sums of +-alpha are exact."""
    b = GraphBuilder("bmlp", seed=seed)
    x = b.input("x", (batch, 20))
    h = b.op("BinarySign", nn.batch_norm(nn.linear(x, 24, name="fc1"), name="bn1"),
             name="sign1")
    h = b.op("BinarySign", nn.batch_norm(nn.linear(h, 32, name="fc2"), name="bn2"),
             name="sign2")
    h = nn.linear(h, 16, name="fc3")
    if last_sign:
        h = b.op("BinarySign", h, name="sign3")
    b.output(nn.linear(h, 5, name="fc4"), "y")
    g = b.build()
    rng = np.random.default_rng(seed + 7)
    for name, (n, k) in (("fc2", (32, 24)), ("fc3", (16, 32))):
        alpha = rng.integers(1, 16, n) / 16 if dyadic else rng.uniform(0.05, 1.0, n)
        signs = np.where(rng.random((n, k)) < 0.5, 1.0, -1.0)
        set_const(g, f"{name}.weight", signs * alpha[:, None])
        set_const(g, f"{name}.bias", rng.integers(-64, 64, n) / 64)
    for name, c in (("bn1", 24), ("bn2", 32)):
        set_const(g, f"{name}.weight", rng.uniform(0.5, 2, c) * rng.choice([-1, 1], c))
        set_const(g, f"{name}.bias", rng.uniform(-1, 1, c))
        set_const(g, f"{name}.running_mean", rng.uniform(-2, 2, c))
        set_const(g, f"{name}.running_var", rng.uniform(0.5, 2, c))
    return g


@pytest.mark.parametrize("last_sign", [False, True])
def test_binary_fc_with_matmul_integer_is_exact(last_sign):
    g = binary_mlp(last_sign=last_sign)
    h = binarize(g, prefer="integer")
    ops = [h.op(n) for n in h.op_nodes()]
    assert ops.count("MatMulInteger") == 2 and ops.count("Gemm") == 2
    feeds = {"x": np.random.default_rng(2).standard_normal((3, 20)).astype(F32)}
    want = run(g, feeds)["y"]
    assert np.max(np.abs(run(h, feeds)["y"] - want)) == 0
    np.testing.assert_allclose(ort_run(h, feeds)[0], want, rtol=0, atol=1e-5)
    if not last_sign:
        # fc3's float output alpha * acc + b: exact here (dyadic alphas)
        inner = sign_of(g, "fc3")
        got = run(sign_of(h, "fc3"), feeds)
        np.testing.assert_array_equal(list(got.values())[0], run(inner, feeds)["fc3"])
        np.testing.assert_array_equal(session(to_bytes(sign_of(h, "fc3")), threads=1)
                                      .run(None, feeds)[0], run(inner, feeds)["fc3"])


def test_weights_form_is_bit_identical_and_folded_by_onnxruntime(tmp_path):
    g = inference(binary_cnn(signs=False))  # relu activations: weights form only
    report = PassReport("binarize")
    h = binarize(g, prefer="integer", report=report)
    for tag, name in (("b2.w", "block2.conv.weight"), ("b3.w", "block3.conv.weight")):
        assert h.op(tag) == "Mul"
        folded = run(sign_of(h, tag), {"x": images()["x"]})[tag]
        np.testing.assert_array_equal(folded, g.const_value(Value(name)))
    assert "its input is not a BinarySign output" in dict(report.refusals)["block2.conv"]
    feeds = images(2)
    assert np.max(np.abs(run(h, feeds)["logits"] - run(g, feeds)["logits"])) == 0
    model = to_bytes(h)
    assert np.max(np.abs(session(model, threads=1).run(None, feeds)[0]
                         - ort_run(g, feeds)[0])) == 0
    ops = optimized_ops(model, tmp_path)
    assert not set(ops) & UNPACK_OPS, ops


def test_sign_codes_of_a_float_value_on_both_runtimes():
    # HardSigmoid(x, FLT_MAX, 1) then QuantizeLinear(0.5, 127): 129 exactly where x >= 0
    b = GraphBuilder("codes")
    x = b.input("x", (11,))
    b.output(b.op("BinarySign", x), "s")
    g = b.build()
    tiny = np.finfo(F32).tiny
    feeds = {"x": np.array([-np.inf, -3e38, -1.0, -tiny, -0.0, 0.0, 1e-45, tiny, 1.0, 3e38,
                            np.inf], F32)}
    codes = binary.Codes(g).of(Value("s"), "b1")
    assert [g.op(codes.node), g.op(g.in_values(codes.node)[0].node)] == \
        ["QuantizeLinear", "HardSigmoid"]
    g.outputs = [codes]
    want = np.where(feeds["x"] >= 0, 129, 127).astype(np.uint8)
    np.testing.assert_array_equal(run(g, feeds)[codes.node], want)
    np.testing.assert_array_equal(session(to_bytes(g), threads=1).run(None, feeds)[0], want)


def test_integer_forms_unpacking_is_folded_by_onnxruntime(tmp_path):
    h = binarize(inference(binary_cnn()), prefer="integer")
    ops = optimized_ops(to_bytes(h), tmp_path)
    assert ops.count("QLinearConv") == 2
    # the first sign's HardSigmoid runs inside the fp32 conv before it
    assert "HardSigmoid" not in ops and "Where" not in ops, ops
    assert not {"Div", "Sub", "Concat", "Reshape", "Pad"} & set(ops), ops
    h = binarize(binary_mlp(), prefer="integer")
    ops = optimized_ops(to_bytes(h), tmp_path)
    assert "MatMulInteger" in ops and not {"Div", "Sub", "Reshape", "Pad"} & set(ops), ops


def test_file_is_small():
    g = inference(binary_cnn())
    report = PassReport("binarize")
    h = binarize(g, prefer="integer", report=report)
    stored = sum(np.asarray(h.const_value(Value(n))).nbytes for n in h.nx if h.op(n) == CONST)
    # inner convs 1 bit per weight + a threshold per channel; block1 and fc fp32
    weights = (32 * 16 * 9 + 64 * 32 * 9) // 8 + 4 * (32 + 64)
    fp32 = 4 * (16 * 9 + 16 + 10 * 256 + 10)
    assert stored <= weights + fp32 + 600, stored
    assert len(to_bytes(h)) < 0.2 * len(to_bytes(g))
    assert report.notes[-1].startswith("total")


def test_all_binary_digits_cnn_file_size(tmp_path):
    g = load("cnn").build(seed=0, batch=1)
    fp32 = to_bytes(inference(g))
    b = inference(evaluate_weights(binary_graph(g, "weights", keep_fp32=())))
    report = PassReport("binarize")
    h = binarize(b, report=report)
    assert [d for d in report.notes if "weights:" in d and "nodes b" in d]
    assert len(report.notes) == 5
    # every conv and the fc: one bit per weight, all in one constant, decoded once
    n = 16 * 1 * 9 + 32 * 16 * 9 + 64 * 32 * 9 + 10 * 256
    assert [x for x in h.nx if h.op(x) == CONST and h.const_value(Value(x)).size > 8
            and h.const_value(Value(x)).dtype == np.uint8] == ["bits"]
    assert h.const_value(Value("bits")).size == n // 8 == 3218
    ops = [h.op(x) for x in h.op_nodes()]
    assert ops.count("Where") == 1 and ops.count("Split") == 1 and "Pad" not in ops
    assert "Cast" not in ops  # float32 alphas that float16 cannot hold stay float32
    model = to_bytes(h)
    # Measured 5,695 of 104,570 bytes (0.0545x): the bits 3,218, the alphas and biases 976
    # (0.040x together); the rest is the graph.
    assert len(model) <= 0.055 * len(fp32), (len(model), len(fp32))
    assert to_bytes(binarize(b)) == model  # deterministic
    feeds = {"x": np.random.default_rng(4).standard_normal((1, 1, 8, 8)).astype(F32)}
    assert np.max(np.abs(run(h, feeds)["logits"] - run(b, feeds)["logits"])) == 0
    assert np.max(np.abs(session(model, threads=1).run(None, feeds)[0]
                         - ort_run(b, feeds)[0])) == 0
    folded = optimized_ops(model, tmp_path)
    assert not set(folded) & UNPACK_OPS and folded.count("Conv") == 3, folded


def test_all_binary_weights_and_activations_digits_cnn_file_size(tmp_path):
    g = load("cnn").build(seed=0, batch=1)
    fp32 = to_bytes(inference(g))
    b = inference(evaluate_weights(binary_graph(g, "all", keep_fp32=())))
    h = binarize(b, prefer="integer")
    ops = [h.op(x) for x in h.op_nodes()]
    assert ops.count("QLinearConv") == 2 and ops.count("MatMulInteger") == 1
    # the thresholds of these seeded weights fit int8: 1 byte per channel, Cast at load
    assert [h.const_value(Value(f"b{k}.t")).dtype for k in (2, 3)] == [np.int8, np.int8]
    model = to_bytes(h)
    # Measured 5,206 of 104,570 bytes (0.0498x): the target of 0.05.
    assert len(model) <= 0.05 * len(fp32), (len(model), len(fp32))
    assert to_bytes(binarize(b, prefer="integer")) == model  # deterministic
    # Untrained, every threshold sits where float32 rounding decides the float graph's signs
    # (test_all_binary_cnn_is_exact_and_chained compares with it); here: onnxruntime runs
    # the lowered file exactly as the interpreter does.
    h4 = binarize(inference(evaluate_weights(binary_graph(
        load("cnn").build(seed=0, batch=4), "all", keep_fp32=()))), prefer="integer")
    feeds = {"x": np.random.default_rng(5).standard_normal((4, 1, 8, 8)).astype(F32)}
    np.testing.assert_array_equal(session(to_bytes(h4), threads=1).run(None, feeds)[0],
                                  run(h4, feeds)["logits"])
    folded = optimized_ops(model, tmp_path)
    assert not {"Split", "Reshape", "Cast", "Mul"} & set(folded), folded


# ----- force, refusals, idempotence ---------------------------------------------------------


def test_force_binarizes_the_inner_layers_and_reports_the_error():
    g = inference(load("cnn").build())
    report = PassReport("binarize")
    h = binarize(g, force=True, prefer="weights", report=report)
    for tag, name in (("b2.w", "block2.conv.weight"), ("b3.w", "block3.conv.weight")):
        folded = run(sign_of(h, tag), images(1))[tag]
        np.testing.assert_array_equal(folded, numpy_binarized(g.const_value(Value(name)), 0))
    assert h.op("block1.conv.weight") == CONST and h.op("fc.weight") == CONST
    assert "output error" in report.notes[0]
    chosen = binarize(g, force=True, layers=["logits"], prefer="weights")
    folded = run(sign_of(chosen, "b4.w"), images(1))["b4.w"]
    np.testing.assert_array_equal(folded, numpy_binarized(g.const_value(Value("fc.weight")),
                                                          0))
    assert chosen.op("block2.conv.weight") == CONST


def test_without_force_fp32_layers_are_left_with_a_reason():
    g = inference(load("cnn").build())
    report = PassReport("binarize")
    h = binarize(g, report=report)
    assert h.format() == g.format()
    assert {n for n, _ in report.refusals} == {"block1.conv", "block2.conv", "block3.conv",
                                               "logits"}


def test_bad_layer_names_list_the_known_ones():
    g = inference(load("cnn").build())
    with pytest.raises(UsageError) as info:
        binarize(g, layers=["block2.cnv"])
    text = str(info.value)
    assert "block2.conv" in text and "logits" in text and "Did you mean 'block2.conv'" in text
    with pytest.raises(UsageError, match="preference"):
        binarize(g, prefer="fast")


@pytest.mark.parametrize("prefer", ["integer", "weights"])
def test_idempotent(prefer):
    g = inference(binary_cnn())
    once = binarize(g, prefer=prefer)
    report = PassReport("binarize")
    twice = binarize(once, prefer=prefer, report=report)
    assert twice.format() == once.format()
    assert report.rewrites == 0


def test_threshold_folding_by_hand():
    # sign(a * acc + b) with BN: k = gamma / sqrt(var + eps) = -2: a = 0.5 * -2 = -1 (flip),
    # b = (0.25 - 1) * -2 + 0.5 = 2: sign +1 iff -acc + 2 >= 0 iff (-acc) >= -2
    flip, t, size, _ = binary.thresholds(np.array([0.5]), np.array([0.25]),
                                         [np.array([-2.0]), np.array([0.5]), np.array([1.0]),
                                          np.array([1.0])], 0.0, 9)
    assert flip.tolist() == [True] and t.tolist() == [-2] and size.tolist() == [1.0]


def test_a_sign_that_is_a_graph_output_keeps_its_name():
    # The last conv's BinarySign was the output: its integer lowering read it back as
    # DequantizeLinear(Clip(codes)) named b2.f, and the file's output was renamed from y.
    b = GraphBuilder("sign_out", seed=3)
    h = b.op("BinarySign", b.input("x", (2, 4, 6, 6)))
    for k in range(2):
        h = b.op("BinarySign", nn.batch_norm(nn.conv2d(h, 4, 3, padding=1, bias=False,
                                                        name=f"conv{k}"), name=f"bn{k}"))
    b.output(h, "y")
    g = inference(b.build())
    for node in g.op_nodes():
        if g.op(node) == "Conv":
            # alpha 1/2: the float32 sums are exact, so no sign is decided by rounding
            w = g.in_values(node)[1]
            set_const(g, w.node, np.where(np.asarray(g.const_value(w)) >= 0, 0.5, -0.5))
    h = binarize(g, prefer="integer")
    assert [h.op(n) for n in h.op_nodes()].count("QLinearConv") == 2
    assert h.output_names() == ["y"]
    feeds = {"x": np.random.default_rng(4).standard_normal((2, 4, 6, 6)).astype(F32)}
    want = run(g, feeds)["y"]
    assert set(np.unique(want)) == {-1.0, 1.0}
    np.testing.assert_array_equal(run(h, feeds)["y"], want)
    np.testing.assert_array_equal(ort_run(h, feeds)[0], want)
