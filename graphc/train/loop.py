"""The training loop: compiled steps on onnxruntime, per-epoch metrics, the curves.

``train(build, train_set, test_set, config)`` compiles the model's training step
(``graphc.train.step``), runs it over shuffled batches for ``config.epochs`` epochs and evaluates
the test set after each epoch with the running statistics (inference mode). Everything random
(batch order, dropout masks, augmentation) is drawn from the seed and the epoch number, so a
run resumed from a checkpoint (``graphc.train.checkpoint``: written by ``on_epoch``, continued
by ``resume``) continues exactly as if it had not stopped.

Pruning: ``config.penalty`` adds l1, l2 or group-lasso penalties (``graphc.train.penalties``) on
every Conv, Gemm and MatMul weight to the loss, and ``masks`` keeps pruned weights at exactly
zero while the rest trains (``graphc.train.checkpoint.sparse_masks`` reads a pruned
checkpoint's).

Distillation: ``teacher`` (``graphc.train.distill.Teacher``) trains the student with the
course's distillation loss against the frozen teacher's logits, and extends the training set
with ``teacher_labels`` samples labeled by the teacher's soft outputs.

>>> from graphc.train.data import make_blobs_dataset
>>> from graphc.models import load
>>> data = make_blobs_dataset(240, classes=3, features=2, seed=0)
>>> train_set, test_set = data.split(0.25, seed=0)
>>> build = lambda batch: load("mlp_tiny").build(batch=batch)
>>> result = train(build, train_set, test_set, TrainConfig(epochs=2, batch=16), progress=False)
Traceback (most recent call last):
...
graphc.errors.UsageError: the model's output does not fit the data; expected (16, 3) \
(one score per class), got (16, 1). Give the model one output per class (see transfer \
learning in docs/training.md).
"""

from __future__ import annotations

import fnmatch
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from graphc.errors import GraphcError, UsageError, unknown
from graphc.files import write_figure
from graphc.ir import CONST, Graph, Value
from graphc.train.augment import Augment
from graphc.train.conventions import DROPOUT_SCALINGS, with_dropout_scaling
from graphc.train.data import Dataset, one_hot
from graphc.train.distill import Distillation, Teacher, check_teacher, label_with_teacher
from graphc.train.extend import Extend
from graphc.train.optim import SGD, Adam, Optimizer, schedule_from_spec
from graphc.train.penalties import Penalty, layer_weights, parse_penalty, penalty_spec
from graphc.train.runner import InterpreterRunner, OrtRunner, Runner
from graphc.train.step import FeatureAugment, StepSpec, apply_state, compile_step

OPTIMIZERS = ("sgd", "adam")
BACKENDS = ("onnxruntime", "interpreter")
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3}

Build = Callable[[int], Graph]

# The random stream of a run's data set extension: np.random.default_rng([seed, EXTEND_STREAM])
# (epochs draw from [seed, epoch]; an epoch count never reaches this).
EXTEND_STREAM = 1 << 30


@dataclass(frozen=True)
class TrainConfig:
    """How to train. ``lr`` None is 0.05 for SGD and 0.001 for Adam; ``schedule`` is
    ``constant``, ``cosine`` (over the epochs) or ``step:SIZE,GAMMA``; ``freeze`` holds glob
    patterns of parameter names not to train, until epoch ``unfreeze_at`` (if given);
    ``penalty`` holds ``KIND[:WEIGHT]`` specs (``l1``, ``l2``, ``group-l1``, ``group-l2``),
    each added to the loss over every trained Conv, Gemm and MatMul weight, and is kept in the
    canonical ``KIND:WEIGHT`` form (the default weight filled in). ``extend`` adds new samples
    (``graphc.train.extend``); ``dropout_scaling="test"`` trains the model's inverted Dropout
    layers in the course's convention (``graphc.train.conventions``)."""

    epochs: int = 30
    batch: int = 64
    lr: float | None = None
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    seed: int = 0
    augment: str = ""
    feature_augment: tuple[str, ...] = ()
    extend: str = ""
    dropout_scaling: str = "train"
    loss: str = "cross_entropy"
    freeze: tuple[str, ...] = ()
    unfreeze_at: int | None = None
    backend: str = "onnxruntime"
    threads: int | None = None
    penalty: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        kinds = [parse_penalty(spec) for spec in self.penalty]
        twice = sorted({k for k, _ in kinds if [k2 for k2, _ in kinds].count(k) > 1})
        if twice:
            raise UsageError(f"penalty {twice[0].replace('_', '-')!r} is given twice",
                             where="--penalty", expected="each kind of penalty once",
                             got=" ".join(self.penalty))
        # Frozen dataclass: the canonical specs are set once, here.
        object.__setattr__(self, "penalty", tuple(penalty_spec(k, w) for k, w in kinds))
        if self.optimizer not in OPTIMIZERS:
            raise unknown("optimizer", self.optimizer, OPTIMIZERS, cls=UsageError)
        if self.backend not in BACKENDS:
            raise unknown("backend", self.backend, BACKENDS, cls=UsageError)
        for what, value in (("epochs", self.epochs), ("batch", self.batch),
                            ("threads", 1 if self.threads is None else self.threads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{what} must be a positive integer", where=f"--{what}",
                                 expected="an int >= 1", got=repr(value))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UsageError("the seed must be an integer >= 0", where="--seed",
                             expected="an int >= 0", got=repr(self.seed))
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise UsageError("the learning rate must be a positive number", where="--lr",
                             expected="a number > 0, e.g. 0.05", got=repr(self.lr))
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise UsageError("the momentum must be in [0, 1)", where="--momentum",
                             expected="a number in [0, 1), e.g. 0.9", got=repr(self.momentum))
        Extend.parse(self.extend)
        if self.dropout_scaling not in DROPOUT_SCALINGS:
            raise unknown("dropout scaling", self.dropout_scaling, DROPOUT_SCALINGS,
                          cls=UsageError, where="--dropout-scaling")
        self.make_optimizer()  # the optimizer checks the rest
        schedule_from_spec(self.schedule, self.learning_rate, total=self.epochs)

    @property
    def learning_rate(self) -> float:
        return DEFAULT_LR[self.optimizer] if self.lr is None else float(self.lr)

    def make_optimizer(self) -> Optimizer:
        if self.optimizer == "adam":
            return Adam(lr=self.learning_rate, weight_decay=self.weight_decay)
        return SGD(lr=self.learning_rate, momentum=self.momentum,
                   weight_decay=self.weight_decay)


@dataclass(frozen=True)
class EpochLog:
    """One epoch: mean training loss, training accuracy (on the augmented batches, with
    dropout), test accuracy (inference mode), learning rate and wall time."""

    epoch: int
    loss: float
    train_accuracy: float
    test_accuracy: float
    lr: float
    seconds: float

    def line(self, epochs: int) -> str:
        return (f"epoch {self.epoch:>3}/{epochs}  loss {self.loss:.4f}  "
                f"train {100 * self.train_accuracy:6.2f}%  test {100 * self.test_accuracy:6.2f}%"
                f"  lr {self.lr:.4g}  {self.seconds:.2f} s")


@dataclass
class TrainResult:
    """The trained state (parameters, running statistics, optimizer state), the history and
    the number of steps taken."""

    state: dict[str, np.ndarray]
    history: list[EpochLog] = field(default_factory=list)
    steps: int = 0

    @property
    def test_accuracy(self) -> float:
        return self.history[-1].test_accuracy if self.history else math.nan


# ----- data and evaluation ------------------------------------------------------------------


def fit_data(data: Dataset, shape: Sequence[int], where: str) -> np.ndarray:
    """Return the samples of ``data`` reshaped to the model input's per-sample ``shape``."""
    per_sample = tuple(shape[1:])
    if int(np.prod(data.x.shape[1:])) != int(np.prod(per_sample)):
        raise UsageError("the data does not fit the model's input", where=where,
                         expected=f"samples of shape {per_sample}",
                         got=f"samples of shape {data.x.shape[1:]}")
    return data.x.reshape((len(data), *per_sample))


def predict_in_batches(one_batch: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
                       batch: int, dtype: Any) -> np.ndarray:
    """Return ``one_batch`` applied to ``x`` in batches of exactly ``batch`` samples (the last
    one padded with zeros, its padding dropped from the result), as ``dtype``."""
    out = []
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        padded = np.zeros((batch, *x.shape[1:]), dtype)
        padded[:len(chunk)] = chunk
        out.append(one_batch(padded)[:len(chunk)])
    return np.concatenate(out)


def require_all(names: Sequence[str], state: Mapping[str, Any], what: str, *,
                expected: str, hint: str | None = None) -> None:
    """Raise GraphcError ``what`` naming the first of ``names`` that ``state`` lacks."""
    missing = [n for n in names if n not in state]
    if missing:
        raise GraphcError(what.format(count=len(missing)), expected=expected,
                          got=f"none for {', '.join(missing[:3])}"
                              f"{', ...' if len(missing) > 3 else ''}", hint=hint)


class Evaluator:
    """Predicts with the inference form of the model, fed the current state, on onnxruntime
    (or the interpreter), in chunks of the compiled batch size."""

    def __init__(self, forward: Graph, state_names: Sequence[str], backend: str,
                 threads: int | None) -> None:
        g = forward.copy(f"{forward.name}_eval")
        self.names = [n for n in dict.fromkeys(state_names) if n in g.nx and g.op(n) == CONST]
        for name in self.names:
            g.const_to_input(name)
        self.graph = g
        self.input = g.inputs[0]
        self.batch = g.type_of(Value(self.input)).shape[0]
        self.backend = backend
        if backend == "onnxruntime":
            from graphc.onnxio.runtime import session

            self.session = session(g, threads)
            self.output = self.session.get_outputs()[0].name

    def predict(self, x: np.ndarray, state: Mapping[str, np.ndarray]) -> np.ndarray:
        from graphc.interpret import run

        feeds = {n: state[n] for n in self.names}

        def one_batch(chunk: np.ndarray) -> np.ndarray:
            feeds[self.input] = chunk
            if self.backend == "onnxruntime":
                return self.session.run([self.output], feeds)[0]
            return run(self.graph, feeds)[self.graph.output_names()[0]]

        dtype = self.graph.type_of(Value(self.input)).dtype
        return predict_in_batches(one_batch, x, self.batch, dtype)

    def accuracy(self, data: Dataset, state: Mapping[str, np.ndarray]) -> float:
        x = fit_data(data, self.graph.type_of(Value(self.input)).shape, "evaluation")
        return float(np.mean(np.argmax(self.predict(x, state), axis=1) == data.y))


# ----- the loop -----------------------------------------------------------------------------


def model_state(g: Graph) -> dict[str, np.ndarray]:
    """Return the values of ``g``'s parameters and BatchNormalization running statistics."""
    names = list(g.params())
    for node in g.op_nodes():
        if g.op(node) == "BatchNormalization":
            names += [v.node for v in g.in_values(node)[3:5]
                      if v is not None and g.op(v.node) == CONST]
    return {n: g.nx.nodes[n]["value"] for n in dict.fromkeys(names)}


def frozen_params(g: Graph, patterns: Sequence[str]) -> list[str]:
    """Return the parameters matching any glob pattern (``block*``, ``fc.weight``)."""
    params = g.params()
    chosen = []
    for pattern in patterns:
        hits = [p for p in params if fnmatch.fnmatchcase(p, pattern)]
        if not hits:
            raise unknown("parameter pattern", pattern, params, cls=UsageError,
                          where="freeze")
        chosen += [p for p in hits if p not in chosen]
    return chosen


def _runner(spec: StepSpec, state: Mapping[str, np.ndarray], steps: int,
            config: TrainConfig) -> Runner:
    if config.backend == "interpreter":
        runner: Runner = InterpreterRunner(spec, state)
    else:
        runner = OrtRunner(spec, state, threads=config.threads)
    runner.steps = steps
    return runner


def penalties(forward: Graph, config: TrainConfig, frozen: Sequence[str] = ()
              ) -> list[Penalty]:
    """Return the penalties of ``config`` over ``forward``'s Conv, Gemm and MatMul weights
    that are not ``frozen`` (a penalty on a constant would only shift the loss).

    >>> from graphc.models import load
    >>> penalties(load("mlp").build(), TrainConfig(penalty=("l1:0.001",)), ["fc3.weight"])
    [Penalty(kind='l1', weight=0.001, params=('fc1.weight', 'fc2.weight'))]
    """
    chosen = tuple(w for w in layer_weights(forward) if w not in set(frozen))
    if config.penalty and not chosen:
        raise UsageError("the penalty has no weight to act on", where="--penalty",
                         expected="a trained Conv, Gemm or MatMul weight",
                         got="none" if not frozen else f"all of them frozen ({len(frozen)})")
    return [Penalty(*parse_penalty(spec), chosen) for spec in config.penalty]


def _compile(forward: Graph, config: TrainConfig, frozen: Sequence[str],
             masks: Mapping[str, np.ndarray], distill: Distillation | None = None,
             teacher: Graph | None = None) -> StepSpec:
    features = [FeatureAugment.parse(s) for s in config.feature_augment]
    return compile_step(forward, config.make_optimizer(), loss=config.loss, frozen=frozen,
                        features=features, penalties=penalties(forward, config, frozen),
                        masks=masks, distill=distill, teacher=teacher)


class _TeacherFeed:
    """The teacher's side of a distilled run: its logits for a batch when the step does not
    compute them itself (``separate``; cached for the whole run when the inputs are the same
    every epoch), and the teacher-labeled samples that extend the training set."""

    def __init__(self, teacher: Teacher, forward: Graph, train_set: Dataset,
                 config: TrainConfig, augmented: bool) -> None:
        self.settings = teacher.settings
        self.graph = teacher.build(config.batch)
        check_teacher(self.graph, forward)
        self.sample_shape = forward.type_of(Value(forward.inputs[0])).shape[1:]
        self._batch: Evaluator | None = None
        self._whole: Evaluator | None = None
        self._build, self._config = teacher.build, config
        self.mode = self.settings.resolved(augmented)
        n = self.settings.teacher_labels
        self.extra_x = np.zeros((0, *train_set.x.shape[1:]), np.float32)
        self.extra_soft = np.zeros((0, train_set.classes), np.float32)
        if n:
            unlabeled = teacher.unlabeled
            per_sample = train_set.x.shape[1:]
            if unlabeled is not None:
                if int(np.prod(unlabeled.shape[1:])) != int(np.prod(per_sample)):
                    raise UsageError("the unlabeled samples do not fit the data",
                                     where="--unlabeled", expected=f"samples of shape "
                                     f"{per_sample}", got=f"samples of shape {unlabeled.shape[1:]}")
                unlabeled = unlabeled.reshape((len(unlabeled), *per_sample))
            self.extra_x, self.extra_soft = label_with_teacher(
                self.predict, n, config.seed, images=train_set.x, labels=train_set.y,
                unlabeled=unlabeled, classes=train_set.classes)
        self.cache: np.ndarray | None = None
        if self.mode == "separate" and not augmented:
            self.cache = self.predict(np.concatenate([train_set.x, self.extra_x]))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The teacher's logits for samples ``x`` (in the data's layout), in big batches."""
        if self._whole is None:
            self._whole = Evaluator(self._build(256), [], self._config.backend,
                                    self._config.threads)
        return self._whole.predict(x.reshape((len(x), *self.sample_shape)), {})

    def logits(self, xb: np.ndarray, index: np.ndarray) -> np.ndarray:
        """The teacher's logits for one batch ``xb`` (the step's input) at ``index``."""
        if self.cache is not None:
            return self.cache[index]
        if self._batch is None:
            self._batch = Evaluator(self.graph, [], self._config.backend, self._config.threads)
        return self._batch.predict(xb, {})


def _check_output(forward: Graph, data: Dataset, batch: int) -> None:
    want = (batch, data.classes)
    got = forward.type_of(forward.outputs[0]).shape
    if got != want:
        raise UsageError("the model's output does not fit the data",
                         expected=f"{want} (one score per class)", got=got,
                         hint="Give the model one output per class (see transfer learning in "
                              "docs/training.md).")


def _scaled_build(build: Build, scaling: str) -> Build:
    def scaled(batch: int) -> Graph:
        return with_dropout_scaling(build(batch), scaling)

    return scaled


def train(build: Build, train_set: Dataset, test_set: Dataset, config: TrainConfig, *,
          state: Mapping[str, np.ndarray] | None = None, start_epoch: int = 0,
          steps: int = 0, history: Sequence[EpochLog] = (), progress: bool = True,
          on_epoch: Callable[[TrainResult], None] | None = None,
          masks: Mapping[str, np.ndarray] | None = None,
          teacher: Teacher | None = None) -> TrainResult:
    """Train ``build(batch)``'s model and return the result.

    ``state`` starts from given weights (a checkpoint's: parameters, running statistics and
    optimizer state, all optional); ``start_epoch``, ``steps`` and ``history`` resume a run.
    ``on_epoch`` is called after every epoch (to write a checkpoint). ``masks`` maps
    parameters to 0/1 arrays of their shape: the weights under a 0 are set to 0 before the
    first step and stay exactly 0 (``compile_step``'s masks). ``teacher`` distills: the loss is
    ``teacher.settings``' distillation loss against the frozen teacher's logits, and its
    ``teacher_labels`` samples, labeled by the teacher, join the training set.
    """
    masks = dict(masks or {})
    if config.dropout_scaling != "train":
        build = _scaled_build(build, config.dropout_scaling)
    forward = build(config.batch)
    if len(forward.inputs) != 1:
        raise UsageError("training feeds the data to one model input",
                         where=f"graph {forward.name}", expected="a model with one input",
                         got=f"inputs {', '.join(forward.inputs)}",
                         hint="Build the other inputs as constants, or drive "
                              "graphc.train.step.compile_step and a runner yourself.")
    eval_forward = build(min(len(test_set), 256)) if len(test_set) else forward
    _check_output(forward, train_set, config.batch)
    if masks:
        # The stored weights are what the step computes with: w * mask, zero under the mask;
        # so is their optimizer state (a pruned checkpoint's momentum would not be).
        start = {**model_state(forward), **(state or {})}
        state = dict(state or {})
        for name, mask in masks.items():
            slots = [k for k in state if k.startswith(f"{name}.")] if name in start else []
            for key in [name, *slots]:
                value = np.asarray(start[key])
                if value.shape == np.shape(mask):
                    state[key] = (value * np.asarray(mask)).astype(value.dtype)
    if state:
        forward = apply_state(forward, state)
        eval_forward = apply_state(eval_forward, state)
    sample_shape = fit_data(train_set, forward.type_of(Value(forward.inputs[0])).shape,
                            "training").shape[1:]
    x_dtype = forward.type_of(Value(forward.inputs[0])).dtype
    pred_dtype = forward.type_of(forward.outputs[0]).dtype
    if len(train_set) < config.batch:
        raise UsageError("fewer training samples than one batch", expected=f">= {config.batch}",
                         got=len(train_set), hint="Use a smaller --batch.")
    frozen = frozen_params(forward, config.freeze)
    if config.unfreeze_at is not None and start_epoch >= config.unfreeze_at:
        frozen = []
    augment = Augment.parse(config.augment, classes=train_set.classes)
    feed = (_TeacherFeed(teacher, forward, train_set, config, bool(augment.steps))
            if teacher is not None else None)
    distill = teacher.settings if teacher is not None else None
    inside = feed.graph if feed is not None and feed.mode == "graph" else None
    spec = _compile(forward, config, frozen, masks, distill, inside)
    if start_epoch:
        require_all([*model_state(forward), *spec.state], state or {},
                    f"cannot resume after epoch {start_epoch}: the state has no values for "
                    "{count} weights or optimizer slots",
                    expected="the complete state of a checkpoint")
    # The whole model (every parameter and running statistic, trained or frozen), so that
    # checkpoints hold it and the evaluator always reads the current values.
    current = model_state(forward)
    current.update(spec.initial)
    current.update({k: np.asarray(v) for k, v in (state or {}).items()})
    runner = _runner(spec, current, steps, config)
    evaluator = Evaluator(eval_forward, list(current), config.backend, config.threads)
    schedule = schedule_from_spec(config.schedule, config.learning_rate, total=config.epochs)
    x_all, y_all, soft_all = train_set.x, train_set.y, None
    if feed is not None and len(feed.extra_x):
        x_all = np.concatenate([train_set.x, feed.extra_x])
        y_all = np.concatenate([train_set.y, np.argmax(feed.extra_soft, axis=1)])
        soft_all = np.concatenate([one_hot(train_set.y, train_set.classes), feed.extra_soft])
    if config.extend and feed is not None:
        raise UsageError("extend the data set of a distilled student with its teacher",
                         where="--extend", expected="--teacher-labels N (new samples the "
                         "teacher labels)", got=f"--extend {config.extend} with --teacher",
                         hint="Drop --extend, or train without --teacher.")
    if config.extend:
        # New samples, drawn once from the seed; a foreign object (uniform label) has no class
        # (-1) and does not count in the training accuracy.
        new_x, new_soft = Extend.parse(config.extend)(train_set, np.random.default_rng(
            [config.seed, EXTEND_STREAM]))
        hard = np.where(new_soft.max(axis=1) == 1.0, np.argmax(new_soft, axis=1), -1)
        soft_all = np.concatenate([one_hot(y_all, train_set.classes) if soft_all is None
                                   else soft_all, new_soft])
        x_all = np.concatenate([x_all, new_x.astype(x_all.dtype)])
        y_all = np.concatenate([y_all, hard])
    result = TrainResult(current, list(history), steps)
    for epoch in range(start_epoch, config.epochs):
        if config.unfreeze_at is not None and epoch == config.unfreeze_at and spec.frozen:
            forward = apply_state(forward, runner.state())
            spec = _compile(forward, config, [], masks, distill, inside)
            runner = _runner(spec, {**runner.state()}, runner.steps, config)
        started = time.perf_counter()
        lr = schedule(epoch)
        rng = np.random.default_rng([config.seed, epoch])
        losses, correct, seen = [], 0, 0
        # The order Dataset.batches(seed=rng, drop_last=True) draws, with the indices kept.
        order = rng.permutation(len(y_all))
        stop = len(order) - len(order) % config.batch
        batches = (order[s:s + config.batch] for s in range(0, stop, config.batch))
        bar = _progress(batches, len(order) // config.batch, epoch, config, progress)
        for index in bar:
            xb, yb = x_all[index], y_all[index]
            labels = yb if soft_all is None else soft_all[index]
            # Augment in the data's own layout (images stay images for an MLP), then reshape.
            xb, soft = augment(xb, labels, rng) if augment.steps else (xb, labels)
            xb = xb.reshape((len(xb), *sample_shape)).astype(x_dtype, copy=False)
            target = soft if soft.ndim == 2 else one_hot(soft, train_set.classes)
            extra, target = spec.random_inputs(rng, target.astype(pred_dtype))
            if "teacher_logits" in spec.batch_inputs:
                extra["teacher_logits"] = feed.logits(xb, index)
            out = runner.run({spec.batch_inputs[0]: xb, "target": target, **extra}, lr)
            if not math.isfinite(out.loss):
                raise GraphcError(f"the loss became {out.loss} in epoch {epoch + 1}",
                                  hint="Lower the learning rate (--lr).")
            losses.append(out.loss)
            correct += int(np.sum(np.argmax(out.prediction, axis=1) == yb))
            seen += int(np.sum(yb >= 0))
            if hasattr(bar, "set_postfix_str"):
                bar.set_postfix_str(f"loss {out.loss:.4f}")
        result.state = {**result.state, **runner.state()}
        test_acc = evaluator.accuracy(test_set, result.state) if len(test_set) else math.nan
        log = EpochLog(epoch + 1, float(np.mean(losses)), correct / max(seen, 1), test_acc, lr,
                       time.perf_counter() - started)
        result.history.append(log)
        result.steps = runner.steps
        if progress:
            print(log.line(config.epochs), flush=True)  # the log: stdout; bars: stderr
        if on_epoch is not None:
            on_epoch(result)
    return result


def _progress(batches: Any, total: int, epoch: int, config: TrainConfig, progress: bool) -> Any:
    if not progress:
        return batches
    from tqdm import tqdm

    return tqdm(batches, total=total, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                unit="step", file=sys.stderr, disable=not sys.stderr.isatty())


# ----- curves -------------------------------------------------------------------------------


def plot_history(history: Sequence[EpochLog], path: str | Path, title: str = "") -> None:
    """Draw loss and accuracy per epoch into an image file (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h.epoch for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax_loss.plot(epochs, [h.loss for h in history], marker="o", ms=3)
    ax_loss.set(xlabel="epoch", ylabel="training loss", yscale="log")
    ax_acc.plot(epochs, [100 * h.train_accuracy for h in history], marker="o", ms=3,
                label="train (augmented, dropout)")
    ax_acc.plot(epochs, [100 * h.test_accuracy for h in history], marker="o", ms=3,
                label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)")
    ax_acc.legend(loc="lower right")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    write_figure(fig, path, dpi=110)
