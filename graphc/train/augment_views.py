"""What augmentation, data-set extension, generation and feature-space simulation do, in
numbers and in one picture (``graphc explain augmentation``).

Every transform shown is the one training applies (``Augment``, ``Extend``, the generators of
``--data NAME``, ``feature_noise`` / ``feature_mixup``), run on the same digits from one seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphc.train.augment import Augment, feature_mixup, feature_noise
from graphc.train.data import Dataset, load_digits
from graphc.train.datafiles import GENERATORS
from graphc.train.extend import Extend

DEFAULT_AUGMENT = ("shift=1,rotate=15,noise=0.1,brightness=0.2,contrast=0.5,cropresize=0.7,"
                   "mixup=1")
DEFAULT_EXTEND = "averages=6,outliers=6,foreign=6"
SHOWN = 6  # digits per row of the picture
FEATURE_NOISE = 0.5
FEATURE_MIXUP = 1.0


@dataclass(frozen=True)
class View:
    """One transform applied to the shown digits: its spec, the images, their labels (soft
    ``(n, classes)``) and the mean absolute change per pixel."""

    spec: str
    x: np.ndarray
    labels: np.ndarray
    change: float


@dataclass(frozen=True)
class Views:
    originals: np.ndarray
    classes: np.ndarray
    augmented: tuple[View, ...]
    extended: tuple[View, ...]
    generated: dict[str, Dataset]
    features: np.ndarray   # 2-D points (the blobs), labels in ``feature_classes``
    feature_classes: np.ndarray
    noisy: np.ndarray
    mixed: np.ndarray


def views(augment: str = DEFAULT_AUGMENT, extend: str = DEFAULT_EXTEND, seed: int = 0) -> Views:
    """Apply each item of ``augment`` on its own to the first training digits, each kind of
    ``extend`` to the training set, draw each generated data set, and simulate feature-space
    noise and mixup on 2-D points.

    >>> v = views(seed=0)
    >>> [view.spec for view in v.augmented][:3], v.originals.shape
    (['shift=1', 'rotate=15', 'noise=0.1'], (6, 1, 8, 8))
    """
    train, _ = load_digits()
    originals, classes = train.x[:SHOWN], train.y[:SHOWN]
    augmented = []
    for item in str(Augment.parse(augment, classes=train.classes)).split(","):
        if not item:
            continue
        x, y = Augment.parse(item, classes=train.classes)(originals, classes,
                                                          np.random.default_rng(seed))
        labels = y if y.ndim == 2 else np.eye(train.classes, dtype=np.float32)[y]
        augmented.append(View(item, x, labels, _change(originals, x)))
    extended = []
    for item in str(Extend.parse(extend)).split(","):
        if not item:
            continue
        x, labels = Extend.parse(item)(train, np.random.default_rng(seed))
        extended.append(View(item, x, labels, float("nan")))
    generated = {name: make(seed=seed) for name, make in GENERATORS.items()}
    blobs = generated["blobs"]
    rng = np.random.default_rng(seed)
    noisy = feature_noise(blobs.x, FEATURE_NOISE, rng)
    mixed, _ = feature_mixup(blobs.x, blobs.y, blobs.classes, FEATURE_MIXUP, rng)
    return Views(originals, classes, tuple(augmented), tuple(extended), generated,
                 blobs.x, blobs.y, noisy, mixed)


def _change(before: np.ndarray, after: np.ndarray) -> float:
    return float(np.mean(np.abs(after.astype(np.float64) - before)))


def _label_text(labels: np.ndarray, classes: np.ndarray | None) -> str:
    """Say what happened to the labels: kept, soft (mixed) or uniform."""
    top = labels.max(axis=1)
    if np.allclose(labels, 1.0 / labels.shape[1]):
        return f"uniform 1/{labels.shape[1]} (none of the classes)"
    if np.all(top == 1.0):
        if classes is not None and np.array_equal(labels.argmax(axis=1), classes):
            return "kept"
        return "one class each (hard)"
    return f"soft: two classes mixed (largest share {top.min():.2f} to {top.max():.2f})"


def format_views(v: Views) -> str:
    """The numbers behind the picture, as text."""
    width = max(len(view.spec) for view in v.augmented + v.extended) + 2
    lines = [f"1. augmentation: each transform alone on {len(v.originals)} training digits "
             "(8x8, pixels in [0, 1])",
             "",
             f"   {'transform':<{width}}mean |change| per pixel  labels"]
    for view in v.augmented:
        lines.append(f"   {view.spec:<{width}}{view.change:>24.3f}  "
                     f"{_label_text(view.labels, v.classes)}")
    lines += ["",
              "2. new objects (--extend): added to the training set once, before training",
              ""]
    for view in v.extended:
        lines.append(f"   {view.spec:<{width}}{len(view.x)} new objects, labels "
                     f"{_label_text(view.labels, None)}")
    lines += ["", "3. generated data sets (--data NAME)", ""]
    for name, data in v.generated.items():
        shape = "x".join(str(s) for s in data.x.shape[1:])
        lines.append(f"   {name:<{width}}{len(data)} objects of shape {shape}, "
                     f"{data.classes} classes")
    moved = np.linalg.norm(v.noisy - v.features, axis=1).mean()
    lines += ["",
              "4. feature space (--feature-augment LAYER:noise=S or LAYER:mixup=A): the same "
              "transforms",
              "   on a hidden layer's outputs, here the blobs' 2-D points",
              "",
              f"   {f'noise={FEATURE_NOISE:g}':<{width}}moves each point by {moved:.3f} on "
              "average",
              f"   {f'mixup={FEATURE_MIXUP:g}':<{width}}puts each point on the segment to a "
              "random partner"]
    return "\n".join(lines)


def plot_views(v: Views, path: str | Path) -> None:
    """Draw the digits under each transform, the new objects, the generated data sets and the
    feature-space simulation in one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from graphc.files import write_figure

    rows = [("original", v.originals)] + [(view.spec, view.x) for view in v.augmented]
    rows += [(view.spec, view.x[:SHOWN]) for view in v.extended]
    fig = plt.figure(figsize=(9.5, 1.0 * len(rows) + 2.8))
    grid = fig.add_gridspec(len(rows) + 3, SHOWN + 4)
    for r, (label, images) in enumerate(rows):
        for c in range(min(SHOWN, len(images))):
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(images[c, 0], cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    half = len(rows) // 2
    bottom = [grid[len(rows):, 0:3], grid[len(rows):, 3:6], grid[len(rows):, 7:]]
    points = [(name, data) for name, data in v.generated.items() if data.x.ndim == 2]
    for spot, (name, data) in zip(bottom, points, strict=False):
        ax = _bare(fig.add_subplot(spot), f"--data {name}")
        ax.scatter(data.x[:, 0], data.x[:, 1], c=data.y, s=5, cmap="tab10")
    ax = _bare(fig.add_subplot(grid[:half, SHOWN + 1:]), "feature space")
    ax.scatter(v.features[:, 0], v.features[:, 1], c=v.feature_classes, s=5, cmap="tab10")
    ax.scatter(v.noisy[:, 0], v.noisy[:, 1], s=4, marker="x", color="0.5",
               label=f"noise={FEATURE_NOISE:g}")
    ax.scatter(v.mixed[:, 0], v.mixed[:, 1], s=4, marker="+", color="k",
               label=f"mixup={FEATURE_MIXUP:g}")
    ax.legend(fontsize=7, loc="best")
    images = v.generated.get("images")
    if images is not None:
        ax = _bare(fig.add_subplot(grid[half:len(rows), SHOWN + 1:]),
                   "--data images (a class each)")
        ax.imshow(_montage([images.x[int(np.flatnonzero(images.y == c)[0]), 0]
                            for c in range(images.classes)]), cmap="gray_r")
    fig.tight_layout()
    write_figure(fig, path)


def _bare(ax, title: str):
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def _montage(images: list[np.ndarray]) -> np.ndarray:
    """Tile equal-sized images in a square-ish grid, one blank pixel between them."""
    side = int(np.ceil(np.sqrt(len(images))))
    h, w = images[0].shape
    out = np.zeros((side * (h + 1) - 1, side * (w + 1) - 1))
    for k, image in enumerate(images):
        r, c = divmod(k, side)
        out[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = image
    return out
