"""The backprop figure (graphc.symbolic.draw): both backends, the DOT text, errors and the
auto fallback.

Graphviz `dot` is not installed everywhere (not in CI): the matplotlib backend is always tested,
the graphviz backend only when `dot` is on PATH, and auto mode must draw either way.
"""

from __future__ import annotations

import io
import re
import shutil
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

import graphc
from graphc import nn
from graphc.errors import GraphcError
from graphc.models import load
from graphc.symbolic import draw as gdraw
from graphc.symbolic.chain_rule import BackpropResult, backprop

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HAVE_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAVE_DOT, reason="Graphviz `dot` is not installed")

# The course's figure for f = (x + y) z at x=-2, y=5, z=-4: (from, to, value, gradient).
COURSE_EDGES = {("x", "add", "-2", "-4"), ("y", "add", "5", "-4"), ("add", "f", "3", "-4"),
                ("z", "f", "-4", "3"), ("f", None, "-12", "1")}


@pytest.fixture(scope="module")
def course() -> BackpropResult:
    return backprop(load("backprop_example").build(), at={"x": -2.0, "y": 5.0, "z": -4.0})


def two_paths() -> BackpropResult:
    b = graphc.GraphBuilder("two_paths")
    x, y, z = b.inputs("x", "y", "z")
    b.output(x * y + x * z, "f")
    return backprop(b.build(), at={"x": 2.0, "y": 3.0, "z": -5.0})


def mlp_result(sizes: tuple[int, ...]) -> BackpropResult:
    b = graphc.GraphBuilder("mlp_" + "_".join(map(str, sizes)))
    h = b.input("x", (1, sizes[0]))
    for k, n in enumerate(sizes[1:], start=1):
        h = nn.sigmoid(nn.linear(h, n, init="xavier", name=f"fc{k}"))
    b.output(h, "y")
    return backprop(b.build(), at={"x": 0.5})


def assert_png(data: bytes) -> np.ndarray:
    """Check the PNG signature and that it decodes; return the pixels (RGB in 0..1)."""
    assert data[:8] == PNG_MAGIC
    pixels = imread(io.BytesIO(data), format="png")
    assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 100
    return pixels[..., :3]


def color_pixels(pixels: np.ndarray, hex_color: str, tolerance: float = 0.12) -> int:
    rgb = np.array([int(hex_color[k:k + 2], 16) / 255 for k in (1, 3, 5)])
    return int(np.sum(np.all(np.abs(pixels - rgb) < tolerance, axis=-1)))


def assert_svg(data: bytes) -> ET.Element:
    text = data.decode()
    assert text.lstrip().startswith(("<?xml", "<svg", "<!DOCTYPE"))
    root = ET.fromstring(data)
    assert root.tag.endswith("svg")
    return root


# ----- what is drawn --------------------------------------------------------------------------


def test_edges_carry_the_course_values_and_gradients(course):
    got = {(e.source, e.target, gdraw.format_number(e.value), gdraw.format_number(e.grad))
           for e in gdraw.edges(course)}
    assert got == COURSE_EDGES
    assert len(gdraw.edges(course)) == 5


def test_boxes(course):
    bxs = gdraw.boxes(course)
    assert [(b.name, b.title, b.kind) for b in bxs] == [
        ("x", "x", "input"), ("y", "y", "input"), ("z", "z", "input"), ("add", "+", "op"),
        ("f", "*", "op")]
    assert [b.is_objective for b in bxs] == [False, False, False, False, True]
    assert all(b.grad_sum is None for b in bxs)  # every value has one reader


def dot_nodes(dot: str) -> dict[str, tuple[str, str]]:
    """Parse the DOT text's boxes: node id -> (title, value name)."""
    out = {}
    for node, label in re.findall(r"^  (n\d+) \[label=<(.*?)>(?:, |\];)", dot, re.M):
        # An op's box is "<symbol><br/><name>", a leaf's just its name.
        rows = [re.sub(r"<[^>]+>", "", row) for row in label.split("<br/>")]
        out[node] = (rows[0], rows[1] if len(rows) > 1 else rows[0])
    return out


def dot_edges(dot: str) -> set[tuple[str, str | None, str, str]]:
    """Parse the DOT text back into (source name, target name, value, gradient)."""
    names = {node: name for node, (_, name) in dot_nodes(dot).items()}
    labels = {}
    for edge, value, grad in re.findall(
            r'^  (e\d+) \[shape=plain, label=<.*?<font color="#1a7f1a">(.*?)</font>.*?'
            r'<font color="#cc1f1f">(.*?)</font>', dot, re.M):
        labels[edge] = (value, grad)
    sources = dict((e, n) for n, e in re.findall(r"^  (n\d+) -> (e\d+):v:sw", dot, re.M))
    targets = dict(re.findall(r"^  (e\d+):v:se -> (n\d+|out);", dot, re.M))
    assert labels.keys() == sources.keys() == targets.keys()
    return {(names[sources[e]], None if targets[e] == "out" else names[targets[e]], *labels[e])
            for e in labels}


def test_dot_text_has_every_node_and_the_edge_labels(course):
    dot = gdraw.to_dot(course)
    assert dot.splitlines()[0] == 'digraph "backprop_example" {'
    assert dot.rstrip().endswith("}")
    assert dot_edges(dot) == COURSE_EDGES
    assert sorted(dot_nodes(dot).values()) == [("*", "f"), ("+", "add"), ("x", "x"),
                                               ("y", "y"), ("z", "z")]
    # The values in green above, the gradients in red below; the objective's box is bold.
    assert gdraw.VALUE_COLOR in dot and gdraw.GRAD_COLOR in dot
    assert "penwidth=2" in dot
    assert gdraw.to_dot(course) == dot  # deterministic


def test_dot_text_shows_the_gradient_sum_of_a_value_with_two_readers():
    r = two_paths()
    got = {(e.source, e.target, e.grad) for e in gdraw.edges(r) if e.source == "x"}
    # Each edge carries its path's share: y along x -> x*y, z along x -> x*z.
    assert got == {("x", "mul", 3.0), ("x", "mul_1", -5.0)}
    (x_box,) = [b for b in gdraw.boxes(r) if b.name == "x"]
    assert x_box.grad_sum == -2.0  # y + z
    assert "grad sum -2" in gdraw.to_dot(r)


# ----- the two backends -----------------------------------------------------------------------


def test_matplotlib_png_and_svg(course, tmp_path):
    png = gdraw.render(course, "png", backend="matplotlib")
    pixels = assert_png(png)
    # Green values and red gradients are drawn.
    assert color_pixels(pixels, gdraw.VALUE_COLOR) > 20
    assert color_pixels(pixels, gdraw.GRAD_COLOR) > 20
    assert_svg(gdraw.render(course, "svg", backend="matplotlib"))
    for suffix in (".png", ".svg"):
        path = tmp_path / f"bp{suffix}"
        assert gdraw.draw(course, path, backend="matplotlib") == "matplotlib"
        assert path.read_bytes() == gdraw.render(course, suffix[1:], backend="matplotlib")


def test_matplotlib_is_deterministic(course):
    for fmt in ("png", "svg"):
        first = gdraw.render(course, fmt, backend="matplotlib")
        assert gdraw.render(course, fmt, backend="matplotlib") == first
        again = backprop(course.graph, at={"x": -2.0, "y": 5.0, "z": -4.0})
        assert gdraw.render(again, fmt, backend="matplotlib") == first


def test_matplotlib_draws_a_network_with_parameters(tmp_path):
    r = backprop(load("mlp_tiny").build(), at={"x": [[0.5, -0.3]]})
    path = tmp_path / "mlp.png"
    assert gdraw.draw(r, path, backend="matplotlib") == "matplotlib"
    pixels = assert_png(path.read_bytes())
    assert color_pixels(pixels, gdraw.PARAM_FILL, tolerance=0.02) > 100  # parameter boxes
    assert color_pixels(pixels, gdraw.INPUT_FILL, tolerance=0.02) > 100  # input boxes
    # 11 leaves and 6 ops, one edge per operand plus the output edge.
    assert len(gdraw.boxes(r)) == 17
    assert len(gdraw.edges(r)) == sum(len(n.parents) for n in r.nodes.values()) + 1


@needs_dot
def test_graphviz_png_and_svg(course, tmp_path):
    pixels = assert_png(gdraw.render(course, "png", backend="graphviz"))
    assert color_pixels(pixels, gdraw.VALUE_COLOR) > 20
    assert color_pixels(pixels, gdraw.GRAD_COLOR) > 20
    svg = gdraw.render(course, "svg", backend="graphviz")
    root = assert_svg(svg)
    texts = ["".join(t.itertext()).strip() for t in root.iter() if t.tag.endswith("text")]
    for label in ("x", "y", "z", "add", "f", "-2", "5", "3", "-4", "-12", "1"):
        assert label in texts, label
    assert gdraw.render(course, "svg", backend="graphviz") == svg  # deterministic
    assert gdraw.render(course, "png", backend="graphviz") == gdraw.render(
        course, "png", backend="graphviz")
    path = tmp_path / "bp.svg"
    assert gdraw.draw(course, path, backend="graphviz") == "graphviz"
    assert path.read_bytes() == svg
    # With dot installed, auto picks it.
    assert gdraw.draw(course, tmp_path / "auto.png") == "graphviz"


# ----- auto mode never fails for want of Graphviz ---------------------------------------------


def test_auto_without_dot_on_path_draws_with_matplotlib(course, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "")
    assert shutil.which("dot") is None
    path = tmp_path / "bp.png"
    assert gdraw.draw(course, path) == "matplotlib"
    assert path.read_bytes() == gdraw.render(course, "png", backend="matplotlib")
    assert course.draw(str(tmp_path / "bp.svg")) == "matplotlib"
    assert_svg((tmp_path / "bp.svg").read_bytes())
    assert course._repr_svg_().startswith(("<?xml", "<svg"))


def test_auto_with_which_returning_nothing(course, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    assert gdraw.draw(course, tmp_path / "bp.png") == "matplotlib"
    assert_png((tmp_path / "bp.png").read_bytes())


def test_auto_falls_back_when_dot_fails(course, tmp_path, monkeypatch):
    # A `dot` that exists but fails: auto still draws (matplotlib); graphviz reports it.
    fake = tmp_path / "bin" / "dot"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'dot: broken' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(fake.parent))
    assert shutil.which("dot") == str(fake)
    assert gdraw.draw(course, tmp_path / "bp.png") == "matplotlib"
    assert_png((tmp_path / "bp.png").read_bytes())
    with pytest.raises(GraphcError) as info:
        gdraw.render(course, "png", backend="graphviz")
    assert "Graphviz failed" in str(info.value)
    assert "dot: broken" in str(info.value) or "failed to run" in str(info.value)


def test_forced_graphviz_without_dot_is_a_clear_error(course, monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(GraphcError) as info:
        gdraw.render(course, "svg", backend="graphviz")
    assert "Graphviz is not installed" in str(info.value)
    assert "matplotlib" in str(info.value)


# ----- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "got"), [("bp.jpg", "got '.jpg'"), ("bp", "got no suffix"),
                                           ("bp.pdf", "got '.pdf'")])
def test_wrong_suffix(course, tmp_path, name, got):
    path = tmp_path / name
    with pytest.raises(GraphcError) as info:
        gdraw.draw(course, path)
    message = str(info.value)
    assert "expected a path ending in .png or .svg" in message
    assert got in message
    assert not path.exists()


def test_wrong_format_and_backend(course):
    with pytest.raises(GraphcError) as info:
        gdraw.render(course, "jpg")
    assert "expected 'svg' or 'png', got 'jpg'" in str(info.value)
    with pytest.raises(GraphcError) as info:
        gdraw.render(course, "png", backend="matplotlb")
    assert "Did you mean 'matplotlib'?" in str(info.value)


def test_too_many_nodes(course, tmp_path):
    with pytest.raises(GraphcError) as info:
        gdraw.draw(course, tmp_path / "bp.png", max_nodes=3)
    message = str(info.value)
    assert "expected at most 3 nodes" in message and "got 5 nodes" in message
    assert not (tmp_path / "bp.png").exists()
    r = mlp_result((8, 16, 4))
    n = len(r.nodes)
    assert n > gdraw.DEFAULT_MAX_NODES
    for call in (lambda: r.draw(str(tmp_path / "big.png")),
                 lambda: gdraw.render(r, "svg", backend="matplotlib"),
                 lambda: gdraw.to_dot(r)):
        with pytest.raises(GraphcError) as info:
            call()
        message = str(info.value)
        assert f"expected at most {gdraw.DEFAULT_MAX_NODES} nodes" in message
        assert f"got {n} nodes" in message
        assert f"max_nodes={n}" in message


def test_format_number():
    assert [gdraw.format_number(v) for v in (-12.0, 3.0, 0.0, -0.0, 0.012432, 3e-7)] == [
        "-12", "3", "0", "0", "0.01243", "3e-7"]
    assert gdraw.format_number(float("nan")) == "nan"


def test_draw_writes_nothing_else(course, tmp_path):
    gdraw.draw(course, tmp_path / "only.svg", backend="matplotlib")
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["only.svg"]
