"""Data sets for training: scikit-learn's bundled digits and small synthetic sets.

``load_digits`` reads the 8x8 digits that ship inside scikit-learn (nothing is ever downloaded)
and splits them the same way every time (25% test, stratified, seed 0), so accuracies reported
by different runs, passes and docs are comparable. The ``make_*`` functions build small
deterministic synthetic sets for tests and the tutorial. Augmentation is in
``graphc.train.augment``.

>>> train, test = load_digits()
>>> len(train), len(test), train.x.shape[1:], train.classes
(1347, 450, (1, 8, 8), 10)
>>> one_hot(train.y[:3], train.classes).shape
(3, 10)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphc.errors import ShapeError, UsageError, unknown

LAYOUTS = ("image", "flat")


# --- argument checks -----------------------------------------------------------------------


def _int_at_least(value: Any, low: int, what: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise UsageError(f"{what} must be an integer >= {low}", where=where,
                         expected=f"an int >= {low}", got=repr(value))
    return int(value)


def _number_in(value: Any, low: float, high: float, what: str, where: str, *,
               open_low: bool = False) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        ok = math.isfinite(value) and (value > low if open_low else value >= low) and value <= high
    if not ok:
        raise UsageError(f"{what} is out of range", where=where,
                         expected=_range_text("a number", low, high, open_low), got=repr(value))
    return float(value)


def _range_text(kind: str, low: float, high: float, open_low: bool = False) -> str:
    if math.isinf(high):
        return f"{kind} {'>' if open_low else '>='} {low:g}"
    return f"{kind} in {'(' if open_low else '['}{low:g}, {high:g}]"


def _generator(seed: Any, where: str) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(_int_at_least(seed, 0, "seed", where))


def one_hot(y: Any, classes: int) -> np.ndarray:
    """Return class labels ``(N,)`` as one-hot rows ``(N, classes)`` of float32.

    >>> one_hot([2, 0], 3)
    array([[0., 0., 1.],
           [1., 0., 0.]], dtype=float32)
    """
    classes = _int_at_least(classes, 1, "classes", "one_hot")
    y = np.asarray(y)
    if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)):
        raise ShapeError("needs integer class labels", where="one_hot", expected="shape (N,) int",
                         got=f"shape {y.shape} {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise UsageError("label out of range", where="one_hot",
                         expected=f"labels in 0..{classes - 1}", got=f"{y.min()}..{y.max()}")
    return np.eye(classes, dtype=np.float32)[y.astype(np.int64)]


# --- data sets -----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Dataset:
    """Samples ``x`` (float32, first axis = sample), class labels ``y`` (int64) and a name.

    >>> ds = Dataset(np.zeros((5, 2)), np.array([0, 1, 0, 1, 1]), classes=2, name="toy")
    >>> ds, [len(y) for _, y in ds.batches(2, seed=0)]
    (Dataset('toy', x=(5, 2) float32, y=(5,) int64, classes=2), [2, 2, 1])
    """

    x: np.ndarray
    y: np.ndarray
    classes: int
    name: str = "data"

    def __post_init__(self) -> None:
        where = f"data set {self.name!r}"
        x = np.asarray(self.x, dtype=np.float32)
        y = np.asarray(self.y)
        if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)):
            raise ShapeError("labels must be integer class ids", where=where,
                             expected="shape (N,) int", got=f"shape {y.shape} {y.dtype}")
        if x.ndim < 1 or x.shape[0] != y.shape[0]:
            raise ShapeError("x and y hold different numbers of samples", where=where,
                             expected=f"x of shape ({y.shape[0]}, ...)", got=f"shape {x.shape}")
        classes = _int_at_least(self.classes, 1, "classes", where)
        if y.size and (y.min() < 0 or y.max() >= classes):
            raise UsageError("label out of range", where=where,
                             expected=f"labels in 0..{classes - 1}", got=f"{y.min()}..{y.max()}")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y.astype(np.int64, copy=False))
        object.__setattr__(self, "classes", classes)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, x={self.x.shape} {self.x.dtype}, "
                f"y={self.y.shape} {self.y.dtype}, classes={self.classes})")

    def batches(self, batch_size: int, *, seed: int | np.random.Generator, shuffle: bool = True,
                drop_last: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(x, y)`` batches covering every sample once, in an order fixed by ``seed``.

        The last batch is smaller unless ``drop_last``; ``seed`` is unused when not shuffling.
        """
        where = f"data set {self.name!r}: batches"
        size = _int_at_least(batch_size, 1, "batch_size", where)
        order = _generator(seed, where).permutation(len(self)) if shuffle else np.arange(len(self))
        stop = len(self) - len(self) % size if drop_last else len(self)
        # Arguments are checked above, not lazily on the first next().
        return ((self.x[i], self.y[i]) for i in (order[s:s + size] for s in range(0, stop, size)))

    def subset(self, indices: Any) -> Dataset:
        """Return the samples at ``indices`` (integers or a boolean mask) as a new data set."""
        where = f"data set {self.name!r}: subset"
        idx = np.asarray(indices)
        n = len(self)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise ShapeError("boolean mask of the wrong length", where=where,
                                 expected=f"shape ({n},)", got=f"shape {idx.shape}")
        elif idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise UsageError("indices must be integers or a boolean mask", where=where,
                             expected="int indices", got=str(idx.dtype))
        elif idx.size and (idx.min() < -n or idx.max() >= n):
            raise UsageError("index out of range", where=where, expected=f"indices in 0..{n - 1}",
                             got=f"{idx.min()}..{idx.max()}")
        idx = idx if idx.dtype == bool else idx.astype(np.int64).reshape(-1)
        return Dataset(self.x[idx], self.y[idx], self.classes, self.name)

    def split(self, test_size: float = 0.25, *, seed: int = 0,
              stratify: bool = True) -> tuple[Dataset, Dataset]:
        """Split into ``(train, test)`` with scikit-learn's ``train_test_split`` (stratified)."""
        from sklearn.model_selection import train_test_split

        where = f"data set {self.name!r}: split"
        test_size = _number_in(test_size, 0.0, 1.0, "test_size", where, open_low=True)
        seed = _int_at_least(seed, 0, "seed", where)
        try:
            train, test = train_test_split(np.arange(len(self)), test_size=test_size,
                                           random_state=seed,
                                           stratify=self.y if stratify else None)
        except ValueError as err:
            raise UsageError(f"cannot split: {err}", where=where,
                             hint="Use more samples per class or stratify=False.") from None
        return (Dataset(self.x[train], self.y[train], self.classes, f"{self.name}/train"),
                Dataset(self.x[test], self.y[test], self.classes, f"{self.name}/test"))


def load_digits(*, layout: str = "image", test_size: float = 0.25,
                seed: int = 0) -> tuple[Dataset, Dataset]:
    """Return scikit-learn's bundled 8x8 digits as ``(train, test)``, pixels scaled to [0, 1].

    1797 samples, 10 classes; ``layout="image"`` gives ``(N, 1, 8, 8)``, ``"flat"`` ``(N, 64)``.
    The split is FIXED by default (25% test, stratified, seed 0: 1347 train, 450 test) so that
    digits test accuracies are comparable across runs; change ``test_size``/``seed`` only on
    purpose. The data ship inside scikit-learn: nothing is downloaded.
    """
    if layout not in LAYOUTS:
        raise unknown("layout", layout, LAYOUTS, where="load_digits", cls=UsageError)
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = (bunch.data / 16.0).astype(np.float32)  # pixels are 0..16
    x = x.reshape(-1, 1, 8, 8) if layout == "image" else x.reshape(-1, 64)
    full = Dataset(x, bunch.target.astype(np.int64), classes=10, name="digits")
    return full.split(test_size, seed=seed)


def _balanced_labels(n: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n, dtype=np.int64) % classes)


def _check_sizes(n: Any, classes: Any, where: str) -> tuple[int, int]:
    classes = _int_at_least(classes, 1, "classes", where)
    return _int_at_least(n, classes, "n (at least one sample per class)", where), classes


def make_blobs_dataset(n: int = 300, classes: int = 3, features: int = 2, seed: int = 0, *,
                       std: float = 1.0) -> Dataset:
    """Return Gaussian clusters (one per class, balanced), centers kept apart: near separable.

    >>> make_blobs_dataset(90, 3, 4, seed=1)
    Dataset('blobs', x=(90, 4) float32, y=(90,) int64, classes=3)
    """
    n, classes = _check_sizes(n, classes, "make_blobs_dataset")
    features = _int_at_least(features, 1, "features", "make_blobs_dataset")
    std = _number_in(std, 0.0, math.inf, "std", "make_blobs_dataset")
    rng = _generator(seed, "make_blobs_dataset")
    # Draw centers a few times and keep the draw whose closest pair is farthest apart (>= 4 std
    # is enough): clusters overlap only in their tails.
    half = 3.0 * max(std, 1e-3) * classes ** (1.0 / features)
    best, best_gap = None, -1.0
    for _ in range(100):
        centers = rng.uniform(-half, half, (classes, features))
        gaps = np.linalg.norm(centers[:, None] - centers[None], axis=-1) + np.eye(classes) * 1e9
        if gaps.min() > best_gap:
            best, best_gap = centers, float(gaps.min())
        if best_gap >= 4.0 * std:
            break
    y = _balanced_labels(n, classes, rng)
    x = best[y] + rng.normal(0.0, std, (n, features))
    return Dataset(x, y, classes, "blobs")


def make_xor(n: int = 200, seed: int = 0, *, margin: float = 0.1) -> Dataset:
    """Return 2-D XOR: label 1 where the two coordinates have opposite signs.

    Not linearly separable (a single neuron cannot learn it; one hidden layer can). Coordinates
    have magnitudes in ``[margin, 1]``, so no point sits on the axes where the label flips.

    >>> ds = make_xor(4, seed=0)
    >>> bool(((ds.x[:, 0] * ds.x[:, 1] < 0) == (ds.y == 1)).all())
    True
    """
    n = _int_at_least(n, 1, "n", "make_xor")
    margin = _number_in(margin, 0.0, 0.99, "margin", "make_xor")
    rng = _generator(seed, "make_xor")
    signs = rng.choice(np.array([-1.0, 1.0]), size=(n, 2))
    x = signs * rng.uniform(margin, 1.0, (n, 2))
    return Dataset(x, (signs[:, 0] != signs[:, 1]).astype(np.int64), 2, "xor")


def make_spirals(n: int = 300, classes: int = 3, seed: int = 0, *,
                 noise: float = 0.2) -> Dataset:
    """Return interleaved 2-D spirals, one arm per class (the CS231n toy set).

    >>> make_spirals(30, 3, seed=0)
    Dataset('spirals', x=(30, 2) float32, y=(30,) int64, classes=3)
    """
    n, classes = _check_sizes(n, classes, "make_spirals")
    noise = _number_in(noise, 0.0, math.inf, "noise", "make_spirals")
    rng = _generator(seed, "make_spirals")
    xs, ys = [], []
    for k in range(classes):
        m = n // classes + (k < n % classes)
        r = np.linspace(0.0, 1.0, m)
        t = 2 * np.pi * k / classes + 4.0 * r + rng.normal(0.0, noise, m)
        xs.append(np.stack([r * np.sin(t), r * np.cos(t)], axis=1))
        ys.append(np.full(m, k, dtype=np.int64))
    order = rng.permutation(n)
    return Dataset(np.concatenate(xs)[order], np.concatenate(ys)[order], classes, "spirals")


def bar_row(label: int, classes: int, size: int) -> int:
    """Return the row of ``make_images``' bright bar for class ``label``."""
    return int((label + 0.5) * size / classes)


def make_images(n: int = 200, classes: int = 4, size: int = 8, seed: int = 0, *,
                noise: float = 0.1) -> Dataset:
    """Return ``(N, 1, size, size)`` images in [0, 1]: a bright horizontal bar on a noisy
    background, at a row set by the class (``bar_row``), of random length and position.

    >>> ds = make_images(8, 4, 8, seed=0)
    >>> ds.x.shape, [bar_row(c, 4, 8) for c in range(4)]
    ((8, 1, 8, 8), [1, 3, 5, 7])
    """
    n, classes = _check_sizes(n, classes, "make_images")
    size = _int_at_least(size, 2, "size", "make_images")
    if classes > size:
        raise UsageError("more classes than bar rows", where="make_images",
                         expected=f"classes <= size ({size})", got=classes)
    noise = _number_in(noise, 0.0, math.inf, "noise", "make_images")
    rng = _generator(seed, "make_images")
    y = _balanced_labels(n, classes, rng)
    length = rng.integers(max(size // 2, 1), size + 1, n)
    start = rng.integers(0, size - length + 1)
    cols = np.arange(size)
    on = (cols >= start[:, None]) & (cols < (start + length)[:, None])
    x = rng.normal(0.0, noise, (n, 1, size, size))
    rows = np.array([bar_row(c, classes, size) for c in range(classes)])[y]
    x[np.arange(n), 0, rows, :] += on * rng.uniform(0.7, 1.0, (n, 1))
    return Dataset(np.clip(x, 0.0, 1.0), y, classes, "images")
