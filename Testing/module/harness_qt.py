"""Stand-ins for Qt as PythonQt shows it to Python: signals and properties, QObject, layouts, widgets,
dialogs, timers, settings, files, colours and QUiLoader (part of the Slicer harness, slicer_harness.py).

They model the Qt behaviour that the module and Slicer's Python rely on:
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
- value widgets rounding to `decimals` and clamping to their range like QDoubleSpinBox/ctk (_Ranged).
A user's answer to a dialog is scripted: Harness.dialog_reply and Harness.file_dialog_replies
(dialogs shown are kept in Harness.dialogs). Timers never fire by themselves (Harness.fire_timers()).

_ACTIVE is the installed Harness (set by Harness.install(), None otherwise): dialogs, timers,
settings and slot errors reach it here, and the other stand-in modules read it as
`harness_qt._ACTIVE`. QUiLoader builds the classes named in _WIDGET_CLASSES, which slicer_harness
fills with every stand-in class (Qt, CTK, qMRML). The names with a leading underscore are shared
with harness_ctk, harness_qmrml, harness_app and slicer_harness only, not with tests.
"""

from __future__ import annotations

import inspect
import math
import os
import sys
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from slicer_harness import Harness

_ACTIVE: "Harness | None" = None  # the installed harness (errors, settings, dialogs, timers)
_WIDGET_CLASSES: dict = {}  # .ui class name -> stand-in class, for QUiLoader (filled by slicer_harness)


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

    def itemAt(self, index):
        return self._items[index] if 0 <= index < len(self._items) else None

    def removeItem(self, item) -> None:
        if item in self._items:
            self._items.remove(item)

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
                               "(add one to Testing/module/harness_qt.py, harness_ctk.py or harness_qmrml.py and to "
                               "its module's list in slicer_harness.py)")
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
