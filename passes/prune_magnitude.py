"""Zero the smallest weights (unstructured magnitude pruning) and store them as a bitmask.

For each weight W of a Conv, ConvTranspose, Gemm or MatMul (its stored constant, see
graphc.compress.sparse), with ``s = sparsity``:

    W' = W * M,  M[i] = 0 for the round(s * n) entries of smallest |W[i]|, 1 elsewhere

per weight (``scope="layer"``), or with one threshold over all weights together
(``scope="global"``, n then counts them all). Entries already zero always count among the
removed ones, so the result has ``max(s, zeros already there)`` of zeros; ties go by position.
After quantize-int8 the int8 weights of its DequantizeLinear nodes are pruned, ranked by their
dequantized magnitude ``|q * s_w|``. With ``sparsity=None`` nothing is pruned: the weights that
already hold zeros (a checkpoint fine-tuned under masks) are only stored compactly.

Storage (``encode=True``): each weight with zeros is stored as its keep bits packed 8 per byte
and its nonzero values, and decoded in the graph by Cast, Div, Mul, Sub, Reshape, Concat, CumSum
and Gather, all of which onnxruntime folds into one initializer when it loads the model
(graphc.compress.sparse has the exact form). A weight stays dense when the encoded form would
not be smaller: fewer than 8 entries, too few zeros (the break-even is about 1/8 + kept share x
the value's size, plus ~1 KiB of decode nodes), or an integer weight whose zero point is not 0.
The outputs are exactly those of the dense model with the masked weights. Int8 weights stay
int8 under their DequantizeLinear, which onnxruntime still fuses into its int8 kernels.

Speed: unstructured sparsity does not speed up onnxruntime's dense CPU kernels (90% zeros run
1.00-1.11x of dense); prune-channels, which removes whole channels, makes models faster.

Refuses (UsageError): ``sparsity`` not a number in [0, 1]; an unknown ``scope`` (the message
lists "layer" and "global"). Quantized forms other than QDQ (QLinearConv, MatMulInteger) are
not pruned here: prune before quantize-int8, which keeps the bitmask form.
"""

from __future__ import annotations

import numpy as np

from graphc.compress import sparse
from graphc.ir import Graph, Value
from graphc.onnxio.export import to_bytes
from graphc.rewrite import PassReport

SPEED_NOTE = ("unstructured sparsity does not speed up onnxruntime's dense CPU kernels "
              "(90% zeros run 1.00-1.11x of dense); prune-channels makes models faster")


def prune_magnitude(g: Graph, *, sparsity: float | None = None, scope: str = "layer",
                    encode: bool = True, report: PassReport | None = None) -> Graph:
    """Return ``g`` with the fraction ``sparsity`` of smallest weights zeroed (per layer or
    ``scope="global"``) and, with ``encode``, each weight with zeros stored as a bitmask and its
    kept values where that is smaller.

    >>> from graphc.models import load
    >>> from graphc.compress.sparse import stored_bytes
    >>> g = load("mlp").build()
    >>> h = prune_magnitude(g, sparsity=0.9)
    >>> round(stored_bytes(h) / stored_bytes(g), 2)
    0.14
    """
    if sparsity is not None:
        sparsity = sparse.check_sparsity(sparsity)
    sparse.check_scope(scope)
    notes = report.notes if report is not None else []
    names = sparse.prunable(g)
    was_encoded = set(sparse.encoded_weights(g)) & set(names)
    before = {name: sparse.stored_array(g, name) for name in names}
    h = sparse.decode(g, sorted(was_encoded))
    if sparsity is not None and names:
        h = sparse.apply_masks(h, sparse.magnitude_masks(h, sparsity, scope=scope,
                                                         params=names))
    changed = 0
    zeros_total = entries_total = 0
    for name in names:
        array = np.asarray(h.const_value(Value(name)))
        zeros = array.size - int(np.count_nonzero(array))
        zeros_total += zeros
        entries_total += array.size
        share = f"{100 * zeros / array.size:5.1f}% zero ({zeros:,} of {array.size:,})"
        reason = sparse.encodable(h, name) if encode else "encode=False"
        if zeros and reason is None:
            small = sparse.encoded_bytes(array != 0, array.dtype) - sparse.DECODER_BYTES
            h = sparse.encode(h, name)
            notes.append(f"{name:<12} {share}: bitmask + {array.size - zeros:,} {array.dtype} "
                         f"values, {array.nbytes:,} -> {small:,} bytes")
        else:
            why = reason if zeros else "no zeros"
            notes.append(f"{name:<12} {share}: dense ({why})")
            if report is not None:
                report.refuse(name, f"prune-magnitude: stored dense: {why}")
        now_encoded = bool(zeros) and reason is None
        if now_encoded != (name in was_encoded) or not np.array_equal(array, before[name]):
            changed += 1
    if names:
        file_before, file_after = len(to_bytes(g)), len(to_bytes(h))
        notes.append(f"{'total':<12} {100 * zeros_total / entries_total:.1f}% of "
                     f"{entries_total:,} weights zero; constants {sparse.stored_bytes(g):,} -> "
                     f"{sparse.stored_bytes(h):,} bytes, ONNX file {file_before:,} -> "
                     f"{file_after:,} bytes ({file_after / file_before:.2f}x)")
    else:
        notes.append(f"{'total':<12} no Conv, ConvTranspose, Gemm or MatMul weight to prune")
    notes.append(f"{'speed':<12} {SPEED_NOTE}")
    if report is not None:
        report.rewrites += changed
    return h
