"""ONNX export: deterministic bytes, readable names, producer, opsets, atomic save, odd outputs."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys

import numpy as np
import onnx
import pytest

import graphc
from graphc import nn
from graphc.dsl import GraphBuilder
from graphc.errors import ExportError, GraphcError
from graphc.interpret import run
from graphc.ir import CONST, Graph, Value
from graphc.models import load
from graphc.onnxio.export import DEFAULT_OPSET, max_opset, save, to_bytes, to_onnx
from graphc.onnxio.runtime import compare, run_onnxruntime

DETERMINISM_MODELS = ["backprop_example", "neuron", "lenet5", "cnn", "residual"]


def check(model: onnx.ModelProto) -> None:
    onnx.checker.check_model(model, full_check=True)


def gn_step_graph() -> tuple[Graph, dict[str, np.ndarray]]:
    """A small graph with GroupNormalization and Heaviside, and inputs away from the step."""
    b = GraphBuilder("gn_step")
    x = b.input("x", (2, 4, 3, 3))
    h = b.output(nn.group_norm(x, 2, name="gn"), "h")
    b.output(nn.heaviside(h, 0.25, name="step"), "y")
    g = b.build()
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((2, 4, 3, 3)).astype(np.float32)}
    assert np.min(np.abs(run(g, feeds)["h"] - 0.25)) > 1e-3
    return g, feeds


# ----- determinism --------------------------------------------------------------------------


@pytest.mark.parametrize("name", DETERMINISM_MODELS)
def test_export_is_byte_identical(name):
    module = load(name)
    g = module.build()
    first = to_bytes(g)
    assert to_bytes(g) == first
    assert to_bytes(module.build()) == first
    # The bytes are the deterministic serialization of the model.
    assert to_onnx(g).SerializeToString(deterministic=True) == first


def test_export_is_byte_identical_across_processes():
    code = ("import hashlib; from graphc.models import cnn; from graphc import to_bytes; "
            "print(hashlib.sha256(to_bytes(cnn.build())).hexdigest())")
    # A fresh interpreter with another string-hash seed than this one (set iteration order).
    seed = "1" if os.environ.get("PYTHONHASHSEED") == "0" else "0"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == hashlib.sha256(to_bytes(load("cnn").build())).hexdigest()


def test_different_seed_gives_different_bytes():
    cnn = load("cnn")
    assert to_bytes(cnn.build(seed=0)) != to_bytes(cnn.build(seed=1))


# ----- names and producer -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cnn", "residual", "mlp"])
def test_readable_names(name):
    g = load(name).build()
    model = to_onnx(g)
    used_consts = [n for n in g.topo() if g.op(n) == CONST and g.nx.out_degree(n)]
    assert [t.name for t in model.graph.initializer] == used_consts
    assert set(g.params()) <= set(used_consts)
    for t in model.graph.initializer:
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(t), g.const_value(Value(t.name)))
    # These models lower one ONNX node per op node, named by the node id, in graph order.
    assert [n.name for n in model.graph.node] == g.op_nodes()
    assert [n.op_type for n in model.graph.node] == [g.op(n) for n in g.op_nodes()]
    for node in model.graph.node:
        assert node.output[0] == node.name
    assert [i.name for i in model.graph.input] == g.inputs
    assert [o.name for o in model.graph.output] == g.output_names()
    assert model.graph.name == g.name


def test_scoped_parameter_names_reach_onnx():
    model = to_onnx(load("cnn").build())
    names = {t.name for t in model.graph.initializer}
    assert {"block1.conv.weight", "block1.bn.running_var", "fc.weight", "fc.bias"} <= names
    conv = next(n for n in model.graph.node if n.name == "block1.conv")
    assert list(conv.input) == ["x", "block1.conv.weight"]


def test_producer_and_default_opset():
    model = to_onnx(load("backprop_example").build())
    assert model.producer_name == "graphc"
    assert model.producer_version == graphc.__version__
    from importlib.metadata import version

    assert graphc.__version__ == version("graphc")
    assert DEFAULT_OPSET == 17
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    check(model)


# ----- opsets -------------------------------------------------------------------------------


def test_max_opset_is_runnable_and_the_next_is_not():
    import onnxruntime as ort

    top = max_opset()
    assert top >= DEFAULT_OPSET
    assert top <= onnx.defs.onnx_opset_version()

    def probe(opset: int) -> onnx.ModelProto:
        graph = onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["x"], ["y"])], "probe",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
        return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)],
                                      ir_version=10)

    ort.InferenceSession(probe(top).SerializeToString(), providers=["CPUExecutionProvider"])
    if top < onnx.defs.onnx_opset_version():
        with pytest.raises(Exception):  # noqa: B017 - any refusal by onnxruntime
            ort.InferenceSession(probe(top + 1).SerializeToString(),
                                 providers=["CPUExecutionProvider"])


def test_every_supported_opset_exports_and_runs():
    cnn = load("cnn")
    g_cnn, feeds_cnn = cnn.build(), cnn.example_inputs()
    g_gn, feeds_gn = gn_step_graph()
    want_cnn, want_gn = run(g_cnn, feeds_cnn), run(g_gn, feeds_gn)
    scale = max(1.0, float(np.abs(want_cnn["logits"]).max()))
    for opset in range(DEFAULT_OPSET, max_opset() + 1):
        for g, feeds, want in [(g_cnn, feeds_cnn, want_cnn), (g_gn, feeds_gn, want_gn)]:
            model = to_onnx(g, opset)
            assert model.opset_import[0].version == opset
            check(model)
            got = run_onnxruntime(model, feeds)
            assert list(got) == list(want)
            for name, value in want.items():
                np.testing.assert_allclose(got[name], value, rtol=0, atol=1e-5 * scale,
                                           err_msg=f"{g.name} {name} opset {opset}")
        # Heaviside outputs exactly 0 or 1 at every opset.
        step = run_onnxruntime(to_onnx(g_gn, opset), feeds_gn)["y"]
        np.testing.assert_array_equal(step, want_gn["y"])
        assert set(np.unique(step)) == {0.0, 1.0}


def test_group_norm_lowering_changes_at_opset_21():
    g, _ = gn_step_graph()
    ops17 = {n.op_type for n in to_onnx(g, 17).graph.node}
    assert "GroupNormalization" not in ops17 and "InstanceNormalization" in ops17
    if max_opset() >= 21:
        assert "GroupNormalization" in {n.op_type for n in to_onnx(g, 21).graph.node}


@pytest.mark.parametrize("opset", [13, 16, "max+1"])
def test_unrunnable_opset_raises_export_error(opset):
    opset = max_opset() + 1 if opset == "max+1" else opset
    g = load("cnn").build()
    with pytest.raises(ExportError) as info:
        to_onnx(g, opset)
    msg = str(info.value)
    assert f"opset {opset} cannot be exported" in msg
    assert f"expected an opset from 17 to {max_opset()}, got {opset}" in msg
    assert "--opset 17" in msg


# ----- save ---------------------------------------------------------------------------------


def test_save_writes_a_checked_file_and_no_temporary(tmp_path):
    g = load("cnn").build()
    path = tmp_path / "cnn.onnx"
    model = save(g, path)
    assert os.listdir(tmp_path) == ["cnn.onnx"]
    assert path.read_bytes() == to_bytes(g)
    loaded = onnx.load(str(path))
    check(loaded)
    assert loaded == model
    # Overwriting keeps a single file.
    save(load("residual").build(), path)
    assert os.listdir(tmp_path) == ["cnn.onnx"]
    assert onnx.load(str(path)).graph.name == "residual"


def test_saved_file_has_ordinary_permissions(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    path = tmp_path / "model.onnx"
    save(load("backprop_example").build(), path)
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    # An atomic write should give the file the mode an ordinary write gives it.
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_save_with_export_error_leaves_old_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old contents")
    with pytest.raises(ExportError):
        save(load("cnn").build(), path, opset=13)
    assert path.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["model.onnx"]


def test_save_interrupted_while_writing_leaves_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old contents")

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(GraphcError, match="cannot write .*model.onnx.*disk full"):
        save(load("cnn").build(), path)
    assert path.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["model.onnx"]


# ----- unusual outputs ----------------------------------------------------------------------


def odd_outputs_graph() -> Graph:
    g = Graph("odd")
    x = g.add_input("x", (2,))
    k = g.add_const("k", np.array([1.0, 2.0], np.float32))
    r = g.add_node("Relu", [x])
    g.outputs += [x, k, r, r]
    g.verify()
    return g


def test_output_that_is_input_constant_or_repeated_exports():
    g = odd_outputs_graph()
    model = to_onnx(g)
    check(model)
    names = [o.name for o in model.graph.output]
    assert len(names) == 4 and len(set(names)) == 4
    xv = np.array([-1.0, 3.0], np.float32)
    got = list(run_onnxruntime(model, {"x": xv}).values())
    np.testing.assert_array_equal(got[0], xv)
    np.testing.assert_array_equal(got[1], [1.0, 2.0])
    np.testing.assert_array_equal(got[2], [0.0, 3.0])
    np.testing.assert_array_equal(got[3], [0.0, 3.0])
    assert to_bytes(g) == to_bytes(odd_outputs_graph())


def test_compare_on_repeated_outputs():
    g = odd_outputs_graph()
    assert compare(g, {"x": np.array([-1.0, 3.0], np.float32)}) == 0.0


def test_builder_output_of_input_and_twice_exports():
    b = GraphBuilder("io")
    x = b.input("x", (3,))
    y = nn.relu(x)
    b.output(x)
    y = b.output(y, "y")
    b.output(y)
    g = b.build()
    model = to_onnx(g)
    check(model)
    xv = np.array([-1.0, 0.5, 2.0], np.float32)
    got = list(run_onnxruntime(model, {"x": xv}).values())
    assert len(got) == 3
    np.testing.assert_array_equal(got[0], xv)
    np.testing.assert_array_equal(got[1], np.maximum(xv, 0))
    np.testing.assert_array_equal(got[2], np.maximum(xv, 0))
