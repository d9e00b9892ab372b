"""Side-by-side comparison of several models on one volume: a layout, its views and their layers.

One slice view per result, all in one view group and linked (same slice, same zoom), each showing
the input under its own heatmap and only its own segmentation; a table view below with one row per
model. The layout is registered as an XML description on the scene's layout node and selected; in
Slicer the layout manager then creates the views' slice and composite nodes, which are looked up by
their singleton tag; on a headless scene they are created here if no view made them.
Works in Slicer and on slicer-core (no slicer.app).
"""

from __future__ import annotations

from xml.sax.saxutils import escape

import slicer

from .scene import COMPARE_VIEW_PREFIX, DEFAULT_OPACITY, Result, heatmap_color_node, show_heatmap, table_node

LAYOUT_ID = 20251  # a custom layout id, clear of Slicer's built-in ones
SINGLE_LAYOUT = slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView  # one result: Slicer's four-up with a table
VIEW_GROUP = 1
TABLE_VIEW_TAG = "NormativeADTable"
VIEW_COLORS = ["#E0584C", "#5DA14C", "#E3C74B", "#4C7FE0", "#B35CE0", "#4CC7C7", "#E08F4C", "#9E9E9E"]


def view_tag(index: int) -> str:
    return f"{COMPARE_VIEW_PREFIX}{index + 1}"


def layout_xml(labels: list[str], orientation: str = "Axial", with_table: bool = True) -> str:
    """Layout description: one row of slice views (one per label) over a table view."""
    views = []
    for i, label in enumerate(labels):
        views.append(
            f'   <item><view class="vtkMRMLSliceNode" singletontag="{view_tag(i)}">'
            f'<property name="orientation" action="default">{orientation}</property>'
            f'<property name="viewlabel" action="default">{escape(label[:12])}</property>'
            f'<property name="viewcolor" action="default">{VIEW_COLORS[i % len(VIEW_COLORS)]}</property>'
            f'<property name="viewgroup" action="default">{VIEW_GROUP}</property>'
            "</view></item>"
        )
    rows = ['<layout type="vertical" split="true">',
            '  <item splitSize="700"><layout type="horizontal" split="true">', *views, "  </layout></item>"]
    if with_table:
        rows.append(f'  <item splitSize="300"><view class="vtkMRMLTableViewNode" singletontag="{TABLE_VIEW_TAG}">'
                    '<property name="viewlabel" action="default">T</property></view></item>')
    rows.append("</layout>")
    return "\n".join(rows)


def layout_node(scene):
    """The scene's layout node (Slicer has one; a bare scene gets one)."""
    node = scene.GetSingletonNode("vtkMRMLLayoutNode", "vtkMRMLLayoutNode")
    if node is None:
        node = slicer.vtkMRMLLayoutNode()
        node.SetSingletonTag("vtkMRMLLayoutNode")
        node = scene.AddNode(node)
    return node


def slice_view_nodes(scene, tag: str, label: str, color: str, orientation: str = "Axial"):
    """(slice node, composite node) of the view tag, created if the scene lacks them."""
    slice_node = scene.GetSingletonNode(tag, "vtkMRMLSliceNode")
    if slice_node is None:
        slice_node = scene.CreateNodeByClass("vtkMRMLSliceNode")
        slice_node.UnRegister(None)  # CreateNodeByClass hands over a reference; the wrapper keeps one
        slice_node.SetName(tag)
        slice_node.SetLayoutName(tag)
        slice_node.SetSingletonTag(tag)
        slice_node.SetLayoutLabel(label[:12])
        slice_node.SetLayoutColor(*_rgb(color))
        slice_node = scene.AddNode(slice_node)
    if slice_node.HasSliceOrientationPreset(orientation):
        slice_node.SetOrientation(orientation)
    slice_node.SetViewGroup(VIEW_GROUP)
    composite = None
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        candidate = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
        if candidate.GetLayoutName() == tag:
            composite = candidate
    if composite is None:
        composite = slicer.vtkMRMLSliceCompositeNode()
        composite.SetLayoutName(tag)
        composite.SetSingletonTag(tag)
        composite = scene.AddNode(composite)
    return slice_node, composite


def _rgb(color: str) -> tuple[float, float, float]:
    color = color.lstrip("#")
    return tuple(int(color[i:i + 2], 16) / 255.0 for i in (0, 2, 4))


def show_comparison(scene, results: list[Result], opacity: float = DEFAULT_OPACITY,
                    orientation: str = "Axial") -> str:
    """Register and select the comparison layout for results; returns its XML description.

    Every view: background = the input, foreground = that result's heatmap, only that result's
    segmentation visible; views linked (hot-linked for interaction) within one view group; the
    metrics table in the table view.
    """
    if not results:
        raise ValueError("nothing to compare: run at least one model first")
    inputs = {r.input.GetID() for r in results}
    if len(inputs) != 1:
        raise ValueError("the compared results must come from the same input volume")
    labels = [r.model_id for r in results]
    xml = layout_xml(labels, orientation)
    layout = layout_node(scene)
    if layout.IsLayoutDescription(LAYOUT_ID):
        layout.SetLayoutDescription(LAYOUT_ID, xml)
    else:
        layout.AddLayoutDescription(LAYOUT_ID, xml)
    # Select the layout first: in Slicer the layout manager then creates the views' nodes, which are
    # found below; on slicer-core (no layout manager) they are created below.
    layout.SetViewArrangement(LAYOUT_ID)
    heatmap_color_node(scene)
    for i, result in enumerate(results):
        slice_node, composite = slice_view_nodes(scene, view_tag(i), labels[i],
                                                 VIEW_COLORS[i % len(VIEW_COLORS)], orientation)
        show_heatmap(scene, result, opacity=opacity, show=False)
        composite.SetBackgroundVolumeID(result.input.GetID())
        composite.SetForegroundVolumeID(result.heatmap.GetID())
        composite.SetForegroundOpacity(opacity)
        composite.SetLinkedControl(True)
        composite.SetHotLinkedControl(True)
        display = result.segmentation.GetDisplayNode()
        display.RemoveAllViewNodeIDs()
        display.AddViewNodeID(slice_node.GetID())
    table = table_node(scene)
    table_view = scene.GetSingletonNode(TABLE_VIEW_TAG, "vtkMRMLTableViewNode")
    if table_view is None:
        table_view = scene.CreateNodeByClass("vtkMRMLTableViewNode")
        table_view.UnRegister(None)
        table_view.SetSingletonTag(TABLE_VIEW_TAG)
        table_view.SetLayoutName(TABLE_VIEW_TAG)
        table_view.SetName(TABLE_VIEW_TAG)
        table_view = scene.AddNode(table_view)
    table_view.SetTableNodeID(table.GetID())
    return xml


def show_single_layout(scene) -> None:
    """Select the layout for one result (the four-up with a table), leaving a comparison's layout.

    show_heatmap puts a single result in the standard slice views only; the comparison layout shows its
    own views, which keep the compared results, so a run after a comparison would not be seen there.
    Slicer's layout manager follows the layout node, as for show_comparison.
    """
    layout_node(scene).SetViewArrangement(SINGLE_LAYOUT)


def compared_views(scene, count: int) -> list[tuple]:
    """(slice node, composite node) of the first count comparison views, for inspection."""
    found = []
    for i in range(count):
        tag = view_tag(i)
        slice_node = scene.GetSingletonNode(tag, "vtkMRMLSliceNode")
        composite = None
        for j in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            candidate = scene.GetNthNodeByClass(j, "vtkMRMLSliceCompositeNode")
            if candidate.GetLayoutName() == tag:
                composite = candidate
        found.append((slice_node, composite))
    return found
