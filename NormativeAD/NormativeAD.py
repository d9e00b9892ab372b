"""NormativeAD: anomaly heatmaps from normative (healthy-trained) models of brain MRI, in 3D Slicer.

The front door: Module (title, help, sample data), a thin Widget bound to the parameter node, a
Logic that hands work to NormativeADSlicerLib, and the self-test. Computation runs in a separate
process (the NormativeADLib command line); the scene code lives in NormativeADSlicerLib.
"""

from __future__ import annotations

import sys
import unittest
from pathlib import Path
from typing import Annotated, Optional, Union

import qt
import slicer
import vtk
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

MODULE_DIR = Path(__file__).resolve().parent
DOCS_URL = "https://github.com/NormativeAD/NormativeAD/blob/main/docs/slicer.md"


def _library_path() -> None:
    """Make NormativeADLib importable: it sits beside this folder in a checkout, inside it in a build."""
    for candidate in (MODULE_DIR, MODULE_DIR.parent):
        if (candidate / "NormativeADLib" / "__init__.py").is_file() and str(candidate) not in sys.path:
            sys.path.append(str(candidate))
            return


_library_path()

from NormativeADLib.core.options import DEVICES, FORMATS  # noqa: E402  (standard library only)

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
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    # Neither is bound in the .ui: the threshold names are the chosen model's (its card's), and the
    # slider's range follows each result's scores (Slicer refuses an unbounded float on a ctkSliderWidget).
    thresholdChoice: str = ""  # a threshold the card names, "manual", or "" for the card's default
    threshold: float = 0.0
    opacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    exportFormat: Annotated[str, Choice(list(FORMATS))] = "nifti"


#
# Widget
#


class NormativeADWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the panel to the parameter node and forwards actions to the logic; computes nothing."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._timer = None
        self._result = None
        self._shownInput = None
        self._cards = {}
        self._updatingThreshold = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/NormativeAD.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = NormativeADLogic()

        self._timer = qt.QTimer()
        self._timer.setInterval(100)
        self._timer.connect("timeout()", self._poll)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.compareButton.connect("clicked(bool)", self.onCompareButton)
        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.ui.importWeightsButton.connect("clicked(bool)", self.onImportWeights)
        self.ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.thresholdChoiceComboBox.connect("currentIndexChanged(int)", self.onThresholdChoice)
        self.ui.resultComboBox.connect("currentIndexChanged(int)", self.onResultChosen)
        self.ui.thresholdSlider.connect("valueChanged(double)", self.onThresholdValue)
        self.ui.opacitySlider.connect("valueChanged(double)", self.onOpacity)
        self.ui.uncertaintyCheckBox.connect("toggled(bool)", self.onShowUncertainty)
        self.ui.exportDirectoryButton.directory = str(Path.home())

        self.refreshModels()
        self.showDependencies()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._cancelJob()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        self._refreshResults()
        self.logic.prepareWorker()

    def exit(self) -> None:
        self.setParameterNode(None)  # enter() connects it again

    def onSceneStartClose(self, caller, event) -> None:
        self._cancelJob()
        self.setParameterNode(None)
        self._result = None

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()
        self._refreshResults()

    def onSceneEndImport(self, caller, event) -> None:
        """A scene loaded (.mrb): its results are found again from the nodes' own references."""
        self._refreshResults()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first and not first.IsA("vtkMRMLLabelMapVolumeNode") and not first.GetAttribute("NormativeAD.Role"):
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        self._showThresholdChoice()
        self._checkCanApply()
        inputVolume = self._parameterNode.inputVolume if self._parameterNode else None
        if inputVolume is not self._shownInput:  # another volume: its results, not the last one's
            self._shownInput = inputVolume
            self._refreshResults()

    def _showThresholdChoice(self) -> None:
        """The threshold combo follows the parameter node (a script or a loaded scene may set it)."""
        choice = self._parameterNode.thresholdChoice if self._parameterNode else ""
        combo = self.ui.thresholdChoiceComboBox
        index = combo.findText(choice) if choice else -1
        if index >= 0 and index != combo.currentIndex:
            combo.currentIndex = index  # re-thresholds the result, as choosing it by hand does

    def _checkCanApply(self, caller=None, event=None) -> None:
        running = self._job is not None
        ready = bool(self._parameterNode and self._parameterNode.inputVolume and self.ui.modelComboBox.count)
        self.ui.applyButton.enabled = running or ready
        self.ui.compareButton.enabled = running or ready
        if not running:
            self.ui.applyButton.toolTip = _("Run the model") if ready else _("Choose an input volume and a model")

    # -- models

    def refreshModels(self) -> None:
        self.ui.modelComboBox.blockSignals(True)
        self.ui.modelComboBox.clear()
        self.ui.compareModelsList.clear()
        cards = self.logic.listModels()  # the cards alone: no torch needed to list them
        if not cards:
            self.ui.modelCardLabel.text = _("No model installed: import one with 'Import local weights...'.")
        self._cards = {card.id: card for card in cards}
        for card in cards:
            self.ui.modelComboBox.addItem(f"{card.id} ({card.contrast_summary})", card.id)
            item = qt.QListWidgetItem(f"{card.id} ({card.contrast_summary})")
            item.setData(qt.Qt.UserRole, card.id)
            item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
            item.setCheckState(qt.Qt.Unchecked)
            self.ui.compareModelsList.addItem(item)
        self.ui.modelComboBox.blockSignals(False)
        self.onModelChanged()

    def showDependencies(self) -> None:
        """Say which Python packages are missing, with the one button that installs them."""
        absent = self.logic.missingDependencies()
        self.ui.installDependenciesButton.visible = bool(absent)
        self.ui.dependenciesLabel.visible = bool(absent)
        if absent:
            self.ui.dependenciesLabel.text = _(
                "To run, NormativeAD needs these Python packages: {names}. Nothing installed is "
                "replaced, but a package older than NormativeAD needs.").format(names=", ".join(absent))

    def onInstallDependencies(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Installing the Python packages failed."), waitCursor=True):
            if self.logic.ensureDependencies():
                self._status(_("Python packages installed."))
        self.showDependencies()

    def onModelChanged(self, index=None) -> None:
        model_id = self.ui.modelComboBox.currentData
        card = self._cards.get(model_id)
        if card is None:
            return
        if self._parameterNode:
            self._parameterNode.model = model_id
        training = card.training or {}
        self.ui.modelCardLabel.text = (
            f"<b>{card.id}</b> v{card.version} · {card.family} · contrasts {card.contrast_summary}<br>"
            f"{card.description}<br>Trained on: {training.get('data', 'unknown')} "
            f"({training.get('licence', training.get('license', 'licence not stated'))})<br>"
            f"Figures: {card.figures_summary()}")
        if self._result is None or self._result.model_id != model_id:
            self._fillThresholdChoices(card.offered_thresholds(), card.default_threshold)
        self._checkCanApply()

    def onImportWeights(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(
            slicer.util.mainWindow(), _("Model folder (card.json and weights)"))
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay(_("Importing the model failed."), waitCursor=True):
            card = self.logic.importModel(folder)
            self.refreshModels()
            self.ui.modelComboBox.currentIndex = max(0, self.ui.modelComboBox.findData(card.id))

    # -- running

    def onApplyButton(self) -> None:
        if self._job is not None:
            self._cancelJob()
            return
        self._start([self.ui.modelComboBox.currentData])

    def onCompareButton(self) -> None:
        if self._job is not None:
            self._cancelJob()
            return
        models = []
        for row in range(self.ui.compareModelsList.count):
            item = self.ui.compareModelsList.item(row)
            if item.checkState() == qt.Qt.Checked:
                models.append(item.data(qt.Qt.UserRole))
        if len(models) < 2:
            slicer.util.warningDisplay(_("Tick at least two models to compare."))
            return
        self._start(models)

    def _start(self, models) -> None:
        p = self._parameterNode
        try:
            if self.logic.missingDependencies() and not self.logic.ensureDependencies():
                self._status(_("Not started: the required Python packages are not installed."), error=True)
                return
            self.showDependencies()
            if not self._cards:
                self.refreshModels()
            self._job = self.logic.start(
                p.inputVolume, models, device=p.device, threshold=self._thresholdArgument(),
                opacity=p.opacity, brainMask=p.brainMask, reference=p.reference,
                otherVolumes=[p.otherVolume1, p.otherVolume2, p.otherVolume3],
                onProgress=self._onProgress, onFinished=self._onFinished)
        except Exception as err:
            self._job = None
            self._status(_("Could not start: {error}").format(error=err), error=True)
            return
        button = self.ui.applyButton if len(models) == 1 else self.ui.compareButton
        button.text = _("Cancel")
        self.ui.progressBar.visible = True
        self.ui.progressBar.value = 0
        self._status(_("Starting..."))
        self._checkCanApply()
        self._timer.start()

    def _thresholdArgument(self) -> str | None:
        p = self._parameterNode
        if p.thresholdChoice == "manual":
            return repr(float(p.threshold))
        return p.thresholdChoice or None

    def _poll(self) -> None:
        if self._job is None or not self._job.poll():
            self._timer.stop()

    def _onProgress(self, state) -> None:
        self.ui.progressBar.value = int(100 * state.fraction)
        self._status(state.message)

    def _onFinished(self, state) -> None:
        self._timer.stop()
        self._job = None
        self.ui.applyButton.text = _("Apply")
        self.ui.compareButton.text = _("Compare")
        self.ui.progressBar.visible = False
        self._checkCanApply()
        if state.status == "done":
            self._refreshResults(state.results[-1])
            self.ui.deviceInUseLabel.text = _("Device used: {device}").format(device=state.device or "?")
            self._status(_("Done: {n} result(s) added to the scene.").format(n=len(state.results)))
            self.logic.showResults(state.results)
        elif state.status == "cancelled":
            self._status(_("Cancelled; the scene was left as it was."))
        else:
            self._status(_("Failed: {reason}").format(reason=state.message), error=True)

    def _cancelJob(self) -> None:
        if self._job is not None:
            self._job.cancel()

    def _status(self, text, error=False) -> None:
        self.ui.statusLabel.text = text
        self.ui.statusLabel.styleSheet = "color: #d03030" if error else ""

    # -- threshold, display, export

    def _refreshResults(self, chosen=None) -> None:
        """List the scene's results of the input volume; choose `chosen`, else keep the current one if it
        is still there, else the newest."""
        inputVolume = self._parameterNode.inputVolume if self._parameterNode else None
        results = self.logic.results(inputVolume)
        current = chosen or self._result
        ids = [r.heatmap.GetID() for r in results]
        self._result = next((r for r in results if current is not None and r.heatmap is current.heatmap),
                            results[-1] if results else None)
        combo = self.ui.resultComboBox
        combo.blockSignals(True)
        try:
            combo.clear()
            for result, node_id in zip(results, ids):
                combo.addItem(result.name, node_id)
            combo.currentIndex = ids.index(self._result.heatmap.GetID()) if self._result else -1
        finally:
            combo.blockSignals(False)
        self._syncThreshold()

    def onResultChosen(self, index=None) -> None:
        node_id = self.ui.resultComboBox.currentData
        chosen = next((r for r in self.logic.results() if r.heatmap.GetID() == node_id), None)
        if chosen is not None:
            self._result = chosen
            self._syncThreshold()

    def _syncThreshold(self) -> None:
        """Put the current result's threshold range and value on the slider (no re-segmentation)."""
        if self._result is None or self._parameterNode is None:
            return
        low, high = self.logic.thresholdRange(self._result)
        self._updatingThreshold = True
        try:
            self.ui.thresholdSlider.minimum = low
            self.ui.thresholdSlider.maximum = high
            self.ui.thresholdSlider.singleStep = (high - low) / 500.0
            self.ui.thresholdSlider.value = self._result.threshold
            self._parameterNode.threshold = self._result.threshold
            self._fillThresholdChoices(self._result.thresholds, self._result.threshold_source)
        finally:
            self._updatingThreshold = False

    def _fillThresholdChoices(self, names, current: str) -> None:
        """The chosen model's named thresholds and "manual", without re-thresholding anything."""
        combo = self.ui.thresholdChoiceComboBox
        combo.blockSignals(True)
        try:
            combo.clear()
            for name in [*names, "manual"]:
                combo.addItem(name)
            combo.currentIndex = max(0, combo.findText(current))
        finally:
            combo.blockSignals(False)
        if self._parameterNode:
            self._parameterNode.thresholdChoice = combo.currentText

    def onThresholdChoice(self, index=None) -> None:
        choice = self.ui.thresholdChoiceComboBox.currentText
        if self._parameterNode and not self._updatingThreshold:
            self._parameterNode.thresholdChoice = choice
        if self._result is None or choice == "manual" or self._updatingThreshold:
            return
        with slicer.util.tryWithErrorDisplay(_("Re-thresholding failed."), waitCursor=True):
            self.logic.setThreshold(self._result, choice)
            self._syncThreshold()

    def onThresholdValue(self, value) -> None:
        if self._result is None or self._updatingThreshold:
            return
        if abs(value - self._result.threshold) < 1e-9:
            return
        with slicer.util.tryWithErrorDisplay(_("Re-thresholding failed."), waitCursor=True):
            self.logic.setThreshold(self._result, value)
            self._updatingThreshold = True
            try:
                self._parameterNode.threshold = value
                self.ui.thresholdChoiceComboBox.currentIndex = self.ui.thresholdChoiceComboBox.findText("manual")
                self._parameterNode.thresholdChoice = "manual"
            finally:
                self._updatingThreshold = False

    def onOpacity(self, value) -> None:
        self.logic.setOpacity(value)

    def onShowUncertainty(self, checked) -> None:
        if self._result is not None:
            self.logic.showLayer(self._result, "uncertainty" if checked else "heatmap", self._parameterNode.opacity)

    def onExportButton(self) -> None:  # the result chosen in the Result list
        if self._result is None:
            slicer.util.warningDisplay(_("Run a model first: there is no result to export."))
            return
        folder = self.ui.exportDirectoryButton.directory
        with slicer.util.tryWithErrorDisplay(_("Export failed."), waitCursor=True):
            written = self.logic.export(self._result, folder, self._parameterNode.exportFormat)
            self._status(_("Exported {n} files to {folder}").format(n=len(written), folder=folder))


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

    def start(self, inputVolume, models, device="auto", threshold=None, opacity=0.5, brainMask=None,
              reference=None, onProgress=None, onFinished=None, otherVolumes=()):
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

    def showLayer(self, result, layer="heatmap", opacity=0.5):
        """The result's heatmap, or its uncertainty map ("uncertainty"), over the input in the main views."""
        from NormativeADSlicerLib import scene

        scene.show_layer(slicer.mrmlScene, result, layer, opacity)

    def export(self, result, folder, fmt="nii.gz"):
        from NormativeADSlicerLib import export

        return export.export_result(slicer.mrmlScene, result, folder, fmt)

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
        cards = logic.listModels()
        if not cards:
            self.skipTest("no model installed.")
        folder, volume = self._loadSample()
        self.delayDisplay("Running the first model (a few minutes on a CPU)")
        state = logic.run(volume, [cards[0].id], device="auto", timeout=1800)
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
