"""Helpers shared by the Slicer tests (constants and plain functions; the fixtures are in conftest.py).

Tests import these from here, never from `conftest`: pytest imports Testing/conftest.py and each
Testing/*/conftest.py as a module named `conftest`, so `from conftest import ...` reads whichever
was loaded last.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "NormativeAD"
SAMPLE = REPO / "Resources" / "SampleData"
SAMPLE_T1 = SAMPLE / "mslub_patient26_t1.nii.gz"
SAMPLE_LESION = SAMPLE / "mslub_patient26_lesion.nii.gz"
SAMPLE_FLAIR = SAMPLE / "mslub_patient26_flair.nii.gz"
CLI_TIMEOUT_S = 900
# To run these tests against another installed model (say, one you trained), point them at its
# cache and id: NORMATIVEAD_SLICER_TEST_HOME=~/.cache/normativead NORMATIVEAD_SLICER_TEST_MODEL=my-model
TEST_HOME = os.environ.get("NORMATIVEAD_SLICER_TEST_HOME")
TEST_MODEL = os.environ.get("NORMATIVEAD_SLICER_TEST_MODEL")


def load_volume(mrml, path: Path, name: str):
    """A scalar volume node read from path by a storage node (as Slicer's loadVolume does)."""
    import slicer

    node = mrml.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(node), f"cannot read {path}"
    node.CreateDefaultDisplayNodes()
    return node


def file_array(path):
    """(array z,y,x, 4x4 IJK-to-RAS) of an image file, read by Slicer's own storage node."""
    from NormativeADSlicerLib.nodes import read_volume_array
    import slicer

    array, matrix = read_volume_array(path)
    return array, slicer.util.arrayFromVTKMatrix(matrix)


def slicer_core_reason() -> str | None:
    """None when slicer-core is importable, else why the MRML tests cannot run."""
    try:
        import slicer
    except ImportError as err:
        return f"slicer-core is not installed ({err}); pip install -e '.[slicer]'"
    if not hasattr(slicer, "vtkMRMLScene"):
        return "the `slicer` module found is not slicer-core (the unrelated PyPI package `slicer`?)"
    return None


def require_slicer_core():
    reason = slicer_core_reason()
    if reason:
        pytest.skip(reason)


def shipped_model_reason(model_id: str | None = None) -> str | None:
    """None when the shipped model (the library's default) is present in Resources/Models."""
    try:
        from NormativeADLib.core import catalogue, locations
    except ImportError as err:
        return f"NormativeADLib cannot be imported ({err})"
    model_id = model_id or TEST_MODEL or catalogue.DEFAULT_MODEL
    folder = Path(TEST_HOME) / "models" if TEST_HOME else locations.resources_dir() / "Models"
    for card in sorted(folder.glob("*/card.json")) if folder.is_dir() else []:
        try:
            if json.loads(card.read_text()).get("id") == model_id:
                return None
        except ValueError:
            continue
    return f"the shipped model {model_id} is not in {folder} yet"


def tiny_run(scene, folder: Path):
    """A run folder on a small volume's grid, as the command line leaves one (NRRD, metrics.json)."""
    import numpy as np
    import slicer
    from NormativeADSlicerLib import nodes

    rng = np.random.default_rng(0)
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "tiny T1")
    volume.SetSpacing(2.0, 2.0, 2.0)
    slicer.util.updateVolumeFromArray(volume, rng.random((6, 7, 8)).astype(np.float32))
    volume.CreateDefaultDisplayNodes()
    folder.mkdir()
    for stem, array in (("pseudo_healthy", rng.random((6, 7, 8))), ("heatmap", rng.random((6, 7, 8))),
                        ("segmentation", rng.random((6, 7, 8)) > 0.7)):
        holder = slicer.vtkMRMLScalarVolumeNode()
        holder.CopyOrientation(volume)
        slicer.util.updateVolumeFromArray(holder, array.astype(np.float32))
        nodes.write_volume(holder, folder / f"{stem}.nrrd")
    metrics = {"model": {"id": "tiny"}, "threshold": {"value": 0.5, "source": "fpr5"}, "thresholds": {"fpr5": 0.5}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return volume
