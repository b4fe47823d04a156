"""Convolution and pooling over 1 and 3 spatial axes, end to end: the DSL layers against loop
references written here, training a 1-D conv net with graphc's training stack (the loss falls),
the compiled step's gradients against central finite differences, the Gemm-over-Im2Col form
training uses, ConvTranspose's SAME and output_shape sizes, MaxPool's column-major Indices, and
the refusals for ranks graphc does not support."""

from __future__ import annotations

import numpy as np
import pytest

from graphc import nn
from graphc.dsl import GraphBuilder
from graphc.errors import GraphcError
from graphc.interpret import run
from graphc.ir import Graph
from graphc.onnxio.runtime import run_onnxruntime
from graphc.train.data import Dataset
from graphc.train.loop import TrainConfig, train
from graphc.train.optim import SGD
from graphc.train.runner import InterpreterRunner, OrtRunner
from graphc.train.step import _conv_im2col, compile_step

# ----- loop references ----------------------------------------------------------------------


def conv_loops(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: tuple[int, ...],
               dilation: tuple[int, ...], pads: tuple[int, ...]) -> np.ndarray:
    """y[n, o, *p] = b[o] + sum over c and taps t of w[o, c, *t] * x_padded[n, c, p*s + t*d]."""
    k = x.ndim - 2
    xp = np.pad(x, [(0, 0), (0, 0), *zip(pads[:k], pads[k:], strict=True)])
    kernel = w.shape[2:]
    out = [(xp.shape[2 + a] - (kernel[a] - 1) * dilation[a] - 1) // stride[a] + 1
           for a in range(k)]
    y = np.zeros((x.shape[0], w.shape[0], *out))
    for n in range(x.shape[0]):
        for o in range(w.shape[0]):
            for p in np.ndindex(*out):
                total = b[o]
                for t in np.ndindex(*kernel):
                    at = tuple(p[a] * stride[a] + t[a] * dilation[a] for a in range(k))
                    total += np.dot(w[(o, slice(None), *t)], xp[(n, slice(None), *at)])
                y[(n, o, *p)] = total
    return y


def pool_loops(x: np.ndarray, kernel: tuple[int, ...], stride: tuple[int, ...],
               reduce: object) -> np.ndarray:
    """VALID pooling with explicit windows."""
    k = x.ndim - 2
    out = [(x.shape[2 + a] - kernel[a]) // stride[a] + 1 for a in range(k)]
    y = np.zeros((*x.shape[:2], *out))
    for p in np.ndindex(*out):
        window = x[(slice(None), slice(None),
                    *(slice(p[a] * stride[a], p[a] * stride[a] + kernel[a]) for a in range(k)))]
        y[(slice(None), slice(None), *p)] = reduce(window.reshape(*x.shape[:2], -1), axis=2)
    return y


# ----- the DSL layers -----------------------------------------------------------------------


def test_conv1d_and_conv3d_compute_the_loop_convolution() -> None:
    b = GraphBuilder("nd", seed=1)
    x1 = b.input("x1", (2, 3, 11))
    x3 = b.input("x3", (1, 2, 5, 6, 4))
    b.output(nn.conv1d(x1, 4, 3, stride=2, dilation=2, padding=2, name="c1"), "y1")
    b.output(nn.conv3d(x3, 3, (2, 3, 2), stride=(1, 2, 1), padding=(1, 0, 1), name="c3"), "y3")
    g = b.build()
    rng = np.random.default_rng(2)
    feeds = {"x1": rng.standard_normal((2, 3, 11)).astype(np.float32),
             "x3": rng.standard_normal((1, 2, 5, 6, 4)).astype(np.float32)}
    for name in ("c1.bias", "c3.bias"):  # biases start at 0: give them values
        g.nx.nodes[name]["value"] = rng.standard_normal(g.nx.nodes[name]["value"].shape)\
            .astype(np.float32)
    param = {n: np.asarray(g.nx.nodes[n]["value"], np.float64) for n in g.params()}
    want1 = conv_loops(feeds["x1"].astype(np.float64), param["c1.weight"], param["c1.bias"],
                       (2,), (2,), (2, 2))
    want3 = conv_loops(feeds["x3"].astype(np.float64), param["c3.weight"], param["c3.bias"],
                       (1, 2, 1), (1, 1, 1), (1, 0, 1, 1, 0, 1))
    for out in (run(g, feeds), run_onnxruntime(g, feeds)):
        np.testing.assert_allclose(out["y1"], want1, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out["y3"], want3, rtol=1e-5, atol=1e-5)
    assert want1.shape == (2, 4, 6) and want3.shape == (1, 3, 6, 2, 5)


def test_pools_1d_and_3d_compute_the_loop_pooling() -> None:
    b = GraphBuilder("pools")
    x1 = b.input("x1", (2, 3, 10))
    x3 = b.input("x3", (1, 2, 4, 6, 5))
    b.output(nn.max_pool1d(x1, 3, stride=2, name="m1"), "m1")
    b.output(nn.avg_pool1d(x1, 2, name="a1"), "a1")
    b.output(nn.max_pool3d(x3, (2, 3, 2), stride=(2, 2, 1), name="m3"), "m3")
    b.output(nn.avg_pool3d(x3, 2, name="a3"), "a3")
    b.output(nn.global_max_pool(x1, name="g1"), "g1")
    b.output(nn.global_avg_pool(x3, name="g3"), "g3")
    g = b.build()
    rng = np.random.default_rng(3)
    feeds = {"x1": rng.standard_normal((2, 3, 10)).astype(np.float32),
             "x3": rng.standard_normal((1, 2, 4, 6, 5)).astype(np.float32)}
    x1v, x3v = feeds["x1"].astype(np.float64), feeds["x3"].astype(np.float64)
    want = {"m1": pool_loops(x1v, (3,), (2,), np.max), "a1": pool_loops(x1v, (2,), (2,), np.mean),
            "m3": pool_loops(x3v, (2, 3, 2), (2, 2, 1), np.max),
            "a3": pool_loops(x3v, (2, 2, 2), (2, 2, 2), np.mean),
            "g1": x1v.max(axis=2, keepdims=True), "g3": x3v.mean(axis=(2, 3, 4), keepdims=True)}
    for out in (run(g, feeds), run_onnxruntime(g, feeds)):
        for name, value in want.items():
            np.testing.assert_allclose(out[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    assert want["m3"].shape == (1, 2, 2, 2, 4) and want["g1"].shape == (2, 3, 1)


def test_same_padding_keeps_ceil_of_size_over_stride_in_1d_and_3d() -> None:
    b = GraphBuilder("same")
    assert nn.conv1d(b.input("a", (1, 2, 9)), 2, 4, stride=2, padding="same").shape == (1, 2, 5)
    x = b.input("v", (1, 1, 5, 7, 4))
    assert nn.conv3d(x, 2, 3, stride=(1, 3, 2), padding="same").shape == (1, 2, 5, 3, 2)
    assert nn.max_pool3d(x, 2, padding="same").shape == (1, 1, 3, 4, 2)


# ----- training -----------------------------------------------------------------------------


def net_1d(batch: int, dtype: object = np.float32) -> Graph:
    """x (N, 2, 16) -> conv1d 5 (same, 4) -> BN -> relu -> maxpool 2 -> conv1d 3 (stride 2, 6)
    -> relu -> avgpool 2 -> flatten -> linear (3)."""
    b = GraphBuilder("net1d", seed=4, dtype=dtype)
    x = b.input("x", (batch, 2, 16))
    h = nn.relu(nn.batch_norm(nn.conv1d(x, 4, 5, padding="same", name="conv1"), name="bn"))
    h = nn.max_pool1d(h, 2, name="pool1")
    h = nn.relu(nn.conv1d(h, 6, 3, stride=2, padding=1, name="conv2"))
    h = nn.avg_pool1d(h, 2, name="pool2")
    b.output(nn.linear(nn.flatten(h), 3, name="fc"), "logits")
    return b.build()


def sequences(n: int, seed: int) -> Dataset:
    """Three classes of two-channel signals: a slow sine, a fast sine, and a step, with noise."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, 16)
    y = rng.integers(0, 3, n)
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    slow, fast = np.sin(2 * np.pi * t + phase), np.sin(8 * np.pi * t + phase)
    step = np.where(t < rng.uniform(0.3, 0.7, (n, 1)), -1.0, 1.0)
    signal = np.where((y == 0)[:, None], slow, np.where((y == 1)[:, None], fast, step))
    x = np.stack([signal, rng.standard_normal((n, 16)) * 0.3 + signal * 0.5], axis=1)
    return Dataset(x + rng.standard_normal(x.shape) * 0.1, y, classes=3, name="sequences")


def test_a_1d_conv_net_trains_with_graphcs_training_stack() -> None:
    config = TrainConfig(epochs=6, batch=16, lr=0.05, schedule="constant", threads=1)
    result = train(net_1d, sequences(192, 0), sequences(96, 1), config, progress=False)
    losses = [epoch.loss for epoch in result.history]
    assert losses[-1] < 0.5 * losses[0], losses
    assert result.test_accuracy > 0.8, result.test_accuracy


def test_the_1d_step_lowers_convs_to_im2col_and_matches_on_both_runners() -> None:
    spec = compile_step(net_1d(8), SGD(lr=0.1, momentum=0.9))
    ops = [spec.graph.op(n) for n in spec.graph.op_nodes()]
    assert ops.count("Im2Col") == 2 and "Conv" not in ops
    data = sequences(8, 2)
    target = np.eye(3, dtype=np.float32)[data.y]
    runners = [OrtRunner(spec, threads=1), InterpreterRunner(spec)]
    losses: list[list[float]] = [[], []]
    for _ in range(5):
        for k, runner in enumerate(runners):
            losses[k].append(float(runner.run({"x": data.x, "target": target}, 0.1).loss))
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)
    assert losses[0][-1] < losses[0][0]


def small_3d(batch: int) -> Graph:
    b = GraphBuilder("net3d", seed=5, dtype=np.float64)
    x = b.input("x", (batch, 2, 4, 4, 3))
    h = nn.relu(nn.conv3d(x, 3, 2, padding=(1, 0, 1), groups=1, name="conv"))
    h = nn.max_pool3d(h, (2, 2, 2), stride=(2, 1, 2), padding=(0, 0, 1), name="pool")
    h = nn.global_avg_pool(nn.conv3d(h, 4, 1, groups=1, name="mix"), name="gap")
    b.output(nn.linear(nn.flatten(h), 2, name="fc"), "logits")
    return b.build()


def small_1d_grouped(batch: int) -> Graph:
    b = GraphBuilder("grouped1d", seed=6, dtype=np.float64)
    x = b.input("x", (batch, 4, 9))
    h = nn.conv1d(x, 4, 3, groups=2, dilation=2, padding="same", padding_mode="symmetric",
                  name="conv")
    h = nn.avg_pool1d(nn.relu(h), 3, stride=2, padding=1, count_include_pad=True, name="pool")
    h = nn.max_pool1d(h, 2, ceil_mode=True, name="pool2")
    b.output(nn.linear(nn.flatten(h), 3, name="fc"), "logits")
    return b.build()


@pytest.mark.parametrize(("build", "shape"), [(net_1d, (5, 2, 16)), (small_3d, (3, 2, 4, 4, 3)),
                                              (small_1d_grouped, (4, 4, 9))],
                         ids=["1d", "3d", "1d-grouped"])
def test_step_gradients_equal_central_finite_differences(build: object, shape: tuple) -> None:
    """SGD with lr 1 and no momentum: new = param - grad. Finite differences of the step's own
    loss in float64, parameter by parameter."""
    forward = build(shape[0]) if build is not net_1d else net_1d(shape[0], np.float64)
    spec = compile_step(forward, SGD(lr=1.0))
    rng = np.random.default_rng(8)
    state = {k: np.asarray(v, np.float64) for k, v in spec.initial.items()}
    for name in spec.params:  # biases start at 0 and BN at (1, 0): make every gradient generic
        state[name] = state[name] + rng.uniform(-0.3, 0.3, state[name].shape)
    classes = int(forward.type_of(forward.outputs[0]).shape[1])
    batch = {"x": rng.standard_normal(shape),
             "target": np.eye(classes)[rng.integers(0, classes, shape[0])]}

    def feeds(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {**batch, **values, "lr": np.float32(1.0), "step": np.float32(1.0)}

    out = run(spec.graph, feeds(state))
    h = 1e-6
    for name in spec.params:
        grad = state[name] - out[f"{name}.next"]
        fd = np.zeros_like(grad)
        for index in np.ndindex(grad.shape):
            losses = []
            for sign in (1, -1):
                moved = dict(state)
                moved[name] = state[name].copy()
                moved[name][index] += sign * h
                losses.append(float(run(spec.graph, feeds(moved))["loss"]))
            fd[index] = (losses[0] - losses[1]) / (2 * h)
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8, err_msg=name)


@pytest.mark.parametrize(("shape", "attrs"), [
    ((2, 3, 10), {"strides": [2], "dilations": [2], "pads": [2, 1]}),
    ((2, 2, 4, 5, 3), {"strides": [2, 1, 2], "pads": [1, 0, 1, 1, 1, 0]}),
    ((1, 2, 5, 4, 4), {"auto_pad": "SAME_UPPER", "strides": [1, 2, 2]}),
], ids=["1d", "3d", "3d-same"])
def test_gemm_over_im2col_equals_conv(shape: tuple[int, ...], attrs: dict) -> None:
    rng = np.random.default_rng(9)
    k = len(shape) - 2
    w = rng.standard_normal((4, shape[1], *(3, 2, 2)[:k]))
    g = Graph("conv")
    x = g.add_input("x", shape, np.float64)
    g.outputs = [g.add_node("Conv", [x, g.add_const("w", w, trainable=True),
                                     g.add_const("b", rng.standard_normal(4), trainable=True)],
                            attrs, name="conv")]
    feeds = {"x": rng.standard_normal(shape)}
    want = run(g, feeds)[g.output_names()[0]]
    lowered = g.copy()
    _conv_im2col(lowered, "conv")
    lowered.remove_dead()
    ops = {lowered.op(n) for n in lowered.op_nodes()}
    assert "Im2Col" in ops and "Conv" not in ops
    got = run(lowered, feeds)[lowered.output_names()[0]]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    on_ort = run_onnxruntime(lowered, feeds)
    np.testing.assert_allclose(next(iter(on_ort.values())), want, rtol=1e-10, atol=1e-10)


# ----- ConvTranspose sizes, MaxPool storage_order, refusals ----------------------------------


def one_op(op: str, inputs: list[np.ndarray], attrs: dict) -> Graph:
    g = Graph(op.lower())
    values = [g.add_input(f"in{k}", a.shape, a.dtype) for k, a in enumerate(inputs)]
    g.outputs = [g.add_node(op, values, attrs, name="y")]
    return g


@pytest.mark.parametrize(("x_shape", "attrs", "out"), [
    ((1, 2, 5), {"auto_pad": "SAME_UPPER", "strides": [2]}, (10,)),
    ((1, 2, 5), {"auto_pad": "SAME_LOWER", "strides": [3]}, (15,)),
    ((1, 2, 5), {"output_shape": [9], "strides": [2]}, (9,)),
    ((1, 2, 5), {"output_shape": [13], "strides": [2]}, (13,)),
    ((1, 2, 3, 2, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 1, 2]}, (6, 2, 6)),
])
def test_conv_transpose_same_and_output_shape_sizes(x_shape: tuple, attrs: dict,
                                                    out: tuple) -> None:
    rng = np.random.default_rng(10)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((2, 3, *(4, 3, 2)[:len(x_shape) - 2])).astype(np.float32)
    g = one_op("ConvTranspose", [x, w], attrs)
    assert g.type_of(g.outputs[0]).shape == (1, 3, *out)
    feeds = {"in0": x, "in1": w}
    np.testing.assert_allclose(run_onnxruntime(g, feeds)["y"], run(g, feeds)["y"], rtol=1e-5,
                               atol=1e-5)


def test_max_pool_storage_order_gives_column_major_indices_by_hand() -> None:
    # One 2x3 plane, 2x2 windows: maxima 5 at (1, 1) and 6 at (1, 2) (row-major 4 and 5;
    # column-major h + w * H: 1 + 1*2 = 3 and 1 + 2*2 = 5), in the second plane offset by 6.
    x = np.array([[[[1, 2, 3], [4, 5, 6]], [[9, 1, 1], [1, 1, 8]]]], np.float32)
    for order, want in ((0, [[[[4, 5]], [[6, 11]]]]), (1, [[[[3, 5]], [[6, 11]]]])):
        g = Graph("pool")
        v = g.add_input("x", x.shape)
        node = g.add_node("MaxPool", [v], {"kernel_shape": [2, 2], "storage_order": order})
        g.outputs = [node, node._replace(out=1)]
        names = g.output_names()
        for out in (run(g, {"x": x}), run_onnxruntime(g, {"x": x})):
            assert out[names[1]].tolist() == want, order
            assert out[names[0]].tolist() == [[[[5, 6]], [[9, 8]]]]


def test_unsupported_ranks_are_refused_with_the_layouts() -> None:
    x = np.zeros((1, 1, 2, 2, 2, 2), np.float32)
    with pytest.raises(GraphcError, match="needs 1, 2 or 3 spatial axes; expected rank 3 "
                                          r"\(N, C, L\), 4 \(N, C, H, W\) or 5"):
        one_op("MaxPool", [x], {"kernel_shape": [1, 1, 1, 1]})
    with pytest.raises(GraphcError, match="Conv weight W .* has the wrong rank; expected rank 3"):
        one_op("Conv", [np.zeros((1, 2, 5), np.float32), np.zeros((1, 2, 3, 3), np.float32)], {})
    with pytest.raises(GraphcError, match="kernel_shape needs one positive size per spatial "
                                          r"axis; expected 3 values \(D, H, W\)"):
        one_op("AveragePool", [np.zeros((1, 1, 4, 4, 4), np.float32)], {"kernel_shape": [2, 2]})
    with pytest.raises(GraphcError, match=r"output_shape is out of range; expected 1 <= size "
                                          r"<= 13 \(the uncropped output 12 \+ stride - 1\)"):
        one_op("ConvTranspose", [np.zeros((1, 2, 5), np.float32),
                                 np.zeros((2, 3, 4), np.float32)],
               {"strides": [2], "output_shape": [14]})
    with pytest.raises(GraphcError, match="output_shape needs one size per spatial axis"):
        one_op("ConvTranspose", [np.zeros((1, 2, 5), np.float32),
                                 np.zeros((2, 3, 4), np.float32)], {"output_shape": [1, 3, 8]})
    b = GraphBuilder("dsl")
    with pytest.raises(GraphcError, match="needs a rank-3 input"):
        nn.conv1d(b.input("img", (1, 1, 4, 4)), 2, 3)


SPATIAL_OPS = ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool",
               "GlobalMaxPool", "Im2Col", "Pad")


@pytest.mark.parametrize("name", SPATIAL_OPS)
def test_every_spatial_op_record_has_1d_and_3d_examples(name: str) -> None:
    # The table-driven tests (onnxruntime, shape inference, finite differences) run these.
    from graphc import ops

    op = ops.REGISTRY[name]
    ranks = {e.inputs[0].ndim for e in op.examples}
    assert {3, 4, 5} <= ranks, (name, ranks)
    assert {3, 5} <= {e.inputs[0].ndim for e in op.nonfinite}, name
    attrs = [e.attrs for e in op.examples if e.inputs[0].ndim in (3, 5)]
    if name in ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "Im2Col"):
        assert any(any(s > 1 for s in a.get("strides", ())) for a in attrs), name
        assert any(any(a.get("pads", ())) or a.get("auto_pad") for a in attrs), name
    if name in ("Conv", "ConvTranspose", "MaxPool", "Im2Col"):
        assert any(any(d > 1 for d in a.get("dilations", ())) for a in attrs), name
    if name in ("Conv", "ConvTranspose"):
        assert any(a.get("group", 1) > 1 for a in attrs), name
    if name in ("MaxPool", "AveragePool"):
        assert any(a.get("ceil_mode") for a in attrs), name


@pytest.mark.parametrize(("shape", "attrs"), [
    ((2, 2, 11), {"kernel_shape": [3], "dilations": [2], "strides": [2], "pads": [1, 2],
                  "count_include_pad": 1}),
    ((1, 2, 5, 6, 5), {"kernel_shape": [2, 2, 3], "dilations": [2, 1, 2],
                       "pads": [1, 0, 1, 0, 1, 1], "ceil_mode": 1}),
], ids=["1d", "3d"])
def test_dilated_average_pools_from_opset_19(shape: tuple[int, ...], attrs: dict) -> None:
    # AveragePool's dilations exist from opset 19 (the table-driven tests also run opset 17).
    from graphc.autodiff import gradient_graph
    from graphc.onnxio.export import to_onnx

    def graph(dtype: type) -> Graph:
        g = Graph("avg")
        y = g.add_node("AveragePool", [g.add_input("x", shape, dtype)], attrs, name="y")
        r = np.random.default_rng(12).standard_normal(g.type_of(y).shape).astype(dtype)
        g.outputs = [y, g.add_node("ReduceSum", [g.add_node("Mul", [y, g.add_const("r", r)])],
                                   {"keepdims": 0}, name="loss")]
        return g

    x0 = np.random.default_rng(11).standard_normal(shape)
    g32 = graph(np.float32)
    feeds = {"x": x0.astype(np.float32)}
    np.testing.assert_allclose(run_onnxruntime(to_onnx(g32, 19), feeds)["y"],
                               run(g32, feeds)["y"], rtol=1e-5, atol=1e-6)
    g = graph(np.float64)
    grad = run(gradient_graph(g, output="loss", wrt=["x"]), {"x": x0})["dloss/dx"]
    h = 1e-6
    for index in np.ndindex(shape):
        up, down = x0.copy(), x0.copy()
        up[index] += h
        down[index] -= h
        fd = (float(run(g, {"x": up})["loss"]) - float(run(g, {"x": down})["loss"])) / (2 * h)
        assert abs(grad[index] - fd) <= 1e-6 * max(1.0, abs(fd)), (index, grad[index], fd)


def conv_transpose_loops(x: np.ndarray, w: np.ndarray, stride: tuple[int, ...],
                         pads: tuple[int, ...]) -> np.ndarray:
    """Every input cell scatters x[n, c, *i] * w[c, o, *t] to output cell i*s + t - pad."""
    k = x.ndim - 2
    kernel = w.shape[2:]
    full = [(x.shape[2 + a] - 1) * stride[a] + kernel[a] for a in range(k)]
    y = np.zeros((x.shape[0], w.shape[1], *full))
    for n in range(x.shape[0]):
        for i in np.ndindex(*x.shape[2:]):
            for t in np.ndindex(*kernel):
                at = tuple(i[a] * stride[a] + t[a] for a in range(k))
                y[(n, slice(None), *at)] += x[(n, slice(None), *i)] @ w[(slice(None),
                                                                          slice(None), *t)]
    return y[(slice(None), slice(None), *(slice(p, f - p) for p, f in zip(pads, full,
                                                                           strict=True)))]


def test_conv_transpose_1d_and_3d_layers_compute_the_loop_scatter() -> None:
    b = GraphBuilder("up", seed=7)
    x1 = b.input("x1", (2, 3, 5))
    x3 = b.input("x3", (1, 2, 2, 3, 2))
    b.output(nn.conv_transpose1d(x1, 2, 4, stride=2, padding=1, bias=False, name="u1"), "y1")
    b.output(nn.conv_transpose3d(x3, 3, (2, 3, 2), stride=(2, 1, 2), bias=False, name="u3"),
             "y3")
    g = b.build()
    rng = np.random.default_rng(13)
    feeds = {"x1": rng.standard_normal((2, 3, 5)).astype(np.float32),
             "x3": rng.standard_normal((1, 2, 2, 3, 2)).astype(np.float32)}
    w1 = np.asarray(g.nx.nodes["u1.weight"]["value"], np.float64)
    w3 = np.asarray(g.nx.nodes["u3.weight"]["value"], np.float64)
    want1 = conv_transpose_loops(feeds["x1"].astype(np.float64), w1, (2,), (1,))
    want3 = conv_transpose_loops(feeds["x3"].astype(np.float64), w3, (2, 1, 2), (0, 0, 0))
    assert want1.shape == (2, 2, 10) and want3.shape == (1, 3, 4, 5, 4)
    for out in (run(g, feeds), run_onnxruntime(g, feeds)):
        np.testing.assert_allclose(out["y1"], want1, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out["y3"], want3, rtol=1e-5, atol=1e-5)
