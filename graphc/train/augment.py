"""Augmentation, as in the course: change the objects without changing their meaning.

Every function takes a batch (``(N, C, H, W)`` images or ``(N, F)`` rows), a
``np.random.Generator``, returns new arrays (its input is never modified) and keeps the labels
consistent. ``Augment`` composes them from a spec string such as ``"shift=1,rotate=10,noise=0.05"``
(``DIGITS_AUGMENT``). The data sets themselves are in ``graphc.train.data``.

>>> from graphc.train.data import load_digits
>>> train, _ = load_digits()
>>> aug = Augment.parse(DIGITS_AUGMENT)
>>> x, y = aug(train.x[:4], train.y[:4], np.random.default_rng(0))
>>> x.shape, x.dtype, bool((y == train.y[:4]).all())
((4, 1, 8, 8), dtype('float32'), True)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphc.errors import GraphcError, ShapeError, UsageError, unknown
from graphc.train.data import _int_at_least, _number_in, _range_text, one_hot

# A pipeline that keeps a digit's meaning. No hflip: a mirrored 2, 3, 4, 5, 7 or 9 is not that
# digit any more, so mirroring is off for digits (use it for data whose classes are symmetric).
DIGITS_AUGMENT = "shift=1,rotate=10,noise=0.05"

# Outliers injected by Augment's "outliers=<fraction>" get noise of this many feature stds.
OUTLIER_SCALE = 5.0


# --- argument checks -----------------------------------------------------------------------


def _need_rng(rng: Any, where: str) -> np.random.Generator:
    # An int seed is refused on purpose: passed again on every batch it would give every batch
    # the same "random" augmentation.
    if not isinstance(rng, np.random.Generator):
        raise UsageError("rng must be a numpy random Generator", where=where,
                         expected="np.random.Generator", got=type(rng).__name__,
                         hint="Create one per training run: rng = np.random.default_rng(seed).")
    return rng


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


def colour(x: Any, brightness: float, contrast: float, rng: np.random.Generator) -> np.ndarray:
    """Distort each image's colour: ``c * (x - m) + m + b`` with ``m`` the image's mean per
    channel, the contrast factor ``c ~ U[1 - contrast, 1 + contrast]`` and the brightness shift
    ``b ~ U[-brightness, brightness]`` drawn per image (the same for all its channels).

    >>> x = np.array([0.0, 1.0], np.float32).reshape(1, 1, 1, 2)
    >>> colour(x, 0.0, 0.0, np.random.default_rng(0))[0, 0, 0]  # no distortion: unchanged
    array([0., 1.], dtype=float32)
    """
    x = _batch(x, "colour", ndim=4)
    brightness = _number_in(brightness, 0.0, math.inf, "brightness", "colour")
    contrast = _number_in(contrast, 0.0, 1.0, "contrast", "colour")
    rng = _need_rng(rng, "colour")
    n = x.shape[0]
    c = rng.uniform(1.0 - contrast, 1.0 + contrast, n).reshape(n, 1, 1, 1)
    b = rng.uniform(-brightness, brightness, n).reshape(n, 1, 1, 1)
    m = x.mean(axis=(2, 3), keepdims=True, dtype=np.float64)
    return (c * (x - m) + m + b).astype(x.dtype)


def resize_bilinear(x: Any, size: tuple[int, int]) -> np.ndarray:
    """Resize images ``(N, C, H, W)`` to ``size`` by bilinear interpolation between pixel
    centres (half-pixel alignment, edges clamped: ONNX Resize's ``linear`` with
    ``half_pixel``), which is exact on images that are linear in the row and column.

    >>> ramp = np.arange(4, dtype=np.float32).reshape(1, 1, 1, 4)
    >>> resize_bilinear(ramp, (1, 2))[0, 0, 0]  # the centres of pixels 0..1 and 2..3
    array([0.5, 2.5], dtype=float32)
    """
    x = _batch(x, "resize_bilinear", ndim=4)
    th, tw = (_int_at_least(s, 1, "size", "resize_bilinear") for s in size)
    rows = _bilinear_axis(x.shape[2], th, np.zeros(1), np.full(1, float(x.shape[2])))
    cols = _bilinear_axis(x.shape[3], tw, np.zeros(1), np.full(1, float(x.shape[3])))
    return _sample(x.astype(np.float64), rows, cols).astype(x.dtype)


def _bilinear_axis(length: int, out: int, start: np.ndarray, extent: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For windows ``[start, start + extent)`` of an axis of ``length`` pixels, sampled at
    ``out`` points: the lower pixel, the upper pixel and the upper weight, each ``(N, out)``."""
    pos = start[:, None] + (np.arange(out)[None, :] + 0.5) * extent[:, None] / out - 0.5
    pos = np.clip(pos, 0.0, length - 1)
    low = np.floor(pos).astype(np.int64)
    high = np.minimum(low + 1, length - 1)
    return low, high, pos - low


def _sample(x: np.ndarray, rows: tuple[np.ndarray, ...], cols: tuple[np.ndarray, ...]
            ) -> np.ndarray:
    (r0, r1, wr), (c0, c1, wc) = rows, cols
    wr, wc = wr[:, None, :, None], wc[:, None, None, :]

    def at(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        n = max(len(x), len(r))
        rr = np.broadcast_to(r[:, :, None], (n, r.shape[1], c.shape[1]))
        cc = np.broadcast_to(c[:, None, :], (n, r.shape[1], c.shape[1]))
        return _gather(x, rr, cc)

    top = at(r0, c0) * (1 - wc) + at(r0, c1) * wc
    bottom = at(r1, c0) * (1 - wc) + at(r1, c1) * wc
    return top * (1 - wr) + bottom * wr


def crop_resize(x: Any, min_scale: float, rng: np.random.Generator) -> np.ndarray:
    """Crop a random window of each image, then resize it back to the image's size.

    The window's side is a fraction ``s ~ U[min_scale, 1]`` of the image's (the same fraction
    for height and width, so the aspect ratio is kept) at a random place inside the image; the
    resize is bilinear (``resize_bilinear``). ``min_scale=1`` returns the images unchanged.
    """
    x = _batch(x, "crop_resize", ndim=4)
    min_scale = _number_in(min_scale, 0.0, 1.0, "min_scale", "crop_resize", open_low=True)
    rng = _need_rng(rng, "crop_resize")
    n, _, h, w = x.shape
    scale = rng.uniform(min_scale, 1.0, n)
    eh, ew = scale * h, scale * w
    top, left = rng.uniform(0, 1, n) * (h - eh), rng.uniform(0, 1, n) * (w - ew)
    return _sample(x.astype(np.float64), _bilinear_axis(h, h, top, eh),
                   _bilinear_axis(w, w, left, ew)).astype(x.dtype)


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
    "brightness": _Step(False, 0, math.inf, None,
                        lambda x, y, v, r, k: (colour(x, v, 0.0, r), y)),
    "contrast": _Step(False, 0, 1, None, lambda x, y, v, r, k: (colour(x, 0.0, v, r), y)),
    "cropresize": _Step(False, 0, 1, None, lambda x, y, v, r, k: (crop_resize(x, v, r), y)),
    "mixup": _Step(False, 0, math.inf, None, lambda x, y, v, r, k: mixup(x, y, k, v, r)),
    "outliers": _Step(False, 0, 1, None,
                      lambda x, y, v, r, k: (inject_outliers(x, v, OUTLIER_SCALE, r), y)),
}
AUGMENTATIONS = tuple(_STEPS)


@dataclass(frozen=True)
class Augment:
    """A pipeline of augmentations applied in order, e.g. ``Augment.parse("shift=1,noise=0.05")``.

    Names: ``shift=<max pixels>``, ``rotate=<max degrees>``, ``noise=<std>``, ``crop=<padding>``,
    ``hflip[=<p>]``, ``brightness=<max shift>``, ``contrast=<max change>`` (colour distortion),
    ``cropresize=<min scale>`` (random crop resized back), ``mixup=<alpha>`` (labels become
    soft), ``outliers=<fraction>`` (corrupts that fraction of each batch in place). Noise,
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
    # mixup: alpha = 0 is no mixing at all, and Beta(0, 0) is undefined; cropresize: a window
    # of scale 0 has no pixels.
    open_low = name in ("mixup", "cropresize")
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
