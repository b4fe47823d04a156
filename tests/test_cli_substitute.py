"""`graphc compile TEACHER --passes substitute-student --student STUDENT:CKPT --accuracy digits`
end to end: the file computes the trained student, the gate refuses a bad one with both
accuracies, the student gets the passes before it, and the usage errors."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest

import graphc.passes
from graphc import testing
from graphc.cli import main
from graphc.interpret import run
from graphc.models import load
from graphc.onnxio.runtime import run_onnxruntime, session
from graphc.passes.substitute_student import substitute_student
from graphc.train.checkpoint import load_checkpoint, save_checkpoint
from graphc.train.data import load_digits
from graphc.train.loop import TrainConfig, train
from graphc.train.step import apply_state

RECORD = {"data": "digits", "classes": None, "init": None, "new_head": False}


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """The pass in the registry (the CLI looks passes up there)."""
    if substitute_student not in graphc.passes.PASSES:
        monkeypatch.setattr(graphc.passes, "PASSES", [*graphc.passes.PASSES, substitute_student])


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Checkpoints as `graphc train` writes them: the teacher (3 epochs), a student trained
    enough (20 epochs), a student trained 1 epoch, and an mlp."""
    folder = tmp_path_factory.mktemp("ckpts")
    train_set, test_set = load_digits()
    paths = {}
    for key, model, epochs, lr in (("teacher", "teacher", 3, 0.05), ("student", "student", 20, 0.1),
                                   ("bad", "student", 1, 0.1), ("mlp", "mlp", 1, 0.05)):
        module = load(model)
        config = TrainConfig(epochs=epochs, batch=32, lr=lr)
        result = train(lambda batch, m=module: m.build(seed=0, batch=batch), train_set,
                       test_set, config, progress=False)
        paths[key] = folder / f"{key}.ckpt"
        save_checkpoint(paths[key], model, result, config, data=RECORD)
    return paths


def run_ok(capsys, argv):
    assert main(argv) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def _student(path, batch: int = 1):
    return apply_state(load("student").build(seed=0, batch=batch), load_checkpoint(path).state)


def test_compile_substitutes_the_trained_student(tmp_path, capsys, ckpts):
    target = tmp_path / "s.onnx"
    out = run_ok(capsys, ["compile", "teacher", "--weights", str(ckpts["teacher"]), "--passes",
                          "substitute-student", "--student", f"student:{ckpts['student']}",
                          "--gate", "1.0", "--accuracy", "digits", "--verify",
                          "-o", str(target)])
    assert out.startswith(f"compiled student -> {target} (opset 17)")
    assert f"  student      student:{ckpts['student']} (epoch 20, test accuracy" in out
    _, test_set = load_digits()
    x = test_set.x.reshape(-1, 1, 8, 8).astype(np.float32)
    # The written file on onnxruntime equals the student on the interpreter, on every image.
    want = run(_student(ckpts["student"], len(x)), {"x": x})["logits"]
    sess = session(target.read_bytes())
    got = np.concatenate([sess.run(["logits"], {"x": x[i:i + 1]})[0] for i in range(len(x))])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    student_acc = float(np.mean(np.argmax(want, axis=1) == test_set.y))
    teacher = apply_state(load("teacher").build(seed=0, batch=len(x)),
                          load_checkpoint(ckpts["teacher"]).state)
    teacher_acc = float(np.mean(np.argmax(run(teacher, {"x": x})["logits"], axis=1)
                                == test_set.y))
    assert (f"accuracy     student {100 * student_acc:.2f}% vs teacher {100 * teacher_acc:.2f}%"
            in out), out
    assert (f"  accuracy     {100 * student_acc:.2f}% on the digits test split (450 images, the "
            "written file on onnxruntime)") in out
    assert "recorded in the checkpoint after epoch 20 (the same)" in out
    assert "parameters   teacher 99,370 -> student 1,442" in out
    assert "compiled on onnxruntime vs the student on the interpreter" in out
    assert re.search(r"latency      student [\d.]+x teacher at batch 1", out)
    model = onnx.load(target)
    assert [i.name for i in model.graph.input] == ["x"]
    assert [o.name for o in model.graph.output] == ["logits"]


def test_the_student_gets_the_passes_before_it(tmp_path, capsys, ckpts):
    target = tmp_path / "s.onnx"
    out = run_ok(capsys, ["compile", "teacher", "--weights", str(ckpts["teacher"]),
                          "--pipeline", "inference", "--passes", "substitute-student",
                          "--student", f"student:{ckpts['student']}", "--accuracy", "digits",
                          "-o", str(target)])
    assert "fold-batchnorm       nodes 18 -> 14" in out  # the teacher's four BNs
    ops = [n.op_type for n in onnx.load(target).graph.node]
    assert "BatchNormalization" not in ops and ops.count("Conv") == 2
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)}
    want = run(_student(ckpts["student"]), feeds)["logits"]
    got = run_onnxruntime(target.read_bytes(), feeds)["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_the_gate_refuses_a_student_trained_one_epoch(tmp_path, capsys, ckpts):
    target = tmp_path / "s.onnx"
    assert main(["compile", "teacher", "--weights", str(ckpts["teacher"]), "--passes",
                 "substitute-student", "--student", f"student:{ckpts['bad']}",
                 "--accuracy", "digits", "-o", str(target)]) == 1
    line = testing.one_error_line(capsys.readouterr().err)
    bad = load_checkpoint(ckpts["bad"]).history[-1].test_accuracy
    teacher = load_checkpoint(ckpts["teacher"]).history[-1].test_accuracy
    assert (f"accuracy gate: student accuracy {100 * bad:.2f}% is more than 1.0 points below "
            f"teacher {100 * teacher:.2f}%; expected >= {100 * teacher - 1:.2f}% (teacher "
            f"{100 * teacher:.2f}% - 1.0 points), got {100 * bad:.2f}%") in line
    assert not target.exists()
    # A gate wide enough lets it through.
    run_ok(capsys, ["compile", "teacher", "--weights", str(ckpts["teacher"]), "--passes",
                    "substitute-student", "--student", f"student:{ckpts['bad']}", "--gate",
                    f"{100 * (teacher - bad) + 0.01:.2f}", "--accuracy", "digits",
                    "-o", str(target)])
    assert target.exists()


@pytest.mark.parametrize(("argv", "status", "message"), [
    (["--student", "student:{student}"], 2,
     "--student only apply to substitute-student; expected --passes substitute-student"),
    (["--gate", "2"], 2, "--gate only apply to substitute-student"),
    (["--passes", "substitute-student", "--accuracy", "digits"], 2,
     "--student: substitute-student needs the trained student"),
    (["--passes", "substitute-student", "--student", "student:{student}"], 2,
     "--accuracy: substitute-student needs held-out data for its accuracy gate"),
    (["--passes", "substitute-student", "--student", "student", "--accuracy", "digits"], 2,
     "--student: cannot read --student 'student'; expected STUDENT:CKPT"),
    (["--passes", "substitute-student", "--student", "student:{student}", "--accuracy",
      "digits", "--gate", "-1"], 2, "--gate: the accuracy gate must be a number of points"),
    (["--passes", "substitute-student", "--student", "student:{teacher}", "--accuracy",
      "digits"], 2, "is a checkpoint of model 'teacher'; expected a checkpoint of 'student'"),
    (["--passes", "substitute-student", "--student", "student:missing.ckpt", "--accuracy",
      "digits"], 2, "checkpoint 'missing.ckpt' does not exist"),
    (["--passes", "substitute-student", "--student", "s.onnx:{student}", "--accuracy",
      "digits"], 2, "--student needs a zoo model or a .py file"),
    (["--passes", "quantize-int8,substitute-student", "--calibrate", "digits", "--student",
      "student:{student}", "--accuracy", "digits"], 2,
     "substitute-student must come before quantize-int8"),
    (["--passes", "substitute-student", "--student", "mlp:{mlp}", "--accuracy", "digits"], 1,
     "student input 'x': the student's input 'x' differs from the teacher's; expected "
     "(1,1,8,8) f32, got (1,64) f32"),
])
def test_usage_errors(tmp_path, capsys, ckpts, argv, status, message):
    target = tmp_path / "s.onnx"
    argv = [a.format(**{k: str(v) for k, v in ckpts.items()}) for a in argv]
    assert main(["compile", "teacher", "--weights", str(ckpts["teacher"]), *argv,
                 "-o", str(target)]) == status
    line = testing.one_error_line(capsys.readouterr().err)
    assert message in line, line
    assert not target.exists()
