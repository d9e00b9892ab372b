"""MRML node plumbing NormativeAD needs, apart from what a result means: files <-> nodes through
storage nodes, voxel grids, segment arrays, and fingerprints that tell whether the user edited a node.

Runs in Slicer and on slicer-core alike (MRML, storage nodes and vtk only). Arrays are (z, y, x).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import slicer
import vtk
from vtkmodules.util import numpy_support

ATTR = "NormativeAD."  # prefix of every attribute and node reference NormativeAD sets


def ensure_segmentation_support() -> None:
    """Register the segmentation converter rules when no Slicer application did (slicer-core)."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    rules = factory.GetConverterRules()
    if rules is not None and len(rules) > 0:
        return
    factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
    factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())


# ----------------------------------------------------------------------------------------------
# Files <-> nodes (storage nodes only; they are never added to the scene, so the scene stays as it was)


def write_with_storage(storage, node, path: str | Path) -> Path:
    """Write node through a fresh (unscened) storage node, so the scene's own storage is untouched."""
    path = Path(path)
    storage.SetFileName(str(path))
    if not storage.WriteData(node):
        raise OSError(f"cannot write {node.GetName()} to {path}")
    return path


def write_volume(node, path: str | Path) -> Path:
    """Write a volume node to .nrrd / .nii.gz without changing its storage node in the scene."""
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetUseCompression(True)
    return write_with_storage(storage, node, path)


def read_volume_array(path: str | Path) -> tuple[np.ndarray, vtk.vtkMatrix4x4]:
    """Read an image file into a (z, y, x) array and its IJK-to-RAS matrix (no node is added)."""
    node = slicer.vtkMRMLScalarVolumeNode()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetSingleFile(True)
    if not storage.ReadData(node):
        raise OSError(f"cannot read image {path}")
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVolume(node).copy(), matrix


def ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def same_grid(node, matrix: vtk.vtkMatrix4x4, shape_zyx: tuple[int, ...], tolerance_mm: float = 1e-3) -> bool:
    """Whether an array of shape_zyx with IJK-to-RAS matrix lies on node's voxel grid."""
    if tuple(node.GetImageData().GetDimensions()[::-1]) != tuple(shape_zyx):
        return False
    return bool(np.allclose(ijk_to_ras(node), slicer.util.arrayFromVTKMatrix(matrix), atol=tolerance_mm))


def volume_like(scene, reference, array_zyx: np.ndarray, name: str, label: bool = False):
    """A new scalar (or label map) volume node on reference's grid and under its transform."""
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if label else "vtkMRMLScalarVolumeNode", name)
    node.CopyOrientation(reference)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array_zyx))
    node.SetAndObserveTransformNodeID(reference.GetTransformNodeID())
    node.CreateDefaultDisplayNodes()
    return node


def _reference_geometry(reference) -> "slicer.vtkOrientedImageData":
    geometry = slicer.vtkOrientedImageData()
    geometry.SetExtent(reference.GetImageData().GetExtent())
    matrix = vtk.vtkMatrix4x4()
    reference.GetIJKToRASMatrix(matrix)
    geometry.SetImageToWorldMatrix(matrix)
    return geometry


def segment_array(segmentation_node, segment_id: str, reference) -> np.ndarray:
    """A segment as a uint8 (z, y, x) array on reference's grid (no temporary nodes)."""
    labelmap = slicer.vtkOrientedImageData()
    if not slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(
            segmentation_node, segment_id, labelmap):
        raise ValueError(f"segment {segment_id} has no binary labelmap")
    resampled = slicer.vtkOrientedImageData()
    slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        labelmap, _reference_geometry(reference), resampled, False, False)
    shape = tuple(reversed(resampled.GetDimensions()))
    values = numpy_support.vtk_to_numpy(resampled.GetPointData().GetScalars()).reshape(shape)
    # A segment may share a layer with others: keep this segment's label value only.
    label_value = segmentation_node.GetSegmentation().GetSegment(segment_id).GetLabelValue()
    return (values == label_value).astype(np.uint8)


def set_segment_array(segmentation_node, segment_id: str, mask_zyx: np.ndarray, reference) -> None:
    """Replace a segment's voxels by mask_zyx (on reference's grid)."""
    holder = slicer.vtkMRMLLabelMapVolumeNode()
    holder.CopyOrientation(reference)
    slicer.util.updateVolumeFromArray(holder, np.ascontiguousarray(mask_zyx, dtype=np.uint8))
    image = slicer.vtkSlicerSegmentationsModuleLogic.CreateOrientedImageDataFromVolumeNode(holder)
    # The function hands its caller a reference (C++ deletes it) and the Python wrapper takes one more: without
    # this, every segmentation update leaked one mask (7 MB on the sample case; 37 MB a run in `normativead web`).
    image.UnRegister(None)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.SetBinaryLabelmapToSegment(image, segmentation_node, segment_id, logic.MODE_REPLACE,
                                            image.GetExtent()):
        raise RuntimeError(f"cannot set segment {segment_id}")


# ----------------------------------------------------------------------------------------------
# Edit detection: a fingerprint of what we wrote, compared before replacing


def fingerprint(array: np.ndarray) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str((array.shape, str(array.dtype))).encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def node_fingerprint(node, reference=None) -> str:
    if node.IsA("vtkMRMLSegmentationNode"):
        segmentation = node.GetSegmentation()
        ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
        parts = [",".join(ids)] + [fingerprint(segment_array(node, i, reference)) for i in ids]
        return fingerprint(np.frombuffer("|".join(parts).encode(), np.uint8))
    return fingerprint(slicer.util.arrayFromVolume(node))


def mark_unedited(node, reference=None) -> None:
    node.SetAttribute(ATTR + "Fingerprint", node_fingerprint(node, reference))


def was_edited(node, reference=None) -> bool:
    stored = node.GetAttribute(ATTR + "Fingerprint")
    return stored is None or stored != node_fingerprint(node, reference)


def mask_array(node, input_node) -> np.ndarray:
    """A label map volume or a segmentation (all segments merged) as a boolean (z, y, x) array on the
    input's grid: what the command line reads from the exported file."""
    if not node.IsA("vtkMRMLSegmentationNode"):
        return slicer.util.arrayFromVolume(node) > 0
    segmentation = node.GetSegmentation()
    merged = np.zeros(slicer.util.arrayFromVolume(input_node).shape, bool)
    for i in range(segmentation.GetNumberOfSegments()):
        merged |= segment_array(node, segmentation.GetNthSegmentID(i), input_node) > 0
    return merged
