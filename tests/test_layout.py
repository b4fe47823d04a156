"""The architecture as data: which part of graphc may import which, and no import circles.

Every ``import`` and ``from ... import`` of a graphc module in graphc/, passes/ and models/ is
read with ``ast`` (also imports inside functions; not those under ``if TYPE_CHECKING:``, which
never run). Each module belongs to one part; ``MAY_IMPORT`` says which parts each part may
import. docs/architecture.md draws the same table.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
# Where each package's files are (graphc.passes and graphc.models live outside graphc/).
PACKAGE_DIRS = {"graphc": ROOT / "graphc", "graphc.passes": ROOT / "passes",
                "graphc.models": ROOT / "models"}

# The parts, lowest first. A module's part is its longest prefix listed here.
PARTS = {
    "graphc.errors": "base",
    "graphc.files": "base",
    "graphc.version": "base",
    "graphc.ops": "ops",
    "graphc.ir": "core",
    "graphc.dsl": "core",
    "graphc.nn": "core",
    "graphc.nn_spatial": "core",
    "graphc.shapes": "core",
    "graphc.interpret": "core",
    "graphc.rewrite": "core",
    "graphc.pipeline": "core",
    "graphc.autodiff": "core",
    "graphc.onnxio": "onnxio",
    "graphc.symbolic": "symbolic",
    "graphc.train": "train",
    "graphc.compress": "compress",
    "graphc.passes": "passes",
    "graphc.models": "models",
    "graphc.testing": "testing",
    "graphc.doctest_md": "testing",
    "graphc.fuzz": "testing",
    "graphc.fuzz_ops": "testing",
    "graphc": "api",
    "graphc.backend": "api",
    "graphc.cli": "cli",
}
_BELOW_ONNX = {"base", "ops", "core"}
MAY_IMPORT = {
    "base": set(),
    "ops": {"base"},
    "core": {"base", "ops"},
    "onnxio": _BELOW_ONNX,
    "symbolic": _BELOW_ONNX | {"onnxio"},
    "train": _BELOW_ONNX | {"onnxio"},
    "compress": _BELOW_ONNX | {"onnxio", "train"},
    "passes": _BELOW_ONNX | {"onnxio", "train", "compress"},
    "models": _BELOW_ONNX,
    "testing": _BELOW_ONNX | {"onnxio"},
    "api": _BELOW_ONNX | {"onnxio"},
    "cli": set(PARTS.values()),
}
# Imports against the direction, each with its reason; they must stay inside a function.
LAZY_ONLY = {
    ("graphc.pipeline", "graphc.passes"): "the pass registry, looked up when a pipeline runs",
    ("graphc.doctest_md", "graphc.cli"): "runs the graphc commands a docs page shows",
}
# Inside cli/, a command's module imports only what the commands share.
CLI_SHARED = {"graphc.cli.common", "graphc.cli.checkpoints", "graphc.cli.verify"}


def module_files() -> dict[str, Path]:
    """Return every graphc module name and its file."""
    found = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([package, *parts])
            if package == "graphc" and parts and parts[0] in ("passes", "models"):
                continue
            found[name] = path
    return found


MODULES = module_files()


def part_of(module: str) -> str:
    best = max((p for p in PARTS if module == p or module.startswith(p + ".")), key=len)
    return PARTS[best]


def _resolve(name: str) -> str:
    """The module an imported name refers to: the name itself or its longest module prefix."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(module: str) -> list[tuple[str, bool, int]]:
    """Return (imported graphc module, at module level?, line) for each import in ``module``."""
    tree = ast.parse(MODULES[module].read_text())
    skip = _type_checking_lines(tree)
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name == "graphc" or name.startswith("graphc."):
                found.append((_resolve(name), id(node) in top, node.lineno))
    return found


def import_graph() -> nx.DiGraph:
    g = nx.DiGraph()
    for module in MODULES:
        g.add_node(module)
        for target, at_top, line in imports_of(module):
            if target != module:
                g.add_edge(module, target, top=at_top, line=line)
    return g


GRAPH = import_graph()


def test_every_module_has_a_part():
    # A new top-level module or folder must be placed in PARTS (and in docs/architecture.md).
    unplaced = [m for m in MODULES if m.count(".") == 1 and m not in PARTS
                and not any(m.startswith(p + ".") for p in PARTS if p != "graphc")]
    assert not unplaced, f"modules without a part: {unplaced}"


def test_parts_are_listed_in_may_import():
    assert set(PARTS.values()) == set(MAY_IMPORT)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    mine = part_of(module)
    wrong = []
    for target, attrs in GRAPH[module].items():
        theirs = part_of(target)
        if theirs == mine or theirs in MAY_IMPORT[mine]:
            continue
        if (module, target) in LAZY_ONLY and not attrs["top"]:
            continue
        wrong.append(f"line {attrs['line']}: {module} ({mine}) imports {target} ({theirs})")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if part_of(m) == "cli"
                                          and m != "graphc.cli"))
def test_no_command_imports_another(module):
    inside = {t for t in GRAPH[module] if part_of(t) == "cli"}
    assert inside <= CLI_SHARED - {module}, f"{module} imports {sorted(inside - CLI_SHARED)}"


def test_no_import_circles():
    cycles = list(nx.simple_cycles(GRAPH))
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join([*c, c[0]]) for c in cycles)


def test_the_checker_sees_a_circle_and_an_upward_import():
    # The checks above are only as good as the graph: it holds the imports that break the rules
    # when someone writes them (here read from a made-up pair of modules).
    g = GRAPH.copy()
    g.add_edge("graphc.ops.elementwise", "graphc.symbolic.chain_rule", top=False, line=1)
    assert list(nx.simple_cycles(g))
    assert "symbolic" not in MAY_IMPORT[part_of("graphc.ops.elementwise")]
    # Real edges the rules rely on are present: the pipeline's lazy registry lookup, the CLI's
    # shared modules, and the ONNX bridge's use of the interpreter.
    assert not GRAPH.edges["graphc.pipeline", "graphc.passes"]["top"]
    assert GRAPH.has_edge("graphc.cli.compile", "graphc.cli.checkpoints")
    assert GRAPH.has_edge("graphc.onnxio.runtime", "graphc.interpret")
