"""The NormativeAD panel: the widget Slicer shows, bound to the parameter node, forwarding every action
to the module's logic. Slicer's application only (Qt, slicer.app): the module file imports it.
"""

from __future__ import annotations

from pathlib import Path

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin


class ModulePanel(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the panel to the parameter node and forwards actions to the logic; computes nothing.

    The module file subclasses it and gives it its logic (createLogic), as SlicerNNUNet's widget
    receives its logic: this file holds the panel's behaviour, NormativeAD.py what Slicer loads."""

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

    def createLogic(self):
        """The module's logic (NormativeAD.NormativeADLogic in Slicer)."""
        raise NotImplementedError

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/NormativeAD.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.createLogic()

        self._timer = qt.QTimer()
        self._timer.setInterval(100)
        self._timer.connect("timeout()", self._poll)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.compareButton.connect("clicked(bool)", self.onCompareButton)
        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.ui.exportDicomButton.connect("clicked(bool)", self.onExportDicomButton)
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
        from NormativeADSlicerLib.dependencies import InstallError

        try:
            if self.logic.ensureDependencies():
                self._status(_("Python packages installed."))
        except InstallError as err:  # one dialog: Slicer 5.12 has shown pip's failure with its log already
            self._status(_("Installing the Python packages failed: {error}").format(error=err), error=True)
            if not err.shown:
                slicer.util.errorDisplay(_("Installing the Python packages failed.") + f"\n\n{err}")
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
        self.ui.exportDicomButton.visible = self._result is not None and self.logic.fromDicomDatabase(self._result)
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

    def onExportDicomButton(self) -> None:  # the result chosen in the Result list, through Slicer's DICOM export
        folder = self.ui.exportDirectoryButton.directory
        with slicer.util.tryWithErrorDisplay(_("DICOM SEG export failed."), waitCursor=True):
            written = self.logic.exportDicomSeg(self._result, folder)
            self._status(_("Exported {n} files to {folder}").format(n=len(written), folder=folder))
