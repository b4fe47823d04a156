"""Compiler passes, one module per pass, listed explicitly in ``PASSES``.

A pass is a function ``Graph -> Graph`` with keyword options that never mutates its input; its
module docstring states the transformation and when it refuses. The CLI name is the function
name in kebab-case. ``PIPELINES`` names ordered lists of passes.
"""

from __future__ import annotations

from graphc.passes.binarize import binarize
from graphc.passes.eliminate_dead_code import eliminate_dead_code
from graphc.passes.fold_batchnorm import fold_batchnorm
from graphc.passes.fold_constants import fold_constants
from graphc.passes.prune_channels import prune_channels
from graphc.passes.prune_magnitude import prune_magnitude
from graphc.passes.quantize_int8 import quantize_int8
from graphc.passes.remove_dropout import remove_dropout
from graphc.passes.remove_identity import remove_identity
from graphc.passes.substitute_student import substitute_student

PASSES = [
    remove_dropout,
    fold_batchnorm,
    fold_constants,
    remove_identity,
    eliminate_dead_code,
    quantize_int8,
    prune_channels,
    prune_magnitude,
    substitute_student,
    binarize,
]

PIPELINES = {
    "inference": [
        "remove-dropout",
        "fold-batchnorm",
        "fold-constants",
        "remove-identity",
        "eliminate-dead-code",
    ],
}
