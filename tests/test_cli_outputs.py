"""Outputs never destroy inputs: every command that writes refuses, before loading anything, an
output that is one of its input files (by path, symbolic link or hard link) or another output;
the input is left byte for byte as it was."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from graphc import testing
from graphc.cli import main

MODEL = """\
    from graphc import GraphBuilder, nn

    def build(seed=0, batch=1):
        b = GraphBuilder("tiny")
        x = b.input("x", (batch, 4))
        b.output(nn.linear(x, 3, name="fc"), "y")
        return b.build()
    """


@pytest.fixture
def files(tmp_path, monkeypatch):
    """A model file and stand-ins for the other inputs: the refusal comes before any of them
    is read, so their content does not matter; it must survive unchanged."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.py").write_text(textwrap.dedent(MODEL))
    for name in ("w.ckpt", "s.ckpt", "t.ckpt", "c.npz", "u.npz", "m.onnx"):
        (tmp_path / name).write_bytes(b"input " + name.encode())
    return tmp_path


def refused(capsys, argv: list[str], tmp_path: Path) -> str:
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    line = testing.one_error_line(err)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before  # nothing destroyed, nothing created
    return line


CASES = {
    "compile model file": ["compile", "m.py", "-o", "m.py"],
    "compile onnx --verify": ["compile", "m.onnx", "-o", "m.onnx", "--verify"],
    "compile ./onnx": ["compile", "m.onnx", "-o", "./m.onnx"],
    "compile --weights": ["compile", "m.py", "--weights", "w.ckpt", "-o", "w.ckpt"],
    "compile --calibrate": ["compile", "m.py", "--passes", "quantize-int8", "--calibrate",
                            "c.npz", "-o", "c.npz"],
    "compile --student ckpt": ["compile", "m.py", "--passes", "substitute-student",
                               "--student", "m.py:s.ckpt", "-o", "s.ckpt"],
    "grad --onnx": ["grad", "m.py", "--onnx", "m.py"],
    "grad --draw": ["grad", "m.py", "--draw", "m.py"],
    "train -o": ["train", "m.py", "--data", "digits", "-o", "m.py"],
    "train --plot": ["train", "m.py", "--data", "digits", "-o", "new.ckpt", "--plot", "m.py"],
    "train --init": ["train", "m.py", "--data", "digits", "--init", "w.ckpt", "-o", "w.ckpt"],
    "train --teacher ckpt": ["train", "m.py", "--data", "digits", "--teacher", "m.py:t.ckpt",
                             "-o", "t.ckpt"],
    "train --unlabeled": ["train", "m.py", "--data", "digits", "--unlabeled", "u.npz",
                          "-o", "u.npz"],
    "prune -o": ["prune", "m.py", "--weights", "w.ckpt", "--sparsity", "0.5", "-o", "w.ckpt"],
    "prune --plot": ["prune", "m.py", "--weights", "w.ckpt", "--sparsity", "0.5",
                     "-o", "new.ckpt", "--plot", "m.py"],
}


@pytest.mark.parametrize("argv", CASES.values(), ids=CASES.keys())
def test_an_output_that_is_an_input_is_refused(files, capsys, argv):
    line = refused(capsys, argv, files)
    assert "overwrite" in line, line


def test_a_hard_link_to_the_input_is_refused(files, capsys):
    os.link(files / "m.onnx", files / "alias.onnx")
    line = refused(capsys, ["compile", "m.onnx", "-o", "alias.onnx", "--verify"], files)
    assert line == ("graphc: error: -o 'alias.onnx' would overwrite an input; expected an "
                    "output path that is none of the inputs, got the same file as 'm.onnx'. "
                    "Write the output to another file.")


def test_a_symbolic_link_to_the_input_is_refused(files, capsys):
    (files / "link.py").symlink_to(files / "m.py")
    line = refused(capsys, ["grad", "m.py", "--onnx", "link.py"], files)
    assert "--onnx 'link.py' would overwrite an input" in line


def test_two_outputs_in_one_file_are_refused(files, capsys):
    line = refused(capsys, ["grad", "m.py", "--onnx", "same.out", "--draw", "same.out"], files)
    assert "--onnx 'same.out' and --draw 'same.out' name the same file" in line


def test_other_outputs_are_written(files, capsys):
    assert main(["compile", "m.py", "-o", "m2.onnx", "--verify"]) == 0
    assert (files / "m2.onnx").stat().st_size > 0
    assert (files / "m.py").read_text() == textwrap.dedent(MODEL)


def test_dev_null_is_an_output_not_an_input(files, capsys):
    assert main(["compile", "m.py", "-o", os.devnull]) == 0
    assert Path(os.devnull).is_char_device()
