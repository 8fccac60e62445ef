"""The house's arrows: imports only run downward, and no module imports itself back through others.

Layers, top to bottom: bench -> jobs -> relevance -> udfs -> plumbing -> schemas. A module may import its own
package and the packages below it, never one above. Every import counts, those inside functions and under
TYPE_CHECKING too: a deferred import is still an arrow.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("schemas", "plumbing", "udfs", "relevance", "jobs", "bench")  # bottom first


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in LAYERS for p in sorted((ROOT / package).rglob("*.py"))}


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules `path` imports (`from a.b import c` counts as a.b.c where that is a module)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in found if m.split(".")[0] in LAYERS and m in known}


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {name: imported_modules(path, name, known) - {name} for name, path in modules.items()}


def layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def test_imports_only_run_downward():
    upward = sorted(f"{source} imports {target}" for source, targets in import_graph().items()
                    for target in targets if layer(target) > layer(source))
    assert not upward, "imports that run upward (" + " -> ".join(reversed(LAYERS)) + "):\n" + "\n".join(upward)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module (the import circles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_no_import_circles():
    circles = strongly_connected(import_graph())
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_the_checks_see_an_upward_import_and_a_circle():
    """The checks themselves: a made-up upward arrow and a made-up circle are found."""
    graph = {"udfs.a": {"jobs.b"}, "jobs.b": {"udfs.a"}}
    assert strongly_connected(graph) == [["jobs.b", "udfs.a"]]
    assert layer("jobs.b") > layer("udfs.a")
    real = import_graph()
    assert "plumbing.delta" in real and "plumbing.storage" in real["plumbing.delta"]


# ----------------------------------------------------------------------------- purity
PURITY_MARK = re.compile(r"^# purity: no ((?:[\w.]+ ?)+)$", re.MULTILINE)


def purity_claims() -> dict[str, tuple[str, ...]]:
    """Module -> the packages it claims not to import, from its own `# purity: no pyspark torch ...` line."""
    claims = {}
    for name, path in project_modules().items():
        match = PURITY_MARK.search(path.read_text())
        if match:
            claims[name] = tuple(match.group(1).split())
    return claims


def test_purity_claims_hold():
    """Each module marked `# purity: no <package> ...` imports (with everything it imports) while those packages
    are made unimportable, in a fresh interpreter: the claim is checked, not believed."""
    claims = purity_claims()
    assert {"relevance.settings", "udfs.scorer", "relevance.data.importers", "relevance.evaluation.summary",
            "relevance.training.calibration"} <= set(claims)
    code = ("import sys, importlib\n"
            "class Block:\n"
            "    def __init__(self, names): self.names = names\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in self.names:\n"
            "            raise ImportError('blocked: ' + name)\n"
            "module, blocked = sys.argv[1], sys.argv[2:]\n"
            "sys.meta_path.insert(0, Block(blocked))\n"
            "importlib.import_module(module)\n"
            "print('ok')\n")
    failures = []
    for module, blocked in sorted(claims.items()):
        out = subprocess.run([sys.executable, "-c", code, module, *blocked], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
        if out.returncode != 0 or out.stdout.strip() != "ok":
            failures.append(f"{module} (no {' '.join(blocked)}): {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    assert not failures, "purity claims that do not hold:\n" + "\n".join(failures)


def test_the_purity_check_catches_a_false_claim(tmp_path):
    """A module that claims no pyspark and imports it fails the same subprocess check."""
    (tmp_path / "liar.py").write_text("# purity: no pyspark\nimport pyspark\n")
    out = subprocess.run([sys.executable, "-c", "import sys\n"
                          "class B:\n"
                          "    def find_spec(self, n, p=None, t=None):\n"
                          "        if n.split('.')[0] == 'pyspark': raise ImportError(n)\n"
                          "sys.meta_path.insert(0, B()); import liar"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode != 0 and "ImportError" in out.stderr
