"""Checkpoints: a training run written after every epoch, read back and resumed.

A checkpoint (``save_checkpoint``) is a numpy ``.npz`` file without pickled objects: one array
per parameter, running statistic and optimizer slot under its graph name, and ``graphc.meta``
(``META_KEY``), a JSON string with the model, the epoch, the step count, the training
configuration, the history and a description of the data. ``load_checkpoint`` reads it back
with ``allow_pickle=False``; ``resume`` continues its run (``graphc.train.loop.train``) exactly
as if it had not stopped.

A distilled checkpoint's data holds its teacher and settings in ``data["distill"]``; ``resume``
needs that teacher again (``graphc.train.distill.Teacher``).

A pruned checkpoint's data lists its masked parameters in ``data["pruned"]["sparse"]`` (the mask
is ``w != 0`` of the stored weight); ``sparse_masks`` reads it back and ``resume`` trains with it.

>>> import tempfile
>>> result = TrainResult({"fc.weight": np.array([[0.5, 0.0]], np.float32)}, steps=3)
>>> with tempfile.TemporaryDirectory() as folder:
...     save_checkpoint(Path(folder) / "run.ckpt", "mlp", result, TrainConfig(epochs=1),
...                     data={"data": "digits", "pruned": {"sparse": ["fc.weight"]}})
...     checkpoint = load_checkpoint(Path(folder) / "run.ckpt")
>>> checkpoint.model, checkpoint.steps, checkpoint.config.epochs
('mlp', 3, 1)
>>> sparse_masks(checkpoint.state, checkpoint.data)
{'fc.weight': array([[ True, False]])}
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from graphc.errors import GraphcError, UsageError
from graphc.files import write_atomic
from graphc.train.data import Dataset
from graphc.train.distill import Distillation, Teacher
from graphc.train.loop import Build, EpochLog, TrainConfig, TrainResult, require_all, train

CHECKPOINT_FORMAT = "graphc-checkpoint"
# graphc writes checkpoints uncompressed (np.savez): arrays that declare many times the file's
# size are a compressed "zip bomb", refused before anything is unpacked.
MAX_EXPANSION = 16
SLACK_BYTES = 1 << 20
META_KEY = "graphc.meta"


@dataclass
class Checkpoint:
    """A checkpoint's arrays (by graph name) and its metadata."""

    state: dict[str, np.ndarray]
    model: str
    epoch: int
    steps: int
    config: TrainConfig
    history: list[EpochLog]
    data: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(path: str | Path, model: str, result: TrainResult, config: TrainConfig,
                    data: Mapping[str, Any] | None = None) -> None:
    """Write ``result`` as an ``.npz`` checkpoint, atomically (a crash leaves the old file).

    ``data`` describes the data set trained on (JSON-able: name, class subset, ...), so that a
    resumed run and an accuracy check use the same data."""
    meta = {"format": CHECKPOINT_FORMAT, "version": 1, "model": model,
            "epoch": len(result.history), "steps": result.steps, "config": asdict(config),
            "history": [asdict(h) for h in result.history], "data": dict(data or {})}
    if META_KEY in result.state:
        raise GraphcError(f"a parameter is called {META_KEY!r}", hint="Rename it.")
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in sorted(result.state.items())},
             **{META_KEY: np.array(json.dumps(meta, sort_keys=True))})
    write_atomic(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint`` (no pickled objects are loaded)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint {str(path)!r} does not exist",
                         hint="Write one with `graphc train MODEL -o FILE`.")
    try:
        _check_declared_sizes(path)
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except GraphcError:
        raise
    except Exception as err:  # numpy raises many kinds for a file that is not an .npz
        raise GraphcError(f"{path} is not a graphc checkpoint", expected="an .npz file",
                          got=f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                          if str(err) else type(err).__name__) from None
    if META_KEY not in arrays:
        raise GraphcError(f"{path} is not a graphc checkpoint",
                          expected=f"an .npz file with {META_KEY!r}", got=sorted(arrays)[:5])
    for name, array in sorted(arrays.items()):
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            raise GraphcError(f"{path} holds non-finite values in {name!r}",
                              where=f"checkpoint {str(path)!r}, array {name!r}",
                              expected="finite numbers",
                              got=f"{bad} NaN or inf of {array.size}",
                              hint="The run diverged before this was saved: train again with "
                                   "a lower --lr, from an earlier checkpoint.")
    try:
        meta = json.loads(str(arrays.pop(META_KEY)))
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        config = meta["config"]
        # A checkpoint written before an option existed lacks its key: the default applies.
        for key in ("feature_augment", "freeze", "penalty"):
            if key in config:
                config[key] = tuple(config[key])
        return Checkpoint(arrays, str(meta["model"]), int(meta["epoch"]), int(meta["steps"]),
                          TrainConfig(**config), [EpochLog(**h) for h in meta["history"]],
                          dict(meta.get("data", {})))
    except GraphcError:
        raise
    except Exception as err:
        raise GraphcError(f"{path} is not a graphc checkpoint",
                          expected=f"{META_KEY!r} holding the {CHECKPOINT_FORMAT} JSON",
                          got=f"{type(err).__name__}: {err}"[:200]) from None


def _check_declared_sizes(path: Path) -> None:
    """Refuse an .npz whose members declare far more bytes than the file holds, or whose array
    headers declare more elements than their member holds, before any array is read."""
    size = path.stat().st_size
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        declared = sum(m.file_size for m in members)
        if declared > MAX_EXPANSION * size + SLACK_BYTES:
            raise GraphcError(f"{path} declares {declared:,} bytes of arrays in a {size:,}-byte "
                              "file", where=f"checkpoint {str(path)!r}",
                              expected=f"at most {MAX_EXPANSION}x the file's size "
                              "(graphc writes checkpoints uncompressed)",
                              got=f"{declared / max(size, 1):,.0f}x",
                              hint="The file is not a checkpoint graphc wrote; refusing to unpack "
                                   "it.")
        for member in members:
            if not member.filename.endswith(".npy"):
                continue
            with archive.open(member) as stream:
                version = np.lib.format.read_magic(stream)
                header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, _, dtype = header(stream)
            need = math.prod(shape) * dtype.itemsize
            if need > member.file_size:
                name = member.filename.removesuffix(".npy")
                raise GraphcError(f"{path} declares more data for {name!r} than it holds",
                                  where=f"checkpoint {str(path)!r}, array {name!r}",
                                  expected=f"at most {member.file_size:,} bytes",
                                  got=f"shape {tuple(shape)} of {dtype} ({need:,} bytes)",
                                  hint="The file is truncated or was not written by graphc.")


def sparse_masks(state: Mapping[str, np.ndarray], data: Mapping[str, Any]
                 ) -> dict[str, np.ndarray]:
    """Return the masks of a pruned checkpoint: ``state[p] != 0`` for every parameter ``p``
    that ``data["pruned"]["sparse"]`` lists (none if the record has no such list).

    >>> sparse_masks({"w": np.array([0.5, 0.0])}, {"pruned": {"sparse": ["w"]}})
    {'w': array([ True, False])}
    """
    names = (data.get("pruned") or {}).get("sparse") or []
    require_all(names, state, "the checkpoint lists {count} pruned parameters it has no "
                "values for", expected="a value for every parameter in pruned.sparse")
    return {name: np.asarray(state[name]) != 0 for name in names}


def resume(checkpoint: Checkpoint, build: Build, train_set: Dataset, test_set: Dataset, *,
           epochs: int | None = None, progress: bool = True,
           on_epoch: Callable[[TrainResult], None] | None = None,
           teacher: Teacher | None = None) -> TrainResult:
    """Continue a checkpoint's run with its own configuration, up to ``epochs`` in all (the
    pruned parameters its data lists keep their zeros: ``sparse_masks``). A distilled run
    continues with ``teacher``, which must have the settings the checkpoint records."""
    record = checkpoint.data.get("distill")
    if record and teacher is None:
        raise UsageError("the checkpoint was distilled: resuming it needs its teacher",
                         expected=f"teacher {record.get('teacher')!r} "
                         f"({record.get('teacher_weights')})", got="no teacher")
    if teacher is not None:
        want = Distillation.from_record(record) if record else None
        if want != teacher.settings:
            raise UsageError("the teacher's settings differ from the checkpoint's",
                             expected=want.record() if want else "no teacher (a plain run)",
                             got=teacher.settings.record())
    config = checkpoint.config if epochs is None else replace(checkpoint.config, epochs=epochs)
    return train(build, train_set, test_set, config, state=checkpoint.state,
                 start_epoch=checkpoint.epoch, steps=checkpoint.steps,
                 history=checkpoint.history, progress=progress, on_epoch=on_epoch,
                 masks=sparse_masks(checkpoint.state, checkpoint.data), teacher=teacher)
