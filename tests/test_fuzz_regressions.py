"""Bugs found by the random-graph properties (tests/test_fuzz.py), one test each, on the small
graph that showed it."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.dsl import GraphBuilder, Tensor
from graphc.errors import ShapeError
from graphc.interpret import run
from graphc.ir import Value
from graphc.passes.remove_dropout import remove_dropout
from graphc.testing import assert_same_outputs


def test_pad_of_a_scalar_is_refused_as_onnxruntime_refuses_it() -> None:
    # The numpy reference failed on a scalar ("pad_width must be of integral type") or returned
    # shape (1,) against the shape rule's (); onnxruntime refuses a scalar in every mode.
    for mode in ("constant", "reflect", "edge", "wrap"):
        b = GraphBuilder("pad_scalar")
        x = b.input("x", ())
        with pytest.raises(ShapeError, match="Pad of a scalar is not supported"):
            b.op("Pad", x, b.const(np.zeros(0, np.int64), dtype=np.int64), mode=mode)


def test_remove_dropout_when_only_the_mask_is_used() -> None:
    # The rule replaced the mask, which left the Dropout dead and removed it; the rewrite
    # engine then read the type of the removed node (KeyError).
    b = GraphBuilder("mask_only")
    x = b.input("x", (2, 3))
    drop = b.op("Dropout", b.op("LogSoftmax", x, axis=1), b.const(np.float32(0.5)))
    b.output(Tensor(b, Value(drop.value.node, 1)), "y")
    g = b.build()
    after = remove_dropout(g)
    assert [after.op(n) for n in after.op_nodes()] == ["Identity"]
    feeds = {"x": np.arange(6, dtype=np.float32).reshape(2, 3)}
    assert run(after, feeds)["y"].all()
    assert_same_outputs(g, after, feeds)


def test_remove_dropout_keeps_output_names_when_its_input_is_an_output() -> None:
    # y0 = Dropout(y1) with both outputs: replace() compared every output's name once, after
    # the Dropout's output had become a second use of y1 (named y1_out in the file), so y0 got
    # its Identity and then y1 got one too, named y1_1: the graph's interface changed.
    for order in (("y0", "y1"), ("y1", "y0")):
        b = GraphBuilder("dropout_of_output")
        x = b.input("x", (4, 1))
        values = {"y1": b.op("Abs", x)}
        values["y0"] = b.op("Dropout", values["y1"])
        for name in order:
            b.output(values[name], name)
        g = b.build()
        after = remove_dropout(g)
        assert after.output_names() == list(order)
        assert "Dropout" not in [after.op(n) for n in after.op_nodes()]
        feeds = {"x": np.array([[-1.5], [0.0], [2.0], [-0.25]], np.float32)}
        assert list(run(after, feeds)) == list(order)
        np.testing.assert_array_equal(run(after, feeds)["y0"], np.abs(feeds["x"]))
        assert_same_outputs(g, after, feeds)


def test_remove_dropout_of_an_output_of_a_two_output_node() -> None:
    # The seed-101 graph: y0 = Dropout(y2), y2 the first output of a MaxPool with indices.
    b = GraphBuilder("dropout_of_maxpool")
    x = b.input("x", (1, 1, 6))
    pool = b.op("MaxPool", b.op("Sigmoid", x), kernel_shape=[2], strides=[1],
                auto_pad="SAME_UPPER")
    off = b.const(np.bool_(False), dtype=np.bool_)
    b.output(b.op("Dropout", pool, b.const(np.float32(0.0)), off), "y0")
    b.output(b.op("Neg", x), "y1")
    b.output(pool, "y2")
    g = b.build()
    after = remove_dropout(g)
    assert after.output_names() == ["y0", "y1", "y2"]
    feeds = {"x": np.linspace(-2.0, 3.0, 6, dtype=np.float32).reshape(1, 1, 6)}
    assert_same_outputs(g, after, feeds)

