"""``graphc compile --verify``: it fails (exit 1, nothing written) when the compiled file does not
compute what the model computes, and passes when it does; ``--tolerance`` sets the bound."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

import graphc.passes
from graphc import testing
from graphc.cli import main
from graphc.interpret import run
from graphc.ir import Graph
from graphc.rewrite import PassReport

TWO_OUTPUTS = """\
    from graphc import GraphBuilder, nn

    def build(seed=0):
        b = GraphBuilder("two")
        x = b.input("x", (1, 4))
        b.output(nn.linear(x, 3, name="fc1"), "y1")
        b.output(nn.linear(x, 2, name="fc2"), "y2")
        return b.build()
    """


def shift_weight(g: Graph, *, report: PassReport | None = None) -> Graph:
    """Add 0.5 to the first weight of fc1 (a pass that computes something else)."""
    return _set_first(g, "fc1", lambda w: w + np.float32(0.5))


def nan_weight(g: Graph, *, report: PassReport | None = None) -> Graph:
    """Make one weight of fc2 NaN: output y2 becomes NaN, y1 stays right."""
    return _set_first(g, "fc2", lambda w: np.where(np.arange(w.size).reshape(w.shape) == 0,
                                                   np.float32(np.nan), w))


def _set_first(g: Graph, layer: str, change) -> Graph:
    new = g.copy()
    node = next(n for n in new.params() if n.startswith(layer) and "weight" in n)
    value = np.array(change(new.nx.nodes[node]["value"]), np.float32)
    value.flags.writeable = False
    new.nx.nodes[node]["value"] = value
    return new


@pytest.fixture
def injected(monkeypatch):
    monkeypatch.setattr(graphc.passes, "PASSES", [*graphc.passes.PASSES, shift_weight,
                                                  nan_weight])


def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "two.py"
    path.write_text(textwrap.dedent(TWO_OUTPUTS))
    return path


def failure(capsys, argv: list[str], status: int = 1) -> str:
    assert main(argv) == status
    captured = capsys.readouterr()
    assert "compiled " not in captured.out
    return testing.one_error_line(captured.err)


def test_a_changed_weight_fails_and_writes_nothing(tmp_path, capsys, injected):
    out = tmp_path / "two.onnx"
    err = failure(capsys, ["compile", str(model_file(tmp_path)), "--passes", "shift-weight",
                           "--verify", "-o", str(out)])
    assert err.startswith("graphc: error: --verify: the compiled file fails verification "
                          "(compiled on onnxruntime vs original on the interpreter); nothing "
                          f"was written to {out}")
    assert "mismatch at output 'y1' element [0, " in err and "over the tolerance" in err
    assert not out.exists()
    # Without --verify the same command writes the file: it is --verify that refused it.
    assert main(["compile", str(model_file(tmp_path)), "--passes", "shift-weight",
                 "-o", str(out)]) == 0
    assert out.is_file()


def test_a_failed_verify_keeps_an_existing_output_unchanged(tmp_path, capsys, injected):
    out = tmp_path / "two.onnx"
    out.write_bytes(b"earlier")
    failure(capsys, ["compile", str(model_file(tmp_path)), "--passes", "shift-weight",
                     "--verify", "-o", str(out)])
    assert out.read_bytes() == b"earlier"


def test_a_nan_in_one_output_fails(tmp_path, capsys, injected):
    out = tmp_path / "two.onnx"
    err = failure(capsys, ["compile", str(model_file(tmp_path)), "--passes", "nan-weight",
                           "--verify", "-o", str(out)])
    # y1 matches exactly; the NaN in y2 is the worst element, not dropped by a max.
    assert "mismatch at output 'y2' element [0, 0]" in err
    assert "got nan; NaN where a number is expected" in err
    assert not out.exists()


def test_matching_outputs_pass_with_the_worst_element(tmp_path, capsys):
    out = tmp_path / "two.onnx"
    assert main(["compile", str(model_file(tmp_path)), "--verify", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    line = re.search(r"^  verify       ok: max abs diff (\S+) \(tolerance (\S+) = 0\.0001 x "
                     r"output scale (\S+)\); worst at output '(y1|y2)' element \[0, \d\]: "
                     r"expected \S+, got \S+ \(interpreter vs onnxruntime\)$", text, re.M)
    assert line, text
    assert float(line[1]) <= float(line[2])
    from graphc.cli.common import load_model

    loaded = load_model(str(model_file(tmp_path)))
    want = run(loaded.graph, loaded.feeds)
    # The scale is the largest |value| of the worst output, on the interpreter.
    assert float(line[3]) == pytest.approx(float(np.abs(want[line[4]]).max()), rel=1e-2)
    assert out.is_file()


def test_tolerance_sets_the_bound(tmp_path, capsys, injected):
    out = tmp_path / "two.onnx"
    # A weight shifted by 0.5 moves y1 by 0.5 * x[0]: within a tolerance of 100 x the scale.
    assert main(["compile", str(model_file(tmp_path)), "--passes", "shift-weight",
                 "--verify", "--tolerance", "100", "-o", str(out)]) == 0
    assert "tolerance" in capsys.readouterr().out and out.is_file()


@pytest.mark.parametrize("value", ["0", "-1e-3", "nan", "inf", "abc"])
def test_tolerance_must_be_a_positive_number(tmp_path, capsys, value):
    out = tmp_path / "m.onnx"
    with pytest.raises(SystemExit) as info:
        main(["compile", "mlp_tiny", "--verify", f"--tolerance={value}", "-o", str(out)])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"graphc: error: argument --tolerance: invalid positive_float value: '{value}'")
    assert not out.exists()


def test_tolerance_without_verify_is_a_usage_error(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    err = failure(capsys, ["compile", "mlp_tiny", "--tolerance", "1e-3", "-o", str(out)], 2)
    assert "--tolerance only applies to --verify" in err
    assert not out.exists()


def test_an_onnx_input_is_also_compared_with_the_original_file(tmp_path, capsys):
    original = tmp_path / "two.onnx"
    assert main(["compile", str(model_file(tmp_path)), "-o", str(original)]) == 0
    capsys.readouterr()
    out = tmp_path / "two.opt.onnx"
    assert main(["compile", str(original), "--pipeline", "inference", "--verify",
                 "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^               ok: max abs diff \S+ .*\(compiled vs original file, "
                     r"both on onnxruntime\)$", text, re.M), text
    model = onnx.load(str(out))
    assert [o.name for o in model.graph.output] == ["y1", "y2"]


def test_external_data_in_the_model_folder_works_from_another_folder(tmp_path, capsys,
                                                                    monkeypatch):
    folder = tmp_path / "model"
    folder.mkdir()
    plain = tmp_path / "plain.onnx"
    assert main(["compile", str(model_file(tmp_path)), "-o", str(plain)]) == 0
    onnx.save_model(onnx.load(str(plain)), folder / "m.onnx", save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["compile", "../model/m.onnx", "--verify", "--check-speed", "-o",
                 "out.onnx"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"ok: max abs diff \S+ .*\(compiled vs original file, both on "
                     r"onnxruntime\)$", text, re.M), text
    assert "speed check" in text
    assert (elsewhere / "out.onnx").is_file()


def test_the_interpreter_reference_is_what_the_model_computes(tmp_path, capsys, injected):
    """The failing comparison reports the interpreter's value and onnxruntime's at one
    element; both are checked here against the graphs run independently."""
    path = model_file(tmp_path)
    err = failure(capsys, ["compile", str(path), "--passes", "shift-weight", "--verify",
                           "-o", str(tmp_path / "o.onnx")])
    m = re.search(r"element \[0, (\d)\]: expected (\S+), got (\S+);", err)
    assert m, err
    from graphc.cli.common import load_model

    loaded = load_model(str(path))
    want = run(loaded.graph, loaded.feeds)["y1"][0, int(m[1])]
    got = run(shift_weight(loaded.graph), loaded.feeds)["y1"][0, int(m[1])]
    assert float(m[2]) == pytest.approx(float(want), rel=1e-6)
    assert float(m[3]) == pytest.approx(float(got), rel=1e-5)


def test_pruning_is_checked_against_the_pruned_graph(tmp_path, capsys):
    """prune-magnitude changes the outputs on purpose: the file must equal the pruned graph,
    and its distance from the model is shown, not a failure."""
    out = tmp_path / "two.onnx"
    assert main(["compile", str(model_file(tmp_path)), "--passes", "prune-magnitude",
                 "--sparsity", "0.5", "--verify", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^  verify       ok: .*\(compiled on onnxruntime vs the compiled graph on "
                     r"the interpreter\)$", text, re.M), text
    shown = re.search(r"^               mismatch at output .*\(compiled on onnxruntime vs "
                      r"original on the interpreter: changed on purpose by prune-magnitude; "
                      r"shown, not checked\)$", text, re.M)
    assert shown, text
    assert out.is_file()


CONSTANT_RESHAPE = """\
    from graphc import GraphBuilder, nn

    def build(seed=0):
        b = GraphBuilder("rs")
        x = b.input("x", (1, 2, 4))
        flat = nn.reshape(nn.relu(x), (1, 8), name="to_flat")
        b.output(nn.linear(flat, 3, name="fc"), "y")
        return b.build()
    """


def test_a_dynamic_batch_file_that_fails_at_batch_3_is_refused(tmp_path, capfd):
    path = tmp_path / "rs.py"
    path.write_text(textwrap.dedent(CONSTANT_RESHAPE))
    out = tmp_path / "rs.onnx"
    assert main(["compile", str(path), "--dynamic-batch", "--verify", "-o", str(out)]) == 1
    captured = capfd.readouterr()  # file descriptors: onnxruntime's own log would show here
    assert "compiled " not in captured.out
    line = testing.one_error_line(captured.err)
    assert line.startswith("graphc: error: --dynamic-batch: Reshape node 'to_flat': the "
                           "compiled file does not run at batch 3"), line
    assert "Input shape:{3,2,4}, requested shape:{1,8}" in line
    assert "site-packages" not in line and "onnxruntime_src" not in line
    assert not out.exists()
    # At batch 1 the file is right: without --dynamic-batch it verifies and is written.
    assert main(["compile", str(path), "--verify", "-o", str(out)]) == 0
    assert out.is_file()


def test_a_dynamic_batch_file_is_verified_at_batch_1_and_3(tmp_path, capsys):
    out = tmp_path / "two.onnx"
    assert main(["compile", str(model_file(tmp_path)), "--dynamic-batch", "--verify",
                 "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^  verify       ok: .*\(interpreter vs onnxruntime\)$", text, re.M), text
    assert re.search(r"^               ok: max abs diff \S+ .*worst at output '(y1|y2)' element "
                     r"\[[0-2], \d\]: .*\(the dynamic-batch file at batch 3 on onnxruntime, the "
                     r"example inputs repeated, vs the expected outputs repeated\)$",
                     text, re.M), text
    # Independently: the written file at batch 3 gives each repeated row the batch-1 result.
    from graphc.onnxio.runtime import session

    sess = session(out.read_bytes())
    x = np.random.default_rng(1).standard_normal((1, 4)).astype(np.float32)
    one = sess.run(None, {"x": x})
    three = sess.run(None, {"x": np.concatenate([x, 2 * x, x])})
    for a, b in zip(one, three, strict=True):
        np.testing.assert_allclose(b[[0, 2]], np.concatenate([a, a]), rtol=1e-6)
