"""Layer helpers on top of the DSL: linear, conv1d/2d/3d, pools, norms, dropout and activations.

Each helper names its node after the layer (``block1.conv``) and its parameters after the layer
(``block1.conv.weight``, ``block1.conv.bias``); parameter layouts follow PyTorch (linear weight
``(out, in)``, conv weight ``(out, in / groups, kh, kw)``).

>>> from graphc.dsl import GraphBuilder
>>> b = GraphBuilder("tiny")
>>> x = b.input("x", (1, 1, 8, 8))
>>> h = relu(conv2d(x, 4, 3, padding="same", name="conv"))
>>> h.shape
(1, 4, 8, 8)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from graphc.dsl import Tensor
from graphc.errors import GraphcError, ShapeError, unknown

PADDINGS = ("valid", "same")
PADDING_MODES = ("zeros", "reflect", "edge", "symmetric")
PAD_MODES = ("constant", "reflect", "edge", "symmetric", "wrap")
_SPATIAL = {1: "(l)", 2: "(h, w)", 3: "(d, h, w)"}


def _ints(v: int | Sequence[int], what: str, k: int) -> tuple[int, ...]:
    """Return one int per spatial axis from an int (the same on every axis) or k ints."""
    if isinstance(v, (int, np.integer)):
        return (int(v),) * k
    items = tuple(int(i) for i in v)
    if len(items) != k:
        raise GraphcError(f"{what} needs one int or {k}", expected=f"int or {_SPATIAL[k]}",
                          got=v)
    return items


def _pair(v: int | Sequence[int], what: str) -> tuple[int, int]:
    return _ints(v, what, 2)  # type: ignore[return-value]


def _need_rank(x: Tensor, rank: int, layer: str) -> None:
    if x.ndim != rank:
        raise ShapeError(f"{layer} needs a rank-{rank} input", where=f"layer {layer!r}",
                         expected=f"rank {rank}", got=f"%{x.name} of shape {x.shape}",
                         hint="Flatten or reshape the input first." if rank == 2 else None)


def _pads(x: Tensor, kernel: tuple[int, ...], stride: tuple[int, ...],
          dilation: tuple[int, ...], padding: Any, layer: str) -> tuple[int, ...]:
    """Return ONNX pads (the begins, then the ends, of the spatial axes; in 2-D (top, left,
    bottom, right)) for 'valid', 'same' or an int or one int per spatial axis."""
    k = len(kernel)
    if isinstance(padding, str):
        if padding not in PADDINGS:
            raise unknown("padding", padding, PADDINGS, where=f"layer {layer!r}")
        if padding == "valid":
            return (0,) * (2 * k)
        # SAME as in ONNX SAME_UPPER: output = ceil(input / stride), extra padding at the end.
        begin, end = [], []
        for size, kk, s, d in zip(x.shape[2:], kernel, stride, dilation, strict=True):
            total = max((-(-size // s) - 1) * s + (kk - 1) * d + 1 - size, 0)
            begin.append(total // 2)
            end.append(total - total // 2)
        return (*begin, *end)
    sizes = _ints(padding, "padding", k)
    return (*sizes, *sizes)


def layer(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Make a layer helper atomic: if it raises, the nodes it added are removed again."""

    @functools.wraps(fn)
    def wrapper(x: Any, *args: Any, **kwargs: Any) -> Tensor:
        first = x[0] if isinstance(x, (list, tuple)) else x
        with first.builder.transaction():
            return fn(x, *args, **kwargs)

    return wrapper


def _layer(x: Tensor, kind: str, name: str | None) -> tuple[str, str]:
    """Return (local, full) names of a new layer of ``kind``."""
    local = x.builder.layer_name(kind, name)
    return local, x.builder.scoped(local)


def _padded(x: Tensor, pads: tuple[int, ...], mode: str, local: str) -> Tensor:
    """Put a reflect, edge or symmetric Pad node in front of a layer; zero padding stays inside
    the op."""
    if mode not in PADDING_MODES:
        raise unknown("padding_mode", mode, PADDING_MODES, where=f"layer {local!r}")
    if mode == "zeros" or not any(pads):
        return x
    return pad(x, pads, mode=mode, name=local + ".pad")


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


def _conv(x: Tensor, k: int, out_channels: int, kernel_size: int | Sequence[int],
          stride: int | Sequence[int], padding: Any, padding_mode: str,
          dilation: int | Sequence[int], groups: int, bias: bool, init: str,
          in_channels: int | None, name: str | None) -> Tensor:
    """A Conv over the ``k`` spatial axes of a rank-(k + 2) input (conv1d, conv2d, conv3d)."""
    b = x.builder
    local, full = _layer(x, "conv", name)
    _need_rank(x, k + 2, full)
    kernel = _ints(kernel_size, "kernel_size", k)
    strides = _ints(stride, "stride", k)
    dilations = _ints(dilation, "dilation", k)
    pads = _pads(x, kernel, strides, dilations, padding, full)
    x = _padded(x, pads, padding_mode, local)
    if padding_mode != "zeros":
        pads = (0,) * (2 * k)
    cin = in_channels or x.shape[1]
    if cin % groups:
        raise ShapeError("input channels are not divisible by groups", where=f"layer {full!r}",
                         expected=f"a multiple of groups={groups}", got=cin)
    w = b.param(local + ".weight", (out_channels, cin // groups, *kernel), init=init)
    bias_t = b.param(local + ".bias", (out_channels,), init="zeros") if bias else None
    attrs: dict[str, Any] = {"kernel_shape": kernel}
    if strides != (1,) * k:
        attrs["strides"] = strides
    if dilations != (1,) * k:
        attrs["dilations"] = dilations
    if groups != 1:
        attrs["group"] = groups
    if any(pads):
        attrs["pads"] = pads
    return b.op("Conv", x, w, bias_t, name=full, **attrs)


@layer
def conv1d(x: Tensor, out_channels: int, kernel_size: int | Sequence[int], *,
           stride: int | Sequence[int] = 1, padding: Any = 0, padding_mode: str = "zeros",
           dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = True,
           init: str = "he", in_channels: int | None = None, name: str | None = None) -> Tensor:
    """1-D convolution on an (N, C, L) input (audio, sequences); weight ``(out, in / groups,
    k)``. Arguments as in ``conv2d``, with one int per axis.

    >>> from graphc.dsl import GraphBuilder
    >>> x = GraphBuilder("seq").input("x", (2, 3, 16))
    >>> conv1d(x, 8, 5, stride=2, padding="same", name="conv").shape
    (2, 8, 8)
    """
    return _conv(x, 1, out_channels, kernel_size, stride, padding, padding_mode, dilation,
                 groups, bias, init, in_channels, name)


@layer
def conv2d(x: Tensor, out_channels: int, kernel_size: int | Sequence[int], *,
           stride: int | Sequence[int] = 1, padding: Any = 0, padding_mode: str = "zeros",
           dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = True,
           init: str = "he", in_channels: int | None = None, name: str | None = None) -> Tensor:
    """2-D convolution on an NCHW input.

    ``padding`` is ``"valid"``, ``"same"`` (output = ceil(input / stride)) or an int or (h, w)
    pair; ``padding_mode`` is ``"zeros"``, ``"reflect"`` (mirror about the edge cell: c b | a b
    c), ``"symmetric"`` (the course's mirror padding, repeating the edge cell: b a | a b c) or
    ``"edge"``. Reflect, symmetric and edge padding become a Pad node in front of the Conv.
    """
    return _conv(x, 2, out_channels, kernel_size, stride, padding, padding_mode, dilation,
                 groups, bias, init, in_channels, name)


@layer
def conv3d(x: Tensor, out_channels: int, kernel_size: int | Sequence[int], *,
           stride: int | Sequence[int] = 1, padding: Any = 0, padding_mode: str = "zeros",
           dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = True,
           init: str = "he", in_channels: int | None = None, name: str | None = None) -> Tensor:
    """3-D convolution on an (N, C, D, H, W) input (video, volumes); weight ``(out, in /
    groups, kd, kh, kw)``. Arguments as in ``conv2d``, with one int per axis.

    >>> from graphc.dsl import GraphBuilder
    >>> x = GraphBuilder("vol").input("x", (1, 2, 8, 8, 8))
    >>> conv3d(x, 4, 3, padding=1, stride=(1, 2, 2), name="conv").shape
    (1, 4, 8, 4, 4)
    """
    return _conv(x, 3, out_channels, kernel_size, stride, padding, padding_mode, dilation,
                 groups, bias, init, in_channels, name)


@layer
def conv_transpose2d(x: Tensor, out_channels: int, kernel_size: int | Sequence[int], *,
                     stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                     output_padding: int | Sequence[int] = 0,
                     dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = True,
                     init: str = "he", name: str | None = None) -> Tensor:
    """Transposed 2-D convolution (weight ``(in, out / groups, kh, kw)``, as in PyTorch)."""
    b = x.builder
    local, full = _layer(x, "deconv", name)
    _need_rank(x, 4, full)
    kernel = _pair(kernel_size, "kernel_size")
    ph, pw = _pair(padding, "padding")
    if x.shape[1] % groups or out_channels % groups:
        raise ShapeError("channels are not divisible by groups", where=f"layer {full!r}",
                         expected=f"multiples of groups={groups}",
                         got=f"in {x.shape[1]}, out {out_channels}")
    w = b.param(local + ".weight", (x.shape[1], out_channels // groups, *kernel), init=init,
                fan_in=x.shape[1] * kernel[0] * kernel[1] // groups)
    bias_t = b.param(local + ".bias", (out_channels,), init="zeros") if bias else None
    attrs: dict[str, Any] = {"kernel_shape": kernel, "strides": _pair(stride, "stride"),
                             "pads": (ph, pw, ph, pw)}
    if _pair(output_padding, "output_padding") != (0, 0):
        attrs["output_padding"] = _pair(output_padding, "output_padding")
    if _pair(dilation, "dilation") != (1, 1):
        attrs["dilations"] = _pair(dilation, "dilation")
    if groups != 1:
        attrs["group"] = groups
    return b.op("ConvTranspose", x, w, bias_t, name=full, **attrs)


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


def _pool_attrs(x: Tensor, kernel_size: Any, stride: Any, padding: Any, full: str,
                k: int = 2) -> dict[str, Any]:
    kernel = _ints(kernel_size, "kernel_size", k)
    strides = _ints(kernel if stride is None else stride, "stride", k)
    pads = _pads(x, kernel, strides, (1,) * k, padding, full)
    attrs: dict[str, Any] = {"kernel_shape": kernel, "strides": strides}
    if any(pads):
        attrs["pads"] = pads
    return attrs


def _max_pool(x: Tensor, k: int, kernel_size: Any, stride: Any, padding: Any, ceil_mode: bool,
              name: str | None) -> Tensor:
    _, full = _layer(x, "maxpool", name)
    _need_rank(x, k + 2, full)
    attrs = _pool_attrs(x, kernel_size, stride, padding, full, k)
    if ceil_mode:
        attrs["ceil_mode"] = 1
    return x.builder.op("MaxPool", x, name=full, **attrs)


def _avg_pool(x: Tensor, k: int, kernel_size: Any, stride: Any, padding: Any,
              count_include_pad: bool, ceil_mode: bool, name: str | None) -> Tensor:
    _, full = _layer(x, "avgpool", name)
    _need_rank(x, k + 2, full)
    attrs = _pool_attrs(x, kernel_size, stride, padding, full, k)
    if count_include_pad:
        attrs["count_include_pad"] = 1
    if ceil_mode:
        attrs["ceil_mode"] = 1
    return x.builder.op("AveragePool", x, name=full, **attrs)


@layer
def max_pool1d(x: Tensor, kernel_size: int | Sequence[int], *, stride: Any = None,
               padding: Any = 0, ceil_mode: bool = False, name: str | None = None) -> Tensor:
    """Max pooling over the L axis of an (N, C, L) input; arguments as in ``max_pool2d``."""
    return _max_pool(x, 1, kernel_size, stride, padding, ceil_mode, name)


@layer
def max_pool2d(x: Tensor, kernel_size: int | Sequence[int], *, stride: Any = None,
               padding: Any = 0, ceil_mode: bool = False, name: str | None = None) -> Tensor:
    """Max pooling; ``stride`` defaults to the kernel size; padding as in ``conv2d``."""
    return _max_pool(x, 2, kernel_size, stride, padding, ceil_mode, name)


@layer
def max_pool3d(x: Tensor, kernel_size: int | Sequence[int], *, stride: Any = None,
               padding: Any = 0, ceil_mode: bool = False, name: str | None = None) -> Tensor:
    """Max pooling over (D, H, W) of an (N, C, D, H, W) input; arguments as in ``max_pool2d``."""
    return _max_pool(x, 3, kernel_size, stride, padding, ceil_mode, name)


@layer
def avg_pool1d(x: Tensor, kernel_size: int | Sequence[int], *, stride: Any = None,
               padding: Any = 0, count_include_pad: bool = False, ceil_mode: bool = False,
               name: str | None = None) -> Tensor:
    """Average pooling over the L axis of an (N, C, L) input; arguments as in ``avg_pool2d``."""
    return _avg_pool(x, 1, kernel_size, stride, padding, count_include_pad, ceil_mode, name)


@layer
def avg_pool2d(x: Tensor, kernel_size: int | Sequence[int], *, stride: Any = None,
               padding: Any = 0, count_include_pad: bool = False, ceil_mode: bool = False,
               name: str | None = None) -> Tensor:
    """Average pooling; padded cells count in the mean only with ``count_include_pad``."""
    return _avg_pool(x, 2, kernel_size, stride, padding, count_include_pad, ceil_mode, name)


@layer
def avg_pool3d(x: Tensor, kernel_size: int | Sequence[int], *, stride: Any = None,
               padding: Any = 0, count_include_pad: bool = False, ceil_mode: bool = False,
               name: str | None = None) -> Tensor:
    """Average pooling over (D, H, W) of an (N, C, D, H, W) input; arguments as in
    ``avg_pool2d``."""
    return _avg_pool(x, 3, kernel_size, stride, padding, count_include_pad, ceil_mode, name)


@layer
def global_avg_pool(x: Tensor, *, name: str | None = None) -> Tensor:
    """Mean over the spatial axes: (N, C, H, W) -> (N, C, 1, 1); also (N, C, L) and
    (N, C, D, H, W)."""
    return x.builder.op("GlobalAveragePool", x, name=_layer(x, "gap", name)[1])


@layer
def global_max_pool(x: Tensor, *, name: str | None = None) -> Tensor:
    """Max over the spatial axes: (N, C, H, W) -> (N, C, 1, 1); also (N, C, L) and
    (N, C, D, H, W)."""
    return x.builder.op("GlobalMaxPool", x, name=_layer(x, "gmp", name)[1])


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
def pad(x: Tensor, pads: Sequence[int], *, mode: str = "constant", value: float = 0.0,
        name: str | None = None) -> Tensor:
    """Pad the last ``len(pads) / 2`` axes: ``pads`` holds their begins, then their ends; for an
    NCHW input (top, left, bottom, right), for (N, C, L) (left, right).

    ``mode`` is ``"constant"`` (with ``value``), ``"reflect"`` (mirror about the edge cell:
    c b | a b c), ``"symmetric"`` (the course's mirror padding, repeating the edge cell:
    b a | a b c), ``"edge"`` or ``"wrap"`` (periodic: b c | a b c).

    >>> from graphc.dsl import GraphBuilder
    >>> from graphc.interpret import run
    >>> b = GraphBuilder("mirror")
    >>> y = b.output(pad(b.input("x", (1, 1, 3)), (2, 2), mode="symmetric"), "y")
    >>> run(b.build(), {"x": np.array([[[1, 2, 3]]], np.float32)})["y"].tolist()
    [[[2.0, 1.0, 1.0, 2.0, 3.0, 3.0, 2.0]]]
    """
    if mode not in PAD_MODES:
        raise unknown("pad mode", mode, PAD_MODES, where=f"layer {name or 'pad'!r}")
    pads = tuple(int(p) for p in pads)
    k = len(pads) // 2
    if len(pads) % 2 or not 1 <= k <= x.ndim:
        raise GraphcError("pad needs a begin and an end per padded axis",
                          where=f"layer {name or 'pad'!r}",
                          expected=f"2, 4, ... up to {2 * x.ndim} values (the begins, then "
                                   "the ends, of the last axes)", got=list(pads))
    b = x.builder
    local, full = _layer(x, "pad", name)
    lead = x.ndim - k
    onnx_pads = [0] * lead + list(pads[:k]) + [0] * lead + list(pads[k:])
    pads_t = b.const(np.array(onnx_pads, np.int64), name=local + ".pads", dtype=np.int64)
    value_t = b.const(value, name=local + ".value", dtype=x.dtype) if value else None
    return b.op("Pad", x, pads_t, value_t, name=full, mode=mode)


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
