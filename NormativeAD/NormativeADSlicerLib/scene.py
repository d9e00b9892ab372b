"""Everything NormativeAD does to an MRML scene: results as nodes, their display, thresholding, the table.

Works inside 3D Slicer and against the pip package slicer-core alike: it uses only MRML classes,
storage nodes and vtk, never slicer.app, slicer.modules, slicer.mrmlScene or Qt. Every function takes
the scene it works on.

Arrays crossing this boundary are in (z, y, x) order (slicer.util.arrayFromVolume's order);
spacings are in mm and in (x, y, z) order, as the library expects them.

Lifecycle of one run's outputs (a "result"): the process runner leaves a folder of files;
load_result() turns it into nodes (pseudo-healthy volume, heatmap, segmentation, a table row) tied
together by node references on the heatmap node; set_threshold() re-segments from the heatmap;
export_result() writes them back out. A later run of the same model on the same input replaces
the previous result's nodes unless the user edited them, in which case the new nodes get a new
version suffix and the edited ones are kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer
import vtk

from NormativeADLib.core.options import (DEFAULT_OPACITY, DEFAULT_POLICY, DISPLAY_FLOOR, IMAGE_OUTPUTS,
                                        STUDY_OUTPUTS, study_image_names)

from .nodes import (ATTR, ensure_segmentation_support, ijk_to_ras, mark_unedited, mask_array, read_volume_array,
                    same_grid, set_segment_array, volume_like, was_edited)

ROLE = ATTR + "Role"
HEATMAP_COLOR_NAME = "NormativeADHeat"
SEGMENT_ID = "anomaly"
SEGMENT_COLOR = (1.0, 0.9, 0.1)
# Standard codes for the anomaly segment (Slicer's serialized terminology entry: context~category~type~
# type modifier~anatomic context~region~region modifier, each code scheme^value^meaning): Slicer shows
# them in the segment list and writes them into DICOM SEG, .seg.nrrd and the scene. SNOMED CT: category
# 49755003 Morphologically altered structure, type 52988006 Lesion (DICOM CID 7159), region 12738006 Brain.
SEGMENT_TERMINOLOGY = ("Segmentation category and type - DICOM master list"
                       "~SCT^49755003^Morphologically Altered Structure~SCT^52988006^Lesion~^^"
                       "~Anatomic codes - DICOM master list~SCT^12738006^Brain~^^")
TABLE_NAME = "NormativeAD metrics"

OPTIONAL_IMAGES = ("brain_mask", "uncertainty")  # a run may leave these out (older runs, --no-uncertainty)
COLOR_TABLE_FILE = Path(__file__).resolve().parent.parent / "Resources" / "ColorTables" / "NormativeADHeat.ctbl"

# Table columns: (header, key in metrics.json per_case / reference / top level, unit) in display order.
TABLE_COLUMNS = [
    ("Model", "model", ""),
    ("Result", "result", ""),
    ("Threshold source", "threshold_source", ""),
    ("Threshold", "threshold", ""),
    ("Anomaly volume (mL)", "anomaly_volume_ml", "mL"),
    ("Components", "n_components", ""),
    ("Largest component (mL)", "largest_component_ml", "mL"),
    ("Residual mean", "residual_mean", ""),
    ("Residual p99", "residual_p99", ""),
    ("Healthy percentile", "healthy_percentile", "%"),
    ("SSIM outside anomaly", "ssim_outside_anomaly", ""),
    ("MAE outside anomaly", "mae_outside_anomaly", ""),
    ("LPIPS outside anomaly", "lpips_outside_anomaly", ""),
    ("SSIM inside anomaly", "ssim_inside_anomaly", ""),
    ("CACI (segmentation)", "caci", ""),
    ("CACI (reference)", "ref_caci_reference", ""),
    ("Dice", "ref_dice", ""),
    ("AUPRC", "ref_auprc", ""),
    ("AUROC", "ref_auroc", ""),
    ("Lesion detection rate", "ref_lesion_detection_rate", ""),
    ("False positive components", "ref_false_positive_components", ""),
    ("Flagged share uncertain", "flagged_uncertain_share", ""),
    ("Contrasts", "study_contrasts", ""),
    ("Device", "device", ""),
    ("Seconds", "seconds", "s"),
]


# ----------------------------------------------------------------------------------------------
# Scene set-up


def heatmap_color_node(scene) -> "slicer.vtkMRMLColorTableNode":
    """The shipped heatmap colour table, read once per scene."""
    existing = scene.GetFirstNodeByName(HEATMAP_COLOR_NAME)
    if existing is not None and existing.IsA("vtkMRMLColorTableNode"):
        return existing
    node = slicer.vtkMRMLColorTableNode()
    storage = slicer.vtkMRMLColorTableStorageNode()
    storage.SetFileName(str(COLOR_TABLE_FILE))
    if not storage.ReadData(node):
        raise RuntimeError(f"cannot read the heatmap colour table {COLOR_TABLE_FILE}")
    node.SetName(HEATMAP_COLOR_NAME)
    node.SetAttribute("Category", "NormativeAD")
    node.SetHideFromEditors(False)
    scene.AddNode(node)
    return node


# ----------------------------------------------------------------------------------------------
# A run's result in the scene


@dataclass
class Result:
    """One model's outputs on one input, held together by node references on the heatmap node."""

    heatmap: "slicer.vtkMRMLScalarVolumeNode"

    def _ref(self, role):
        return self.heatmap.GetNodeReference(ATTR + role)

    @property
    def input(self):
        return self._ref("input")

    @property
    def pseudo_healthy(self):
        return self._ref("pseudoHealthy")

    @property
    def segmentation(self):
        return self._ref("segmentation")

    @property
    def brain_mask(self):
        return self._ref("brainMask")

    @property
    def reference(self):
        """The reference lesion node the run was scored against (None without one, or once removed)."""
        return self._ref("reference")

    @property
    def uncertainty(self):
        """How much the heatmap moves when the scan is mirrored (None for a run without it)."""
        return self._ref("uncertainty")

    @property
    def study_volumes(self) -> list:
        """A study run's other volumes on the input's grid: each registered copy and its restoration."""
        return [self.heatmap.GetNthNodeReference(ATTR + "study", i)
                for i in range(self.heatmap.GetNumberOfNodeReferences(ATTR + "study"))]

    @property
    def metrics(self) -> dict:
        return json.loads(self.heatmap.GetAttribute(ATTR + "Metrics") or "{}")

    @property
    def model_id(self) -> str:
        return self.heatmap.GetAttribute(ATTR + "Model") or ""

    @property
    def name(self) -> str:
        return self.heatmap.GetAttribute(ATTR + "ResultName") or ""

    @property
    def threshold(self) -> float:
        return float(self.heatmap.GetAttribute(ATTR + "Threshold"))

    @property
    def threshold_source(self) -> str:
        return self.heatmap.GetAttribute(ATTR + "ThresholdSource") or "manual"

    @property
    def thresholds(self) -> dict:
        return self.metrics.get("thresholds", {})

    @property
    def default_threshold(self) -> str:
        return (self.metrics.get("model") or {}).get("default_threshold", DEFAULT_POLICY)

    @property
    def min_component_ml(self) -> float:
        return float(self.metrics.get("min_component_ml", 0.0))

    def nodes(self) -> list:
        return [n for n in (self.pseudo_healthy, self.heatmap, self.segmentation, self.brain_mask, self.uncertainty,
                            *self.study_volumes) if n is not None]


def results_in_scene(scene, input_node=None, model_id: str | None = None) -> list[Result]:
    found = []
    for node in _nodes_by_class(scene, "vtkMRMLScalarVolumeNode"):
        if node.GetAttribute(ROLE) != "heatmap":
            continue
        result = Result(node)
        if input_node is not None and result.input is not input_node:
            continue
        if model_id is not None and result.model_id != model_id:
            continue
        found.append(result)
    return found


def _nodes_by_class(scene, class_name: str) -> list:
    return [scene.GetNthNodeByClass(i, class_name) for i in range(scene.GetNumberOfNodesByClass(class_name))]


def _free_result_name(scene, base: str) -> str:
    """base, or 'base v2', 'base v3'... whichever no node name uses yet."""
    taken = {scene.GetNthNode(i).GetName() for i in range(scene.GetNumberOfNodes())}
    taken |= {r.name for r in results_in_scene(scene)}
    if not any(name and name.startswith(base) for name in taken):
        return base
    version = 2
    while any(name and name.startswith(f"{base} v{version}") for name in taken):
        version += 1
    return f"{base} v{version}"


def remove_result(scene, result: Result) -> None:
    _MODEL_SPACES.pop(result.heatmap.GetID(), None)
    table = table_node(scene, create=False)
    if table is not None:
        _remove_table_row(table, result.name)
    folder = run_folder(scene, result)
    nodes = [n for n in result.nodes() if n is not result.heatmap] + [result.heatmap]
    for node in nodes:
        owned = [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
        owned += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
        scene.RemoveNode(node)
        for child in owned:
            if child is not None and child.GetScene() is scene:
                scene.RemoveNode(child)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    children = [hierarchy.GetItemDataNode(hierarchy.GetItemByPositionUnderParent(folder, i))
                for i in range(hierarchy.GetNumberOfItemChildren(folder))] if folder else []
    if folder and not any(_in_scene(node, scene) for node in children):
        hierarchy.RemoveItem(folder, False, True)  # emptied (what the user put there themselves stays)


@dataclass
class RunFiles:
    """A finished run's folder, read and checked against the input's grid; nothing in the scene yet."""

    metrics: dict
    arrays: dict  # stem -> (z, y, x) array on the input's grid
    transform: str | None = None  # transform.tfm's text: the table's restoration figures follow the threshold with it


def read_run(input_node, out_dir: str | Path) -> RunFiles:
    """Read a run's folder (metrics and images) and check every image lies on input_node's grid."""
    out_dir = Path(out_dir)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    arrays = {}
    others = ((metrics.get("study") or {}).get("contrasts") or [])[1:]
    stems = [*IMAGE_OUTPUTS, *study_image_names(others)]
    for stem in stems:
        files = sorted(out_dir.glob(stem + ".*"))
        if not files:
            if stem in OPTIONAL_IMAGES:
                continue
            raise FileNotFoundError(f"the run left no {stem} image in {out_dir}")
        array, matrix = read_volume_array(files[0])
        if not same_grid(input_node, matrix, array.shape):
            raise ValueError(f"{files[0].name} is not on the grid of {input_node.GetName()}")
        arrays[stem] = array
    transform = out_dir / "transform.tfm"
    return RunFiles(metrics, arrays, transform.read_text() if transform.is_file() else None)


def load_result(scene, input_node, out_dir: str | Path | RunFiles, model_id: str | None = None,
                opacity: float = DEFAULT_OPACITY, show: bool = True, reference=None) -> Result:
    """Turn a finished run's folder (or its files already read) into scene nodes on input_node's grid.

    reference: the lesion node (label map or segmentation) the run was scored against: the table's
    Dice, detection and false components follow the threshold against it.

    Everything is read and checked before the scene is touched, so a bad folder leaves the scene
    as it was. A previous result of the same model on the same input is replaced when the user has
    not edited it, and kept (the new one gets a version suffix) when they have.
    """
    run = out_dir if isinstance(out_dir, RunFiles) else read_run(input_node, out_dir)
    metrics, arrays = run.metrics, run.arrays
    model_id = model_id or metrics.get("model", {}).get("id", "model")

    ensure_segmentation_support()
    previous = results_in_scene(scene, input_node, model_id)
    base = f"{input_node.GetName()} [{model_id}]"
    reusable = [r for r in previous if not any(was_edited(n, input_node) for n in r.nodes())]
    for result in reusable:
        remove_result(scene, result)
    name = _free_result_name(scene, base)

    pseudo = volume_like(scene, input_node, arrays["pseudo_healthy"].astype(np.float32), f"{name} pseudo-healthy")
    pseudo.GetDisplayNode().SetAndObserveColorNodeID(input_node.GetDisplayNode().GetColorNodeID()
                                                     if input_node.GetDisplayNode() else "vtkMRMLColorTableNodeGrey")
    heatmap = volume_like(scene, input_node, arrays["heatmap"].astype(np.float32), f"{name} heatmap")
    heatmap.SetAttribute(ROLE, "heatmap")
    pseudo.SetAttribute(ROLE, "pseudoHealthy")
    heatmap.SetAttribute(ATTR + "Model", model_id)
    heatmap.SetAttribute(ATTR + "ResultName", name)
    heatmap.SetAttribute(ATTR + "Metrics", json.dumps(metrics))
    if run.transform:
        heatmap.SetAttribute(ATTR + "Transform", run.transform)
    threshold = metrics.get("threshold", {})
    heatmap.SetAttribute(ATTR + "Threshold", repr(float(threshold.get("value", 0.0))))
    heatmap.SetAttribute(ATTR + "ThresholdSource", str(threshold.get("source", "manual")))
    heatmap.SetNodeReferenceID(ATTR + "input", input_node.GetID())
    heatmap.SetNodeReferenceID(ATTR + "pseudoHealthy", pseudo.GetID())
    if reference is not None and metrics.get("reference"):
        heatmap.SetNodeReferenceID(ATTR + "reference", reference.GetID())
    if "brain_mask" in arrays:
        brain = volume_like(scene, input_node, arrays["brain_mask"].astype(np.uint8), f"{name} brain mask", label=True)
        brain.SetAttribute(ROLE, "brainMask")
        brain.GetDisplayNode().SetVisibility(False)
        heatmap.SetNodeReferenceID(ATTR + "brainMask", brain.GetID())
        mark_unedited(brain)

    _load_extra_volumes(scene, input_node, heatmap, arrays, name)

    segmentation = anomaly_segmentation(scene, f"{name} anomaly", input_node)
    set_segment_array(segmentation, SEGMENT_ID, arrays["segmentation"] > 0, input_node)
    heatmap.SetNodeReferenceID(ATTR + "segmentation", segmentation.GetID())

    result = Result(heatmap)
    file_in_run_folder(scene, result)
    show_heatmap(scene, result, opacity=opacity, show=show)
    show_uncertainty(scene, result)
    for node in (pseudo, heatmap, segmentation):
        mark_unedited(node, input_node)
    add_table_row(scene, result)
    return result


def _load_extra_volumes(scene, input_node, heatmap, arrays: dict, name: str) -> None:
    """The uncertainty map and a study's other volumes (registered copy, restoration) as volumes on the
    input's grid, referenced from the heatmap; not shown until the user picks them."""
    if "uncertainty" in arrays:
        node = volume_like(scene, input_node, arrays["uncertainty"].astype(np.float32), f"{name} uncertainty")
        node.SetAttribute(ROLE, "uncertainty")
        heatmap.SetNodeReferenceID(ATTR + "uncertainty", node.GetID())
        mark_unedited(node)
    for stem in sorted(arrays):
        kind, _, contrast = stem.rpartition("_")
        if kind not in STUDY_OUTPUTS or not contrast:
            continue
        label = "registered" if kind == "registered" else "pseudo-healthy"
        node = volume_like(scene, input_node, arrays[stem].astype(np.float32), f"{name} {contrast} {label}")
        node.SetAttribute(ROLE, f"study:{stem}")
        heatmap.AddNodeReferenceID(ATTR + "study", node.GetID())
        mark_unedited(node)


def file_in_run_folder(scene, result: Result) -> int:
    """Put the result's nodes in a subject-hierarchy folder of their own, beside the input (in its study
    when it has one), with the run's parameters as the folder's attributes; returns the folder's item."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    input_item = _item_of(hierarchy, result.input, hierarchy.GetSceneItemID())
    folder = hierarchy.CreateFolderItem(hierarchy.GetItemParent(input_item), result.name)
    _label_run_folder(hierarchy, folder, result)
    return folder


def _label_run_folder(hierarchy, folder: int, result: Result) -> None:
    """The run's parameters as the folder's attributes, from the result's own (the threshold as it is now)
    and its nodes filed under it (a segmentation made anew at a threshold included)."""
    metrics = result.metrics
    parameters = {"Model": result.model_id, "ModelVersion": str(metrics.get("model", {}).get("version", "")),
                  "Threshold": repr(result.threshold), "ThresholdSource": result.threshold_source,
                  "Device": str(metrics.get("device", "")), "Seed": str(metrics.get("seed", "")),
                  "Input": result.input.GetName()}
    for name, value in parameters.items():
        hierarchy.SetItemAttribute(folder, ATTR + name, value)
    for node in result.nodes():
        hierarchy.SetItemParent(_item_of(hierarchy, node, folder), folder)


def _item_of(hierarchy, node, parent: int) -> int:
    """The node's subject-hierarchy item (Slicer makes one for every node; slicer-core alone does not)."""
    return hierarchy.GetItemByDataNode(node) or hierarchy.CreateItem(parent, node)


def _in_scene(node, scene) -> bool:
    """Slicer drops a removed node's item itself; slicer-core alone keeps it, pointing at the removed node."""
    return node is not None and node.GetScene() is scene


def run_folder(scene, result: Result) -> int:
    """The result's folder item (0 when it has none)."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    item = hierarchy.GetItemByDataNode(result.heatmap)
    parent = hierarchy.GetItemParent(item) if item else 0
    return parent if parent and hierarchy.GetItemAttribute(parent, ATTR + "Model") else 0


def outlined_segmentation(scene, name: str, input_node):
    """A new, empty segmentation node on the input's grid and under its transform, drawn as an outline (the
    heatmap stays readable under it): a result's anomaly segmentation and the web page's reference alike."""
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(input_node)
    segmentation.SetAndObserveTransformNodeID(input_node.GetTransformNodeID())
    segmentation.CreateDefaultDisplayNodes()
    display = segmentation.GetDisplayNode()
    display.SetVisibility2DFill(False)
    display.SetSliceIntersectionThickness(2)
    return segmentation


def anomaly_segmentation(scene, name: str, input_node):
    """A result's segmentation node, with its empty anomaly segment (colour and standard terminology)."""
    segmentation = outlined_segmentation(scene, name, input_node)
    segmentation.SetAttribute(ROLE, "segmentation")
    segment_id = segmentation.GetSegmentation().AddEmptySegment(SEGMENT_ID, SEGMENT_ID, list(SEGMENT_COLOR))
    # As the segment's TerminologyEntry tag, where Slicer's segment list, .seg.nrrd and DICOM SEG export read it.
    segmentation.GetSegmentation().GetSegment(segment_id).SetTag(
        slicer.vtkSegment.GetTerminologyEntryTagName(), SEGMENT_TERMINOLOGY)
    return segmentation


# ----------------------------------------------------------------------------------------------
# Display


def heatmap_window(result: Result) -> tuple[float, float]:
    """Colour window (low, high) of a heatmap: from the display floor to the brightest residuals."""
    values = slicer.util.arrayFromVolume(result.heatmap)
    positive = values[values > 0]
    threshold = result.threshold
    low = DISPLAY_FLOOR * threshold if threshold > 0 else (float(np.percentile(positive, 50)) if positive.size else 0.0)
    high = float(np.percentile(positive, 99.9)) if positive.size else 1.0
    high = max(high, 2.0 * threshold, low + 1e-6)
    return low, high


def show_heatmap(scene, result: Result, opacity: float = DEFAULT_OPACITY, show: bool = True) -> None:
    """Colour map, window/level and lower threshold on the heatmap; foreground layer where views exist."""
    display = result.heatmap.GetDisplayNode()
    display.SetAndObserveColorNodeID(heatmap_color_node(scene).GetID())
    low, high = heatmap_window(result)
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(low, high)
    display.AutoThresholdOff()
    display.SetApplyThreshold(True)
    display.SetLowerThreshold(low)
    display.SetUpperThreshold(float(np.finfo(np.float32).max))
    display.SetInterpolate(False)
    if show:
        for composite in _nodes_by_class(scene, "vtkMRMLSliceCompositeNode"):
            if (composite.GetLayoutName() or "").startswith(COMPARE_VIEW_PREFIX):
                continue
            composite.SetBackgroundVolumeID(result.input.GetID())
            composite.SetForegroundVolumeID(result.heatmap.GetID())
            composite.SetForegroundOpacity(opacity)


def show_uncertainty(scene, result: Result) -> None:
    """The uncertainty map's display: the heatmap's colours from a tenth of the threshold (below: the scan
    alone) to the threshold itself, where a voxel's flag may flip when the scan is mirrored."""
    node = result.uncertainty
    if node is None:
        return
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(heatmap_color_node(scene).GetID())
    high = result.threshold if result.threshold > 0 else 1.0
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.1 * high, high)
    display.AutoThresholdOff()
    display.SetApplyThreshold(True)
    display.SetLowerThreshold(0.1 * high)
    display.SetUpperThreshold(float(np.finfo(np.float32).max))
    display.SetInterpolate(False)


def set_opacity(scene, opacity: float) -> None:
    """Foreground opacity of every slice view showing a NormativeAD heatmap (or uncertainty map)."""
    for composite in _nodes_by_class(scene, "vtkMRMLSliceCompositeNode"):
        node = scene.GetNodeByID(composite.GetForegroundVolumeID() or "")
        if node is not None and node.GetAttribute(ROLE) in ("heatmap", "uncertainty"):
            composite.SetForegroundOpacity(opacity)


def show_layer(scene, result: Result, layer: str = "heatmap", opacity: float = DEFAULT_OPACITY) -> None:
    """The result's heatmap, or its uncertainty map (layer "uncertainty", where the run made one), over the
    input in the main views."""
    node = result.uncertainty if layer == "uncertainty" else result.heatmap
    if node is None:
        return
    for composite in _nodes_by_class(scene, "vtkMRMLSliceCompositeNode"):
        if (composite.GetLayoutName() or "").startswith(COMPARE_VIEW_PREFIX):
            continue
        composite.SetBackgroundVolumeID(result.input.GetID())
        composite.SetForegroundVolumeID(node.GetID())
        composite.SetForegroundOpacity(opacity)


# ----------------------------------------------------------------------------------------------
# Thresholding without re-running the model


def set_threshold(scene, result: Result, choice: str | float) -> np.ndarray:
    """Re-segment the existing heatmap at a new threshold; returns the new mask (z, y, x).

    Uses the library's own segment() so the result is the one the command line would give.
    A segmentation the user edited is not overwritten: a new versioned one is made instead.
    """
    from NormativeADLib.measures.anomaly import segment
    from NormativeADLib.core.options import resolve_threshold

    source, value = resolve_threshold(choice, result.thresholds, result.model_id, result.default_threshold)
    heatmap = slicer.util.arrayFromVolume(result.heatmap)
    spacing = tuple(float(s) for s in result.input.GetSpacing())
    mask = segment(heatmap, value, spacing, result.min_component_ml)
    segmentation = result.segmentation
    if segmentation is not None and was_edited(segmentation, result.input):
        kept = segmentation
        segmentation = anomaly_segmentation(scene, _free_result_name(scene, kept.GetName()), result.input)
        _copy_view_restriction(kept, segmentation)
        result.heatmap.SetNodeReferenceID(ATTR + "segmentation", segmentation.GetID())
    set_segment_array(segmentation, SEGMENT_ID, mask, result.input)
    mark_unedited(segmentation, result.input)
    result.heatmap.SetAttribute(ATTR + "Threshold", repr(value))
    result.heatmap.SetAttribute(ATTR + "ThresholdSource", source)
    folder = run_folder(scene, result)
    if folder:
        _label_run_folder(slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene), folder, result)
    display = result.heatmap.GetDisplayNode()
    low, high = heatmap_window(result)
    display.SetWindowLevelMinMax(low, high)
    display.SetLowerThreshold(low)
    show_uncertainty(scene, result)  # its window follows the threshold
    table = table_node(scene, create=False)
    if table is not None:
        update_table_row(table, result, mask)
    return mask


def _copy_view_restriction(source, target) -> None:
    ids = [source.GetDisplayNode().GetNthViewNodeID(i) for i in range(source.GetDisplayNode().GetNumberOfViewNodeIDs())]
    for view_id in ids:
        target.GetDisplayNode().AddViewNodeID(view_id)


# ----------------------------------------------------------------------------------------------
# Metrics table: one row per result


def table_node(scene, create: bool = True):
    for node in _nodes_by_class(scene, "vtkMRMLTableNode"):
        if node.GetAttribute(ROLE) == "metrics":
            return node
    if not create:
        return None
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", TABLE_NAME)
    table.SetAttribute(ROLE, "metrics")
    table.SetUseColumnTitleAsColumnHeader(True)
    table.SetLocked(True)
    for header, _, unit in TABLE_COLUMNS:
        column = table.AddColumn(vtk.vtkStringArray())
        column.SetName(header)
        if unit:
            table.SetColumnUnitLabel(header, unit)
    return table


def row_values(result: Result, mask: np.ndarray | None = None) -> dict[str, str]:
    from NormativeADLib.measures.metrics import flat_metrics, segmentation_figures

    flat = flat_metrics(result.metrics)
    flat["model"] = result.model_id
    flat["result"] = result.name
    flat["threshold"] = result.threshold
    flat["threshold_source"] = result.threshold_source
    if mask is not None:  # the threshold moved: the mask-derived figures follow it, computed as a run's are
        flat.update(segmentation_figures(mask, tuple(float(s) for s in result.input.GetSpacing())))
        flat.update(_restoration_figures(result, mask))
        flat.update(_against_reference(result, mask))
    return {header: _format(flat.get(key)) for header, key, _ in TABLE_COLUMNS}


def _against_reference(result: Result, mask: np.ndarray) -> dict:
    """Dice, detection rate and false components of this mask against the run's reference, in the brain
    mask as the command line scores them; blank when the reference is gone from the scene."""
    from NormativeADLib.measures.metrics import segmentation_against_reference

    keys = ("ref_dice", "ref_lesion_detection_rate", "ref_false_positive_components")
    if result.reference is None:
        return dict.fromkeys(keys)
    reference = mask_array(result.reference, result.input)
    brain = result.brain_mask
    region = slicer.util.arrayFromVolume(brain) > 0 if brain is not None else np.ones(mask.shape, bool)
    figures = segmentation_against_reference(mask, reference, region)
    return dict(zip(keys, (figures["dice"], figures["lesion_detection_rate"], figures["false_positive_components"])))


RESTORATION_KEYS = ("ssim_outside_anomaly", "mae_outside_anomaly", "lpips_outside_anomaly", "ssim_inside_anomaly",
                    "caci")


def _restoration_figures(result: Result, mask: np.ndarray) -> dict:
    """SSIM and MAE outside the mask, SSIM inside it and CACI, measured as the run measures them (model space,
    scaled intensities: rethreshold.py); blank when the run's model space cannot be rebuilt faithfully.

    LPIPS stays blank: its AlexNet would bring torch and the network into this process (Slicer's, the web
    session's) at the first threshold move, seconds and hundreds of MB for one column."""
    from NormativeADLib.pipeline import rethreshold

    space = _model_space(result)
    if space is None:
        return dict.fromkeys(RESTORATION_KEYS)
    figures = rethreshold.figures(space, _sitk_image(mask.astype(np.uint8), result.input))
    return {key: figures.get(key) for key in RESTORATION_KEYS}


# heatmap node ID -> (what the rebuild was made from, the rebuilt model space or None); a few results' worth
# (13 MB each for a 2 mm model), so that moving one result's threshold and then another's rebuilds neither
_MODEL_SPACES: dict[str, tuple[tuple, object]] = {}
_MODEL_SPACES_KEPT = 4


def _model_space(result: Result):
    """The result's run rebuilt in model space (rethreshold.ModelSpace), once per result and input state
    (3-4 s on a 2-core machine, at the first threshold move); None when it cannot stand for the run."""
    volumes = (result.input, result.pseudo_healthy, result.brain_mask, result.heatmap)
    transform = result.heatmap.GetAttribute(ATTR + "Transform")
    if any(volume is None for volume in volumes) or not transform:  # a scene saved before the runs kept it
        return None
    # VTK modification times only grow: an edited scan, restoration or heatmap gets a key of its own
    key = (*(volume.GetImageData().GetMTime() for volume in volumes), transform,
           result.heatmap.GetAttribute(ATTR + "Metrics"))
    cached = _MODEL_SPACES.get(result.heatmap.GetID())
    if cached is not None and cached[0] == key:
        return cached[1]
    space = _rebuild_model_space(result, transform)
    scene = result.heatmap.GetScene()
    for node_id in [i for i in _MODEL_SPACES if i == result.heatmap.GetID() or scene.GetNodeByID(i) is None]:
        del _MODEL_SPACES[node_id]  # this result's older state, and results gone from the scene
    while len(_MODEL_SPACES) >= _MODEL_SPACES_KEPT:
        _MODEL_SPACES.pop(next(iter(_MODEL_SPACES)))
    _MODEL_SPACES[result.heatmap.GetID()] = (key, space)
    return space


def _rebuild_model_space(result: Result, transform_text: str):
    """rethreshold.rebuild() from the result's nodes, kept only where its figures at the run's own threshold
    are the run's (rethreshold.agrees): the model's card as the run used it, the scan as the run read it."""
    import tempfile

    from NormativeADLib import io
    from NormativeADLib.core.catalogue import get_card
    from NormativeADLib.core.errors import NormativeADError
    from NormativeADLib.measures.anomaly import segment
    from NormativeADLib.pipeline import rethreshold

    metrics = result.metrics
    try:
        card = get_card(result.model_id)
    except NormativeADError:  # the model is not installed here (a result loaded from elsewhere)
        return None
    if str(card.version) != str((metrics.get("model") or {}).get("version")):
        return None  # another version of the model: its grid or scaling may differ from the run's
    with tempfile.TemporaryDirectory() as folder:  # SimpleITK reads transforms from files only
        path = Path(folder) / "transform.tfm"
        path.write_text(transform_text)
        try:
            transform = io.read_transform(path)
        except NormativeADError:
            return None
    scan = _sitk_image(slicer.util.arrayFromVolume(result.input).astype(np.float32), result.input)
    try:
        space = rethreshold.rebuild(scan, _sitk_image(slicer.util.arrayFromVolume(result.pseudo_healthy), result.input),
                                    _sitk_image(slicer.util.arrayFromVolume(result.brain_mask), result.input),
                                    transform, card)
    except (NormativeADError, RuntimeError):  # an emptied brain mask, a scan SimpleITK refuses: a blank column,
        return None                           # never a threshold that fails to move
    own = segment(slicer.util.arrayFromVolume(result.heatmap), float(metrics["threshold"]["value"]),
                  tuple(float(s) for s in result.input.GetSpacing()), result.min_component_ml)
    own_figures = rethreshold.figures(space, _sitk_image(own.astype(np.uint8), result.input))
    return space if rethreshold.agrees(own_figures, metrics.get("per_case") or {}) else None


def _sitk_image(array: np.ndarray, reference):
    """array (z, y, x) as a SimpleITK image on reference's grid, in LPS as the library reads files."""
    import SimpleITK as sitk

    lps = np.diag([-1.0, -1.0, 1.0]) @ ijk_to_ras(reference)[:3]
    spacing = np.linalg.norm(lps[:, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(lps[:, 3].tolist())
    image.SetDirection((lps[:, :3] / spacing).ravel().tolist())
    return image


def _format(value) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    return str(value)


def add_table_row(scene, result: Result) -> None:
    table = table_node(scene)
    _remove_table_row(table, result.name)
    values = row_values(result)
    table.SetLocked(False)
    row = table.AddEmptyRow()
    for column, (header, _, _) in enumerate(TABLE_COLUMNS):
        table.SetCellText(row, column, values[header])
    table.SetLocked(True)
    table.Modified()


def update_table_row(table, result: Result, mask: np.ndarray) -> None:
    values = row_values(result, mask)
    row = _find_row(table, result.name)
    if row is None:
        return
    for column, (header, _, _) in enumerate(TABLE_COLUMNS):
        table.SetCellText(row, column, values[header])
    table.Modified()


def _find_row(table, name: str) -> int | None:
    column = [h for h, _, _ in TABLE_COLUMNS].index("Result")
    for row in range(table.GetNumberOfRows()):
        if table.GetCellText(row, column) == name:
            return row
    return None


def _remove_table_row(table, name: str) -> None:
    row = _find_row(table, name)
    if row is not None:
        table.RemoveRow(row)


def table_as_rows(table) -> list[dict[str, str]]:
    headers = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    return [{h: table.GetCellText(r, c) for c, h in enumerate(headers)} for r in range(table.GetNumberOfRows())]


COMPARE_VIEW_PREFIX = "NormativeADCompare"
