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
