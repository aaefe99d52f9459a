"""The import graph of scorer/: which project modules each module imports, at module level and
inside functions, and the cycles among them.

    .venv/bin/python tests/import_graph.py          # counts, function-local imports, cycles

Read from the source with ast (nothing is imported). A function-local import of a project
module is allowed only where a line's comment says why (`# deferred: ...`): a heavy optional
dependency loaded only by the command that needs it.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "scorer"
DEFERRED = "# deferred:"  # the comment that marks a deliberate function-local import


@dataclass
class Import:
    module: str  # the importing module, e.g. scorer.hf.convert
    target: str  # the imported project module, e.g. scorer.classifier
    line: int
    local: bool  # inside a function (else at module level)
    deferred: bool  # marked with DEFERRED: a heavy optional dependency, on purpose


@dataclass
class Graph:
    modules: list[str]
    imports: list[Import] = field(default_factory=list)

    def edges(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {m: set() for m in self.modules}
        for i in self.imports:
            if i.target != i.module:
                out[i.module].add(i.target)
        return out

    def local_imports(self) -> list[Import]:
        return [i for i in self.imports if i.local]

    def cycles(self) -> list[list[str]]:
        """The strongly connected components of more than one module (Tarjan)."""
        edges, index, low, stack, on, found = self.edges(), {}, {}, [], set(), []

        def visit(v: str) -> None:
            index[v] = low[v] = len(index)
            stack.append(v)
            on.add(v)
            for w in sorted(edges[v]):
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

        for v in sorted(edges):
            if v not in index:
                visit(v)
        return found


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(name: str, modules: set[str]) -> str | None:
    """The project module `name` is (or, for `from pkg import x`, x's module if x is one)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def read(root: Path = ROOT / PACKAGE) -> Graph:
    files = sorted(root.rglob("*.py"))
    names = {module_name(f, root): f for f in files}
    graph = Graph(sorted(names))
    for module, path in names.items():
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node, local in _imports(tree):
            comment = lines[node.lineno - 1]
            deferred = DEFERRED in comment
            for target in _targets(node, package, set(names)):
                graph.imports.append(Import(module, target, node.lineno, local, deferred))
    return graph


def _imports(tree: ast.AST):
    """(import node, inside a function?) for every import statement."""
    def walk(node: ast.AST, local: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, local
            yield from walk(child, local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                 ast.Lambda)))
    yield from walk(tree, False)


def _targets(node: ast.Import | ast.ImportFrom, package: str, modules: set[str]) -> set[str]:
    if isinstance(node, ast.Import):
        return {t for a in node.names if (t := resolve(a.name, modules))}
    if node.level:
        base = package.split(".")
        base = base[:len(base) - node.level + 1]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    if not prefix.split(".")[0] == PACKAGE:
        return set()
    found = set()
    for alias in node.names:
        sub = f"{prefix}.{alias.name}"
        target = sub if sub in modules else resolve(prefix, modules)
        if target:
            found.add(target)
    return found


def main() -> None:
    graph = read()
    local = graph.local_imports()
    print(f"{len(graph.modules)} modules, {len({(i.module, i.target) for i in graph.imports})} "
          f"import edges, {len(local)} function-local imports of project modules "
          f"({sum(i.deferred for i in local)} marked deferred)")
    for i in local:
        print(f"  {i.module}:{i.line} -> {i.target}{'  (deferred)' if i.deferred else ''}")
    cycles = graph.cycles()
    print(f"{len(cycles)} cycles")
    for c in cycles:
        print("  " + " <-> ".join(c))
    sys.exit(1 if cycles else 0)


if __name__ == "__main__":
    main()
