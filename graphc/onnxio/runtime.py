"""Run ONNX models on onnxruntime (CPU) and compare them with graphc's interpreter.

The one place that builds onnxruntime sessions: ``session`` (threads, config entries).

>>> from graphc.models import backprop_example
>>> g = backprop_example.build()
>>> feeds = {"x": -2.0, "y": 5.0, "z": -4.0}
>>> float(run_onnxruntime(g, feeds)["f"])
-12.0
>>> compare(g, feeds)
0.0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx

from graphc.interpret import check_feeds, run
from graphc.ir import Graph
from graphc.onnxio.export import to_bytes, to_onnx


def session(model: onnx.ModelProto | bytes | Graph, threads: int | None = None,
            config: Mapping[str, str] | None = None, profile: str | None = None,
            optimize: bool = True) -> Any:
    """Return an onnxruntime CPU ``InferenceSession`` for a model, its bytes or a graph, with
    ``threads`` intra-op threads (default: onnxruntime's) and session ``config`` entries;
    ``profile`` turns on onnxruntime's profiling, written by ``end_profiling()`` to
    ``<profile>_<timestamp>.json`` (give an absolute prefix: a relative one lands in the cwd);
    ``optimize=False`` turns graph optimizations off, so onnxruntime runs every op as written
    (no int8 fusion: the reference run of a quantized file)."""
    import onnxruntime as ort

    if isinstance(model, Graph):
        model = to_bytes(model)
    elif isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def run_onnxruntime(model: onnx.ModelProto | bytes | Graph, feeds: Mapping[str, Any],
                    threads: int | None = None) -> dict[str, np.ndarray]:
    """Run a model (or a graph, exported first) on onnxruntime; return output name -> array."""
    if isinstance(model, Graph):
        feeds = check_feeds(model, feeds)
    sess = session(model, threads)
    names = [o.name for o in sess.get_outputs()]
    results = sess.run(names, {k: np.asarray(v) for k, v in feeds.items()})
    return dict(zip(names, results, strict=True))


def max_abs_diff(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    """Return the largest absolute difference between matching outputs (paired in order)."""
    diffs = [float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             if np.size(x) else 0.0
             for x, y in zip(a.values(), b.values(), strict=True)]
    return max(diffs, default=0.0)


def compare(g: Graph, feeds: Mapping[str, Any], opset: int | None = None) -> float:
    """Return the max abs difference between the interpreter and onnxruntime on ``feeds``."""
    return max_abs_diff(run(g, feeds), run_onnxruntime(to_onnx(g, opset), check_feeds(g, feeds)))
