"""Test-suite options: ``--fuzz`` runs the random-graph properties on 10,000 graphs each.

Without it, the hypothesis profile ``graphc`` keeps them to a few seconds (see
tests/test_fuzz.py and docs/conformance.md, "Random-graph fuzzing").
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

FUZZ_EXAMPLES = 10_000
# The scripts that write the test data (tests/data/make_torch_exports.py needs torch, which the
# tests do not): not test modules, and not imported by --doctest-modules.
collect_ignore_glob = ["data/*.py"]

# No example database (it would be written into the working tree) and no deadline (the first
# onnxruntime session of a run takes longer than the rest); a failure prints the blob that
# replays it with @reproduce_failure.
_COMMON = {"database": None, "deadline": None, "print_blob": True,
           "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("graphc", max_examples=4, **_COMMON)
settings.register_profile("fuzz", max_examples=FUZZ_EXAMPLES, **_COMMON)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fuzz", action="store_true",
                     help=f"run the random-graph properties on {FUZZ_EXAMPLES:,} graphs each "
                          "(hypothesis profile 'fuzz')")


def pytest_configure(config: pytest.Config) -> None:
    settings.load_profile("fuzz" if config.getoption("--fuzz") else "graphc")
