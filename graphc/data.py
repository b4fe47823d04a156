"""Data sets for training (scikit-learn's bundled digits, synthetic sets) and augmentation.

``load_digits`` reads the 8x8 digits that ship inside scikit-learn (nothing is ever downloaded)
and splits them the same way every time (25% test, stratified, seed 0), so accuracies reported
by different runs, passes and docs are comparable. The ``make_*`` functions build small
deterministic synthetic sets for tests and the tutorial.

Augmentation follows the course: change the objects without changing their meaning. Every
function takes a batch (``(N, C, H, W)`` images or ``(N, F)`` rows), a ``np.random.Generator``,
returns new arrays (its input is never modified) and keeps the labels consistent. ``Augment``
composes them from a spec string such as ``"shift=1,rotate=10,noise=0.05"``.

>>> train, test = load_digits()
>>> len(train), len(test), train.x.shape[1:], train.classes
(1347, 450, (1, 8, 8), 10)
>>> aug = Augment.parse("shift=1,rotate=10,noise=0.05")
>>> x, y = aug(train.x[:4], train.y[:4], np.random.default_rng(0))
>>> x.shape, x.dtype, bool((y == train.y[:4]).all())
((4, 1, 8, 8), dtype('float32'), True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphc.errors import GraphcError, ShapeError, UsageError, unknown

LAYOUTS = ("image", "flat")

# A pipeline that keeps a digit's meaning. No hflip: a mirrored 2, 3, 4, 5, 7 or 9 is not that
# digit any more, so mirroring is off for digits (use it for data whose classes are symmetric).
DIGITS_AUGMENT = "shift=1,rotate=10,noise=0.05"

# Outliers injected by Augment's "outliers=<fraction>" get noise of this many feature stds.
OUTLIER_SCALE = 5.0


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


def _need_rng(rng: Any, where: str) -> np.random.Generator:
    # An int seed is refused on purpose: passed again on every batch it would give every batch
    # the same "random" augmentation.
    if not isinstance(rng, np.random.Generator):
        raise UsageError("rng must be a numpy random Generator", where=where,
                         expected="np.random.Generator", got=type(rng).__name__,
                         hint="Create one per training run: rng = np.random.default_rng(seed).")
    return rng


def _generator(seed: Any, where: str) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(_int_at_least(seed, 0, "seed", where))


def _batch(x: Any, where: str, *, ndim: int | None = None) -> np.ndarray:
    """Return ``x`` as a floating-point array of samples (no copy), or refuse it."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise ShapeError("needs floating-point values", where=where, expected="float32 or float64",
                         got=str(x.dtype), hint="Convert with x.astype(np.float32).")
    if ndim is not None and x.ndim != ndim:
        layout = {4: "(N, C, H, W)", 2: "(N, F)"}[ndim]
        hint = "Load image data with layout='image'." if ndim == 4 else None
        raise ShapeError(f"needs a rank-{ndim} batch", where=where,
                         expected=f"shape {layout}", got=f"shape {x.shape}", hint=hint)
    if x.ndim < 1:
        raise ShapeError("needs a batch of samples", where=where, expected="shape (N, ...)",
                         got="a scalar")
    return x


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


# --- image augmentation --------------------------------------------------------------------


def _gather(padded: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Return ``padded[n, :, rows[n], cols[n]]`` as ``(N, C, H, W)``; rows/cols broadcast to
    ``(N, H, W)``."""
    n = np.arange(padded.shape[0])[:, None, None]
    picked = padded.transpose(0, 2, 3, 1)[n, rows, cols]  # (N, H, W, C)
    return np.ascontiguousarray(picked.transpose(0, 3, 1, 2))


def translate(x: Any, dy: Any, dx: Any) -> np.ndarray:
    """Move images ``dy`` rows down and ``dx`` columns right (ints or one per sample), zero fill.

    >>> translate(np.eye(3).reshape(1, 1, 3, 3), 1, 0)[0, 0]
    array([[0., 0., 0.],
           [1., 0., 0.],
           [0., 1., 0.]])
    """
    x = _batch(x, "translate", ndim=4)
    n, _, h, w = x.shape
    dy = np.broadcast_to(np.asarray(dy, dtype=np.int64), (n,))
    dx = np.broadcast_to(np.asarray(dx, dtype=np.int64), (n,))
    m = int(max(np.abs(dy).max(initial=0), np.abs(dx).max(initial=0)))
    padded = np.pad(x, ((0, 0), (0, 0), (m, m), (m, m)))
    # out[r, c] = x[r - dy, c - dx] = padded[r - dy + m, c - dx + m]
    rows = (m - dy)[:, None, None] + np.arange(h)[None, :, None]
    cols = (m - dx)[:, None, None] + np.arange(w)[None, None, :]
    return _gather(padded, rows, cols)


def shift(x: Any, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Translate each image by random integers in ``[-max_shift, max_shift]`` (zero fill)."""
    x = _batch(x, "shift", ndim=4)
    m = _int_at_least(max_shift, 0, "max_shift", "shift")
    dy, dx = _need_rng(rng, "shift").integers(-m, m + 1, (2, x.shape[0]))
    return translate(x, dy, dx)


def rotate_by(x: Any, degrees: Any) -> np.ndarray:
    """Rotate images counterclockwise by ``degrees`` (one or one per sample) about their center.

    Bilinear interpolation, zero fill outside; 90 degrees on a square image equals ``np.rot90``.
    """
    x = _batch(x, "rotate_by", ndim=4)
    n, _, h, w = x.shape
    theta = np.deg2rad(np.broadcast_to(np.asarray(degrees, dtype=np.float64), (n,)))
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    i = np.arange(h)[None, :, None] - cy
    j = np.arange(w)[None, None, :] - cx
    # Each output pixel samples the input where the inverse rotation takes it
    # (at 90 degrees: out[i, j] = x[j, w - 1 - i], which is np.rot90).
    src_r = cy + cos * i + sin * j
    src_c = cx - sin * i + cos * j
    r0, c0 = np.floor(src_r), np.floor(src_c)
    fr, fc = (src_r - r0)[:, None], (src_c - c0)[:, None]
    # One ring of zeros, and indices clipped onto it: any source outside the image reads 0.
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))

    def at(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return _gather(padded, np.clip(r, -1, h).astype(np.int64) + 1,
                       np.clip(c, -1, w).astype(np.int64) + 1)

    out = ((1 - fr) * (1 - fc) * at(r0, c0) + (1 - fr) * fc * at(r0, c0 + 1)
           + fr * (1 - fc) * at(r0 + 1, c0) + fr * fc * at(r0 + 1, c0 + 1))
    return out.astype(x.dtype)


def rotate(x: Any, max_degrees: float, rng: np.random.Generator) -> np.ndarray:
    """Rotate each image by a random angle in ``[-max_degrees, max_degrees]`` (bilinear)."""
    x = _batch(x, "rotate", ndim=4)
    m = _number_in(max_degrees, 0.0, 180.0, "max_degrees", "rotate")
    return rotate_by(x, _need_rng(rng, "rotate").uniform(-m, m, x.shape[0]))


def _gaussian(x: Any, std: Any, rng: np.random.Generator, where: str) -> np.ndarray:
    x = _batch(x, where)
    std = _number_in(std, 0.0, math.inf, "std", where)
    return (x + std * _need_rng(rng, where).standard_normal(x.shape)).astype(x.dtype)


def add_noise(x: Any, std: float, rng: np.random.Generator) -> np.ndarray:
    """Add Gaussian noise ``N(0, std^2)`` to every value (images or any batch)."""
    return _gaussian(x, std, rng, "add_noise")


def random_crop(x: Any, size: int | tuple[int, int] | None, padding: int,
                rng: np.random.Generator) -> np.ndarray:
    """Pad images with ``padding`` zeros per side, then crop a random ``size`` window
    (``None``: the original size, which makes this a random translation)."""
    x = _batch(x, "random_crop", ndim=4)
    n, _, h, w = x.shape
    p = _int_at_least(padding, 0, "padding", "random_crop")
    if size is None:
        th, tw = h, w
    elif isinstance(size, (int, np.integer)):
        th = tw = _int_at_least(size, 1, "size", "random_crop")
    else:
        th, tw = (_int_at_least(s, 1, "size", "random_crop") for s in size)
    if th > h + 2 * p or tw > w + 2 * p:
        raise UsageError("crop larger than the padded image", where="random_crop",
                         expected=f"size <= ({h + 2 * p}, {w + 2 * p})", got=(th, tw))
    rng = _need_rng(rng, "random_crop")
    top = rng.integers(0, h + 2 * p - th + 1, n)
    left = rng.integers(0, w + 2 * p - tw + 1, n)
    padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    return _gather(padded, top[:, None, None] + np.arange(th)[None, :, None],
                   left[:, None, None] + np.arange(tw)[None, None, :])


def hflip(x: Any, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Mirror each image left-right with probability ``p``.

    Only for classes that survive mirroring: a mirrored digit is not the same digit, so
    ``DIGITS_AUGMENT`` leaves it off.
    """
    x = _batch(x, "hflip", ndim=4)
    p = _number_in(p, 0.0, 1.0, "p", "hflip")
    flip = _need_rng(rng, "hflip").random(x.shape[0]) < p
    out = x.copy()
    out[flip] = x[flip][..., ::-1]
    return out


# --- tabular and feature-space augmentation ------------------------------------------------


def tabular_noise(x: Any, std: Any, rng: np.random.Generator) -> np.ndarray:
    """Add Gaussian noise to rows ``(N, F)``; ``std`` is one number or one per feature."""
    x = _batch(x, "tabular_noise", ndim=2)
    s = np.asarray(std, dtype=np.float64)
    if s.shape not in ((), (x.shape[1],)) or not np.isfinite(s).all() or (s < 0).any():
        raise UsageError("bad std", where="tabular_noise",
                         expected=f"a number >= 0 or {x.shape[1]} of them", got=repr(std))
    return (x + s * _need_rng(rng, "tabular_noise").standard_normal(x.shape)).astype(x.dtype)


def _soft_labels(y: Any, classes: int | None, n: int, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.shape[:1] != (n,):
        raise ShapeError("x and y hold different numbers of samples", where=where,
                         expected=f"y of shape ({n}, ...)", got=f"shape {y.shape}")
    if y.ndim == 2 and np.issubdtype(y.dtype, np.floating):  # already soft: mixers compose
        if classes is not None and y.shape[1] != classes:
            raise ShapeError("soft labels of the wrong width", where=where,
                             expected=f"shape ({n}, {classes})", got=f"shape {y.shape}")
        return y.astype(np.float64)
    if classes is None:
        raise UsageError("mixing integer labels needs the number of classes", where=where,
                         expected="classes", got=None,
                         hint="Pass classes (Augment.parse(spec, classes=...)).")
    return one_hot(y, classes).astype(np.float64)


def _mixup(x: Any, y: Any, classes: int | None, alpha: float, rng: np.random.Generator,
           where: str) -> tuple[np.ndarray, np.ndarray]:
    x = _batch(x, where)
    soft = _soft_labels(y, classes, x.shape[0], where)
    alpha = _number_in(alpha, 0.0, math.inf, "alpha", where, open_low=True)
    rng = _need_rng(rng, where)
    n = x.shape[0]
    lam = rng.beta(alpha, alpha, n)
    partner = rng.permutation(n)
    lx = lam.reshape((n,) + (1,) * (x.ndim - 1))
    mixed = lx * x + (1 - lx) * x[partner]
    labels = lam[:, None] * soft + (1 - lam[:, None]) * soft[partner]
    return mixed.astype(x.dtype), labels.astype(np.float32)


def mixup(x: Any, y: Any, classes: int, alpha: float,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mix each sample with a random partner: ``lam*x_i + (1-lam)*x_j``, ``lam ~ Beta(alpha,
    alpha)`` in [0, 1], and the labels the same way, giving SOFT labels ``(N, classes)``.

    ``y`` is class ids ``(N,)`` or soft labels ``(N, classes)`` (so mixups compose).
    """
    return _mixup(x, y, classes, alpha, rng, "mixup")


def inject_outliers(x: Any, fraction: float, scale: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Corrupt exactly ``round(fraction * N)`` random samples (rows) with Gaussian noise of
    ``scale`` times each feature's std over the batch; the others and the labels are kept."""
    x = _batch(x, "inject_outliers")
    fraction = _number_in(fraction, 0.0, 1.0, "fraction", "inject_outliers")
    scale = _number_in(scale, 0.0, math.inf, "scale", "inject_outliers", open_low=True)
    rng = _need_rng(rng, "inject_outliers")
    n = x.shape[0]
    k = int(math.floor(fraction * n + 0.5))
    rows = rng.choice(n, k, replace=False)
    spread = x.std(axis=0) if n else np.ones(x.shape[1:])
    spread = np.where(spread > 0, spread, 1.0)  # a constant feature still gets noise
    out = x.astype(np.float64)
    out[rows] += scale * spread * rng.standard_normal((k, *x.shape[1:]))
    return out.astype(x.dtype)


def feature_noise(h: Any, std: float, rng: np.random.Generator) -> np.ndarray:
    """Add Gaussian noise to a hidden layer's output ``h`` (augmentation in feature space).

    Training applies it to the activations of a chosen layer during the forward pass.
    """
    return _gaussian(h, std, rng, "feature_noise")


def feature_mixup(h: Any, y: Any, classes: int, alpha: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mix a hidden layer's outputs ``h`` and the labels like ``mixup`` (manifold mixup).

    Training applies it to the activations of a chosen layer and uses the soft labels.
    """
    return _mixup(h, y, classes, alpha, rng, "feature_mixup")


# --- pipelines -----------------------------------------------------------------------------

Batch = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class _Step:
    integer: bool
    low: float
    high: float
    default: float | None  # value of a bare name ("hflip"), or None if a value is required
    apply: Callable[[np.ndarray, np.ndarray, float, np.random.Generator, int | None], Batch]


_STEPS: dict[str, _Step] = {
    "shift": _Step(True, 0, 64, None, lambda x, y, v, r, k: (shift(x, int(v), r), y)),
    "rotate": _Step(False, 0, 180, None, lambda x, y, v, r, k: (rotate(x, v, r), y)),
    "noise": _Step(False, 0, math.inf, None, lambda x, y, v, r, k: (add_noise(x, v, r), y)),
    "crop": _Step(True, 0, 64, None,
                  lambda x, y, v, r, k: (random_crop(x, None, int(v), r), y)),
    "hflip": _Step(False, 0, 1, 0.5, lambda x, y, v, r, k: (hflip(x, r, v), y)),
    "mixup": _Step(False, 0, math.inf, None, lambda x, y, v, r, k: mixup(x, y, k, v, r)),
    "outliers": _Step(False, 0, 1, None,
                      lambda x, y, v, r, k: (inject_outliers(x, v, OUTLIER_SCALE, r), y)),
}
AUGMENTATIONS = tuple(_STEPS)


@dataclass(frozen=True)
class Augment:
    """A pipeline of augmentations applied in order, e.g. ``Augment.parse("shift=1,noise=0.05")``.

    Names: ``shift=<max pixels>``, ``rotate=<max degrees>``, ``noise=<std>``, ``crop=<padding>``,
    ``hflip[=<p>]``, ``mixup=<alpha>`` (labels become soft), ``outliers=<fraction>``. Noise,
    mixup and outliers work on any batch, so a pipeline also serves a hidden layer's outputs.

    >>> aug = Augment.parse("shift=1, hflip")
    >>> str(aug), aug.names
    ('shift=1,hflip=0.5', ('shift', 'hflip'))
    """

    steps: tuple[tuple[str, float], ...] = ()
    classes: int | None = None

    @classmethod
    def parse(cls, spec: str, *, classes: int | None = None) -> Augment:
        """Build a pipeline from ``"name=value,..."``; ``""`` or ``"none"`` is no augmentation."""
        if not isinstance(spec, str):
            raise UsageError("augmentation spec must be a string", where="Augment.parse",
                             expected="'name=value,...'", got=repr(spec))
        if classes is not None:
            classes = _int_at_least(classes, 1, "classes", "Augment.parse")
        steps: list[tuple[str, float]] = []
        if spec.strip().lower() in ("", "none"):
            return cls((), classes)
        for item in (part.strip() for part in spec.split(",")):
            where = f"augment item {item!r}"
            name, sep, text = (part.strip() for part in item.partition("="))
            if name not in _STEPS:
                raise unknown("augmentation", name, _STEPS, where=where, cls=UsageError)
            step = _STEPS[name]
            if name in (s[0] for s in steps):
                raise UsageError(f"{name} given twice", where=f"augment spec {spec!r}",
                                 expected="each name once", got=spec)
            if not sep and step.default is not None:
                steps.append((name, step.default))
                continue
            if not sep:
                raise UsageError(f"{name} needs a value", where=where,
                                 expected=f"{name}=<value>", got=repr(item))
            steps.append((name, _parse_value(text, step, name, where)))
        return cls(tuple(steps), classes)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.steps)

    def __str__(self) -> str:
        return ",".join(f"{name}={value:g}" for name, value in self.steps)

    def __call__(self, x: Any, y: Any, rng: np.random.Generator) -> Batch:
        """Return the augmented ``(x, y)``; ``y`` is soft ``(N, classes)`` after a mixup."""
        x, y = np.asarray(x), np.asarray(y)
        for name, value in self.steps:
            try:
                x, y = _STEPS[name].apply(x, y, value, rng, self.classes)
            except GraphcError as err:
                raise err.located(f"augment {name}={value:g}") from None
        return x, y


def _parse_value(text: str, step: _Step, name: str, where: str) -> float:
    open_low = name == "mixup"  # alpha = 0 is no mixing at all, and Beta(0, 0) is undefined
    expected = _range_text("an integer" if step.integer else "a number", step.low, step.high,
                           open_low)
    try:
        value = int(text) if step.integer else float(text)
    except ValueError:
        raise UsageError(f"bad value for {name}", where=where, expected=expected,
                         got=repr(text), hint=f"Write it as {name}=<value>.") from None
    ok = math.isfinite(value) and step.low <= value <= step.high
    if not ok or (open_low and value <= step.low):
        raise UsageError(f"bad value for {name}", where=where, expected=expected, got=repr(text))
    return float(value)
