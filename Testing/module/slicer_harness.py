"""Slicer's own Python (v5.12) in this plain Python process, around the real module file.

No 3D Slicer application (Qt, PythonQt, CTK) can run here, so the module file cannot be tested in
Slicer; this harness runs as much of the real thing as can run, and stands in for the rest.

Real:
- slicer-core's `slicer` package: the MRML classes, a vtkMRMLScene, vtkSlicerApplicationLogic.
- Slicer's own Python, loaded unmodified from the shared folder (NORMATIVEAD_SLICER_PYTHON, default
  ../shared/slicer-5.12; never copied into the repository): slicer.util, slicer.i18n,
  slicer.ScriptedLoadableModule, slicer.parameterNodeWrapper, SampleData, PyTorchUtils. Slicer's
  util.py replaces slicer-core's older copy while the harness is installed (the array helpers
  NormativeADSlicerLib uses are the same code in both).

Stand-ins, for the compiled classes that cannot run, one module per thing they stand in for (each
module's docstring says what behaviour it models):
- harness_qt.py: Qt as PythonQt shows it (properties as attributes, signals and the string form of
  connect, slot exceptions kept in Harness.errors, visibility and enabled state, QUiLoader building
  the widget tree from the real .ui file, dialogs answered by the script, timers fired by the test);
- harness_ctk.py: the CTK widgets; harness_qmrml.py: the qMRML and qSlicer widgets (a
  qMRMLNodeComboBox listing the scene's nodes as Slicer's does);
- harness_app.py: the application object and its module manager, layout manager (following the
  scene's layout node with Slicer's own layout and slice logics) and core IO manager
  (slicer.util.loadVolume through Slicer's own vtkSlicerVolumesLogic).
This module assembles them into the `qt` and `ctk` modules and the `slicer` package's classes, and
holds the Harness. Slicer's parameterNodeWrapper chooses its connector by exact type
(`type(w) in (...)`), so each .ui class name maps to exactly one stand-in class of that name
(_WIDGET_CLASSES). The stand-ins never model NormativeAD's or Slicer's logic. A user's answer to a
dialog is scripted: Harness.dialog_reply and Harness.file_dialog_replies (dialogs shown are kept in
Harness.dialogs).

Isolation: other tests import slicer-core's `slicer` in the same pytest process, so install()
records everything it changes and uninstall() puts it back: the sys.modules entries it adds or
replaces (slicer.*, qt, ctk, SampleData, PyTorchUtils and each module file it loads), every
attribute of the `slicer` package, slicer.__path__, sys.path and sys.dont_write_bytecode (no
__pycache__ is written into the shared folder). Library modules imported meanwhile
(NormativeADSlicerLib...) keep working afterwards: they hold the `slicer` package itself and look
slicer.util up at call time. One process-wide change is kept, as Testing/module/conftest.py's scene
fixture also makes it: the segmentation converter rules registered (Slicer registers them at
startup). Use `with Harness() as h:` or a fixture that calls install()/uninstall().
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path

import harness_qt
from harness_app import (packaging_module, qSlicerApplication, qSlicerCoreIOManager, qSlicerLayoutManager,
                         qSlicerModuleManager, qSlicerScriptedLoadableModule)
from harness_ctk import (ctkCheckablePushButton, ctkCheckBox, ctkCollapsibleButton, ctkColorPickerButton, ctkComboBox,
                         ctkDirectoryButton, ctkDoubleRangeSlider, ctkDoubleSlider, ctkDoubleSpinBox, ctkMessageBox,
                         ctkPathLineEdit, ctkRangeWidget, ctkSliderWidget)
from harness_qmrml import (qMRMLNodeComboBox, qMRMLRangeWidget, qMRMLSliderWidget, qMRMLSpinBox,
                           qMRMLSubjectHierarchyComboBox, qMRMLSubjectHierarchyTreeView, qMRMLWidget,
                           qSlicerScriptedLoadableModuleWidget, qSlicerWidget)
from harness_qt import (QAbstractButton, QApplication, QBoxLayout, QCheckBox, QColor, QComboBox, QDialog,
                        QDoubleSpinBox, QEventLoop, QFile, QFileDialog, QFormLayout, QFrame, QHBoxLayout, QIcon,
                        QLabel, QLayout, QLineEdit, QListWidget, QListWidgetItem, QMessageBox, QObject,
                        QProgressBar, QPushButton, QSettings, QSizePolicy, QSlider, QSpacerItem, QSpinBox, Qt,
                        QTextEdit, QTimer, QToolButton, QUiLoader, QVBoxLayout, QWidget, _report_slot_error,
                        _WIDGET_CLASSES)
from slicer_testing import slicer_core_reason

REPO = Path(__file__).resolve().parents[2]
SLICER_PYTHON = Path(os.environ.get("NORMATIVEAD_SLICER_PYTHON", REPO.parent / "shared" / "slicer-5.12"))
SHARED_FILES = (
    "Base/Python/slicer/util.py",
    "Base/Python/slicer/i18n.py",
    "Base/Python/slicer/ScriptedLoadableModule.py",
    "Base/Python/slicer/parameterNodeWrapper/__init__.py",
    "Modules/Scripted/SampleData/SampleData.py",
    "SlicerPyTorch/PyTorchUtils.py",
)


def slicer_python_reason(root: Path | str | None = None) -> str | None:
    """None when the harness can run, else why not (for pytest.skip)."""
    root = Path(root or SLICER_PYTHON)
    for relative in SHARED_FILES:
        if not (root / relative).is_file():
            return (f"Slicer's Python files are not at {root} ({relative} missing): the Slicer module tests need "
                    "../shared/slicer-5.12 (or NORMATIVEAD_SLICER_PYTHON pointing at such a folder)")
    return slicer_core_reason()


# ---------------------------------------------------------------------------------------------
# The modules


_QT_CLASSES = (
    QObject, QWidget, QFrame, QLabel, QAbstractButton, QPushButton, QToolButton,
    QCheckBox, QComboBox, QProgressBar, QLineEdit, QTextEdit, QListWidget, QListWidgetItem, QSlider,
    QSpinBox, QDoubleSpinBox, QMessageBox, QDialog, QFileDialog, QTimer, QSettings, QFile, QIcon, QColor,
    QSizePolicy, QEventLoop, QApplication, QUiLoader, QLayout, QBoxLayout, QVBoxLayout, QHBoxLayout,
    QFormLayout, QSpacerItem,
)
_CTK_CLASSES = (
    ctkCollapsibleButton, ctkSliderWidget, ctkDoubleSlider, ctkDoubleSpinBox, ctkRangeWidget,
    ctkDoubleRangeSlider, ctkDirectoryButton, ctkPathLineEdit, ctkComboBox, ctkCheckBox,
    ctkCheckablePushButton, ctkColorPickerButton, ctkMessageBox,
)
_SLICER_CLASSES = (
    qMRMLWidget, qSlicerWidget, qSlicerScriptedLoadableModuleWidget, qMRMLNodeComboBox, qMRMLSliderWidget,
    qMRMLSpinBox, qMRMLRangeWidget, qMRMLSubjectHierarchyTreeView, qMRMLSubjectHierarchyComboBox,
    qSlicerScriptedLoadableModule, qSlicerApplication, qSlicerModuleManager, qSlicerLayoutManager,
    qSlicerCoreIOManager,
)
# the class names QUiLoader (harness_qt) builds from a .ui file
_WIDGET_CLASSES.update({cls.__name__: cls for cls in _QT_CLASSES + _CTK_CLASSES + _SLICER_CLASSES})
_WIDGET_CLASSES["QPixmap"] = QIcon


def _stand_in_module(name: str, classes, extra: dict | None = None) -> types.ModuleType:
    module = types.ModuleType(name, f"Stand-in for Slicer's `{name}` (Testing/module/slicer_harness.py).")
    for cls in classes:
        setattr(module, cls.__name__, cls)
    for key, value in (extra or {}).items():
        setattr(module, key, value)

    def __getattr__(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise AttributeError(f"the harness has no stand-in for {name}.{attr} (add one to "
                             f"Testing/module/harness_{name}.py and its list in slicer_harness.py)")

    module.__getattr__ = __getattr__
    return module


class Harness:
    """Slicer's Python around slicer-core, with stand-ins for Qt; see the module docstring."""

    MANAGED = ("qt", "ctk", "SampleData", "PyTorchUtils")

    def __init__(self, slicer_python: Path | str | None = None):
        self.root = Path(slicer_python or SLICER_PYTHON)
        self.errors: list[str] = []
        self.dialogs: list = []
        self.dialog_reply = QMessageBox.Cancel  # the user's answer to modal dialogs (or a callable(box))
        self.file_dialog_replies: list[str] = []
        self.settings: dict = {}
        self.timers: list[QTimer] = []
        self.pending_calls: list = []
        self.scenes: list = []
        self.scene_observers: list = []
        self.loaded: list[str] = []
        self.pip_calls: list[dict] = []  # slicer.packaging.pip_install's calls (harness_app.packaging_module)
        self.pip_reply = (0, "")  # its answer: pip's exit code and log
        self.app = None
        self._installed = False

    # -- installing

    def install(self) -> "Harness":
        reason = slicer_python_reason(self.root)
        if reason:
            raise RuntimeError(reason)
        if harness_qt._ACTIVE is not None:
            raise RuntimeError("a Slicer harness is already installed")
        import slicer

        self._slicer = slicer
        self._saved_dict = dict(slicer.__dict__)
        self._saved_modules = {name: module for name, module in sys.modules.items() if self._managed(name)}
        self._saved_sys_path = list(sys.path)
        self._saved_bytecode = sys.dont_write_bytecode
        harness_qt._ACTIVE = self
        self._installed = True
        try:
            self._graft()
        except BaseException:
            self.uninstall()
            raise
        return self

    def _managed(self, name: str) -> bool:
        return name.startswith("slicer.") or name in self.MANAGED or name in self.loaded

    def _graft(self) -> None:
        slicer = self._slicer
        sys.dont_write_bytecode = True  # no __pycache__ in the shared folder
        sys.modules["qt"] = _stand_in_module("qt", _QT_CLASSES, {"Qt": Qt, "QPixmap": QIcon})
        sys.modules["ctk"] = _stand_in_module("ctk", _CTK_CLASSES)
        for cls in _SLICER_CLASSES:
            setattr(slicer, cls.__name__, cls)
        for name, doc in (("modules", "Slicer modules (harness)"), ("moduleNames", "Slicer module names (harness)")):
            module = types.ModuleType(name, doc)
            sys.modules[f"slicer.{name}"] = module
            setattr(slicer, name, module)
        sys.modules["slicer.packaging"] = slicer.packaging = packaging_module(self)
        self.app = qSlicerApplication(self)
        slicer.app = self.app
        self._register_segmentation_rules(slicer)
        self.new_scene()
        # Slicer's own Python: its package folder first, so that slicer.util is Slicer 5.12's util.py
        slicer.__path__ = [str(self.root / "Base" / "Python" / "slicer")] + list(self._saved_dict["__path__"])
        sys.modules.pop("slicer.util", None)
        if "util" in slicer.__dict__:
            delattr(slicer, "util")
        importlib.invalidate_caches()
        for name in ("slicer.util", "slicer.i18n", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper"):
            importlib.import_module(name)
        assert Path(slicer.util.__file__).resolve().is_relative_to(self.root.resolve()), slicer.util.__file__
        for folder in (self.root / "Modules" / "Scripted" / "SampleData", self.root / "SlicerPyTorch"):
            sys.path.insert(0, str(folder))
        importlib.import_module("SampleData")
        importlib.import_module("PyTorchUtils")

    @staticmethod
    def _register_segmentation_rules(slicer) -> None:
        """Slicer's Segmentations module registers these at startup (slicer-core has none)."""
        factory = slicer.vtkSegmentationConverterFactory.GetInstance()
        rules = factory.GetConverterRules()
        if rules is None or len(rules) == 0:
            factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
            factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())

    def uninstall(self) -> None:
        if not self._installed:
            return
        slicer = self._slicer
        if self.app is not None:  # modules are unloaded (their widgets' cleanup()), then scenes closed
            self.unload_modules()
        if self.app is not None and self.app._layoutManager is not None:
            self.app._layoutManager.close()
            self.app._layoutManager = None
        for scene, tag in self.scene_observers:
            scene.RemoveObserver(tag)
        self.scene_observers.clear()
        for scene in self.scenes:
            scene.Clear(1)
        self.scenes.clear()
        for name in [n for n in sys.modules if self._managed(n)]:
            if name not in self._saved_modules:
                del sys.modules[name]
        sys.modules.update(self._saved_modules)
        for key in [k for k in slicer.__dict__ if k not in self._saved_dict]:
            delattr(slicer, key)
        for key, value in self._saved_dict.items():
            if slicer.__dict__.get(key, object()) is not value:
                setattr(slicer, key, value)
        sys.path[:] = self._saved_sys_path
        sys.dont_write_bytecode = self._saved_bytecode
        importlib.invalidate_caches()
        self.timers.clear()
        self.pending_calls.clear()
        if self.app is not None:
            import shutil

            shutil.rmtree(self.app._temporary, ignore_errors=True)
        harness_qt._ACTIVE = None
        self._installed = False

    def __enter__(self) -> "Harness":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.uninstall()

    # -- the application's state

    @property
    def scene(self):
        return self._slicer.mrmlScene

    def new_scene(self):
        """A fresh slicer.mrmlScene as Slicer starts one: default colour nodes, application logic."""
        slicer = self._slicer
        scene = slicer.vtkMRMLScene()
        colors = slicer.vtkMRMLColorLogic()
        colors.SetMRMLScene(scene)
        colors.AddDefaultColorNodes()
        colors.SetMRMLScene(None)
        if self.app._layoutManager is not None:  # before its application logic goes: its slice logics use it
            self.app._layoutManager.close()
        logic = slicer.vtkSlicerApplicationLogic()
        logic.SetMRMLScene(scene)
        self.app._applicationLogic = logic
        self.app._layoutManager = qSlicerLayoutManager(scene, logic)
        slicer.mrmlScene = scene
        self.scenes.append(scene)
        return scene

    def unload_modules(self) -> None:
        """What Slicer does before unloading its modules: moduleAboutToBeUnloaded (widgets' cleanup())."""
        for name in self.loaded:
            self.app.moduleManager().moduleAboutToBeUnloaded.emit(name)
        for name in list(vars(self._slicer.modules)):
            if not name.startswith("__"):
                delattr(self._slicer.modules, name)

    def reset(self) -> None:
        """Between tests: modules unloaded, errors, dialogs, timers and settings forgotten."""
        self.unload_modules()
        self.errors.clear()
        self.dialogs.clear()
        self.file_dialog_replies.clear()
        self.dialog_reply = QMessageBox.Cancel
        self.pip_calls.clear()
        self.pip_reply = (0, "")
        self.timers.clear()
        self.pending_calls.clear()
        self.app.testing = False
        self.app.overrideCursorDepth = 0
        self.settings.clear()
        self.app.startupCompleted.disconnect()

    # -- loading a scripted module as Slicer does

    def load_module(self, path: Path | str, name: str | None = None):
        """Import a scripted module file and instantiate its module class, as Slicer's factory does.

        The file's folder goes on sys.path, the module is sys.modules[name], its `parent` (a
        qSlicerScriptedLoadableModule) is slicer.modules.<name lower case> and the instance is
        slicer.modules.<name>Instance. Returns the instance.
        """
        path = Path(path).resolve()
        name = name or path.stem
        if name not in self.loaded:
            self.loaded.append(name)
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        if name in sys.modules and name not in self._saved_modules:
            self._saved_modules[name] = sys.modules[name]  # put back by uninstall()
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        parent = qSlicerScriptedLoadableModule()
        parent.objectName = name
        parent.path = str(path)
        instance = getattr(module, name)(parent)
        setattr(self._slicer.modules, name.lower(), parent)
        setattr(self._slicer.modules, f"{name}Instance", instance)
        return instance

    def module_panel(self):
        """The panel Slicer gives a scripted module's widget: a shown qSlicerScriptedLoadableModuleWidget."""
        panel = qSlicerScriptedLoadableModuleWidget()
        panel.setLayout(QVBoxLayout())
        panel.setMRMLScene(self._slicer.mrmlScene)
        panel.show()
        return panel

    def open_widget(self, name: str):
        """The module's widget as Slicer makes it: its panel (the module's widget representation) instantiates
        the loaded file's <name>Widget, which is set up; slicer.util.reloadScriptedModule can reload it."""
        panel = self.module_panel()
        getattr(self._slicer.modules, name.lower())._panel = panel
        widget = panel.instantiate(name)
        widget.setup()
        return widget

    def enter(self, widget) -> None:
        """Show the module, as Slicer's module panel does (isEntered, then the widget's enter())."""
        widget.parent._entered = True
        widget.enter()

    def exit(self, widget) -> None:
        widget.parent._entered = False
        widget.exit()

    # -- the user and the event loop

    @staticmethod
    def click(button) -> None:
        """A user's click: refused on a button the user cannot see; ignored on a disabled one (as in Qt)."""
        if not button.isVisible():
            raise AssertionError(f"{button.objectName or button!r} is not visible: a user cannot click it")
        button.click()

    def fire_timers(self) -> int:
        """Fire each active timer once (the event loop's work); returns how many fired."""
        fired = 0
        for timer in list(self.timers):
            if timer.isActive():
                if timer.isSingleShot():
                    timer.stop()
                timer.timeout.emit()
                fired += 1
        return fired

    def process_events(self) -> None:
        calls, self.pending_calls = self.pending_calls, []
        for call in calls:
            try:
                call()
            except Exception:
                _report_slot_error("QTimer.singleShot")

    def check(self) -> None:
        """Fail with every exception a slot raised since the last check (Slicer prints them)."""
        errors, self.errors = self.errors, []
        if errors:
            raise AssertionError(f"{len(errors)} exception(s) raised in Qt slots:\n\n" + "\n".join(errors))
