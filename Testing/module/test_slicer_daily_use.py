"""The module in daily use, on Slicer 5.12's own Python (slicer_harness.py).

- The module's own self-test in a stock Slicer: the analysis packages (torch, nibabel, monai...) are
  absent there, both for the module's check and for the run's child process. The self-test must skip,
  saying what is missing and how to install it, by both of Slicer's ways to run it: "Reload and Test"
  (runTest() directly) and ctest py_NormativeAD (each test_ method through unittest).
- The build-time test NormativeAD/Testing/Python/NormativeADModuleTest.py, on the checkout's layout.
- Compare, then a single-model Apply: the new heatmap is in the views the layout shows. The harness's
  layout manager follows the layout node with Slicer's own vtkMRMLLayoutLogic: the views shown are the
  view nodes mapped in the layout.

Runs are replayed from one real run of the fast rule model on a 2 mm copy of the sample case (as in
test_slicer_failures.py), so Compare and Apply take seconds.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import unittest
from pathlib import Path

import pytest

from slicer_harness import Harness, slicer_python_reason
from slicer_testing import load_volume

REPO = Path(__file__).resolve().parents[2]
SAMPLE_T1 = REPO / "Resources" / "SampleData" / "mslub_patient26_t1.nii.gz"
MODULE_FILE = REPO / "NormativeAD" / "NormativeAD.py"
MODULE_TEST = REPO / "NormativeAD" / "Testing" / "Python" / "NormativeADModuleTest.py"
FAST_MODEL = "intensity-t1"
OTHER_MODEL = "ae-ixi-t1"
TIMEOUT_S = 300
# Distributions (and their import names) that no Slicer ships: what a stock Slicer lacks for a run.
ABSENT = ("torch", "monai", "nibabel", "safetensors", "nilearn", "einops")
BLOCKER = textwrap.dedent(f"""\
    # sitecustomize for the run's child process: imports of these packages fail, as in a stock Slicer
    import sys

    class _Absent:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {ABSENT!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, _Absent())
    """)
SAMPLE_TRANSFORM = textwrap.dedent("""\
    #Insight Transform File V1.0
    #Transform 0
    Transform: AffineTransform_double_3_3
    Parameters: 0.80055466 0.00180131 -0.02153159 -0.00435644 0.84522217 -0.01742420 0.01891923 0.00036575 0.69173237 -0.59039769 -2.05869022 -0.46984817
    FixedParameters: 0 21.345462760531795 10.599507162544468
    """)


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    reason = slicer_python_reason()
    if reason:
        pytest.skip(reason)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NORMATIVEAD_HOME", str(tmp_path_factory.mktemp("normativead-home")))
        patch.setenv("OMP_NUM_THREADS", "2")
        with Harness() as h:
            yield h


@pytest.fixture
def h(harness):
    harness.reset()
    harness.new_scene()
    yield harness
    harness.check()


def open_panel(h):
    h.load_module(MODULE_FILE)
    import NormativeAD

    widget = NormativeAD.NormativeADWidget(h.module_panel())
    widget.setup()
    h.enter(widget)
    return widget


# -- the self-test in a stock Slicer


@pytest.fixture
def stock_slicer(monkeypatch, tmp_path):
    """The analysis packages absent: for the module's check (package metadata) and for the run's
    child process (its imports fail, through a sitecustomize on its PYTHONPATH)."""
    real = importlib.metadata.version

    def version(name):
        if name.lower() in ABSENT:
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    folder = tmp_path / "stock-site"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(BLOCKER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))
    child = subprocess.run([sys.executable, "-c", "import nibabel"], capture_output=True, text=True, timeout=60)
    assert child.returncode != 0 and "No module named 'nibabel'" in child.stderr, "the stock Slicer is not simulated"


def test_self_test_skips_in_a_stock_slicer_and_says_how_to_install(h, stock_slicer, caplog):
    import slicer

    h.load_module(MODULE_FILE)
    import NormativeAD

    missing = NormativeAD.NormativeADLogic().missingDependencies()
    assert missing[0] == "torch" and any(m.startswith("nibabel") for m in missing), missing

    # "Reload and Test" and slicer.selfTests: the module's runTest() outside a unittest runner
    with caplog.at_level(logging.INFO):
        slicer.selfTests["NormativeAD"]()
    h.check()
    shown = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipped")]
    assert len(shown) == 1, [r.getMessage() for r in caplog.records]
    assert all(name in shown[0] for name in missing), shown[0]
    assert "Install Python packages" in shown[0] and "PyTorch extension" in shown[0], shown[0]

    # ctest py_NormativeAD: slicer.testing.runUnitTest(paths, "NormativeAD") runs
    # unittest.TestLoader().loadTestsFromName("NormativeAD") with a TextTestRunner
    suite = unittest.TestLoader().loadTestsFromName("NormativeAD")
    loaded = {test.id() for test in _tests(suite)}  # a suite lets go of its tests as they run
    assert {"NormativeAD.NormativeADTest.test_sample_data_checksums",
            "NormativeAD.NormativeADTest.test_run_and_threshold"} <= loaded, loaded
    result = unittest.TextTestRunner(stream=io.StringIO()).run(suite)
    assert not result.failures and not result.errors, result.failures + result.errors
    assert result.wasSuccessful()
    assert [test.id() for test, _ in result.skipped] == ["NormativeAD.NormativeADTest.test_run_and_threshold"]
    assert "nibabel" in result.skipped[0][1]


@pytest.mark.slow  # the module's own self-test analyses the whole sample case in a child process
def test_self_test_runs_the_default_model_with_the_packages_installed(h, caplog):
    """A Slicer with the packages installed: "Reload and Test" (runTest) runs the sample case through the
    T1 default, as Apply would, and thresholds its result: nothing skipped, nothing failed."""
    import slicer

    h.load_module(MODULE_FILE)
    import NormativeAD

    assert NormativeAD.NormativeADLogic().missingDependencies() == []
    with caplog.at_level(logging.INFO):
        slicer.selfTests["NormativeAD"]()
    h.check()
    shown = [r.getMessage() for r in caplog.records]
    assert not any(m.startswith("Skipped") for m in shown), shown
    assert shown.count("Test passed") == 1, shown
    from NormativeADLib.core import catalogue

    assert any(m.startswith(f"Running {catalogue.default_model('T1')} ") for m in shown), shown



def _tests(suite) -> list:
    return [t for item in suite for t in (_tests(item) if isinstance(item, unittest.TestSuite) else [item])]


def test_build_time_module_test_passes_on_the_checkout(h):
    """NormativeAD/Testing/Python's ctest script, run as ctest runs it, on the checkout's layout."""
    h.load_module(MODULE_FILE)
    spec = importlib.util.spec_from_file_location("NormativeADModuleTest", MODULE_TEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    suite = unittest.defaultTestLoader.loadTestsFromModule(module)
    result = unittest.TextTestRunner(stream=io.StringIO()).run(suite)
    assert result.testsRun >= 3 and result.wasSuccessful(), result.failures + result.errors


# -- Compare, then Apply


@pytest.fixture(scope="module")
def small_files(tmp_path_factory):
    """The sample case at 2 mm (NRRD, as the module writes its inputs) and its registration."""
    import SimpleITK as sitk

    folder = tmp_path_factory.mktemp("small")
    scan = sitk.ReadImage(str(SAMPLE_T1))
    size = [int(round(n * s / 2.0)) for n, s in zip(scan.GetSize(), scan.GetSpacing())]
    small = sitk.Resample(scan, size, sitk.Transform(), sitk.sitkLinear, scan.GetOrigin(), [2.0] * 3,
                          scan.GetDirection(), 0.0, sitk.sitkFloat32)
    sitk.WriteImage(small, str(folder / "small.nrrd"), useCompression=True)
    (folder / "sample.tfm").write_text(SAMPLE_TRANSFORM)
    return folder / "small.nrrd", folder / "sample.tfm"


@pytest.fixture(scope="module")
def fast_output(small_files, tmp_path_factory):
    """One real run of the fast model on the 2 mm scan (the module's NRRD output), replayed below."""
    from NormativeADLib.core.options import RestoreOptions
    from NormativeADSlicerLib.process import ProcessRunner

    scan, transform = small_files
    base = tmp_path_factory.mktemp("fast")
    request = RestoreOptions(input_path=scan, out_dir=base / "out", model=FAST_MODEL, device="cpu",
                             transform_path=transform, format="nrrd")
    runner = ProcessRunner(request, env={"NORMATIVEAD_HOME": str(base / "home"), "OMP_NUM_THREADS": "2"})
    runner.start()
    outcome = runner.wait(timeout=TIMEOUT_S)
    assert outcome.ok, outcome.message + "\n" + "\n".join(outcome.log[-20:])
    return outcome.out_dir


class ReplayRunner:
    """A finished run: copies a real run's outputs to the requested folder and reports done."""

    def __init__(self, request, on_event, source: Path):
        self.request, self.on_event, self.source = request, on_event, source
        self.outcome = None

    def start(self):
        shutil.copytree(self.source, self.request.out_dir)

    def poll(self):
        from NormativeADSlicerLib.process import RunOutcome

        if self.outcome is None:
            self.outcome = RunOutcome("done", Path(self.request.out_dir), exit_code=0)
        return False

    def cancel(self):
        pass


def run_to_the_end(h, widget, button) -> None:
    """A user's click, then the GUI timer's ticks until the job has finished."""
    h.click(button)
    for _ in range(20):
        if widget._job is None:
            break
        h.fire_timers()
    h.check()
    assert widget._job is None, "the job did not finish"
    assert not widget.ui.statusLabel.styleSheet, widget.ui.statusLabel.text


def shown_slice_views(scene) -> list:
    """(slice node, composite node) of each slice view the selected layout shows."""
    shown = []
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
        slice_node = scene.GetNthNodeByClass(i, "vtkMRMLSliceNode")
        if not slice_node.IsMappedInLayout():
            continue
        composites = [scene.GetNthNodeByClass(j, "vtkMRMLSliceCompositeNode")
                      for j in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))]
        composite = next(c for c in composites if c.GetLayoutName() == slice_node.GetLayoutName())
        shown.append((slice_node, composite))
    return shown


def tick_compared_models(ui) -> None:
    """The user opens the Compare section and ticks FAST_MODEL and OTHER_MODEL."""
    import qt

    ui.compareCollapsibleButton.collapsed = False
    for row in range(ui.compareModelsList.count):
        item = ui.compareModelsList.item(row)
        if item.data(qt.Qt.UserRole) in (FAST_MODEL, OTHER_MODEL):
            item.setCheckState(qt.Qt.Checked)


def test_apply_after_compare_shows_the_new_heatmap(h, small_files, fast_output):
    import slicer
    from NormativeADSlicerLib import comparison

    volume = load_volume(h.scene, small_files[0], "MSLUB26 T1 2mm")
    widget = open_panel(h)
    widget.logic.processFactory = lambda request, on_event: ReplayRunner(request, on_event, fast_output)
    ui = widget.ui

    tick_compared_models(ui)
    run_to_the_end(h, widget, ui.compareButton)
    layout = slicer.app.layoutManager()
    assert layout.layout == comparison.LAYOUT_ID
    views = shown_slice_views(h.scene)
    assert sorted(s.GetLayoutName() for s, _ in views) == [comparison.view_tag(i) for i in range(2)]

    ui.modelComboBox.currentIndex = ui.modelComboBox.findData(FAST_MODEL)
    run_to_the_end(h, widget, ui.applyButton)
    heatmap = widget._result.heatmap
    assert heatmap.GetScene() is h.scene and widget._result.model_id == FAST_MODEL
    views = shown_slice_views(h.scene)
    assert views, "no slice view is shown"
    for slice_node, composite in views:
        name = slice_node.GetLayoutName()
        assert composite.GetForegroundVolumeID() == heatmap.GetID(), f"{name} does not show the new heatmap"
        assert composite.GetBackgroundVolumeID() == volume.GetID(), name
    segmentation = widget._result.segmentation.GetDisplayNode()
    assert segmentation.GetVisibility() and all(segmentation.IsDisplayableInView(s.GetID()) for s, _ in views)
    table = slicer.app.applicationLogic().GetSelectionNode().GetActiveTableID()
    assert table and h.scene.GetNodeByID(table).GetAttribute("NormativeAD.Role") == "metrics"


def compare_two_models(h, small_files, fast_output):
    """The panel on the small sample after Compare of FAST_MODEL and OTHER_MODEL (replayed outputs)."""

    load_volume(h.scene, small_files[0], "MSLUB26 T1 2mm")
    widget = open_panel(h)
    widget.logic.processFactory = lambda request, on_event: ReplayRunner(request, on_event, fast_output)
    ui = widget.ui
    tick_compared_models(ui)
    run_to_the_end(h, widget, ui.compareButton)
    return widget


def test_after_compare_the_chosen_result_takes_the_threshold_and_export(h, small_files, fast_output, tmp_path):
    """The Result list holds every compared model; the slider and Export act on the one chosen there
    (they acted on the last result only)."""

    widget = compare_two_models(h, small_files, fast_output)
    ui = widget.ui
    names = [ui.resultComboBox.itemText(i) for i in range(ui.resultComboBox.count)]
    assert len(names) == 2 and ui.resultComboBox.currentText == widget._result.name == names[-1]
    first, last = widget.logic.results()
    before = last.threshold

    ui.resultComboBox.currentIndex = 0  # the user picks the first model's result
    assert widget._result.heatmap is first.heatmap
    ui.thresholdSlider.value = first.threshold * 1.5
    h.check()
    assert first.threshold == pytest.approx(ui.thresholdSlider.value) and last.threshold == before
    ui.exportCollapsibleButton.collapsed = False
    ui.exportDirectoryButton.directory = str(tmp_path)
    h.click(ui.exportButton)
    h.check()
    from NormativeADSlicerLib.export import _safe

    written = sorted(p.name for p in tmp_path.iterdir())
    assert written and all(n.startswith(_safe(first.name) + "_") for n in written), written


def save_bundle(path: Path) -> None:
    """File > Save Scene as .mrb, as Slicer's scene writer does: the scene and every node's file into a
    folder (the application logic adds the storage nodes), zipped."""
    import slicer

    folder = path.with_suffix("")
    folder.mkdir()  # qSlicerSceneWriter makes the folder, the logic fills it
    logic = slicer.app.applicationLogic()
    assert logic.SaveSceneToSlicerDataBundleDirectory(str(folder), None)
    assert logic.Zip(str(path), str(folder))
    shutil.rmtree(folder)


def open_bundle(path: Path) -> None:
    """File > Close Scene, then load the .mrb as Slicer's scene bundle reader does."""
    import slicer

    slicer.mrmlScene.Clear(0)
    unpacked = path.parent / "unpacked"
    unpacked.mkdir()
    assert slicer.app.applicationLogic().OpenSlicerDataBundle(str(path), str(unpacked))


def test_a_scene_saved_as_mrb_and_loaded_again_keeps_its_results(h, small_files, fast_output, tmp_path):
    """Results live in the scene: the run's folder (with its parameters), the nodes' references and
    attributes. Saved as .mrb, closed and loaded again, the panel lists every result, its slider
    re-thresholds it and Export writes it."""
    import slicer
    from NormativeADSlicerLib import scene as scene_logic

    widget = compare_two_models(h, small_files, fast_output)
    ui = widget.ui
    names = [r.name for r in widget.logic.results()]
    assert len(names) == 2
    bundle = tmp_path / "scene.mrb"
    save_bundle(bundle)
    open_bundle(bundle)
    h.check()

    listed = [ui.resultComboBox.itemText(i) for i in range(ui.resultComboBox.count)]
    assert listed == names, listed
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(h.scene)
    for result in widget.logic.results():
        folder = scene_logic.run_folder(h.scene, result)
        assert folder and hierarchy.GetItemName(folder) == result.name
        assert hierarchy.GetItemAttribute(folder, "NormativeAD.Model") == result.model_id
        assert hierarchy.GetItemAttribute(folder, "NormativeAD.Threshold") == repr(result.threshold)
        filed = {hierarchy.GetItemDataNode(hierarchy.GetItemByPositionUnderParent(folder, i)).GetID()
                 for i in range(hierarchy.GetNumberOfItemChildren(folder))}
        assert {n.GetID() for n in result.nodes()} <= filed
        assert result.input is not None and result.segmentation is not None and result.metrics

    ui.resultComboBox.currentIndex = 0  # the first compared model, as after the Compare
    first = widget._result
    assert first.name == names[0]
    ui.thresholdSlider.value = first.threshold * 1.2
    h.check()
    assert first.threshold == pytest.approx(ui.thresholdSlider.value)
    assert slicer.util.arrayFromVolume(first.heatmap).any()
    table = scene_logic.table_as_rows(scene_logic.table_node(h.scene, create=False))
    assert [row["Result"] for row in table] == names
    assert float(table[0]["Threshold"]) == pytest.approx(first.threshold, rel=1e-3)

    ui.exportCollapsibleButton.collapsed = False
    ui.exportDirectoryButton.directory = str(tmp_path / "export")
    h.click(ui.exportButton)
    h.check()
    from NormativeADSlicerLib.export import _safe

    written = sorted(p.name for p in (tmp_path / "export").iterdir())
    stem = _safe(first.name)
    assert {f"{stem}_anomaly.seg.nrrd", f"{stem}_heatmap.nii.gz", f"{stem}_metrics.csv"} <= set(written), written
    rows = (tmp_path / "export" / f"{stem}_metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and first.name in rows[1]


# -- a run going on when the scene closes, the module reloads, or the next model cannot start


def sleeping(request, on_event):
    """A real child process that runs until it is killed (a model still working)."""
    from NormativeADSlicerLib.process import ProcessRunner

    class Sleeping(ProcessRunner):
        def command(self):
            return [sys.executable, "-c", "import time; time.sleep(600)"]

    return Sleeping(request, on_event=on_event)


def start_a_run(h, widget):
    """Apply with a process that keeps running; returns that process."""
    started = []
    widget.logic.processFactory = lambda request, on_event: started.append(sleeping(request, on_event)) or started[-1]
    h.click(widget.ui.applyButton)
    h.fire_timers()
    h.check()
    assert widget._job is not None and widget.ui.applyButton.text == "Cancel"
    (runner,) = started
    assert runner._process.poll() is None
    return runner, widget._job.work_dir


def assert_run_stopped(runner, work_dir) -> None:
    assert runner._process.poll() is not None, "the run's process is still running"
    assert not work_dir.exists(), "the run's work folder is left"


def test_closing_the_scene_during_a_run_stops_it(h, small_files, fast_output):
    volume = load_volume(h.scene, small_files[0], "MSLUB26 T1 2mm")
    widget = open_panel(h)
    runner, work_dir = start_a_run(h, widget)

    h.scene.Clear(0)  # File > Close Scene
    h.check()
    assert_run_stopped(runner, work_dir)
    assert widget._job is None and widget.ui.applyButton.text == "Apply"
    assert "Cancelled" in widget.ui.statusLabel.text
    assert not h.scene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems()
    assert h.fire_timers() == 0  # the panel's timer stopped with the run

    # the next scene works as the first did
    volume = load_volume(h.scene, small_files[0], "MSLUB26 T1 2mm")
    widget.ui.inputVolumeSelector.setCurrentNode(volume)
    widget.logic.processFactory = lambda request, on_event: ReplayRunner(request, on_event, fast_output)
    run_to_the_end(h, widget, widget.ui.applyButton)
    assert widget._result is not None and widget._result.input is volume


def test_reloading_the_module_during_a_run_stops_it_and_the_new_panel_works(h, small_files, fast_output):
    """Reload (developer mode) runs slicer.util.reloadScriptedModule, Slicer 5.12's own: the old panel's
    cleanup() cancels its run, the new panel is set up from the file again and runs."""
    import slicer

    load_volume(h.scene, small_files[0], "MSLUB26 T1 2mm")
    h.load_module(MODULE_FILE)
    widget = h.open_widget("NormativeAD")
    h.enter(widget)
    runner, work_dir = start_a_run(h, widget)

    slicer.util.reloadScriptedModule("NormativeAD")
    h.check()
    assert_run_stopped(runner, work_dir)
    reloaded = slicer.modules.NormativeADWidget
    assert reloaded is not widget and type(reloaded).__module__ == "NormativeAD"
    assert reloaded.ui.applyButton.text == "Apply" and reloaded.ui.applyButton.enabled
    assert h.fire_timers() == 0

    reloaded.logic.processFactory = lambda request, on_event: ReplayRunner(request, on_event, fast_output)
    run_to_the_end(h, reloaded, reloaded.ui.applyButton)
    assert [r.name for r in reloaded.logic.results()] == [reloaded._result.name]
    h.scene.Clear(0)  # the old panel no longer listens to the scene: nothing of it runs
    h.check()


def test_a_compared_model_whose_process_cannot_be_made_fails_the_run(h, small_files, fast_output):
    """The second model's process cannot be made (the factory raises): the run fails with the reason and
    ends, instead of raising from the panel's timer on every tick."""

    load_volume(h.scene, small_files[0], "MSLUB26 T1 2mm")
    widget = open_panel(h)
    made = []

    def factory(request, on_event):
        made.append(request.model)
        if len(made) == 2:
            raise OSError("no process for you")
        return ReplayRunner(request, on_event, fast_output)

    widget.logic.processFactory = factory
    ui = widget.ui
    tick_compared_models(ui)
    h.click(ui.compareButton)
    for _ in range(5):
        h.fire_timers()
    h.check()
    assert len(made) == 2 and widget._job is None and ui.compareButton.text == "Compare"
    assert ui.statusLabel.styleSheet and "no process for you" in ui.statusLabel.text, ui.statusLabel.text
    assert not widget.logic.results()
    assert h.fire_timers() == 0


def test_export_offers_dicom_seg_only_for_an_input_from_the_dicom_database(h, small_files, fast_output, tmp_path):
    volume = load_volume(h.scene, small_files[0], "MSLUB26 T1 2mm")
    widget = open_panel(h)
    widget.logic.processFactory = lambda request, on_event: ReplayRunner(request, on_event, fast_output)
    run_to_the_end(h, widget, widget.ui.applyButton)
    ui = widget.ui
    ui.exportCollapsibleButton.collapsed = False
    assert not ui.exportDicomButton.visible
    written = widget.logic.export(widget._result, tmp_path / "files")  # the default format, as the docs call it
    assert written["heatmap"].name.endswith(".nii.gz")

    volume.SetAttribute("DICOM.instanceUIDs", "1.2.826.0.1.3680043.8.498.1")  # as loaded from the DICOM database
    ui.resultComboBox.currentIndex = 0
    widget.onResultChosen()
    assert ui.exportDicomButton.visible
    ui.exportDirectoryButton.directory = str(tmp_path / "dicom")
    h.click(ui.exportDicomButton)  # no DICOM segmentation plugin in the harness: the reason says what to install
    with pytest.raises(AssertionError, match="QuantitativeReporting"):
        h.check()
    segmentation = widget._result.segmentation
    hierarchy = segmentation.GetScene().GetSubjectHierarchyNode()
    item = hierarchy.GetItemByDataNode(segmentation)
    assert hierarchy.GetItemAttribute(item, "DICOM.ReferencedInstanceUIDs") == "1.2.826.0.1.3680043.8.498.1"
