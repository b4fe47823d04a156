"""Compiler passes, one module per pass, listed explicitly in ``PASSES`` in run order.

A pass is a function ``Graph -> Graph`` with keyword options that never mutates its input.
"""

from __future__ import annotations

PASSES: list[str] = []
