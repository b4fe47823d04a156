"""``graphc compile --check-speed``: the written file timed against the input on onnxruntime
(paired rounds, a noise band), one line with the ratio, and a warning line when slower. No
timing is asserted: only that the line is there with its numbers and verdict."""

from __future__ import annotations

import re

import pytest

import graphc.compress.speed_check as speed_check
from graphc import testing
from graphc.cli import main
from graphc.compress.speed_check import SpeedCheck

LINE = (r"^  speed check  compiled / {name} time (\d+\.\d{{3}}) \(rounds (\d+\.\d{{3}})-"
        r"(\d+\.\d{{3}})\), noise band \+-\d+\.\d% \({name} / {name} \d+\.\d{{3}}\), .* "
        r"onnxruntime, 1 thread, 21 rounds: (faster|same|slower) \(batch {batch}\)$")


def test_a_model_is_timed_against_itself_compiled_without_passes(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["compile", "mlp_tiny", "--pipeline", "inference", "--check-speed",
                 "-o", str(out)]) == 0
    text = capsys.readouterr().out
    m = re.search(LINE.format(name="unoptimized", batch=1), text, re.M)
    assert m, text
    assert float(m[2]) <= float(m[1]) <= float(m[3])
    assert ("  warning      " in text) == (m[4] == "slower")
    assert out.is_file()


def test_an_onnx_input_is_timed_against_the_given_file_at_a_batch(tmp_path, capsys):
    given, out = tmp_path / "g.onnx", tmp_path / "o.onnx"
    assert main(["compile", "mlp_tiny", "--dynamic-batch", "-o", str(given)]) == 0
    capsys.readouterr()
    assert main(["compile", str(given), "--pipeline", "inference", "--check-speed",
                 "--check-speed-batch", "4", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert re.search(LINE.format(name="given", batch=4), text, re.M), text


def test_a_fixed_batch_cannot_be_timed_at_another_and_nothing_is_written(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["compile", "mlp_tiny", "--check-speed", "--check-speed-batch", "8",
                 "-o", str(out)]) == 1
    line = testing.one_error_line(capsys.readouterr().err)
    assert line.startswith("graphc: error: --check-speed-batch: cannot time the files at batch "
                           "8: the input's batch size is fixed; expected inputs of shape (8, "
                           "...), got (1, 2)."), line
    assert not out.exists()


@pytest.mark.parametrize("argv", [["--check-speed-batch", "2"],
                                  ["--check-speed", "--check-speed-batch", "0"],
                                  ["--check-speed", "--check-speed-batch=-3"]])
def test_check_speed_batch_usage_errors(tmp_path, capsys, argv):
    out = tmp_path / "m.onnx"
    try:
        code = main(["compile", "mlp_tiny", *argv, "-o", str(out)])
    except SystemExit as stop:
        code = stop.code
    assert code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("graphc: error: ")
    assert not out.exists()


def test_a_slower_file_gets_a_warning_line(tmp_path, capsys, monkeypatch):
    # The verdict comes from check_speed (tested in test_speed_check.py); here a fixed result
    # checks what compile prints for it.
    slower = SpeedCheck(1.25, 1.2, 1.3, 0.02, 1.01, 0.001, 0.00125, 21, 1, "slower")
    monkeypatch.setattr(speed_check, "check_speed", lambda *args, **kw: slower)
    assert main(["compile", "mlp_tiny", "--check-speed", "-o", str(tmp_path / "m.onnx")]) == 0
    text = capsys.readouterr().out
    assert ("  speed check  compiled / unoptimized time 1.250 (rounds 1.200-1.300), noise band "
            "+-2.0% (unoptimized / unoptimized 1.010), 1.0 ms -> 1.2 ms, onnxruntime, 1 thread, "
            "21 rounds: slower (batch 1)\n") in text
    assert ("  warning      the compiled file is 25.0% slower than the unoptimized file here, "
            "beyond the noise band of +-2.0%: keep the faster one\n") in text
