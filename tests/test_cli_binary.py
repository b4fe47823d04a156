"""`graphc train MODEL --binary weights|all` and `graphc compile --weights BINARY.ckpt
--pipeline inference --passes binarize` end to end: the checkpoint's record, resuming, the
compiled file against the interpreter on the training form (inference mode), the binary
summary against files compiled here, and the usage errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from graphc.cli import main
from graphc.compress.binary_train import binary_graph
from graphc.interpret import run
from graphc.models import load
from graphc.onnxio.runtime import session
from graphc.train.checkpoint import load_checkpoint
from graphc.train.data import load_digits
from graphc.train.step import apply_state

F32 = np.float32


def run_ok(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def error_line(capsys: pytest.CaptureFixture[str], argv: list[str], status: int = 2) -> str:
    assert main(argv) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("graphc: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An fp32 cnn (3 epochs) and binary fine-tunings of it: all (2 epochs), weights (1)."""
    folder = tmp_path_factory.mktemp("binary")
    paths = {k: folder / f"{k}.ckpt" for k in ("fp32", "all", "weights")}
    common = ["--data", "digits", "--threads", "1"]
    assert main(["train", "cnn", *common, "--epochs", "3", "-o", str(paths["fp32"])]) == 0
    assert main(["train", "cnn", *common, "--epochs", "2", "--binary", "all", "--init",
                 str(paths["fp32"]), "-o", str(paths["all"])]) == 0
    assert main(["train", "cnn", *common, "--epochs", "1", "--binary", "weights",
                 "--keep-fp32", "none", "--init", str(paths["fp32"]), "-o",
                 str(paths["weights"])]) == 0
    return paths


def test_the_checkpoint_records_the_binary_form(ckpts, capsys):
    ck = load_checkpoint(ckpts["all"])
    assert ck.data["binary"] == {"mode": "all", "keep_fp32": ["block1.conv", "logits"],
                                 "layers": ["block2.conv", "block3.conv"]}
    assert ck.data["init"] == str(ckpts["fp32"])
    # The latent weights are stored, not binary ones.
    w = ck.state["block2.conv.weight"]
    assert len(np.unique(np.abs(w[0]))) > 2
    weights = load_checkpoint(ckpts["weights"]).data["binary"]
    assert weights == {"mode": "weights", "keep_fp32": [],
                       "layers": ["block1.conv", "block2.conv", "block3.conv", "logits"]}


def test_resume_keeps_training_the_binary_form(ckpts, tmp_path, capsys):
    path = tmp_path / "more.ckpt"
    path.write_bytes(ckpts["all"].read_bytes())
    out = run_ok(capsys, ["train", "cnn", "--resume", str(path), "--epochs", "3"])
    assert "  binary         binary weights and activations (block2.conv, block3.conv; fp32: " \
           "block1.conv, logits)" in out
    assert "3 sign activations" in out
    ck = load_checkpoint(path)
    assert ck.epoch == 3 and ck.data["binary"] == load_checkpoint(ckpts["all"]).data["binary"]


def test_compiled_file_equals_the_training_form(ckpts, tmp_path, capsys):
    out_file = tmp_path / "all.onnx"
    out = run_ok(capsys, ["compile", "cnn", "--weights", str(ckpts["all"]), "--pipeline",
                          "inference", "--passes", "binarize", "--dynamic-batch", "--accuracy",
                          "digits", "-o", str(out_file)])
    assert re.search(r"block2\.conv +integer: 18,432 -> \d", out)
    assert re.search(r"block3\.conv +integer: 73,728 -> \d", out)
    # The reference: the training form with the checkpoint's weights, in inference mode
    # (running statistics, no dropout), on graphc's interpreter.
    _, test_set = load_digits()
    x = test_set.x.reshape(-1, 1, 8, 8).astype(F32)
    ck = load_checkpoint(ckpts["all"])
    form = apply_state(binary_graph(load("cnn").build(batch=len(x)), "all"), ck.state)
    want = run(form, {"x": x})["logits"]
    sess = session(out_file.read_bytes(), threads=1)
    got = sess.run(None, {"x": x})[0]
    scale = float(np.max(np.abs(want)))
    assert np.max(np.abs(got - want)) <= 1e-5 * scale  # float32 rounding only
    assert np.array_equal(np.argmax(got, 1), np.argmax(want, 1))
    accuracy = float(np.mean(np.argmax(want, 1) == test_set.y))
    assert f"accuracy     {100 * accuracy:.2f}% on the digits test split" in out
    assert f"{100 * ck.history[-1].test_accuracy:.2f}% recorded" in out
    assert np.isclose(ck.history[-1].test_accuracy, accuracy)


def test_binary_summary_against_the_fp32_file(ckpts, tmp_path, capsys):
    binary_file, fp32_file = tmp_path / "b.onnx", tmp_path / "f.onnx"
    out = run_ok(capsys, ["compile", "cnn", "--weights", str(ckpts["weights"]), "--pipeline",
                          "inference", "--passes", "binarize", "--accuracy", "digits", "-o",
                          str(binary_file)])
    run_ok(capsys, ["compile", "cnn", "--weights", str(ckpts["weights"]), "--pipeline",
                    "inference", "-o", str(fp32_file)])
    size = re.search(r"  binary       size .* \((\d\.\d+)x; the same passes without binarize\)",
                     out)
    assert size, out
    ratio = binary_file.stat().st_size / fp32_file.stat().st_size
    assert float(size.group(1)) == pytest.approx(ratio, abs=6e-4)
    assert ratio < 0.1  # every layer binary: 1 bit per weight
    time = re.search(r"time (\d+\.\d+)x fp32 at batch 1 \(median of 21 interleaved runs, 1 "
                     r"thread; ", out)
    assert time and float(time.group(1)) > 0
    # The fp32 file of the same binary weights gets the same images right.
    same = re.search(r"accuracy (\d+\.\d+)% vs (\d+\.\d+)% in the fp32 file", out)
    assert same and same.group(1) == same.group(2)
    fp32 = load_checkpoint(ckpts["fp32"]).history[-1]
    assert (f"fine-tuned from {ckpts['fp32']}: {100 * fp32.test_accuracy:.2f}% test accuracy "
            f"in fp32 (recorded after its epoch 3)") in out


def test_usage_errors(ckpts, tmp_path, capsys):
    out = str(tmp_path / "x.ckpt")
    base = ["train", "cnn", "--data", "digits", "--epochs", "1", "-o", out]
    line = error_line(capsys, [*base, "--binary", "al"])
    assert "--binary: unknown binary mode 'al'" in line and "Did you mean 'all'" in line
    line = error_line(capsys, [*base, "--binary", "all", "--qat"])
    assert "--binary and --qat exclude each other" in line
    line = error_line(capsys, [*base, "--keep-fp32", "first"])
    assert "--keep-fp32 needs --binary" in line
    line = error_line(capsys, [*base, "--binary", "weights", "--keep-fp32", "first,block9"])
    assert "--keep-fp32: unknown layer 'block9'" in line
    for known in ("'block1.conv'", "'block2.conv'", "'block3.conv'", "'logits'", "'first'",
                  "'last'"):
        assert known in line
    line = error_line(capsys, [*base, "--binary", "weights", "--keep-fp32",
                               "first,block2.conv,block3.conv,last"])
    assert "no layer left to binarize" in line
    line = error_line(capsys, ["train", "cnn", "--resume", str(ckpts["all"]), "--binary",
                               "weights", "-o", out])
    assert "--binary cannot be given with --resume" in line
    line = error_line(capsys, ["train", "mlp", "--data", "digits", "--init",
                               str(ckpts["all"]), "--binary", "all", "-o", out])
    assert "is a checkpoint of model 'cnn'" in line
    assert not Path(out).exists()
