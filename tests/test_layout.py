"""The package layout: the science library never imports the book machinery (``softlib.book``),
and softlib's import graph (lazy, function-level imports included) has no cycle."""
import ast
from pathlib import Path

import softlib

ROOT = Path(softlib.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = p.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        package = m.split(".") if path.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[:len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    t = sub if sub in mods else target
                    if t in mods and t != m:
                        edges[m].add(t)
            elif isinstance(node, ast.Import):
                edges[m].update(a.name for a in node.names if a.name in mods and a.name != m)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read():
    edges = _graph()
    # relative imports three levels up, a lazy (function-level) import, a package's own submodules
    assert "softlib.multimodel" in edges["softlib.studies.peterson.generalisation"]
    assert "softlib.multimodel" in edges["softlib.studies.laing"]
    assert "softlib.studies.peterson.common" in edges["softlib.studies.peterson"]
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_the_science_library_does_not_import_the_book():
    bad = [(m, t) for m, ts in _graph().items() for t in ts
           if not m.startswith("softlib.book") and t.startswith("softlib.book")]
    assert bad == []


def test_progress_bars_go_through_softlib_progress():
    """One policy for bars (text on stderr, SOFTLIB_QUIET hides them): no module but
    softlib.progress imports tqdm itself (tqdm.auto would give notebooks widget bars that
    papermill cannot store)."""
    bad = []
    for m, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "tqdm" or n.startswith("tqdm.") for n in names) and m != "softlib.progress":
                bad.append(m)
    assert bad == []


def test_notebook_lines_fit_the_rendered_book():
    """The book shows each notebook's code: a line over 100 characters scrolls sideways there."""
    long_ = [f"{p.name}:{i}" for p in sorted((ROOT.parent / "notebooks").glob("*.py"))
             for i, line in enumerate(p.read_text().splitlines(), 1) if len(line) > 100]
    assert long_ == []
