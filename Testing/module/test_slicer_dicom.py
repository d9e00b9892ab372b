"""DICOM SEG and the Slicer module, in a real MRML scene (slicer-core).

- A DICOM SEG written by the library (`normativead restore --format dicom`): its frames, placed by the SEG's
  own geometry, become a label map that Slicer's segmentations logic imports onto the source series' grid,
  voxel for voxel, with the module's segment name, colour and terminology.
- Export through Slicer's own DICOM export: the result's segmentation gets what Slicer's SEG exporter
  (QuantitativeReporting's DICOMSegmentationPlugin) reads, and the panel offers it only for an input from
  the DICOM database. The exporter itself runs in Slicer only (DICOMLib, the DICOM database, dcmqi).
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pytest
import SimpleITK as sitk
import vtk
from slicer_testing import SAMPLE_FLAIR, SAMPLE_LESION, load_volume, require_slicer_core, tiny_run
from testsupport import write_dicom_series

require_slicer_core()

import slicer  # noqa: E402

from NormativeADLib.io import dicom  # noqa: E402
from NormativeADSlicerLib import export, nodes, scene as scene_logic  # noqa: E402

# Slicer's RAS against DICOM's LPS
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def seg_as_labelmap(mrml, path):
    """The SEG's first segment as a label map node on the SEG's own geometry (highdicom's volume, LPS)."""
    seg = hd.seg.segread(path)
    volume = seg.get_volume(segment_numbers=[1], combine_segments=True)
    array = np.asarray(volume.array, dtype=np.uint8)
    # updateVolumeFromArray takes (k, j, i) arrays: the volume's axes 0, 1, 2 are k, j, i
    ijk_to_ras = LPS_TO_RAS @ volume.affine[:, [2, 1, 0, 3]]
    node = mrml.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "seg frames")
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras))
    return seg.get_segment_description(1), node


def test_the_seg_loads_into_a_segmentation_node_on_the_source_grid(scene, tmp_path):
    series_folder = tmp_path / "series"
    write_dicom_series(sitk.ReadImage(str(SAMPLE_FLAIR)), series_folder)
    series = dicom.find_series(series_folder)
    scan = dicom.read_series(series)
    # the sample's reference lesions as the run's segmentation, on the series' grid (same anatomy, z reversed)
    lesion = sitk.Resample(sitk.ReadImage(str(SAMPLE_LESION)), scan, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                           sitk.sitkUInt8)
    expected = sitk.GetArrayFromImage(lesion)
    assert expected.sum() > 1000
    dicom.write_outputs({"segmentation": lesion}, series_folder, tmp_path,
                        dicom.Producer("intensity-flair", "1", "z2 = 2", 2.0))

    sitk.WriteImage(scan, str(tmp_path / "scan.nrrd"))  # the series as Slicer's volume node holds it
    source = load_volume(scene, tmp_path / "scan.nrrd", "series")
    described, labelmap = seg_as_labelmap(scene, tmp_path / "segmentation.dcm")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "NormativeAD DICOM SEG")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(source)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation)
    scene.RemoveNode(labelmap)

    segments = segmentation.GetSegmentation()
    assert segments.GetNumberOfSegments() == 1
    segment_id = segments.GetNthSegmentID(0)
    np.testing.assert_array_equal(nodes.segment_array(segmentation, segment_id, source), expected)

    # what the SEG says of its segment is what the module gives its own anomaly segment
    segment = segments.GetSegment(segment_id)
    segment.SetName(described.segment_label)
    rgb = hd.color.CIELabColor.from_dicom_value(described.RecommendedDisplayCIELabValue).to_rgb()
    segment.SetColor(*(c / 255 for c in rgb))
    assert segment.GetName() == scene_logic.SEGMENT_ID
    assert segment.GetColor() == pytest.approx(scene_logic.SEGMENT_COLOR, abs=2 / 255)
    codes = [described.segmented_property_category, described.segmented_property_type,
             *described.anatomic_regions]
    for code in codes:
        assert f"{code.scheme_designator}^{code.value}^" in scene_logic.SEGMENT_TERMINOLOGY


def test_a_result_from_the_dicom_database_gets_what_slicers_seg_exporter_reads(scene, tmp_path):
    """The exporter's checks, on the result's segmentation: the subject-hierarchy item lists the source
    series' instance UIDs (DICOM.ReferencedInstanceUIDs, which examineForExport looks up in the database),
    the reference volume is the input (its DICOM.instanceUIDs give the source files), the segment is
    AUTOMATIC with an algorithm name (required for AUTOMATIC) and carries its terminology codes."""
    volume = tiny_run(scene, tmp_path / "run")
    result = scene_logic.load_result(scene, volume, tmp_path / "run", "tiny")
    with pytest.raises(ValueError, match="not loaded from Slicer's DICOM database"):
        export.prepare_dicom_seg(scene, result)
    assert not export.from_dicom_database(result)

    uids = "1.2.826.0.1.3680043.8.498.1 1.2.826.0.1.3680043.8.498.2"
    volume.SetAttribute("DICOM.instanceUIDs", uids)  # as Slicer's DICOM volume plugin leaves it
    assert export.from_dicom_database(result)
    item = export.prepare_dicom_seg(scene, result)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    segmentation = result.segmentation
    assert hierarchy.GetItemDataNode(item) is segmentation
    assert hierarchy.GetItemAttribute(item, "DICOM.ReferencedInstanceUIDs") == uids
    assert segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole()) is volume
    segment = segmentation.GetSegmentation().GetSegment(scene_logic.SEGMENT_ID)
    tags = {}
    for name in ("DICOM.SegmentAlgorithmType", "DICOM.SegmentAlgorithmName", slicer.vtkSegment.GetTerminologyEntryTagName()):
        value = vtk.reference("")
        assert segment.GetTag(name, value), name
        tags[name] = str(value)
    assert tags["DICOM.SegmentAlgorithmType"] == "AUTOMATIC"
    assert tags["DICOM.SegmentAlgorithmName"] == "NormativeAD tiny"
    assert tags[slicer.vtkSegment.GetTerminologyEntryTagName()] == scene_logic.SEGMENT_TERMINOLOGY
    assert not nodes.was_edited(segmentation, volume)  # tags only: the threshold still re-segments in place

    # no exporter outside Slicer: a reason naming what to install, nothing written
    with pytest.raises(ValueError, match="QuantitativeReporting"):
        export.export_dicom_seg(scene, result, tmp_path / "dicom")
    assert not (tmp_path / "dicom").exists()

    # an empty segment is refused before Slicer's exporter would refuse it
    scene_logic.set_threshold(scene, result, 1e9)
    with pytest.raises(ValueError, match="empty at this threshold"):
        export.prepare_dicom_seg(scene, result)
