"""The package's import structure (issue 27): calls run one way, nn and
models -> cnnfast._ops -> validation, plan and drivers, and no two modules
import each other at import time.

The graph is read from the source with ast, so nothing is imported to build
it. A module-level import is one outside any function (class bodies, `if`
and `try` blocks at module level count); an import inside a function runs at
call time and may point back up (Module.fuse() imports nn.fuse, say), but
not across the layers checked below."""
import ast
from pathlib import Path

import cnnfast

PACKAGE = Path(cnnfast.__file__).resolve().parent


def _modules():
    """{dotted name: (path, is_package)} of every .py file of cnnfast."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("cnnfast",) + path.relative_to(PACKAGE).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


MODULES = _modules()


def _target(importer, is_package, node):
    """The cnnfast modules an import statement names (a `from pkg import x`
    names pkg.x when x is a module, else pkg)."""
    if isinstance(node, ast.Import):
        out = set()
        for alias in node.names:
            name = alias.name
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
        return out
    if node.level:
        base = importer.split(".") if is_package else importer.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    out = set()
    for alias in node.names:
        if f"{source}.{alias.name}" in MODULES:
            out.add(f"{source}.{alias.name}")
        elif source in MODULES:
            out.add(source)
    return out


def _imports(name, inside_functions):
    """The cnnfast modules `name` imports: at module level, or anywhere."""
    path, is_package = MODULES[name]
    out = set()

    def visit(nodes):
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                if inside_functions:
                    visit(ast.iter_child_nodes(node))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                out.update(_target(name, is_package, node))
            else:
                visit(ast.iter_child_nodes(node))

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    out.discard(name)
    return out


def _cycles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_the_graph_sees_the_package():
    graph = {m: _imports(m, False) for m in MODULES}
    assert {"cnnfast.functional", "cnnfast._ops.conv", "cnnfast.nn.conv",
            "cnnfast.nn.container", "cnnfast.models.resnet"} <= set(graph)
    assert "cnnfast._ops.conv" in graph["cnnfast.functional"]
    assert "cnnfast._plan" in graph["cnnfast._ops.conv"]
    assert "cnnfast.nn.container" in graph["cnnfast.nn.fuse"]
    # `from .. import functional as F` in a subpackage is an edge to the module
    assert "cnnfast.functional" in graph["cnnfast.nn.conv"]


def test_no_import_cycle_at_module_level():
    graph = {m: _imports(m, False) for m in MODULES}
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _imports_of_package(package, inside_functions=True):
    return {(m, t) for m in MODULES if m == package or m.startswith(package + ".")
            for t in _imports(m, inside_functions)}


def test_ops_import_no_layer_above_them():
    """cnnfast._ops sits under nn, models and the public face, even at call time."""
    above = ("cnnfast.nn", "cnnfast.models", "cnnfast.functional", "cnnfast.onnx",
             "cnnfast.io", "cnnfast.reference", "cnnfast._explain")
    wrong = sorted((m, t) for m, t in _imports_of_package("cnnfast._ops")
                   if t == "cnnfast" or t.startswith(above))
    assert wrong == []


def test_below_the_ops_nothing_imports_them():
    """Validation, the planner and the NHWC records are read by the ops, never
    the reverse."""
    below = ["cnnfast._validation", "cnnfast._plan", "cnnfast._nhwc", "cnnfast._nhwc_backward",
             "cnnfast._cache", "cnnfast._threads", "cnnfast._policy"]
    wrong = sorted((m, t) for m in below for t in _imports(m, True)
                   if t.startswith(("cnnfast._ops", "cnnfast.functional", "cnnfast.nn")))
    assert wrong == []


def test_nn_imports_no_model():
    """Models are built from nn's layers and containers (Chain,
    set_data_format live in nn.container), so nn never reaches into models,
    not even at call time: io -> nn.module -> nn.fuse -> models -> io was a
    cycle."""
    wrong = sorted((m, t) for m, t in _imports_of_package("cnnfast.nn")
                   if t.startswith("cnnfast.models") or t == "cnnfast.io")
    assert wrong == []
