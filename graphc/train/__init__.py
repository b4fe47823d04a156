"""Training: the compiled step, its runners, the loop, and what they need.

- ``step``: forward + loss + backward + optimizer update as one graph (``compile_step``);
- ``runner``: run steps on onnxruntime (``OrtRunner``) or the interpreter;
- ``penalties``: l1, l2 and group-lasso penalties on layer weights, added to the loss;
- ``loop``: epochs, evaluation, the curves (``train``);
- ``checkpoint``: checkpoints written, read and resumed (``save_checkpoint``,
  ``load_checkpoint``, ``resume``);
- ``losses``, ``optim``: loss functions written in the DSL; SGD and Adam with schedules;
- ``data``, ``augment``: the digits data set and synthetic sets; augmentation;
- ``transfer``: replacing a model's head for transfer learning.

>>> from graphc import GraphBuilder, nn
>>> from graphc.train.data import make_blobs_dataset
>>> def build(batch):
...     b = GraphBuilder("linear")
...     b.output(nn.linear(b.input("x", (batch, 2)), 3, name="fc"), "scores")
...     return b.build()
>>> train_set, test_set = make_blobs_dataset(240, classes=3, features=2, seed=0).split(0.25)
>>> result = train(build, train_set, test_set, TrainConfig(epochs=3, batch=16), progress=False)
>>> len(result.history), result.test_accuracy > 0.9
(3, True)
"""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use, so that importing one module of the package (graphc.train.temperature
# for ``graphc explain``) does not import the loop, its runners and onnx.
_LAZY = {"Checkpoint": "graphc.train.checkpoint", "load_checkpoint": "graphc.train.checkpoint",
         "resume": "graphc.train.checkpoint", "save_checkpoint": "graphc.train.checkpoint",
         "TrainConfig": "graphc.train.loop", "TrainResult": "graphc.train.loop",
         "train": "graphc.train.loop"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'graphc.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = ["Checkpoint", "TrainConfig", "TrainResult", "load_checkpoint", "resume",
           "save_checkpoint", "train"]
