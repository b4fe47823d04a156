"""What each command imports: the heavy packages stay out of the commands that do not use them.

Each check runs in a fresh interpreter and reads ``sys.modules`` at its end. Start-up time itself
is measured by bench/startup.py (docs/benchmarks.md), never asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Run the command like the `graphc` console script, then report the heavy packages imported.
CODE = """
import json, sys
from graphc.cli import main
try:
    status = main(json.loads(sys.argv[1]))
except SystemExit as stop:
    status = stop.code
heavy = json.loads(sys.argv[2])
print(json.dumps({"status": status, "imported": sorted(m for m in heavy if m in sys.modules)}))
"""
# Each costs from a tenth of a second to seconds at import.
HEAVY = ("sympy", "matplotlib", "onnxruntime", "sklearn", "onnx", "networkx", "tqdm", "scipy")


def imported_by(argv: list[str], cwd: str | None = None) -> list[str]:
    """Return the packages of HEAVY that ``graphc ARGV`` imports; fail if the command fails."""
    done = subprocess.run([sys.executable, "-c", CODE, json.dumps(argv), json.dumps(HEAVY)],
                          capture_output=True, text=True, cwd=cwd, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["status"] in (0, None), done.stderr
    return report["imported"]


def test_import_graphc_imports_nothing_heavy() -> None:
    code = ("import json, sys, graphc; "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert json.loads(done.stdout) == []


def test_public_names_still_load() -> None:
    # graphc's names are imported on first use; each must resolve to the real object.
    import graphc
    from graphc.onnxio.export import to_onnx

    assert graphc.to_onnx is to_onnx
    assert set(graphc.__all__) <= set(dir(graphc))
    with pytest.raises(AttributeError):
        graphc.no_such_name  # noqa: B018


@pytest.mark.parametrize("argv", [["--version"], ["models"]])
def test_version_and_models_import_nothing_heavy(argv: list[str]) -> None:
    assert imported_by(argv) == []


def test_show_imports_neither_sympy_nor_onnx() -> None:
    assert imported_by(["show", "backprop_example"]) == ["networkx"]


def test_compile_imports_no_sympy(tmp_path) -> None:
    # Compiling runs elementwise ops on the interpreter: their numpy reference needs no sympy.
    imported = imported_by(["compile", "cnn", "-o", "cnn.onnx", "--verify"], cwd=str(tmp_path))
    assert "onnx" in imported
    assert not {"sympy", "matplotlib", "sklearn", "tqdm"} & set(imported)


def test_grad_imports_sympy_but_no_onnx() -> None:
    imported = imported_by(["grad", "backprop_example", "--at", "x=-2,y=5,z=-4"])
    assert "sympy" in imported
    assert not {"onnx", "onnxruntime", "matplotlib", "sklearn"} & set(imported)


def test_explain_temperature_imports_neither_onnxruntime_nor_sympy(tmp_path) -> None:
    # The table runs graphc's softmax on the interpreter; only --plot needs matplotlib.
    imported = imported_by(["explain", "temperature"])
    assert not {"onnxruntime", "sympy", "matplotlib", "sklearn", "tqdm"} & set(imported)
    imported = imported_by(["explain", "temperature", "--plot", "t.png"], cwd=str(tmp_path))
    assert "matplotlib" in imported
    assert not {"onnxruntime", "sympy", "sklearn", "tqdm"} & set(imported)


def test_explain_binary_imports_neither_onnxruntime_nor_sympy() -> None:
    # The XNOR arithmetic is integers and numpy; no session, no symbols, no plot.
    imported = imported_by(["explain", "binary", "--seed", "1"])
    assert not {"onnxruntime", "sympy", "matplotlib", "sklearn", "tqdm"} & set(imported)
