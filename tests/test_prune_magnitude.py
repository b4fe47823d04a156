"""prune-magnitude: masks against numpy (per layer, global, ties, existing zeros), the bitmask
encoding against np.packbits, numerics on the interpreter and onnxruntime, onnxruntime folding
the decoder, file sizes, idempotence, refusals, and both orders with quantize-int8."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from graphc.compress import sparse
from graphc.compress.latency import runtime_weight_dequantize
from graphc.errors import UsageError
from graphc.interpret import run
from graphc.ir import CONST, Graph, Value
from graphc.models import load
from graphc.onnxio.export import to_bytes
from graphc.onnxio.runtime import session
from graphc.passes.fold_constants import fold_constants
from graphc.passes.prune_magnitude import prune_magnitude
from graphc.passes.quantize_int8 import quantize_int8
from graphc.pipeline import run_pipeline
from graphc.rewrite import PassReport

F32 = np.float32
DECODE_OPS = {"Cast", "Div", "Mul", "Sub", "Concat", "CumSum", "Gather", "Where", "BitShift",
              "NonZero", "ScatterND"}


# ----- helpers ----------------------------------------------------------------------------------


def numpy_mask(w: np.ndarray, sparsity: float) -> np.ndarray:
    """Keep all but the round-half-up(s * n) smallest |w| (earlier first at ties), never a 0."""
    flat = np.abs(w.astype(np.float64)).ravel()
    remove = int(np.floor(sparsity * flat.size + 0.5))
    keep = np.ones(flat.size, bool)
    keep[np.argsort(flat, kind="stable")[:remove]] = False
    keep[flat == 0] = False
    return keep.reshape(w.shape)


def two_layer_graph(w1: np.ndarray, w2: np.ndarray) -> Graph:
    """x (1, 2, 5, 5) -> Conv(w1, 3x3) -> Flatten -> MatMul(w2) -> y."""
    g = Graph("two")
    x = g.add_input("x", (1, 2, 5, 5))
    c = g.add_node("Conv", [x, g.add_const("w1", w1, trainable=True),
                            g.add_const("b1", np.zeros(w1.shape[0], F32), trainable=True)],
                   name="conv")
    f = g.add_node("Flatten", [c], name="flat")
    g.outputs = [g.add_node("MatMul", [f, g.add_const("w2", w2, trainable=True)], name="y")]
    g.verify()
    return g


def random_two_layer(seed: int = 0) -> Graph:
    rng = np.random.default_rng(seed)
    # 378 and 1,890 entries: not multiples of 8 (the masks have tails), large enough that the
    # bitmask form at 90% is smaller than the dense one.
    w1 = rng.standard_normal((21, 2, 3, 3)).astype(F32)
    w2 = (0.1 * rng.standard_normal((189, 10))).astype(F32)
    return two_layer_graph(w1, w2)


def with_weights(g: Graph, arrays: dict[str, np.ndarray]) -> Graph:
    h = g.copy()
    for name, array in arrays.items():
        array = np.array(array)
        array.flags.writeable = False
        h.nx.nodes[name]["value"] = array
    return h


def weight(g: Graph, name: str) -> np.ndarray:
    return g.const_value(Value(name)) if g.op(name) == CONST else \
        sparse.decoded_value(g, Value(name))


def optimized_ops(model: bytes, level: ort.GraphOptimizationLevel, tmp_path) -> list[str]:
    """The op types of the model onnxruntime runs after its graph optimizations at ``level``."""
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    path = tmp_path / f"optimized_{int(level)}.onnx"
    options.optimized_model_filepath = str(path)
    ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def calibration(g: Graph, n: int = 48, seed: int = 0) -> np.ndarray:
    shape = g.type_of(Value(g.inputs[0])).shape
    return np.random.default_rng(seed).uniform(0, 16, (n, *shape[1:])).astype(F32)


def inference(name: str) -> Graph:
    g, _ = run_pipeline(load(name).build(), ["remove-dropout", "fold-batchnorm"])
    return g


# ----- masks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_layer_masks_match_numpy(sparsity):
    g = random_two_layer()
    masks = sparse.magnitude_masks(g, sparsity)
    assert sorted(masks) == ["w1", "w2"]
    for name in ("w1", "w2"):
        np.testing.assert_array_equal(masks[name], numpy_mask(weight(g, name), sparsity))


def test_global_masks_match_numpy():
    g = random_two_layer()
    w1, w2 = weight(g, "w1"), weight(g, "w2")
    both = np.concatenate([w1.ravel(), w2.ravel()])
    want = numpy_mask(both, 0.6)
    masks = sparse.magnitude_masks(g, 0.6, scope="global")
    np.testing.assert_array_equal(masks["w1"].ravel(), want[:w1.size])
    np.testing.assert_array_equal(masks["w2"].ravel(), want[w1.size:])
    # w2 is 10x smaller: one threshold over both prunes it far more than w1.
    assert 1 - masks["w2"].mean() > 5 * (1 - masks["w1"].mean())


def test_ties_are_broken_by_position():
    w1 = np.ones((3, 2, 3, 3), F32)
    w1.ravel()[[5, 40]] = -2.0
    w2 = np.zeros((27, 6), F32)
    w2[0, 0] = 1.0
    g = two_layer_graph(w1, w2)
    mask = sparse.magnitude_masks(g, 0.5, params=["w1"])["w1"].ravel()
    # 27 of 54 go: the 52 ones tie, so the first 27 ones (positions 0..27 without 5) go.
    removed = np.flatnonzero(~mask)
    assert removed.tolist() == [k for k in range(28) if k != 5]
    # Globally, the 161 zeros of w2 go first, then the ties of w1 by position.
    masks = sparse.magnitude_masks(g, 170 / (54 + 162), scope="global")
    assert np.count_nonzero(~masks["w2"]) == 161
    assert np.flatnonzero(~masks["w1"].ravel()).tolist() == list(range(5)) + [6, 7, 8, 9]


def test_existing_zeros_count_as_removed():
    g = random_two_layer(1)
    w1 = weight(g, "w1").copy()
    w1.ravel()[:230] = 0.0  # 230 of 378 (61%) already zero
    g = with_weights(g, {"w1": w1})
    mask = sparse.magnitude_masks(g, 0.5, params=["w1"])["w1"]
    np.testing.assert_array_equal(mask, w1 != 0)  # still 61%, not 50% and not more
    # 50% then 90% ends at 90% (round(0.9 * 378) = 340 zeros), the same as 90% at once.
    h = random_two_layer(2)
    half = prune_magnitude(h, sparsity=0.5, encode=False)
    then = prune_magnitude(half, sparsity=0.9, encode=False)
    once = prune_magnitude(h, sparsity=0.9, encode=False)
    for name in ("w1", "w2"):
        np.testing.assert_array_equal(weight(then, name), weight(once, name))
    assert np.count_nonzero(weight(then, "w1") == 0) == 340


def test_masks_of_int8_weights_rank_the_dequantized_magnitude():
    g = inference("mlp")
    q = quantize_int8(g, calibration=calibration(g), prefer="size")
    names = sparse.prunable(q)
    assert names == ["fc1.weight.int8", "fc2.weight.int8", "fc3.weight.int8"]
    masks = sparse.magnitude_masks(q, 0.7)
    for name in names:
        dq = q.users(Value(name))[0][0]
        qv = q.const_value(Value(name)).astype(np.float64)
        scale = q.const_value(q.in_values(dq)[1]).astype(np.float64)
        axis = q.attrs(dq)["axis"]
        shape = [1, 1]
        shape[axis] = -1
        np.testing.assert_array_equal(masks[name], numpy_mask(qv * scale.reshape(shape), 0.7))


# ----- the encoded form -------------------------------------------------------------------------


def test_encoding_is_packbits_and_values_with_a_leading_zero():
    g = random_two_layer(3)
    h = prune_magnitude(g, sparsity=0.75)
    w1 = weight(prune_magnitude(g, sparsity=0.75, encode=False), "w1")
    keep = (w1 != 0).ravel()
    # round(0.75 * 378) = round(283.5) = 284 (half up)
    assert keep.size == 378 and np.count_nonzero(~keep) == 284
    np.testing.assert_array_equal(h.const_value(Value("w1.mask")),
                                  np.packbits(keep[:376], bitorder="big").reshape(47, 1))
    np.testing.assert_array_equal(h.const_value(Value("w1.mask_tail")),
                                  keep[376:].astype(np.int32))
    np.testing.assert_array_equal(h.const_value(Value("w1.values")),
                                  np.concatenate([[0.0], w1.ravel()[keep]]).astype(F32))
    np.testing.assert_array_equal(sparse.decoded_value(h, Value("w1")), w1)
    assert h.op("w1") == "Reshape" and h.users(Value("w1")) == [("conv", 1)]
    assert {h.op(n) for n in sparse.decoder_nodes(h, Value("w1"))} - {CONST} <= DECODE_OPS | {
        "Reshape"}
    assert sparse.decoded_value(h, Value("conv")) is None
    assert sparse.decoded_value(g, Value("w1")) is None


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_pruned_graph_is_the_dense_graph_with_masked_weights(name):
    g = load(name).build()
    h = prune_magnitude(g, sparsity=0.8)
    masked = {}
    for w in sparse.prunable(g):
        array = g.const_value(Value(w))
        masked[w] = np.where(numpy_mask(array, 0.8), array, 0).astype(array.dtype)
    reference = with_weights(g, masked)
    # block1's 144 entries: the bitmask form with its decode nodes would be larger.
    assert sparse.encoded_weights(h) == [w for w in masked if w != "block1.conv.weight"]
    feeds = load(name).example_inputs()
    want = run(reference, feeds)
    got = run(h, feeds)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])
    # onnxruntime runs the file as the interpreter does.
    onnx_out = session(to_bytes(h), threads=1).run(None, feeds)
    for value, (key, w) in zip(onnx_out, want.items(), strict=True):
        assert np.max(np.abs(value - w)) <= 2e-6 * max(1.0, float(np.max(np.abs(w)))), key


def test_onnxruntime_folds_the_decoder(tmp_path):
    g = random_two_layer(4)
    h = prune_magnitude(g, sparsity=0.9)
    assert sparse.encoded_weights(h) == ["w1", "w2"]
    model = to_bytes(h)
    for level in (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        ops = optimized_ops(model, level, tmp_path)
        assert not set(ops) & DECODE_OPS, ops
        assert "Reshape" not in ops and "Conv" in ops, ops
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 2, 5, 5)).astype(F32)}
    want = run(h, feeds)["y"]
    np.testing.assert_allclose(session(model, threads=1).run(None, feeds)[0], want,
                               rtol=0, atol=1e-6)


def test_fold_constants_keeps_the_encoding():
    h = prune_magnitude(load("mlp").build(), sparsity=0.9)
    report = PassReport("fold-constants")
    folded = fold_constants(h, report=report)
    assert folded.format() == h.format()
    assert report.rewrites == 0
    reasons = [r for _, r in report.refusals]
    assert reasons[0] == ("fold-constants: folding its 10 constant node(s) would store 32,768 "
                          "bytes of constants instead of 4,320")
    after, _ = run_pipeline(h, ["remove-dropout", "fold-batchnorm", "fold-constants",
                                "remove-identity", "eliminate-dead-code"])
    assert sparse.encoded_weights(after) == ["fc1.weight", "fc2.weight", "fc3.weight"]


# ----- file size --------------------------------------------------------------------------------


def test_file_sizes_of_mlp_at_90_percent():
    g = inference("mlp")
    dense = len(to_bytes(g))
    fp32 = to_bytes(prune_magnitude(g, sparsity=0.9))
    # Measured: 69,498 -> 13,372 bytes (0.19x): 2,128 bytes of bitmask, 1,705 fp32 values and
    # ~1 KiB of decode nodes per weight.
    assert len(fp32) <= 0.27 * dense
    data = calibration(g)
    q = quantize_int8(g, calibration=data, prefer="size")
    quant_then_prune = to_bytes(prune_magnitude(q, sparsity=0.9))
    prune_then_quant = to_bytes(quantize_int8(prune_magnitude(g, sparsity=0.9),
                                              calibration=data, prefer="size"))
    # Measured: 12,467 bytes (0.18x) both ways. Not the 0.15x hoped for: on a model this
    # small the int8 form's own constants (per-channel weight and bias scales, int32 biases and
    # zero points: 3.2 KiB) and nodes, and fc3 (640 entries, too small to encode) dominate.
    for model in (quant_then_prune, prune_then_quant):
        assert len(model) <= 0.185 * dense
        assert len(model) < 0.6 * len(to_bytes(q))


# ----- both orders with quantize-int8 -----------------------------------------------------------


@pytest.mark.parametrize("order", ["prune-then-quantize", "quantize-then-prune"])
def test_with_quantize_int8(order):
    g = inference("mlp")
    data = calibration(g)
    if order == "prune-then-quantize":
        h = quantize_int8(prune_magnitude(g, sparsity=0.9), calibration=data, prefer="size")
    else:
        h = prune_magnitude(quantize_int8(g, calibration=data, prefer="size"), sparsity=0.9)
    assert sparse.encoded_weights(h) == ["fc1.weight.int8", "fc2.weight.int8"]
    for name in ("fc1.weight.int8", "fc2.weight.int8", "fc3.weight.int8"):
        q = weight(h, name)
        assert q.dtype == np.int8
        # round(0.9 * n) zeros at least (an entry may also quantize to 0).
        assert np.count_nonzero(q == 0) >= int(np.floor(0.9 * q.size + 0.5))
        assert h.op(h.users(Value(name))[0][0]) == "DequantizeLinear"
    feeds = {"x": data[:1]}
    model = to_bytes(h)
    assert runtime_weight_dequantize(model, feeds) == []  # still fused into int8 kernels
    want = run(h, feeds)["logits"]
    exact = session(model, threads=1, optimize=False).run(None, feeds)[0]
    np.testing.assert_allclose(exact, want, rtol=0, atol=1e-5 * float(np.max(np.abs(want))))


def test_quantize_then_prune_zeroes_the_int8_weights_of_the_mask():
    g = inference("mlp")
    q = quantize_int8(g, calibration=calibration(g), prefer="size")
    masks = sparse.magnitude_masks(q, 0.9)
    h = prune_magnitude(q, sparsity=0.9)
    for name, mask in masks.items():
        want = np.where(mask, q.const_value(Value(name)), 0)
        np.testing.assert_array_equal(weight(h, name), want)


# ----- no sparsity, idempotence, refusals -------------------------------------------------------


def test_without_sparsity_only_weights_with_zeros_are_encoded():
    g = load("mlp").build()
    fc1 = g.const_value(Value("fc1.weight")).copy()
    fc1[np.abs(fc1) < np.quantile(np.abs(fc1), 0.7)] = 0.0  # a checkpoint pruned to 70%
    fc2 = g.const_value(Value("fc2.weight")).copy()
    fc2.ravel()[::100] = 0.0  # 1% zeros: the bitmask form is not smaller
    g = with_weights(g, {"fc1.weight": fc1, "fc2.weight": fc2})
    report = PassReport("prune-magnitude")
    h = prune_magnitude(g, report=report)
    assert sparse.encoded_weights(h) == ["fc1.weight"]
    np.testing.assert_array_equal(weight(h, "fc1.weight"), fc1)
    np.testing.assert_array_equal(weight(h, "fc2.weight"), fc2)
    assert h.op("fc2.weight") == CONST and h.op("fc3.weight") == CONST
    assert report.notes[0] == ("fc1.weight    70.0% zero (5,734 of 8,192): bitmask + 2,458 "
                               "float32 values, 32,768 -> 10,876 bytes")
    # 1,024 bytes of bitmask, 8,111 values, 16 of shape, ~1 KiB of decode nodes.
    assert report.notes[1] == ("fc2.weight     1.0% zero (82 of 8,192): dense (1.0% zeros: the "
                               "bitmask form would take 34,508 bytes, the dense one 32,768)")
    assert report.notes[2] == "fc3.weight     0.0% zero (0 of 640): dense (no zeros)"
    assert report.rewrites == 1


def test_report_notes_and_idempotence():
    g = load("mlp").build()
    report = PassReport("prune-magnitude")
    once = prune_magnitude(g, sparsity=0.9, report=report)
    assert report.notes[:3] == [
        "fc1.weight    90.0% zero (7,373 of 8,192): bitmask + 819 float32 values, "
        "32,768 -> 4,320 bytes",
        "fc2.weight    90.0% zero (7,373 of 8,192): bitmask + 819 float32 values, "
        "32,768 -> 4,320 bytes",
        "fc3.weight    90.0% zero (576 of 640): bitmask + 64 float32 values, 2,560 -> 356 bytes",
    ]
    dense, small = len(to_bytes(g)), len(to_bytes(once))
    assert report.notes[3] == (f"total        90.0% of 17,024 weights zero; constants 68,912 -> "
                               f"9,896 bytes, ONNX file {dense:,} -> {small:,} bytes "
                               f"({small / dense:.2f}x)")
    assert "1.00-1.11x of dense" in report.notes[4] and "prune-channels" in report.notes[4]
    assert report.rewrites == 3
    for again in ({"sparsity": 0.9}, {}):
        report = PassReport("prune-magnitude")
        twice = prune_magnitude(once, **again, report=report)
        assert report.rewrites == 0
        assert twice.format() == once.format()
        assert to_bytes(twice) == to_bytes(once)


def test_the_input_graph_is_not_changed():
    g = load("mlp").build()
    text = g.format()
    arrays = {n: g.const_value(Value(n)).copy() for n in g.nx if g.op(n) == CONST}
    h = prune_magnitude(g, sparsity=0.5)
    prune_magnitude(h, sparsity=0.9)
    assert g.format() == text
    for node, array in arrays.items():
        np.testing.assert_array_equal(g.const_value(Value(node)), array)


@pytest.mark.parametrize("bad", [1.5, -0.1, "0.9", True, float("nan")])
def test_bad_sparsity_is_a_usage_error(bad):
    with pytest.raises(UsageError) as err:
        prune_magnitude(load("mlp").build(), sparsity=bad)
    assert str(err.value) == (f"sparsity: the sparsity is the fraction of weights to zero; "
                              f"expected a number in [0, 1], e.g. 0.9, got {bad!r}.")


def test_unknown_scope_lists_the_known_ones():
    with pytest.raises(UsageError) as err:
        prune_magnitude(load("mlp").build(), sparsity=0.5, scope="layers")
    assert str(err.value) == ("scope: unknown pruning scope 'layers'; expected one of 'global', "
                              "'layer', got 'layers'. Did you mean 'layer'?")
    with pytest.raises(UsageError, match="unknown prunable weight 'fc9.weight'"):
        sparse.magnitude_masks(load("mlp").build(), 0.5, params=["fc9.weight"])
