"""Mirror padding (Pad mode ``symmetric``, the course's edge-repeating mirror) and ``wrap``.

The numpy reference, the exported Slice + Concat lowering on onnxruntime and ``np.pad`` must
agree exactly; the gradient folds each padded cell back onto the cell it copies (hand numbers
and central finite differences); the DSL reaches the mode from ``nn.pad`` and a conv's
``padding_mode``, and SAME padding keeps the input size in both zero and mirror padding.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from graphc import nn
from graphc.autodiff import gradient_graph
from graphc.dsl import GraphBuilder
from graphc.errors import GraphcError
from graphc.interpret import run
from graphc.ir import Graph
from graphc.onnxio.export import max_opset, to_onnx
from graphc.onnxio.runtime import run_onnxruntime
from graphc.ops.pad import runs, source_index


def pad_graph(shape: tuple[int, ...], pads: list[int], mode: str,
              dtype: type = np.float32) -> Graph:
    g = Graph("pad")
    x = g.add_input("x", shape, dtype)
    p = g.add_const("pads", np.array(pads, np.int64))
    g.outputs = [g.add_node("Pad", [x, p], {"mode": mode}, name="y")]
    g.verify()
    return g


def numpy_pad(x: np.ndarray, pads: list[int], mode: str) -> np.ndarray:
    """np.pad after cropping the negative pads: ONNX's order."""
    rank = x.ndim
    begin, end = pads[:rank], pads[rank:]
    cropped = x[tuple(slice(max(0, -b), size - max(0, -e))
                      for b, e, size in zip(begin, end, x.shape, strict=True))]
    return np.pad(cropped, [(max(0, b), max(0, e)) for b, e in zip(begin, end, strict=True)],
                  mode=mode)


def test_the_course_definition_by_hand() -> None:
    # Mirror padding repeats the edge: a b c padded by 2 gives b a | a b c | c b.
    g = pad_graph((3,), [2, 2], "symmetric")
    x = np.array([1.0, 2.0, 3.0], np.float32)
    assert run(g, {"x": x})["y"].tolist() == [2, 1, 1, 2, 3, 3, 2]
    # reflect (also a mirror, about the edge cell) and zero padding, for comparison.
    assert run(pad_graph((3,), [2, 2], "reflect"), {"x": x})["y"].tolist() == [3, 2, 1, 2, 3, 2, 1]
    assert run(pad_graph((3,), [2, 2], "constant"), {"x": x})["y"].tolist() == [0, 0, 1, 2, 3, 0, 0]
    assert run(pad_graph((3,), [2, 2], "wrap"), {"x": x})["y"].tolist() == [2, 3, 1, 2, 3, 1, 2]


def test_a_3x3_image_mirror_padded_by_one() -> None:
    x = np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3)
    got = run(pad_graph(x.shape, [0, 0, 1, 1, 0, 0, 1, 1], "symmetric"), {"x": x})["y"][0, 0]
    want = [[1, 1, 2, 3, 3],
            [1, 1, 2, 3, 3],
            [4, 4, 5, 6, 6],
            [7, 7, 8, 9, 9],
            [7, 7, 8, 9, 9]]
    assert got.tolist() == want


CASES = [
    ((7,), [3, 2]),
    ((5,), [5, 5]),  # pads as long as the axis
    ((3,), [7, 8]),  # longer: the pattern repeats, as np.pad does
    ((2, 3, 4), [0, 1, 2, 0, 2, 3]),
    ((1, 2, 4, 5), [0, 0, 3, 1, 0, 0, 1, 4]),
    ((1, 2, 4, 5), [0, 0, -1, 2, 0, 0, 2, -2]),  # crop, then pad
    ((1, 2, 3, 4, 3), [0, 0, 1, 2, 3, 0, 0, 2, 0, 1]),
]


@pytest.mark.parametrize("mode", ["symmetric", "wrap"])
@pytest.mark.parametrize("opset", [17, max_opset()])
@pytest.mark.parametrize(("shape", "pads"), CASES)
def test_lowering_on_onnxruntime_equals_the_reference_and_np_pad(
        shape: tuple[int, ...], pads: list[int], mode: str, opset: int) -> None:
    g = pad_graph(shape, pads, mode)
    x = np.random.default_rng(len(shape) + sum(pads)).standard_normal(shape).astype(np.float32)
    model = to_onnx(g, opset)
    onnx.checker.check_model(model, full_check=True)
    ops = {node.op_type for node in model.graph.node}
    if mode == "symmetric" or opset < 19:
        # ONNX has no symmetric mode, and wrap only from opset 19: copies by Slice and Concat.
        assert "Pad" not in ops and ops <= {"Slice", "Concat", "Identity"}
    else:
        assert ops == {"Pad"}
    want = numpy_pad(x, pads, mode)
    reference = run(g, {"x": x})["y"]
    got = run_onnxruntime(model, {"x": x})["y"]
    np.testing.assert_array_equal(reference, want)
    np.testing.assert_array_equal(got, want)


def test_lowering_copies_integers_and_non_finite_values_exactly() -> None:
    x = np.array([[np.nan, np.inf, -np.inf, 2.5]], np.float32)
    g = pad_graph(x.shape, [0, 3, 0, 2], "symmetric")
    want = np.pad(x, [(0, 0), (3, 2)], mode="symmetric")
    np.testing.assert_array_equal(run_onnxruntime(to_onnx(g, 17), {"x": x})["y"], want)
    ints = np.arange(12, dtype=np.int64).reshape(3, 4)
    g = pad_graph(ints.shape, [2, 1, 1, 3], "symmetric", np.int64)
    np.testing.assert_array_equal(run_onnxruntime(to_onnx(g, 17), {"x": ints})["y"],
                                  np.pad(ints, [(2, 1), (1, 3)], mode="symmetric"))


def test_a_pad_of_zero_everywhere_exports_as_one_copy() -> None:
    g = pad_graph((2, 3), [0, 0, 0, 0], "symmetric")
    model = to_onnx(g, 17)
    assert [n.op_type for n in model.graph.node] == ["Identity"]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(run_onnxruntime(model, {"x": x})["y"], x)


def test_runs_are_the_slices_of_the_source_index() -> None:
    source = source_index("symmetric", 2, 4, 3)
    assert source.tolist() == [1, 0, 0, 1, 2, 3, 3, 2, 1]
    assert runs(source) == [(1, 0, -1), (0, 3, 1), (3, 1, -1)]
    rebuilt = np.concatenate([np.arange(a, b + s, s) for a, b, s in runs(source)])
    np.testing.assert_array_equal(rebuilt, source)


def test_gradient_folds_each_padded_cell_onto_the_cell_it_copies() -> None:
    # b a | a b c | c b: dY = 1 everywhere gives a 2 (itself and one copy), b 3, c 2.
    g = pad_graph((3,), [2, 2], "symmetric", np.float64)
    grads = run(gradient_graph(g, output="y", wrt=["x"]), {"x": np.array([1.0, 2.0, 3.0])})
    assert grads["dy/dx"].tolist() == [2.0, 3.0, 2.0]


@pytest.mark.parametrize("mode", ["symmetric", "wrap"])
def test_gradient_matches_central_finite_differences(mode: str) -> None:
    g = Graph("pad_loss")
    x = g.add_input("x", (1, 2, 3, 4), np.float64)
    y = g.add_node("Pad", [x, g.add_const("pads", np.array([0, 0, 2, -1, 0, 0, 4, 3], np.int64))],
                   {"mode": mode})
    r = np.random.default_rng(1).standard_normal(g.type_of(y).shape)
    g.outputs = [g.add_node("ReduceSum", [g.add_node("Mul", [y, g.add_const("r", r)])],
                            {"keepdims": 0}, name="loss")]
    x0 = np.random.default_rng(2).standard_normal((1, 2, 3, 4))
    grad_graph = gradient_graph(g, output="loss", wrt=["x"])
    got = run(grad_graph, {"x": x0})["dloss/dx"]
    np.testing.assert_allclose(run_onnxruntime(grad_graph, {"x": x0})["dloss/dx"], got,
                               rtol=1e-12, atol=1e-12)
    h = 1e-6
    for index in np.ndindex(x0.shape):
        up, down = x0.copy(), x0.copy()
        up[index] += h
        down[index] -= h
        fd = (float(run(g, {"x": up})["loss"]) - float(run(g, {"x": down})["loss"])) / (2 * h)
        assert abs(got[index] - fd) <= 1e-6 * max(1.0, abs(fd)), (index, got[index], fd)
    # Cropped cells get no gradient.
    assert np.all(got[..., 0] == 0)


def conv_reference(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Stride-1 VALID cross-correlation with explicit loops: y[o] = sum w[o, c, i, j] x[c, ...]."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    y = np.zeros((n, o, h - kh + 1, wd - kw + 1))
    for b in range(n):
        for m in range(o):
            for r in range(h - kh + 1):
                for s in range(wd - kw + 1):
                    y[b, m, r, s] = np.sum(w[m] * x[b, :, r:r + kh, s:s + kw])
    return y


@pytest.mark.parametrize("mode", ["zeros", "symmetric"])
def test_same_conv_keeps_the_size_with_zero_and_mirror_padding(mode: str) -> None:
    # The course: VALID gives (H - h + 1) x (W - w + 1); SAME pads (h - 1) / 2 on each side and
    # keeps H x W, with zeros or with the mirror of the border.
    b = GraphBuilder("same", seed=3)
    x = b.input("x", (1, 2, 6, 5))
    y = b.output(nn.conv2d(x, 3, 3, padding="same", padding_mode=mode, bias=False,
                           name="conv"), "y")
    valid = GraphBuilder("valid", seed=3)
    v = valid.output(nn.conv2d(valid.input("x", (1, 2, 6, 5)), 3, 3, bias=False, name="conv"),
                     "y")
    assert y.shape == (1, 3, 6, 5) and v.shape == (1, 3, 4, 3)
    g = b.build()
    w = np.asarray(g.nx.nodes["conv.weight"]["value"], np.float64)
    feeds = {"x": np.random.default_rng(4).standard_normal((1, 2, 6, 5)).astype(np.float32)}
    np_mode = "constant" if mode == "zeros" else "symmetric"
    want = conv_reference(np.pad(feeds["x"].astype(np.float64), [(0, 0), (0, 0), (1, 1), (1, 1)],
                                 mode=np_mode), w)
    np.testing.assert_allclose(run(g, feeds)["y"], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(run_onnxruntime(g, feeds)["y"], want, rtol=1e-5, atol=1e-5)
    ops = [g.op(n) for n in g.op_nodes()]
    assert ops == (["Conv"] if mode == "zeros" else ["Pad", "Conv"])


def test_nn_pad_mirror_pads_1d_and_3d_inputs() -> None:
    b = GraphBuilder("pads")
    x1 = b.input("x1", (1, 2, 4))
    x3 = b.input("x3", (1, 1, 2, 3, 2))
    b.output(nn.pad(x1, (3, 1), mode="symmetric", name="p1"), "y1")
    b.output(nn.pad(x3, (1, 0, 2, 0, 2, 1), mode="symmetric", name="p3"), "y3")
    g = b.build()
    feeds = {"x1": np.arange(8, dtype=np.float32).reshape(1, 2, 4),
             "x3": np.arange(12, dtype=np.float32).reshape(1, 1, 2, 3, 2)}
    out = run_onnxruntime(g, feeds)
    np.testing.assert_array_equal(out["y1"], np.pad(feeds["x1"], [(0, 0), (0, 0), (3, 1)],
                                                    mode="symmetric"))
    # (1, 0, 2, 0, 2, 1): the begins of (D, H, W), then their ends.
    np.testing.assert_array_equal(out["y3"], np.pad(feeds["x3"], [(0, 0), (0, 0), (1, 0), (0, 2),
                                                                  (2, 1)], mode="symmetric"))


def test_conv1d_mirror_padding_trains_through_the_pad() -> None:
    b = GraphBuilder("c1", seed=5)
    x = b.input("x", (2, 2, 7))
    b.output(nn.conv1d(x, 3, 5, padding="same", padding_mode="symmetric", name="conv"), "y")
    g = b.build()
    assert g.type_of(g.outputs[0]).shape == (2, 3, 7)
    feeds = {"x": np.random.default_rng(6).standard_normal((2, 2, 7)).astype(np.float32)}
    grads = gradient_graph(g, output="y")
    np.testing.assert_allclose(run_onnxruntime(grads, feeds)["dy/dconv.weight"],
                               run(grads, feeds)["dy/dconv.weight"], rtol=1e-5, atol=1e-5)


def test_unknown_modes_are_named_with_the_known_ones() -> None:
    b = GraphBuilder("bad")
    x = b.input("x", (1, 1, 4, 4))
    with pytest.raises(GraphcError, match="'symmetric'.*Did you mean 'symmetric'"):
        nn.pad(x, (1, 1, 1, 1), mode="symetric")
    with pytest.raises(GraphcError, match="unknown padding_mode 'mirror'; expected one of "
                                          "'edge', 'reflect', 'symmetric', 'zeros'"):
        nn.conv2d(x, 2, 3, padding="same", padding_mode="mirror")
    with pytest.raises(GraphcError, match="Pad mode 'reflect' needs pads smaller than the axis"):
        pad_graph((3,), [3, 0], "reflect")
