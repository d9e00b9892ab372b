"""NormativeAD: anomaly heatmaps from normative (healthy-trained) models of brain MRI, in 3D Slicer.

The front door: Module (title, help, sample data), the Widget (NormativeADSlicerLib/widget.py, given
this module's logic), a Logic that hands work to NormativeADSlicerLib, and the self-test. Computation
runs in a separate process (the NormativeADLib command line); the scene code lives in NormativeADSlicerLib.
"""

from __future__ import annotations

import sys
import unittest
from pathlib import Path
from typing import Annotated, Optional, Union

import slicer
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
)

MODULE_DIR = Path(__file__).resolve().parent
DOCS_URL = "https://github.com/NormativeAD/NormativeAD/blob/main/docs/slicer.md"


def _library_path() -> None:
    """Make NormativeADLib importable: it sits beside this folder in a checkout, inside it in a build."""
    for candidate in (MODULE_DIR, MODULE_DIR.parent):
        if (candidate / "NormativeADLib" / "__init__.py").is_file() and str(candidate) not in sys.path:
            sys.path.append(str(candidate))
            return


_library_path()

from NormativeADLib.core.options import DEFAULT_OPACITY, DEVICE, FORMAT  # noqa: E402  (standard library only)
from NormativeADSlicerLib.widget import ModulePanel  # noqa: E402

SAMPLE_FILES = {  # file name -> SHA256 (Resources/SampleData: MSLUB patient 26, CC BY, see ATTRIBUTION.txt)
    "mslub_patient26_t1.nii.gz": "e813b2805017dcf886da9bb5e6c6c548dfa938c17d49ecd66ea1caabe3794b32",
    "mslub_patient26_flair.nii.gz": "254ab239bdc83119015213af9c533f9af13dbed2b06b9a89fde43226cc4afa2a",
    "mslub_patient26_lesion.nii.gz": "5a9cc6ffbe3a5d2df67fba4207c0585b2f02a5f9f7f31e0e7e3f57cc59c2c5ac",
}


def sample_data_folder() -> Path | None:
    for candidate in (MODULE_DIR / "Resources" / "SampleData", MODULE_DIR.parent / "Resources" / "SampleData"):
        if all((candidate / name).is_file() for name in SAMPLE_FILES):
            return candidate
    return None


#
# Module
#


class NormativeAD(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("NormativeAD")
        # Slicer translates its category names in this context: a category through _() would be a new
        # folder in the module list of a translated Slicer instead of the built-in "Segmentation".
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["NormativeAD contributors"]
        self.parent.helpText = _(
            "Restores a brain MRI to its pseudo-healthy counterpart with a model trained on healthy scans, "
            "shows the residual as a heatmap over the input, segments the anomalies at a healthy-calibrated "
            "threshold (voxel false positive rate 1/5/10 %) and tabulates per-case metrics. Several models can "
            "be compared side by side in linked views. The threshold can be moved without re-running the model; "
            "results export as .seg.nrrd, NIfTI label map, volumes and CSV. "
            "Research use only: not a medical device.")
        # An extension's module has no page in Slicer's own documentation: link to ours.
        self.parent.helpText += _("<p>See the {start}NormativeAD documentation{end}.</p>").format(
            start=f'<a href="{DOCS_URL}">', end="</a>")
        self.parent.acknowledgementText = _(
            "Built on 3D Slicer, MONAI and PyTorch. The sample case is patient 26 of the MSLUB data set "
            "(University of Ljubljana, CC BY; Lesjak et al., Neuroinformatics 2018). Models are trained on IXI "
            "(CC BY-SA 3.0). The process and dependency handling follow SlicerMONAIAuto3DSeg and SlicerNNUNet.")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """The shipped sample case (T1, FLAIR, lesion mask) in the Sample Data module, checked by SHA256."""
    import SampleData

    folder = sample_data_folder()
    if folder is None:
        return
    names = list(SAMPLE_FILES)
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="NormativeAD",
        sampleName="NormativeAD MSLUB patient 26",
        uris=[(folder / name).as_uri() for name in names],
        fileNames=names,
        nodeNames=["MSLUB26 T1", "MSLUB26 FLAIR", "MSLUB26 lesion"],
        thumbnailFileName=str(MODULE_DIR / "Resources" / "Icons" / "NormativeAD.png"),
        loadFileTypes=["VolumeFile", "VolumeFile", "SegmentationFile"],
        checksums=[f"SHA256:{SAMPLE_FILES[name]}" for name in names],
    )


#
# Parameter node
#


@parameterNodeWrapper
class NormativeADParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    brainMask: Optional[Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode]]
    reference: Optional[Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode]]
    # other contrasts of the same subject's study, read with the input by a study model
    otherVolume1: Optional[vtkMRMLScalarVolumeNode]
    otherVolume2: Optional[vtkMRMLScalarVolumeNode]
    otherVolume3: Optional[vtkMRMLScalarVolumeNode]
    model: str = ""
    device: Annotated[str, Choice(list(DEVICE.choices))] = DEVICE.default
    # Neither is bound in the .ui: the threshold names are the chosen model's (its card's), and the
    # slider's range follows each result's scores (Slicer refuses an unbounded float on a ctkSliderWidget).
    thresholdChoice: str = ""  # a threshold the card names, "manual", or "" for the card's default
    threshold: float = 0.0
    opacity: Annotated[float, WithinRange(0.0, 1.0)] = DEFAULT_OPACITY
    exportFormat: Annotated[str, Choice(list(FORMAT.choices))] = FORMAT.default


#
# Widget
#


class NormativeADWidget(ModulePanel):
    """The panel (NormativeADSlicerLib/widget.py), given this module's logic."""

    def createLogic(self):
        return NormativeADLogic()


#
# Logic
#


class NormativeADLogic(ScriptedLoadableModuleLogic):
    """Slicer's face of NormativeADSlicerLib: the same calls, on slicer.mrmlScene.

    start() returns a job to drive with poll() (the widget uses a timer); run() blocks (scripts, tests).
    processFactory makes the process of each model's run: (request, on_event) -> a runner with
    start / poll / cancel / outcome (NormativeADSlicerLib.process.ProcessProtocol); tests swap it.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        from NormativeADSlicerLib.process import ProcessRunner

        self.processFactory = ProcessRunner

    def getParameterNode(self):
        return NormativeADParameterNode(super().getParameterNode())

    # models and dependencies

    def listModels(self):
        from NormativeADLib.core import catalogue

        return catalogue.list_models()

    def importModel(self, folder):
        from NormativeADLib.core import catalogue

        return catalogue.import_model(folder)

    def missingDependencies(self) -> list[str]:
        from NormativeADSlicerLib import dependencies

        return dependencies.missing_all()

    def ensureDependencies(self, ask: bool = True) -> bool:
        from NormativeADSlicerLib import dependencies

        return dependencies.ensure(ask=ask)

    def prepareWorker(self) -> None:
        """Start the analysis worker in the background while the user chooses (its imports take seconds),
        when the packages it needs are installed and runs use the standard runner."""
        from NormativeADSlicerLib import process

        if self.processFactory is process.ProcessRunner and not self.missingDependencies():
            process.prewarm()

    # running

    def start(self, inputVolume, models, device=DEVICE.default, threshold=None, opacity=DEFAULT_OPACITY,
              brainMask=None, reference=None, onProgress=None, onFinished=None, otherVolumes=()):
        """otherVolumes: other contrasts of the input's study (their names say which), for a study model."""
        from NormativeADSlicerLib.logic import Job, RunSettings

        settings = RunSettings(models=list(models), device=device, threshold=threshold, opacity=opacity)
        return Job(slicer.mrmlScene, inputVolume, settings, brainMask, reference, on_progress=onProgress,
                   on_finished=onFinished, process_factory=self.processFactory, other_nodes=otherVolumes).start()

    def run(self, inputVolume, models, timeout=None, **kwargs):
        """Blocking run; returns the job's final state (status, message, results)."""
        job = self.start(inputVolume, models, **kwargs)
        state = job.wait(timeout)
        if state.status == "done":
            self.showResults(state.results)
        return state

    # results

    def results(self, inputVolume=None):
        """The results in the scene (of inputVolume only, when given), oldest first; found from the
        nodes' own references, so a saved and reloaded scene has them too."""
        from NormativeADSlicerLib import scene

        return scene.results_in_scene(slicer.mrmlScene, inputVolume)

    def setThreshold(self, result, choice):
        from NormativeADSlicerLib import scene

        return scene.set_threshold(slicer.mrmlScene, result, choice)

    def thresholdRange(self, result):
        from NormativeADSlicerLib import scene

        low, high = scene.heatmap_window(result)
        return 0.0, max(high, result.threshold * 2.0)

    def setOpacity(self, opacity):
        from NormativeADSlicerLib import scene

        scene.set_opacity(slicer.mrmlScene, opacity)

    def showLayer(self, result, layer="heatmap", opacity=DEFAULT_OPACITY):
        """The result's heatmap, or its uncertainty map ("uncertainty"), over the input in the main views."""
        from NormativeADSlicerLib import scene

        scene.show_layer(slicer.mrmlScene, result, layer, opacity)

    def export(self, result, folder, fmt=FORMAT.default):
        from NormativeADSlicerLib import export

        return export.export_result(slicer.mrmlScene, result, folder, fmt)

    def fromDicomDatabase(self, result):
        """The result's input came from Slicer's DICOM database: its segmentation can be exported as DICOM SEG."""
        from NormativeADSlicerLib import export

        return export.from_dicom_database(result)

    def exportDicomSeg(self, result, folder):
        """The result's segmentation as DICOM SEG through Slicer's DICOM export (the segmentation plugin)."""
        from NormativeADSlicerLib import export

        return export.export_dicom_seg(slicer.mrmlScene, result, folder)

    def showResults(self, results):
        """The layout for a finished run, with the metrics table in its table view.

        One result: the four-up-with-table layout, also after a comparison (whose views would hide it).
        Several: the comparison layout the job selected.
        """
        from NormativeADSlicerLib import comparison, scene

        table = scene.table_node(slicer.mrmlScene, create=False)
        if table is None or not results:
            return
        if len(results) == 1:
            comparison.show_single_layout(slicer.mrmlScene)
        selection = slicer.app.applicationLogic().GetSelectionNode()
        selection.SetActiveTableID(table.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()


#
# Test
#


class NormativeADTest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer: `Slicer --testing --python-code "..."` or the Reload and Test button."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        # "Reload and Test" and slicer.selfTests call runTest() outside a unittest runner, where a skip
        # would be an error: it is shown instead. ctest runs each test_ method through unittest (a skip).
        for test in (self.test_sample_data_checksums, self.test_run_and_threshold):
            self.setUp()
            try:
                test()
            except unittest.SkipTest as skip:
                self.delayDisplay(f"Skipped {test.__name__}: {skip}")

    def _loadSample(self):
        folder = sample_data_folder()
        self.assertIsNotNone(folder, "the shipped sample case is missing")
        volume = slicer.util.loadVolume(str(folder / "mslub_patient26_t1.nii.gz"))
        return folder, volume

    def _skipWithoutPackages(self, logic):
        """A stock Slicer (the extension factory's, a user's before the first Apply) lacks torch and the
        other packages the run's process imports: the run cannot work there, which is no failure."""
        missing = logic.missingDependencies()  # the panel's own check: the same list it offers to install
        if missing:
            self.skipTest(
                f"the analysis packages are not installed in this Slicer: {', '.join(missing)}. Install them "
                "with 'Install Python packages...' in the NormativeAD module (torch comes through the PyTorch "
                "extension), or in the Python console: import NormativeAD; "
                "NormativeAD.NormativeADLogic().ensureDependencies(); then run the test again (after a "
                "restart if Slicer asks).")

    def test_sample_data_checksums(self):
        import hashlib

        folder = sample_data_folder()
        self.assertIsNotNone(folder)
        for name, digest in SAMPLE_FILES.items():
            self.assertEqual(hashlib.sha256((folder / name).read_bytes()).hexdigest(), digest, name)

    def test_run_and_threshold(self):
        import numpy as np

        logic = NormativeADLogic()
        self._skipWithoutPackages(logic)
        from NormativeADLib.core import catalogue

        if not logic.listModels():
            self.skipTest("no model installed.")
        model = catalogue.default_model("T1")  # what Apply runs on the sample T1
        folder, volume = self._loadSample()
        self.delayDisplay(f"Running {model} on the sample T1 (under a minute on a CPU)")
        state = logic.run(volume, [model], device=DEVICE.default, timeout=1800)
        self.assertEqual(state.status, "done", state.message)
        result = state.results[0]
        self.assertEqual(result.heatmap.GetImageData().GetDimensions(), volume.GetImageData().GetDimensions())
        self.assertEqual(result.heatmap.GetDisplayNode().GetColorNode().GetName(), "NormativeADHeat")
        before = slicer.mrmlScene.GetNumberOfNodes()
        mask = logic.setThreshold(result, result.threshold * 1.5)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)
        from NormativeADSlicerLib.nodes import segment_array
        from NormativeADSlicerLib.scene import SEGMENT_ID

        np.testing.assert_array_equal(segment_array(result.segmentation, SEGMENT_ID, volume), mask.astype(np.uint8))
        self.delayDisplay("Test passed")
