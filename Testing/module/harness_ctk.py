"""Stand-ins for the CTK widgets of Slicer's panels (part of the Slicer harness, slicer_harness.py).

Built on the Qt stand-ins of harness_qt.py, with the same rules: Qt properties as attributes that
emit their signal when they change; value widgets round to `decimals` and clamp to their range as
ctk's do (_Ranged); a collapsed ctkCollapsibleButton hides its contents from the user.
"""

from __future__ import annotations

import math

from harness_qt import (QAbstractButton, QCheckBox, QComboBox, QMessageBox, QObject, QPushButton, Qt, QWidget,
                        Signal, _prop, _Ranged)


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
