"""`graphc train` and `graphc compile --weights/--accuracy`, run in-process through main().

References are independent of the CLI: graphc.train.train() called directly, the checkpoint
arrays, the ONNX file's initializers, and accuracies computed here with onnxruntime.
"""

from __future__ import annotations

import os
import re
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from graphc import testing
from graphc.cli import main
from graphc.errors import GraphcError
from graphc.ir import Value
from graphc.models import load
from graphc.train import checkpoint
from graphc.train import loop as training
from graphc.train.augment import DIGITS_AUGMENT
from graphc.train.checkpoint import load_checkpoint
from graphc.train.data import load_digits
from graphc.train.loop import TrainConfig
from graphc.train.transfer import body_params, replace_head


def run_ok(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[str, str]:
    assert main(argv) == 0, capsys.readouterr().err
    captured = capsys.readouterr()
    return captured.out, captured.err


def fails(capsys: pytest.CaptureFixture[str], argv: list[str], status: int) -> str:
    assert main(argv) == status
    return testing.one_error_line(capsys.readouterr().err)


def usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """An error argparse reports itself (exit 2 through SystemExit)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.splitlines()[-1]


def assert_same_arrays(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert got[name].tobytes() == want[name].tobytes(), name


def without_seconds(history: list[training.EpochLog]) -> list[training.EpochLog]:
    return [replace(h, seconds=0.0) for h in history]


def onnx_accuracy_reference(path: Path, classes: list[int] | None, layout: str) -> float:
    """The test accuracy of an ONNX file, computed here: one image at a time on onnxruntime."""
    _, test = load_digits(layout=layout)
    x, y = test.x, test.y
    if classes:
        keep = np.isin(y, classes)
        x, y = x[keep], np.array([classes.index(c) for c in y[keep]])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    predicted = [int(np.argmax(sess.run(None, {name: x[k:k + 1]})[0])) for k in range(len(x))]
    return float(np.mean(np.array(predicted) == y))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cnn trained 2 epochs on digits 0-4 (its head gets 5 classes)."""
    path = tmp_path_factory.mktemp("pre") / "pre.ckpt"
    assert main(["train", "cnn", "--data", "digits", "--classes", "0-4", "--epochs", "2",
                 "-o", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def mlp_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mlp") / "mlp.ckpt"
    assert main(["train", "mlp", "--data", "digits", "--epochs", "1", "-o", str(path)]) == 0
    return path


# ----- train --------------------------------------------------------------------------------


def test_train_checkpoint_equals_the_train_api(tmp_path, capsys):
    ckpt, plot = tmp_path / "mlp.ckpt", tmp_path / "curves.png"
    out, err = run_ok(capsys, ["train", "mlp", "--data", "digits", "--epochs", "2", "--batch",
                               "32", "--lr", "0.1", "--schedule", "step:1,0.5", "--seed", "1",
                               "-o", str(ckpt), "--plot", str(plot)])
    config = TrainConfig(epochs=2, batch=32, lr=0.1, schedule="step:1,0.5", seed=1)
    train_set, test_set = load_digits(layout="flat")
    want = training.train(lambda batch: load("mlp").build(seed=1, batch=batch), train_set,
                          test_set, config, progress=False)
    ck = load_checkpoint(ckpt)
    assert (ck.model, ck.epoch, ck.steps, ck.config) == ("mlp", 2, 2 * (1347 // 32), config)
    assert_same_arrays(ck.state, want.state)  # the data record is metadata, not an array
    assert without_seconds(ck.history) == without_seconds(want.history)
    assert ck.data == {"classes": None, "data": "digits", "init": None, "new_head": False}
    # One line per epoch, then the summary, on stdout (progress bars alone go to stderr).
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"]
    assert f"test {100 * want.history[0].test_accuracy:6.2f}%" in epochs[0]
    assert "epoch " not in err
    assert out.splitlines()[2:] == [
        "trained mlp for 2 epochs on digits (1347 training, 450 test images, 10 classes)",
        f"  test accuracy  {100 * want.test_accuracy:.2f}%",
        f"  checkpoint     {ckpt}",
        f"  curves         {plot}",
    ]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "mlp.ckpt"]


def test_image_augmentation_trains_an_mlp(tmp_path, capsys):
    """Digits stay images until the model's input, so shifts and rotations serve the MLP too."""
    ckpt = tmp_path / "mlp.ckpt"
    run_ok(capsys, ["train", "mlp", "--data", "digits", "--epochs", "1", "--augment", "digits",
                    "-o", str(ckpt)])
    ck = load_checkpoint(ckpt)
    assert ck.config.augment == DIGITS_AUGMENT
    train_set, test_set = load_digits()
    want = training.train(lambda batch: load("mlp").build(batch=batch), train_set, test_set,
                          TrainConfig(epochs=1, augment=DIGITS_AUGMENT), progress=False)
    assert_same_arrays(ck.state, want.state)
    plain = training.train(lambda batch: load("mlp").build(batch=batch), train_set, test_set,
                           TrainConfig(epochs=1), progress=False)
    assert not np.array_equal(plain.state["fc1.weight"], want.state["fc1.weight"])


def test_interrupted_run_resumes_to_the_same_bytes(tmp_path, capsys, monkeypatch):
    options = ["--data", "digits", "--epochs", "4", "--batch", "256", "--threads", "1",
               "--augment", "shift=1,noise=0.05"]
    whole, part = tmp_path / "whole.ckpt", tmp_path / "part.ckpt"
    run_ok(capsys, ["train", "cnn", *options, "-o", str(whole)])

    progress = training._progress

    def interrupt_in_epoch_3(batches, total, epoch, config, show):
        for k, item in enumerate(progress(batches, total, epoch, config, show)):
            if epoch == 2 and k == 1:
                raise KeyboardInterrupt  # Ctrl-C in the middle of the third epoch
            yield item

    monkeypatch.setattr(training, "_progress", interrupt_in_epoch_3)
    assert main(["train", "cnn", *options, "-o", str(part)]) == 130
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"graphc: interrupted; {part} holds epoch 2: continue " \
                                   f"with `graphc train cnn --resume {part}`"
    assert load_checkpoint(part).epoch == 2
    monkeypatch.setattr(training, "_progress", progress)

    out, _ = run_ok(capsys, ["train", "cnn", "--resume", str(part)])
    assert f"  resumed        {part} after epoch 2" in out.splitlines()
    a, b = load_checkpoint(whole), load_checkpoint(part)
    assert (b.epoch, b.steps, b.config) == (a.epoch, a.steps, a.config)
    assert_same_arrays(b.state, a.state)
    assert without_seconds(b.history) == without_seconds(a.history)
    assert b.data == a.data == {"classes": None, "data": "digits", "init": None,
                                "new_head": False}
    assert any(name.endswith("running_mean") for name in a.state)


def test_resume_refuses_training_options(mlp_ckpt, capsys):
    line = fails(capsys, ["train", "mlp", "--resume", str(mlp_ckpt), "--lr", "0.1", "--seed",
                          "0", "--freeze", "fc1*"], status=2)
    assert "--lr, --seed, --freeze cannot be given with --resume" in line
    line = fails(capsys, ["train", "mlp", "--resume", str(mlp_ckpt), "--momentum", "0"],
                 status=2)
    assert "--momentum cannot be given" in line
    line = fails(capsys, ["train", "mlp", "--resume", str(mlp_ckpt), "--penalty", "l1"],
                 status=2)
    assert "--penalty cannot be given with --resume" in line
    line = fails(capsys, ["train", "cnn", "--resume", str(mlp_ckpt)], status=2)
    assert "is a checkpoint of model 'mlp'" in line and "expected a checkpoint of 'cnn'" in line
    line = fails(capsys, ["train", "mlp", "--resume", str(mlp_ckpt), "--epochs", "0"], status=2)
    assert "--epochs must be a positive integer" in line


def test_resume_to_fewer_epochs_than_done(tmp_path, capsys):
    path = tmp_path / "two.ckpt"
    run_ok(capsys, ["train", "mlp", "--data", "digits", "--epochs", "2", "--batch", "128",
                    "-o", str(path)])
    line = fails(capsys, ["train", "mlp", "--resume", str(path), "--epochs", "1"], status=2)
    assert "has already trained 2 epochs" in line
    # Resuming a finished run trains nothing and still writes -o.
    copy = tmp_path / "copy.ckpt"
    run_ok(capsys, ["train", "mlp", "--resume", str(path), "-o", str(copy)])
    assert_same_arrays(load_checkpoint(copy).state, load_checkpoint(path).state)
    assert load_checkpoint(copy).data == load_checkpoint(path).data


def test_resume_bounds_the_checkpoints_threads_by_the_cores(mlp_ckpt, tmp_path, capsys):
    ck = load_checkpoint(mlp_ckpt)
    many = tmp_path / "many.ckpt"
    checkpoint.save_checkpoint(many, ck.model, training.TrainResult(ck.state, ck.history,
                                                                    ck.steps),
                               replace(ck.config, threads=100000), data=ck.data)
    copy = tmp_path / "copy.ckpt"
    _, err = run_ok(capsys, ["train", "mlp", "--resume", str(many), "-o", str(copy)])
    cores = os.cpu_count() or 1
    assert f"{many} asks for 100000 threads, more than this machine's {cores} cores; " \
        f"using {cores}" in err
    assert load_checkpoint(copy).config.threads == cores


@pytest.mark.parametrize("threads", ["0", "100000"])
def test_threads_beyond_the_cores_is_a_usage_error(tmp_path, capsys, threads):
    out = tmp_path / "out.ckpt"
    line = fails(capsys, ["train", "mlp", "--data", "digits", "--threads", threads,
                          "-o", str(out)], status=2)
    cores = os.cpu_count() or 1
    assert line.startswith(f"graphc: error: --threads: --threads must be between 1 and the "
                           f"machine's {cores} cores; expected an int from 1 to {cores}, got "
                           f"{threads}."), line
    assert not out.exists()


# ----- penalties and pruned checkpoints ----------------------------------------------------


def test_penalty_adds_its_value_to_every_step_loss(tmp_path, capsys):
    """With a learning rate of 1e-30 the weights do not move (the biases, from 0, by ~1e-30),
    so each step's loss with --penalty l1:0.01 is the plain loss plus 0.01 * sum |W| over the
    three Gemm weights (biases excluded), computed here in numpy."""
    options = ["--data", "digits", "--epochs", "2", "--batch", "256", "--lr", "1e-30",
               "--schedule", "constant"]
    plain, penalized = tmp_path / "plain.ckpt", tmp_path / "l1.ckpt"
    run_ok(capsys, ["train", "mlp", *options, "-o", str(plain)])
    out, _ = run_ok(capsys, ["train", "mlp", *options, "--penalty", "l1:0.01",
                             "-o", str(penalized)])
    a, b = load_checkpoint(plain), load_checkpoint(penalized)
    assert b.config == replace(a.config, penalty=("l1:0.01",))
    start = load("mlp").build(batch=256)
    weights = [start.const_value(Value(f"fc{k}.weight")) for k in (1, 2, 3)]
    for k, w in enumerate(weights, 1):
        assert b.state[f"fc{k}.weight"].tobytes() == w.tobytes()
    penalty = 0.01 * sum(float(np.abs(w.astype(np.float64)).sum()) for w in weights)
    assert penalty > 1.0
    for ha, hb in zip(a.history, b.history, strict=True):
        assert hb.loss - ha.loss == pytest.approx(penalty, rel=1e-5)
    assert (f"  penalty        l1:0.01 on 3 weights (Conv, Gemm, MatMul): adds {penalty:.4g} to "
            "the loss at the end") in out.splitlines()


def pruned_checkpoint(source: Path, path: Path) -> np.ndarray:
    """Write ``source`` with half of fc1.weight (the smallest |w|) set to 0 and the record of
    a pruned checkpoint; return the pruned weight."""
    ck = load_checkpoint(source)
    w = ck.state["fc1.weight"].copy()
    w[np.abs(w) < np.median(np.abs(w))] = 0
    checkpoint.save_checkpoint(path, ck.model, training.TrainResult(
        {**ck.state, "fc1.weight": w}, ck.history, ck.steps), ck.config,
        data={**ck.data, "pruned": {"sparse": ["fc1.weight"], "method": "magnitude"}})
    return w


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_fine_tuning_a_pruned_checkpoint_keeps_its_zeros(mlp_ckpt, tmp_path, capsys,
                                                          optimizer):
    pruned, tuned = tmp_path / "pruned.ckpt", tmp_path / "tuned.ckpt"
    w = pruned_checkpoint(mlp_ckpt, pruned)
    out, _ = run_ok(capsys, ["train", "mlp", "--data", "digits", "--epochs", "2", "--init",
                             str(pruned), "--optimizer", optimizer, "--penalty", "l2",
                             "-o", str(tuned)])
    assert "  pruned         4,096 of 8,192 weights in 1 parameter held at 0" in out.splitlines()
    ck = load_checkpoint(tuned)
    got = ck.state["fc1.weight"]
    assert np.all(got[w == 0] == 0)
    assert np.all(got[w != 0] != w[w != 0])
    assert not np.any(ck.state["fc2.weight"] == 0)
    # The record goes forward with its other keys; --resume keeps the zeros too.
    assert ck.data["pruned"] == {"sparse": ["fc1.weight"], "method": "magnitude"}
    out, _ = run_ok(capsys, ["train", "mlp", "--resume", str(tuned), "--epochs", "3"])
    assert "  pruned         4,096 of 8,192 weights in 1 parameter held at 0" in out.splitlines()
    again = load_checkpoint(tuned)
    assert again.epoch == 3 and again.data == ck.data
    assert np.all(again.state["fc1.weight"][w == 0] == 0)
    assert not np.array_equal(again.state["fc1.weight"], got)


# ----- transfer learning --------------------------------------------------------------------


def test_pretrained_head_has_the_subset_classes(pretrained):
    ck = load_checkpoint(pretrained)
    assert ck.state["fc.weight"].shape == (5, 256)
    assert ck.history[-1].test_accuracy > 0.8


def test_transfer_with_a_frozen_body(pretrained, tmp_path, capsys):
    path = tmp_path / "transfer.ckpt"
    out, err = run_ok(capsys, ["train", "cnn", "--data", "digits", "--classes", "5-9",
                               "--init", str(pretrained), "--new-head", "--freeze", "block*",
                               "--epochs", "2", "-o", str(path)])
    pre, ck = load_checkpoint(pretrained), load_checkpoint(path)
    body = body_params(load("cnn").build())
    assert len(body) == 9 and all(p.startswith("block") for p in body)
    stats = [f"block{k}.bn.running_{s}" for k in (1, 2, 3) for s in ("mean", "var")]
    for name in body + stats:
        assert ck.state[name].tobytes() == pre.state[name].tobytes(), name
        assert f"{name}.velocity" not in ck.state
    fresh = replace_head(load("cnn").build(), 5, seed=0)
    for name in ("fc.weight", "fc.bias"):
        assert ck.state[name].shape == pre.state[name].shape
        assert not np.array_equal(ck.state[name], pre.state[name])
        assert not np.array_equal(ck.state[name], fresh.const_value(Value(name)))
    # The optimizer state is new, not the pretraining's.
    assert ck.steps == 2 * (672 // 64)
    assert ck.history[-1].test_accuracy > 0.6  # chance is 0.2
    assert "  init           " + str(pretrained) + " (9 parameters, 6 running statistics; new " \
           "head fc.weight, fc.bias with 5 classes)" in out.splitlines()
    assert "  frozen         block* (9 parameters)" in out.splitlines()
    assert out.splitlines()[2] == "trained cnn for 2 epochs on digits, classes 5,6,7,8,9 (672 " \
                                  "training, 224 test images, 5 classes)"  # after 2 epoch lines
    assert not err.startswith("graphc:")  # --new-head was asked for: no note

    # The compiled file has the checkpoint's weights and its accuracy.
    onnx_path, plain = tmp_path / "transfer.onnx", tmp_path / "plain.onnx"
    out, _ = run_ok(capsys, ["compile", "cnn", "--weights", str(path), "-o", str(onnx_path),
                             "--accuracy", "digits"])
    run_ok(capsys, ["compile", "cnn", "--weights", str(path), "-o", str(plain)])
    assert onnx_path.read_bytes() == plain.read_bytes()
    initializers = {t.name: numpy_helper.to_array(t)
                    for t in onnx.load(str(onnx_path)).graph.initializer}
    for name in ("fc.weight", "fc.bias", "block2.conv.weight", "block3.bn.running_var"):
        np.testing.assert_array_equal(initializers[name], ck.state[name])
    accuracy = onnx_accuracy_reference(onnx_path, [5, 6, 7, 8, 9], "image")
    assert accuracy == pytest.approx(ck.history[-1].test_accuracy, abs=1e-12)
    assert f"  accuracy     {100 * accuracy:.2f}% on the digits test split, classes " \
           "5,6,7,8,9 (224 images, the written file on onnxruntime)" in out
    assert f"{100 * ck.history[-1].test_accuracy:.2f}% recorded in the checkpoint after " \
           "epoch 2 (the same)" in out
    assert "head fc.weight, fc.bias with 5 classes" in out.splitlines()[1]


def test_transfer_new_head_automatically_then_unfreeze(pretrained, tmp_path, capsys,
                                                       monkeypatch):
    saved = []
    save = checkpoint.save_checkpoint

    def keep(path, model, result, config, data):
        saved.append({k: np.array(v) for k, v in result.state.items()})
        save(path, model, result, config, data)

    monkeypatch.setattr(checkpoint, "save_checkpoint", keep)
    path = tmp_path / "three.ckpt"
    out, err = run_ok(capsys, ["train", "cnn", "--data", "digits", "--classes", "7,5,6",
                               "--init", str(pretrained), "--freeze", "block1*",
                               "--freeze", "block2.conv*", "--unfreeze-at", "1", "--epochs", "2",
                               "-o", str(path)])
    assert err.splitlines()[0] == f"graphc: the head of {pretrained} has 5 classes and the " \
                                  "data 3: training a new head"
    assert "  frozen         block1* block2.conv* (4 parameters; trained from epoch 2)" in out
    pre = load_checkpoint(pretrained)
    assert saved[-1]["fc.weight"].shape == (3, 256)
    for name in ("block1.conv.weight", "block1.bn.weight", "block2.conv.weight"):
        assert np.array_equal(saved[0][name], pre.state[name]), name  # frozen in epoch 1
        assert not np.array_equal(saved[1][name], pre.state[name]), name  # trained in epoch 2
    assert not np.array_equal(saved[0]["block3.conv.weight"], pre.state["block3.conv.weight"])
    # --classes 7,5,6: 7 is class 0. The checkpoint records the order for compile --accuracy.
    onnx_path = tmp_path / "three.onnx"
    out, _ = run_ok(capsys, ["compile", "cnn", "--weights", str(path), "-o", str(onnx_path),
                             "--accuracy", "digits"])
    accuracy = onnx_accuracy_reference(onnx_path, [7, 5, 6], "image")
    assert f"  accuracy     {100 * accuracy:.2f}% on the digits test split, classes 7,5,6 (" \
           in out
    assert accuracy > 0.6


def test_freeze_without_init_keeps_every_parameter_in_the_checkpoint(tmp_path, capsys):
    path = tmp_path / "frozen.ckpt"
    run_ok(capsys, ["train", "mlp", "--data", "digits", "--freeze", "fc1.*", "--epochs", "1",
                    "--batch", "128", "-o", str(path)])
    ck = load_checkpoint(path)
    g = load("mlp").build()
    for name in ("fc1.weight", "fc1.bias"):
        assert ck.state[name].tobytes() == g.const_value(Value(name)).tobytes()
    assert not np.array_equal(ck.state["fc2.weight"], g.const_value(Value("fc2.weight")))


# ----- compile --weights --------------------------------------------------------------------


def test_compile_weights_and_accuracy_flat_model(mlp_ckpt, tmp_path, capsys):
    path = tmp_path / "mlp.onnx"
    out, _ = run_ok(capsys, ["compile", "mlp", "--weights", str(mlp_ckpt), "-o", str(path),
                             "--pipeline", "inference", "--verify", "--accuracy", "digits"])
    ck = load_checkpoint(mlp_ckpt)
    initializers = {t.name: numpy_helper.to_array(t)
                    for t in onnx.load(str(path)).graph.initializer}
    for name in ("fc1.weight", "fc2.bias", "fc3.weight"):
        np.testing.assert_array_equal(initializers[name], ck.state[name])
    accuracy = onnx_accuracy_reference(path, None, "flat")
    assert accuracy == pytest.approx(ck.history[-1].test_accuracy, abs=1e-12)
    lines = out.splitlines()
    assert lines[1] == f"  weights      {mlp_ckpt} (epoch 1, test accuracy " \
                       f"{100 * ck.history[-1].test_accuracy:.2f}%)"
    assert f"  accuracy     {100 * accuracy:.2f}% on the digits test split (450 images" in out
    assert float(re.search(r"max abs diff (\S+)", out)[1]) < 1e-4


def test_compile_weights_of_another_model(mlp_ckpt, pretrained, tmp_path, capsys):
    line = fails(capsys, ["compile", "cnn", "--weights", str(mlp_ckpt), "-o",
                          str(tmp_path / "x.onnx")], status=2)
    assert f"--weights {mlp_ckpt} is a checkpoint of model 'mlp'" in line
    line = fails(capsys, ["compile", "lenet5", "--weights", str(pretrained), "-o",
                          str(tmp_path / "x.onnx")], status=2)
    assert "expected a checkpoint of 'lenet5', got 'cnn'" in line
    assert not (tmp_path / "x.onnx").exists()


def test_compile_weights_that_are_not_a_checkpoint(tmp_path, capsys):
    bogus = tmp_path / "bogus.ckpt"
    bogus.write_bytes(b"not a zip file")
    line = fails(capsys, ["compile", "mlp", "--weights", str(bogus), "-o",
                          str(tmp_path / "x.onnx")], status=1)
    assert "is not a graphc checkpoint" in line
    line = fails(capsys, ["compile", "mlp", "--weights", str(tmp_path / "none.ckpt"), "-o",
                          str(tmp_path / "x.onnx")], status=2)
    assert "does not exist" in line
    line = fails(capsys, ["compile", "mlp", "--accuracy", "mnist", "-o",
                          str(tmp_path / "x.onnx")], status=2)
    assert "unknown data set 'mnist'" in line


def test_compile_accuracy_refuses_a_model_the_data_does_not_fit(mlp_ckpt, tmp_path, capsys):
    out = tmp_path / "x.onnx"
    line = fails(capsys, ["compile", "mlp_tiny", "--accuracy", "digits", "-o", str(out)],
                 status=2)
    assert "--accuracy digits: the data does not fit the model's input" in line
    assert not out.exists()
    run_ok(capsys, ["compile", "mlp", "-o", str(out)])
    line = fails(capsys, ["compile", str(out), "--weights", str(mlp_ckpt), "-o",
                          str(tmp_path / "y.onnx")], status=2)
    assert "--weights needs a zoo model or a .py file" in line


# ----- model files --------------------------------------------------------------------------

NET = """\
from graphc import GraphBuilder, nn


def build(seed=0, batch=1):
    b = GraphBuilder("tiny", seed=seed)
    x = b.input("x", (batch, 64))
    b.output(nn.linear(nn.relu(nn.linear(x, 16, name="hidden")), 10, name="out"), "logits")
    return b.build()
"""


def test_train_and_compile_a_model_file(tmp_path, capsys):
    net = tmp_path / "tiny.py"
    net.write_text(NET)
    path = tmp_path / "tiny.ckpt"
    out, _ = run_ok(capsys, ["train", str(net), "--data", "digits", "--epochs", "1",
                             "--optimizer", "adam", "-o", str(path)])
    assert out.splitlines()[1].startswith("trained tiny for 1 epoch on digits")  # after epoch 1
    assert load_checkpoint(path).model == "tiny"
    assert "out.weight.m" in load_checkpoint(path).state
    run_ok(capsys, ["compile", str(net), "--weights", str(path), "-o", str(tmp_path / "t.onnx")])
    other = tmp_path / "other.py"
    other.write_text(NET)
    line = fails(capsys, ["compile", str(other), "--weights", str(path), "-o",
                          str(tmp_path / "o.onnx")], status=2)
    assert "expected a checkpoint of 'other', got 'tiny'" in line


def test_model_file_without_a_batch_argument(tmp_path, capsys):
    net = tmp_path / "nobatch.py"
    net.write_text(textwrap.dedent("""\
        from graphc import GraphBuilder, nn

        def build(seed=0):
            b = GraphBuilder("nobatch", seed=seed)
            b.output(nn.linear(b.input("x", (1, 64)), 10, name="fc"), "y")
            return b.build()
        """))
    line = fails(capsys, ["train", str(net), "--data", "digits", "-o",
                          str(tmp_path / "x.ckpt")], status=1)
    assert "cannot train nobatch: its build() takes no seed and batch arguments" in line
    line = fails(capsys, ["train", "backprop_example", "--data", "digits", "-o",
                          str(tmp_path / "x.ckpt")], status=1)
    assert "cannot train backprop_example" in line


# ----- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(("extra", "message"), [
    (["--data", "mnist"], "--data: unknown data set 'mnist'"),
    ([], "train needs --data"),
    (["--data", "digits", "--classes", "3-12"], "cannot read --classes '3-12'"),
    (["--data", "digits", "--classes", "3"], "expected at least 2 different classes"),
    (["--data", "digits", "--new-head"], "--new-head needs --init"),
    (["--data", "digits", "--unfreeze-at", "2"], "--unfreeze-at needs --freeze"),
    (["--data", "digits", "--freeze", "fc*", "--unfreeze-at", "30"],
     "--unfreeze-at is out of range; expected an epoch in 1..29"),
    (["--data", "digits", "--freeze", "nope*"], "unknown parameter pattern 'nope*'"),
    (["--data", "digits", "--optimizer", "adm"], "Did you mean 'adam'?"),
    (["--data", "digits", "--backend", "torch"], "unknown backend 'torch'"),
    (["--data", "digits", "--schedule", "cosin"], "Did you mean 'cosine'?"),
    (["--data", "digits", "--augment", "spin=3"], "unknown augmentation 'spin'"),
    (["--data", "digits", "--feature-augment", "fc2:blur=1"],
     "unknown feature augmentation 'blur'"),
    (["--data", "digits", "--feature-augment", "fc9:noise=0.1"], "unknown layer 'fc9'"),
    (["--data", "digits", "--batch", "0"], "batch must be a positive integer"),
    (["--data", "digits", "--init", "missing.ckpt"], "'missing.ckpt' does not exist"),
    (["--data", "digits", "--plot", "curves.gif"], "--plot: cannot draw"),
    (["--data", "digits", "--penalty", "l3"], "--penalty: unknown penalty 'l3'; expected one "
                                              "of 'group-l1', 'group-l2', 'l1', 'l2', got 'l3'"),
    (["--data", "digits", "--penalty", "l1:-1"], "--penalty: the weight of penalty 'l1' must be "
                                                 "a positive number; expected a number > 0"),
    (["--data", "digits", "--penalty", "l1:abc"], "--penalty: bad penalty 'l1:abc'; expected "
                                                  "KIND or KIND:WEIGHT, e.g. l1:0.0001, got"),
    (["--data", "digits", "--penalty", "l2", "--penalty", "l2:0.1"],
     "--penalty: penalty 'l2' is given twice"),
])
def test_usage_errors_are_one_line(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    line = fails(capsys, ["train", "mlp", *extra, "-o", "x.ckpt"], status=2)
    assert message in line
    assert list(tmp_path.iterdir()) == []


def test_missing_output_option(tmp_path, capsys):
    line = fails(capsys, ["train", "mlp", "--data", "digits"], status=2)
    assert "train needs -o/--output" in line
    line = usage_error(capsys, ["train", "mlp", "--epochs", "x"])
    assert "--epochs" in line and "'x'" in line


def test_output_in_a_missing_folder_fails_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(training, "train", lambda *a, **k: pytest.fail("trained"))
    line = fails(capsys, ["train", "mlp", "--data", "digits", "-o", "missing/x.ckpt"], status=1)
    assert "cannot write 'missing/x.ckpt': the folder 'missing' does not exist" in line
    line = fails(capsys, ["train", "mlp", "--data", "digits", "-o", "x.ckpt", "--plot",
                          "nowhere/c.png"], status=1)
    assert "--plot: cannot write 'nowhere/c.png'" in line
    assert list(tmp_path.iterdir()) == []


def test_unwritable_checkpoint_leaves_no_partial_file(tmp_path, capsys, monkeypatch):
    # The folder disappears during training: the write fails cleanly, nothing is left behind.
    folder = tmp_path / "out"
    folder.mkdir()
    real = checkpoint.save_checkpoint

    def vanish(path, *args, **kwargs):
        folder.rmdir()
        real(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_checkpoint", vanish)
    assert main(["train", "mlp", "--data", "digits", "--epochs", "1", "--batch", "128",
                 "-o", str(folder / "x.ckpt")]) == 1
    # The epoch's line comes first (train() prints it before the checkpoint is written).
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith(f"graphc: error: cannot write '{folder / 'x.ckpt'}'")
    assert list(tmp_path.iterdir()) == []


def test_onnx_file_cannot_be_trained(tmp_path, capsys):
    line = fails(capsys, ["train", "model.onnx", "--data", "digits", "-o",
                          str(tmp_path / "x.ckpt")], status=2)
    assert "cannot train 'model.onnx'" in line and "a .onnx file" in line


def test_debug_shows_the_error(tmp_path):
    with pytest.raises(GraphcError, match="train needs --data"):
        main(["train", "mlp", "-o", str(tmp_path / "x.ckpt"), "--debug"])
