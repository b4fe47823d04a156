"""A battery of bad inputs: each gives its exit status (2 for usage errors, 1 for the rest), one
``graphc: error:`` line naming the problem, no traceback, no raw third-party message (no C++
source paths, no site-packages), and leaves the folder as it was (no file created or
changed)."""

from __future__ import annotations

import io
import os
import textwrap
import zipfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphc.cli import main
from graphc.train.checkpoint import save_checkpoint
from graphc.train.loop import TrainConfig, TrainResult

FILES = {
    "syntax.py": """\
        from graphc import GraphBuilder

        def build():
            x = = 1
        """,
    "tiny.py": """\
        from graphc import GraphBuilder, nn

        def build(seed=0, batch=1):
            b = GraphBuilder("tiny")
            x = b.input("x", (batch, 4))
            b.output(nn.linear(x, 3, name="fc"), "y")
            return b.build()
        """,
    "flat.py": """\
        from graphc import GraphBuilder, nn

        def build(seed=0):
            b = GraphBuilder("flat")
            x = b.input("x", (1, 2, 4))
            b.output(nn.linear(nn.reshape(x, (1, 8), name="to_flat"), 3, name="fc"), "y")
            return b.build()
        """,
    "int64ex.py": """\
        import numpy as np
        from graphc import GraphBuilder, nn

        def build(seed=0):
            b = GraphBuilder("int64ex")
            b.output(nn.linear(b.input("x", (1, 4)), 3, name="fc"), "y")
            return b.build()

        def example_inputs():
            return {"x": np.arange(4).reshape(1, 4)}  # int64
        """,
    "empty.py": """\
        from graphc import GraphBuilder, nn

        def build(seed=0, batch=0):
            b = GraphBuilder("empty")
            b.output(nn.linear(b.input("x", (batch, 4)), 3, name="fc"), "y")
            return b.build()
        """,
    "ctrlc.py": """\
        raise KeyboardInterrupt  # Ctrl-C while graphc imports the model
        """,
    "bad.csv": """\
        a,b,label
        0.5,1.5,0
        0.5,oops,1
        """,
}


def float64_conv() -> bytes:
    """A Conv on float64: valid ONNX that onnxruntime's CPU provider has no kernel for."""
    w = numpy_helper.from_array(np.ones((2, 1, 3, 3)), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], "f64",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, 1, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [1, 2, 3, 3])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def gemm(ir_version: int | None = None, batch: int = 1) -> bytes:
    """x (batch, 4) -> Gemm -> y (batch, 3): a compiled file with a fixed batch (1)."""
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, "w")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], name="fc")], "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if ir_version is not None:
        model.ir_version = ir_version
    return model.SerializeToString()


def zip_bomb() -> bytes:
    """An .npz of 24 MB of zeros deflated to a few KB (graphc writes checkpoints uncompressed)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("fc.weight.npy", "w") as member:
            np.lib.format.write_array(member, np.zeros(6_000_000, np.float32))
    return buffer.getvalue()


def lying_header() -> bytes:
    """An .npz whose one array declares 10^10 floats and holds 16 bytes."""
    buffer, member = io.BytesIO(), io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (100_000, 100_000)})
    member.write(bytes(16))
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("fc.weight.npy", member.getvalue())
    return buffer.getvalue()


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, text in FILES.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    (tmp_path / "f64.onnx").write_bytes(float64_conv())
    (tmp_path / "gemm.onnx").write_bytes(gemm())
    (tmp_path / "ir99.onnx").write_bytes(gemm(ir_version=99))
    (tmp_path / "zero.onnx").write_bytes(gemm(batch=0))
    np.save(tmp_path / "x.npy", np.ones((5, 4), np.float32))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "none.npy", np.ones((0, 4), np.float32))
    np.save(tmp_path / "wide.npy", np.ones((5, 6), np.float32))
    np.save(tmp_path / "labels.npy", np.arange(4))
    np.savez(tmp_path / "only_x.npz", x=np.ones((8, 4), np.float32))
    np.savez(tmp_path / "wide.npz", x=np.ones((8, 6), np.float32), y=np.arange(8) % 3)
    for label, size in (("a", 4), ("b", 5)):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        plt.imsave(tmp_path / "imgs" / label / "0.png", np.zeros((size, size)), cmap="gray")
    (tmp_path / "bomb.ckpt").write_bytes(zip_bomb())
    (tmp_path / "liar.ckpt").write_bytes(lying_header())
    weight = np.ones((3, 4), np.float32)
    weight[1, 2] = np.nan
    save_checkpoint(tmp_path / "nan.ckpt", "tiny", TrainResult(
        {"fc.weight": weight, "fc.bias": np.zeros(3, np.float32)}), TrainConfig(epochs=1))
    save_checkpoint(tmp_path / "tiny.ckpt", "tiny", TrainResult(
        {"fc.weight": np.ones((3, 4), np.float32), "fc.bias": np.zeros(3, np.float32)}),
        TrainConfig(epochs=1))
    return tmp_path


# argv, exit status, a part of the error line
CASES = {
    "syntax error in a model file": (
        ["compile", "syntax.py", "-o", "out.onnx"], 1,
        "syntax.py:4:9: SyntaxError: invalid syntax: 'x = = 1' at '^= 1'"),
    "no onnxruntime kernel for float64 Conv": (
        ["compile", "f64.onnx", "-o", "out.onnx", "--verify"], 1,
        "onnxruntime: node 'y': no CPU kernel for Conv (opset 11) with these input types"),
    "no onnxruntime kernel for float64 Conv (--check-speed)": (
        ["compile", "f64.onnx", "-o", "out.onnx", "--check-speed"], 1,
        "onnxruntime: node 'conv': no CPU kernel for Conv (opset 11) with these input types"),
    "no onnxruntime kernel for float64 Conv (run)": (
        ["run", "f64.onnx", "--input", "x=x.npy"], 1,
        "onnxruntime: node 'conv': no CPU kernel for Conv (opset 11) with these input types"),
    "no onnxruntime kernel for float64 Conv (bench)": (
        ["bench", "f64.onnx"], 1,
        "onnxruntime: node 'conv': no CPU kernel for Conv (opset 11) with these input types"),
    "negative --seed (compile)": (["compile", "tiny.py", "-o", "out.onnx", "--seed=-1"], 2,
                                  "argument --seed: invalid non_negative_int value: '-1'"),
    "negative --seed (grad)": (["grad", "tiny.py", "--seed=-3"], 2,
                               "argument --seed: invalid non_negative_int value: '-3'"),
    "negative --seed (show)": (["show", "tiny.py", "--seed=-3"], 2,
                               "argument --seed: invalid non_negative_int value: '-3'"),
    "grad --at a number for a (1, 4) input": (
        ["grad", "tiny.py", "--at", "x=7"], 2,
        "--at: the value of x has the wrong size; expected shape (1, 4), 4 numbers, got shape "
        "(), 1. Give e.g. --at x=[[0,0,0,0]]."),
    "grad --at a parameter of the wrong size": (
        ["grad", "tiny.py", "--at", "fc.weight=[1,2]"], 2,
        "--at: the value of fc.weight has the wrong size; expected shape (3, 4), 12 numbers"),
    "grad --show -1": (["grad", "tiny.py", "--show=-1"], 2,
                       "argument --show: invalid non_negative_int value: '-1'"),
    "grad --limit -5": (["grad", "tiny.py", "--limit=-5"], 2,
                        "argument --limit: invalid positive_int value: '-5'"),
    "grad --onnx over the model": (["grad", "tiny.py", "--onnx", "tiny.py"], 2,
                                   "--onnx 'tiny.py' would overwrite an input"),
    "compile -o into a missing folder": (
        ["compile", "tiny.py", "-o", "missing/out.onnx", "--verify"], 1,
        "-o: cannot write 'missing/out.onnx': the folder 'missing' does not exist."),
    "grad --onnx into a missing folder": (
        ["grad", "tiny.py", "--onnx", "missing/g.onnx"], 1,
        "--onnx: cannot write 'missing/g.onnx': the folder 'missing' does not exist."),
    "grad --draw into a missing folder": (
        ["grad", "tiny.py", "--draw", "missing/g.png"], 1,
        "--draw: cannot write 'missing/g.png': the folder 'missing' does not exist."),
    "compile --opset 0": (["compile", "tiny.py", "-o", "out.onnx", "--opset", "0"], 2,
                          "argument --opset: invalid positive_int value: '0'"),
    "compile --passes ''": (["compile", "tiny.py", "-o", "out.onnx", "--passes", ""], 2,
                            "--passes: --passes names no pass; expected comma-separated pass "
                            "names (see `graphc passes`), got ''."),
    "compile --passes ','": (["compile", "tiny.py", "-o", "out.onnx", "--passes", ","], 2,
                             "--passes names no pass"),
    "compile --tolerance 0": (["compile", "tiny.py", "-o", "out.onnx", "--verify",
                               "--tolerance", "0"], 2,
                              "argument --tolerance: invalid positive_float value: '0'"),
    "compile -o the model": (["compile", "tiny.py", "-o", "tiny.py"], 2,
                             "-o 'tiny.py' would overwrite an input"),
    "compile an .onnx over itself with --verify": (
        ["compile", "f64.onnx", "-o", "f64.onnx", "--verify"], 2,
        "-o 'f64.onnx' would overwrite an input"),
    "dynamic-batch file that runs at batch 1 only": (
        ["compile", "flat.py", "-o", "out.onnx", "--dynamic-batch", "--verify"], 1,
        "--dynamic-batch: Reshape node 'to_flat': the compiled file does not run at batch 3"),
    "compile --check-speed-batch on a fixed batch": (
        ["compile", "tiny.py", "-o", "out.onnx", "--check-speed", "--check-speed-batch", "4"],
        1, "--check-speed-batch: cannot time the files at batch 4"),
    "bench --threads beyond the cores": (
        ["bench", "f64.onnx", "--threads", "100000"], 2,
        f"--threads: --threads must be between 1 and the machine's {os.cpu_count() or 1} "
        f"cores; expected an int from 1 to {os.cpu_count() or 1}, got 100000."),
    "prune --threads beyond the cores": (
        ["prune", "tiny.py", "--weights", "nan.ckpt", "--sparsity", "0.5", "-o", "p.ckpt",
         "--threads", "100000"], 2, "--threads must be between 1 and the machine's"),
    "prune --data that does not fit the model": (
        ["prune", "tiny.py", "--weights", "tiny.ckpt", "--sparsity", "0.5", "-o", "p.ckpt",
         "--data", "wide.npz"], 2,
        "graphc: error: --data wide.npz: the data does not fit the model's input; expected "
        "samples of shape (4,), got samples of shape (6,)."),
    "checkpoint zip bomb": (
        ["compile", "tiny.py", "--weights", "bomb.ckpt", "-o", "out.onnx"], 1,
        "bomb.ckpt declares 24,000,128 bytes of arrays in a "),
    "checkpoint array header larger than its data": (
        ["compile", "tiny.py", "--weights", "liar.ckpt", "-o", "out.onnx"], 1,
        "checkpoint 'liar.ckpt', array 'fc.weight': liar.ckpt declares more data for "
        "'fc.weight' than it holds; expected at most 144 bytes, got shape (100000, 100000) of "
        "float32 (40,000,000,000 bytes)."),
    "ONNX IR version 99 (compile)": (
        ["compile", "ir99.onnx", "-o", "out.onnx"], 1,
        "ONNX file 'ir99.onnx' has ONNX IR version 99, newer than the installed onnx"),
    "ONNX IR version 99 (run)": (["run", "ir99.onnx", "--input", "x.npy"], 1,
                                 "has ONNX IR version 99"),
    "int64 example inputs": (
        ["compile", "int64ex.py", "-o", "out.onnx", "--verify"], 1,
        "input 'x' has the wrong dtype or shape; expected float32 of shape (1, 4), got int64 "
        "of shape (1, 4)."),
    "a batch of 0 (compile)": (["compile", "empty.py", "-o", "out.onnx", "--verify"], 1,
                               "input 'x' has a batch of 0; expected sizes >= 1, got shape "
                               "(0, 4)."),
    "a batch of 0 (grad)": (["grad", "empty.py"], 1, "input 'x' has a batch of 0"),
    "a batch of 0 (an .onnx file, compile)": (["compile", "zero.onnx", "-o", "out.onnx"], 1,
                                              "zero.onnx: input 'x' has a batch of 0"),
    "a batch of 0 (an .onnx file, run)": (["run", "zero.onnx", "--input", "x.npy"], 1,
                                          "zero.onnx: input 'x' has a dimension of size 0; "
                                          "expected sizes >= 1, got shape [0, 4]."),
    "a batch of 0 (an .onnx file, bench)": (["bench", "zero.onnx"], 1,
                                            "zero.onnx, input 'x': the input has a dimension "
                                            "of size 0"),
    "a batch of 0 (run --batch)": (["run", "gemm.onnx", "--input", "x.npy", "--batch", "0"], 2,
                                   "argument --batch: invalid positive_int value: '0'"),
    "a batch of 0 (run data)": (["run", "gemm.onnx", "--input", "none.npy"], 1,
                                "--input x=none.npy: none.npy holds no samples"),
    "Ctrl-C while loading the model": (["compile", "ctrlc.py", "-o", "out.onnx"], 130,
                                       "interrupted (Ctrl-C); no output was left half-written"),
    "run a .py file": (["run", "tiny.py", "--input", "x.npy"], 2,
                       "cannot run 'tiny.py'; expected an .onnx file"),
    "run -o not .npz": (["run", "gemm.onnx", "--input", "x.npy", "-o", "out.txt"], 2,
                        "-o: cannot write 'out.txt'; expected an .npz file"),
    "run -o over its input": (["run", "gemm.onnx", "--input", "only_x.npz", "-o", "only_x.npz"],
                              2, "-o 'only_x.npz' would overwrite an input"),
    "run on a file that is no array": (["run", "gemm.onnx", "--input", "x=tiny.py"], 1,
                                       "--input x: cannot read 'tiny.py'; expected an .npy or "
                                       ".npz file written by numpy, got neither an .npy file "
                                       "nor an .npz archive."),
    "run on a missing file": (["run", "gemm.onnx", "--input", "x=gone.npy"], 2,
                              "--input x: gone.npy does not exist"),
    "run on pickled objects": (["run", "gemm.onnx", "--input", "x=objects.npy"], 1,
                               "--input x: cannot read 'objects.npy'; expected an .npy or .npz "
                               "file written by numpy (no pickled objects), got an array of "
                               "pickled Python objects, which graphc never loads."),
    "run an unknown input name": (["run", "gemm.onnx", "--input", "z=x.npy"], 2,
                                  "--input: unknown input 'z'; expected one of 'x'"),
    "run --batch on a fixed batch": (["run", "gemm.onnx", "--input", "x.npy", "--batch", "4"], 2,
                                     "--batch: gemm.onnx takes batches of 1"),
    "run data of another shape": (["run", "gemm.onnx", "--input", "x=wide.npy"], 1,
                                  "the samples of wide.npy do not fit input 'x'; expected "
                                  "samples of shape (4,)"),
    "run --labels of another length": (["run", "gemm.onnx", "--input", "x.npy", "--labels",
                                        "labels.npy"], 1,
                                       "labels.npy does not hold one class id per sample"),
    "train --data unknown": (["train", "tiny.py", "--data", "blob", "-o", "t.ckpt"], 2,
                             "--data: unknown data set 'blob'; expected one of 'blobs', "
                             "'digits', 'images', 'spirals', 'xor', got 'blob'. Did you mean "
                             "'blobs'?"),
    "train --data a missing file": (["train", "tiny.py", "--data", "gone.npz", "-o", "t.ckpt"],
                                    2, "--data: gone.npz does not exist"),
    "train --data an .npz without y": (["train", "tiny.py", "--data", "only_x.npz", "-o",
                                        "t.ckpt"], 1, "only_x.npz has no array 'y'"),
    "train --data a CSV with a word": (["train", "tiny.py", "--data", "bad.csv", "-o", "t.ckpt"],
                                       1, "bad.csv has a feature that is not a number; expected "
                                       "numbers in every column but 'label', got 'oops'."),
    "train --data images of two sizes": (["train", "tiny.py", "--data", "imgs", "-o",
                                          "t.ckpt"], 1, "differs in size from"),
    "train --data that does not fit the input": (
        ["train", "tiny.py", "--data", "spirals", "-o", "t.ckpt"], 2,
        "--data spirals: the data does not fit the model's input; expected samples of shape "
        "(4,), got samples of shape (2,)."),
    "train --data blobs with an unknown parameter": (
        ["train", "tiny.py", "--data", "blobs:k=2", "-o", "t.ckpt"], 2,
        "unknown parameter of blobs 'k'"),
    "compile --accuracy an unknown data set": (
        ["compile", "tiny.py", "-o", "out.onnx", "--accuracy", "digts"], 2,
        "unknown data set 'digts'"),
    "checkpoint with a NaN weight": (
        ["compile", "tiny.py", "--weights", "nan.ckpt", "-o", "out.onnx"], 1,
        "checkpoint 'nan.ckpt', array 'fc.weight': nan.ckpt holds non-finite values in "
        "'fc.weight'; expected finite numbers, got 1 NaN or inf of 12."),
}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize("argv, status, message", CASES.values(), ids=CASES.keys())
def test_bad_input(folder, capfd, argv, status, message):
    before = snapshot(folder)
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's usage errors
        code = stop.code
    captured = capfd.readouterr()  # file descriptors: onnxruntime's own log would show here
    assert code == status, captured.err
    # Besides argparse's usage lines (a usage error shows the command's usage first).
    errors = [line for line in captured.err.splitlines()
              if not line.startswith(("usage: ", " "))]
    assert len(errors) == 1, captured.err
    assert errors[0].startswith("graphc: error: ") and errors[0] == \
        captured.err.splitlines()[-1]
    assert message in errors[0], errors[0]
    for raw in ("Traceback", "site-packages", "onnxruntime_src", "[ONNXRuntimeError]",
                "<frozen", ".pyx"):
        assert raw not in captured.err
    assert "compiled " not in captured.out
    assert snapshot(folder) == before


def test_an_upper_case_onnx_suffix_is_an_onnx_file(folder, capsys):
    assert main(["compile", "tiny.py", "-o", "tiny.onnx"]) == 0
    (folder / "tiny.onnx").rename(folder / "TINY.ONNX")
    assert main(["compile", "TINY.ONNX", "--pipeline", "inference", "-o", "again.onnx",
                 "--verify"]) == 0
    out = capsys.readouterr().out
    assert "compiled tiny -> again.onnx" in out
    assert "(compiled vs original file, both on onnxruntime)" in out
    model = onnx.load(str(folder / "again.onnx"))
    assert [n.op_type for n in model.graph.node] == ["Gemm"]
    assert main(["show", "TINY.ONNX"]) == 0
    assert "%x = Input # (1,4) f32" in capsys.readouterr().out


def test_ctrl_c_while_the_parser_is_built(monkeypatch, capsys):
    import graphc.cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(graphc.cli, "make_parser", interrupted)
    assert main(["--version"]) == 130
    captured = capsys.readouterr()
    assert captured.err == "graphc: error: interrupted (Ctrl-C); no output was left " \
                           "half-written\n"
    assert captured.out == ""


def test_help_texts(capsys):
    for argv in (["train", "--help"], ["show", "--help"], ["grad", "--help"],
                 ["run", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
    text = " ".join(capsys.readouterr().out.split())
    assert "required (except with --resume, which reads it from the checkpoint): --data DATA" \
        in text
    assert "a zoo model name, a .py file with build(), or an .onnx file" in text
    assert "--of OUTPUT, --output OUTPUT the name of the graph output to differentiate" in text
    assert "--output is its older spelling (a name, not a file" in text
    assert "--input NAME=FILE" in text and "-o FILE.npz, --output FILE.npz" in text


def test_grad_header_lists_the_example_inputs_it_keeps(folder, capsys):
    (folder / "two.py").write_text(textwrap.dedent("""\
        import numpy as np
        from graphc import GraphBuilder

        def build(seed=0):
            b = GraphBuilder("two")
            b.output(b.input("x", (1, 2)) * b.input("y", (1, 2)), "out")
            return b.build()

        def example_inputs():
            return {"x": np.array([[1, 2]], np.float32), "y": np.array([[0.5, -3]], np.float32)}
        """))
    assert main(["grad", "two.py", "--at", "x=[[3,4]]", "--of", "out"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    # sum(out) = 3 * 0.5 + 4 * -3
    assert first == "backprop of two at x=[[3,4]]; example input y=[[0.5,-3]]: sum(out) = -10.5"
    assert main(["grad", "two.py", "--output", "out"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == \
        "backprop of two at the model's example inputs: sum(out) = -5.5"
