"""The house rules, checked on the source: short files and functions, packages without import
cycles or importlib back doors, and history windows cut by models alone."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mmctr"
MAX_FILE_LINES = 300
MAX_FUNCTION_LINES = 60


def modules() -> dict[Path, ast.Module]:
    return {p: ast.parse(p.read_text(), str(p)) for p in sorted(SRC.rglob("*.py"))}


def unit_of(module: str) -> str:
    """The house unit of a dotted module name: its first package (or module) under mmctr."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_files_and_functions_are_short() -> None:
    long = []
    for path, tree in modules().items():
        lines = len(path.read_text().splitlines())
        if lines > MAX_FILE_LINES:
            long.append(f"{path.relative_to(SRC)}: {lines} lines")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}: {size} lines")
    assert not long, "over the limits:\n" + "\n".join(long)


def import_graph() -> dict[str, set[str]]:
    """Unit -> the units it imports (mmctr/__init__.py and the CLI face re-export everything)."""
    graph: dict[str, set[str]] = {}
    for path, tree in modules().items():
        rel = path.relative_to(SRC)
        if rel == Path("__init__.py") or rel == Path("__main__.py"):
            continue
        unit = rel.parts[0].removesuffix(".py")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("mmctr.")
            ):
                target = unit_of(node.module)
                if target != unit:
                    graph.setdefault(unit, set()).add(target)
    return graph


def test_no_import_cycle_between_packages() -> None:
    graph = import_graph()
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(unit: str, path: list[str]) -> None:
        state[unit] = 1
        for nxt in sorted(graph.get(unit, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, unit, nxt]))
            if nxt not in state:
                visit(nxt, [*path, unit])
        state[unit] = 2

    for unit in sorted(graph):
        if unit not in state:
            visit(unit, [])
    assert "prepare" not in graph.get("data", set()), "reading data must not need preparing it"
    assert graph.get("model", set()) <= {"config", "errors"}, (
        "model code needs torch and its config"
    )


def test_no_package_reaches_another_through_importlib() -> None:
    for path, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                called = node.func.attr
                if called == "import_module" and node.args:
                    arg = node.args[0]
                    assert not (
                        isinstance(arg, ast.Constant) and str(arg.value).startswith("mmctr")
                    ), f"{path.relative_to(SRC)}:{node.lineno} imports mmctr through importlib"


def test_only_models_cut_history_windows() -> None:
    """A slice ``[-max_len:]`` (or ``-first_k``) belongs to ``CTRModel.window`` alone."""
    offenders = []
    for path, tree in modules().items():
        if path.relative_to(SRC).parts[0] == "model":
            continue
        text = path.read_text()
        for node in ast.walk(tree):
            if isinstance(node, ast.Slice) and isinstance(node.lower, ast.UnaryOp):
                bound = ast.get_source_segment(text, node.lower) or ""
                if "max_len" in bound or "first_k" in bound:
                    offenders.append(f"{path.relative_to(SRC)}:{node.lineno} [{bound}:]")
    assert not offenders, "history windows cut outside the model:\n" + "\n".join(offenders)
