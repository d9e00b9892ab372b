"""Stand-ins for Slicer's application object, slicer.app, and its parts (part of the Slicer harness,
slicer_harness.py).

- qSlicerScriptedLoadableModule: what Slicer hands a scripted module's class as `parent`;
  qSlicerModuleManager: the loaded modules (slicer.modules) and moduleAboutToBeUnloaded;
- qSlicerLayoutManager, a layout manager that follows the scene's layout node with Slicer's own
  vtkMRMLLayoutLogic and vtkMRMLSliceLogic: the selected layout's views are the ones mapped in the
  layout (what the user sees), each slice view has its composite node; no views are drawn;
- qSlicerCoreIOManager: slicer.util.loadVolume reads volume files with Slicer's own
  vtkSlicerVolumesLogic;
- qSlicerApplication: what a scripted module and Slicer's Python ask of slicer.app (version,
  documentation links, settings, the scene's application logic, testing mode, the override cursor);
- slicer.packaging: Slicer 5.12's pip_install, which slicer.util.pip_install delegates to (the file
  is not among the copied ones): its dialogs as 5.12 documents them, pip itself not run.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
import types
from pathlib import Path
from typing import TYPE_CHECKING

from harness_qt import QObject, QSettings, Qt, Signal, _prop

if TYPE_CHECKING:
    from slicer_harness import Harness

SLICER_VERSION = (5, 12, 3)  # what slicer.app reports: the version of the Python files the harness runs


class qSlicerScriptedLoadableModule(QObject):
    """What Slicer hands a scripted module's class as `parent`: its descriptive properties."""

    title = _prop("title", "", convert=str)
    categories = _prop("categories", [], convert=list)
    dependencies = _prop("dependencies", [], convert=list)
    contributors = _prop("contributors", [], convert=list)
    helpText = _prop("helpText", "", convert=str)
    acknowledgementText = _prop("acknowledgementText", "", convert=str)
    icon = _prop("icon", None)
    hidden = _prop("hidden", False, convert=bool)
    index = _prop("index", -1, convert=int)
    path = _prop("path", "", convert=str)

    def widgetRepresentation(self):
        """The module's panel (Harness.open_widget makes it), as Slicer creates it on first use."""
        return getattr(self, "_panel", None)


class qSlicerModuleManager(QObject):
    moduleAboutToBeUnloaded = Signal("QString")
    moduleLoaded = Signal("QString")
    moduleUnloaded = Signal("QString")

    def module(self, name: str):
        import slicer

        return getattr(slicer.modules, name.lower(), None)

    def factoryManager(self):
        import slicer

        names = [m.name for m in vars(slicer.modules).values() if isinstance(m, qSlicerScriptedLoadableModule)]
        return types.SimpleNamespace(loadedModuleNames=lambda: names)


class qSlicerLayoutManager(QObject):
    """slicer.app.layoutManager(): follows the scene's layout node, as Slicer's does; draws nothing.

    Slicer's own vtkMRMLLayoutLogic (slicer-core) reads the selected layout's description and makes its
    view nodes; as qMRMLLayoutManager does, the view nodes of the selected layout are marked mapped in
    the layout (IsMappedInLayout: what the user sees) and the others not, and each slice view gets a
    vtkMRMLSliceLogic, which makes its composite node. A script selects a layout here (setLayout, or
    the `layout` property) or on the layout node: both end on the node, which this follows.
    """

    layoutChanged = Signal("int")

    def __init__(self, scene, application_logic):
        super().__init__(None)
        import slicer
        import vtk

        self._logic = slicer.vtkMRMLLayoutLogic()
        self._logic.SetMRMLApplicationLogic(application_logic)
        self._logic.SetMRMLScene(scene)
        self._scene = scene
        self._slice_logics = {}  # layout name -> vtkMRMLSliceLogic
        self._collection = vtk.vtkCollection()
        application_logic.SetSliceLogics(self._collection)
        self._arrangement = None
        node = self._logic.GetLayoutNode()
        # after the layout logic's own observer (priority 0), which makes the view nodes first
        self._observer = (node, node.AddObserver(vtk.vtkCommand.ModifiedEvent, self._follow, -1.0))
        node.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)  # three slice views, as at start-up
        self._follow()

    def _get_layout(self) -> int:
        return self._logic.GetLayoutNode().GetViewArrangement()

    layout = property(_get_layout, lambda self, value: self.setLayout(value))

    def setLayout(self, layout) -> None:
        self._logic.GetLayoutNode().SetViewArrangement(int(layout))

    def layoutLogic(self):
        return self._logic

    def sliceViewNames(self) -> list:
        return list(self._slice_logics)

    def _mapped_view_nodes(self) -> list:
        """The view nodes of the selected layout (those marked mapped in the layout)."""
        views = self._logic.GetViewNodes()
        return [views.GetItemAsObject(i) for i in range(views.GetNumberOfItems())]

    def _follow(self, caller=None, event=None) -> None:
        import slicer

        mapped = {node.GetID() for node in self._mapped_view_nodes()}
        for i in range(self._scene.GetNumberOfNodesByClass("vtkMRMLAbstractViewNode")):
            view = self._scene.GetNthNodeByClass(i, "vtkMRMLAbstractViewNode")
            view.SetMappedInLayout(view.GetID() in mapped)
            if view.IsA("vtkMRMLSliceNode") and view.GetID() in mapped:
                self._slice_logic(slicer, view)
        if self._arrangement != self.layout:
            self._arrangement = self.layout
            self.layoutChanged.emit(self._arrangement)

    def _slice_logic(self, slicer, slice_node) -> None:
        name = slice_node.GetLayoutName()
        if name in self._slice_logics:
            return
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLApplicationLogic(self._logic.GetMRMLApplicationLogic())
        logic.SetMRMLScene(self._scene)
        logic.SetSliceNode(slice_node)  # makes the view's composite node, as a slice widget's logic does
        self._slice_logics[name] = logic
        self._collection.AddItem(logic)

    def close(self) -> None:
        """Stop following the scene (a new scene gets its own layout manager)."""
        node, tag = self._observer
        node.RemoveObserver(tag)
        for logic in self._slice_logics.values():
            logic.SetMRMLScene(None)
        self._slice_logics.clear()
        self._collection.RemoveAllItems()
        self._logic.SetMRMLScene(None)


class qSlicerCoreIOManager(QObject):
    """slicer.app.coreIOManager() for slicer.util.loadVolume: volume files only, read as Slicer's volume
    reader does, by Slicer's own vtkSlicerVolumesLogic.AddArchetypeVolume (slicer-core)."""

    VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

    def __init__(self, app):
        super().__init__(None)
        self._app = app

    def fileType(self, filename) -> str:
        if str(filename).lower().endswith(self.VOLUME_SUFFIXES):
            return "VolumeFile"
        raise RuntimeError(f"the harness reads volume files only, not {filename}")

    def loadNodes(self, fileType, properties, loadedNodes=None, userMessages=None) -> bool:
        import slicer
        import vtk

        if fileType != "VolumeFile":
            raise RuntimeError(f"the harness reads volume files only, not {fileType}")
        path = str(properties["fileName"])
        name = properties.get("name") or Path(path).name.split(".")[0]  # Slicer: the file name, no extension
        application_logic = self._app.applicationLogic()
        colors = slicer.vtkSlicerColorLogic()  # the volume's default colour table comes from it
        colors.SetMRMLApplicationLogic(application_logic)
        application_logic.SetModuleLogic("Colors", colors)
        volumes = slicer.vtkSlicerVolumesLogic()
        volumes.SetMRMLApplicationLogic(application_logic)
        volumes.SetMRMLScene(slicer.mrmlScene)
        node = volumes.AddArchetypeVolume(path, name, 0)
        volumes.SetMRMLScene(None)
        if node is None:
            if userMessages is not None:
                userMessages.AddMessage(vtk.vtkCommand.ErrorEvent, f"cannot read {path}")
            return False
        if loadedNodes is not None:
            loadedNodes.AddItem(node)
        return True


class qSlicerApplication(QObject):
    """slicer.app: what a scripted module and Slicer's Python ask of the application."""

    startupCompleted = Signal()
    lastWindowClosed = Signal()

    applicationName = property(lambda self: "Slicer")
    applicationVersion = property(lambda self: ".".join(map(str, SLICER_VERSION)))
    majorVersion = property(lambda self: SLICER_VERSION[0])
    minorVersion = property(lambda self: SLICER_VERSION[1])
    releaseType = property(lambda self: "Stable")
    temporaryPath = property(lambda self: self._temporary)
    cachePath = property(lambda self: os.path.join(self._temporary, "cache"))

    def __init__(self, harness: "Harness"):
        super().__init__(None)
        self._harness = harness
        self._temporary = tempfile.mkdtemp(prefix="slicer-harness-")
        self._moduleManager = qSlicerModuleManager(self)
        self._applicationLogic = None
        self._layoutManager = None
        self.overrideCursorDepth = 0
        self.testing = False  # slicer.app.testingEnabled(): dialogs are skipped when True

    # documentation (qSlicerCoreApplication's defaults)
    def documentationVersion(self) -> str:
        return f"v{SLICER_VERSION[0]}.{SLICER_VERSION[1]}" if self.releaseType == "Stable" else "latest"

    def documentationLanguage(self) -> str:
        return "en"

    @property
    def documentationBaseUrl(self) -> str:
        url = self.userSettings().value("DocumentationBaseURL", "https://slicer.readthedocs.io/{language}/{version}")
        return url.replace("{version}", self.documentationVersion()).replace("{language}", self.documentationLanguage())

    def moduleDocumentationUrl(self, moduleName: str) -> str:
        url = self.userSettings().value("ModuleDocumentationURL",
                                        "{documentationbaseurl}/user_guide/modules/{lowercasemodulename}.html")
        return url.replace("{documentationbaseurl}", self.documentationBaseUrl).replace(
            "{lowercasemodulename}", moduleName.lower())

    def translate(self, context, text) -> str:
        return text

    # parts of the application
    def moduleManager(self):
        return self._moduleManager

    def layoutManager(self):
        return self._layoutManager

    def coreIOManager(self):
        return qSlicerCoreIOManager(self)

    def applicationLogic(self):
        return self._applicationLogic

    def mrmlScene(self):
        import slicer

        return slicer.mrmlScene

    def userSettings(self):
        return QSettings()

    settings = userSettings

    def topLevelWidgets(self) -> list:
        return []  # no main window: slicer.util.mainWindow() is None

    def pythonConsole(self):
        return None

    def commandOptions(self):
        return types.SimpleNamespace(testingEnabled=self.testing, noMainWindow=True, runPythonAndExit=False)

    def testingEnabled(self) -> bool:
        return self.testing

    def keyboardModifiers(self) -> int:
        return Qt.NoModifier

    def processEvents(self, *args) -> None:
        self._harness.process_events()

    def setOverrideCursor(self, cursor) -> None:
        self.overrideCursorDepth += 1

    def restoreOverrideCursor(self) -> None:
        self.overrideCursorDepth -= 1

    def exit(self, status=0):
        raise RuntimeError(f"slicer.app.exit({status}) called in the harness")

    def restart(self):
        raise RuntimeError("slicer.app.restart() called in the harness")


def packaging_module(harness: "Harness") -> types.ModuleType:
    """slicer.packaging as Slicer 5.12 has it, for slicer.util.pip_install (5.12's util.py delegates to it).

    Its documented behaviour: with the application and outside testing mode, a blocking install shows a
    progress dialog and, when pip fails, an error dialog with pip's log ("Package installation failed.")
    before raising CalledProcessError; in testing mode neither dialog is shown. pip is not run: each call
    is recorded in harness.pip_calls (its arguments, the text of its constraints file, the requester) and
    answered with harness.pip_reply, (exit code, pip's log).
    """
    module = types.ModuleType("slicer.packaging", "Slicer 5.12's package installation (harness)")

    def pip_install(requirements, constraints=None, no_deps_requirements=None, skip_packages=None,
                    blocking=True, show_progress=True, requester=None, parent=None, logCallback=None,
                    completedCallback=None):
        import slicer

        args = list(requirements) if isinstance(requirements, (list, tuple)) else shlex.split(requirements)
        files = [str(constraints)] if constraints else []
        files += [args[i + 1] for i, arg in enumerate(args[:-1]) if arg in ("-c", "--constraint")]
        harness.pip_calls.append({"args": args, "constraints": "".join(Path(f).read_text() for f in files),
                                  "requester": requester, "show_progress": show_progress})
        code, log = harness.pip_reply
        if code == 0:
            return None
        if show_progress and blocking and not slicer.app.testingEnabled():
            slicer.util.errorDisplay("Package installation failed.", detailedText=log,
                                     windowTitle=f"{requester} - Installation Failed" if requester
                                     else "Installation Failed")
        raise subprocess.CalledProcessError(code, "pip install")

    module.pip_install = pip_install
    return module
