"""The shape of the code: no import circles between the project's modules (imports
inside functions count too), every module opens with a docstring saying what it is
for, and none grows past ~400 lines without saying why."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "estimators", "tasks")
MAX_LINES = 400
LONG_REASON = "longer than 400 lines because"


def project_modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def imports_of(name: str, path: Path, mods: dict) -> set[str]:
    """The project modules that module ``name`` imports, anywhere in its body."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import sub` imports the submodule where one exists
            subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in mods]
            targets = subs or [mod]
        else:
            continue
        for t in targets:
            while t and t not in mods:  # `import a.b.c` where only a.b is ours, etc.
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == "open":
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = "done"
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_no_import_cycle():
    mods = project_modules()
    graph = {n: imports_of(n, p, mods) for n, p in mods.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_imports_inside_functions_and_relative_imports_are_seen(tmp_path):
    pkg = tmp_path / "p"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""p."""\n')
    (pkg / "a.py").write_text('"""a."""\ndef f():\n    from . import b\n')
    (pkg / "b.py").write_text('"""b."""\nfrom .a import f\n')
    mods = {"p": pkg / "__init__.py", "p.a": pkg / "a.py", "p.b": pkg / "b.py"}
    graph = {n: imports_of(n, path, mods) for n, path in mods.items()}
    assert graph["p.a"] == {"p.b"} and graph["p.b"] == {"p.a"}
    assert find_cycle(graph) is not None


@pytest.mark.parametrize("name", sorted(project_modules()))
def test_module_opens_with_a_docstring_and_stays_readable(name):
    path = project_modules()[name]
    tree = ast.parse(path.read_text())
    doc = ast.get_docstring(tree)
    assert doc and doc.strip(), f"{path.relative_to(ROOT)} has no opening docstring"
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES or LONG_REASON in " ".join(doc.lower().split()), (
        f"{path.relative_to(ROOT)} has {lines} lines; split it, or say in its docstring "
        f"why it is {LONG_REASON} ...")
