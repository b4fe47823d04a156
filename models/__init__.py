"""The model zoo: small teaching networks and a few reference models, written in the DSL.

Every model module exposes ``build(seed=0) -> Graph`` and ``example_inputs(seed=0)`` (a dict of
input name -> array). ``MODELS`` lists them in the order ``graphc show`` and the docs use.

>>> from graphc.models import load
>>> load("backprop_example").build().output_names()
['f']
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from graphc.errors import GraphcError, unknown

if TYPE_CHECKING:
    import numpy as np

MODELS = [
    "backprop_example",
    "neuron",
    "mlp_tiny",
    "mlp",
    "lenet5",
    "cnn",
    "residual",
    "teacher",
    "student",
    "resnet18",
]


def load(name: str) -> ModuleType:
    """Return the zoo module ``name`` (an unknown name lists the known ones)."""
    if name not in MODELS:
        raise unknown("model", name, MODELS, where="model zoo")
    return importlib.import_module(f"graphc.models.{name}")


def summary(name: str) -> str:
    """Return the first line of zoo model ``name``'s docstring, read from its file: listing the
    zoo imports no model (nor the DSL, networkx and numpy that a model needs).

    >>> summary("mlp_tiny")
    'A 2-2-1 sigmoid MLP: the smallest network on which backprop shows every step.'
    """
    if name not in MODELS:
        raise unknown("model", name, MODELS, where="model zoo")
    source = Path(__file__).with_name(f"{name}.py").read_text(encoding="utf-8")
    return (ast.get_docstring(ast.parse(source)) or "").strip().split("\n")[0]


def load_file(path: str | Path) -> ModuleType:
    """Import a user's ``.py`` model file; it must define ``build()``."""
    path = Path(path)
    if not path.is_file():
        raise GraphcError(f"model file {str(path)!r} does not exist",
                          hint="Give a zoo model name (see `graphc models`) or a .py file.")
    module_name = f"graphc_user_model_{abs(hash(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise GraphcError(f"cannot import {str(path)!r} as Python", expected="a .py file",
                          got=path.suffix or "no suffix")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    if not callable(getattr(module, "build", None)):
        raise GraphcError(f"{path} has no build() function",
                          expected="a module-level def build() returning a graphc Graph",
                          got="none", hint="Add `def build(): ...` that returns b.build().")
    return module


def random_images(shape: tuple[int, ...], seed: int = 0) -> dict[str, np.ndarray]:
    """Return ``{"x": ...}``: seeded standard-normal images of ``shape`` (float32)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal(shape, dtype=np.float32)}
