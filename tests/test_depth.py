"""SpaceToDepth and DepthToSpace beyond their op examples: SpaceToDepth's CRD mode below opset
28 (Reshape, Transpose, Reshape) with a free batch dimension, and the two as inverses."""

from __future__ import annotations

import numpy as np
import pytest

from graphc.dsl import GraphBuilder
from graphc.interpret import run
from graphc.onnxio.export import to_bytes
from graphc.onnxio.runtime import run_onnxruntime


def moved(batch: int, mode: str):
    b = GraphBuilder("s2d")
    b.output(b.op("SpaceToDepth", b.input("x", (batch, 2, 4, 6)), blocksize=2, mode=mode), "y")
    return b.build()


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_space_to_depth_runs_at_any_batch_size_when_the_batch_is_free(mode):
    x = np.random.default_rng(0).standard_normal((3, 2, 4, 6)).astype(np.float32)
    model = to_bytes(moved(1, mode), 21, dynamic_batch=True)
    np.testing.assert_array_equal(run_onnxruntime(model, {"x": x})["y"],
                                  run(moved(3, mode), {"x": x})["y"])


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space_undoes_space_to_depth(mode):
    b = GraphBuilder("round_trip")
    x = b.input("x", (2, 3, 6, 4))
    y = b.op("SpaceToDepth", x, blocksize=2, mode=mode)
    b.output(b.op("DepthToSpace", y, blocksize=2, mode=mode), "y")
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 3, 6, 4)).astype(np.float32)}
    g = b.build()
    np.testing.assert_array_equal(run(g, feeds)["y"], feeds["x"])
    for opset in (17, 21):
        np.testing.assert_array_equal(run_onnxruntime(to_bytes(g, opset), feeds)["y"],
                                      feeds["x"])
