"""Helpers shared by the Slicer tests (plain functions; the fixtures are in conftest.py)."""

from __future__ import annotations

from pathlib import Path


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
