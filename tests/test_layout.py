"""The layout holds: each runtime library is imported only inside its own ``runtimes/<name>/``
folder, packages import each other without a cycle, modules too, and no private name crosses a
package. Read from the source (every import, including those inside functions), so a cycle that
only a rarely taken path would close is caught as well."""

import ast
from pathlib import Path

import pytest

from .conftest import ROOT

PACKAGE = ROOT / "mexport"

# Runtime libraries and the one folder each may be imported in.
RUNTIME_LIBRARIES = {
    "onnxruntime": "onnx", "onnx": "onnx", "onnxsim": "onnx",
    "ai_edge_litert": "tflite", "litert_torch": "tflite", "ai_edge_quantizer": "tflite", "tflite_runtime": "tflite",
    "coremltools": "coreml",
    "executorch": "executorch", "torchao": "executorch",
}

# Package-level edges that exist for a reason outside this layout's reach, each with it. A listed
# edge that disappears fails the test too, so the list cannot outlive its reason.
KNOWN_EDGES: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def package_of(module: str) -> str:
    """A runtime folder is a package of its own (mexport.runtimes.onnx), like every subpackage
    (mexport.validate); a module directly under mexport (mexport.api) stands for itself."""
    parts = module.split(".")
    if parts[:2] == ["mexport", "runtimes"] and len(parts) > 2:
        return ".".join(parts[:3])
    if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()):
        return ".".join(parts[:2])
    return module


def imports(module: str, path: Path | None = None) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import in the module's source."""
    path = path or MODULES[module]
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_pkg else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]  # `from . import onnx`
            out += [(s, [], node.lineno) for s in subs]
            rest = [n for n in names if f"{target}.{n}" not in MODULES]
            if rest or not subs:
                out.append((target, rest, node.lineno))
    return out


def internal_edges() -> dict[tuple[str, str], list[str]]:
    """(importer, imported) module pairs inside mexport, with where they happen."""
    edges: dict[tuple[str, str], list[str]] = {}
    for m in MODULES:
        for target, _, line in imports(m):
            while target and target not in MODULES:  # `mexport.x.y` where y is a name in x
                target = target.rpartition(".")[0]
            if target.startswith("mexport") and target != m:
                edges.setdefault((m, target), []).append(f"{MODULES[m].relative_to(ROOT)}:{line}")
    return edges


def cycles(edges) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def package_edges() -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for (a, b), where in internal_edges().items():
        pa, pb = package_of(a), package_of(b)
        if pa != pb:
            out.setdefault((pa, pb), []).extend(where)
    return out


def runtime_import_violations(sources: dict[str, Path]) -> list[str]:
    wrong = []
    for m, path in sources.items():
        for target, _, line in imports(m, path):
            folder = RUNTIME_LIBRARIES.get(target.split(".")[0])
            if folder and not m.startswith(f"mexport.runtimes.{folder}"):
                wrong.append(f"{m} (line {line}) imports {target}: it belongs in mexport/runtimes/{folder}/")
    return wrong


def test_runtime_libraries_are_imported_only_in_their_folder():
    wrong = runtime_import_violations(MODULES)
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("library", sorted(RUNTIME_LIBRARIES))
def test_the_checker_finds_a_runtime_library_in_the_wrong_place(library, tmp_path):
    """The check above can fail: a runtime library imported inside a function of validate/ is found."""
    probe = tmp_path / "metrics.py"
    probe.write_text((PACKAGE / "validate" / "metrics.py").read_text() + f"\n\ndef probe():\n    import {library}.x\n")
    assert runtime_import_violations({"mexport.validate.metrics": probe}) == [
        f"mexport.validate.metrics (line {len(probe.read_text().splitlines())}) imports {library}.x: "
        f"it belongs in mexport/runtimes/{RUNTIME_LIBRARIES[library]}/"]
    assert runtime_import_violations({f"mexport.runtimes.{RUNTIME_LIBRARIES[library]}.x": probe}) == []


def test_no_cycle_between_packages():
    edges = package_edges()
    stale = [e for e in KNOWN_EDGES if e not in edges]
    assert not stale, f"known edges that no longer exist (remove them from KNOWN_EDGES): {stale}"
    found = cycles([e for e in edges if e not in KNOWN_EDGES])
    detail = [f"{' <-> '.join(c)}: " + "; ".join(f"{a}->{b} at {edges[(a, b)][0]}" for (a, b) in edges if a in c and b in c)
              for c in found]
    assert not found, "\n".join(detail)


def test_no_cycle_between_modules():
    edges = internal_edges()
    known = {(a, b) for (a, b) in edges if (package_of(a), package_of(b)) in KNOWN_EDGES}
    found = cycles([e for e in edges if e not in known])
    assert not found, "\n".join(f"{' <-> '.join(c)}" for c in found)


def test_no_private_name_crosses_a_package():
    wrong = []
    for m in MODULES:
        for target, names, line in imports(m):
            if target.startswith("mexport") and package_of(target) != package_of(m):
                private = [n for n in names + target.split(".") if n.startswith("_") and not n.endswith("__")]
                if private:
                    wrong.append(f"{MODULES[m].relative_to(ROOT)}:{line} takes {private} from {target}")
    assert not wrong, "\n".join(wrong)


def test_runtime_neutral_code_knows_runtimes_only_through_the_registry():
    """Outside mexport/runtimes/, nothing imports a runtime folder (the registry's lookups in
    mexport.runtimes are the interface), except the weights reader that models/ needs."""
    allowed = {("mexport.models.u2netp_onnx", "mexport.runtimes.onnx")}  # reading U^2-Net-p's ONNX weights file
    wrong = [f"{a} imports {b} ({where[0]})" for (a, b), where in internal_edges().items()
             if not a.startswith("mexport.runtimes") and b.startswith("mexport.runtimes.")
             and (a, package_of(b)) not in allowed]
    assert not wrong, "\n".join(wrong)


def test_the_cli_talks_to_the_library_api_only():
    used = {t for t, _, _ in imports("mexport.cli") if t.startswith("mexport")}
    assert used == {"mexport", "mexport.api", "mexport.errors", "mexport.ui"}, used


def test_the_cycle_finder_finds_cycles():
    assert cycles([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]) == [["a", "b", "c"]]
    assert cycles([("a", "b"), ("b", "c")]) == []
