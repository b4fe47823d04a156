"""Layer helpers on top of the DSL: linear, conv1d/2d/3d, pools, norms, dropout and activations.

Each helper names its node after the layer (``block1.conv``) and its parameters after the layer
(``block1.conv.weight``, ``block1.conv.bias``); parameter layouts follow PyTorch (linear weight
``(out, in)``, conv weight ``(out, in / groups, kh, kw)``). The convolutions, pools and ``pad``
are written in ``graphc.nn_spatial`` and used from here.

>>> from graphc.dsl import GraphBuilder
>>> b = GraphBuilder("tiny")
>>> x = b.input("x", (1, 1, 8, 8))
>>> h = relu(conv2d(x, 4, 3, padding="same", name="conv"))
>>> h.shape
(1, 4, 8, 8)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from graphc.dsl import Tensor
from graphc.errors import GraphcError, ShapeError, unknown
from graphc.nn_spatial import _layer, _need_rank, layer
from graphc.nn_spatial import avg_pool1d as avg_pool1d
from graphc.nn_spatial import avg_pool2d as avg_pool2d
from graphc.nn_spatial import avg_pool3d as avg_pool3d
from graphc.nn_spatial import conv1d as conv1d
from graphc.nn_spatial import conv2d as conv2d
from graphc.nn_spatial import conv3d as conv3d
from graphc.nn_spatial import conv_transpose1d as conv_transpose1d
from graphc.nn_spatial import conv_transpose2d as conv_transpose2d
from graphc.nn_spatial import conv_transpose3d as conv_transpose3d
from graphc.nn_spatial import global_avg_pool as global_avg_pool
from graphc.nn_spatial import global_max_pool as global_max_pool
from graphc.nn_spatial import max_pool1d as max_pool1d
from graphc.nn_spatial import max_pool2d as max_pool2d
from graphc.nn_spatial import max_pool3d as max_pool3d
from graphc.nn_spatial import pad as pad

# ----- layers with parameters ---------------------------------------------------------------


@layer
def linear(x: Tensor, out_features: int, *, bias: bool = True, init: str = "he",
           in_features: int | None = None, name: str | None = None) -> Tensor:
    """Fully connected layer ``y = x W^T + b`` on a (batch, features) input (Gemm, transB=1).

    ``in_features``, when given, is checked against the input.
    """
    b = x.builder
    local, full = _layer(x, "linear", name)
    _need_rank(x, 2, full)
    w = b.param(local + ".weight", (out_features, in_features or x.shape[1]), init=init)
    bias_t = b.param(local + ".bias", (out_features,), init="zeros") if bias else None
    return b.op("Gemm", x, w, bias_t, name=full, transB=1)


def _channel_params(x: Tensor, local: str, channels: int) -> tuple[Tensor, Tensor]:
    b = x.builder
    return (b.param(local + ".weight", (channels,), init="ones"),
            b.param(local + ".bias", (channels,), init="zeros"))


@layer
def batch_norm(x: Tensor, *, eps: float = 1e-5, momentum: float = 0.9,
               name: str | None = None) -> Tensor:
    """Batch normalization over the channel axis 1 (inference form: running statistics).

    ``momentum`` is the course's ``a`` in ``mu_avg = a * mu_avg + (1 - a) * mu_B``. The
    running mean starts at 0 and the running variance at 1.
    """
    b = x.builder
    local, full = _layer(x, "bn", name)
    if x.ndim < 2:
        raise ShapeError("batch_norm needs a (N, C, ...) input", where=f"layer {full!r}",
                         expected="rank >= 2", got=f"shape {x.shape}")
    c = x.shape[1]
    scale, shift = _channel_params(x, local, c)
    mean = b.param(local + ".running_mean", (c,), init="zeros", trainable=False)
    var = b.param(local + ".running_var", (c,), init="ones", trainable=False)
    return b.op("BatchNormalization", x, scale, shift, mean, var, name=full, epsilon=eps,
                momentum=momentum)


LAYER_NORM_AFFINE = ("element", "channel")


@layer
def layer_norm(x: Tensor, *, axis: int = 1, affine: str = "element", eps: float = 1e-5,
               name: str | None = None) -> Tensor:
    """Layer normalization: each sample standardized over the axes from ``axis`` to the last.

    The default ``axis=1`` is the course's: every feature of a sample together (M, H, W for a
    conv map of M channels; the F features of an MLP layer). ``axis=-1`` normalizes the last axis
    only (the transformer form). ``affine="element"`` learns a scale and shift per normalized
    element (shape ``x.shape[axis:]``, ONNX's and PyTorch's form); ``"channel"`` one per channel
    (shape (M, 1, ..., 1), which needs ``axis=1``), the per-map gamma and beta of BatchNorm.
    """
    b = x.builder
    local, full = _layer(x, "ln", name)
    if not -x.ndim <= axis < x.ndim:
        raise ShapeError("layer_norm axis out of range", where=f"layer {full!r}",
                         expected=f"-{x.ndim} <= axis < {x.ndim}", got=axis)
    if affine not in LAYER_NORM_AFFINE:
        raise unknown("layer_norm affine", affine, LAYER_NORM_AFFINE, where=f"layer {full!r}")
    first = axis % x.ndim
    if affine == "element":
        shape = x.shape[first:]
    elif first != 1 or x.ndim < 3:
        raise ShapeError("a per-channel layer_norm normalizes a (N, M, ...) map from axis 1",
                         where=f"layer {full!r}", expected="axis=1 and rank >= 3",
                         got=f"axis={axis}, shape {x.shape}",
                         hint='use affine="element" for other axes')
    else:
        shape = (x.shape[1],) + (1,) * (x.ndim - 2)
    w = b.param(local + ".weight", shape, init="ones")
    bias = b.param(local + ".bias", shape, init="zeros")
    return b.op("LayerNormalization", x, w, bias, name=full, axis=axis, epsilon=eps)


@layer
def instance_norm(x: Tensor, *, eps: float = 1e-5, name: str | None = None) -> Tensor:
    """Instance normalization: each sample's channel normalized over its spatial axes."""
    local, full = _layer(x, "in", name)
    scale, shift = _channel_params(x, local, x.shape[1])
    return x.builder.op("InstanceNormalization", x, scale, shift, name=full, epsilon=eps)


@layer
def group_norm(x: Tensor, num_groups: int, *, eps: float = 1e-5,
               name: str | None = None) -> Tensor:
    """Group normalization: channels split into ``num_groups`` groups, per-channel affine."""
    local, full = _layer(x, "gn", name)
    scale, shift = _channel_params(x, local, x.shape[1])
    return x.builder.op("GroupNormalization", x, scale, shift, name=full,
                        num_groups=num_groups, epsilon=eps)


# ----- layers without parameters ------------------------------------------------------------


DROPOUT_SCALING = ("train", "test")


@layer
def dropout(x: Tensor, p: float | None = None, *, keep: float | None = None,
            drop: float | None = None, scale_at: str = "train",
            name: str | None = None) -> Tensor:
    """Dropout: each unit is kept with probability ``keep`` and zeroed with ``drop = 1 - keep``.

    Say which probability you mean: ``keep=0.75`` is the course's p (a unit is kept with
    probability p, its expected value is p * x); ``drop=0.25`` is ONNX's ``ratio`` and PyTorch's
    ``p``. A positional ``p`` is the drop probability, as in ONNX and PyTorch. Give one of the
    three (default: drop 0.5). The graph stores ONNX's ``ratio`` (the drop probability).

    ``scale_at="train"`` (default) is inverted dropout, ONNX's: training divides the kept
    values by ``keep``, and inference is the identity. ``"test"`` is the course's original
    convention: training only zeroes, and inference multiplies by ``keep`` (built as Dropout
    followed by a constant Mul by ``keep``, which the inference pipeline keeps).
    """
    where = f"layer {name or 'dropout'}"
    given = {k: v for k, v in (("p", p), ("keep", keep), ("drop", drop)) if v is not None}
    if len(given) > 1:
        raise GraphcError("dropout takes one probability", where=where,
                          expected="one of p=, keep=, drop=", got=", ".join(given),
                          hint="keep = 1 - drop; a positional p is the drop probability.")
    rate = 0.5 if not given else (1.0 - keep if keep is not None else next(iter(given.values())))
    if keep is not None and not 0.0 < keep <= 1.0:
        raise GraphcError("dropout keep probability out of range", where=where,
                          expected="0 < keep <= 1", got=keep)
    if not 0.0 <= rate < 1.0:
        raise GraphcError("dropout probability out of range", where=where,
                          expected="0 <= drop < 1", got=rate)
    if scale_at not in DROPOUT_SCALING:
        raise unknown("dropout scaling", scale_at, DROPOUT_SCALING, where=where)
    b = x.builder
    local, full = _layer(x, "dropout", name)
    ratio = b.const(np.float32(rate), name=local + ".ratio", dtype=np.float32)
    y = b.op("Dropout", x, ratio, name=full)
    if scale_at == "test":
        y = b.op("Mul", y, b.const(1.0 - rate, name=local + ".keep"), name=full + ".scale")
    return y


@layer
def flatten(x: Tensor, axis: int = 1, *, name: str | None = None) -> Tensor:
    """Flatten to 2-D: the axes before ``axis`` and the axes from ``axis`` on."""
    return x.builder.op("Flatten", x, name=_layer(x, "flatten", name)[1], axis=axis)


@layer
def reshape(x: Tensor, shape: Sequence[int], *, name: str | None = None) -> Tensor:
    """Reshape (ONNX rules: 0 copies the input's dimension, -1 is inferred)."""
    b = x.builder
    local, full = _layer(x, "reshape", name)
    shape_t = b.const(np.array(shape, np.int64), name=local + ".shape", dtype=np.int64)
    return b.op("Reshape", x, shape_t, name=full)


@layer
def transpose(x: Tensor, perm: Sequence[int], *, name: str | None = None) -> Tensor:
    """Permute the axes."""
    return x.builder.op("Transpose", x, name=_layer(x, "transpose", name)[1], perm=tuple(perm))


@layer
def concat(xs: Sequence[Tensor], axis: int = 1, *, name: str | None = None) -> Tensor:
    """Concatenate tensors along ``axis``."""
    return xs[0].builder.op("Concat", *xs, name=_layer(xs[0], "concat", name)[1], axis=axis)


@layer
def clip(x: Tensor, min: float | None = None, max: float | None = None, *,
         name: str | None = None) -> Tensor:
    """Clamp to [min, max] (either bound may be absent)."""
    b = x.builder
    local, full = _layer(x, "clip", name)
    lo = None if min is None else b.const(min, name=local + ".min", dtype=x.dtype)
    hi = None if max is None else b.const(max, name=local + ".max", dtype=x.dtype)
    return b.op("Clip", x, lo, hi, name=full)


def _activation(op: str, kind: str, x: Tensor, name: str | None, **attrs: Any) -> Tensor:
    return x.builder.op(op, x, name=_layer(x, kind, name)[1], **attrs)


@layer
def heaviside(x: Tensor, threshold: float = 0.0, *, name: str | None = None) -> Tensor:
    """Step function: 1 where x >= threshold, else 0 (McCulloch-Pitts)."""
    attrs = {"threshold": threshold} if threshold else {}
    return _activation("Heaviside", "step", x, name, **attrs)


@layer
def sigmoid(x: Tensor, *, name: str | None = None) -> Tensor:
    """Logistic sigmoid 1 / (1 + e^-x)."""
    return _activation("Sigmoid", "sigmoid", x, name)


@layer
def tanh(x: Tensor, *, name: str | None = None) -> Tensor:
    """Hyperbolic tangent."""
    return _activation("Tanh", "tanh", x, name)


@layer
def relu(x: Tensor, *, name: str | None = None) -> Tensor:
    """max(x, 0), with derivative 0 at 0."""
    return _activation("Relu", "relu", x, name)


@layer
def binary_sign(x: Tensor, *, name: str | None = None) -> Tensor:
    """+1 where x >= 0, else -1 (sign(0) = +1): the activation of binary networks, trained
    through the straight-through estimator (gradient dy where |x| <= 1, else 0).

    >>> from graphc.dsl import GraphBuilder
    >>> from graphc.interpret import run
    >>> b = GraphBuilder("s")
    >>> y = b.output(binary_sign(b.input("x", (3,))), "y")
    >>> run(b.build(), {"x": np.array([-0.5, 0.0, 2.0], np.float32)})["y"].tolist()
    [-1.0, 1.0, 1.0]
    """
    return _activation("BinarySign", "sign", x, name)


@layer
def leaky_relu(x: Tensor, alpha: float = 0.01, *, name: str | None = None) -> Tensor:
    """x for x > 0, alpha * x otherwise."""
    return _activation("LeakyRelu", "lrelu", x, name, alpha=alpha)


@layer
def exp(x: Tensor, *, name: str | None = None) -> Tensor:
    """e^x."""
    return _activation("Exp", "exp", x, name)


@layer
def log(x: Tensor, *, name: str | None = None) -> Tensor:
    """Natural logarithm."""
    return _activation("Log", "log", x, name)


@layer
def sqrt(x: Tensor, *, name: str | None = None) -> Tensor:
    """Square root."""
    return _activation("Sqrt", "sqrt", x, name)


def _tempered(op: str, kind: str, x: Tensor, axis: int, temperature: float,
              name: str | None) -> Tensor:
    if temperature <= 0:
        raise GraphcError(f"{kind} temperature must be positive", where=f"layer {name or kind!r}",
                          expected="T > 0", got=temperature)
    local, full = _layer(x, kind, name)
    if temperature != 1.0:
        x = x.builder.op("Div", x, x.builder.const(temperature, name=local + ".temperature",
                                                   dtype=x.dtype), name=full + ".scaled")
    return x.builder.op(op, x, name=full, axis=axis)


@layer
def softmax(x: Tensor, axis: int = -1, *, temperature: float = 1.0,
            name: str | None = None) -> Tensor:
    """softmax(x / T) along ``axis``; a temperature T > 1 softens the distribution."""
    return _tempered("Softmax", "softmax", x, axis, temperature, name)


@layer
def log_softmax(x: Tensor, axis: int = -1, *, temperature: float = 1.0,
                name: str | None = None) -> Tensor:
    """log(softmax(x / T)) along ``axis``, computed stably."""
    return _tempered("LogSoftmax", "log_softmax", x, axis, temperature, name)
