"""The `graphc` command line, run in-process through main() and once as the installed program."""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import onnx
import pytest

from graphc import testing
from graphc.cli import main
from graphc.errors import GraphcError
from graphc.models import MODELS, load
from graphc.onnxio.export import max_opset
from graphc.ops import REGISTRY


def write_model(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body))
    return path


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """Return the single stderr line of a failed command (and check there is nothing else)."""
    return testing.one_error_line(capsys.readouterr().err)


def fails(capsys: pytest.CaptureFixture[str], argv: list[str], status: int = 1) -> str:
    assert main(argv) == status
    return one_error_line(capsys)


def usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("graphc: error: ")
    return err.splitlines()[-1]


# ----- compile ------------------------------------------------------------------------------


def test_compile_cnn_verify(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tmp").mkdir()
    assert main(["compile", "cnn", "-o", "tmp/cnn.onnx", "--verify"]) == 0
    out = capsys.readouterr().out
    path = tmp_path / "tmp" / "cnn.onnx"
    assert path.is_file()
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    g = load("cnn").build()
    assert out.splitlines()[0] == "compiled cnn -> tmp/cnn.onnx (opset 17)"
    nodes = re.search(r"^  nodes +(\d+) ops, (\d+) ONNX nodes$", out, re.M)
    assert nodes and int(nodes[1]) == len(g.op_nodes()) and int(nodes[2]) == len(model.graph.node)
    params = re.search(r"^  parameters +([\d,]+)$", out, re.M)
    assert params and int(params[1].replace(",", "")) == g.num_params() == 25_978
    size = re.search(r"^  file size +([\d,.]+) KiB$", out, re.M)
    assert size and float(size[1].replace(",", "")) == pytest.approx(
        path.stat().st_size / 1024, abs=0.05)
    diff = re.search(r"verify       ok: max abs diff (\S+) .*\(interpreter vs onnxruntime\)$", out,
                     re.M)
    assert diff, out
    assert 0.0 <= float(diff[1]) <= 1e-5


def test_installed_program_exit_code(tmp_path):
    exe = shutil.which("graphc")
    assert exe, "the graphc console script is not installed"
    (tmp_path / "tmp").mkdir()
    ok = subprocess.run([exe, "compile", "cnn", "-o", "tmp/cnn.onnx", "--verify"],
                        cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "max abs diff" in ok.stdout
    onnx.checker.check_model(onnx.load(str(tmp_path / "tmp" / "cnn.onnx")), full_check=True)


def test_compile_opset_and_dynamic_batch(tmp_path, capsys):
    out = tmp_path / "mlp.onnx"
    top = max_opset()
    assert main(["compile", "mlp", "-o", str(out), "--opset", str(top), "--dynamic-batch"]) == 0
    assert f"(opset {top})" in capsys.readouterr().out
    model = onnx.load(str(out))
    assert model.opset_import[0].version == top
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"


def test_compile_seed_changes_weights(tmp_path, capsys):
    a, b, c = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "c.onnx"
    assert main(["compile", "mlp_tiny", "-o", str(a), "--seed", "3"]) == 0
    assert main(["compile", "mlp_tiny", "-o", str(b), "--seed", "3"]) == 0
    assert main(["compile", "mlp_tiny", "-o", str(c), "--seed", "4"]) == 0
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


def test_compile_user_model_file(tmp_path, capsys):
    path = write_model(tmp_path, "net.py", """\
        from graphc import GraphBuilder, nn

        def build():
            b = GraphBuilder("mynet")
            x = b.input("x", (1, 4))
            b.output(nn.relu(nn.linear(x, 3, name="fc")), "y")
            return b.build()
        """)
    out = tmp_path / "net.onnx"
    assert main(["compile", str(path), "-o", str(out), "--verify"]) == 0
    text = capsys.readouterr().out
    assert "compiled mynet" in text and "parameters   15" in text
    assert float(re.search(r"max abs diff (\S+)", text)[1]) <= 1e-5
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)


# ----- show, ops, models --------------------------------------------------------------------


def test_show_residual(capsys):
    assert main(["show", "residual"]) == 0
    out = capsys.readouterr().out
    g = load("residual").build()
    assert out.startswith(g.format() + "\n\n")
    for node in g.topo():
        assert "  " + g.format_node(node) + "\n" in out
    table = out[len(g.format()) + 2:].splitlines()
    assert table[0].split() == ["layer", "op", "output", "params", "state", "FLOPs"]
    rows = {line.split()[0]: line for line in table[2:-3]}
    assert list(rows) == g.op_nodes()
    assert rows["conv2"].split()[-3] == f"{16 * 16 * 9 + 16:,}"
    total = re.fullmatch(r"total +([\d,]+) +([\d,]+) +([\d,]+)", table[-2])
    assert total, table[-2]
    # Two BatchNorms of 16 channels: running mean and variance, 2 * 16 each.
    assert int(total[1].replace(",", "")) == g.num_params() == 2_714
    assert int(total[2]) == 2 * 2 * 16
    assert table[-1] == "2,714 trainable parameters + 64 stored state = 2,778 numbers"


def test_show_table_only(capsys):
    assert main(["show", "lenet5", "--table"]) == 0
    out = capsys.readouterr().out
    assert not out.startswith("graph ")
    assert re.search(r"^total +61,706 ", out, re.M)


def test_ops_lists_every_op(capsys):
    assert main(["ops"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if line and not line.startswith(" ")]
    assert listed == list(REGISTRY)


def test_ops_verbose_lists_attributes(capsys):
    assert main(["ops", "-v"]) == 0
    out = capsys.readouterr().out
    assert "attributes: alpha=0.01" in out


def test_models_lists_every_model(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == MODELS
    for line, name in zip(lines, MODELS, strict=True):
        first_doc_line = load(name).__doc__.strip().splitlines()[0]
        assert line.endswith(first_doc_line)


# ----- errors: one line, exit 1 -------------------------------------------------------------


def test_unknown_model_name(tmp_path, capsys):
    line = fails(capsys, ["compile", "cnnn", "-o", str(tmp_path / "x.onnx")])
    assert "unknown model 'cnnn'" in line
    assert "'lenet5'" in line and line.endswith("Did you mean 'cnn'?")
    assert not (tmp_path / "x.onnx").exists()
    line = fails(capsys, ["show", "resnet"])
    assert "unknown model 'resnet'" in line and "Did you mean 'resnet18'?" in line


def test_missing_model_file(tmp_path, capsys):
    path = tmp_path / "nope.py"
    line = fails(capsys, ["compile", str(path), "-o", str(tmp_path / "x.onnx")])
    assert str(path) in line and "does not exist" in line


def test_model_file_without_build(tmp_path, capsys):
    path = write_model(tmp_path, "nobuild.py", "x = 1\n")
    line = fails(capsys, ["compile", str(path), "-o", str(tmp_path / "x.onnx")])
    assert "nobuild.py has no build() function" in line


def test_model_file_build_returns_something_else(tmp_path, capsys):
    path = write_model(tmp_path, "notgraph.py", "def build():\n    return 42\n")
    line = fails(capsys, ["compile", str(path), "-o", str(tmp_path / "x.onnx")])
    assert "returned int" in line
    # The file at fault is named as the user knows it.
    assert "notgraph.py" in line


def test_model_file_with_shape_mismatch(tmp_path, capsys):
    path = write_model(tmp_path, "shape.py", """\
        from graphc import GraphBuilder, nn

        def build():
            b = GraphBuilder("bad")
            x = b.input("x", (2, 3))
            h = nn.linear(x, 4, in_features=5, name="fc")
            b.output(h, "y")
            return b.build()
        """)
    line = fails(capsys, ["compile", str(path), "-o", str(tmp_path / "x.onnx")])
    assert line.startswith("graphc: error: %fc = Gemm(%x, %fc.weight, %fc.bias)")
    assert "(2, 3)" in line and "(4, 5)" in line


def test_model_file_with_broadcast_mismatch(tmp_path, capsys):
    path = write_model(tmp_path, "add.py", """\
        from graphc import GraphBuilder

        def build():
            b = GraphBuilder("bad")
            x = b.input("x", (2, 3))
            y = b.input("y", (4, 3))
            b.output(x + y, "z")
            return b.build()
        """)
    line = fails(capsys, ["show", str(path)])
    assert line.startswith("graphc: error: %add = Add(%x, %y): input shapes do not broadcast")
    assert "(2, 3)" in line and "(4, 3)" in line


RAISES = """\
from graphc import GraphBuilder


def helper():
    return {}["missing"]


def build():
    b = GraphBuilder("bad")
    helper()
    return b.build()
"""


def test_model_file_raising_an_ordinary_exception(tmp_path, capsys):
    path = write_model(tmp_path, "raises.py", RAISES)
    line = fails(capsys, ["compile", str(path), "-o", str(tmp_path / "x.onnx")])
    assert f"{path}:5: KeyError: 'missing'" in line
    assert "--debug" in line


def test_model_file_raising_at_import(tmp_path, capsys):
    path = write_model(tmp_path, "boom.py", "import math\nraise ValueError('boom')\n")
    line = fails(capsys, ["show", str(path)])
    assert f"{path}:2: ValueError: boom" in line


def test_model_file_in_a_models_folder_raising(tmp_path, capsys):
    # Users keep model files in folders called models/ too; the file:line must still show.
    path = write_model(tmp_path, "models/net.py", RAISES)
    line = fails(capsys, ["compile", str(path), "-o", str(tmp_path / "x.onnx")])
    assert f"{path}:5: KeyError: 'missing'" in line


def test_model_file_with_unknown_option_value(tmp_path, capsys):
    path = write_model(tmp_path, "sme.py", """\
        from graphc import GraphBuilder, nn

        def build():
            b = GraphBuilder("bad")
            x = b.input("x", (1, 1, 4, 4))
            b.output(nn.conv2d(x, 2, 3, padding="sme", name="conv"), "y")
            return b.build()
        """)
    line = fails(capsys, ["compile", str(path), "-o", str(tmp_path / "x.onnx")])
    assert "layer 'conv': unknown padding 'sme'" in line
    assert line.endswith("Did you mean 'same'?")


@pytest.mark.parametrize("opset", [13, "max+1"])
def test_opset_onnxruntime_cannot_run(tmp_path, capsys, opset):
    opset = max_opset() + 1 if opset == "max+1" else opset
    out = tmp_path / "x.onnx"
    line = fails(capsys, ["compile", "cnn", "-o", str(out), "--opset", str(opset)])
    assert f"opset {opset}" in line and f"from 17 to {max_opset()}" in line
    assert not out.exists()


def test_output_in_a_missing_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status = main(["compile", "backprop_example", "-o", "missing/model.onnx"])
    if status == 0:
        assert (tmp_path / "missing" / "model.onnx").is_file()
        return
    assert status == 1
    line = one_error_line(capsys)
    # The error names the file the user asked for, not a temporary file inside the stdlib.
    assert "missing/model.onnx" in line
    assert "tempfile.py" not in line and ".tmp" not in line


def test_non_python_model_file_is_a_usage_error(tmp_path, capsys):
    line = fails(capsys, ["compile", "model.txt", "-o", str(tmp_path / "x.onnx")], status=2)
    assert "a .txt file" in line


# ----- usage errors: exit 2 -----------------------------------------------------------------


def test_missing_output_option(capsys):
    line = usage_error(capsys, ["compile", "cnn"])
    assert "-o/--output" in line


def test_unknown_subcommand(capsys):
    line = usage_error(capsys, ["frobnicate"])
    assert "invalid choice: 'frobnicate'" in line


def test_opset_not_an_int(tmp_path, capsys):
    line = usage_error(capsys, ["compile", "cnn", "-o", str(tmp_path / "x.onnx"), "--opset",
                                "abc"])
    assert "--opset" in line and "'abc'" in line


def test_no_subcommand(capsys):
    usage_error(capsys, [])


# ----- --debug ------------------------------------------------------------------------------


def test_debug_lets_graphc_errors_propagate(tmp_path):
    with pytest.raises(GraphcError, match="Did you mean 'cnn'"):
        main(["compile", "cnnn", "-o", str(tmp_path / "x.onnx"), "--debug"])


def test_debug_lets_user_exceptions_propagate(tmp_path):
    path = write_model(tmp_path, "raises.py", RAISES)
    with pytest.raises(KeyError, match="missing"):
        main(["show", str(path), "--debug"])


def test_debug_before_the_subcommand(tmp_path):
    with pytest.raises(GraphcError, match="Did you mean 'cnn'"):
        main(["--debug", "compile", "cnnn", "-o", str(tmp_path / "x.onnx")])


def test_grad_of_leaky_relu_at_zero_is_the_course_slope_one(tmp_path, capsys):
    # The course: LeakyReLU(x) = (x < 0) * alpha * x + (x >= 0) * x, so the slope at 0 is 1
    # (and alpha left of 0).
    path = write_model(tmp_path, "lrelu.py", """\
        from graphc import GraphBuilder, nn

        def build():
            b = GraphBuilder("lrelu")
            x = b.input("x", (1,))
            b.output(nn.leaky_relu(x, 0.25, name="act"), "y")
            return b.build()
        """)
    for at, value, slope in (("0", "0", "1"), ("-1", "-0.25", "0.25"), ("2", "2", "1")):
        assert main(["grad", str(path), "--at", f"x={at}"]) == 0
        out = capsys.readouterr().out
        assert out.splitlines()[0] == f"backprop of lrelu at x={at}: y = {value}"
        assert f"\n  dy/dx = {slope}\n" in out
    # The other convention, the kink in the alpha branch, on request.
    for at, slope in (("0", "0.25"), ("-1", "0.25"), ("2", "1")):
        assert main(["grad", str(path), "--at", f"x={at}", "--leaky-kink", "alpha"]) == 0
        assert f"\n  dy/dx = {slope}\n" in capsys.readouterr().out


def test_show_counts_batchnorm_as_the_course_does_4_numbers_per_feature_map(capsys):
    # The course: a BatchNorm layer holds gamma, beta (trained) and the running mean and variance
    # (stored state), 4 numbers per feature map: N_BN = 4LM.
    assert main(["show", "cnn", "--table"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["layer", "op", "output", "params", "state", "FLOPs"]
    rows = {line.split()[0]: line.split() for line in lines[2:-4]}
    channels = {"block1.bn": 16, "block2.bn": 32, "block3.bn": 64}
    for name, m in channels.items():
        params, state = (int(c.replace(",", "")) for c in rows[name][-3:-1])
        assert (params, state) == (2 * m, 2 * m)
        assert params + state == 4 * m
    assert rows["block1.conv"][-3:-1] == ["144", "0"]
    g = load("cnn").build()
    state = 2 * sum(channels.values())
    assert lines[-3].split() == ["total", f"{g.num_params():,}", f"{state:,}", "1,218,560"]
    assert lines[-2] == (f"{g.num_params():,} trainable parameters + {state:,} stored state = "
                         f"{g.num_params() + state:,} numbers")
    assert g.num_params() == 25_978  # num_params() still counts the trainable values only


def test_show_has_no_state_column_without_stored_state(capsys):
    assert main(["show", "mlp", "--table"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["layer", "op", "output", "params", "FLOPs"]
    assert lines[-2].startswith("total") and "stored state" not in "\n".join(lines)
    # The course's p keeps a unit; ONNX's ratio drops it: mlp's layers drop 0.2.
    assert lines[-1] == ("dropout, as keep p (the course's) / drop ratio (ONNX's): "
                         "drop1 0.8 / 0.2, drop2 0.8 / 0.2")
