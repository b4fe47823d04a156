"""Distillation: the teacher inside the training step or fed from its own session, the teacher
frozen, the loss of a step against numpy, teacher-labeled samples, and the command line."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from graphc import testing
from graphc.cli import main
from graphc.dsl import GraphBuilder
from graphc.errors import UsageError
from graphc.interpret import run
from graphc.models import load
from graphc.train import loop as training
from graphc.train.augment import DIGITS_AUGMENT, Augment
from graphc.train.checkpoint import load_checkpoint, resume
from graphc.train.data import load_digits, one_hot
from graphc.train.distill import (
    TEACHER_LABELS_STREAM,
    Distillation,
    Teacher,
    label_with_teacher,
    read_unlabeled,
)
from graphc.train.loop import TrainConfig, model_state
from graphc.train.optim import SGD
from graphc.train.runner import InterpreterRunner, OrtRunner
from graphc.train.step import apply_state, compile_step

TRAIN, TEST = load_digits()
SMALL_TRAIN, SMALL_TEST = TRAIN.subset(np.arange(256)), TEST.subset(np.arange(64))


def teacher_state() -> dict[str, np.ndarray]:
    """A teacher's weights: the zoo teacher at seed 3 with running statistics that are not the
    defaults, so that an inference-mode BatchNorm differs from a train-mode one."""
    state = model_state(load("teacher").build(seed=3))
    rng = np.random.default_rng(5)
    for name in state:
        if name.endswith("running_mean"):
            state[name] = (0.1 * rng.standard_normal(state[name].shape)).astype(np.float32)
        if name.endswith("running_var"):
            state[name] = (1 + 0.5 * rng.random(state[name].shape)).astype(np.float32)
    return state


STATE = teacher_state()


def teacher_build(batch: int):
    return apply_state(load("teacher").build(batch=batch), STATE)


def student_build(batch: int):
    return load("student").build(seed=0, batch=batch)


def log_softmax(z: np.ndarray, T: float = 1.0) -> np.ndarray:
    z = np.asarray(z, np.float64) / T
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def teacher_logits(x: np.ndarray) -> np.ndarray:
    """The teacher's logits on the interpreter, BatchNorm with running statistics, no dropout."""
    g = teacher_build(len(x))
    return run(g, {"x": x})[g.output_names()[0]]


# ----- the step -----------------------------------------------------------------------------


@pytest.mark.parametrize("inside", [True, False])
def test_step_loss_is_the_course_loss_against_the_frozen_teacher(inside: bool) -> None:
    settings = Distillation(T=4.0, alpha=0.3, beta=0.7)
    spec = compile_step(student_build(16), SGD(lr=0.05, momentum=0.9), distill=settings,
                        teacher=teacher_build(16) if inside else None)
    x = TRAIN.x[:16]
    y = one_hot(TRAIN.y[:16], 10)
    z_t = teacher_logits(x)
    feeds = {"x": x, "target": y} if inside else {"x": x, "target": y, "teacher_logits": z_t}
    out = InterpreterRunner(spec).run(feeds, lr=0.05)
    z_s = out.prediction  # the student's train-mode logits of this step
    hard = -np.mean(np.sum(y * log_softmax(z_s), axis=1))
    soft = -np.mean(np.sum(np.exp(log_softmax(z_t, 4.0)) * log_softmax(z_s, 4.0), axis=1))
    assert out.loss == pytest.approx(0.3 * hard + 0.7 * soft, rel=1e-5)
    # Frozen: no teacher constant is trained or carried, no output updates one.
    teacher_names = [n for n in spec.graph.nx if n.startswith("teacher.")]
    assert bool(teacher_names) == inside
    assert not [p for p in spec.params if p.startswith("teacher.")]
    assert not [n for n in spec.graph.output_names() if n.startswith("teacher.")]
    assert sorted(spec.params) == sorted(student_build(16).params())
    for name in teacher_names:
        assert not spec.graph.nx.nodes[name].get("trainable")
    assert spec.batch_inputs == (["x", "target"] if inside else ["x", "target",
                                                                 "teacher_logits"])


def test_teacher_inside_the_step_on_onnxruntime_equals_the_interpreter() -> None:
    spec = compile_step(student_build(32), SGD(lr=0.05, momentum=0.9),
                        distill=Distillation(T=2.0, tau_squared=True), teacher=teacher_build(32))
    ort, ref = OrtRunner(spec, threads=1), InterpreterRunner(spec)
    for k in range(3):
        batch = {"x": TRAIN.x[32 * k:32 * (k + 1)],
                 "target": one_hot(TRAIN.y[32 * k:32 * (k + 1)], 10)}
        a, b = ort.run(batch, 0.05), ref.run(batch, 0.05)
        assert a.loss == pytest.approx(b.loss, rel=1e-4)
    for name, value in ref.state().items():
        np.testing.assert_allclose(ort.state()[name], value, rtol=1e-3, atol=1e-5)


def test_step_refuses_what_distillation_cannot_train() -> None:
    with pytest.raises(UsageError, match="distillation trains with the cross-entropy"):
        compile_step(student_build(8), SGD(lr=0.1), loss="mse", distill=Distillation())
    with pytest.raises(UsageError, match="a teacher needs distillation settings"):
        compile_step(student_build(8), SGD(lr=0.1), teacher=teacher_build(8))
    with pytest.raises(UsageError, match="feature mixup mixes the labels but not"):
        from graphc.train.step import FeatureAugment

        compile_step(student_build(8), SGD(lr=0.1), distill=Distillation(),
                     features=[FeatureAugment("block2.relu", "mixup", 0.2)])
    b = GraphBuilder("wide")
    b.output(b.op("Flatten", b.input("x", (8, 1, 8, 8))), "y")
    with pytest.raises(UsageError, match=re.escape(
            "--teacher: the teacher's output does not fit the student's; expected (8, 10) "
            "like student's logits, got (8, 64) (wide's y)")):
        compile_step(student_build(8), SGD(lr=0.1), distill=Distillation(), teacher=b.build())


# ----- the loop -----------------------------------------------------------------------------


@pytest.mark.parametrize("augment", ["", DIGITS_AUGMENT])
def test_both_ways_of_getting_the_logits_train_the_same_student(augment: str) -> None:
    config = TrainConfig(epochs=2, batch=32, threads=1, augment=augment)
    results = {}
    for mode in ("graph", "separate"):
        teacher = Teacher(teacher_build, Distillation(T=4.0, mode=mode))
        results[mode] = training.train(student_build, SMALL_TRAIN, SMALL_TEST, config,
                                       progress=False, teacher=teacher)
    a, b = results["graph"], results["separate"]
    assert [h.test_accuracy for h in a.history] == [h.test_accuracy for h in b.history]
    for name in model_state(student_build(32)):
        np.testing.assert_allclose(a.state[name], b.state[name], rtol=1e-4, atol=1e-5)
    assert not [n for n in a.state if n.startswith("teacher")]


def test_teacher_weights_never_change(tmp_path: Path) -> None:
    before = {k: v.copy() for k, v in STATE.items()}
    built = teacher_build(32)
    consts = {n: built.nx.nodes[n]["value"].copy() for n in model_state(built)}
    for mode in ("graph", "separate"):
        teacher = Teacher(lambda batch: built if batch == 32 else teacher_build(batch),
                          Distillation(mode=mode, teacher_labels=40))
        training.train(student_build, SMALL_TRAIN, SMALL_TEST,
                       TrainConfig(epochs=1, batch=32, threads=1, augment="shift=1"),
                       progress=False, teacher=teacher)
    for name, value in before.items():
        assert STATE[name].tobytes() == value.tobytes(), name
    for name, value in consts.items():
        assert built.nx.nodes[name]["value"].tobytes() == value.tobytes(), name


def test_a_run_without_augmentation_caches_the_teacher(monkeypatch) -> None:
    calls = []
    predict = training.Evaluator.predict

    def counting(self, x, state):
        calls.append(len(x))
        return predict(self, x, state)

    monkeypatch.setattr(training.Evaluator, "predict", counting)
    teacher = Teacher(teacher_build, Distillation(mode="auto"))
    training.train(student_build, SMALL_TRAIN, SMALL_TEST, TrainConfig(epochs=3, batch=32,
                   threads=1), progress=False, teacher=teacher)
    # Once over the 256 training images, then the three test evaluations of the student.
    assert calls == [256, 64, 64, 64]


# ----- teacher labels -----------------------------------------------------------------------


def test_teacher_labels_are_augmented_copies_labeled_by_the_teacher() -> None:
    x, soft = label_with_teacher(teacher_logits, 300, 7, images=SMALL_TRAIN.x,
                                 labels=SMALL_TRAIN.y, classes=10)
    again = label_with_teacher(teacher_logits, 300, 7, images=SMALL_TRAIN.x,
                               labels=SMALL_TRAIN.y, classes=10)
    assert x.tobytes() == again[0].tobytes() and soft.tobytes() == again[1].tobytes()
    # The same draws, written out here: every image once before any twice, then the pipeline.
    rng = np.random.default_rng([7, TEACHER_LABELS_STREAM])
    picks = np.concatenate([rng.permutation(256), rng.permutation(256)])[:300]
    want = Augment.parse(DIGITS_AUGMENT, classes=10)(SMALL_TRAIN.x[picks],
                                                     SMALL_TRAIN.y[picks], rng)[0]
    np.testing.assert_array_equal(x, want)
    np.testing.assert_allclose(soft, np.exp(log_softmax(teacher_logits(x))), rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-6)
    other = label_with_teacher(teacher_logits, 300, 8, images=SMALL_TRAIN.x,
                               labels=SMALL_TRAIN.y, classes=10)[0]
    assert not np.array_equal(other, x)


def test_teacher_labeled_samples_train_on_the_teachers_soft_labels(monkeypatch) -> None:
    fed = []
    runner = training._runner

    def recording(*args, **kwargs):
        inner = runner(*args, **kwargs)
        run_step = inner.run

        def run_and_record(batch, lr):
            fed.append((batch["x"].copy(), batch["target"].copy()))
            return run_step(batch, lr)

        inner.run = run_and_record
        return inner

    monkeypatch.setattr(training, "_runner", recording)
    n = 64
    teacher = Teacher(teacher_build, Distillation(teacher_labels=n, mode="graph"))
    training.train(student_build, SMALL_TRAIN, SMALL_TEST, TrainConfig(epochs=1, batch=32,
                   threads=1, seed=2), progress=False, teacher=teacher)
    extra_x, extra_soft = label_with_teacher(teacher_logits, n, 2, images=SMALL_TRAIN.x,
                                             labels=SMALL_TRAIN.y, classes=10)
    x_all = np.concatenate([SMALL_TRAIN.x, extra_x])
    targets = np.concatenate([one_hot(SMALL_TRAIN.y, 10), extra_soft])
    order = np.random.default_rng([2, 0]).permutation(256 + n)
    assert len(fed) == (256 + n) // 32
    for k, (xb, target) in enumerate(fed):
        index = order[32 * k:32 * (k + 1)]
        np.testing.assert_array_equal(xb, x_all[index])
        np.testing.assert_allclose(target, targets[index], rtol=1e-5, atol=1e-7)
    soft_rows = sum(int(np.sum(t.max(axis=1) < 1)) for _, t in fed)
    assert soft_rows == n - int(np.sum(extra_soft.max(axis=1) == 1))


def test_teacher_labels_from_an_unlabeled_file(tmp_path: Path) -> None:
    pool = np.random.default_rng(1).random((50, 64)).astype(np.float32)
    np.savez(tmp_path / "pool.npz", x=pool)
    x = read_unlabeled(str(tmp_path / "pool.npz"))
    extra, soft = label_with_teacher(lambda s: teacher_logits(s.reshape(-1, 1, 8, 8)), 20, 0,
                                     unlabeled=x.reshape(-1, 1, 8, 8))
    rng = np.random.default_rng([0, TEACHER_LABELS_STREAM])
    np.testing.assert_array_equal(extra.reshape(20, 64), pool[rng.permutation(50)[:20]])
    np.testing.assert_allclose(soft, np.exp(log_softmax(teacher_logits(extra))), rtol=1e-5,
                               atol=1e-7)
    np.savez(tmp_path / "bad.npz", images=pool, labels=np.zeros(50))
    with pytest.raises(UsageError, match=re.escape(
            "has no array 'x'; expected an .npz file with an array x of samples, got arrays "
            "images, labels")):
        read_unlabeled(str(tmp_path / "bad.npz"))
    with pytest.raises(UsageError, match="fewer samples than --teacher-labels"):
        label_with_teacher(teacher_logits, 60, 0, unlabeled=x.reshape(-1, 1, 8, 8))


def test_resume_needs_the_same_teacher(tmp_path: Path) -> None:
    from graphc.train.checkpoint import save_checkpoint

    teacher = Teacher(teacher_build, Distillation(T=2.0))
    config = TrainConfig(epochs=2, batch=32, threads=1)
    result = training.train(student_build, SMALL_TRAIN, SMALL_TEST, replace_epochs(config, 1),
                            progress=False, teacher=teacher)
    path = tmp_path / "s.ckpt"
    save_checkpoint(path, "student", result, config,
                    data={"distill": {"teacher": "teacher", **teacher.settings.record()}})
    ck = load_checkpoint(path)
    with pytest.raises(UsageError, match="distilled: resuming it needs its teacher"):
        resume(ck, student_build, SMALL_TRAIN, SMALL_TEST, progress=False)
    with pytest.raises(UsageError, match="settings differ from the checkpoint's"):
        resume(ck, student_build, SMALL_TRAIN, SMALL_TEST, progress=False,
               teacher=Teacher(teacher_build, Distillation(T=4.0)))
    resumed = resume(ck, student_build, SMALL_TRAIN, SMALL_TEST, progress=False,
                     teacher=teacher)
    whole = training.train(student_build, SMALL_TRAIN, SMALL_TEST, config, progress=False,
                           teacher=teacher)
    for name in model_state(student_build(32)):
        assert resumed.state[name].tobytes() == whole.state[name].tobytes(), name


def replace_epochs(config: TrainConfig, epochs: int) -> TrainConfig:
    from dataclasses import replace

    return replace(config, epochs=epochs)


# ----- the command line ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("teacher") / "teacher.ckpt"
    assert main(["train", "teacher", "--data", "digits", "--epochs", "1", "--threads", "1",
                 "-o", str(path)]) == 0
    return path


def test_cli_distills_and_resumes_with_the_recorded_teacher(teacher_ckpt, tmp_path, capsys,
                                                            monkeypatch):
    options = ["--data", "digits", "--teacher", f"teacher:{teacher_ckpt}", "--T", "2",
               "--alpha", "0.25", "--beta", "0.75", "--tau-squared", "--teacher-labels", "100",
               "--batch", "128", "--threads", "1"]
    whole, part = tmp_path / "whole.ckpt", tmp_path / "part.ckpt"
    teacher_bytes = teacher_ckpt.read_bytes()
    assert main(["train", "student", *options, "--epochs", "3", "-o", str(whole)]) == 0
    assert teacher_ckpt.read_bytes() == teacher_bytes
    out = capsys.readouterr().out
    assert f"  teacher        teacher from {teacher_ckpt} (epoch 1, " in out
    assert "  distillation   T 2, alpha 0.25, beta 0.75, T^2 on the soft term (Hinton)" in out
    assert ("  teacher labels 100 samples from augmented copies of training images, labeled "
            "softmax(z_t)") in out
    ck = load_checkpoint(whole)
    assert ck.data["distill"] == {"teacher": "teacher", "teacher_weights": str(teacher_ckpt),
                                  "T": 2.0, "alpha": 0.25, "beta": 0.75, "tau_squared": True,
                                  "mode": "auto", "teacher_labels": 100, "unlabeled": None}
    assert sorted(ck.state) == sorted(
        [*model_state(load("student").build()),
         *[k for k in ck.state if k.endswith((".velocity",))]])
    progress = training._progress

    def interrupt_in_epoch_3(batches, total, epoch, config, show):
        for k, item in enumerate(progress(batches, total, epoch, config, show)):
            if epoch == 2 and k == 1:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(training, "_progress", interrupt_in_epoch_3)
    assert main(["train", "student", *options, "--epochs", "3", "-o", str(part)]) == 130
    monkeypatch.setattr(training, "_progress", progress)
    assert load_checkpoint(part).epoch == 2
    assert main(["train", "student", "--resume", str(part)]) == 0
    a, b = load_checkpoint(whole), load_checkpoint(part)
    assert b.data == a.data
    for name in a.state:
        assert a.state[name].tobytes() == b.state[name].tobytes(), name
    capsys.readouterr()
    assert main(["train", "student", "--resume", str(part), "--teacher",
                 f"teacher:{teacher_ckpt}"]) == 2
    assert "--teacher cannot be given with --resume" in capsys.readouterr().err


def test_cli_unlabeled_file(teacher_ckpt, tmp_path, capsys):
    np.savez(tmp_path / "pool.npz", x=TEST.x[:80].reshape(80, 64))
    out_path = tmp_path / "s.ckpt"
    assert main(["train", "student", "--data", "digits", "--teacher", f"teacher:{teacher_ckpt}",
                 "--teacher-labels", "80", "--unlabeled", str(tmp_path / "pool.npz"),
                 "--epochs", "1", "--threads", "1", "-o", str(out_path)]) == 0
    assert f"80 samples from {tmp_path / 'pool.npz'} (its array x)" in capsys.readouterr().out
    assert load_checkpoint(out_path).data["distill"]["unlabeled"] == str(tmp_path / "pool.npz")


@pytest.mark.parametrize(("extra", "message"), [
    (["--T", "0"], "--T: the distillation temperature must be positive; expected T > 0, e.g. "
                   "4, got 0.0."),
    (["--T", "-1"], "--T: the distillation temperature must be positive"),
    (["--alpha", "-0.5"], "--alpha: the distillation weight alpha must be >= 0; expected "
                          "alpha >= 0, e.g. 0.5, got -0.5."),
    (["--beta", "-1"], "--beta: the distillation weight beta must be >= 0"),
    (["--alpha", "0", "--beta", "0"], "--alpha, --beta: the distillation weights alpha and "
                                      "beta are both 0; expected alpha + beta > 0"),
    (["--teacher-labels", "-3"], "--teacher-labels must be an integer >= 0"),
    (["--unlabeled", "pool.npz"], "--unlabeled needs --teacher-labels"),
    (["--teacher-mode", "inline"], "unknown teacher mode 'inline'"),
])
def test_bad_distillation_options_are_one_line(teacher_ckpt, tmp_path, capsys, monkeypatch,
                                               extra, message):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "student", "--data", "digits", "--teacher", f"teacher:{teacher_ckpt}",
                 *extra, "-o", "s.ckpt"]) == 2
    assert message in testing.one_error_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_bad_teachers_are_one_line(teacher_ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def error(*argv: str) -> str:
        assert main(["train", "student", "--data", "digits", *argv, "-o", "s.ckpt"]) == 2
        return testing.one_error_line(capsys.readouterr().err)

    assert "--T needs --teacher; expected --teacher TEACHER:CKPT" in error("--T", "4")
    assert "cannot read --teacher 'teacher'; expected TEACHER:CKPT" in error("--teacher",
                                                                            "teacher")
    assert (f"--teacher {teacher_ckpt} is a checkpoint of model 'teacher'; expected a "
            "checkpoint of 'cnn'") in error("--teacher", f"cnn:{teacher_ckpt}")
    # A teacher whose output is not the student's: 12 scores.
    (tmp_path / "wide.py").write_text(
        "from graphc import GraphBuilder, nn\n\n"
        "def build(seed=0, batch=1):\n"
        "    b = GraphBuilder('wide', seed=seed)\n"
        "    x = nn.flatten(b.input('x', (batch, 1, 8, 8)))\n"
        "    b.output(nn.linear(x, 12, name='fc'), 'logits')\n"
        "    return b.build()\n")
    from graphc.cli.common import build_at, load_module
    from graphc.train.checkpoint import save_checkpoint

    wide = build_at(load_module(str(tmp_path / "wide.py"), "train"), 0, 1)
    save_checkpoint(tmp_path / "wide.ckpt", "wide", training.TrainResult(model_state(wide)),
                    TrainConfig(epochs=1), data={"data": "digits"})
    assert ("--teacher: the teacher's output does not fit the student's; expected (64, 10) "
            "like student's logits, got (64, 12) (wide's logits).") in error(
        "--teacher", f"{tmp_path / 'wide.py'}:{tmp_path / 'wide.ckpt'}")
    np.savez(tmp_path / "pool.npz", images=np.zeros((4, 64)))
    assert "has no array 'x'; expected an .npz file with an array x of samples, got arrays " \
           "images" in error("--teacher", f"teacher:{teacher_ckpt}", "--teacher-labels", "4",
                             "--unlabeled", str(tmp_path / "pool.npz"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.npz", "wide.ckpt", "wide.py"]
