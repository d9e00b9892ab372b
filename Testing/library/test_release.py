"""Release artefacts: the built wheel and sdist, the version, CITATION.cff and the Slicer index file.

The build runs on a copy of the working tree (tracked and untracked, not ignored files) so that the
repository stays clean, with `--no-isolation`: the test environment's setuptools builds it and nothing
is downloaded. `python -m build` makes the sdist and then the wheel from that sdist, so a file missing
from the sdist fails here too. The slow test installs the wheel into an empty folder (`pip install
--no-deps --target`, this interpreter's packages for the dependencies: no second copy of torch) and
runs the installed `normativead` from there, `demo` included.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from testsupport import REPO

SHIPPED = REPO / "Resources"


def _version() -> str:
    """NormativeADLib.__version__, read as pyproject.toml reads it (without importing the package)."""
    tree = ast.parse((REPO / "NormativeADLib" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            return node.value.value
    raise AssertionError("NormativeADLib/__init__.py defines no __version__")


def _source_files() -> list[Path]:
    """The working tree's files as a clone with these changes would hold them."""
    if shutil.which("git") and (REPO / ".git").exists():
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=REPO, capture_output=True, check=True).stdout
        return [Path(p) for p in out.decode().split("\0") if p and (REPO / p).is_file()]
    skip = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", "site"}
    return [p.relative_to(REPO) for p in REPO.rglob("*")
            if p.is_file() and not skip.intersection(p.relative_to(REPO).parts) and ".egg-info" not in str(p)]


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """The folder holding the wheel and the sdist that `python -m build` made from the working tree."""
    missing = [m for m in ("build", "twine", "setuptools") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (pip install -e '.[test]' installs them)")
    src = tmp_path_factory.mktemp("source")
    for rel in _source_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    out = tmp_path_factory.mktemp("dist")
    run = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return out


def _artefacts(dist: Path) -> tuple[Path, Path]:
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in dist.iterdir())
    return wheels[0], sdists[0]


def _shipped_files() -> list[str]:
    """Every shipped model, config, split, case list and the sample case, relative to Resources/."""
    return sorted(p.relative_to(SHIPPED).as_posix() for p in SHIPPED.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.name != "__init__.py")


def test_build_makes_a_wheel_and_an_sdist_that_twine_accepts(dist):
    wheel, sdist = _artefacts(dist)
    version = _version()
    assert wheel.name == f"normativead-{version}-py3-none-any.whl"
    assert sdist.name == f"normativead-{version}.tar.gz"

    check = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(f"normativead-{version}.dist-info/METADATA").decode()
        entry_points = zf.read(f"normativead-{version}.dist-info/entry_points.txt").decode()
    # The shipped models (cards and weights) and the sample case travel inside the wheel: `normativead
    # demo` and `normativead models` need nothing else.
    missing = [f for f in _shipped_files() if f"NormativeADLib/_shipped/{f}" not in names]
    assert not missing, f"not in the wheel: {missing[:10]}"
    assert {"NormativeADLib/cli/commands.py", "NormativeADLib/models/__init__.py", "NormativeADWeb/app.py"} <= names
    assert f"normativead-{version}.dist-info/licenses/LICENSE" in names
    assert not [n for n in names if "__pycache__" in n or n.startswith(("Testing/", "NormativeAD/"))]
    assert f"Version: {version}" in metadata and "License-Expression: Apache-2.0" in metadata
    assert "normativead = NormativeADLib.cli:main" in entry_points

    with tarfile.open(sdist) as tf:
        members = {m.name.split("/", 1)[1] for m in tf.getmembers() if "/" in m.name}
    assert {"pyproject.toml", "README.md", "LICENSE"} <= members
    assert not [f for f in _shipped_files() if f"Resources/{f}" not in members]


@pytest.mark.slow  # installs the 55 MB wheel and analyses the sample case with it (about 30 s)
def test_the_wheel_installs_and_runs_the_demo(dist, tmp_path):
    wheel, _ = _artefacts(dist)
    target = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                          "--target", str(target), str(wheel)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    script = target / "bin" / "normativead"
    assert script.is_file(), "the console script was not installed"

    # Only the installed copy is importable as NormativeADLib: the child runs outside the checkout, with
    # the wheel's folder first on its path and its own empty model cache.
    env = {k: v for k, v in os.environ.items() if k not in ("NORMATIVEAD_RESOURCES", "PYTHONPATH")}
    env.update(PYTHONPATH=str(target), NORMATIVEAD_HOME=str(tmp_path / "home"))

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)

    where = run(sys.executable, "-c", "import NormativeADLib, importlib.metadata as m; "
                "print(NormativeADLib.__file__); print(m.version('normativead'))")
    assert where.returncode == 0, where.stderr
    module_file, version = where.stdout.split()
    assert Path(module_file).is_relative_to(target) and version == _version()

    assert run(sys.executable, str(script), "--help").returncode == 0
    listed = run(sys.executable, str(script), "models", "--json")
    assert listed.returncode == 0, listed.stderr
    cards = json.loads(listed.stdout)
    shipped = sorted(p.name for p in (SHIPPED / "Models").iterdir() if (p / "card.json").is_file())
    assert sorted(c["id"] for c in cards) == shipped
    assert all(Path(c["folder"]).is_relative_to(target) for c in cards)

    demo = run(sys.executable, str(script), "demo", "--out", str(tmp_path / "demo"))
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    outputs = {p.name for p in (tmp_path / "demo").iterdir()}
    assert {"heatmap.nii.gz", "segmentation.nii.gz", "metrics.json", "report.png"} <= outputs
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert metrics["reference"]["dice"] > 0  # the shipped reference lesion travelled in the wheel too


# -- CITATION.cff ------------------------------------------------------------------------------------

def test_citation_names_the_software_its_version_and_the_methods_papers():
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert {"message", "title", "authors"} <= set(cff)
    assert str(cff["version"]) == _version()
    assert cff["license"] == "Apache-2.0"
    titles = " | ".join(ref["title"] for ref in cff["references"])
    for method in ("normative representation learning", "conditioned diffusion", "Patched diffusion",
                   "supervised segmentation", "AnoDDPM", "automatic diffusion", "Denoising autoencoders"):
        assert method.lower() in titles.lower(), method
    for ref in cff["references"]:
        assert {"type", "title", "authors", "year"} <= set(ref), ref.get("title")
        assert all("family-names" in a or "name" in a for a in ref["authors"])


def test_changelog_follows_keep_a_changelog():
    text = (REPO / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog") and "keepachangelog.com" in text
    headings = re.findall(r"^## \[([^\]]+)\]", text, flags=re.M)
    assert headings and headings[0] == "Unreleased"
    for heading in headings[1:]:  # released versions: newest first, never above the library's version
        assert re.fullmatch(r"\d+\.\d+\.\d+", heading), heading
    assert not re.search(r"\bissue \d+|#\d+\b", text), "internal issue numbers do not belong in the changelog"


# -- Slicer Extensions Index description file ---------------------------------------------------------

# slicer-extension-catalog-entry-schema-v1.0.1.json (Slicer's Schemas/): its properties and their types;
# additionalProperties is false there, so any other key is refused by the index.
INDEX_SCHEMA = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json#"
INDEX_PROPERTIES = {"$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
                    "build_dependencies": list, "build_subdirectory": str, "enabled": bool, "tier": int}
INDEX_REQUIRED = {"$schema", "category", "scm_url"}
# The categories the index's check_description_files.py accepts, of those that could describe this extension.
INDEX_CATEGORIES = {"Analysis", "Neuroimaging", "Quantification", "Segmentation"}


def _cmake_metadata() -> dict[str, str]:
    text = (REPO / "CMakeLists.txt").read_text()
    meta = dict(re.findall(r'^\s*set\((EXTENSION_\w+)\s+"([^"]*)"', text, flags=re.M))
    meta["project"] = re.search(r"^\s*project\((\w+)", text, flags=re.M).group(1)
    return meta


def test_extensions_index_file_matches_the_schema_and_the_extension():
    path = REPO / "release" / "NormativeAD.json"
    entry = json.loads(path.read_text())
    assert entry["$schema"] == INDEX_SCHEMA
    assert INDEX_REQUIRED <= set(entry) <= set(INDEX_PROPERTIES), set(entry) ^ set(INDEX_PROPERTIES)
    for key, value in entry.items():
        assert isinstance(value, INDEX_PROPERTIES[key]), key
    assert all(isinstance(d, str) for d in entry.get("build_dependencies", []))
    assert entry.get("scm_type", "git") in {"git", "local"} and entry.get("tier", 5) in {1, 3, 5}
    assert entry["scm_url"].startswith("https://")

    cmake = _cmake_metadata()
    assert path.stem == cmake["project"], "the index names the extension by its file name"
    assert entry["category"] == cmake["EXTENSION_CATEGORY"] and entry["category"] in INDEX_CATEGORIES
    assert entry.get("build_dependencies", []) == cmake["EXTENSION_DEPENDS"].split()
    repository = re.match(r"https://github\.com/([^/#]+/[^/#]+)", cmake["EXTENSION_HOMEPAGE"]).group(1)
    assert entry["scm_url"].removesuffix(".git").endswith(repository)
    for key in ("EXTENSION_DESCRIPTION", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_CONTRIBUTORS"):
        assert cmake.get(key), f"{key} is what the Extensions Manager shows"
