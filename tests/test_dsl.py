"""The DSL and the nn helpers: operators, names, seeded init, numerics against numpy, errors.

Every numeric check compares the interpreter and onnxruntime with a numpy computation written
here, independently of graphc's op references.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from graphc import nn
from graphc.dsl import GraphBuilder, Tensor
from graphc.errors import GraphcError, ShapeError
from graphc.interpret import run
from graphc.ir import Graph, Value
from graphc.onnxio.runtime import run_onnxruntime

RNG = np.random.default_rng(1234)


def rand(*shape: int, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    return RNG.uniform(low, high, shape).astype(np.float32)


def check(g: Graph, feeds: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray],
          rtol: float = 1e-5, atol: float = 1e-5) -> None:
    """Assert the interpreter and onnxruntime both give ``expected`` (by output name)."""
    assert sorted(expected) == sorted(g.output_names())
    interp = run(g, feeds)
    ort = run_onnxruntime(g, feeds)
    for name, want in expected.items():
        want = np.asarray(want)
        assert interp[name].shape == want.shape, name
        assert ort[name].shape == want.shape, name
        np.testing.assert_allclose(interp[name], want, rtol=rtol, atol=atol, err_msg=name)
        np.testing.assert_allclose(ort[name], want, rtol=rtol, atol=atol, err_msg=name)


def param(g: Graph, name: str) -> np.ndarray:
    value = g.const_value(Value(name))
    assert value is not None, name
    return value


def set_param(g: Graph, name: str, array: np.ndarray) -> np.ndarray:
    """Replace a constant's value (same shape and dtype) so a formula is tested non-trivially."""
    old = param(g, name)
    array = np.asarray(array, dtype=old.dtype)
    assert array.shape == old.shape
    g.nx.nodes[name]["value"] = array
    return array


# ----- the course's example and Python operators --------------------------------------------


def test_course_example_f_equals_minus_12():
    b = GraphBuilder("course")
    x, y, z = b.inputs("x", "y", "z")
    f = b.output((x + y) * z, "f")
    g = b.build()
    assert f.shape == () and f.dtype == np.float32
    feeds = {"x": np.float32(-2.0), "y": np.float32(5.0), "z": np.float32(-4.0)}
    assert float(run(g, feeds)["f"]) == -12.0
    assert float(run_onnxruntime(g, feeds)["f"]) == -12.0
    assert [g.op(n) for n in g.op_nodes()] == ["Add", "Mul"]


def test_python_operators_with_numbers_and_reflected():
    b = GraphBuilder("ops")
    x = b.input("x", (2, 3))
    w = b.param("w", (3, 4), init="normal")
    outs = {
        "sub_r": 2 - x,
        "div_r": 1 / x,
        "pow": x**2,
        "pow_r": 2**x,
        "neg": -x,
        "matmul": x @ w,
        "add_r": 0.5 + x,
        "mul_r": 3 * x,
        "sub": x - 1.5,
        "div": x / 4,
        "np_scalar_r": np.float32(3.0) - x,
        "np_array_r": np.full((2, 3), 2.0, np.float32) * x,
        "matmul_array": x @ np.arange(6, dtype=np.float64).reshape(3, 2),
    }
    for name, t in outs.items():
        assert isinstance(t, Tensor), name
        assert t.dtype == np.float32, name
        b.output(t, name)
    g = b.build()
    xv = np.array([[1.0, 2.0, 3.0], [-1.0, -2.0, 0.5]], np.float32)
    wv = param(g, "w")
    expected = {
        "sub_r": 2 - xv, "div_r": 1 / xv, "pow": xv**2, "pow_r": 2.0**xv, "neg": -xv,
        "matmul": xv @ wv, "add_r": 0.5 + xv, "mul_r": 3 * xv, "sub": xv - 1.5, "div": xv / 4,
        "np_scalar_r": 3 - xv, "np_array_r": 2 * xv,
        "matmul_array": xv @ np.arange(6, dtype=np.float32).reshape(3, 2),
    }
    check(g, {"x": xv}, expected)
    # Reflected operators keep the number on the left.
    assert g.op("sub_r") == "Sub" and g.in_values("sub_r")[1] == Value("x")
    assert g.op("div_r") == "Div" and g.in_values("div_r")[1] == Value("x")


def test_output_name_is_free_even_after_numbers_were_lifted():
    # Numbers become constants with automatic names; they must not take a user's output name.
    b = GraphBuilder("names")
    x = b.input("x", (2,))
    b.output(2 - x, "c")
    g = b.build()
    xv = np.array([1.0, 5.0], np.float32)
    check(g, {"x": xv}, {"c": 2 - xv})


def test_sum_of_products_adds_no_add_with_zero():
    b = GraphBuilder("neuron")
    xs = b.inputs("x1", "x2", "x3")
    ws = [b.param(f"w{i}", (), init=np.float32(v)) for i, v in enumerate([0.5, -2.0, 3.0], 1)]
    s = sum(w * x for w, x in zip(ws, xs, strict=True))
    b.output(s, "s")
    g = b.build()
    ops = [g.op(n) for n in g.op_nodes()]
    assert ops.count("Mul") == 3
    assert ops.count("Add") == 2
    consts = [n for n in g.nx.nodes if g.op(n) == "Const"]
    assert sorted(consts) == ["w1", "w2", "w3"]
    feeds = {"x1": np.float32(1.0), "x2": np.float32(2.0), "x3": np.float32(-1.0)}
    check(g, feeds, {"s": np.float32(0.5 * 1 - 2.0 * 2 + 3.0 * -1)})


def test_tensor_has_no_truth_value_and_graphs_do_not_mix():
    b1, b2 = GraphBuilder("one"), GraphBuilder("two")
    x1, x2 = b1.input("x"), b2.input("x")
    with pytest.raises(GraphcError, match="no truth value"):
        bool(x1)
    with pytest.raises(GraphcError, match="two different graphs"):
        _ = x1 + x2


def test_tensor_stays_usable_after_it_is_named_as_an_output():
    # A network with two outputs: features, and logits computed from the same features.
    b = GraphBuilder("two_outputs", seed=1)
    x = b.input("x", (2, 3))
    h = nn.relu(x)
    b.output(h, "features")
    assert h.shape == (2, 3)
    b.output(nn.linear(h, 4, name="fc"), "logits")
    g = b.build()
    xv = rand(2, 3)
    w = param(g, "fc.weight")
    check(g, {"x": xv}, {"features": np.maximum(xv, 0), "logits": np.maximum(xv, 0) @ w.T})


def test_output_of_an_input_gets_an_identity():
    b = GraphBuilder("io")
    x = b.input("x", (3,))
    b.output(x, "y")
    b.output(x)
    g = b.build()
    assert g.op("y") == "Identity"
    xv = np.array([1.0, -2.0, 3.0], np.float32)
    assert run(g, {"x": xv})["y"].tolist() == xv.tolist()
    assert g.output_names() == ["y", "x_out"]


# ----- names --------------------------------------------------------------------------------


def test_scopes_name_layers_and_parameters():
    b = GraphBuilder("scoped")
    x = b.input("x", (1, 2, 4, 4))
    with b.scope("block1"):
        h = nn.conv2d(x, 3, 3, padding="same", name="conv")
        with b.scope("inner"):
            h = nn.batch_norm(h, name="bn")
    g = b.graph
    assert h.name == "block1.inner.bn"
    for name in ["block1.conv", "block1.conv.weight", "block1.conv.bias", "block1.inner.bn",
                 "block1.inner.bn.weight", "block1.inner.bn.running_var"]:
        assert name in g.nx, name
    assert param(g, "block1.conv.weight").shape == (3, 2, 3, 3)
    assert b.scoped("x") == "x"


def test_automatic_layer_names():
    b = GraphBuilder("auto")
    x = b.input("x", (2, 4))
    a = nn.linear(x, 4)
    c = nn.linear(nn.relu(a), 4)
    d = nn.relu(c)
    with b.scope("head"):
        e = nn.linear(d, 2)
        f = nn.relu(e)
    assert [t.name for t in (a, c, d, e, f)] == [
        "linear1", "linear2", "relu2", "head.linear1", "head.relu1"]
    assert "linear2.weight" in b.graph.nx and "head.linear1.bias" in b.graph.nx
    with pytest.raises(GraphcError, match="'linear1' already exists"):
        nn.linear(x, 4, name="linear1")


def test_a_failed_layer_can_be_written_again():
    b = GraphBuilder("retry")
    x = b.input("x", (2, 3))
    with pytest.raises(ShapeError):
        nn.linear(x, 4, in_features=5, name="fc")
    # The error leaves the graph as it was: no half-built layer, the name is still free.
    assert sorted(b.graph.nx.nodes) == ["x"]
    y = nn.linear(x, 4, name="fc")
    assert y.shape == (2, 4)


# ----- seeded initialization ----------------------------------------------------------------


def _conv_net(seed: int, extra: bool = False) -> Graph:
    b = GraphBuilder("init", seed=seed)
    x = b.input("x", (1, 3, 8, 8))
    if extra:
        nn.linear(b.input("other", (1, 5)), 7, name="unrelated")
    h = nn.conv2d(x, 4, 3, name="conv")
    b.output(nn.linear(nn.flatten(h), 3, init="xavier", name="fc"), "y")
    return b.build()


def test_same_seed_same_weights_different_seed_different():
    a, b, c = _conv_net(7), _conv_net(7), _conv_net(8)
    for name in ["conv.weight", "fc.weight"]:
        assert param(a, name).tobytes() == param(b, name).tobytes()
        assert not np.array_equal(param(a, name), param(c, name))
    # Different parameters of one network are different streams.
    assert not np.array_equal(param(a, "conv.weight").ravel()[:20],
                              param(a, "fc.weight").ravel()[:20])


def test_unrelated_layer_does_not_change_named_weights():
    a, b = _conv_net(3), _conv_net(3, extra=True)
    assert "unrelated.weight" in b.nx
    for name in ["conv.weight", "conv.bias", "fc.weight", "fc.bias"]:
        np.testing.assert_array_equal(param(a, name), param(b, name))


INIT_SHAPE = (256, 128, 3, 3)  # fan_in 128*9 = 1152, fan_out 256*9 = 2304; 294,912 values


@pytest.mark.parametrize(("init", "std"), [
    ("he", np.sqrt(2.0 / 1152)),
    ("he_fan_out", np.sqrt(2.0 / 2304)),
    ("normal", 1.0),
])
def test_normal_inits_have_the_documented_std(init, std):
    b = GraphBuilder("stats", seed=0)
    w = param(b.graph, b.param("w", INIT_SHAPE, init=init).name).astype(np.float64)
    # The sample std of 294,912 normals is within ~0.13% (one sigma) of the true std.
    assert w.std() == pytest.approx(std, rel=0.01)
    assert abs(w.mean()) < 5 * std / np.sqrt(w.size)
    # Normal, not uniform: about 4.55% of the values lie beyond two standard deviations.
    assert np.mean(np.abs(w) > 2 * std) == pytest.approx(0.0455, abs=0.003)


@pytest.mark.parametrize(("init", "limit"), [
    ("xavier", np.sqrt(6.0 / (1152 + 2304))),
    ("uniform", 1.0 / np.sqrt(1152)),
])
def test_uniform_inits_have_the_documented_limit(init, limit):
    b = GraphBuilder("stats", seed=0)
    w = param(b.graph, b.param("w", INIT_SHAPE, init=init).name).astype(np.float64)
    assert np.abs(w).max() <= limit * (1 + 1e-6)
    assert np.abs(w).max() >= limit * 0.999
    assert w.std() == pytest.approx(limit / np.sqrt(3.0), rel=0.01)
    assert abs(w.mean()) < 5 * limit / np.sqrt(3.0 * w.size)


def test_layer_fan_in_is_in_features_and_conv_receptive_field():
    b = GraphBuilder("fans", seed=5)
    x = b.input("x", (1, 32, 8, 8))
    nn.conv2d(x, 64, 3, name="conv")  # fan_in = 32 * 3 * 3 = 288
    nn.conv2d(x, 64, 3, groups=4, name="gconv")  # fan_in = 8 * 3 * 3 = 72
    nn.linear(b.input("v", (1, 500)), 300, name="fc")  # fan_in = 500
    g = b.graph
    assert param(g, "conv.weight").std() == pytest.approx(np.sqrt(2 / 288), rel=0.03)
    assert param(g, "gconv.weight").std() == pytest.approx(np.sqrt(2 / 72), rel=0.03)
    assert param(g, "fc.weight").std() == pytest.approx(np.sqrt(2 / 500), rel=0.03)
    assert not param(g, "conv.bias").any() and not param(g, "fc.bias").any()
    w = b.param("explicit", (400, 400), init="he", fan_in=50)
    assert param(g, w.name).std() == pytest.approx(np.sqrt(2 / 50), rel=0.03)


def test_array_init_and_wrong_shape():
    b = GraphBuilder("arr")
    w = b.param("w", (2, 2), init=[[1, 2], [3, 4]])
    assert param(b.graph, w.name).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert param(b.graph, w.name).dtype == np.float32
    with pytest.raises(GraphcError, match="wrong shape") as info:
        b.param("v", (2, 3), init=np.zeros((3, 2)))
    assert "(2, 3)" in str(info.value) and "(3, 2)" in str(info.value)


# ----- numpy references, written for these tests --------------------------------------------


def same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """SAME (upper) padding: output ceil(size / s), the odd pixel at the end."""
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def conv_ref(x, w, b=None, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """Naive grouped, strided, dilated 2-D convolution; pads = (top, left, bottom, right)."""
    top, left, bottom, right = pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    n, _, h, wd = xp.shape
    m, cg, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    ho = (h - (kh - 1) * dh - 1) // sh + 1
    wo = (wd - (kw - 1) * dw - 1) // sw + 1
    per_group = m // groups
    y = np.zeros((n, m, ho, wo))
    for o in range(m):
        g = o // per_group
        for i in range(ho):
            for j in range(wo):
                acc = np.zeros(n)
                for c in range(cg):
                    for p in range(kh):
                        for q in range(kw):
                            tap = xp[:, g * cg + c, i * sh + p * dh, j * sw + q * dw]
                            acc += tap * w[o, c, p, q]
                y[:, o, i, j] = acc
        if b is not None:
            y[:, o] += b[o]
    return y


def conv_transpose_ref(x, w, b, stride, pad, output_padding=(0, 0), groups=1):
    """Naive transposed convolution: scatter every input pixel through the kernel."""
    n, c, h, wd = x.shape
    _, mg, kh, kw = w.shape
    cg = c // groups
    (sh, sw), (ph, pw), (oh, ow) = stride, pad, output_padding
    full = np.zeros((n, mg * groups, (h - 1) * sh + kh + oh, (wd - 1) * sw + kw + ow))
    for ci in range(c):
        g = ci // cg
        for i in range(h):
            for j in range(wd):
                for p in range(kh):
                    for q in range(kw):
                        full[:, g * mg:(g + 1) * mg, i * sh + p, j * sw + q] += (
                            x[:, ci, i, j][:, None] * w[ci, :, p, q][None, :])
    out_h = (h - 1) * sh - 2 * ph + kh + oh
    out_w = (wd - 1) * sw - 2 * pw + kw + ow
    y = full[:, :, ph:ph + out_h, pw:pw + out_w]
    return y + b.reshape(1, -1, 1, 1)


def pool_ref(x, k, s, pads, kind, include_pad=False, ceil_mode=False):
    """Naive 2-D max or average pooling; pads = (top, left, bottom, right)."""
    top, left, bottom, right = pads
    n, c, h, wd = x.shape

    def out_size(size, lo, hi, kk, ss):
        span = size + lo + hi - kk
        o = (-(-span // ss) if ceil_mode else span // ss) + 1
        if ceil_mode and (o - 1) * ss >= size + lo:
            o -= 1
        return o

    ho, wo = out_size(h, top, bottom, k[0], s[0]), out_size(wd, left, right, k[1], s[1])
    y = np.zeros((n, c, ho, wo))
    for i in range(ho):
        for j in range(wo):
            r0, c0 = i * s[0] - top, j * s[1] - left
            rows = [r for r in range(r0, r0 + k[0]) if 0 <= r < h]
            cols = [q for q in range(c0, c0 + k[1]) if 0 <= q < wd]
            window = x[:, :, rows][:, :, :, cols].astype(np.float64)
            if kind == "max":
                y[:, :, i, j] = window.max(axis=(2, 3))
            else:
                if include_pad:
                    prow = [r for r in range(r0, r0 + k[0]) if -top <= r < h + bottom]
                    pcol = [q for q in range(c0, c0 + k[1]) if -left <= q < wd + right]
                    count = len(prow) * len(pcol)
                else:
                    count = len(rows) * len(cols)
                y[:, :, i, j] = window.sum(axis=(2, 3)) / count
    return y


def softmax_ref(z, axis=-1):
    z = z.astype(np.float64)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def normalize_ref(x, axes, eps):
    x = x.astype(np.float64)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


# ----- linear and convolutions --------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_x_wt_plus_b(bias):
    b = GraphBuilder("lin", seed=2)
    x = b.input("x", (3, 5))
    b.output(nn.linear(x, 4, bias=bias, in_features=5, name="fc"), "y")
    g = b.build()
    w = param(g, "fc.weight")
    assert w.shape == (4, 5)
    expected_b = set_param(g, "fc.bias", rand(4)) if bias else np.zeros(4, np.float32)
    assert ("fc.bias" in g.nx) == bias
    xv = rand(3, 5)
    check(g, {"x": xv}, {"y": xv.astype(np.float64) @ w.T + expected_b})


CONV_CASES = [
    # (name, input shape, kwargs, expected output spatial size)
    ("same", (2, 4, 6, 6), dict(out_channels=5, kernel_size=3, padding="same"), (6, 6)),
    ("same-stride2-even-kernel", (1, 4, 7, 8),
     dict(out_channels=3, kernel_size=4, stride=2, padding="same"), (4, 4)),
    ("same-rect", (1, 4, 6, 5), dict(out_channels=3, kernel_size=(3, 2), padding="same"),
     (6, 5)),
    ("valid", (2, 4, 7, 7), dict(out_channels=5, kernel_size=3, padding="valid"), (5, 5)),
    ("int-pad-stride", (1, 4, 7, 7), dict(out_channels=6, kernel_size=3, stride=2, padding=1),
     (4, 4)),
    ("pair-pad-pair-stride", (1, 4, 7, 6),
     dict(out_channels=2, kernel_size=3, stride=(2, 1), padding=(1, 0)), (4, 4)),
    ("dilation", (1, 4, 9, 9), dict(out_channels=3, kernel_size=3, dilation=2, padding=2),
     (9, 9)),
    ("groups", (2, 4, 6, 6), dict(out_channels=6, kernel_size=3, groups=2, padding=1), (6, 6)),
    ("depthwise", (1, 4, 6, 6), dict(out_channels=4, kernel_size=3, groups=4, stride=2,
                                     padding=1), (3, 3)),
    ("depthwise-multiplier", (1, 4, 5, 5), dict(out_channels=8, kernel_size=3, groups=4),
     (3, 3)),
    ("no-bias", (1, 4, 5, 5), dict(out_channels=2, kernel_size=1, bias=False), (5, 5)),
]


@pytest.mark.parametrize(("case", "shape", "kwargs", "out_hw"), CONV_CASES,
                         ids=[c[0] for c in CONV_CASES])
def test_conv2d_zero_padding(case, shape, kwargs, out_hw):
    b = GraphBuilder("conv", seed=3)
    x = b.input("x", shape)
    y = nn.conv2d(x, name="conv", **kwargs)
    assert y.shape == (shape[0], kwargs["out_channels"], *out_hw)
    b.output(y, "y")
    g = b.build()
    w = param(g, "conv.weight")
    groups = kwargs.get("groups", 1)
    kh, kw = w.shape[2:]
    assert w.shape[:2] == (kwargs["out_channels"], shape[1] // groups)
    bias = set_param(g, "conv.bias", rand(kwargs["out_channels"])) if kwargs.get(
        "bias", True) else None
    stride = kwargs.get("stride", 1)
    stride = (stride, stride) if isinstance(stride, int) else stride
    dilation = kwargs.get("dilation", 1)
    dilation = (dilation, dilation) if isinstance(dilation, int) else dilation
    padding = kwargs.get("padding", 0)
    if padding == "same":
        (t, bo), (le, r) = (same_pads(shape[2], kh, stride[0], dilation[0]),
                            same_pads(shape[3], kw, stride[1], dilation[1]))
        pads = (t, le, bo, r)
    elif padding == "valid":
        pads = (0, 0, 0, 0)
    elif isinstance(padding, int):
        pads = (padding,) * 4
    else:
        pads = (padding[0], padding[1], padding[0], padding[1])
    xv = rand(*shape)
    want = conv_ref(xv, w, bias, stride, pads, dilation, groups)
    assert want.shape[2:] == out_hw
    check(g, {"x": xv}, {"y": want}, atol=1e-5)


@pytest.mark.parametrize("mode", ["reflect", "edge"])
@pytest.mark.parametrize("padding", [1, "same", (2, 1)])
def test_conv2d_padding_mode(mode, padding):
    b = GraphBuilder("padmode", seed=4)
    x = b.input("x", (1, 2, 5, 6))
    b.output(nn.conv2d(x, 3, 3, padding=padding, padding_mode=mode, name="conv"), "y")
    g = b.build()
    w = param(g, "conv.weight")
    bias = set_param(g, "conv.bias", rand(3))
    ph, pw = (1, 1) if padding == "same" else (
        (padding, padding) if isinstance(padding, int) else padding)
    xv = rand(1, 2, 5, 6)
    xp = np.pad(xv, ((0, 0), (0, 0), (ph, ph), (pw, pw)), mode=mode)
    want = conv_ref(xp, w, bias)
    check(g, {"x": xv}, {"y": want})
    assert any(g.op(n) == "Pad" for n in g.op_nodes())


def test_conv2d_reflect_padding_differs_from_zeros():
    b = GraphBuilder("modes", seed=4)
    x = b.input("x", (1, 1, 4, 4))
    b.output(nn.conv2d(x, 1, 3, padding=1, padding_mode="reflect", name="a"), "a")
    b.output(nn.conv2d(x, 1, 3, padding=1, name="z"), "z")
    g = b.build()
    set_param(g, "a.weight", np.ones((1, 1, 3, 3)))
    set_param(g, "z.weight", np.ones((1, 1, 3, 3)))
    xv = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    out = run(g, {"x": xv})
    # Top-left output: sum of the 3x3 window of the mirrored image around pixel (0, 0).
    mirrored = np.pad(xv[0, 0], 1, mode="reflect")
    assert out["a"][0, 0, 0, 0] == mirrored[:3, :3].sum() == 5 + 4 + 5 + 1 + 0 + 1 + 5 + 4 + 5
    assert out["z"][0, 0, 0, 0] == 0 + 1 + 4 + 5


def test_conv_transpose2d():
    b = GraphBuilder("deconv", seed=5)
    x = b.input("x", (2, 4, 3, 4))
    y = nn.conv_transpose2d(x, 6, 3, stride=2, padding=1, output_padding=1, groups=2, name="up")
    assert y.shape == (2, 6, 6, 8)
    b.output(y, "y")
    g = b.build()
    w = param(g, "up.weight")
    assert w.shape == (4, 3, 3, 3)
    bias = set_param(g, "up.bias", rand(6))
    xv = rand(2, 4, 3, 4)
    check(g, {"x": xv}, {"y": conv_transpose_ref(xv, w, bias, (2, 2), (1, 1), (1, 1), 2)})


# ----- pools --------------------------------------------------------------------------------


POOL_CASES = [
    ("max-2", "max", dict(kernel_size=2), (2, 2), (2, 2), (0, 0, 0, 0), {}),
    ("max-3-s2-p1", "max", dict(kernel_size=3, stride=2, padding=1), (3, 3), (2, 2),
     (1, 1, 1, 1), {}),
    ("max-ceil", "max", dict(kernel_size=2, ceil_mode=True), (2, 2), (2, 2), (0, 0, 0, 0),
     dict(ceil_mode=True)),
    ("max-same-s2", "max", dict(kernel_size=3, stride=2, padding="same"), (3, 3), (2, 2),
     None, {}),
    ("avg-2", "avg", dict(kernel_size=2), (2, 2), (2, 2), (0, 0, 0, 0), {}),
    ("avg-3-s2-p1-exclude", "avg", dict(kernel_size=3, stride=2, padding=1), (3, 3), (2, 2),
     (1, 1, 1, 1), {}),
    ("avg-3-s2-p1-include", "avg", dict(kernel_size=3, stride=2, padding=1,
                                        count_include_pad=True), (3, 3), (2, 2),
     (1, 1, 1, 1), dict(include_pad=True)),
    ("avg-rect-stride", "avg", dict(kernel_size=(2, 3), stride=(1, 2)), (2, 3), (1, 2),
     (0, 0, 0, 0), {}),
]


@pytest.mark.parametrize(("case", "kind", "kwargs", "k", "s", "pads", "extra"), POOL_CASES,
                         ids=[c[0] for c in POOL_CASES])
def test_pools(case, kind, kwargs, k, s, pads, extra):
    shape = (2, 3, 7, 8)
    b = GraphBuilder("pool")
    x = b.input("x", shape)
    layer = nn.max_pool2d if kind == "max" else nn.avg_pool2d
    b.output(layer(x, name="pool", **kwargs), "y")
    g = b.build()
    if pads is None:
        (t, bo), (le, r) = same_pads(shape[2], k[0], s[0], 1), same_pads(shape[3], k[1], s[1], 1)
        pads = (t, le, bo, r)
    xv = rand(*shape)
    check(g, {"x": xv}, {"y": pool_ref(xv, k, s, pads, kind, **extra)})


def test_global_pools():
    b = GraphBuilder("gpool")
    x = b.input("x", (2, 3, 5, 4))
    b.output(nn.global_avg_pool(x), "avg")
    b.output(nn.global_max_pool(x), "max")
    g = b.build()
    xv = rand(2, 3, 5, 4)
    check(g, {"x": xv}, {"avg": xv.astype(np.float64).mean(axis=(2, 3), keepdims=True),
                         "max": xv.max(axis=(2, 3), keepdims=True)})


# ----- norms --------------------------------------------------------------------------------


def test_batch_norm_inference_formula():
    b = GraphBuilder("bn")
    x = b.input("x", (2, 3, 4, 5))
    b.output(nn.batch_norm(x, eps=1e-3, name="bn"), "y")
    g = b.build()
    # Fresh layers hold gamma 1, beta 0, running mean 0 and running variance 1.
    assert param(g, "bn.weight").tolist() == [1, 1, 1]
    assert param(g, "bn.bias").tolist() == [0, 0, 0]
    assert param(g, "bn.running_mean").tolist() == [0, 0, 0]
    assert param(g, "bn.running_var").tolist() == [1, 1, 1]
    assert g.params() == ["bn.weight", "bn.bias"]
    gamma = set_param(g, "bn.weight", [0.5, 2.0, -1.0])
    beta = set_param(g, "bn.bias", [0.1, -0.2, 0.3])
    mean = set_param(g, "bn.running_mean", [0.2, -0.5, 1.0])
    var = set_param(g, "bn.running_var", [0.25, 4.0, 1.5])
    xv = rand(2, 3, 4, 5)

    def c(v):
        return np.asarray(v, np.float64).reshape(1, 3, 1, 1)

    want = c(gamma) * (xv - c(mean)) / np.sqrt(c(var) + 1e-3) + c(beta)
    check(g, {"x": xv}, {"y": want})


@pytest.mark.parametrize(("axis", "shape"), [(-1, (2, 3, 6)), (1, (2, 3, 4)), (2, (2, 3, 4, 5))])
def test_layer_norm(axis, shape):
    b = GraphBuilder("ln")
    x = b.input("x", shape)
    b.output(nn.layer_norm(x, axis=axis, eps=1e-4, name="ln"), "y")
    g = b.build()
    norm_shape = shape[axis:]
    gamma = set_param(g, "ln.weight", rand(*norm_shape, low=0.5, high=1.5))
    beta = set_param(g, "ln.bias", rand(*norm_shape))
    xv = rand(*shape)
    axes = tuple(range(axis % len(shape), len(shape)))
    check(g, {"x": xv}, {"y": normalize_ref(xv, axes, 1e-4) * gamma + beta})


def test_layer_norm_default_is_the_courses_every_feature_of_a_sample():
    # The course: LN standardizes each sample over all of its features, (M, H, W) of a conv map.
    b = GraphBuilder("ln_course")
    x = b.input("x", (2, 3, 4, 5))
    b.output(nn.layer_norm(x, name="ln"), "y")
    g = b.build()
    assert param(g, "ln.weight").shape == (3, 4, 5)
    xv = rand(2, 3, 4, 5)
    mu = xv.mean(axis=(1, 2, 3), keepdims=True)
    var = ((xv - mu) ** 2).mean(axis=(1, 2, 3), keepdims=True)
    check(g, {"x": xv}, {"y": (xv - mu) / np.sqrt(var + 1e-5)})


def test_layer_norm_per_channel_scale_and_shift():
    b = GraphBuilder("ln_channel")
    x = b.input("x", (2, 3, 4, 5))
    b.output(nn.layer_norm(x, affine="channel", name="ln"), "y")
    g = b.build()
    gamma = set_param(g, "ln.weight", np.array([0.5, 1.5, -2.0]).reshape(3, 1, 1))
    beta = set_param(g, "ln.bias", np.array([0.0, 1.0, -1.0]).reshape(3, 1, 1))
    xv = rand(2, 3, 4, 5)
    want = normalize_ref(xv, (1, 2, 3), 1e-5) * gamma + beta
    check(g, {"x": xv}, {"y": want})
    # Three numbers each for gamma and beta, against 60 per-element.
    assert g.num_params() == 6


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"axis": 4}, "layer_norm axis out of range; expected -4 <= axis < 4, got 4"),
    ({"affine": "row"}, "unknown layer_norm affine 'row'"),
    ({"affine": "channel", "axis": 2}, "a per-channel layer_norm normalizes a (N, M, ...) map"),
])
def test_layer_norm_bad_arguments(kwargs, message):
    b = GraphBuilder("ln_bad")
    x = b.input("x", (2, 3, 4, 5))
    with pytest.raises(GraphcError) as info:
        nn.layer_norm(x, name="ln", **kwargs)
    assert message in str(info.value)


def test_instance_norm():
    b = GraphBuilder("in")
    x = b.input("x", (2, 3, 4, 5))
    b.output(nn.instance_norm(x, eps=1e-5, name="inorm"), "y")
    g = b.build()
    gamma = set_param(g, "inorm.weight", [0.5, 1.5, -2.0])
    beta = set_param(g, "inorm.bias", [0.0, 1.0, -1.0])
    xv = rand(2, 3, 4, 5)
    want = (normalize_ref(xv, (2, 3), 1e-5) * gamma.reshape(1, 3, 1, 1)
            + beta.reshape(1, 3, 1, 1))
    check(g, {"x": xv}, {"y": want})


@pytest.mark.parametrize("groups", [1, 2, 6])
def test_group_norm(groups):
    b = GraphBuilder("gn")
    x = b.input("x", (2, 6, 3, 4))
    b.output(nn.group_norm(x, groups, eps=1e-5, name="gn"), "y")
    g = b.build()
    gamma = set_param(g, "gn.weight", rand(6, low=0.5, high=1.5))
    beta = set_param(g, "gn.bias", rand(6))
    xv = rand(2, 6, 3, 4)
    grouped = xv.reshape(2, groups, 6 // groups, 3, 4)
    normed = normalize_ref(grouped, (2, 3, 4), 1e-5).reshape(2, 6, 3, 4)
    want = normed * gamma.reshape(1, 6, 1, 1) + beta.reshape(1, 6, 1, 1)
    check(g, {"x": xv}, {"y": want})


def test_group_norm_groups_must_divide_channels():
    b = GraphBuilder("gn")
    x = b.input("x", (1, 6, 2, 2))
    with pytest.raises(ShapeError) as info:
        nn.group_norm(x, 4, name="gn")
    msg = str(info.value)
    assert msg.startswith("%gn = GroupNormalization(")
    assert "C=6" in msg and "got 4" in msg


# ----- activations and shape helpers --------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 2.5, 0.5])
@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax_with_temperature(temperature, axis):
    b = GraphBuilder("sm")
    x = b.input("x", (2, 5, 3))
    b.output(nn.softmax(x, axis=axis, temperature=temperature), "p")
    b.output(nn.log_softmax(x, axis=axis, temperature=temperature), "logp")
    g = b.build()
    xv = rand(2, 5, 3, low=-4, high=4)
    p = softmax_ref(xv / temperature, axis)
    check(g, {"x": xv}, {"p": p, "logp": np.log(p)})


def test_softmax_temperature_softens():
    b = GraphBuilder("soft")
    x = b.input("x", (1, 3))
    b.output(nn.softmax(x), "hard")
    b.output(nn.softmax(x, temperature=10.0), "soft")
    out = run(b.build(), {"x": np.array([[3.0, 1.0, 0.0]], np.float32)})
    assert out["soft"].max() < out["hard"].max()
    with pytest.raises(GraphcError, match="temperature must be positive"):
        nn.softmax(x, temperature=0.0)


@pytest.mark.parametrize("threshold", [0.0, 0.5, -0.25])
def test_heaviside_threshold(threshold):
    b = GraphBuilder("step")
    x = b.input("x", (7,))
    b.output(nn.heaviside(x, threshold), "y")
    g = b.build()
    xv = np.array([-1.0, -0.25, -1e-3, 0.0, 0.25, 0.5, 2.0], np.float32)
    check(g, {"x": xv}, {"y": (xv >= np.float32(threshold)).astype(np.float32)}, atol=0)


@pytest.mark.parametrize("alpha", [0.01, 0.2])
def test_leaky_relu_alpha(alpha):
    b = GraphBuilder("lrelu")
    x = b.input("x", (2, 4))
    b.output(nn.leaky_relu(x, alpha), "y")
    g = b.build()
    xv = np.array([[-2.0, -0.5, 0.0, 0.5], [3.0, -3.0, 1e-3, -1e-3]], np.float32)
    check(g, {"x": xv}, {"y": np.where(xv > 0, xv, alpha * xv)})


def test_elementwise_activations():
    b = GraphBuilder("acts")
    x = b.input("x", (3, 4))
    for name, fn in [("sigmoid", nn.sigmoid), ("tanh", nn.tanh), ("relu", nn.relu),
                     ("exp", nn.exp), ("log", nn.log), ("sqrt", nn.sqrt)]:
        b.output(fn(x), name)
    g = b.build()
    xv = rand(3, 4, low=0.01, high=3.0)
    xv[0] = [-2.0, -0.5, 0.0, 1.0]
    xv64 = xv.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        want = {"sigmoid": 1 / (1 + np.exp(-xv64)), "tanh": np.tanh(xv64),
                "relu": np.maximum(xv64, 0), "exp": np.exp(xv64)}
    interp, ort = run(g, {"x": xv}), run_onnxruntime(g, {"x": xv})
    for name, value in want.items():
        np.testing.assert_allclose(interp[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(ort[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    pos = xv64[1:]
    for name, fn in [("log", np.log), ("sqrt", np.sqrt)]:
        np.testing.assert_allclose(interp[name][1:], fn(pos), rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(ort[name][1:], fn(pos), rtol=1e-5, err_msg=name)


def test_clip():
    b = GraphBuilder("clip")
    x = b.input("x", (2, 3))
    b.output(nn.clip(x, -0.5, 0.25), "both")
    b.output(nn.clip(x, min=0.0), "lo")
    b.output(nn.clip(x, max=0.1), "hi")
    g = b.build()
    xv = rand(2, 3)
    check(g, {"x": xv}, {"both": np.clip(xv, -0.5, 0.25), "lo": np.maximum(xv, 0.0),
                         "hi": np.minimum(xv, 0.1)}, atol=0)


@pytest.mark.parametrize(("mode", "value"), [("constant", 0.0), ("constant", 1.5),
                                             ("reflect", 0.0), ("edge", 0.0)])
def test_pad(mode, value):
    b = GraphBuilder("pad")
    x = b.input("x", (1, 2, 4, 5))
    y = nn.pad(x, (1, 2, 3, 0), mode=mode, value=value)
    b.output(y, "y")
    g = b.build()
    xv = rand(1, 2, 4, 5)
    widths = ((0, 0), (0, 0), (1, 3), (2, 0))
    want = (np.pad(xv, widths, constant_values=value) if mode == "constant"
            else np.pad(xv, widths, mode=mode))
    check(g, {"x": xv}, {"y": want}, atol=0)


def test_dropout_is_identity_at_inference():
    b = GraphBuilder("drop")
    x = b.input("x", (4, 6))
    b.output(nn.dropout(x, 0.5), "y")
    g = b.build()
    xv = rand(4, 6)
    check(g, {"x": xv}, {"y": xv}, atol=0)
    with pytest.raises(GraphcError, match="dropout probability out of range"):
        nn.dropout(x, 1.0)


def test_shape_helpers():
    b = GraphBuilder("shapes")
    x = b.input("x", (2, 3, 4))
    y = b.input("y", (2, 5, 4))
    b.output(nn.flatten(x), "flat1")
    b.output(nn.flatten(x, 2), "flat2")
    b.output(nn.reshape(x, (0, -1)), "reshaped")
    b.output(nn.transpose(x, (2, 0, 1)), "transposed")
    b.output(nn.concat([x, y], axis=1), "joined")
    g = b.build()
    xv, yv = rand(2, 3, 4), rand(2, 5, 4)
    check(g, {"x": xv, "y": yv}, {
        "flat1": xv.reshape(2, 12), "flat2": xv.reshape(6, 4), "reshaped": xv.reshape(2, 12),
        "transposed": xv.transpose(2, 0, 1), "joined": np.concatenate([xv, yv], axis=1),
    }, atol=0)


# ----- errors when a layer is written -------------------------------------------------------


def test_add_with_non_broadcastable_shapes():
    b = GraphBuilder("bad")
    x = b.input("x", (2, 3))
    y = b.input("y", (4, 3))
    with pytest.raises(ShapeError) as info:
        _ = x + y
    msg = str(info.value)
    assert msg.startswith("%add = Add(%x, %y): input shapes do not broadcast")
    assert "(2, 3)" in msg and "(4, 3)" in msg


def test_linear_with_wrong_in_features():
    b = GraphBuilder("bad")
    x = b.input("x", (2, 3))
    with pytest.raises(ShapeError) as info:
        nn.linear(x, 4, in_features=5, name="fc")
    msg = str(info.value)
    assert msg.startswith("%fc = Gemm(%x, %fc.weight, %fc.bias)")
    assert "expected 5, got 3" in msg
    assert "(2, 3)" in msg and "(4, 5)" in msg


def test_linear_needs_rank_2():
    b = GraphBuilder("bad")
    x = b.input("x", (2, 3, 4))
    with pytest.raises(ShapeError) as info:
        nn.linear(x, 4, name="fc")
    msg = str(info.value)
    assert msg.startswith("layer 'fc': ") and "rank 2" in msg and "(2, 3, 4)" in msg


def test_conv2d_with_wrong_in_channels():
    b = GraphBuilder("bad")
    x = b.input("x", (1, 3, 8, 8))
    with pytest.raises(ShapeError) as info:
        nn.conv2d(x, 8, 3, in_channels=4, name="conv")
    msg = str(info.value)
    assert msg.startswith("%conv = Conv(%x, %conv.weight, %conv.bias)")
    assert "input channels do not match the weight" in msg
    assert "= 4, got X.shape[1] = 3" in msg


def test_conv2d_groups_not_dividing_channels():
    b = GraphBuilder("bad")
    x = b.input("x", (1, 3, 8, 8))
    with pytest.raises(ShapeError) as info:
        nn.conv2d(x, 6, 3, groups=2, name="conv")
    msg = str(info.value)
    assert msg.startswith("layer 'conv': input channels are not divisible by groups")
    assert "groups=2" in msg and "got 3" in msg
    x4 = b.input("x4", (1, 4, 8, 8))
    with pytest.raises(ShapeError) as info:
        nn.conv2d(x4, 6, 3, groups=4, name="conv4")
    msg = str(info.value)
    assert msg.startswith("%conv4 = Conv(") and "group=4" in msg
    assert "6" in msg.split("got")[-1]


def test_conv2d_kernel_larger_than_input():
    b = GraphBuilder("bad")
    x = b.input("x", (1, 1, 2, 2))
    with pytest.raises(ShapeError) as info:
        nn.conv2d(x, 1, 3, name="conv")
    msg = str(info.value)
    assert msg.startswith("%conv = Conv(") and "does not fit" in msg


@pytest.mark.parametrize(("kwargs", "known", "close"), [
    (dict(padding="sme"), "'same', 'valid'", "same"),
    (dict(padding="vaild"), "'same', 'valid'", "valid"),
    (dict(padding_mode="reflec"), "'edge', 'reflect', 'symmetric', 'zeros'", "reflect"),
    (dict(padding_mode="circular"), "'edge', 'reflect', 'symmetric', 'zeros'", None),
    (dict(init="xaviar"), "'he', 'he_fan_out', 'normal', 'ones', 'uniform', 'xavier', 'zeros'",
     "xavier"),
    (dict(init="foo"), "'he', 'he_fan_out', 'normal', 'ones', 'uniform', 'xavier', 'zeros'",
     None),
])
def test_unknown_option_values(kwargs, known, close):
    b = GraphBuilder("opts")
    x = b.input("x", (1, 2, 5, 5))
    with pytest.raises(GraphcError) as info:
        nn.conv2d(x, 2, 3, name="conv", **kwargs)
    msg = str(info.value)
    (option, value), = kwargs.items()
    assert f"unknown {option} {value!r}" in msg
    assert "conv" in msg.split(":")[0]
    assert f"expected one of {known}, got {value!r}" in msg
    if close is not None:
        assert msg.endswith(f"Did you mean {close!r}?")
    else:
        assert "Did you mean" not in msg
