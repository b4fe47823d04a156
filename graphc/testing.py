"""Checks for graph rewrites: structural equality, and equal outputs before and after a pass on
graphc's interpreter and on onnxruntime. graphc's own tests use them; so can a new pass.

>>> from graphc.models import load
>>> from graphc.passes.remove_dropout import remove_dropout
>>> g = load("mlp").build()
>>> assert_same_outputs(g, remove_dropout(g), random_feeds(g))
"""

from __future__ import annotations

from collections.abc import Mapping

import networkx as nx
import numpy as np

from graphc.interpret import run
from graphc.ir import CONST, INPUT, Graph


def random_feeds(g: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Return seeded standard-normal inputs of the graph's input shapes and dtypes."""
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(g.types(n)[0].shape).astype(g.types(n)[0].dtype)
            for n in g.inputs}


def structure(g: Graph) -> nx.MultiDiGraph:
    """Return ``g`` as a plain multigraph labelled with op, attrs, input names, constant types
    and graph-output slots: what two graphs must share to be the same program."""
    s = nx.MultiDiGraph()
    for node, data in g.nx.nodes(data=True):
        label = {"op": data["op"], "attrs": dict(data["attrs"])}
        if data["op"] == INPUT:
            label["name"] = node
        if data["op"] == CONST:
            label["type"] = data["types"][0]
        label["outputs"] = tuple((k, v.out) for k, v in enumerate(g.outputs) if v.node == node)
        s.add_node(node, **label)
    for u, v, d in g.nx.edges(data=True):
        s.add_edge(u, v, port=d["port"], out=d["out"])
    return s


def _edges_match(a: dict, b: dict) -> bool:
    def key(edges: dict) -> list[tuple[int, int]]:
        return sorted((d["port"], d["out"]) for d in edges.values())

    return key(a) == key(b)


def same_structure(got: Graph, want: Graph) -> bool:
    """Return whether the graphs are isomorphic with equal ops, attributes and ports."""
    return nx.is_isomorphic(structure(got), structure(want), node_match=lambda a, b: a == b,
                            edge_match=_edges_match)


def assert_same_structure(got: Graph, want: Graph) -> None:
    """Fail, printing both graphs, unless ``same_structure(got, want)``."""
    assert same_structure(got, want), f"got:\n{got}\nexpected:\n{want}"


def assert_same_outputs(before: Graph, after: Graph, feeds: Mapping[str, np.ndarray],
                        rtol: float = 0.0) -> None:
    """Fail unless both graphs give the same outputs (names, shapes, dtypes, values) on the
    interpreter and on onnxruntime: exactly with ``rtol=0``, else within ``rtol`` of each
    output's largest magnitude. Boolean outputs must always be equal."""
    # onnxruntime (and onnx) only here: the CLI's random_feeds must not pay for them.
    from graphc.onnxio.runtime import run_onnxruntime

    for runner in (run, run_onnxruntime):
        want = runner(before, feeds)
        got = runner(after, feeds)
        assert list(got) == list(want), (runner.__name__, list(got), list(want))
        for name, w in want.items():
            g = got[name]
            assert g.shape == w.shape and g.dtype == w.dtype, (runner.__name__, name)
            if rtol == 0.0 or w.dtype == np.bool_:
                np.testing.assert_array_equal(g, w, err_msg=f"{runner.__name__} {name}")
                continue
            scale = float(np.max(np.abs(w))) if w.size else 0.0
            diff = float(np.max(np.abs(g.astype(np.float64) - w.astype(np.float64)))) \
                if w.size else 0.0
            assert diff <= rtol * scale, (runner.__name__, name, diff, scale)


def one_error_line(stderr: str) -> str:
    """Return the one line a failed ``graphc`` command printed on stderr, checking that it is
    a single ``graphc: error: ...`` line and no traceback."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("graphc: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]
