"""The training loop (graphc.train): it learns a small synthetic problem, both backends give
the same run, checkpoints round-trip exactly and are written atomically, a resumed run equals
an uninterrupted one bit for bit, masks keep pruned weights at zero (also when a pruned
checkpoint is resumed), penalty specs are saved, and bad configurations are named."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from graphc import nn
from graphc.dsl import GraphBuilder
from graphc.errors import GraphcError, UsageError
from graphc.ir import Graph, Value
from graphc.train.checkpoint import (
    META_KEY,
    Checkpoint,
    load_checkpoint,
    resume,
    save_checkpoint,
    sparse_masks,
)
from graphc.train.data import Dataset, make_blobs_dataset, make_spirals
from graphc.train.loop import EpochLog, TrainConfig, TrainResult, penalties, train


def spiral_mlp(batch: int, hidden: int = 64) -> Graph:
    """2 -> hidden -> hidden -> 3 with ReLU."""
    b = GraphBuilder("spiral_mlp", seed=0)
    x = b.input("x", (batch, 2))
    h = nn.relu(nn.linear(x, hidden, name="fc1"))
    h = nn.relu(nn.linear(h, hidden, name="fc2"))
    b.output(nn.linear(h, 3, name="fc3"), "logits")
    return b.build()


def regularized_mlp(batch: int) -> Graph:
    """2 -> 16 -> BN -> ReLU -> dropout -> 3: every kind of carried state and randomness.

    fc1 has no bias: a bias in front of a train-mode BN has gradient 0, so it would only carry
    rounding noise."""
    b = GraphBuilder("regularized_mlp", seed=1)
    x = b.input("x", (batch, 2))
    h = nn.linear(x, 16, bias=False, name="fc1")
    h = nn.relu(nn.batch_norm(h, momentum=0.8, name="bn"))
    h = nn.dropout(h, 0.2, name="drop")
    b.output(nn.linear(h, 3, name="fc2"), "logits")
    return b.build()


@pytest.fixture(scope="module")
def spirals() -> tuple[Dataset, Dataset]:
    return make_spirals(600, 3, seed=0, noise=0.1).split(0.25, seed=0)


@pytest.fixture(scope="module")
def blobs() -> tuple[Dataset, Dataset]:
    return make_blobs_dataset(120, classes=3, features=2, seed=0).split(0.25, seed=0)


def history_without_time(history: list[EpochLog]) -> list[dict[str, float]]:
    return [{k: v for k, v in asdict(h).items() if k != "seconds"} for h in history]


# ----- learning --------------------------------------------------------------------------------


def test_training_learns_the_spirals(spirals: tuple[Dataset, Dataset]) -> None:
    """Three interleaved spiral arms are not linearly separable; a 2-hidden-layer MLP trained
    with SGD + momentum and a cosine schedule separates them (measured: 100% from epoch ~30)."""
    train_set, test_set = spirals
    config = TrainConfig(epochs=60, batch=32, lr=0.1, momentum=0.9, weight_decay=0.0)
    result = train(spiral_mlp, train_set, test_set, config, progress=False)
    assert len(result.history) == 60 and result.steps == 60 * (len(train_set) // 32)
    assert [h.epoch for h in result.history] == list(range(1, 61))
    assert result.test_accuracy >= 0.95
    assert result.history[-1].train_accuracy >= 0.95
    assert result.history[-1].loss < 0.3 * result.history[0].loss
    # The cosine schedule: lr(epoch) = 0.05 (1 + cos(pi epoch / 60)).
    for h in result.history:
        assert h.lr == pytest.approx(0.05 * (1 + np.cos(np.pi * (h.epoch - 1) / 60)), rel=1e-12)
    # The trained state predicts the test set with the accuracy the history reports.
    forward = spiral_mlp(len(test_set))
    w = {n: result.state[n].astype(np.float64) for n in forward.params()}
    h1 = np.maximum(test_set.x @ w["fc1.weight"].T + w["fc1.bias"], 0)
    h2 = np.maximum(h1 @ w["fc2.weight"].T + w["fc2.bias"], 0)
    logits = h2 @ w["fc3.weight"].T + w["fc3.bias"]
    assert np.mean(np.argmax(logits, 1) == test_set.y) == pytest.approx(result.test_accuracy)


def test_interpreter_backend_gives_the_same_run(blobs: tuple[Dataset, Dataset]) -> None:
    """Same seed, same batches, masks and noise: the histories and the final states agree up to
    float32 summation order (relative 1e-6 per step, measured; bounds 1e-4 of each array's scale
    after 12 steps). Accuracies are counts of argmaxes, equal unless a logit pair ties to 1e-6."""
    train_set, test_set = blobs
    config = TrainConfig(epochs=3, batch=16, lr=0.05, momentum=0.9, seed=3,
                         feature_augment=("fc1:noise=0.1",), augment="noise=0.05")
    runs = {backend: train(regularized_mlp, train_set, test_set,
                           replace(config, backend=backend), progress=False)
            for backend in ("onnxruntime", "interpreter")}
    a, b = runs["onnxruntime"], runs["interpreter"]
    assert a.steps == b.steps == 3 * (len(train_set) // 16)
    for ha, hb in zip(a.history, b.history, strict=True):
        assert ha.epoch == hb.epoch and ha.lr == hb.lr
        assert ha.loss == pytest.approx(hb.loss, rel=1e-5)
        assert ha.train_accuracy == hb.train_accuracy
        assert ha.test_accuracy == hb.test_accuracy
    assert sorted(a.state) == sorted(b.state)
    for name in a.state:
        scale = float(np.abs(b.state[name]).max())
        np.testing.assert_allclose(a.state[name], b.state[name], rtol=0, atol=1e-4 * scale,
                                   err_msg=name)
    assert "bn.running_mean" in a.state and "fc1.weight.velocity" in a.state


def test_frozen_layers_keep_their_weights_until_unfrozen(blobs: tuple[Dataset, Dataset]
                                                         ) -> None:
    train_set, test_set = blobs
    initial = regularized_mlp(16)
    fc1 = initial.const_value(Value("fc1.weight"))
    # A constant learning rate: a cosine schedule would depend on the number of epochs.
    config = TrainConfig(epochs=2, batch=16, freeze=("fc1.*",), seed=1, schedule="constant")
    frozen = train(regularized_mlp, train_set, test_set, config, progress=False)
    # Checkpoints hold the whole model: the frozen weights come back unchanged, without
    # optimizer state.
    assert frozen.state["fc1.weight"].tobytes() == fc1.tobytes()
    assert "fc1.weight.velocity" not in frozen.state
    assert not np.array_equal(frozen.state["fc2.weight"],
                              initial.const_value(Value("fc2.weight")))
    thawed = train(regularized_mlp, train_set, test_set, replace(config, epochs=3, unfreeze_at=2),
                   progress=False)
    assert thawed.state["fc1.weight"].shape == fc1.shape
    assert not np.array_equal(thawed.state["fc1.weight"], fc1)
    # The first two epochs were the frozen run's.
    assert history_without_time(thawed.history[:2]) == history_without_time(frozen.history)


def test_frozen_layers_from_given_weights_stay_bit_identical(blobs: tuple[Dataset, Dataset]
                                                             ) -> None:
    """Transfer learning: start from given weights, freeze fc1; its weights come back
    unchanged and the test accuracy is that of the returned state."""
    train_set, test_set = blobs
    given = {"fc1.weight": np.random.default_rng(2).standard_normal((16, 2)).astype(np.float32)}
    config = TrainConfig(epochs=2, batch=16, freeze=("fc1.*",), seed=1)
    result = train(regularized_mlp, train_set, test_set, config, state=given, progress=False)
    assert result.state["fc1.weight"].tobytes() == given["fc1.weight"].tobytes()
    assert "fc1.weight.velocity" not in result.state
    assert not np.array_equal(result.state["fc2.weight"],
                              regularized_mlp(16).const_value(Value("fc2.weight")))


# ----- checkpoints -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_run(blobs: tuple[Dataset, Dataset]) -> tuple[TrainResult, TrainConfig]:
    train_set, test_set = blobs
    config = TrainConfig(epochs=2, batch=16, optimizer="adam", seed=4,
                         feature_augment=("fc1:noise=0.1",))
    return train(regularized_mlp, train_set, test_set, config, progress=False), config


def test_checkpoint_round_trip_is_exact(tmp_path: Path,
                                        short_run: tuple[TrainResult, TrainConfig]) -> None:
    result, config = short_run
    path = tmp_path / "run.npz"
    save_checkpoint(path, "regularized_mlp", result, config)
    assert sorted(os.listdir(tmp_path)) == ["run.npz"]
    ckpt = load_checkpoint(path)
    assert isinstance(ckpt, Checkpoint)
    assert sorted(ckpt.state) == sorted(result.state)
    for name, value in result.state.items():
        got = ckpt.state[name]
        assert got.dtype == value.dtype and got.shape == value.shape, name
        assert got.tobytes() == np.asarray(value).tobytes(), name
    assert ckpt.model == "regularized_mlp"
    assert ckpt.epoch == 2 and ckpt.steps == result.steps == 2 * (90 // 16)
    assert ckpt.config == config
    assert ckpt.history == result.history
    # Plain numpy reads it without pickle; the metadata is JSON.
    with np.load(path, allow_pickle=False) as npz:
        assert META_KEY in npz.files
        meta = json.loads(str(npz[META_KEY]))
    assert meta["format"] == "graphc-checkpoint" and meta["version"] == 1
    assert meta["config"]["optimizer"] == "adam"
    assert meta["config"]["feature_augment"] == ["fc1:noise=0.1"]
    # Saving again gives the same bytes (nothing time- or order-dependent).
    again = tmp_path / "again.npz"
    save_checkpoint(again, "regularized_mlp", result, config)
    assert again.read_bytes() == path.read_bytes()


def test_checkpoint_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          short_run: tuple[TrainResult, TrainConfig]) -> None:
    result, config = short_run
    path = tmp_path / "run.npz"
    save_checkpoint(path, "m", result, config)
    save_checkpoint(path, "m", result, config)  # overwriting leaves one file
    assert sorted(os.listdir(tmp_path)) == ["run.npz"]
    old = path.read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(GraphcError, match=r"cannot write .*run\.npz.*No space left on device"):
        save_checkpoint(path, "other", result, config)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["run.npz"]  # no temporary file left behind
    assert path.read_bytes() == old
    with pytest.raises(GraphcError, match=r"cannot write .*missing.*Check that the folder"):
        save_checkpoint(tmp_path / "missing" / "run.npz", "m", result, config)
    bad = TrainResult({**result.state, META_KEY: np.zeros(1)}, result.history, result.steps)
    with pytest.raises(GraphcError, match=r"a parameter is called 'graphc.meta'"):
        save_checkpoint(tmp_path / "bad.npz", "m", bad, config)
    assert sorted(os.listdir(tmp_path)) == ["run.npz"]


def _write_truncated(path: Path) -> None:
    np.savez(path, w=np.zeros(10000))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])  # a copy that stopped half-way


def _write_npy(path: Path) -> None:
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))  # one array, not an archive


NOT_CHECKPOINTS = {
    "arrays": lambda p: np.savez(p, w=np.random.default_rng(0).standard_normal((3, 3))),
    "text": lambda p: p.write_text("not a checkpoint\n"),
    "empty": lambda p: p.write_bytes(b""),
    "truncated": _write_truncated,
    "npy": _write_npy,
    "pickled": lambda p: np.savez(p, obj=np.array([{"a": 1}], dtype=object)),
    "other-format": lambda p: np.savez(p, **{META_KEY: np.array(json.dumps({"format": "x"}))}),
    "meta-not-json": lambda p: np.savez(p, **{META_KEY: np.array("{format: graphc")}),
    "meta-not-an-object": lambda p: np.savez(p, **{META_KEY: np.array("[1, 2]")}),
}


@pytest.mark.parametrize("kind", list(NOT_CHECKPOINTS))
def test_files_that_are_not_checkpoints_are_named(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.npz"
    NOT_CHECKPOINTS[kind](path)
    with pytest.raises(GraphcError, match=rf"{path}.* is not a graphc checkpoint"):
        load_checkpoint(path)


def test_checkpoint_errors_say_what_is_missing(tmp_path: Path) -> None:
    arrays = tmp_path / "arrays.npz"
    np.savez(arrays, w=np.zeros(3))
    with pytest.raises(GraphcError, match=r"expected an \.npz file with 'graphc.meta', got "
                                          r"\['w'\]"):
        load_checkpoint(arrays)
    with pytest.raises(UsageError, match=r"checkpoint '.*nowhere\.npz' does not exist"):
        load_checkpoint(tmp_path / "nowhere.npz")


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resumed_run_equals_an_uninterrupted_run(tmp_path: Path, blobs: tuple[Dataset, Dataset],
                                                 optimizer: str) -> None:
    """4 epochs in one go against 2 epochs, a checkpoint, and 2 more from the checkpoint: every
    array (parameters, momentum or Adam's moments, running statistics) and the history are
    bit-identical, with dropout, input noise, feature noise and the cosine schedule all drawing
    from the seed, and Adam's bias correction continuing from the saved step count. One
    onnxruntime thread, so that no run depends on how work was split between threads."""
    train_set, test_set = blobs
    config = TrainConfig(epochs=4, batch=16, optimizer=optimizer, momentum=0.9, seed=5,
                         threads=1, augment="noise=0.05", feature_augment=("fc1:noise=0.1",))
    whole = train(regularized_mlp, train_set, test_set, config, progress=False)
    path = tmp_path / "half.npz"

    def at_epoch_2(result: TrainResult) -> None:
        if len(result.history) == 2:
            save_checkpoint(path, "regularized_mlp", result, config)

    train(regularized_mlp, train_set, test_set, config, progress=False, on_epoch=at_epoch_2)
    ckpt = load_checkpoint(path)
    assert ckpt.epoch == 2 and ckpt.steps == 2 * (len(train_set) // 16)
    resumed = resume(ckpt, regularized_mlp, train_set, test_set, progress=False)
    assert resumed.steps == whole.steps
    assert history_without_time(resumed.history) == history_without_time(whole.history)
    assert sorted(resumed.state) == sorted(whole.state)
    for name in whole.state:
        assert resumed.state[name].tobytes() == whole.state[name].tobytes(), name
    # Not vacuous: the second half changed the state.
    assert not np.array_equal(ckpt.state["fc1.weight"], whole.state["fc1.weight"])


def test_resume_can_extend_a_run(tmp_path: Path, blobs: tuple[Dataset, Dataset]) -> None:
    train_set, test_set = blobs
    config = TrainConfig(epochs=1, batch=16, seed=6, schedule="constant")
    path = tmp_path / "one.npz"
    first = train(regularized_mlp, train_set, test_set, config, progress=False,
                  on_epoch=lambda r: save_checkpoint(path, "regularized_mlp", r, config))
    longer = resume(load_checkpoint(path), regularized_mlp, train_set, test_set, epochs=2,
                    progress=False)
    assert [h.epoch for h in longer.history] == [1, 2]
    assert longer.history[0] == first.history[0]
    assert longer.steps == 2 * first.steps


# ----- penalties and masks (pruning) -----------------------------------------------------------


def random_masks(g: Graph, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.random(g.const_value(Value(n)).shape) < 0.5 for n in ("fc1.weight",
                                                                           "fc2.weight")}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_masks_keep_pruned_weights_at_zero_through_training(blobs: tuple[Dataset, Dataset],
                                                            optimizer: str) -> None:
    """The weights under a 0 start at 0 (train() zeroes them) and stay exactly 0 through
    epochs of SGD (momentum, weight decay) or Adam with an l1 penalty; the others train."""
    train_set, test_set = blobs
    start = spiral_mlp(16)
    masks = random_masks(start, 0)
    config = TrainConfig(epochs=3, batch=16, optimizer=optimizer, weight_decay=1e-3,
                         penalty=("l1:0.01",))
    result = train(spiral_mlp, train_set, test_set, config, masks=masks, progress=False)
    for name, mask in masks.items():
        w, w0 = result.state[name], start.const_value(Value(name))
        assert w0[~mask].any(), name  # the initial weights were not 0 there
        assert np.all(w[~mask] == 0), name
        assert np.all(w[mask] != w0[mask]), name
    # The test accuracy is that of the returned state (zeros included) in numpy.
    h1 = np.maximum(test_set.x @ result.state["fc1.weight"].T + result.state["fc1.bias"], 0)
    h2 = np.maximum(h1 @ result.state["fc2.weight"].T + result.state["fc2.bias"], 0)
    logits = h2 @ result.state["fc3.weight"].T + result.state["fc3.bias"]
    assert np.mean(np.argmax(logits, 1) == test_set.y) == pytest.approx(result.test_accuracy)


def test_resume_of_a_pruned_checkpoint_keeps_its_zeros(tmp_path: Path,
                                                       blobs: tuple[Dataset, Dataset]) -> None:
    """``pruned.sparse`` of a checkpoint's data: resume() trains with masks w != 0."""
    train_set, test_set = blobs
    config = TrainConfig(epochs=1, batch=16, seed=2, schedule="constant")
    first = train(spiral_mlp, train_set, test_set, config, progress=False)
    state = dict(first.state)
    w = state["fc2.weight"].copy()
    w[np.abs(w) < np.median(np.abs(w))] = 0
    state["fc2.weight"] = w
    path = tmp_path / "pruned.npz"
    save_checkpoint(path, "spiral_mlp", TrainResult(state, first.history, first.steps), config,
                    data={"pruned": {"sparse": ["fc2.weight"], "method": "magnitude"}})
    ckpt = load_checkpoint(path)
    assert sparse_masks(ckpt.state, ckpt.data)["fc2.weight"].tolist() == (w != 0).tolist()
    longer = resume(ckpt, spiral_mlp, train_set, test_set, epochs=3, progress=False)
    assert np.all(longer.state["fc2.weight"][w == 0] == 0)
    assert np.all(longer.state["fc2.weight"][w != 0] != w[w != 0])
    assert np.count_nonzero(longer.state["fc1.weight"] == 0) == 0  # no mask there
    with pytest.raises(GraphcError, match=r"the checkpoint lists 1 pruned parameters it has no "
                                          r"values for; expected a value for every parameter in "
                                          r"pruned.sparse, got none for fc9.weight"):
        sparse_masks(ckpt.state, {"pruned": {"sparse": ["fc9.weight"]}})


def test_penalty_configuration_is_canonical_and_saved(tmp_path: Path,
                                                      short_run: tuple[TrainResult, TrainConfig]
                                                      ) -> None:
    config = TrainConfig(penalty=("L1", "group-l2:0.5", "l2:1e-4"))
    assert config.penalty == ("l1:0.001", "group-l2:0.5", "l2:0.0001")
    assert [p.kind for p in penalties(spiral_mlp(4), config)] == ["l1", "group_l2", "l2"]
    assert penalties(spiral_mlp(4), config, ["fc1.weight"])[0].params == ("fc2.weight",
                                                                          "fc3.weight")
    result, _ = short_run
    path = tmp_path / "run.npz"
    save_checkpoint(path, "regularized_mlp", result, config)
    assert load_checkpoint(path).config == config
    # A checkpoint written before --penalty existed has no "penalty" key: it loads.
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays[META_KEY]))
    del meta["config"]["penalty"]
    arrays[META_KEY] = np.array(json.dumps(meta))
    np.savez(tmp_path / "old.npz", **arrays)
    assert load_checkpoint(tmp_path / "old.npz").config == replace(config, penalty=())
    with pytest.raises(UsageError, match=r"--penalty: penalty 'l1' is given twice; expected "
                                         r"each kind of penalty once, got l1 l1:0.1"):
        TrainConfig(penalty=("l1", "l1:0.1"))
    with pytest.raises(UsageError, match=r"--penalty: the penalty has no weight to act on; "
                                         r"expected a trained Conv, Gemm or MatMul weight, got "
                                         r"all of them frozen"):
        penalties(spiral_mlp(4), config, ["fc1.weight", "fc2.weight", "fc3.weight"])


# ----- errors ----------------------------------------------------------------------------------


def test_bad_configurations_are_named() -> None:
    with pytest.raises(UsageError, match=r"unknown optimizer 'adm'; expected one of 'adam', "
                                         r"'sgd', got 'adm'. Did you mean 'adam'\?"):
        TrainConfig(optimizer="adm")
    with pytest.raises(UsageError, match=r"unknown backend 'ort'; expected one of 'interpreter', "
                                         r"'onnxruntime'"):
        TrainConfig(backend="ort")
    for field, value in (("epochs", 0), ("batch", 2.5), ("epochs", True), ("threads", 0)):
        with pytest.raises(UsageError, match=rf"--{field}: {field} must be a positive integer; "
                                             rf"expected an int >= 1, got {value!r}"):
            TrainConfig(**{field: value})
    for field, value, message in (
            ("seed", -1, r"--seed: the seed must be an integer >= 0"),
            ("lr", float("nan"), r"--lr: the learning rate must be a positive number"),
            ("lr", -0.1, r"--lr: the learning rate must be a positive number"),
            ("momentum", 1.0, r"--momentum: the momentum must be in \[0, 1\)"),
            ("schedule", "step:1,-0.1", r"step decay needs a positive factor")):
        with pytest.raises(UsageError, match=message):
            TrainConfig(**{field: value})


@pytest.mark.parametrize(("change", "error", "message"), [
    pytest.param({"loss": "hinge"}, UsageError,
                 r"unknown loss 'hinge'; expected one of 'cross_entropy', 'mse'", id="loss"),
    pytest.param({"freeze": ("fc9*",)}, UsageError,
                 r"freeze: unknown parameter pattern 'fc9\*'; expected one of 'fc1.bias', "
                 r"'fc1.weight', 'fc2.bias', 'fc2.weight', 'fc3.bias', 'fc3.weight'",
                 id="freeze"),
    pytest.param({"schedule": "cosin"}, UsageError,
                 r"unknown schedule 'cosin'.*Did you mean 'cosine'", id="schedule"),
    pytest.param({"augment": "rotat=3"}, UsageError, r"unknown augmentation 'rotat'",
                 id="augment"),
    pytest.param({"feature_augment": ("fc7:noise=0.1",)}, UsageError,
                 r"feature augmentation: unknown layer 'fc7'", id="feature-layer"),
    pytest.param({"batch": 200}, UsageError,
                 r"fewer training samples than one batch; expected >= 200, got 90", id="batch"),
])
def test_bad_training_requests_are_named(change: dict, error: type[GraphcError], message: str,
                                         blobs: tuple[Dataset, Dataset]) -> None:
    train_set, test_set = blobs
    with pytest.raises(error, match=message):
        config = replace(TrainConfig(epochs=1, batch=16), **change)
        train(lambda batch: spiral_mlp(batch, 8), train_set, test_set, config, progress=False)


def test_model_that_does_not_fit_the_data_is_named(blobs: tuple[Dataset, Dataset]) -> None:
    train_set, test_set = blobs
    config = TrainConfig(epochs=1, batch=16)
    four = make_blobs_dataset(80, classes=4, features=2, seed=0)
    with pytest.raises(UsageError, match=r"the model's output does not fit the data; expected "
                                         r"\(16, 4\) \(one score per class\), got \(16, 3\)"):
        train(spiral_mlp, four, four, config, progress=False)
    wide = make_blobs_dataset(80, classes=3, features=5, seed=0)
    with pytest.raises(UsageError, match=r"training: the data does not fit the model's input; "
                                         r"expected samples of shape \(2,\), got samples of "
                                         r"shape \(5,\)"):
        train(spiral_mlp, wide, wide, config, progress=False)


def test_checkpoint_of_another_model_is_refused(tmp_path: Path,
                                                short_run: tuple[TrainResult, TrainConfig],
                                                blobs: tuple[Dataset, Dataset]) -> None:
    result, config = short_run
    path = tmp_path / "run.npz"
    save_checkpoint(path, "regularized_mlp", result, config)
    ckpt = load_checkpoint(path)
    train_set, test_set = blobs

    def other(batch: int) -> Graph:
        return spiral_mlp(batch, hidden=16)

    with pytest.raises(GraphcError, match=r"weights for 'fc2.bias' have the wrong shape; "
                                          r"expected \(16,\), got \(3,\)"):
        resume(ckpt, other, train_set, test_set, epochs=3, progress=False)
