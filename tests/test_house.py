"""The house rules, checked on the source: short files and functions (in src/mmctr, scripts/
and bench/), no import cycles between packages nor between files, a CLI that goes through
mmctr.api, no importlib back doors, and history windows cut by models alone."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "mmctr"
# every Python file under these trees is held to the size limits
SIZED_TREES = (SRC, ROOT / "scripts", ROOT / "bench")
MAX_FILE_LINES = 300
MAX_FUNCTION_LINES = 60


def modules() -> dict[Path, ast.Module]:
    return parsed(SRC)


def parsed(*trees: Path) -> dict[Path, ast.Module]:
    files = sorted(p for tree in trees if tree.is_dir() for p in tree.rglob("*.py"))
    return {p: ast.parse(p.read_text(), str(p)) for p in files}


def unit_of(module: str) -> str:
    """The house unit of a dotted module name: its first package (or module) under mmctr."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_files_and_functions_are_short() -> None:
    long = []
    for path, tree in parsed(*SIZED_TREES).items():
        rel = path.relative_to(ROOT)
        lines = len(path.read_text().splitlines())
        if lines > MAX_FILE_LINES:
            long.append(f"{rel}: {lines} lines")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    long.append(f"{rel}:{node.lineno} {node.name}: {size} lines")
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


def module_name(path: Path) -> str:
    """``src/mmctr/a/b.py`` -> ``mmctr.a.b``; a package's ``__init__.py`` is the package."""
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(
    node: ast.Import | ast.ImportFrom, name: str, is_package: bool, known: set[str]
) -> set[str]:
    """The modules an import statement in module ``name`` loads: ``from a import b`` is the
    submodule ``a.b`` when there is one (in ``known``), else the module ``a``."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    base = node.module or ""
    if node.level:  # relative: from the module's package, up level - 1 packages
        package = name.split(".") if is_package else name.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, *([base] if base else [])])
    subs = (f"{base}.{alias.name}" for alias in node.names)
    return {sub if sub in known else base for sub in subs}


def module_graph() -> dict[str, set[str]]:
    """Module -> the mmctr modules it imports, lazy imports (inside functions) included."""
    trees = {module_name(p): (p, tree) for p, tree in modules().items()}
    graph: dict[str, set[str]] = {name: set() for name in trees}
    for name, (path, tree) in trees.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                targets = imported(node, name, is_package, set(graph))
                graph[name].update(t for t in targets if t in graph and t != name)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components of more than one module, iteratively (no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def cycle_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One cycle through the first module of a strongly connected component (breadth first)."""
    start, members = component[0], set(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt not in came_from:
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover


def test_no_import_cycle_between_files() -> None:
    graph = module_graph()
    assert "mmctr.prepare.embed.encoders" in graph["mmctr.prepare.embed"], "graph sanity"
    cycles = [" -> ".join(cycle_in(c, graph)) for c in strongly_connected(graph)]
    assert not cycles, "import cycles between files:\n" + "\n".join(cycles)


def test_cli_imports_neither_model_nor_data() -> None:
    graph = module_graph()
    offenders = sorted(
        f"{name} imports {target}"
        for name, targets in graph.items()
        if name == "mmctr.cli" or name.startswith("mmctr.cli.")
        for target in targets
        if target.split(".")[:2] in (["mmctr", "model"], ["mmctr", "data"])
    )
    assert not offenders, "the CLI must reach models and data through mmctr.api:\n" + "\n".join(
        offenders
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
