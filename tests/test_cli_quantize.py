"""`graphc compile --passes quantize-int8` end to end: the report, the verification lines,
calibration from digits and from an .npz file, and the usage errors."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest

from graphc import testing
from graphc.cli import main


def run_ok(capsys, argv):
    assert main(argv) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def fails(capsys, argv, status):
    assert main(argv) == status
    return testing.one_error_line(capsys.readouterr().err)


def test_compile_mlp_to_int8_reports_and_verifies(tmp_path, capsys):
    out_file = tmp_path / "mlp.int8.onnx"
    out = run_ok(capsys, ["compile", "mlp", "--pipeline", "inference", "--passes",
                          "quantize-int8", "--calibrate", "digits", "--prefer", "size",
                          "--verify", "-o", str(out_file)])
    assert "quantized    3 of 3 layers" in out
    assert re.search(r"int8         size [\d.]+ KiB vs [\d.]+ KiB fp32 \(0\.\d\dx\)", out)
    assert re.search(r"time [\d.]+x fp32 at batch 1 \(median of 21 interleaved runs", out)
    # The file's ops as written on onnxruntime equal the interpreter.
    exact = re.search(r"verify       ok: max abs diff (\S+) \(tolerance \S+ = \S+ x output scale "
                      r"(\S+)\); .* \(int8 file on onnxruntime without fusion vs the "
                      r"interpreter: the ops as written\)$", out, re.M)
    assert exact and float(exact[1]) <= 1e-5 * float(exact[2])
    assert "accuracy " in out and "% fp32 on the digits test split" in out
    model = onnx.load(out_file)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Gemm") == 3 and "QuantizeLinear" in ops
    weights = {i.name: i for i in model.graph.initializer}
    int8 = [n for n, t in weights.items() if t.data_type == onnx.TensorProto.INT8]
    assert sorted(n for n in int8 if n.endswith(".int8")) == [
        "fc1.weight.int8", "fc2.weight.int8", "fc3.weight.int8"]


def test_calibration_from_an_npz_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    npz = tmp_path / "calib.npz"
    np.savez(npz, x=rng.uniform(0, 1, (32, 64)).astype(np.float32))
    out = run_ok(capsys, ["compile", "mlp", "--pipeline", "inference", "--passes",
                          "quantize-int8", "--calibrate", str(npz), "--prefer", "size",
                          "-o", str(tmp_path / "m.onnx")])
    assert "calibration  32 samples, minmax" in out
    np.savez(npz, a=np.zeros((4, 64)), b=np.zeros((4, 64)))
    err = fails(capsys, ["compile", "mlp", "--passes", "quantize-int8", "--calibrate", str(npz),
                         "-o", str(tmp_path / "m.onnx")], 2)
    assert "has several arrays and none is called 'x'" in err
    np.savez(npz, x=np.zeros((4, 3, 5)))
    err = fails(capsys, ["compile", "mlp", "--passes", "quantize-int8", "--calibrate", str(npz),
                         "-o", str(tmp_path / "m.onnx")], 1)
    assert "does not fit the model's input" in err
    npz.write_bytes(b"not an archive")
    err = fails(capsys, ["compile", "mlp", "--passes", "quantize-int8", "--calibrate", str(npz),
                         "-o", str(tmp_path / "bad.onnx")], 2)
    assert "--calibrate: cannot read" in err and "expected an .npz file of arrays" in err
    assert not (tmp_path / "bad.onnx").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["--passes", "quantize-int8"], "quantize-int8 needs calibration data"),
    (["--calibrate", "digits"], "--calibrate only apply to quantize-int8"),
    (["--passes", "quantize-int8", "--calibrate", "mnist"], "cannot calibrate with 'mnist'"),
    (["--passes", "quantize-int8", "--calibrate", "digits", "--prefer", "fast"],
     "unknown preference 'fast'"),
    (["--passes", "quantize-int8", "--dynamic", "--format", "qoperator"],
     "--format qoperator does not apply to --dynamic"),
    (["--passes", "quantize-int8", "--calibrate", "digits", "--calibration", "kl"],
     "--calibration: unknown calibration method 'kl'"),
    (["--passes", "quantize-int8", "--calibrate", "digits", "--max-error", "0"],
     "--max-error must be positive"),
])
def test_usage_errors(tmp_path, capsys, argv, message):
    target = tmp_path / "m.onnx"
    assert main(["compile", "mlp", *argv, "-o", str(target)]) in (1, 2)
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err
    assert not target.exists()
