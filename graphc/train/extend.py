"""Extending a data set with NEW samples, as the course lists it (augmentation that adds rows).

``graphc.train.augment`` changes each batch's objects in place; these functions return new
objects that join the training set once, before training:

- ``class_averages``: the average of two objects of the same class, labeled with that class;
- ``outlier_rows``: copies of random objects moved far away (``scale`` times each feature's
  standard deviation of Gaussian noise), labeled as their originals, so that the model meets
  rare, extreme values of the known classes;
- ``foreign_objects``: objects from another distribution (Gaussian noise with the data's mean
  and spread per feature, or any array given), labeled uniformly 1/classes: "none of these".

``Extend`` composes them from a spec string such as ``"averages=500,outliers=50,foreign=100"``
(counts of new samples); labels come back soft, ``(N, classes)``, because foreign objects have
no single class.

>>> from graphc.train.data import load_digits
>>> train, _ = load_digits()
>>> x, soft = Extend.parse("averages=10,foreign=5")(train, np.random.default_rng(0))
>>> x.shape, soft.shape, bool(np.allclose(soft[-1], 0.1))
((15, 1, 8, 8), (15, 10), True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphc.errors import GraphcError, ShapeError, UsageError, unknown
from graphc.train.augment import OUTLIER_SCALE, _batch, _need_rng
from graphc.train.data import Dataset, _int_at_least, _number_in, one_hot

# At most this many new samples per kind from the command line (a typo like averages=5000000
# would otherwise allocate gigabytes before the first epoch).
MAX_NEW = 1_000_000


def class_averages(x: Any, y: Any, count: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Return ``count`` new objects, each the mean of two different objects of one class, and
    their class labels; classes are drawn in proportion to their sizes.

    >>> x = np.array([[0.0], [2.0], [10.0]], np.float32)
    >>> class_averages(x, np.array([0, 0, 1]), 2, np.random.default_rng(0))[0].ravel().tolist()
    [1.0, 1.0]
    """
    x = _batch(x, "class_averages")
    y = _labels(y, len(x), "class_averages")
    count = _int_at_least(count, 0, "count", "class_averages")
    rng = _need_rng(rng, "class_averages")
    pairs = [np.flatnonzero(y == c) for c in np.unique(y)]
    usable = [idx for idx in pairs if len(idx) >= 2]
    if count and not usable:
        raise UsageError("no class has two objects to average", where="class_averages",
                         expected="a class with >= 2 samples", got=f"{len(x)} samples")
    sizes = np.array([len(idx) for idx in usable], dtype=np.float64)
    picks = rng.choice(len(usable), count, p=sizes / sizes.sum()) if count else np.zeros(0, int)
    first, second = np.zeros(count, np.int64), np.zeros(count, np.int64)
    for k, group in enumerate(picks):
        first[k], second[k] = rng.choice(usable[group], 2, replace=False)
    mean = (x[first].astype(np.float64) + x[second]) / 2
    return mean.astype(x.dtype), y[first]


def outlier_rows(x: Any, y: Any, count: int, scale: float, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Return ``count`` new objects: random objects plus Gaussian noise of ``scale`` times each
    feature's standard deviation over ``x``, with their originals' labels. ``x`` is unchanged
    (``Augment``'s ``outliers=`` corrupts rows of a batch instead)."""
    x = _batch(x, "outlier_rows")
    y = _labels(y, len(x), "outlier_rows")
    count = _int_at_least(count, 0, "count", "outlier_rows")
    scale = _number_in(scale, 0.0, np.inf, "scale", "outlier_rows", open_low=True)
    rng = _need_rng(rng, "outlier_rows")
    if count and not len(x):
        raise UsageError("no objects to copy", where="outlier_rows", expected=">= 1 sample",
                         got="0")
    rows = rng.integers(0, len(x), count)
    spread = x.std(axis=0, dtype=np.float64) if len(x) else np.ones(x.shape[1:])
    spread = np.where(spread > 0, spread, 1.0)  # a constant feature still gets noise
    noise = scale * spread * rng.standard_normal((count, *x.shape[1:]))
    return (x[rows] + noise).astype(x.dtype), y[rows]


def foreign_objects(x: Any, count: int, rng: np.random.Generator, *,
                    source: Any = None) -> np.ndarray:
    """Return ``count`` objects from another distribution than ``x``'s: rows drawn from
    ``source`` (an array of objects of ``x``'s shape), or by default Gaussian noise with each
    feature's mean and standard deviation over ``x`` (the right moments, no structure)."""
    x = _batch(x, "foreign_objects")
    count = _int_at_least(count, 0, "count", "foreign_objects")
    rng = _need_rng(rng, "foreign_objects")
    if source is not None:
        source = _batch(source, "foreign_objects source")
        if source.shape[1:] != x.shape[1:]:
            raise ShapeError("foreign objects of another shape", where="foreign_objects source",
                             expected=f"objects of shape {x.shape[1:]}",
                             got=f"shape {source.shape[1:]}")
        if count and not len(source):
            raise UsageError("the source holds no objects", where="foreign_objects source",
                             expected=">= 1 sample", got="0")
        return source[rng.integers(0, len(source), count)].astype(x.dtype)
    mean = x.mean(axis=0, dtype=np.float64) if len(x) else np.zeros(x.shape[1:])
    std = x.std(axis=0, dtype=np.float64) if len(x) else np.ones(x.shape[1:])
    return (mean + std * rng.standard_normal((count, *x.shape[1:]))).astype(x.dtype)


def _labels(y: Any, n: int, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,) or (y.size and not np.issubdtype(y.dtype, np.integer)):
        raise ShapeError("needs one integer class label per object", where=where,
                         expected=f"shape ({n},) int", got=f"shape {y.shape} {y.dtype}")
    return y


# --- the spec ------------------------------------------------------------------------------

_KINDS: dict[str, Callable[[Dataset, int, np.random.Generator], tuple[np.ndarray, np.ndarray]]]
_KINDS = {
    "averages": lambda d, n, r: _hard(d, *class_averages(d.x, d.y, n, r)),
    "outliers": lambda d, n, r: _hard(d, *outlier_rows(d.x, d.y, n, OUTLIER_SCALE, r)),
    "foreign": lambda d, n, r: (foreign_objects(d.x, n, r),
                                np.full((n, d.classes), 1.0 / d.classes, np.float32)),
}
EXTENSIONS = tuple(_KINDS)


def _hard(d: Dataset, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x, one_hot(y, d.classes)


@dataclass(frozen=True)
class Extend:
    """New samples to add to a training set, e.g. ``Extend.parse("averages=500,foreign=100")``.

    Kinds (each with a count of new samples): ``averages`` (two objects of one class averaged),
    ``outliers`` (objects moved ``OUTLIER_SCALE`` feature stds away, same label), ``foreign``
    (objects from another distribution, uniform labels).

    >>> str(Extend.parse("foreign=100, averages=500"))
    'foreign=100,averages=500'
    """

    kinds: tuple[tuple[str, int], ...] = ()

    @classmethod
    def parse(cls, spec: str) -> Extend:
        """Build from ``"kind=count,..."``; ``""`` or ``"none"`` adds nothing."""
        if not isinstance(spec, str):
            raise UsageError("extension spec must be a string", where="Extend.parse",
                             expected="'kind=count,...'", got=repr(spec))
        if spec.strip().lower() in ("", "none"):
            return cls()
        kinds: list[tuple[str, int]] = []
        for item in (part.strip() for part in spec.split(",")):
            where = f"extend item {item!r}"
            name, sep, text = (part.strip() for part in item.partition("="))
            if name not in _KINDS:
                raise unknown("data set extension", name, _KINDS, where=where, cls=UsageError)
            if name in (k for k, _ in kinds):
                raise UsageError(f"{name} given twice", where=f"extend spec {spec!r}",
                                 expected="each kind once", got=spec)
            try:
                count = int(text) if sep else -1
            except ValueError:
                count = -1
            if not 0 <= count <= MAX_NEW:
                raise UsageError(f"bad count for {name}", where=where,
                                 expected=f"{name}=<new samples, 0..{MAX_NEW:,}>",
                                 got=repr(item))
            kinds.append((name, count))
        return cls(tuple(kinds))

    def __str__(self) -> str:
        return ",".join(f"{name}={count}" for name, count in self.kinds)

    def __call__(self, data: Dataset, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Return the new objects and their soft labels ``(N, classes)``, in the spec's order."""
        xs = [np.zeros((0, *data.x.shape[1:]), data.x.dtype)]
        ys = [np.zeros((0, data.classes), np.float32)]
        for name, count in self.kinds:
            try:
                x, y = _KINDS[name](data, count, rng)
            except GraphcError as err:
                raise err.located(f"extend {name}={count}") from None
            xs.append(x)
            ys.append(y.astype(np.float32))
        return np.concatenate(xs), np.concatenate(ys)
