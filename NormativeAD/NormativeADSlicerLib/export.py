"""Writing a result out of the scene, on the input's grid, and handing scene data to the command line.

Storage nodes are used directly and never added to the scene, so exporting does not change which
file a node is associated with, and it works without slicer.app (slicer-core).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import slicer
from NormativeADLib.core import writes
from NormativeADLib.core.options import FORMATS

from .nodes import mask_array, segment_array, volume_like, write_volume, write_with_storage
from .scene import SEGMENT_ID, Result, table_as_rows, table_node


def write_segmentation(segmentation_node, path: str | Path) -> Path:
    """A segmentation node as .seg.nrrd (its binary labelmaps on the reference geometry)."""
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetCropToMinimumExtent(False)
    return write_with_storage(storage, segmentation_node, path)


def write_labelmap(segmentation_node, reference, path: str | Path) -> Path:
    """All segments as one label map file (.nii.gz / .nrrd) on reference's grid: segment i -> label i+1."""
    segmentation = segmentation_node.GetSegmentation()
    labels = np.zeros(slicer.util.arrayFromVolume(reference).shape, np.uint8)
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        labels[segment_array(segmentation_node, segment_id, reference) > 0] = index + 1
    holder = slicer.vtkMRMLLabelMapVolumeNode()
    holder.CopyOrientation(reference)
    slicer.util.updateVolumeFromArray(holder, labels)
    return write_volume(holder, path)


def write_metrics_csv(scene, path: str | Path, result_names: list[str] | None = None) -> Path:
    """The metrics table (all rows, or only the named results) as CSV."""
    path = Path(path)
    table = table_node(scene, create=False)
    rows = table_as_rows(table) if table is not None else []
    if result_names is not None:
        rows = [r for r in rows if r.get("Result") in result_names]
    if not rows:
        raise ValueError("there are no metrics to export")
    return writes.write_csv(rows, path)


def export_result(scene, result: Result, folder: str | Path, fmt: str = "nifti") -> dict[str, Path]:
    """Write one result: segmentation (.seg.nrrd and label map), heatmap, pseudo-healthy, metrics CSV, and
    the uncertainty map where the run made one.

    fmt is the image format of the volumes and the label map, as the command line names it (FORMATS).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} ({' or '.join(FORMATS)})")
    suffix = FORMATS[fmt]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = _safe(result.name)
    written = {
        "segmentation": write_segmentation(result.segmentation, folder / f"{stem}_anomaly.seg.nrrd"),
        "labelmap": write_labelmap(result.segmentation, result.input, folder / f"{stem}_anomaly_label{suffix}"),
        "heatmap": write_volume(result.heatmap, folder / f"{stem}_heatmap{suffix}"),
        "pseudo_healthy": write_volume(result.pseudo_healthy, folder / f"{stem}_pseudo_healthy{suffix}"),
        "metrics": write_metrics_csv(scene, folder / f"{stem}_metrics.csv", [result.name]),
    }
    if result.uncertainty is not None:
        written["uncertainty"] = write_volume(result.uncertainty, folder / f"{stem}_uncertainty{suffix}")
    return written


def _safe(name: str) -> str:
    keep = [c if c.isalnum() or c in "-_." else "_" for c in name]
    return "".join(keep).strip("_") or "result"


# ----------------------------------------------------------------------------------------------
# DICOM SEG through Slicer's own DICOM export

DICOM_INSTANCE_UIDS = "DICOM.instanceUIDs"  # Slicer's DICOM volume plugin sets it on a volume it loads
DICOM_REFERENCED_UIDS = "DICOM.ReferencedInstanceUIDs"  # what the SEG exporter checks on the segmentation's item


def from_dicom_database(result: Result) -> bool:
    """The result's input was loaded from Slicer's DICOM database (its slices' instance UIDs are known)."""
    return bool(result.input is not None and result.input.GetAttribute(DICOM_INSTANCE_UIDS))


def prepare_dicom_seg(scene, result: Result) -> int:
    """Give the result's segmentation what Slicer's DICOM SEG exporter (DICOMSegmentationPlugin) reads, and
    return its subject-hierarchy item: the source series' instance UIDs on the item, the input as its
    reference volume, the segment's algorithm (AUTOMATIC, named by model and version) beside the segment's
    terminology codes. Refuses an input not from the DICOM database and an empty anomaly segment (the
    exporter writes no empty SEG)."""
    if not from_dicom_database(result):
        raise ValueError(f"{result.input.GetName() if result.input else 'the input'} was not loaded from Slicer's "
                         "DICOM database: a DICOM SEG must reference the series it segments.")
    segmentation = result.segmentation
    if not segment_array(segmentation, SEGMENT_ID, result.input).any():
        raise ValueError("the anomaly segment is empty at this threshold: there is nothing to write as DICOM SEG.")
    segment = segmentation.GetSegmentation().GetSegment(SEGMENT_ID)
    version = (result.metrics.get("model") or {}).get("version", "")
    segment.SetTag("DICOM.SegmentAlgorithmType", "AUTOMATIC")
    segment.SetTag("DICOM.SegmentAlgorithmName", " ".join(filter(None, ("NormativeAD", result.model_id, version))))
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(result.input)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    item = hierarchy.GetItemByDataNode(segmentation)
    hierarchy.SetItemAttribute(item, DICOM_REFERENCED_UIDS, result.input.GetAttribute(DICOM_INSTANCE_UIDS))
    return item


def export_dicom_seg(scene, result: Result, folder: str | Path) -> list[Path]:
    """The result's segmentation as DICOM SEG, written by Slicer's own exporter into folder (which also adds
    it to the DICOM database); returns the files written. Slicer's application only."""
    item = prepare_dicom_seg(scene, result)
    try:
        import DICOMSegmentationPlugin
    except ImportError:
        raise ValueError("DICOM SEG export needs Slicer's DICOM segmentation plugin: install the "
                         "QuantitativeReporting extension.") from None
    plugin = DICOMSegmentationPlugin.DICOMSegmentationPluginClass()
    exportables = plugin.examineForExport(item)
    if not exportables:
        raise ValueError(f"Slicer's DICOM export does not offer {result.segmentation.GetName()}: the slices of "
                         f"{result.input.GetName()} are no longer in the DICOM database.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    before = set(folder.iterdir())
    for exportable in exportables:
        exportable.directory = str(folder)
    error = plugin.export(exportables)
    if error:
        raise RuntimeError(f"DICOM SEG export failed: {error}")
    return sorted(set(folder.iterdir()) - before)


# ----------------------------------------------------------------------------------------------
# Scene -> files the command line reads


def write_run_inputs(folder: str | Path, input_node, mask_node=None, reference_node=None) -> dict[str, Path]:
    """Write the input (and optional brain mask / reference) for the command line; the scene is untouched.

    mask_node and reference_node may be label map volumes or segmentation nodes; segmentations are
    written as a label map on the input's grid (all segments merged to 1).
    """
    if min(input_node.GetSpacing()) <= 0:  # Slicer's writers would store it as 1 mm: the run would be wrong
        raise ValueError(f"{input_node.GetName()} has a voxel spacing of {tuple(input_node.GetSpacing())} mm; "
                         "spacing must be positive (set it in the Volumes module).")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"input": write_volume(input_node, folder / "input.nrrd")}
    for key, node in (("mask", mask_node), ("reference", reference_node)):
        if node is None:
            continue
        path = folder / f"{key}.nrrd"
        if node.IsA("vtkMRMLSegmentationNode"):
            holder = slicer.vtkMRMLLabelMapVolumeNode()
            holder.CopyOrientation(input_node)
            slicer.util.updateVolumeFromArray(holder, mask_array(node, input_node).astype(np.uint8))
            files[key] = write_volume(holder, path)
        else:
            files[key] = write_volume(node, path)
    return files


__all__ = ["export_dicom_seg", "export_result", "from_dicom_database", "prepare_dicom_seg", "write_labelmap", "write_metrics_csv", "write_run_inputs", "write_segmentation",
           "write_volume", "SEGMENT_ID", "volume_like"]
