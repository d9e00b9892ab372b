"""The extension's packaging and panel, checked without Slicer: CMake lists, resources, the .ui.

A script missing from the module's CMakeLists is missing from the packaged extension (it works from
a checkout and breaks for users), so every .py the module needs must be listed there.
"""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "NormativeAD"
CMAKE = (MODULE / "CMakeLists.txt").read_text()
UI = MODULE / "Resources" / "UI" / "NormativeAD.ui"


def test_every_module_and_library_script_is_listed():
    scripts = [p.relative_to(MODULE).as_posix() for p in MODULE.rglob("*.py") if "__pycache__" not in p.parts]
    scripts += [p.relative_to(REPO).as_posix() for p in (REPO / "NormativeADLib").rglob("*.py")
                if "__pycache__" not in p.parts]
    missing = [s for s in scripts if not re.search(rf"^\s*{re.escape(s.replace('NormativeAD.py', '${MODULE_NAME}.py'))}\s*$", CMAKE, re.M)
               and not re.search(rf"^\s*{re.escape(s)}\s*$", CMAKE, re.M)]
    assert not missing, f"not listed in NormativeAD/CMakeLists.txt: {missing}"


def test_listed_resources_exist():
    block = re.search(r"set\(MODULE_PYTHON_RESOURCES(.*?)\)", CMAKE, re.S).group(1)
    for entry in block.split():
        path = MODULE / entry.replace("${MODULE_NAME}", "NormativeAD")
        assert path.is_file(), f"listed resource {entry} does not exist"


def test_extension_depends_on_pytorch():
    top = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r'set\(EXTENSION_DEPENDS\s+"?PyTorch"?\)', top)
    assert "add_subdirectory(NormativeAD)" in top


def test_requirements_never_touch_slicers_numpy_or_simpleitk():
    lines = [ln.split("#")[0].strip() for ln in (MODULE / "Resources" / "requirements.txt").read_text().splitlines()]
    names = {re.split(r"[<>=!~ \[]", ln)[0].lower() for ln in lines if ln}
    assert names and not names & {"numpy", "simpleitk", "torch", "slicer"}
    assert not any("==" in ln for ln in lines), "no exact pins"


def _parameter_fields() -> set[str]:
    tree = ast.parse((MODULE / "NormativeAD.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "NormativeADParameterNode")
    return {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)}


def test_ui_binds_only_parameter_node_fields_and_has_the_widgets_the_code_uses():
    root = ET.parse(UI).getroot()
    names = {w.get("name") for w in root.iter("widget")}
    bound = {p.find("string").text for p in root.iter("property") if p.get("name") == "SlicerParameterName"}
    assert bound <= _parameter_fields(), f"unknown parameters bound in the .ui: {bound - _parameter_fields()}"
    used = set(re.findall(r"self\.ui\.(\w+)", (MODULE / "NormativeAD.py").read_text()))
    assert used <= names, f"widgets used by the code but absent from the .ui: {used - names}"


def test_dependency_check_and_constraints_without_slicer():
    import importlib.metadata
    import sys

    sys.path.insert(0, str(MODULE))
    from NormativeADSlicerLib import dependencies

    reqs = dependencies.requirements()
    assert "scipy>=1.10" in reqs
    assert dependencies.missing(["scipy>=1.10", "surely-not-installed-pkg>=1"]) == ["surely-not-installed-pkg>=1"]
    constraints = dependencies.constraints_file()
    try:
        pins = constraints.read_text().split()
    finally:
        constraints.unlink()
    assert f"numpy=={importlib.metadata.version('numpy')}" in pins
