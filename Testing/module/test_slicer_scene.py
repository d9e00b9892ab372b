"""The module's scene logic on a real MRML scene (slicer-core), with a real run of the command line.

Tests that need a model run share one CLI run on the shipped sample case (conftest.cli_run);
the others need slicer-core only.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from slicer_testing import SAMPLE_LESION, SAMPLE_T1, TEST_HOME, file_array, load_volume, require_slicer_core

require_slicer_core()

import slicer  # noqa: E402
import vtk  # noqa: E402

from NormativeADSlicerLib import comparison, export, nodes, scene as scene_logic  # noqa: E402
from NormativeADSlicerLib.logic import Job, RunSettings  # noqa: E402


def node_ids(mrml) -> list[str]:
    return [mrml.GetNthNode(i).GetID() for i in range(mrml.GetNumberOfNodes())]


def spacing(node):
    return tuple(float(s) for s in node.GetSpacing())


# ----------------------------------------------------------------------------------------------
# Without a model


def test_colour_table_is_shipped_and_continuous(scene):
    node = scene_logic.heatmap_color_node(scene)
    assert node.GetName() == "NormativeADHeat"
    assert node.GetNumberOfColors() == 256
    low, high = [0.0] * 4, [0.0] * 4
    node.GetColor(0, low)
    node.GetColor(255, high)
    assert low[2] == pytest.approx(1.0) and low[0] == 0.0  # cold end blue
    assert high[0] == pytest.approx(1.0) and high[2] == 0.0  # hot end red
    assert scene_logic.heatmap_color_node(scene) is node  # read once per scene


def test_run_inputs_keep_the_input_grid_and_leave_the_scene_alone(scene, sample_volume, tmp_path):
    lesion = load_volume(scene, SAMPLE_LESION, "lesion")
    before = node_ids(scene)
    files = export.write_run_inputs(tmp_path, sample_volume, reference_node=lesion)
    assert node_ids(scene) == before
    assert sample_volume.GetStorageNode() is None or sample_volume.GetStorageNode().GetFileName() != str(files["input"])
    array, matrix = file_array(files["input"])
    original, original_matrix = file_array(SAMPLE_T1)
    np.testing.assert_array_equal(array, original)
    np.testing.assert_allclose(matrix, original_matrix, atol=1e-6)
    np.testing.assert_allclose(matrix, nodes.ijk_to_ras(sample_volume), atol=1e-6)
    reference, _ = file_array(files["reference"])
    np.testing.assert_array_equal(reference, file_array(SAMPLE_LESION)[0])


def test_layout_description_lists_one_linked_view_per_model():
    xml = comparison.layout_xml(["model-a", "model-b", "model-c"])
    root = ET.fromstring(xml)
    views = root.findall(".//view[@class='vtkMRMLSliceNode']")
    assert [v.get("singletontag") for v in views] == [comparison.view_tag(i) for i in range(3)]
    groups = {v.find("property[@name='viewgroup']").text for v in views}
    assert groups == {str(comparison.VIEW_GROUP)}
    assert [v.find("property[@name='viewlabel']").text for v in views] == ["model-a", "model-b", "model-c"]
    assert len(root.findall(".//view[@class='vtkMRMLTableViewNode']")) == 1


def test_failed_run_reports_the_reason_and_leaves_the_scene_unchanged(scene, sample_volume, tmp_path, monkeypatch):
    monkeypatch.setenv("NORMATIVEAD_HOME", str(tmp_path / "home"))
    before = node_ids(scene)
    job = Job(scene, sample_volume, RunSettings(models=["no-such-model"], device="cpu"))
    state = job.start().wait(timeout=300)
    assert state.status == "failed"
    assert "no-such-model" in state.message
    assert node_ids(scene) == before
    assert not job.work_dir.exists()


# ----------------------------------------------------------------------------------------------
# With one real run of the shipped model on the sample case


def test_cli_streamed_progress(cli_run):
    _, _, events = cli_run
    progress = [e for e in events if e["event"] == "progress"]
    assert progress, "no progress events were streamed"
    fractions = [e["fraction"] for e in progress]
    assert fractions == sorted(fractions) and 0.0 <= fractions[0] and fractions[-1] <= 1.0
    # the run ends for the module at "done", when the outputs are in place (the figures come after it)
    assert [e["event"] for e in events if e["event"] != "progress"] == ["done"]


def test_result_nodes_have_the_input_geometry(scene, sample_volume, loaded, cli_run):
    out_dir, _, _ = cli_run
    _, file_matrix = file_array(SAMPLE_T1)
    for node in (loaded.pseudo_healthy, loaded.heatmap, loaded.brain_mask):
        assert node.GetImageData().GetDimensions() == sample_volume.GetImageData().GetDimensions()
        np.testing.assert_allclose(nodes.ijk_to_ras(node), file_matrix, atol=1e-6)
    heatmap_file, heatmap_matrix = file_array(out_dir / "heatmap.nrrd")
    np.testing.assert_allclose(heatmap_matrix, file_matrix, atol=1e-4)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(loaded.heatmap), heatmap_file.astype(np.float32))
    pseudo_file, _ = file_array(out_dir / "pseudo_healthy.nrrd")
    np.testing.assert_allclose(slicer.util.arrayFromVolume(loaded.pseudo_healthy), pseudo_file, rtol=1e-6)
    assert loaded.input is sample_volume


def test_heatmap_display_settings(scene, sample_volume, cli_run):
    out_dir, metrics, _ = cli_run
    red = slicer.vtkMRMLSliceCompositeNode()  # a slice view that exists before the run, as in Slicer
    red.SetLayoutName("Red")
    red.SetSingletonTag("Red")
    scene.AddNode(red)
    result = scene_logic.load_result(scene, sample_volume, out_dir, metrics["model"]["id"], opacity=0.4)
    display = result.heatmap.GetDisplayNode()
    assert display.GetColorNode().GetName() == "NormativeADHeat"
    assert not display.GetAutoWindowLevel()
    low, high = scene_logic.heatmap_window(result)
    assert display.GetWindowLevelMin() == pytest.approx(low, rel=1e-5)
    assert display.GetWindowLevelMax() == pytest.approx(high, rel=1e-5)
    assert display.GetApplyThreshold()
    assert display.GetLowerThreshold() == pytest.approx(scene_logic.DISPLAY_FLOOR * result.threshold, rel=1e-5)
    assert 0 < low < result.threshold < high
    assert red.GetBackgroundVolumeID() == sample_volume.GetID()
    assert red.GetForegroundVolumeID() == result.heatmap.GetID()
    assert red.GetForegroundOpacity() == pytest.approx(0.4)
    scene_logic.set_opacity(scene, 0.8)
    assert red.GetForegroundOpacity() == pytest.approx(0.8)


def test_segmentation_equals_the_library_mask(loaded, cli_run, sample_volume):
    from NormativeADLib.measures.anomaly import segment

    out_dir, metrics, _ = cli_run
    voxels = nodes.segment_array(loaded.segmentation, scene_logic.SEGMENT_ID, sample_volume)
    written, _ = file_array(out_dir / "segmentation.nrrd")
    np.testing.assert_array_equal(voxels, (written > 0).astype(np.uint8))
    heatmap = slicer.util.arrayFromVolume(loaded.heatmap)
    library = segment(heatmap, metrics["threshold"]["value"], spacing(sample_volume), metrics["min_component_ml"])
    np.testing.assert_array_equal(voxels, library.astype(np.uint8))


def test_threshold_moves_without_rerunning(scene, loaded, cli_run, sample_volume):
    from NormativeADLib.measures.anomaly import segment

    _, metrics, _ = cli_run
    before = node_ids(scene)
    heatmap = slicer.util.arrayFromVolume(loaded.heatmap)
    for choice in ("fpr1", "fpr10", metrics["threshold"]["value"] * 0.8):
        mask = scene_logic.set_threshold(scene, loaded, choice)
        value = metrics["thresholds"][choice] if isinstance(choice, str) else choice
        expected = segment(heatmap, value, spacing(sample_volume), metrics["min_component_ml"])
        np.testing.assert_array_equal(mask, expected)
        np.testing.assert_array_equal(
            nodes.segment_array(loaded.segmentation, scene_logic.SEGMENT_ID, sample_volume), expected)
        assert loaded.threshold == pytest.approx(value)
        row = scene_logic.table_as_rows(scene_logic.table_node(scene))[0]
        voxel_ml = float(np.prod(spacing(sample_volume))) / 1000.0
        assert float(row["Anomaly volume (mL)"]) == pytest.approx(expected.sum() * voxel_ml, rel=1e-3)
        assert float(row["Threshold"]) == pytest.approx(value, rel=1e-3)
    assert node_ids(scene) == before  # re-thresholding adds no node


def test_the_table_scores_every_threshold_against_the_reference(scene, sample_volume, cli_run):
    """Dice, detection rate and false components follow the threshold (they vanished before); the
    run's own row equals the command line's figures."""
    from NormativeADLib.measures.metrics import segmentation_against_reference

    out_dir, metrics, _ = cli_run
    lesion = load_volume(scene, SAMPLE_LESION, "lesion")
    result = scene_logic.load_result(scene, sample_volume, out_dir, metrics["model"]["id"], reference=lesion)
    brain = slicer.util.arrayFromVolume(result.brain_mask) > 0
    reference = file_array(SAMPLE_LESION)[0] > 0
    for choice in ("fpr10", metrics["threshold"]["value"] * 0.7):
        mask = scene_logic.set_threshold(scene, result, choice)
        expected = segmentation_against_reference(mask, reference, brain)
        row = scene_logic.table_as_rows(scene_logic.table_node(scene))[0]
        assert float(row["Dice"]) == pytest.approx(expected["dice"], rel=1e-3, abs=1e-6)
        assert float(row["Lesion detection rate"]) == pytest.approx(expected["lesion_detection_rate"], rel=1e-3)
        assert int(row["False positive components"]) == expected["false_positive_components"]
        assert row["AUPRC"] != ""  # no threshold in it: the run's figure stays
    scene_logic.set_threshold(scene, result, metrics["threshold"]["value"])
    row = scene_logic.table_as_rows(scene_logic.table_node(scene))[0]
    assert float(row["Dice"]) == pytest.approx(metrics["reference"]["dice"], rel=1e-3, abs=1e-6)
    per_case = metrics["per_case"]  # back at the run's threshold, the recomputed figures are the run's
    assert int(row["Components"]) == per_case["n_components"]
    for header, key in (("Anomaly volume (mL)", "anomaly_volume_ml"), ("Largest component (mL)", "largest_component_ml")):
        assert float(row[header]) == pytest.approx(per_case[key], rel=1e-3), header
    scene.RemoveNode(lesion)  # the user removed the reference: nothing to score against
    scene_logic.set_threshold(scene, result, "fpr10")
    assert scene_logic.table_as_rows(scene_logic.table_node(scene))[0]["Dice"] == ""


RESTORATION_COLUMNS = {"SSIM outside anomaly": "ssim_outside_anomaly", "MAE outside anomaly": "mae_outside_anomaly",
                       "SSIM inside anomaly": "ssim_inside_anomaly", "CACI (segmentation)": "caci"}


def restoration_row(mrml, result, choice) -> dict[str, float]:
    scene_logic.set_threshold(mrml, result, choice)
    row = next(r for r in scene_logic.table_as_rows(scene_logic.table_node(mrml)) if r["Result"] == result.name)
    assert row["LPIPS outside anomaly"] == ""  # its network is not loaded into the scene's process
    return {key: float(row[header]) for header, key in RESTORATION_COLUMNS.items()}


def test_the_restoration_figures_follow_the_threshold(scene, loaded, cli_run):
    """SSIM and MAE outside the anomaly, SSIM inside it and CACI are measured again at a moved threshold, in
    model space on the run's scaled intensities (rebuilt from the scene's scan and pseudo-healthy volume):
    at the run's own threshold they are the run's figures, at another they move."""
    from NormativeADLib.pipeline.rethreshold import AGREEMENT

    _, metrics, _ = cli_run
    per_case = metrics["per_case"]
    moved = restoration_row(scene, loaded, "fpr1")
    own = restoration_row(scene, loaded, metrics["threshold"]["value"])
    for key, value in own.items():
        assert value == pytest.approx(per_case[key], abs=AGREEMENT), key
        assert abs(moved[key] - value) > AGREEMENT, key  # fpr1 flags a fraction of fpr5's voxels


def test_a_model_without_restorer_keeps_the_figures_its_run_writes(scene, sample_volume, cli_run, tmp_path):
    """A model without a restorer (a segmenter on the scan alone) writes the scan as its pseudo-healthy
    image: SSIM 1, MAE 0, SSIM inside 1 and CACI 0 at its threshold (metrics.restoration_fidelity of a
    volume against itself), and at every other."""
    from NormativeADLib.measures.metrics import hmean

    out_dir, metrics, _ = cli_run
    copy = Path(shutil.copytree(out_dir, tmp_path / "segmenter"))
    nodes.write_volume(sample_volume, copy / "pseudo_healthy.nrrd")
    unchanged = {"ssim_outside_anomaly": 1.0, "mae_outside_anomaly": 0.0, "ssim_inside_anomaly": 1.0,
                 "caci": hmean(1.0, 0.0)}
    metrics = {**metrics, "per_case": {**metrics["per_case"], **unchanged}}
    (copy / "metrics.json").write_text(json.dumps(metrics))
    result = scene_logic.load_result(scene, sample_volume, copy, metrics["model"]["id"])
    for choice in ("fpr1", "fpr10", metrics["threshold"]["value"]):
        assert restoration_row(scene, result, choice) == pytest.approx(unchanged, abs=1e-6), choice


def test_the_restoration_figures_stay_blank_where_the_rebuild_is_not_the_run(scene, sample_volume, cli_run, tmp_path):
    """Where the figures rebuilt at the run's own threshold are not its metrics.json's (here: the run's figures
    changed on disk; in use: a scan edited since, a model updated, a scan grid coarser than the model's), the
    columns are blank at a moved threshold rather than figures of something else."""
    out_dir, metrics, _ = cli_run
    copy = Path(shutil.copytree(out_dir, tmp_path / "changed"))
    per_case = {**metrics["per_case"], "caci": metrics["per_case"]["caci"] + 0.05}
    (copy / "metrics.json").write_text(json.dumps({**metrics, "per_case": per_case}))
    result = scene_logic.load_result(scene, sample_volume, copy, metrics["model"]["id"])
    scene_logic.set_threshold(scene, result, "fpr1")
    row = scene_logic.table_as_rows(scene_logic.table_node(scene))[0]
    assert all(row[header] == "" for header in RESTORATION_COLUMNS)
    assert row["Anomaly volume (mL)"] != ""  # the figures that need no rebuild still follow


def test_metrics_table_contents(scene, loaded, cli_run):
    _, metrics, _ = cli_run
    rows = scene_logic.table_as_rows(scene_logic.table_node(scene))
    assert len(rows) == 1
    row = rows[0]
    assert row["Model"] == metrics["model"]["id"]
    assert row["Threshold source"] == metrics["threshold"]["source"]
    assert float(row["Threshold"]) == pytest.approx(metrics["threshold"]["value"], rel=1e-3)
    per_case = metrics["per_case"]
    for header, key, _ in scene_logic.TABLE_COLUMNS:
        value = per_case.get(key, (metrics.get("reference") or {}).get(key))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert float(row[header]) == pytest.approx(value, rel=1e-3, abs=1e-9), header
    assert row["Dice"] != ""  # the run had the reference lesion mask


def test_rerun_replaces_unedited_outputs_and_versions_edited_ones(scene, sample_volume, loaded, cli_run):
    out_dir, metrics, _ = cli_run
    model = metrics["model"]["id"]
    count = scene.GetNumberOfNodes()
    again = scene_logic.load_result(scene, sample_volume, out_dir, model)
    assert scene.GetNumberOfNodes() == count  # replaced, not duplicated
    assert again.name == loaded.name == f"{sample_volume.GetName()} [{model}]"

    edited = nodes.segment_array(again.segmentation, scene_logic.SEGMENT_ID, sample_volume)
    edited[tuple(s // 2 for s in edited.shape)] = 1 - edited[tuple(s // 2 for s in edited.shape)]
    nodes.set_segment_array(again.segmentation, scene_logic.SEGMENT_ID, edited, sample_volume)
    third = scene_logic.load_result(scene, sample_volume, out_dir, model)
    assert third.name == f"{again.name} v2"
    assert again.segmentation.GetScene() is scene  # the user's edit is kept
    np.testing.assert_array_equal(
        nodes.segment_array(again.segmentation, scene_logic.SEGMENT_ID, sample_volume), edited)
    assert len(scene_logic.results_in_scene(scene, sample_volume, model)) == 2
    assert len(scene_logic.table_as_rows(scene_logic.table_node(scene))) == 2


def test_a_threshold_beside_an_edit_draws_its_segmentation_as_the_run_does(scene, sample_volume, loaded):
    """Re-thresholding keeps the user's edited segmentation and makes a new one, drawn as the run's: an
    outline two pixels wide, under the input's transform (scene.outlined_segmentation makes every one)."""
    edited = nodes.segment_array(loaded.segmentation, scene_logic.SEGMENT_ID, sample_volume)
    edited[tuple(s // 2 for s in edited.shape)] ^= 1
    nodes.set_segment_array(loaded.segmentation, scene_logic.SEGMENT_ID, edited, sample_volume)
    moved = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    sample_volume.SetAndObserveTransformNodeID(moved.GetID())
    kept = loaded.segmentation
    scene_logic.set_threshold(scene, loaded, "fpr10")
    assert loaded.segmentation is not kept and kept.GetScene() is scene
    for node in (kept, loaded.segmentation):
        display = node.GetDisplayNode()
        assert (display.GetVisibility2DFill(), display.GetSliceIntersectionThickness()) == (0, 2), node.GetName()
    assert loaded.segmentation.GetTransformNodeID() == moved.GetID()


def test_comparison_layout_and_views(scene, sample_volume, cli_run):
    # One real run shown under two model labels: the layout mechanics do not depend on the weights.
    out_dir, _, _ = cli_run
    results = [scene_logic.load_result(scene, sample_volume, out_dir, label, show=False)
               for label in ("model-a", "model-b")]
    xml = comparison.show_comparison(scene, results, opacity=0.6)
    layout = comparison.layout_node(scene)
    assert layout.GetViewArrangement() == comparison.LAYOUT_ID
    assert layout.GetLayoutDescription(comparison.LAYOUT_ID) == xml
    views = comparison.compared_views(scene, 2)
    for (slice_node, composite), result in zip(views, results):
        assert slice_node.GetViewGroup() == comparison.VIEW_GROUP
        assert composite.GetBackgroundVolumeID() == sample_volume.GetID()
        assert composite.GetForegroundVolumeID() == result.heatmap.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.6)
        assert composite.GetLinkedControl() and composite.GetHotLinkedControl()
        display = result.segmentation.GetDisplayNode()
        assert display.GetNumberOfViewNodeIDs() == 1 and display.GetNthViewNodeID(0) == slice_node.GetID()
        assert display.IsDisplayableInView(slice_node.GetID())
    other = views[1][0].GetID()
    assert not results[0].segmentation.GetDisplayNode().IsDisplayableInView(other)
    rows = scene_logic.table_as_rows(scene_logic.table_node(scene))
    assert [r["Model"] for r in rows] == ["model-a", "model-b"]
    table_view = scene.GetSingletonNode(comparison.TABLE_VIEW_TAG, "vtkMRMLTableViewNode")
    assert table_view.GetTableNodeID() == scene_logic.table_node(scene).GetID()


@pytest.mark.parametrize("fmt", ["nifti", "nrrd"])
def test_export_round_trip(scene, sample_volume, loaded, tmp_path, fmt):
    scene_logic.set_threshold(scene, loaded, "fpr10")  # export what is in the scene, not the run's files
    written = export.export_result(scene, loaded, tmp_path, fmt)
    assert {p.parent for p in written.values()} == {tmp_path}
    voxels = nodes.segment_array(loaded.segmentation, scene_logic.SEGMENT_ID, sample_volume)
    input_matrix = nodes.ijk_to_ras(sample_volume)

    reread = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(reread)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(written["segmentation"]))
    assert storage.ReadData(reread)
    np.testing.assert_array_equal(nodes.segment_array(reread, scene_logic.SEGMENT_ID, sample_volume), voxels)
    header = written["segmentation"].read_bytes()[:4000].split(b"\n\n")[0].decode(errors="replace")
    assert "sizes: " + " ".join(str(d) for d in sample_volume.GetImageData().GetDimensions()) in header

    for key, node in (("heatmap", loaded.heatmap), ("pseudo_healthy", loaded.pseudo_healthy)):
        array, matrix = file_array(written[key])
        np.testing.assert_allclose(matrix, input_matrix, atol=1e-4)
        np.testing.assert_allclose(array, slicer.util.arrayFromVolume(node), rtol=1e-6)
    labels, matrix = file_array(written["labelmap"])
    np.testing.assert_allclose(matrix, input_matrix, atol=1e-4)
    np.testing.assert_array_equal(labels, voxels)

    with written["metrics"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [r for r in scene_logic.table_as_rows(scene_logic.table_node(scene)) if r["Result"] == loaded.name]


def test_cancel_leaves_the_scene_unchanged(scene, sample_volume, cli_run, tmp_path, monkeypatch):
    _, metrics, _ = cli_run
    monkeypatch.setenv("NORMATIVEAD_HOME", TEST_HOME or str(tmp_path / "home"))
    before = node_ids(scene)
    events = []
    job = Job(scene, sample_volume, RunSettings(models=[metrics["model"]["id"]], device="cpu"),
              on_progress=lambda state: events.append(state.fraction)).start()
    deadline = time.monotonic() + 120
    while not events and job.poll() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert events, "the run streamed no progress before the deadline"
    process = job._runner._process
    job.cancel()
    assert job.state.status == "cancelled"
    assert process.poll() is not None  # the process is gone
    assert node_ids(scene) == before
    assert not job.work_dir.exists()


def test_compared_models_share_one_registration(scene, sample_volume, cli_run, tmp_path, monkeypatch):
    """Two models in one comparison job: the second run reuses the first run's transform.tfm."""
    from NormativeADLib.core import catalogue

    monkeypatch.setenv("NORMATIVEAD_HOME", TEST_HOME or str(tmp_path / "home"))
    models = [card.id for card in catalogue.list_models()][:2]
    if len(models) < 2:
        pytest.skip("a comparison needs two installed models")
    with pytest.raises(ValueError, match="each model once"):
        Job(scene, sample_volume, RunSettings(models=[models[0], models[0]]))
    job = Job(scene, sample_volume, RunSettings(models=models, device="cpu")).start()
    arguments = [job._runner.request.arguments()]
    deadline = time.monotonic() + 600
    while job.poll() and time.monotonic() < deadline:
        if job._runner.request.arguments() not in arguments:
            arguments.append(job._runner.request.arguments())
        time.sleep(0.1)
    assert job.state.status == "done", job.state.message
    assert "--transform" not in arguments[0] and "--transform" in arguments[1]
    assert [r.metrics["model"]["id"] for r in job.state.results] == models
    assert [r.metrics["mask_source"] for r in job.state.results] == ["skull-stripped foreground"] * 2


def test_each_run_is_a_subject_hierarchy_folder_with_its_parameters(scene, sample_volume, cli_run):
    out_dir, metrics, _ = cli_run
    result = scene_logic.load_result(scene, sample_volume, out_dir, metrics["model"]["id"])
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    folder = scene_logic.run_folder(scene, result)
    assert folder and hierarchy.GetItemName(folder) == result.name
    children = {hierarchy.GetItemDataNode(hierarchy.GetItemByPositionUnderParent(folder, i)).GetID()
                for i in range(hierarchy.GetNumberOfItemChildren(folder))}
    assert children == {n.GetID() for n in result.nodes()}  # pseudo-healthy, heatmap, segmentation, brain mask
    attribute = lambda name: hierarchy.GetItemAttribute(folder, "NormativeAD." + name)  # noqa: E731
    assert attribute("Model") == metrics["model"]["id"] and attribute("Seed") == str(metrics["seed"])
    assert attribute("ThresholdSource") == metrics["threshold"]["source"]
    scene_logic.set_threshold(scene, result, "fpr10")
    assert attribute("ThresholdSource") == "fpr10" and float(attribute("Threshold")) == pytest.approx(result.threshold)
    scene_logic.remove_result(scene, result)
    items = vtk.vtkIdList()  # every item left (asking a removed item its name makes VTK print an error)
    hierarchy.GetItemChildren(hierarchy.GetSceneItemID(), items, True)
    assert folder not in [items.GetId(i) for i in range(items.GetNumberOfIds())], "the emptied folder stays behind"


# ----------------------------------------------------------------------------------------------
# Uncertainty and whole studies


def test_the_uncertainty_map_is_filed_with_its_result_and_can_take_the_heatmap_place(scene, loaded, cli_run):
    out_dir, metrics, _ = cli_run
    node = loaded.uncertainty
    assert node is not None and node.GetAttribute(scene_logic.ROLE) == "uncertainty"
    np.testing.assert_allclose(slicer.util.arrayFromVolume(node), file_array(next(out_dir.glob("uncertainty.*")))[0],
                               atol=1e-6)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == scene_logic.run_folder(scene, loaded)
    if not scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"):  # a slice view, as in Slicer
        red = slicer.vtkMRMLSliceCompositeNode()
        red.SetLayoutName("Red")
        red.SetSingletonTag("Red")
        scene.AddNode(red)
    scene_logic.show_layer(scene, loaded, "uncertainty", 0.6)
    composites = [scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
                  for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))]
    assert composites and all(c.GetForegroundVolumeID() == node.GetID() for c in composites)
    scene_logic.show_layer(scene, loaded, "heatmap", 0.6)
    assert all(c.GetForegroundVolumeID() == loaded.heatmap.GetID() for c in composites)
    row = scene_logic.table_as_rows(scene_logic.table_node(scene))[0]
    share = metrics["uncertainty"]["flagged_uncertain_share"]
    assert row["Flagged share uncertain"] == ("" if share is None else f"{share:.4g}")
    scene_logic.remove_result(scene, loaded)
    assert node.GetScene() is None  # removed with its result


def test_other_volumes_of_a_study_are_checked_before_anything_is_written(scene, sample_volume, tmp_path):
    from slicer_testing import SAMPLE_FLAIR

    flair = load_volume(scene, SAMPLE_FLAIR, "MSLUB26 FLAIR")
    unnamed = load_volume(scene, SAMPLE_FLAIR, "scan 3")
    before = node_ids(scene)
    with pytest.raises(ValueError, match="reads one volume"):
        Job(scene, sample_volume, RunSettings(models=["sadm-dae"], device="cpu"), other_nodes=[flair])
    with pytest.raises(ValueError, match="rename 'scan 3'"):
        Job(scene, sample_volume, RunSettings(models=["sadm-dae"], device="cpu"), other_nodes=[unnamed])
    assert node_ids(scene)[:len(before)] == before


def test_a_study_run_files_its_other_volumes_with_the_result(scene, sample_volume, monkeypatch):
    from NormativeADLib.core import catalogue
    from NormativeADLib.core.options import STUDY_FAMILY
    from slicer_testing import SAMPLE_FLAIR

    study = [c.id for c in catalogue.list_models() if c.family == STUDY_FAMILY]
    if not study:
        pytest.skip("no study model installed")
    flair = load_volume(scene, SAMPLE_FLAIR, "MSLUB26 FLAIR")
    job = Job(scene, sample_volume, RunSettings(models=study[:1], device="cpu"), other_nodes=[flair, None])
    state = job.start().wait(timeout=900)
    assert state.status == "done", state.message
    [result] = state.results
    names = sorted(n.GetName() for n in result.study_volumes)
    assert names == sorted(f"{result.name} FLAIR {kind}" for kind in ("registered", "pseudo-healthy"))
    folder = scene_logic.run_folder(scene, result)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    assert all(hierarchy.GetItemParent(hierarchy.GetItemByDataNode(n)) == folder for n in result.study_volumes)
    registered = next(n for n in result.study_volumes if n.GetName().endswith("registered"))
    assert slicer.util.arrayFromVolume(registered).shape == slicer.util.arrayFromVolume(sample_volume).shape
    row = scene_logic.table_as_rows(scene_logic.table_node(scene))[0]
    assert row["Contrasts"] == "T1+FLAIR"
