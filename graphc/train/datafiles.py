"""Data sets by name or file, as ``--data`` gives them: the bundled digits, the synthetic sets of
``graphc.train.data`` (``blobs``, ``xor``, ``spirals``, ``images``, with parameters as
``blobs:n=600,classes=4``), and the user's own data:

- ``FILE.npz`` with arrays ``x`` (samples, first axis = sample) and ``y`` (integer class ids),
  and optionally ``x_test`` and ``y_test``;
- ``FILE.csv`` with one sample per row and a label column: the column named ``label``, ``y``,
  ``class`` or ``target`` (any case) of a header row, else the last column; ``FILE.csv:NAME``
  chooses the column. Labels that are not integers (``cat``, ``dog``) become class ids in
  sorted order;
- a folder with one sub-folder per class (sorted names = class ids 0, 1, ...) of images
  (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.gif``), all of one size, read with matplotlib,
  as ``(N, C, H, W)`` in [0, 1] (grayscale: C = 1; RGB: C = 3, an alpha channel dropped; a
  set whose RGB images are all gray, R = G = B, has C = 1).

Without a test split of its own, a file's samples are split as the digits are: 25% test,
stratified, seed 0. Nothing is ever downloaded; no pickled objects are loaded.

>>> train, test = load_dataset("xor")
>>> train, len(test)
(Dataset('xor/train', x=(150, 2) float32, y=(150,) int64, classes=2), 50)
>>> load_dataset("blobs:n=40,features=3")[0].x.shape
(30, 3)
"""

from __future__ import annotations

import ast
import inspect
import math
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from graphc.errors import GraphcError, UsageError, unknown
from graphc.train.data import (
    Dataset,
    load_digits,
    make_blobs_dataset,
    make_images,
    make_spirals,
    make_xor,
)

GENERATORS: dict[str, Callable[..., Dataset]] = {
    "blobs": make_blobs_dataset, "xor": make_xor, "spirals": make_spirals,
    "images": make_images,
}
NAMED = ("digits", *GENERATORS)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
LABEL_COLUMNS = ("label", "y", "class", "target")
TEST_SIZE = 0.25


def data_kind(spec: str | None) -> str | None:
    """Return what ``spec`` names: ``digits``, ``generator``, ``npz``, ``csv``, ``folder``, or
    None for none of these.

    >>> data_kind("digits"), data_kind("spirals:noise=0.1"), data_kind("a.NPZ"), data_kind("x")
    ('digits', 'generator', 'npz', None)
    """
    if spec is None:
        return None
    name = spec.partition(":")[0]
    if spec == "digits":
        return "digits"
    if name in GENERATORS:
        return "generator"
    suffix = Path(spec).suffix.lower()
    if suffix == ".npz":
        return "npz"
    if suffix == ".csv" or Path(name).suffix.lower() == ".csv":
        return "csv"
    if Path(spec).is_dir():
        return "folder"
    return None


def check_spec(spec: str, where: str = "--data") -> str:
    """Refuse a ``spec`` that names no data set (an unknown name, another kind of file, a
    missing file); return its kind."""
    kind = data_kind(spec)
    if kind is None:
        if Path(spec).suffix or "/" in spec:
            raise UsageError(f"cannot read data from {spec!r}", where=where,
                             expected="a data set name, an .npz or .csv file, or a folder of "
                             "class folders", got="no such folder" if not Path(spec).exists()
                             else f"a {Path(spec).suffix or 'file without suffix'} file")
        raise unknown("data set", spec, NAMED, where=where, cls=UsageError)
    if kind in ("npz", "csv") and not Path(spec.rpartition(":")[0] if kind == "csv" and
                                           not spec.lower().endswith(".csv") else spec).is_file():
        raise UsageError(f"{spec} does not exist", where=where, expected=f"an .{kind} file",
                         got="no such file", hint="Check the path (it is relative to the "
                         "current folder).")
    return kind


def load_dataset(spec: str, where: str = "--data") -> tuple[Dataset, Dataset]:
    """Return ``(train, test)`` of data set ``spec`` (see the module docstring)."""
    kind = check_spec(spec, where)
    if kind == "digits":
        return load_digits()
    if kind == "generator":
        name, _, params = spec.partition(":")
        full = _generate(name, params, where)
    elif kind == "npz":
        return _npz(spec, where)
    elif kind == "csv":
        full = _csv(spec, where)
    else:
        full = _folder(spec, where)
    return _split(full, where)


def _split(full: Dataset, where: str) -> tuple[Dataset, Dataset]:
    if len(full) < 2:
        raise UsageError(f"data set {full.name!r} has too few samples to split", where=where,
                         expected="at least 2 samples (25% become the test split)",
                         got=len(full))
    try:
        return full.split(TEST_SIZE, seed=0)
    except UsageError:
        # A class with a single sample cannot be stratified: split without.
        return full.split(TEST_SIZE, seed=0, stratify=False)


def _generate(name: str, params: str, where: str) -> Dataset:
    make = GENERATORS[name]
    known = [p for p in inspect.signature(make).parameters]
    kwargs: dict[str, Any] = {}
    for item in (p.strip() for p in params.split(",") if p.strip()):
        key, eq, value = item.partition("=")
        key = key.strip()
        if key not in known:
            raise unknown(f"parameter of {name}", key, known, where=where, cls=UsageError)
        try:
            if not eq:
                raise ValueError(item)
            number = ast.literal_eval(value.strip())
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                raise ValueError(item)
        except (ValueError, SyntaxError):
            raise UsageError(f"cannot read {item!r} of {name}", where=where,
                             expected="KEY=NUMBER, e.g. " + f"{name}:n=600", got=repr(item)
                             ) from None
        kwargs[key] = number
    return make(**kwargs)


def _labels(y: np.ndarray, source: str, where: str) -> np.ndarray:
    """Return integer class ids: integers as they are, integral floats converted."""
    if y.ndim != 1:
        raise GraphcError(f"the labels of {source} are not one per sample", where=where,
                          expected="shape (N,)", got=f"shape {y.shape}")
    if y.size and np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise GraphcError(f"the labels of {source} are not class ids", where=where,
                              expected="integers 0, 1, ...", got=f"{y.dtype} values such as "
                              f"{y[~(y == np.round(y))][:1].tolist() or y[:1].tolist()}")
        y = y.astype(np.int64)
    elif y.size and not np.issubdtype(y.dtype, np.integer):
        raise GraphcError(f"the labels of {source} are not class ids", where=where,
                          expected="integers 0, 1, ...", got=str(y.dtype))
    if y.size and y.min() < 0:
        raise GraphcError(f"the labels of {source} are not class ids", where=where,
                          expected="integers >= 0", got=f"the label {y.min()}")
    return y.astype(np.int64)


def _samples(x: np.ndarray, n: int, source: str, where: str) -> np.ndarray:
    if x.ndim < 2 or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or \
            np.issubdtype(x.dtype, np.complexfloating):
        raise GraphcError(f"the samples of {source} are not a batch of numbers", where=where,
                          expected="real numbers of shape (N, ...), first axis = sample",
                          got=f"shape {x.shape} {x.dtype}")
    if x.shape[0] != n:
        raise GraphcError(f"{source} holds {x.shape[0]} samples and {n} labels", where=where,
                          expected=f"{x.shape[0]} labels (one per sample)", got=n)
    if n == 0:
        raise GraphcError(f"{source} holds no samples", where=where, expected="N >= 1",
                          got="a batch of 0")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise GraphcError(f"{source} holds NaN or inf samples", where=where,
                          expected="finite numbers",
                          got=f"{int(x.size - np.count_nonzero(np.isfinite(x)))} NaN or inf")
    return x


def read_arrays(path: str | Path, where: str) -> dict[str, np.ndarray]:
    """Read the arrays of an ``.npy`` (as ``{"": array}``) or ``.npz`` file without pickled
    objects, refusing array headers that declare more data than the file holds."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path} does not exist", where=where, expected="an .npy or .npz file",
                         got="no such file" if not path.exists() else "a folder")
    try:
        if zipfile.is_zipfile(path):
            _check_headers(path, where)
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        with path.open("rb") as f:
            if f.read(6) != b"\x93NUMPY":
                raise GraphcError(f"cannot read {str(path)!r}", where=where,
                                  expected="an .npy or .npz file written by numpy",
                                  got="neither an .npy file nor an .npz archive",
                                  hint="Save arrays with numpy.save or numpy.savez.")
            f.seek(0)
            shape, dtype = _header(f)
            if math.prod(shape) * dtype.itemsize > path.stat().st_size:
                raise GraphcError(f"{path} declares more data than it holds", where=where,
                                  expected=f"at most {path.stat().st_size:,} bytes",
                                  got=f"shape {tuple(shape)} of {dtype}")
        return {"": np.load(path, allow_pickle=False)}
    except GraphcError:
        raise
    except Exception as err:  # noqa: BLE001 - numpy raises many kinds for a file it cannot read
        first = str(err).split(". ")[0].splitlines()[0][:200] if str(err) else ""
        if "allow_pickle" in first:
            first = "an array of pickled Python objects, which graphc never loads"
        raise GraphcError(f"cannot read {str(path)!r}", where=where,
                          expected="an .npy or .npz file written by numpy (no pickled objects)",
                          got=first or type(err).__name__) from None


def _header(stream: Any) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(stream)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
        np.lib.format.read_array_header_2_0
    shape, _, dtype = read(stream)
    return tuple(shape), dtype


def _check_headers(path: Path, where: str) -> None:
    with zipfile.ZipFile(path) as archive:
        for member in archive.infolist():
            if not member.filename.endswith(".npy"):
                continue
            with archive.open(member) as stream:
                shape, dtype = _header(stream)
            if math.prod(shape) * dtype.itemsize > member.file_size:
                name = member.filename.removesuffix(".npy")
                raise GraphcError(f"{path} declares more data for {name!r} than it holds",
                                  where=where, expected=f"at most {member.file_size:,} bytes",
                                  got=f"shape {tuple(shape)} of {dtype}")


def _npz(spec: str, where: str) -> tuple[Dataset, Dataset]:
    arrays = read_arrays(spec, where)
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise GraphcError(f"{spec} has no array {missing[0]!r}", where=where,
                          expected="arrays x and y (optionally x_test and y_test)",
                          got="arrays " + (", ".join(sorted(arrays)) or "none"))
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise GraphcError(f"{spec} has only one of x_test and y_test", where=where,
                          expected="both or neither", got=", ".join(sorted(arrays)))
    name = Path(spec).stem
    y = _labels(arrays["y"], f"{spec} (y)", where)
    x = _samples(arrays["x"], len(y), f"{spec} (x)", where)
    if "x_test" not in arrays:
        return _split(Dataset(x, y, int(y.max()) + 1, name), where)
    y_test = _labels(arrays["y_test"], f"{spec} (y_test)", where)
    x_test = _samples(arrays["x_test"], len(y_test), f"{spec} (x_test)", where)
    if x_test.shape[1:] != x.shape[1:]:
        raise GraphcError(f"the samples of x_test and x in {spec} differ in shape", where=where,
                          expected=f"samples of shape {x.shape[1:]}",
                          got=f"samples of shape {x_test.shape[1:]}")
    classes = int(max(y.max(), y_test.max())) + 1
    return (Dataset(x, y, classes, f"{name}/train"),
            Dataset(x_test, y_test, classes, f"{name}/test"))


def _csv(spec: str, where: str) -> Dataset:
    import csv

    path, column = (spec, None) if spec.lower().endswith(".csv") else spec.rsplit(":", 1)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if any(cell.strip() for cell in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise GraphcError(f"cannot read {path!r}", where=where, expected="a CSV text file",
                          got=str(err)[:200]) from None
    if not rows:
        raise GraphcError(f"{path} holds no rows", where=where, expected="a header and rows "
                          "of numbers, or rows of numbers", got="an empty file")
    header = rows[0] if not all(_is_number(c) for c in rows[0]) else None
    body = rows[1:] if header else rows
    width = len(rows[0])
    for k, row in enumerate(body):
        if len(row) != width:
            raise GraphcError(f"{path}, row {k + 1 + (header is not None)} has {len(row)} "
                              "columns", where=where, expected=f"{width} (as the first row)",
                              got=len(row))
    names = [h.strip() for h in header] if header else [str(k) for k in range(width)]
    if column is not None:
        if column not in names:
            raise unknown(f"column of {path}", column, names, where=where, cls=UsageError)
        label = names.index(column)
    else:
        found = [k for k, h in enumerate(names) if header and h.lower() in LABEL_COLUMNS]
        label = found[0] if found else width - 1
    if width < 2:
        raise GraphcError(f"{path} has {width} column", where=where,
                          expected="feature columns and a label column", got=width)
    cells = np.array(body, dtype=object).reshape(len(body), width)
    features = np.delete(cells, label, axis=1)
    try:
        x = features.astype(np.float64)
    except ValueError:
        bad = next(c for c in features.ravel() if not _is_number(c))
        raise GraphcError(f"{path} has a feature that is not a number", where=where,
                          expected=f"numbers in every column but {names[label]!r}",
                          got=repr(bad), hint=f"Name the label column: {path}:COLUMN."
                          ) from None
    raw = [c.strip() for c in cells[:, label]]
    if all(_is_number(c) for c in raw):
        y = _labels(np.array([float(c) for c in raw]), f"{path} (column {names[label]!r})",
                    where)
        classes = int(y.max()) + 1 if len(y) else 1
    else:
        kinds = sorted(set(raw))
        y = np.array([kinds.index(c) for c in raw], np.int64)
        classes = len(kinds)
    x = _samples(x, len(y), path, where)
    return Dataset(x, y, max(classes, 1), Path(path).stem)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _folder(spec: str, where: str) -> Dataset:
    from matplotlib import image

    root = Path(spec)
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise GraphcError(f"the folder {spec!r} has {len(classes)} class folder"
                          f"{'s' if len(classes) != 1 else ''}", where=where,
                          expected="one sub-folder per class, at least 2",
                          got=", ".join(p.name for p in classes) or "none")
    xs, ys, first = [], [], None
    for label, folder in enumerate(classes):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise GraphcError(f"the class folder {str(folder)!r} holds no images", where=where,
                              expected=f"{', '.join(IMAGE_SUFFIXES)} files", got="none")
        for path in files:
            try:
                pixels = np.asarray(image.imread(path))
            except Exception as err:  # noqa: BLE001 - Pillow and matplotlib raise many kinds
                raise GraphcError(f"cannot read the image {str(path)!r}", where=where,
                                  expected="a readable image",
                                  got=str(err).splitlines()[0][:200] if str(err) else
                                  type(err).__name__) from None
            sample = _chw(pixels)
            if first is None:
                first = (path, sample.shape)
            elif sample.shape != first[1]:
                raise GraphcError(f"the image {str(path)!r} differs in size from "
                                  f"{str(first[0])!r}", where=where,
                                  expected=f"(channels, height, width) {first[1]} (one size "
                                  "for all)", got=sample.shape,
                                  hint="Resize the images to one size first.")
            xs.append(sample)
            ys.append(label)
    x = np.stack(xs)
    if x.shape[1] == 3 and np.array_equal(x[:, 0], x[:, 1]) and np.array_equal(x[:, 0], x[:, 2]):
        x = x[:, :1]  # grayscale images saved as RGB: one channel
    return Dataset(x, np.array(ys, np.int64), len(classes), root.name or spec)


def _chw(pixels: np.ndarray) -> np.ndarray:
    """An image as ``(C, H, W)`` float32 in [0, 1]: 8-bit values scaled, alpha dropped."""
    scaled = pixels / 255.0 if np.issubdtype(pixels.dtype, np.integer) else pixels
    if scaled.ndim == 2:
        return scaled[None].astype(np.float32)
    if scaled.shape[-1] == 4:
        scaled = scaled[..., :3]
    return np.moveaxis(scaled, -1, 0).astype(np.float32)
