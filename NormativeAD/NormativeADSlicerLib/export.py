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


__all__ = ["export_result", "write_labelmap", "write_metrics_csv", "write_run_inputs", "write_segmentation",
           "write_volume", "SEGMENT_ID", "volume_like"]
