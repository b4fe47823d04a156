"""Run a compiled training step again and again, carrying its state from step to step.

``OrtRunner`` runs the step on onnxruntime. The carried state (parameters, optimizer state,
running statistics) lives in two sets of onnxruntime buffers used alternately: one step reads
set A and writes set B, the next reads B and writes A, through two ``IOBinding`` objects made
once. Per step only the batch, the dropout masks, the learning rate and the step count are
bound; nothing else is copied. ``InterpreterRunner`` runs the same step on graphc's numpy
interpreter: the reference the tests compare onnxruntime with.

>>> import numpy as np
>>> from graphc.models import load
>>> from graphc.train.optim import SGD
>>> from graphc.train.step import compile_step
>>> spec = compile_step(load("mlp_tiny").build(batch=4), SGD(lr=0.1), loss="mse")
>>> ort, ref = OrtRunner(spec), InterpreterRunner(spec)
>>> x = np.random.default_rng(0).standard_normal((4, 2), dtype=np.float32)
>>> y = np.array([[0], [1], [1], [0]], dtype=np.float32)
>>> a, b = ort.run({"x": x, "target": y}, lr=0.1), ref.run({"x": x, "target": y}, lr=0.1)
>>> bool(abs(a.loss - b.loss) < 1e-6)
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphc.errors import GraphcError
from graphc.interpret import run
from graphc.ir import Value
from graphc.onnxio.export import to_bytes
from graphc.onnxio.runtime import session
from graphc.train.fpenv import FlushToZero
from graphc.train.step import StepSpec


@dataclass
class StepResult:
    """What one step returns besides the new state: the loss and the model's prediction."""

    loss: float
    prediction: np.ndarray


class Runner:
    """Runs ``spec``'s step from ``state`` (default: ``spec.initial``)."""

    def __init__(self, spec: StepSpec, state: Mapping[str, np.ndarray] | None = None) -> None:
        self.spec = spec
        self.steps = 0
        start = dict(spec.initial)
        for name, value in (state or {}).items():
            if name not in spec.state:
                continue
            want = spec.state[name]
            if np.shape(value) != want:
                raise GraphcError(f"state {name!r} has the wrong shape", expected=want,
                                  got=np.shape(value), hint="Resume from a checkpoint of the "
                                  "same model and optimizer.")
            start[name] = np.asarray(value, dtype=spec.initial[name].dtype)
        self._start = start

    def _feeds(self, batch: Mapping[str, Any], lr: float) -> dict[str, Any]:
        """Return the step's feeds besides the carried state; the step count is the next one
        (``self.steps`` counts a step once it has run)."""
        needed = self.spec.batch_inputs + self.spec.masks + list(self.spec.features)
        missing = [n for n in needed if n not in batch]
        if missing:
            raise GraphcError(f"the training step needs {missing[0]!r}",
                              expected=", ".join(needed), got=", ".join(batch) or "nothing",
                              hint="Draw the dropout masks and feature augmentation inputs "
                                   "with spec.random_inputs(rng, target).")
        extra = sorted(set(batch) - set(needed))
        if extra:
            raise GraphcError(f"the training step has no input {extra[0]!r}",
                              expected=", ".join(needed), got=", ".join(batch))
        feeds = dict(batch)
        feeds["lr"] = np.float32(lr)
        feeds["step"] = np.float32(self.steps + 1)
        return feeds

    def run(self, batch: Mapping[str, Any], lr: float) -> StepResult:
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        """Return copies of the carried state after the last step."""
        raise NotImplementedError


class InterpreterRunner(Runner):
    """The step on graphc's numpy interpreter."""

    def __init__(self, spec: StepSpec, state: Mapping[str, np.ndarray] | None = None) -> None:
        super().__init__(spec, state)
        self._state = dict(self._start)

    def run(self, batch: Mapping[str, Any], lr: float) -> StepResult:
        out = run(self.spec.graph, {**self._feeds(batch, lr), **self._state})
        self.steps += 1
        for name in self.spec.state:
            self._state[name] = out[self.spec.next_name(name)]
        names = self.spec.graph.output_names()
        return StepResult(float(out[names[0]]), out[names[1]])

    def state(self) -> dict[str, np.ndarray]:
        return {k: np.array(v) for k, v in self._state.items()}


class OrtRunner(Runner):
    """The step on onnxruntime (CPU), state kept in two buffer sets used alternately."""

    def __init__(self, spec: StepSpec, state: Mapping[str, np.ndarray] | None = None, *,
                 threads: int | None = None, opset: int | None = None) -> None:
        import onnxruntime as ort

        super().__init__(spec, state)
        # Subnormal optimizer state is slow on CPUs: flush it to zero in the steps (see fpenv).
        self._ftz = FlushToZero()
        config = {"session.set_denormal_as_zero": "1"} if self._ftz.available else None
        try:
            with self._ftz.preserve():
                self.session = session(to_bytes(spec.graph, opset), threads, config=config)
        except Exception as err:  # onnxruntime raises its own exception types
            raise GraphcError("onnxruntime cannot run this training step",
                              where=f"graph {spec.graph.name}",
                              got=str(err).strip().splitlines()[0][:300],
                              hint="Train in float32, or with the interpreter backend.") from None
        g = spec.graph
        names = g.output_names()
        self._loss_name, self._pred_name = names[0], names[1]
        ortvalue = ort.OrtValue.ortvalue_from_numpy
        sets = [{n: ortvalue(np.array(v)) for n, v in self._start.items()},
                {n: ortvalue(np.empty_like(v)) for n, v in self._start.items()}]
        self._sets = sets
        self._loss = ortvalue(np.zeros(g.type_of(g.outputs[0]).shape,
                                       g.type_of(g.outputs[0]).dtype))
        self._pred = ortvalue(np.zeros(g.type_of(g.outputs[1]).shape,
                                       g.type_of(g.outputs[1]).dtype))
        self._bindings = []
        for src, dst in ((0, 1), (1, 0)):
            binding = self.session.io_binding()
            for name in spec.state:
                binding.bind_ortvalue_input(name, sets[src][name])
                binding.bind_ortvalue_output(spec.next_name(name), sets[dst][name])
            binding.bind_ortvalue_output(self._loss_name, self._loss)
            binding.bind_ortvalue_output(self._pred_name, self._pred)
            self._bindings.append(binding)
        self._current = 0
        self._types = {n: g.type_of(Value(n)) for n in g.inputs}

    def run(self, batch: Mapping[str, Any], lr: float) -> StepResult:
        feeds = self._feeds(batch, lr)
        binding = self._bindings[self._current]
        arrays = {}
        for name, value in feeds.items():
            t = self._types[name]
            array = np.asarray(value, dtype=t.dtype, order="C")
            if array.shape != t.shape:
                raise GraphcError(f"step input {name!r} has the wrong shape", expected=t.shape,
                                  got=array.shape, hint="Drop the last partial batch or "
                                  "compile the step for its size.")
            arrays[name] = array
        for name, array in arrays.items():
            binding.bind_cpu_input(name, array)
        with self._ftz:
            self.session.run_with_iobinding(binding)
        self.steps += 1
        self._current = 1 - self._current
        return StepResult(float(self._loss.numpy()), self._pred.numpy().copy())

    def state(self) -> dict[str, np.ndarray]:
        current = self._sets[self._current]
        return {n: np.array(current[n].numpy()) for n in self.spec.state}
