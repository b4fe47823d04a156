"""`graphc grad`: run in-process through main() with capsys, and once as the installed program.

The printed numbers are checked against references computed here: the course's values for
f = (x + y) z, the AND neuron by hand, and a numpy forward pass of mlp_tiny's weights with
central finite differences.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from graphc import testing
from graphc.cli import main
from graphc.models import load
from graphc.symbolic.chain_rule import DEFAULT_LIMIT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COURSE = ["grad", "backprop_example", "--at", "x=-2,y=5,z=-4"]


def run_ok(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """Return the single stderr line of a failed command (and check there is nothing else)."""
    return testing.one_error_line(capsys.readouterr().err)


def gradients(out: str) -> dict[str, float]:
    """The `gradients:` block: {"df/dx": -4.0, ...}."""
    block = out.split("\ngradients:\n", 1)[1]
    got = {}
    for line in block.splitlines():
        m = re.fullmatch(r"  (d\S+/d\S+) = (\S+)", line)
        if not m:
            break
        got[m[1]] = float(m[2])
    return got


def fd_check(out: str) -> float:
    m = re.search(r"checked against central finite differences: max abs diff (\S+)", out)
    assert m, out
    return float(m[1])


# ----- the course's example -------------------------------------------------------------------


def test_course_example_with_steps_and_drawing(tmp_path, capsys):
    png = tmp_path / "bp.png"
    out = run_ok(capsys, [*COURSE, "--steps", "--draw", str(png)])
    lines = out.splitlines()
    assert lines[0] == "backprop of backprop_example at x=-2, y=5, z=-4: f = -12"
    assert lines[1] == "  5 scalar values, 4 chain-rule steps"
    assert gradients(out) == {"df/dx": -4.0, "df/dy": -4.0, "df/dz": 3.0}
    assert 0 <= fd_check(out) < 1e-6
    # The table: every value forward and its gradient.
    rows = {m[1]: (float(m[2]), float(m[3])) for m in
            re.finditer(r"^(\w+) +\w+ +(\S+) +(\S+)$", out, re.M) if m[1] != "value"}
    assert rows == {"x": (-2, -4), "y": (5, -4), "z": (-4, 3), "add": (3, -4), "f": (-12, 1)}
    steps = out.split("steps (the chain rule, node by node from the output):\n", 1)[1]
    assert steps.splitlines()[:6] == [
        "f = add*z    (value -12, upstream df/df = 1)",
        "  df/dadd += local df/dadd * upstream df/df = (z) * 1 = -4 * 1 = -4",
        "  df/dz += local df/dz * upstream df/df = (add) * 1 = 3 * 1 = 3",
        "add = x + y    (value 3, upstream df/dadd = -4)",
        "  df/dx += local dadd/dx * upstream df/dadd = (1) * -4 = 1 * -4 = -4",
        "  df/dy += local dadd/dy * upstream df/dadd = (1) * -4 = 1 * -4 = -4",
    ]
    backend = "graphviz" if shutil.which("dot") else "matplotlib"
    assert f"drew {png} ({backend})" in out
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_course_example_defaults_to_the_example_inputs(capsys):
    out = run_ok(capsys, ["grad", "backprop_example"])
    assert out.splitlines()[0] == ("backprop of backprop_example at the model's example "
                                   "inputs: f = -12")
    assert gradients(out) == {"df/dx": -4.0, "df/dy": -4.0, "df/dz": 3.0}


def test_wrt_subset(capsys):
    out = run_ok(capsys, [*COURSE, "--wrt", "z,x"])
    assert gradients(out) == {"df/dz": 3.0, "df/dx": -4.0}


def test_latex(capsys):
    out = run_ok(capsys, [*COURSE, "--latex"])
    assert r"\frac{\partial f}{\partial x} = \frac{\partial f}{\partial \mathrm{add}} \\" in out
    assert r"\frac{\partial f}{\partial \mathrm{add}} = z \\" in out
    assert r"\frac{\partial f}{\partial z} = x + y" in out
    assert r"\text{closed form:}" in out


def test_formulas_text(capsys):
    out = run_ok(capsys, [*COURSE, "--formulas"])
    lines = out.splitlines()
    for line in ("add = x + y", "f = add*z", "df/dadd = z", "df/dz = add", "closed form:",
                 "df/dx = z", "df/dy = z", "df/dz = x + y"):
        assert line in lines, line


def test_onnx_file(tmp_path, capsys):
    path = tmp_path / "g.onnx"
    out = run_ok(capsys, [*COURSE, "--onnx", str(path)])
    m = re.search(rf"wrote {re.escape(str(path))}: (\d+) nodes computing f and 3 gradients; "
                  r"onnxruntime vs sympy max abs diff (\S+)", out)
    assert m, out
    assert float(m[2]) <= 1e-12
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert len(model.graph.node) == int(m[1])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"x": np.array(-2.0), "y": np.array(5.0), "z": np.array(-4.0)}
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, (float(v) for v in session.run(None, feeds)), strict=True))
    assert got == {"f": -12.0, "df/dx": -4.0, "df/dy": -4.0, "df/dz": 3.0}


# ----- the neuron -----------------------------------------------------------------------------


def test_neuron(tmp_path, capsys):
    png = tmp_path / "neuron.png"
    out = run_ok(capsys, ["grad", "neuron", "--at", "x1=1,x2=1", "--steps", "--draw", str(png)])
    # AND fires at (1, 1): y = H(1 + 1 - 1.5) = 1; a step's derivative is 0.
    assert out.splitlines()[0] == "backprop of neuron at x1=1, x2=1: y = 1"
    assert gradients(out) == {f"dy/d{n}": 0.0 for n in ("x1", "x2", "w1", "w2", "w0")}
    assert fd_check(out) == 0.0
    assert "dy/dadd_1 += local dy/dadd_1 * upstream dy/dy = (0) * 1 = 0 * 1 = 0" in out
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_neuron_straight_through(capsys):
    out = run_ok(capsys, ["grad", "neuron", "--at", "x1=0.5,x2=2", "--straight-through"])
    assert out.splitlines()[0] == "backprop of neuron at x1=0.5, x2=2: y = 1"
    # The identity's gradient of w1 x1 + w2 x2 + w0 (w1 = w2 = 1): dy/dx_i = w_i,
    # dy/dw_i = x_i, dy/dw0 = 1.
    assert gradients(out) == {"dy/dx1": 1.0, "dy/dx2": 1.0, "dy/dw1": 0.5, "dy/dw2": 2.0,
                              "dy/dw0": 1.0}
    assert "straight-through estimator: these are not the true derivatives" in out
    assert "checked against central finite differences" not in out


# ----- mlp_tiny -------------------------------------------------------------------------------


def mlp_tiny_reference(x: np.ndarray) -> tuple[float, dict[str, float]]:
    """mlp_tiny's output and its gradients, by central finite differences in float64 numpy."""
    g = load("mlp_tiny").build()
    params = {n: g.nx.nodes[n]["value"].astype(np.float64) for n in g.params()}

    def forward(p: dict[str, np.ndarray], x: np.ndarray) -> float:
        h = 1 / (1 + np.exp(-(x @ p["fc1.weight"].T + p["fc1.bias"])))
        return float((1 / (1 + np.exp(-(h @ p["fc2.weight"].T + p["fc2.bias"])))).sum())

    grads = {}
    h = 1e-6
    for name, value in [("x", x), *params.items()]:
        for index in np.ndindex(value.shape):
            up, down = value.copy(), value.copy()
            up[index] += h
            down[index] -= h
            if name == "x":
                diff = forward(params, up) - forward(params, down)
            else:
                diff = forward(params | {name: up}, x) - forward(params | {name: down}, x)
            label = name if value.size == 1 else f"{name}[{','.join(map(str, index))}]"
            grads[f"dy/d{label}"] = diff / (2 * h)
    return forward(params, x), grads


def test_mlp_tiny(tmp_path, capsys):
    png = tmp_path / "mlp.png"
    out = run_ok(capsys, ["grad", "mlp_tiny", "--at", "x=[[0.5,-0.3]]", "--steps", "--draw",
                          str(png)])
    y, want = mlp_tiny_reference(np.array([[0.5, -0.3]]))
    first = re.fullmatch(r"backprop of mlp_tiny at x=\[\[0\.5,-0\.3\]\]: y = (\S+)",
                         out.splitlines()[0])
    assert first, out.splitlines()[0]
    assert float(first[1]) == pytest.approx(y, rel=1e-5)
    got = gradients(out)
    assert got.keys() == want.keys() and len(got) == 11
    for name, value in want.items():
        # Printed with 6 significant digits.
        assert got[name] == pytest.approx(value, rel=1e-5, abs=1e-9), name
    assert fd_check(out) < 1e-6
    assert "dy/dfc2 += local dy/dfc2 * upstream dy/dy = (y*(1 - y)) * 1" in out
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_mlp_tiny_wrt_a_layer_and_onnx(tmp_path, capsys):
    path = tmp_path / "mlp.onnx"
    out = run_ok(capsys, ["grad", "mlp_tiny", "--at", "x=[[0.5,-0.3]]", "--wrt", "fc2.weight",
                          "--onnx", str(path)])
    _, want = mlp_tiny_reference(np.array([[0.5, -0.3]]))
    got = gradients(out)
    assert list(got) == ["dy/dfc2.weight[0,0]", "dy/dfc2.weight[0,1]"]
    for name, value in got.items():
        assert value == pytest.approx(want[name], rel=1e-5)
    m = re.search(r"computing y and 2 gradients; onnxruntime vs sympy max abs diff (\S+)", out)
    assert m and float(m[1]) <= 1e-12
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


# ----- errors ---------------------------------------------------------------------------------


def test_size_limit_refusal_for_resnet18(capsys):
    assert main(["grad", "resnet18"]) == 1
    line = one_error_line(capsys)
    assert "resnet18" in line and "too big for symbolic backprop" in line
    assert re.search(r"about [\d,]{13,} scalar edges", line)  # over a billion
    assert f"at most {DEFAULT_LIMIT:,}" in line
    assert "numeric autodiff" in line


def test_size_limit_option(capsys):
    assert main([*COURSE, "--limit", "3"]) == 1
    line = one_error_line(capsys)
    assert "about 7 scalar edges" in line and "at most 3" in line


@pytest.mark.parametrize("at", ["x=abc", "x", "=3", "x=[1,2", "x=-2,,y=5"])
def test_bad_at_is_a_usage_error(capsys, at):
    assert main(["grad", "backprop_example", "--at", at]) == 2
    line = one_error_line(capsys)
    assert "cannot read --at item" in line
    assert "expected name=number or name=[numbers]" in line


@pytest.mark.parametrize("at", ["x='a'", "x=None"])
def test_non_numeric_at_value_is_a_usage_error(capsys, at):
    # A value that parses as Python but is not a number is as bad an --at as x=abc.
    assert main(["grad", "backprop_example", "--at", at]) == 2
    line = one_error_line(capsys)
    assert "--at" in line


def test_unknown_at_name_is_an_error(capsys):
    # A misspelt name must not be ignored silently (z would keep its example value).
    # Exit 1 like an unknown --wrt name, or 2 as a usage error: either refuses the run.
    assert main(["grad", "backprop_example", "--at", "x=-2,y=5,zz=-4"]) in (1, 2)
    line = one_error_line(capsys)
    assert "'zz'" in line and "Did you mean 'z'?" in line


def test_wrong_number_of_values(capsys):
    # A usage error, found before any backprop: the value's size is checked against the input.
    assert main(["grad", "mlp_tiny", "--at", "x=[[1,2,3]]"]) == 2
    line = one_error_line(capsys)
    assert "--at: the value of x has the wrong size; expected shape (1, 2), 2 numbers, got " \
        "shape (1, 3), 3." in line


def test_unknown_wrt_lists_the_known_names(capsys):
    assert main([*COURSE, "--wrt", "zz"]) == 1
    line = one_error_line(capsys)
    assert "unknown input or parameter 'zz'" in line
    assert "expected one of 'x', 'y', 'z'" in line
    assert "Did you mean 'z'?" in line
    assert main(["grad", "mlp_tiny", "--wrt", "fc2.weigth"]) == 1
    line = one_error_line(capsys)
    assert "'fc1.weight'" in line and "'fc2.bias'" in line
    assert "Did you mean 'fc2.weight'?" in line


def test_bad_draw_suffix(tmp_path, capsys):
    assert main([*COURSE, "--draw", str(tmp_path / "bp.jpg")]) == 1
    line = one_error_line(capsys)
    assert "expected a path ending in .png or .svg, got '.jpg'" in line
    assert not (tmp_path / "bp.jpg").exists()


# ----- the installed program ------------------------------------------------------------------


def test_installed_program(tmp_path):
    exe = shutil.which("graphc")
    assert exe, "the graphc console script is not installed"
    done = subprocess.run([exe, *COURSE, "--steps", "--draw", "bp.png"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == ("backprop of backprop_example at x=-2, y=5, z=-4: "
                                           "f = -12")
    assert gradients(done.stdout) == {"df/dx": -4.0, "df/dy": -4.0, "df/dz": 3.0}
    assert "df/dz += local df/dz * upstream df/df = (add) * 1 = 3 * 1 = 3" in done.stdout
    assert Path(tmp_path / "bp.png").read_bytes()[:8] == PNG_MAGIC
