"""Stand-ins for Slicer's qMRML and qSlicer widgets (part of the Slicer harness, slicer_harness.py).

Widgets that hold a scene (setMRMLScene/mrmlScene). qMRMLNodeComboBox lists the scene's nodes as
Slicer's does (node types, child types, hidden nodes, attribute filters; the selection kept, dropped
or moved when nodes come and go), following the real vtkMRMLScene's events; its scene observers are
handed to the installed harness, which removes them on uninstall(). The value widgets are the CTK
stand-ins of harness_ctk.py with a `quantity`.
"""

from __future__ import annotations

import harness_qt
from harness_ctk import ctkDoubleSpinBox, ctkRangeWidget, ctkSliderWidget
from harness_qt import QWidget, Signal, _prop


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
    """The panel that holds a scripted module's widget; isEntered as Slicer sets it.

    As Slicer's: it instantiates the module's <name>Widget class from the loaded module file (given the
    panel as parent), self() is that Python widget; reload(), which slicer.util.reloadScriptedModule
    calls after executing the file again, makes and sets up a new one from the new file (entered again
    when the panel is shown)."""

    isEntered = property(lambda self: getattr(self, "_entered", False))

    def instantiate(self, module_name: str):
        import sys

        import slicer

        self._module_name = module_name
        self._self = getattr(sys.modules[module_name], f"{module_name}Widget")(self)
        setattr(slicer.modules, f"{module_name}Widget", self._self)
        return self._self

    def self(self):
        return getattr(self, "_self", None)

    def reload(self) -> None:
        widget = self.instantiate(self._module_name)
        widget.setup()
        if self.isEntered:
            widget.enter()


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
            if harness_qt._ACTIVE is not None:  # removed by uninstall(): no call into a dead stand-in later
                harness_qt._ACTIVE.scene_observers.extend((scene, tag) for tag in self._tags)
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
