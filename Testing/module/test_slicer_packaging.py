"""The extension's packaging and panel, checked without Slicer: CMake lists, resources, the .ui.

A script missing from the module's CMakeLists is missing from the packaged extension (it works from
a checkout and breaks for users), so every .py the module needs must be listed there. The extension's
licence, URLs, module category, ctest registration and segment terminology are checked here too;
the terminology check needs slicer-core and skips without it.
"""

from __future__ import annotations

import ast
import re
import struct
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from slicer_testing import tiny_run

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "NormativeAD"
CMAKE = (MODULE / "CMakeLists.txt").read_text()
TOP_CMAKE = (REPO / "CMakeLists.txt").read_text()
UI = MODULE / "Resources" / "UI" / "NormativeAD.ui"


def test_every_module_and_library_script_is_listed():
    # NormativeAD/Testing holds ctest scripts, run from the source tree: not part of the package
    scripts = [p.relative_to(MODULE).as_posix() for p in MODULE.rglob("*.py")
               if "__pycache__" not in p.parts and p.relative_to(MODULE).parts[0] != "Testing"]
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
    used = set(re.findall(r"self\.ui\.(\w+)", (MODULE / "NormativeADSlicerLib" / "widget.py").read_text("utf-8")))
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


# -- the extension's metadata and ctest registration


def _extension_setting(name: str) -> str:
    match = re.search(rf'^set\({name}\s+"([^"]*)"\)', TOP_CMAKE, re.M)
    assert match, f"{name} is not set in CMakeLists.txt"
    return match.group(1).replace("${CMAKE_CURRENT_SOURCE_DIR}", str(REPO))


def test_the_package_carries_the_declared_licence():
    """Without EXTENSION_LICENSE_FILE, Slicer packages its own License.txt with the extension."""
    declared = re.search(r'^license\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert declared == "Apache-2.0"
    licence = REPO / "LICENSE"
    assert licence.is_file(), "no LICENSE at the repository root"
    text = licence.read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text, "not the licence's full text"
    assert Path(_extension_setting("EXTENSION_LICENSE_FILE")) == licence
    assert Path(_extension_setting("EXTENSION_README_FILE")) == REPO / "README.md"


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def _git_remote() -> str:
    try:
        done = subprocess.run(["git", "-C", str(REPO), "config", "--get", "remote.origin.url"],
                              capture_output=True, text=True, timeout=30)
    except OSError:
        return ""
    return done.stdout.strip()


def test_extension_urls_name_files_of_this_repository():
    """Homepage, icon and screenshot: one repository, files that exist here (not the template's URLs)."""
    homepage = _extension_setting("EXTENSION_HOMEPAGE")
    repository = re.match(r"https://github\.com/([\w.-]+/[\w.-]+)", homepage)
    assert repository, f"the homepage is not a repository: {homepage}"
    slug = repository.group(1)
    raw = rf"https://raw\.githubusercontent\.com/{re.escape(slug)}/main/(.+)"
    icon = re.fullmatch(raw, _extension_setting("EXTENSION_ICONURL"))
    assert icon and _png_size(REPO / icon.group(1)) == (128, 128), "the icon URL names no 128x128 PNG here"
    screenshots = _extension_setting("EXTENSION_SCREENSHOTURLS").split()
    readme = (REPO / "README.md").read_text()
    for url in screenshots:
        shot = re.fullmatch(raw, url)
        assert shot and (REPO / shot.group(1)).is_file(), f"{url} names no file of the repository"
        _png_size(REPO / shot.group(1))
        assert f"]({shot.group(1)})" in readme, f"{shot.group(1)} is not the README's screenshot"
    docs_url = re.search(r'^DOCS_URL = "([^"]+)"', (MODULE / "NormativeAD.py").read_text(), re.M).group(1)
    assert docs_url.startswith(f"https://github.com/{slug}/"), "the help link names another repository"
    remote = _git_remote()
    if "github.com" in remote:  # a clone of the published repository: the URLs must name it
        assert slug in remote, f"the URLs name {slug}, the repository is {remote}"
    else:  # a local clone or no remote: the guessed repository must say so where it is set
        assert "PLACEHOLDER repository URL" in TOP_CMAKE


def test_module_category_is_translated_in_slicers_context():
    """Slicer 5.x translates category names in the qSlicerAbstractCoreModule context: through _() the
    module would sit in its own untranslated folder next to the translated built-in one."""
    tree = ast.parse((MODULE / "NormativeAD.py").read_text())
    assignments = [n for n in ast.walk(tree) if isinstance(n, ast.Assign)
                   and any(ast.unparse(t) == "self.parent.categories" for t in n.targets)]
    assert len(assignments) == 1
    categories = assignments[0].value
    assert isinstance(categories, ast.List) and categories.elts
    for call in categories.elts:
        assert isinstance(call, ast.Call) and ast.unparse(call.func) == "translate", ast.unparse(call)
        assert [a.value for a in call.args] == ["qSlicerAbstractCoreModule", _extension_setting("EXTENSION_CATEGORY")]


def test_testing_subdirectory_is_registered_with_ctest():
    """As Slicer's scripted-module template: Testing/ added under BUILD_TESTING, Testing/Python's
    scripts registered with slicer_add_python_unittest, each a unittest test case."""
    block = re.search(r"^if\(BUILD_TESTING\)(.*?)^endif\(\)", CMAKE, re.S | re.M)
    assert block and re.search(r"^\s*add_subdirectory\(Testing\)", block.group(1), re.M)
    testing = MODULE / "Testing"
    assert re.search(r"^\s*add_subdirectory\(Python\)", (testing / "CMakeLists.txt").read_text(), re.M)
    registered = re.findall(r"^\s*slicer_add_python_unittest\(SCRIPT\s+(\S+?)\)",
                            (testing / "Python" / "CMakeLists.txt").read_text(), re.M)
    scripts = sorted(p.name for p in (testing / "Python").glob("*.py"))
    assert registered and sorted(registered) == scripts, (registered, scripts)
    for name in scripts:
        tree = ast.parse((testing / "Python" / name).read_text())
        cases = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == Path(name).stem]
        assert cases and any(ast.unparse(b).endswith("TestCase") for b in cases[0].bases), name


def test_anomaly_segment_carries_standard_terminology(scene, tmp_path):
    """The segment's codes (category, type, region) in the scene and in the exported .seg.nrrd, where
    Slicer's segment list and its DICOM SEG export read them."""
    import numpy as np
    import slicer
    import vtk
    from NormativeADSlicerLib import export, nodes, scene as scene_logic

    volume = tiny_run(scene, tmp_path / "run")
    result = scene_logic.load_result(scene, volume, tmp_path / "run", "tiny")
    loaded = result.segmentation
    written = export.write_segmentation(loaded, tmp_path / "anomaly.seg.nrrd")
    read = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "read back")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(written))
    assert storage.ReadData(read)
    # a segmentation the user edited is kept: re-thresholding makes a new one, with the same codes
    nodes.set_segment_array(loaded, scene_logic.SEGMENT_ID, np.ones((6, 7, 8), np.uint8), volume)
    scene_logic.set_threshold(scene, result, 0.6)
    assert result.segmentation is not loaded
    tag = slicer.vtkSegment.GetTerminologyEntryTagName()
    for node in (loaded, read, result.segmentation):
        value = vtk.reference("")
        assert node.GetSegmentation().GetSegment(scene_logic.SEGMENT_ID).GetTag(tag, value), node.GetName()
        entry = slicer.vtkSlicerTerminologyEntry()
        assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(str(value), entry)
        codes = [(c.GetCodingSchemeDesignator(), c.GetCodeValue()) for c in (
            entry.GetCategoryObject(), entry.GetTypeObject(), entry.GetRegionObject())]
        assert codes == [("SCT", "49755003"), ("SCT", "52988006"), ("SCT", "12738006")], codes
