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

Stand-ins (this file), for the compiled classes that cannot run: Qt, CTK and qMRML widgets and the
application object. They model the Qt behaviour that the module and Slicer's Python rely on:
- PythonQt access: Qt properties as attributes (`button.text = ...`, `combo.count`), setXxx() for
  each property, `widget.name` for objectName, `property()`/`setProperty()` with dynamic properties;
- signals with connect/disconnect/emit, the PythonQt string form `w.connect("clicked(bool)", slot)`
  (an unknown signature raises here, where PythonQt would only print a warning), and PythonQt's rule
  of passing a slot only as many arguments as it takes; a property change emits its signal, only
  when the value changes, and not while blockSignals(True);
- as in Slicer, an exception raised in a slot is printed and does not reach whoever emitted the
  signal; the harness keeps it in Harness.errors so that tests can fail on it (Harness.check());
- visibility and enabled state inherited from ancestors (a collapsed ctkCollapsibleButton hides its
  contents), QUiLoader building the widget tree from the real .ui file (properties, dynamic
  properties such as SlicerParameterName, combo-box items, layouts, <connections>);
- a qMRMLNodeComboBox listing the scene's nodes as Slicer's does (node types, child types, hidden
  nodes, selection kept, dropped or moved when nodes come and go);
- value widgets rounding to `decimals` and clamping to their range like QDoubleSpinBox/ctk;
- a layout manager that follows the scene's layout node with Slicer's own vtkMRMLLayoutLogic and
  vtkMRMLSliceLogic: the selected layout's views are the ones mapped in the layout (what the user
  sees), each slice view has its composite node; no views are drawn;
- slicer.util.loadVolume through a core IO manager that reads volume files with Slicer's own
  vtkSlicerVolumesLogic.
Slicer's parameterNodeWrapper chooses its connector by exact type (`type(w) in (...)`), so each .ui
class name maps to exactly one stand-in class of that name. The stand-ins never model NormativeAD's
or Slicer's logic. A user's answer to a dialog is scripted: Harness.dialog_reply and
Harness.file_dialog_replies (dialogs shown are kept in Harness.dialogs).

Isolation: other tests import slicer-core's `slicer` in the same pytest process, so install()
records everything it changes and uninstall() puts it back: the sys.modules entries it adds or
replaces (slicer.*, qt, ctk, SampleData, PyTorchUtils and each module file it loads), every
attribute of the `slicer` package, slicer.__path__, sys.path and sys.dont_write_bytecode (no
__pycache__ is written into the shared folder). Library modules imported meanwhile
(NormativeADSlicerLib...) keep working afterwards: they hold the `slicer` package itself and look
slicer.util up at call time. One process-wide change is kept, as Testing/slicer/conftest.py's scene
fixture also makes it: the segmentation converter rules registered (Slicer registers them at
startup). Use `with Harness() as h:` or a fixture that calls install()/uninstall().
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import os
import sys
import tempfile
import traceback
import types
import xml.etree.ElementTree as ET
from pathlib import Path

from slicer_testing import slicer_core_reason

REPO = Path(__file__).resolve().parents[2]
SLICER_PYTHON = Path(os.environ.get("NORMATIVEAD_SLICER_PYTHON", REPO.parent / "shared" / "slicer-5.12"))
SLICER_VERSION = (5, 12, 3)
SHARED_FILES = (
    "Base/Python/slicer/util.py",
    "Base/Python/slicer/i18n.py",
    "Base/Python/slicer/ScriptedLoadableModule.py",
    "Base/Python/slicer/parameterNodeWrapper/__init__.py",
    "Modules/Scripted/SampleData/SampleData.py",
    "SlicerPyTorch/PyTorchUtils.py",
)

_ACTIVE: "Harness | None" = None  # the installed harness (errors, settings, dialogs, timers)


def slicer_python_reason(root: Path | str | None = None) -> str | None:
    """None when the harness can run, else why not (for pytest.skip)."""
    root = Path(root or SLICER_PYTHON)
    for relative in SHARED_FILES:
        if not (root / relative).is_file():
            return (f"Slicer's Python files are not at {root} ({relative} missing): the Slicer module tests need "
                    "../shared/slicer-5.12 (or NORMATIVEAD_SLICER_PYTHON pointing at such a folder)")
    return slicer_core_reason()


# ---------------------------------------------------------------------------------------------
# Signals


def _normalize(types_: str) -> str:
    parts = []
    for part in types_.split(","):
        part = part.replace("const ", "").replace("&", "").replace(" ", "")
        parts.append(part)
    return ",".join(p for p in parts if p)


def _slot_arity(slot) -> int | None:
    """How many positional arguments PythonQt passes to a Python slot (None: all of them)."""
    try:
        signature = inspect.signature(slot)
    except (TypeError, ValueError):
        return None
    count = 0
    for parameter in signature.parameters.values():
        if parameter.kind is parameter.VAR_POSITIONAL:
            return None
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            count += 1
    return count


def _report_slot_error(where: str) -> None:
    """A slot raised: Slicer prints it and carries on; the harness also keeps it for Harness.check()."""
    text = traceback.format_exc()
    if _ACTIVE is None:
        raise
    _ACTIVE.errors.append(f"{where}:\n{text}")
    sys.stderr.write(f"[slicer harness] exception in a slot of {where} (Slicer would print it):\n{text}")


class Signal:
    """A Qt signal of a stand-in class; `overloads` maps other signatures to argument converters."""

    def __init__(self, *args: str, overloads: dict | None = None):
        self.args = tuple(_normalize(a) for a in args)
        self.overloads = {_normalize(k): v for k, v in (overloads or {}).items()}
        self.name = ""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        signals = obj.__dict__.setdefault("_bound_signals", {})
        bound = signals.get(self.name)
        if bound is None:
            bound = signals[self.name] = BoundSignal(obj, self)
        return bound


class _Connection:
    __slots__ = ("slot", "nargs", "convert")

    def __init__(self, slot, nargs, convert):
        self.slot, self.nargs, self.convert = slot, nargs, convert


class BoundSignal:
    """`obj.signal`: connect(slot), disconnect(slot), emit(*args)."""

    def __init__(self, owner, signal: Signal):
        self._owner = owner
        self._signal = signal
        self._connections: list[_Connection] = []

    def connect(self, slot, _nargs: int | None = None, _convert=None) -> bool:
        if not callable(slot):
            raise TypeError(f"{self._signal.name}.connect: {slot!r} is not callable")
        nargs = len(self._signal.args) if _nargs is None else _nargs
        self._connections.append(_Connection(slot, nargs, _convert))
        return True

    def disconnect(self, slot=None) -> bool:
        if slot is None:
            had = bool(self._connections)
            self._connections.clear()
            return had
        for index, connection in enumerate(self._connections):
            if connection.slot == slot:
                del self._connections[index]
                return True
        return False

    def emit(self, *args) -> None:
        if getattr(self._owner, "_signalsBlocked", False):
            return
        for connection in list(self._connections):
            if connection not in self._connections:  # disconnected by an earlier slot
                continue
            values = tuple(connection.convert(self._owner, args)) if connection.convert else tuple(args)
            values = values[:connection.nargs]
            arity = _slot_arity(connection.slot)
            if arity is not None:
                values = values[:arity]
            try:
                connection.slot(*values)
            except Exception:
                _report_slot_error(f"{type(self._owner).__name__}.{self._signal.name}")

    def receivers(self) -> int:
        return len(self._connections)


def _parse_signature(signature: str) -> tuple[str, str]:
    signature = signature.strip()
    if signature[:1] in "12":  # SIGNAL()/SLOT() macro codes
        signature = signature[1:]
    if "(" not in signature or not signature.endswith(")"):
        raise ValueError(f"not a Qt signature: {signature!r}")
    name, args = signature[:-1].split("(", 1)
    return name.strip(), _normalize(args)


def _qt_property(cls, name: str) -> bool:
    """Qt properties of the stand-ins are the Python properties of their classes."""
    return isinstance(getattr(cls, name, None), property)


def _prop(name: str, default=None, signal: str | None = None, convert=None):
    """A Qt property stored on the object; emits `signal` with the new value when it changes."""
    attr = "_p_" + name

    def fget(self):
        return getattr(self, attr, default)

    def fset(self, value):
        if convert is not None:
            value = convert(value)
        old = getattr(self, attr, default)
        setattr(self, attr, value)
        if signal is not None and old != value:
            getattr(self, signal).emit(value)

    return property(fget, fset)


# ---------------------------------------------------------------------------------------------
# Qt


class Qt:
    """The Qt namespace (values as in Qt 5)."""

    DisplayRole, DecorationRole, EditRole, ToolTipRole = 0, 1, 2, 3
    CheckStateRole, UserRole = 10, 256
    Unchecked, PartiallyChecked, Checked = 0, 1, 2
    NoItemFlags, ItemIsSelectable, ItemIsEditable, ItemIsDragEnabled = 0, 1, 2, 4
    ItemIsDropEnabled, ItemIsUserCheckable, ItemIsEnabled, ItemIsTristate = 8, 16, 32, 64
    ArrowCursor, WaitCursor, BusyCursor = 0, 3, 16
    Horizontal, Vertical = 1, 2
    NoModifier, ShiftModifier, ControlModifier, AltModifier = 0, 0x02000000, 0x04000000, 0x08000000
    AlignLeft, AlignRight, AlignHCenter, AlignTop, AlignBottom, AlignVCenter, AlignCenter = 1, 2, 4, 0x20, 0x40, 0x80, 0x84
    TextSelectableByMouse, TextBrowserInteraction = 1, 13
    MatchExactly, MatchContains, MatchCaseSensitive = 0, 1, 16
    Key_Return, Key_Enter = 0x01000004, 0x01000005
    LeftButton, RightButton = 1, 2


class QObject:
    destroyed = Signal("QObject*")
    objectNameChanged = Signal("QString")

    def __init__(self, parent=None):
        self._signalsBlocked = False
        self._parent = None
        self._children: list = []
        self._dynamic: dict = {}
        self._objectName = ""
        if parent is not None:
            self.setParent(parent)

    def _get_objectName(self):
        return self._objectName

    def _set_objectName(self, value):
        value = "" if value is None else str(value)
        if value != self._objectName:
            self._objectName = value
            self.objectNameChanged.emit(value)

    objectName = property(_get_objectName, _set_objectName)
    name = objectName  # PythonQt's spelling of objectName

    def __getattr__(self, attr):
        # PythonQt: every Qt property has its setter slot, setText(), setEnabled(), ...
        if not attr.startswith("_") and attr.startswith("set") and len(attr) > 3:
            prop = attr[3].lower() + attr[4:]
            if _qt_property(type(self), prop):
                return lambda value: setattr(self, prop, value)
        raise AttributeError(f"the {type(self).__name__} stand-in has no attribute {attr!r}")

    def parent(self):
        return self._parent

    def setParent(self, parent) -> None:
        if self._parent is parent:
            return
        if self._parent is not None and self in self._parent._children:
            self._parent._children.remove(self)
        self._parent = parent
        if parent is not None:
            parent._children.append(self)

    def children(self) -> list:
        return list(self._children)

    def findChildren(self, cls=None, name: str | None = None) -> list:
        found = []
        for child in self._children:
            if (cls is None or isinstance(child, cls)) and (not name or child.objectName == name):
                found.append(child)
            found.extend(child.findChildren(cls, name))
        return found

    def findChild(self, cls=None, name: str | None = None):
        children = self.findChildren(cls, name)
        return children[0] if children else None

    def property(self, name: str):
        if _qt_property(type(self), name):
            return getattr(self, name)
        return self._dynamic.get(name)

    def setProperty(self, name: str, value) -> bool:
        if _qt_property(type(self), name):
            setattr(self, name, value)
            return True
        self._dynamic[name] = value  # a dynamic property, as QObject::setProperty makes one
        return False

    def dynamicPropertyNames(self) -> list:
        return list(self._dynamic)

    def blockSignals(self, block: bool) -> bool:
        previous = self._signalsBlocked
        self._signalsBlocked = bool(block)
        return previous

    def signalsBlocked(self) -> bool:
        return self._signalsBlocked

    def _signal_for(self, signature: str):
        name, args = _parse_signature(signature)
        signal = getattr(type(self), name, None)
        if not isinstance(signal, Signal):
            raise ValueError(f"{type(self).__name__} has no signal {signature!r}")
        if args == ",".join(signal.args):
            return getattr(self, name), len(signal.args) if args else 0, None
        if args in signal.overloads:
            return getattr(self, name), len(args.split(",")) if args else 0, signal.overloads[args]
        known = [f"{name}({','.join(signal.args)})"] + [f"{name}({o})" for o in signal.overloads]
        raise ValueError(f"{type(self).__name__} has no signal {signature!r} (it has {', '.join(known)})")

    def connect(self, signature, slot) -> bool:
        """PythonQt's obj.connect("signal(args)", callable)."""
        bound, nargs, convert = self._signal_for(signature)
        return bound.connect(slot, _nargs=nargs, _convert=convert)

    def disconnect(self, signature, slot=None) -> bool:
        bound, _, _ = self._signal_for(signature)
        return bound.disconnect(slot)

    def deleteLater(self) -> None:
        pass

    def className(self) -> str:
        return type(self).__name__

    def inherits(self, class_name: str) -> bool:
        return any(cls.__name__ == class_name for cls in type(self).__mro__)

    def isWidgetType(self) -> bool:
        return False

    def __repr__(self):
        return f"{type(self).__name__} ({type(self).__name__} at: {self._objectName or hex(id(self))})"


class QSpacerItem:
    def __init__(self, *args):
        pass


class QLayout(QObject):
    def __init__(self, parent=None):
        super().__init__(None)
        self._items: list = []
        self._widget = None
        if isinstance(parent, QWidget):
            parent.setLayout(self)

    def parentWidget(self):
        if self._widget is not None:
            return self._widget
        return self._parent.parentWidget() if isinstance(self._parent, QLayout) else None

    def _adopt(self, item) -> None:
        owner = self.parentWidget()
        if owner is None:
            return
        if isinstance(item, QWidget) and item.parent() is not owner:
            item.setParent(owner)
        elif isinstance(item, QLayout):
            for sub in item._items:
                item._adopt(sub)

    def _install(self, widget) -> None:
        self._widget = widget
        self.setParent(widget)
        for item in self._items:
            self._adopt(item)

    def addWidget(self, widget, *args) -> None:
        self._items.append(widget)
        self._adopt(widget)

    def addLayout(self, layout, *args) -> None:
        self._items.append(layout)
        layout.setParent(self)
        self._adopt(layout)

    def addItem(self, item) -> None:
        self._items.append(item)

    def addStretch(self, *args) -> None:
        self._items.append(QSpacerItem())

    def addSpacing(self, *args) -> None:
        self._items.append(QSpacerItem())

    def removeWidget(self, widget) -> None:
        if widget in self._items:
            self._items.remove(widget)

    def count(self) -> int:
        return len(self._items)

    def setContentsMargins(self, *args) -> None:
        pass

    def setSpacing(self, *args) -> None:
        pass


class QBoxLayout(QLayout):
    pass


class QVBoxLayout(QBoxLayout):
    pass


class QHBoxLayout(QBoxLayout):
    pass


class QFormLayout(QLayout):
    def addRow(self, *args) -> None:
        for item in args:
            if isinstance(item, str):
                item = QLabel(item)
            if isinstance(item, QLayout):
                self.addLayout(item)
            elif item is not None:
                self.addWidget(item)


class QWidget(QObject):
    def __init__(self, parent=None):
        super().__init__(parent if isinstance(parent, QObject) else None)
        self._layout = None
        self._shown: bool | None = None  # None: never shown/hidden explicitly (follows its parent)
        self._enabledSelf = True

    def isWidgetType(self) -> bool:
        return True

    def parentWidget(self):
        return self._parent if isinstance(self._parent, QWidget) else None

    # visibility: a widget is visible when shown (or never hidden) and its ancestors are visible
    def _contentsVisible(self) -> bool:
        return self.isVisible()

    def isVisible(self) -> bool:
        if self._shown is False:
            return False
        parent = self.parentWidget()
        if parent is None:
            return self._shown is True
        return parent._contentsVisible()

    def isHidden(self) -> bool:
        return self._shown is False or (self.parentWidget() is None and self._shown is None)

    def isVisibleTo(self, ancestor) -> bool:
        widget = self
        while widget is not None and widget is not ancestor:
            if widget._shown is False:
                return False
            parent = widget.parentWidget()
            if parent is not None and not parent._childrenShownTo():
                return False
            widget = parent
        return True

    def _childrenShownTo(self) -> bool:
        return True

    def setVisible(self, visible) -> None:
        self._shown = bool(visible)

    visible = property(isVisible, setVisible)

    def setHidden(self, hidden) -> None:
        self.setVisible(not hidden)

    def show(self) -> None:
        self.setVisible(True)

    def hide(self) -> None:
        self.setVisible(False)

    def isEnabled(self) -> bool:
        parent = self.parentWidget()
        return self._enabledSelf and (parent is None or parent.isEnabled())

    def setEnabled(self, enabled) -> None:
        self._enabledSelf = bool(enabled)

    enabled = property(isEnabled, setEnabled)

    def setDisabled(self, disabled) -> None:
        self.setEnabled(not disabled)

    toolTip = _prop("toolTip", "", convert=str)
    statusTip = _prop("statusTip", "", convert=str)
    whatsThis = _prop("whatsThis", "", convert=str)
    styleSheet = _prop("styleSheet", "", convert=str)
    windowTitle = _prop("windowTitle", "", convert=str)

    def layout(self):
        return self._layout

    def setLayout(self, layout) -> None:
        if self._layout is not None:
            sys.stderr.write(f"QWidget::setLayout: {self!r} already has a layout\n")
            return
        self._layout = layout
        layout._install(self)

    def close(self) -> bool:
        self.hide()
        return True

    def resize(self, *args) -> None:
        pass

    def setSizePolicy(self, *args) -> None:
        pass

    def setFixedHeight(self, *args) -> None:
        pass

    def setFixedWidth(self, *args) -> None:
        pass

    def setFocus(self, *args) -> None:
        pass

    def update(self) -> None:
        pass


class QFrame(QWidget):
    pass


class QLabel(QFrame):
    text = _prop("text", "", convert=lambda v: "" if v is None else str(v))
    wordWrap = _prop("wordWrap", False, convert=bool)

    def __init__(self, *args):
        text = args[0] if args and isinstance(args[0], str) else ""
        parent = next((a for a in args if isinstance(a, QObject)), None)
        super().__init__(parent)
        self.text = text


class QAbstractButton(QWidget):
    clicked = Signal("bool", overloads={"": lambda owner, args: ()})
    toggled = Signal("bool")
    pressed = Signal()
    released = Signal()

    text = _prop("text", "", convert=lambda v: "" if v is None else str(v))
    icon = _prop("icon", None)
    checkable = _prop("checkable", False, convert=bool)

    def __init__(self, *args):
        text = args[0] if args and isinstance(args[0], str) else ""
        parent = next((a for a in args if isinstance(a, QObject)), None)
        super().__init__(parent)
        self._checked = False
        self.text = text

    def _get_checked(self):
        return self._checked

    def _set_checked(self, value):
        value = bool(value)
        if not self.checkable or value == self._checked:
            return
        self._checked = value
        self._checkedChanged(value)
        self.toggled.emit(value)

    def _checkedChanged(self, value) -> None:
        pass

    checked = property(_get_checked, _set_checked)

    def isChecked(self) -> bool:
        return self._checked

    def toggle(self) -> None:
        self.checked = not self._checked

    def click(self) -> None:
        """A user's click: nothing happens on a disabled button (as in Qt)."""
        if not self.isEnabled():
            return
        self.pressed.emit()
        self.released.emit()
        if self.checkable:
            self.toggle()
        self.clicked.emit(self._checked)


class QPushButton(QAbstractButton):
    pass


class QToolButton(QAbstractButton):
    pass


class QCheckBox(QAbstractButton):
    stateChanged = Signal("int")

    def __init__(self, *args):
        super().__init__(*args)
        self.checkable = True

    def _checkedChanged(self, value) -> None:
        self.stateChanged.emit(Qt.Checked if value else Qt.Unchecked)

    checkState = property(lambda self: Qt.Checked if self._checked else Qt.Unchecked,
                          lambda self, state: setattr(self, "checked", state == Qt.Checked))


class QComboBox(QWidget):
    currentIndexChanged = Signal("int", overloads={"QString": lambda owner, args: (owner.itemText(args[0]),)})
    currentTextChanged = Signal("QString")
    activated = Signal("int")
    editTextChanged = Signal("QString")

    editable = _prop("editable", False, convert=bool)
    maxVisibleItems = _prop("maxVisibleItems", 10, convert=int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._items: list[dict] = []
        self._index = -1

    # items
    count = property(lambda self: len(self._items))

    def addItem(self, *args) -> None:
        if args and isinstance(args[0], QIcon):
            args = args[1:]
        text = args[0] if args else ""
        data = args[1] if len(args) > 1 else None
        self.insertItem(len(self._items), text, data)

    def addItems(self, texts) -> None:
        for text in texts:
            self.addItem(text)

    def insertItem(self, index, text, data=None) -> None:
        index = max(0, min(int(index), len(self._items)))
        self._items.insert(index, {Qt.DisplayRole: str(text), Qt.UserRole: data})
        if self._index == -1 and len(self._items) == 1:
            self._setIndex(0)  # Qt selects the first item put into an empty combo box
        elif self._index >= index:
            self._index += 1

    def removeItem(self, index) -> None:
        if not 0 <= index < len(self._items):
            return
        del self._items[index]
        if index < self._index:
            self._index -= 1
        elif index == self._index:
            self._index = -1
            self._setIndex(min(index, len(self._items) - 1))

    def clear(self) -> None:
        self._items.clear()
        self._setIndex(-1)

    def itemText(self, index) -> str:
        return self._items[index][Qt.DisplayRole] if 0 <= index < len(self._items) else ""

    def setItemText(self, index, text) -> None:
        if 0 <= index < len(self._items):
            self._items[index][Qt.DisplayRole] = str(text)

    def itemData(self, index, role=Qt.UserRole):
        return self._items[index].get(role) if 0 <= index < len(self._items) else None

    def setItemData(self, index, value, role=Qt.UserRole) -> None:
        if 0 <= index < len(self._items):
            self._items[index][role] = value

    def findText(self, text, flags=Qt.MatchExactly | Qt.MatchCaseSensitive) -> int:
        for index, item in enumerate(self._items):
            if item[Qt.DisplayRole] == text:
                return index
        return -1

    def findData(self, data, role=Qt.UserRole, flags=None) -> int:
        for index, item in enumerate(self._items):
            if item.get(role) == data:
                return index
        return -1

    # current item
    def _setIndex(self, index) -> None:
        index = int(index)
        if not 0 <= index < len(self._items):
            index = -1
        if index == self._index:
            return
        old_text = self.currentText
        self._index = index
        self.currentIndexChanged.emit(index)
        if self.currentText != old_text:
            self.currentTextChanged.emit(self.currentText)

    currentIndex = property(lambda self: self._index, _setIndex)

    def _setCurrentText(self, text) -> None:
        index = self.findText(text)
        if index >= 0:
            self._setIndex(index)

    currentText = property(lambda self: self.itemText(self._index), _setCurrentText)
    currentData = property(lambda self: self.itemData(self._index))

    def showPopup(self) -> None:
        pass


class QProgressBar(QWidget):
    valueChanged = Signal("int")

    textVisible = _prop("textVisible", True, convert=bool)
    format = _prop("format", "%p%", convert=str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._minimum, self._maximum, self._value = 0, 100, -1

    def _set_value(self, value) -> None:
        value = int(value)
        if value == self._value:
            return
        if (value < self._minimum or value > self._maximum) and (self._minimum or self._maximum):
            return  # Qt ignores a value out of range
        self._value = value
        self.valueChanged.emit(value)

    value = property(lambda self: self._value, _set_value)
    minimum = property(lambda self: self._minimum, lambda self, v: self.setRange(v, max(v, self._maximum)))
    maximum = property(lambda self: self._maximum, lambda self, v: self.setRange(min(v, self._minimum), v))

    def setRange(self, minimum, maximum) -> None:
        self._minimum, self._maximum = int(minimum), max(int(minimum), int(maximum))
        if self._value != -1 and not self._minimum <= self._value <= self._maximum:
            self.reset()

    def reset(self) -> None:
        self._value = -1


class QLineEdit(QWidget):
    textChanged = Signal("QString")
    editingFinished = Signal()
    returnPressed = Signal()

    text = _prop("text", "", signal="textChanged", convert=lambda v: "" if v is None else str(v))
    placeholderText = _prop("placeholderText", "", convert=str)
    readOnly = _prop("readOnly", False, convert=bool)


class QTextEdit(QWidget):
    textChanged = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self._text = ""

    def _set_plain(self, text) -> None:
        text = "" if text is None else str(text)
        if text != self._text:
            self._text = text
            self.textChanged.emit()

    plainText = property(lambda self: self._text, _set_plain)
    readOnly = _prop("readOnly", False, convert=bool)

    def toPlainText(self) -> str:
        return self._text

    def setPlainText(self, text) -> None:
        self._set_plain(text)


class QListWidgetItem:
    """Not a QObject (as in Qt): data by role; a change notifies its list widget (itemChanged)."""

    def __init__(self, *args):
        self._data: dict = {}
        self._list = None
        self._flags = Qt.ItemIsSelectable | Qt.ItemIsUserCheckable | Qt.ItemIsEnabled | Qt.ItemIsDragEnabled
        text = next((a for a in args if isinstance(a, str)), "")
        self._data[Qt.DisplayRole] = text
        owner = next((a for a in args if isinstance(a, QListWidget)), None)
        if owner is not None:
            owner.addItem(self)

    def data(self, role):
        if role == Qt.EditRole:
            role = Qt.DisplayRole
        return self._data.get(role)

    def setData(self, role, value) -> None:
        if role == Qt.EditRole:
            role = Qt.DisplayRole
        if self._data.get(role) == value and role in self._data:
            return
        self._data[role] = value
        if self._list is not None:
            self._list.itemChanged.emit(self)

    def text(self) -> str:
        return self._data.get(Qt.DisplayRole) or ""

    def setText(self, text) -> None:
        self.setData(Qt.DisplayRole, str(text))

    def toolTip(self) -> str:
        return self._data.get(Qt.ToolTipRole) or ""

    def setToolTip(self, text) -> None:
        self.setData(Qt.ToolTipRole, str(text))

    def flags(self) -> int:
        return self._flags

    def setFlags(self, flags) -> None:
        self._flags = int(flags)

    def checkState(self) -> int:
        return int(self._data.get(Qt.CheckStateRole) or Qt.Unchecked)

    def setCheckState(self, state) -> None:
        self.setData(Qt.CheckStateRole, int(state))

    def listWidget(self):
        return self._list


class QListWidget(QWidget):
    itemChanged = Signal("QListWidgetItem*")
    currentRowChanged = Signal("int")
    itemClicked = Signal("QListWidgetItem*")
    itemSelectionChanged = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self._items: list[QListWidgetItem] = []
        self._row = -1

    count = property(lambda self: len(self._items))

    def addItem(self, item) -> None:
        if isinstance(item, str):
            item = QListWidgetItem(item)
        item._list = self
        self._items.append(item)

    def addItems(self, texts) -> None:
        for text in texts:
            self.addItem(text)

    def item(self, row):
        return self._items[row] if 0 <= row < len(self._items) else None

    def row(self, item) -> int:
        return self._items.index(item) if item in self._items else -1

    def takeItem(self, row):
        if not 0 <= row < len(self._items):
            return None
        item = self._items.pop(row)
        item._list = None
        return item

    def clear(self) -> None:
        for item in self._items:
            item._list = None
        self._items.clear()
        self._set_row(-1)

    def _set_row(self, row) -> None:
        row = int(row) if 0 <= int(row) < len(self._items) else -1
        if row != self._row:
            self._row = row
            self.currentRowChanged.emit(row)

    currentRow = property(lambda self: self._row, _set_row)


class _Ranged:
    """Value, minimum, maximum of sliders and spin boxes, rounded to `decimals` like QDoubleSpinBox."""

    _integer = False
    _rounds = True
    _defaults = (0.0, 99.0, 0.0, 2)  # minimum, maximum, value, decimals

    def _init_range(self) -> None:
        minimum, maximum, value, decimals = self._defaults
        self._decimals = decimals
        self._min, self._max, self._value = minimum, maximum, value
        self._p_singleStep = 1 if self._integer else 1.0
        self._p_pageStep = 10 if self._integer else 10.0

    def _round(self, value):
        if self._integer:
            return int(round(value))
        value = float(value)
        if self._rounds and math.isfinite(value):
            return round(value, self._decimals)
        return value

    def _emit_value(self, value) -> None:
        self.valueChanged.emit(value)

    def _apply(self, value) -> None:
        value = min(max(self._round(value), self._min), self._max)
        if value != self._value:
            self._value = value
            self._emit_value(value)

    value = property(lambda self: self._value, _apply)

    def _set_min(self, value) -> None:
        self._min = self._round(value)
        self._max = max(self._max, self._min)
        self._apply(self._value)

    def _set_max(self, value) -> None:
        self._max = self._round(value)
        self._min = min(self._min, self._max)
        self._apply(self._value)

    minimum = property(lambda self: self._min, _set_min)
    maximum = property(lambda self: self._max, _set_max)

    def setRange(self, minimum, maximum) -> None:
        self._min = self._round(minimum)
        self._max = max(self._min, self._round(maximum))
        self._apply(self._value)

    def _set_decimals(self, decimals) -> None:
        self._decimals = int(decimals)
        self.setRange(self._min, self._max)

    decimals = property(lambda self: self._decimals, _set_decimals)
    singleStep = _prop("singleStep", 1.0)
    pageStep = _prop("pageStep", 10.0)


class QSlider(_Ranged, QWidget):
    valueChanged = Signal("int")
    sliderMoved = Signal("int")
    _integer = True
    _defaults = (0, 99, 0, 0)
    decimals = None  # not a property of QSlider
    orientation = _prop("orientation", Qt.Horizontal)
    tracking = _prop("tracking", True, convert=bool)

    def __init__(self, *args):
        QWidget.__init__(self, next((a for a in args if isinstance(a, QObject)), None))
        self._init_range()


class QSpinBox(_Ranged, QWidget):
    valueChanged = Signal("int", overloads={"QString": lambda owner, args: (str(args[0]),)})
    _integer = True
    _defaults = (0, 99, 0, 0)
    decimals = None
    prefix = _prop("prefix", "", convert=str)
    suffix = _prop("suffix", "", convert=str)

    def __init__(self, parent=None):
        QWidget.__init__(self, parent)
        self._init_range()


class QDoubleSpinBox(_Ranged, QWidget):
    valueChanged = Signal("double", overloads={"QString": lambda owner, args: (str(args[0]),)})
    _defaults = (0.0, 99.99, 0.0, 2)
    prefix = _prop("prefix", "", convert=str)
    suffix = _prop("suffix", "", convert=str)

    def __init__(self, parent=None):
        QWidget.__init__(self, parent)
        self._init_range()


class QMessageBox(QWidget):
    NoButton, Ok, Save, Open, Yes, No, Abort, Retry, Ignore, Close, Cancel = (
        0, 0x400, 0x800, 0x2000, 0x4000, 0x10000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000)
    NoIcon, Information, Warning, Critical, Question = 0, 1, 2, 3, 4
    AcceptRole, RejectRole = 0, 1

    text = _prop("text", "", convert=str)
    informativeText = _prop("informativeText", "", convert=str)
    detailedText = _prop("detailedText", "", convert=str)
    icon = _prop("icon", 0)
    standardButtons = _prop("standardButtons", 0)

    def exec_(self) -> int:
        return _dialog(self)

    exec = exec_

    def accept(self) -> None:
        self.hide()

    def reject(self) -> None:
        self.hide()

    @staticmethod
    def _static(icon, parent, title, text, buttons=None, *args) -> int:
        box = QMessageBox(parent)
        box.windowTitle, box.text, box.icon = title, text, icon
        box.standardButtons = buttons if buttons is not None else QMessageBox.Ok
        return box.exec_()

    @staticmethod
    def information(parent, title, text, *args):
        return QMessageBox._static(QMessageBox.Information, parent, title, text, *args)

    @staticmethod
    def warning(parent, title, text, *args):
        return QMessageBox._static(QMessageBox.Warning, parent, title, text, *args)

    @staticmethod
    def critical(parent, title, text, *args):
        return QMessageBox._static(QMessageBox.Critical, parent, title, text, *args)

    @staticmethod
    def question(parent, title, text, *args):
        return QMessageBox._static(QMessageBox.Question, parent, title, text, *args)


class QDialog(QWidget):
    Rejected, Accepted = 0, 1

    def exec_(self) -> int:
        return _dialog(self)

    exec = exec_

    def accept(self) -> None:
        self.hide()

    def reject(self) -> None:
        self.hide()


def _dialog(box) -> int:
    """A modal dialog: no user here, so the harness answers with Harness.dialog_reply."""
    if _ACTIVE is None:
        raise RuntimeError("a modal dialog was opened with no harness installed")
    _ACTIVE.dialogs.append(box)
    reply = _ACTIVE.dialog_reply
    return reply(box) if callable(reply) else reply


class QFileDialog(QDialog):
    @staticmethod
    def _reply(kind, args):
        if _ACTIVE is None:
            raise RuntimeError("a file dialog was opened with no harness installed")
        _ACTIVE.dialogs.append((kind, args))
        return _ACTIVE.file_dialog_replies.pop(0) if _ACTIVE.file_dialog_replies else ""

    @staticmethod
    def getExistingDirectory(*args):
        return QFileDialog._reply("getExistingDirectory", args)

    @staticmethod
    def getOpenFileName(*args):
        return QFileDialog._reply("getOpenFileName", args)

    @staticmethod
    def getSaveFileName(*args):
        return QFileDialog._reply("getSaveFileName", args)

    @staticmethod
    def getOpenFileNames(*args):
        reply = QFileDialog._reply("getOpenFileNames", args)
        return list(reply) if reply else []


class _SingleShot:
    """QTimer.singleShot is both a static function and a property (as in PythonQt)."""

    def __get__(self, obj, objtype=None):
        if obj is None:
            return QTimer._static_single_shot
        return obj._singleShot

    def __set__(self, obj, value):
        obj._singleShot = bool(value)


class QTimer(QObject):
    """Never fires by itself: tests fire active timers with Harness.fire_timers()."""

    timeout = Signal()
    singleShot = _SingleShot()
    interval = _prop("interval", 0, convert=int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._singleShot = False
        self._active = False
        if _ACTIVE is not None:
            _ACTIVE.timers.append(self)

    def setSingleShot(self, value) -> None:
        self._singleShot = bool(value)

    def isSingleShot(self) -> bool:
        return self._singleShot

    def start(self, msec=None) -> None:
        if msec is not None:
            self.interval = msec
        self._active = True

    def stop(self) -> None:
        self._active = False

    def isActive(self) -> bool:
        return self._active

    active = property(isActive)

    @staticmethod
    def _static_single_shot(msec, slot) -> None:
        if _ACTIVE is None:
            raise RuntimeError("QTimer.singleShot with no harness installed")
        _ACTIVE.pending_calls.append(slot)


class QSettings(QObject):
    """The application's settings, kept in memory for the harness's lifetime."""

    IniFormat, NativeFormat = 1, 0

    def __init__(self, *args):
        super().__init__(None)
        if _ACTIVE is None:
            raise RuntimeError("QSettings with no harness installed")
        key = str(args[0]) if args and isinstance(args[0], str) else ""
        self._store = _ACTIVE.settings.setdefault(key, {})
        self._groups: list[str] = []

    def _key(self, key) -> str:
        return "/".join(self._groups + [str(key)])

    def value(self, key, default=None, type=None):
        value = self._store.get(self._key(key), default)
        return type(value) if type is not None and value is not None else value

    def setValue(self, key, value) -> None:
        self._store[self._key(key)] = value

    def contains(self, key) -> bool:
        return self._key(key) in self._store

    def remove(self, key) -> None:
        prefix = self._key(key)
        for existing in [k for k in self._store if k == prefix or k.startswith(prefix + "/")]:
            del self._store[existing]

    def allKeys(self) -> list:
        prefix = "/".join(self._groups)
        return [k[len(prefix) + 1:] if prefix else k for k in self._store if not prefix or k.startswith(prefix + "/")]

    def beginGroup(self, group) -> None:
        self._groups.append(str(group))

    def endGroup(self) -> None:
        if self._groups:
            self._groups.pop()

    def sync(self) -> None:
        pass


class QFile(QObject):
    ReadOnly, WriteOnly, ReadWrite, Text = 1, 2, 3, 16

    def __init__(self, path="", parent=None):
        super().__init__(parent)
        self._path = str(path)
        self._mode = 0

    def fileName(self) -> str:
        return self._path

    def exists(self) -> bool:
        return Path(self._path).is_file()

    def open(self, mode) -> bool:
        if mode & QFile.ReadOnly and not self.exists():
            return False
        self._mode = int(mode)
        return True

    def isOpen(self) -> bool:
        return bool(self._mode)

    def readAll(self) -> bytes:
        if not self._mode & QFile.ReadOnly:
            raise RuntimeError(f"QFile::read: {self._path} is not open for reading")
        return Path(self._path).read_bytes()

    def close(self) -> None:
        self._mode = 0


class QIcon:
    def __init__(self, path=""):
        self._path = str(path) if isinstance(path, (str, os.PathLike)) else ""

    def isNull(self) -> bool:
        return not self._path or not Path(self._path).is_file()

    def __repr__(self):
        return f"QIcon({self._path!r})"


QPixmap = QIcon


class QColor:
    HexRgb, HexArgb = 0, 1

    def __init__(self, *args):
        self._rgba = None  # invalid colour
        if len(args) == 1 and isinstance(args[0], QColor):
            self._rgba = args[0]._rgba
        elif len(args) == 1 and isinstance(args[0], str):
            self.setNamedColor(args[0])
        elif len(args) in (3, 4):
            self._rgba = tuple(int(a) for a in args) + ((255,) if len(args) == 3 else ())

    def setNamedColor(self, name: str) -> None:
        digits = name.lstrip("#")
        if len(digits) == 6:
            self._rgba = (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16), 255)
        elif len(digits) == 8:
            self._rgba = (int(digits[2:4], 16), int(digits[4:6], 16), int(digits[6:8], 16), int(digits[0:2], 16))
        else:
            self._rgba = None

    def isValid(self) -> bool:
        return self._rgba is not None

    def name(self, format=0) -> str:
        r, g, b, a = self._rgba or (0, 0, 0, 255)
        return f"#{a:02x}{r:02x}{g:02x}{b:02x}" if format == QColor.HexArgb else f"#{r:02x}{g:02x}{b:02x}"

    def red(self):
        return (self._rgba or (0, 0, 0, 0))[0]

    def green(self):
        return (self._rgba or (0, 0, 0, 0))[1]

    def blue(self):
        return (self._rgba or (0, 0, 0, 0))[2]

    def alpha(self):
        return (self._rgba or (0, 0, 0, 255))[3]

    def __eq__(self, other):
        return isinstance(other, QColor) and other._rgba == self._rgba

    def __repr__(self):
        return f"QColor({self.name(1) if self.isValid() else 'invalid'})"


class QSizePolicy:
    Fixed, Minimum, Maximum, Preferred, Expanding, MinimumExpanding, Ignored = 0, 1, 4, 5, 7, 3, 13

    def __init__(self, *args):
        pass


class QEventLoop:
    AllEvents, ExcludeUserInputEvents = 0, 1


class QApplication:
    """Static members that Slicer's Python calls on Qt's application class."""

    @staticmethod
    def setOverrideCursor(cursor) -> None:
        _ACTIVE.app.setOverrideCursor(cursor)

    @staticmethod
    def restoreOverrideCursor() -> None:
        _ACTIVE.app.restoreOverrideCursor()

    @staticmethod
    def processEvents(*args) -> None:
        _ACTIVE.app.processEvents()

    @staticmethod
    def instance():
        return _ACTIVE.app


class QUiLoader(QObject):
    """Builds the widget tree of a .ui file as Qt's QFormBuilder does, from the stand-in classes."""

    def load(self, device, parentWidget=None):
        data = device.readAll() if hasattr(device, "readAll") else Path(str(device)).read_bytes()
        root = ET.fromstring(data)
        element = root.find("widget")
        if element is None:
            return None
        widget = self._widget(element, parentWidget)
        self._connections(root, widget)
        return widget

    @staticmethod
    def _class(name: str):
        cls = _WIDGET_CLASSES.get(name)
        if cls is None:
            raise RuntimeError(f"QUiLoader stand-in: no stand-in for the widget class {name!r} "
                               "(add one to Testing/slicer/slicer_harness.py)")
        return cls

    def _widget(self, element, parent):
        widget = self._class(element.get("class"))(parent)
        widget.objectName = element.get("name", "")
        current_index = None
        for prop in element.findall("property"):
            if prop.get("name") == "currentIndex":
                current_index = _ui_value(prop)
                continue
            widget.setProperty(prop.get("name"), _ui_value(prop))
        for child in element:
            if child.tag == "widget":
                self._widget(child, widget)
            elif child.tag == "layout":
                self._layout(child, widget)
        for item in element.findall("item"):  # QComboBox / QListWidget items (loadExtraInfo)
            texts = {p.get("name"): _ui_value(p) for p in item.findall("property")}
            text = texts.get("text", "")
            if isinstance(widget, QComboBox):
                widget.addItem(text)
            elif isinstance(widget, QListWidget):
                widget.addItem(QListWidgetItem(text))
        if current_index is not None:
            widget.setProperty("currentIndex", current_index)
        return widget

    def _layout(self, element, owner):
        layout = self._class(element.get("class"))()
        layout.objectName = element.get("name", "")
        if isinstance(owner, QWidget):
            owner.setLayout(layout)
        for prop in element.findall("property"):
            layout.setProperty(prop.get("name"), _ui_value(prop))
        for item in element.findall("item"):
            for child in item:
                if child.tag == "widget":
                    layout.addWidget(self._widget(child, layout.parentWidget()))
                elif child.tag == "layout":
                    sub = self._layout(child, None)
                    layout.addLayout(sub)
                elif child.tag == "spacer":
                    layout.addItem(QSpacerItem())
        return layout

    @staticmethod
    def _connections(root, widget) -> None:
        objects = {widget.objectName: widget}
        for child in widget.findChildren(QObject):
            objects.setdefault(child.objectName, child)
        for connection in root.iter("connection"):
            sender = objects[connection.findtext("sender")]
            receiver = objects[connection.findtext("receiver")]
            slot_name, _ = _parse_signature(connection.findtext("slot"))
            sender.connect(connection.findtext("signal"), getattr(receiver, slot_name))


def _ui_value(prop):
    value = next(iter(prop), None)
    if value is None:
        return None
    tag, text = value.tag, value.text or ""
    if tag in ("string", "cstring", "enum", "set"):
        return text
    if tag == "bool":
        return text.strip() == "true"
    if tag == "number":
        return int(text)
    if tag == "double":
        return float(text)
    if tag == "stringlist":
        return [s.text or "" for s in value.findall("string")]
    if tag in ("size", "rect"):
        return {child.tag: int(child.text) for child in value}
    if tag == "color":
        return QColor(*(int(value.findtext(c)) for c in ("red", "green", "blue")))
    if tag == "iconset":
        return QIcon(text.strip())
    return text


# ---------------------------------------------------------------------------------------------
# CTK


class ctkCollapsibleButton(QAbstractButton):
    """A collapsed button hides its contents."""

    contentsCollapsed = Signal("bool")
    collapsedHeight = _prop("collapsedHeight", 14, convert=int)

    def __init__(self, *args):
        super().__init__(*args)
        self.checkable = True
        self._checked = True

    def _checkedChanged(self, value) -> None:
        self.contentsCollapsed.emit(not value)

    collapsed = property(lambda self: not self._checked, lambda self, value: setattr(self, "checked", not value))

    def _contentsVisible(self) -> bool:
        return self.isVisible() and not self.collapsed

    def _childrenShownTo(self) -> bool:
        return not self.collapsed


class ctkSliderWidget(_Ranged, QWidget):
    valueChanged = Signal("double")
    valueIsChanging = Signal("double")
    _defaults = (0.0, 99.0, 0.0, 2)
    tracking = _prop("tracking", True, convert=bool)
    prefix = _prop("prefix", "", convert=str)
    suffix = _prop("suffix", "", convert=str)
    spinBoxVisible = _prop("spinBoxVisible", True, convert=bool)

    def __init__(self, parent=None):
        QWidget.__init__(self, parent)
        self._init_range()


class ctkDoubleSlider(_Ranged, QWidget):
    valueChanged = Signal("double")
    valueIsChanging = Signal("double")
    _rounds = False
    decimals = None
    orientation = _prop("orientation", Qt.Horizontal)
    tracking = _prop("tracking", True, convert=bool)

    def __init__(self, *args):
        QWidget.__init__(self, next((a for a in args if isinstance(a, QObject)), None))
        self._init_range()


class ctkDoubleSpinBox(_Ranged, QWidget):
    valueChanged = Signal("double", overloads={"QString": lambda owner, args: (str(args[0]),)})
    _defaults = (0.0, 99.99, 0.0, 2)
    prefix = _prop("prefix", "", convert=str)
    suffix = _prop("suffix", "", convert=str)

    def __init__(self, parent=None):
        QWidget.__init__(self, parent)
        self._init_range()


class ctkRangeWidget(QWidget):
    valuesChanged = Signal("double", "double")
    minimumValueChanged = Signal("double")
    maximumValueChanged = Signal("double")
    singleStep = _prop("singleStep", 1.0)

    _rounds = True

    def __init__(self, parent=None):
        super().__init__(parent)
        self._min, self._max, self._lo, self._hi, self._decimals = 0.0, 99.0, 0.0, 99.0, 2

    def _round(self, value) -> float:
        value = float(value)
        return round(value, self._decimals) if self._rounds and math.isfinite(value) else value

    def setValues(self, low, high) -> None:
        low, high = sorted((self._round(low), self._round(high)))
        low, high = min(max(low, self._min), self._max), min(max(high, self._min), self._max)
        changed_low, changed_high = low != self._lo, high != self._hi
        self._lo, self._hi = low, high
        if changed_low:
            self.minimumValueChanged.emit(low)
        if changed_high:
            self.maximumValueChanged.emit(high)
        if changed_low or changed_high:
            self.valuesChanged.emit(low, high)

    def setRange(self, minimum, maximum) -> None:
        self._min = self._round(minimum)
        self._max = max(self._min, self._round(maximum))
        self.setValues(self._lo, self._hi)

    minimumValue = property(lambda self: self._lo, lambda self, v: self.setValues(v, max(v, self._hi)))
    maximumValue = property(lambda self: self._hi, lambda self, v: self.setValues(min(v, self._lo), v))
    minimum = property(lambda self: self._min, lambda self, v: self.setRange(v, max(v, self._max)))
    maximum = property(lambda self: self._max, lambda self, v: self.setRange(min(v, self._min), v))

    def _set_decimals(self, decimals) -> None:
        self._decimals = int(decimals)
        self.setRange(self._min, self._max)

    decimals = property(lambda self: self._decimals, _set_decimals)


class ctkDoubleRangeSlider(ctkRangeWidget):
    _rounds = False


class ctkDirectoryButton(QWidget):
    directoryChanged = Signal("QString")
    directorySelected = Signal("QString")

    directory = _prop("directory", "", signal="directoryChanged", convert=lambda v: str(v or ""))
    caption = _prop("caption", "", convert=str)
    acceptMode = _prop("acceptMode", 0)


class ctkPathLineEdit(QWidget):
    currentPathChanged = Signal("QString")
    validInputChanged = Signal("bool")

    currentPath = _prop("currentPath", "", signal="currentPathChanged", convert=lambda v: str(v or ""))
    filters = _prop("filters", 0)
    nameFilters = _prop("nameFilters", [])
    label = _prop("label", "", convert=str)
    settingKey = _prop("settingKey", "", convert=str)


class ctkComboBox(QComboBox):
    defaultText = _prop("defaultText", "", convert=str)
    forceDefault = _prop("forceDefault", False, convert=bool)


class ctkCheckBox(QCheckBox):
    pass


class ctkCheckablePushButton(QPushButton):
    checkBoxToggled = Signal("bool")
    checkStateChanged = Signal("Qt::CheckState")
    checkBoxControlsButtonToggleState = _prop("checkBoxControlsButtonToggleState", False, convert=bool)
    checkState = _prop("checkState", Qt.Unchecked, signal="checkStateChanged")


class ctkColorPickerButton(QPushButton):
    colorChanged = Signal("QColor")
    color = _prop("color", None, signal="colorChanged")
    displayColorName = _prop("displayColorName", True, convert=bool)


class ctkMessageBox(QMessageBox):
    dontShowAgainSettingsKey = _prop("dontShowAgainSettingsKey", "", convert=str)
    dontShowAgainVisible = _prop("dontShowAgainVisible", False, convert=bool)


# ---------------------------------------------------------------------------------------------
# Slicer (qMRML / qSlicer classes and the application)


class qMRMLWidget(QWidget):
    mrmlSceneChanged = Signal("vtkMRMLScene*")

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None

    def setMRMLScene(self, scene) -> None:
        if scene is self._scene:
            return
        self._scene = scene
        self.mrmlSceneChanged.emit(scene)

    def mrmlScene(self):
        return self._scene


class qSlicerWidget(qMRMLWidget):
    pass


class qSlicerScriptedLoadableModuleWidget(qSlicerWidget):
    """The panel that holds a scripted module's widget; isEntered as Slicer sets it."""

    isEntered = property(lambda self: getattr(self, "_entered", False))


class _SceneWidget(QWidget):
    """A widget with setMRMLScene (qMRML widgets that are not qMRMLWidgets in Slicer)."""

    mrmlSceneChanged = Signal("vtkMRMLScene*")

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None

    def setMRMLScene(self, scene) -> None:
        if scene is self._scene:
            return
        self._scene = scene
        self.mrmlSceneChanged.emit(scene)

    def mrmlScene(self):
        return self._scene


class qMRMLNodeComboBox(QWidget):
    """The scene's nodes of the chosen types, as Slicer's combo box lists and selects them.

    Listed: nodes whose class is one of nodeTypes (or a subclass, with showChildNodeTypes), not of
    hideChildNodeTypes, not hidden from editors (unless showHidden), matching addAttribute filters;
    in scene order. Disabled until a scene is set. Like QComboBox, the first node added to an empty
    list (no None item, no action items) becomes current; when the current node leaves the list,
    the None item, or else a neighbouring node, becomes current.
    """

    currentNodeChanged = Signal("vtkMRMLNode*", overloads={"bool": lambda owner, args: (args[0] is not None,)})
    currentNodeIDChanged = Signal("QString")
    nodeAdded = Signal("vtkMRMLNode*")
    nodeAboutToBeRemoved = Signal("vtkMRMLNode*")
    nodeActivated = Signal("vtkMRMLNode*")
    nodeAddedByUser = Signal("vtkMRMLNode*")

    showHidden = _prop("showHidden", False, convert=bool)
    addEnabled = _prop("addEnabled", True, convert=bool)
    removeEnabled = _prop("removeEnabled", True, convert=bool)
    editEnabled = _prop("editEnabled", False, convert=bool)
    renameEnabled = _prop("renameEnabled", False, convert=bool)
    selectNodeUponCreation = _prop("selectNodeUponCreation", True, convert=bool)
    noneDisplay = _prop("noneDisplay", "None", convert=str)
    baseName = _prop("baseName", "", convert=str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None
        self._tags: list[int] = []
        self._current = None
        self._requested = None
        self._nodeTypes: list[str] = []
        self._hideChildNodeTypes: list[str] = []
        self._showChildNodeTypes = True
        self._noneEnabled = False
        self._attributes: list[tuple] = []
        self._listedIDs: list[str] = []
        self.setEnabled(False)

    # filters
    def _set_types(self, types_) -> None:
        self._nodeTypes = [t for t in (types_ or []) if t]
        self._refresh()

    nodeTypes = property(lambda self: list(self._nodeTypes), _set_types)
    hideChildNodeTypes = property(lambda self: list(self._hideChildNodeTypes),
                                  lambda self, v: (setattr(self, "_hideChildNodeTypes", list(v or [])), self._refresh()))
    showChildNodeTypes = property(lambda self: self._showChildNodeTypes,
                                  lambda self, v: (setattr(self, "_showChildNodeTypes", bool(v)), self._refresh()))

    def _set_none(self, value) -> None:
        self._noneEnabled = bool(value)
        self._refresh()

    noneEnabled = property(lambda self: self._noneEnabled, _set_none)

    def addAttribute(self, nodeType, attributeName, attributeValue=None) -> None:
        self._attributes.append((nodeType, attributeName, attributeValue))
        self._refresh()

    def _accepts(self, node) -> bool:
        name = node.GetClassName()
        if self._showChildNodeTypes:
            if not any(node.IsA(t) for t in self._nodeTypes):
                return False
        elif name not in self._nodeTypes:
            return False
        if any(node.IsA(t) for t in self._hideChildNodeTypes):
            return False
        if node.GetHideFromEditors() and not self.showHidden:
            return False
        for node_type, attribute, value in self._attributes:
            if node.IsA(node_type):
                actual = node.GetAttribute(attribute)
                if actual is None or (value is not None and str(actual) != str(value)):
                    return False
        return True

    def nodes(self) -> list:
        if self._scene is None:
            return []
        found = []
        for index in range(self._scene.GetNumberOfNodes()):
            node = self._scene.GetNthNode(index)
            if node is not None and self._accepts(node):
                found.append(node)
        return found

    def nodeCount(self) -> int:
        return len(self.nodes())

    def nodeFromIndex(self, index):
        nodes = self.nodes()
        return nodes[index] if 0 <= index < len(nodes) else None

    # scene
    def setMRMLScene(self, scene) -> None:
        if scene is self._scene:
            return
        if self._scene is not None:
            for tag in self._tags:
                self._scene.RemoveObserver(tag)
        self._tags = []
        self._scene = scene
        self._current = None if scene is None or self._current is None else self._current
        if scene is not None:
            import slicer

            events = slicer.vtkMRMLScene
            self._tags = [scene.AddObserver(events.NodeAddedEvent, self._onNodeAdded),
                          scene.AddObserver(events.NodeRemovedEvent, self._onNodeRemoved)]
            for event in (events.EndBatchProcessEvent, events.EndCloseEvent, events.EndImportEvent):
                self._tags.append(scene.AddObserver(event, self._onBatchEnded))
            if _ACTIVE is not None:  # removed by uninstall(): no call into a dead stand-in later
                _ACTIVE.scene_observers.extend((scene, tag) for tag in self._tags)
        self._listedIDs = [n.GetID() for n in self.nodes()]
        requested, self._requested = self._requested, None
        self._setCurrent(requested if requested is not None and self._accepts(requested) and self._inScene(requested)
                         else None)
        self.setEnabled(scene is not None)

    def mrmlScene(self):
        return self._scene

    def _inScene(self, node) -> bool:
        return self._scene is not None and node.GetID() is not None and self._scene.GetNodeByID(node.GetID()) is node

    # The scene model follows single additions and removals as rows inserted or removed, and
    # re-reads the scene at the end of a batch (no rows inserted then: nothing is auto-selected).
    def _onNodeAdded(self, caller, event) -> None:
        if not self._scene.IsBatchProcessing():
            self._refresh(added=True)

    def _onNodeRemoved(self, caller, event) -> None:
        if not self._scene.IsBatchProcessing():
            self._refresh()

    def _onBatchEnded(self, caller, event) -> None:
        self._refresh()

    def _refresh(self, added: bool = False) -> None:
        nodes = self.nodes()
        ids = [n.GetID() for n in nodes]
        previous, self._listedIDs = self._listedIDs, ids
        current = self._current
        if current is not None and (not self._inScene(current) or current.GetID() not in ids):
            if self._noneEnabled or not ids:
                self._setCurrent(None)
            else:
                old_row = previous.index(current.GetID()) if current.GetID() in previous else 0
                self._setCurrent(nodes[min(old_row, len(nodes) - 1)])
            return
        action_items = self.addEnabled or self.removeEnabled or self.editEnabled or self.renameEnabled
        if added and current is None and not previous and ids and not self._noneEnabled and not action_items:
            self._setCurrent(nodes[0])  # QComboBox: rows put into an empty combo box select the first

    # current node
    def _setCurrent(self, node) -> None:
        old = self._current
        if node is old or (node is not None and old is not None and node.GetID() == old.GetID()):
            return
        self._current = node
        self.currentNodeChanged.emit(node)
        self.currentNodeIDChanged.emit(node.GetID() if node is not None else "")

    def currentNode(self):
        return self._current

    def setCurrentNode(self, node) -> None:
        if isinstance(node, str):
            self.setCurrentNodeID(node)
            return
        if self._scene is None:
            self._requested = node
            return
        self._setCurrent(node if node is not None and self._inScene(node) and self._accepts(node) else None)

    def setCurrentNodeID(self, nodeID) -> None:
        node = self._scene.GetNodeByID(nodeID) if self._scene is not None and nodeID else None
        self.setCurrentNode(node)

    currentNodeID = property(lambda self: self._current.GetID() if self._current is not None else "",
                             setCurrentNodeID)

    def setCurrentNodeIndex(self, index) -> None:
        self.setCurrentNode(self.nodeFromIndex(index))

    def addNode(self, nodeType=None):
        nodeType = nodeType or (self._nodeTypes[0] if self._nodeTypes else None)
        if self._scene is None or nodeType not in self._nodeTypes:
            return None
        node = self._scene.AddNewNodeByClass(nodeType, self.baseName or "")
        if self.selectNodeUponCreation:
            self.setCurrentNode(node)
        self.nodeAddedByUser.emit(node)
        return node

    def removeCurrentNode(self) -> None:
        if self._scene is not None and self._current is not None:
            self._scene.RemoveNode(self._current)


class qMRMLSliderWidget(ctkSliderWidget):
    quantity = _prop("quantity", "", convert=str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None

    def setMRMLScene(self, scene) -> None:
        self._scene = scene

    def mrmlScene(self):
        return self._scene


class qMRMLSpinBox(ctkDoubleSpinBox):
    quantity = _prop("quantity", "", convert=str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None

    def setMRMLScene(self, scene) -> None:
        self._scene = scene

    def mrmlScene(self):
        return self._scene


class qMRMLRangeWidget(ctkRangeWidget):
    quantity = _prop("quantity", "", convert=str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None

    def setMRMLScene(self, scene) -> None:
        self._scene = scene

    def mrmlScene(self):
        return self._scene


class qMRMLSubjectHierarchyTreeView(_SceneWidget):
    currentItemChanged = Signal("vtkIdType")

    def __init__(self, parent=None):
        super().__init__(parent)
        self._item = 0

    def currentItem(self) -> int:
        return self._item

    def setCurrentItem(self, item) -> None:
        if item != self._item:
            self._item = item
            self.currentItemChanged.emit(item)


class qMRMLSubjectHierarchyComboBox(qMRMLSubjectHierarchyTreeView):
    pass


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
_WIDGET_CLASSES = {cls.__name__: cls for cls in _QT_CLASSES + _CTK_CLASSES + _SLICER_CLASSES}
_WIDGET_CLASSES["QPixmap"] = QIcon


def _stand_in_module(name: str, classes, extra: dict | None = None) -> types.ModuleType:
    module = types.ModuleType(name, f"Stand-in for Slicer's `{name}` (Testing/slicer/slicer_harness.py).")
    for cls in classes:
        setattr(module, cls.__name__, cls)
    for key, value in (extra or {}).items():
        setattr(module, key, value)

    def __getattr__(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise AttributeError(f"the harness has no stand-in for {name}.{attr} (add one to "
                             "Testing/slicer/slicer_harness.py)")

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
        self.app = None
        self._installed = False

    # -- installing

    def install(self) -> "Harness":
        global _ACTIVE
        reason = slicer_python_reason(self.root)
        if reason:
            raise RuntimeError(reason)
        if _ACTIVE is not None:
            raise RuntimeError("a Slicer harness is already installed")
        import slicer

        self._slicer = slicer
        self._saved_dict = dict(slicer.__dict__)
        self._saved_modules = {name: module for name, module in sys.modules.items() if self._managed(name)}
        self._saved_sys_path = list(sys.path)
        self._saved_bytecode = sys.dont_write_bytecode
        _ACTIVE = self
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
        global _ACTIVE
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
        _ACTIVE = None
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
