"""The library's shape: layers that import only downward, no slicer/qt/vtk, no import cycles, and a
catalogue that needs no heavy package."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

LIB = Path(__file__).resolve().parents[2] / "NormativeADLib"


def import_graph() -> dict[str, set[str]]:
    """module -> library modules it imports (at module level or inside functions)."""
    graph = {}
    for path in LIB.rglob("*.py"):
        name = ".".join(path.relative_to(LIB.parent).with_suffix("").parts).removesuffix(".__init__")
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(node.level - 1):
                    base = base.rsplit(".", 1)[0]
                module = f"{base}.{node.module}" if node.level and node.module else (node.module or base)
                submodules = [f"{module}.{alias.name}" for alias in node.names]
                candidates = submodules if node.module is None else [module] + submodules
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            targets |= {c for c in candidates if c.startswith("NormativeADLib") and c != name}
        graph[name] = targets
    return {m: {t for t in ts if t in graph} for m, ts in graph.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return trail + [node, nxt]
            if nxt not in state:
                found = visit(nxt, trail + [node])
                if found:
                    return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def test_library_import_graph_has_no_cycle():
    graph = import_graph()
    assert "NormativeADLib.core.catalogue" in graph and graph["NormativeADLib.models.registry"]
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


# The library's layers, lowest first: a module imports only from its own layer or those below.
LAYERS = ["core", "io", "synthesis", "measures", "models", "pipeline", "training", "evaluation", "cohort", "cli"]


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                  if layer_of(m) is not None and layer_of(t) is not None and layer_of(t) > layer_of(m))


def test_every_module_lives_in_a_layer_and_imports_only_downward():
    graph = import_graph()
    loose = [m for m in graph if m != "NormativeADLib" and layer_of(m) is None and not m.startswith("NormativeADLib._")]
    assert loose == [], f"modules outside the layers {LAYERS}: {loose}"
    assert graph["NormativeADLib"] == set(), "the package's __init__ imports nothing: each layer is imported alone"
    assert upward_imports(graph) == []


def test_the_layer_check_sees_an_upward_import():
    assert upward_imports({"NormativeADLib.core.card": {"NormativeADLib.models.registry"},
                           "NormativeADLib.models.registry": {"NormativeADLib.core.card"}}) == [
        "NormativeADLib.core.card -> NormativeADLib.models.registry"]


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_library_never_imports_slicer_qt_or_vtk():
    for path in LIB.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for name in names:
                assert name.split(".")[0] not in {"slicer", "qt", "vtk", "ctk", "vtkmodules"}, f"{path.name}: {name}"


def test_listing_models_needs_only_the_standard_library():
    """The Slicer panel lists models before torch and friends are installed."""
    code = ("import sys; from NormativeADLib.core import catalogue, locations, options, writes; cards = catalogue.list_models(); "
            "heavy = [m for m in ('torch', 'numpy', 'SimpleITK', 'nibabel', 'safetensors', 'scipy', 'monai') "
            "if m in sys.modules]; print(len(cards), heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=LIB.parent, check=True)
    count, heavy = out.stdout.strip().split(" ", 1)
    assert int(count) >= 2 and heavy == "[]", out.stdout


def test_the_metrics_table_slicer_reads_needs_no_scikit_packages():
    """Slicer's own process flattens a run's metrics (scene.py): scikit-image and scikit-learn, which
    Slicer does not ship, are imported only by the analysis that needs them, in the child process."""
    code = ("import sys; from NormativeADLib.measures.metrics import flat_metrics; "
            "print([m for m in ('skimage', 'sklearn', 'torch') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=LIB.parent, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_slicers_python_compiles_everything_and_lists_models():
    """Slicer 5.10 and 5.12 embed Python 3.12: every library and module file compiles there, and the
    model list (what the panel shows before any package is installed) works on its bare interpreter."""
    import pytest

    python312 = next(iter(sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"))), None)
    for candidate in ("/usr/bin/python3.12", "/usr/local/bin/python3.12"):
        python312 = python312 or (Path(candidate) if Path(candidate).is_file() else None)
    if python312 is None:
        pytest.skip("no Python 3.12 on this machine (Slicer 5.10/5.12 embed 3.12.10)")
    repo = LIB.parent
    files = [str(p) for folder in (LIB, repo / "NormativeAD") for p in folder.rglob("*.py")]
    compile_all = "import sys; [compile(open(f).read(), f, 'exec') for f in sys.argv[1:]]"  # writes no .pyc
    subprocess.run([python312, "-I", "-c", compile_all, *files], check=True, capture_output=True, text=True)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from NormativeADLib.core import catalogue; "
            "print(sys.version_info[:2], len(catalogue.list_models()))")
    out = subprocess.run([python312, "-I", "-c", code, str(repo)], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("(3, 12)") and int(out.stdout.split()[-1]) >= 2, out.stdout


def test_front_ends_register_their_commands_and_the_library_never_names_them():
    """`normativead web` comes from NormativeADWeb's entry point (pyproject.toml), not from the library."""
    from NormativeADLib.cli.commands import extension_commands

    assert extension_commands()["web"] == "NormativeADWeb.command"
    for path in LIB.rglob("*.py"):
        assert "NormativeADWeb" not in path.read_text(), path
