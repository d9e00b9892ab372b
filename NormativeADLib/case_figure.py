"""The case's one-page PNG (report.png): the written outputs on chosen axial slices of the scan's own grid.

Built for a clinician: every image is shown at native resolution (no resampling; the scan's axes are only
flipped/transposed into a radiological axial view, pixels drawn with their true aspect ratio). The slices go
through the largest components of the written segmentation, the highest scores and the reference lesion,
never closer than MIN_SLICE_DISTANCE_MM, and each panel says why it was chosen.

`panels(result)` is pure: it returns, per panel, the slice index and the very 2D arrays that are drawn
(the segmentation outline is the written segmentation.* on that slice); `write_report` only draws them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import anomaly
from .options import FPR_TARGETS

N_PANELS = 5
MIN_SLICE_DISTANCE_MM = 10.0
N_COMPONENTS = 3  # components that are candidates of their own panel, largest first
# A finding already visible on a chosen panel with at least this share of its best cross-section is named
# on that panel instead of taking a panel of its own.
VISIBLE_FRACTION = 0.5
DISPLAY_FLOOR = 0.8  # heatmap drawn from this fraction of the threshold up (below: the scan alone)
SCAN_WINDOW_PERCENTILES = (0.5, 99.5)  # grey window of scan and pseudo-healthy, over the brain
SEGMENTATION_COLOUR = "#ff2d2d"
REFERENCE_COLOUR = "#00d8ff"
# Heatmap colours: blue from the display floor to the threshold (close, not flagged), then red -> orange ->
# gold above it. Neither end is grey or white, so nothing in the overlay can be read as the scan.
BELOW_THRESHOLD_COLOURS = ("#1b3f8f", "#3d7fd6")
ABOVE_THRESHOLD_COLOURS = ("#b0001e", "#ff5a00", "#ffc400")
PANEL_WIDTH_IN = 2.7
MARGIN_WIDTH_IN = 2.8  # row labels, the colour bar and the legend
HEADER_HEIGHT_IN = 1.0  # header, panel titles and footer
DPI = 100
ROWS = ("scan + outlines", "anomaly score", "pseudo-healthy")


@dataclass(frozen=True)
class View:
    """How native (z, y, x) arrays become radiological axial images, without resampling.

    axis: the array axis closest to superior-inferior (slices are taken along it); the 2D slice is then
    transposed/flipped so rows run anterior -> posterior and columns patient right -> left.
    """

    axis: int
    transpose: bool
    flip_rows: bool
    flip_cols: bool
    row_mm: float
    col_mm: float
    slice_mm: float

    @classmethod
    def of(cls, image: sitk.Image) -> "View":
        d = np.asarray(image.GetDirection(), float).reshape(3, 3)  # column j: LPS direction of index axis j
        spacing = image.GetSpacing()
        free = [0, 1, 2]
        chosen = {}
        for physical in (2, 0, 1):  # S first, then L-R, A-P gets what remains
            j = max(free, key=lambda k: abs(d[physical, k]))
            chosen[physical] = j
            free.remove(j)
        s, lr, ap = chosen[2], chosen[0], chosen[1]
        # sitk index axis j is numpy axis 2 - j; after np.take the remaining numpy axes keep their order.
        return cls(axis=2 - s, transpose=(2 - ap) > (2 - lr), flip_rows=d[1, ap] < 0, flip_cols=d[0, lr] < 0,
                   row_mm=spacing[ap], col_mm=spacing[lr], slice_mm=spacing[s])

    def slice(self, volume: np.ndarray, index: int) -> np.ndarray:
        """The native 2D slice (array order, as written to disk)."""
        return np.take(volume, index, axis=self.axis)

    def display(self, plane: np.ndarray) -> np.ndarray:
        """A native slice turned into the radiological view (a pure flip/transpose: the same voxels)."""
        out = plane.T if self.transpose else plane
        if self.flip_rows:
            out = out[::-1]
        if self.flip_cols:
            out = out[:, ::-1]
        return out

    @property
    def aspect(self) -> float:
        return self.row_mm / self.col_mm

    @property
    def min_distance_slices(self) -> int:
        return max(1, math.ceil(MIN_SLICE_DISTANCE_MM / self.slice_mm - 1e-6))


@dataclass(eq=False)
class Panel:
    """One column of the figure: native slice `index` along `View.axis`, and the 2D arrays drawn."""

    index: int
    reasons: list[str]
    position_mm: float  # superior (+) / inferior (-) coordinate of the slice centre, scanner LPS z
    scan: np.ndarray
    brain: np.ndarray  # bool
    heatmap: np.ndarray
    segmentation: np.ndarray  # bool: the written segmentation on this slice; its outline is drawn
    reference: np.ndarray | None  # bool
    pseudo_healthy: np.ndarray

    @property
    def title(self) -> str:
        return "\n".join(self.reasons)


@dataclass
class _Candidate:
    reason: str
    ranked: np.ndarray  # slice indices, best first
    area: np.ndarray | None  # per-slice voxels of the finding (None: a score candidate, always own panel)


def _array(image: sitk.Image | None) -> np.ndarray | None:
    return None if image is None else sitk.GetArrayViewFromImage(image)


def _ml(volume: float) -> str:
    return f"{volume:.1f}" if volume >= 0.95 else f"{volume:.2g}"


def _per_slice(volume: np.ndarray, axis: int, reduce) -> np.ndarray:
    return reduce(np.moveaxis(volume, axis, 0).reshape(volume.shape[axis], -1), axis=1)


def _finding(reason: str, mask: np.ndarray, axis: int) -> _Candidate:
    area = _per_slice(mask, axis, np.count_nonzero)
    present = np.flatnonzero(area)
    return _Candidate(reason, present[np.argsort(-area[present], kind="stable")], area)


def _candidates(result, view: View) -> list[_Candidate]:
    """Findings in order of importance: highest score, largest component, reference lesion, next components."""
    axis = view.axis
    heat = _array(result.heatmap)
    seg = _array(result.segmentation) > 0
    slice_max = _per_slice(heat, axis, np.max)
    by_score = np.argsort(-slice_max, kind="stable")
    out = []
    if slice_max.max() > 0:
        out.append(_Candidate(f"highest score {slice_max.max():.3g}", by_score[:1], None))
    labels, n = anomaly.label_components(seg)
    voxel_ml = float(np.prod(result.segmentation.GetSpacing())) / 1000.0
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    components = [_finding(("largest component" if rank == 0 else f"component {rank + 1} of {n}")
                           + f", {_ml(sizes[i] * voxel_ml)} mL", labels == i + 1, axis)
                  for rank, i in enumerate(np.argsort(-sizes, kind="stable")[:N_COMPONENTS])]
    out += components[:1]
    if result.reference is not None and _array(result.reference).any():
        out.append(_finding("reference lesion", _array(result.reference) > 0, axis))
    out += components[1:]
    # Then the next highest scores, each on a slice of its own.
    out += [_Candidate(f"next highest score {slice_max[z]:.3g}", np.array([z]), None)
            for z in by_score[1:] if slice_max[z] > 0]
    if not out:  # nothing scored: the middle of the brain
        brain_slices = np.flatnonzero(_per_slice(_array(result.prepared.native_brain) > 0, axis, np.any))
        middle = brain_slices[len(brain_slices) // 2] if len(brain_slices) else heat.shape[axis] // 2
        out.append(_Candidate("no anomaly score: middle of the brain", np.array([middle]), None))
    return out


def choose_slices(candidates: list[_Candidate], min_distance: int, n: int = N_PANELS) -> dict[int, list[str]]:
    """slice -> reasons: each finding on its best slice at least min_distance from the others.

    A finding already visible on a chosen slice (VISIBLE_FRACTION of its best cross-section) is named there;
    one with no free slice left is named on the chosen slice where it is largest, or left out.
    """
    chosen: dict[int, list[str]] = {}
    for c in candidates:
        if c.area is not None and chosen:
            best = c.area[c.ranked[0]]
            here = max(chosen, key=lambda z: c.area[z])
            if c.area[here] >= VISIBLE_FRACTION * best:
                chosen[here].append(c.reason)
                continue
        free = [int(z) for z in c.ranked if all(abs(int(z) - k) >= min_distance for k in chosen)]
        if free and len(chosen) < n:
            chosen[free[0]] = [c.reason]
        elif c.area is not None and chosen and c.area[max(chosen, key=lambda z: c.area[z])] > 0:
            chosen[max(chosen, key=lambda z: c.area[z])].append(c.reason)
        if len(chosen) >= n and c.area is None:
            break
    return chosen


def panels(result, n: int = N_PANELS) -> list[Panel]:
    """The figure's panels, inferior to superior: slice index, why, and the native 2D arrays drawn."""
    native = result.prepared.native
    view = View.of(native)
    chosen = choose_slices(_candidates(result, view), view.min_distance_slices, n)
    volumes = {name: _array(image) for name, image in (
        ("scan", native), ("brain", result.prepared.native_brain), ("heatmap", result.heatmap),
        ("segmentation", result.segmentation), ("reference", result.reference),
        ("pseudo_healthy", result.pseudo_healthy))}
    size = native.GetSize()
    out = []
    for z, reasons in chosen.items():
        centre = [(s - 1) / 2.0 for s in size]
        centre[2 - view.axis] = float(z)
        position = native.TransformContinuousIndexToPhysicalPoint(centre)[2]
        planes = {k: None if v is None else view.slice(v, z) for k, v in volumes.items()}
        out.append(Panel(
            index=int(z), reasons=reasons, position_mm=float(position), scan=planes["scan"],
            brain=planes["brain"] > 0, heatmap=planes["heatmap"], segmentation=planes["segmentation"] > 0,
            reference=None if planes["reference"] is None else planes["reference"] > 0,
            pseudo_healthy=planes["pseudo_healthy"]))
    return sorted(out, key=lambda p: p.position_mm)


def threshold_text(metrics: dict) -> str:
    t = metrics["threshold"]
    source = t["source"]
    policy = (f"{source} ({FPR_TARGETS[source] * 100:g} % of healthy voxels)" if source in FPR_TARGETS
              else source)
    return f"threshold {policy} = {t['value']:.4g}"


def header(result) -> str:
    """The figure's one-line header: case, model, contrast, threshold, flagged volume, components, Dice."""
    m = result.metrics
    per_case = m["per_case"]
    n = per_case["n_components"]
    text = (f"{m['case']} | model {m['model']['id']} ({m['model'].get('contrast', '?')}) | {threshold_text(m)} | "
            f"flagged {per_case['anomaly_volume_ml']:.1f} mL in {n} component{'s' if n != 1 else ''}")
    if m.get("reference"):
        text += f" | Dice {m['reference']['dice']:.3f} vs reference"
    return text


def _colour_map(floor: float, threshold: float, vmax: float):
    from matplotlib.colors import LinearSegmentedColormap

    t = (threshold - floor) / (vmax - floor) if vmax > floor else 0.0
    stops = []
    if t > 0:
        stops += [(0.0, BELOW_THRESHOLD_COLOURS[0]), (t, BELOW_THRESHOLD_COLOURS[1])]
    low, mid, high = ABOVE_THRESHOLD_COLOURS
    stops += [(t, low), (t + (1 - t) / 2, mid), (1.0, high)]
    return LinearSegmentedColormap.from_list("anomaly_score", stops)


def _crop(view: View, shown: list[Panel]) -> tuple[slice, slice]:
    """Rows and columns of the displayed slices holding the brain, segmentation or reference (+ margin)."""
    union = np.zeros_like(view.display(shown[0].brain))
    for p in shown:
        union |= view.display(p.brain) | view.display(p.segmentation)
        if p.reference is not None:
            union |= view.display(p.reference)
    if not union.any():
        return slice(0, union.shape[0]), slice(0, union.shape[1])
    rows, cols = np.flatnonzero(union.any(1)), np.flatnonzero(union.any(0))
    margin_r, margin_c = max(2, int(4 / view.row_mm)), max(2, int(4 / view.col_mm))
    return (slice(max(0, rows[0] - margin_r), min(union.shape[0], rows[-1] + margin_r + 1)),
            slice(max(0, cols[0] - margin_c), min(union.shape[1], cols[-1] + margin_c + 1)))


def figure_size(view: View, crop: tuple[slice, slice], n_panels: int) -> tuple[float, float]:
    """(width, height) in inches: panels at the crop's true aspect ratio."""
    height_mm = (crop[0].stop - crop[0].start) * view.row_mm
    width_mm = (crop[1].stop - crop[1].start) * view.col_mm
    panel_height = PANEL_WIDTH_IN * height_mm / max(width_mm, 1e-6)
    return (round(PANEL_WIDTH_IN * max(n_panels, 2) + MARGIN_WIDTH_IN, 2),
            round(HEADER_HEIGHT_IN + len(ROWS) * (panel_height + 0.08), 2))


def render(result):
    """The report as a matplotlib Figure (no pyplot: no global backend, safe in any thread)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    shown = panels(result)
    view = View.of(result.prepared.native)
    crop = _crop(view, shown)
    threshold = float(result.metrics["threshold"]["value"])
    floor = DISPLAY_FLOOR * threshold
    heat, brain = _array(result.heatmap), _array(result.prepared.native_brain) > 0
    inside = heat[brain] if brain.any() else heat.ravel()
    # The whole range up to the case's highest score: no clipped colour, the hottest voxel at the top.
    vmax = max(float(inside.max()), 1.25 * threshold, floor + 1e-6)
    scan = _array(result.prepared.native)
    lo, hi = np.percentile(scan[brain] if brain.any() else scan, SCAN_WINDOW_PERCENTILES)
    hi = hi if hi > lo else lo + 1.0
    cmap = _colour_map(floor, threshold, vmax)

    fig = Figure(figsize=figure_size(view, crop, len(shown)), layout="constrained", dpi=DPI)
    axes = fig.subplots(len(ROWS), max(len(shown), 2), squeeze=False)
    grey = dict(cmap="gray", vmin=lo, vmax=hi, aspect=view.aspect, interpolation="nearest")
    image = None
    for j, ax_column in enumerate(axes.T):
        if j >= len(shown):
            for ax in ax_column:
                ax.axis("off")
            continue
        p = shown[j]
        for i, ax in enumerate(ax_column):
            ax.imshow(view.display(p.pseudo_healthy if i == 2 else p.scan), **grey)
            if i == 0:
                if p.segmentation.any():
                    ax.contour(view.display(p.segmentation), levels=[0.5], colors=SEGMENTATION_COLOUR,
                               linewidths=0.9)
                if p.reference is not None and p.reference.any():
                    ax.contour(view.display(p.reference), levels=[0.5], colors=REFERENCE_COLOUR, linewidths=0.9)
                ax.set_title(f"{p.title}\nslice {p.index} (z {p.position_mm:+.0f} mm)", fontsize=8)
                ax.text(0.02, 0.02, "R", color="white", fontsize=8, transform=ax.transAxes, va="bottom")
                ax.text(0.98, 0.02, "L", color="white", fontsize=8, transform=ax.transAxes, va="bottom",
                        ha="right")
            if i == 1:
                hm = view.display(p.heatmap)
                shown_heat = np.ma.masked_where(~(view.display(p.brain) & (hm > floor)), hm)
                image = ax.imshow(shown_heat, cmap=cmap, vmin=floor, vmax=vmax, aspect=view.aspect,
                                  interpolation="nearest")
            ax.set_xlim(crop[1].start - 0.5, crop[1].stop - 0.5)
            ax.set_ylim(crop[0].stop - 0.5, crop[0].start - 0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(ROWS[i], fontsize=9)
    bar = fig.colorbar(image, ax=axes[1, :], shrink=0.95, aspect=15, pad=0.01)
    bar.set_label("anomaly score", fontsize=9)
    bar.ax.axhline(threshold, color="black", linewidth=2.5)
    bar.ax.axhline(threshold, color="white", linewidth=1)
    marks = (floor, threshold, vmax)
    ticks = sorted(set(marks) | {float(t) for t in bar.get_ticks()
                                 if floor < t < vmax and min(abs(t - m) for m in marks) > 0.1 * (vmax - floor)})
    bar.set_ticks(ticks)
    bar.set_ticklabels([f"threshold {t:.3g}" if t == threshold else f"{t:.3g}" for t in ticks], fontsize=7)
    flagged = any(p.segmentation.any() for p in shown)
    handles = [Line2D([], [], color=SEGMENTATION_COLOUR,
                      label="segmentation\n(as written)" if flagged else "segmentation\n(none on these slices)")]
    if any(p.reference is not None for p in shown):
        handles.append(Line2D([], [], color=REFERENCE_COLOUR, label="reference lesion"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    fig.suptitle(header(result), fontsize=9)
    fig.supxlabel(
        f"Axial slices of the scan's own grid ({view.col_mm:.2g} x {view.row_mm:.2g} mm pixels, slices "
        f"{view.slice_mm:.2g} mm; at least {MIN_SLICE_DISTANCE_MM:g} mm apart), image left = patient right. "
        f"Score shown from {floor:.3g} ({DISPLAY_FLOOR:g} x threshold) inside the brain"
        + ("; blue: below threshold." if floor < threshold else "."),
        fontsize=7)
    return fig


def write_report(result, path: Path) -> None:
    """report.png of a run: see the module docstring."""
    render(result).savefig(path, dpi=DPI)


TEMPLATE_COLOUR = "#ffd400"
BRAIN_MASK_COLOUR = "#00d8ff"
REGISTRATION_SLICES = (0.25, 0.45, 0.65, 0.85)  # of the template brain's extent along the slice axis


def registration_panels(prepared) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """(slice index, scan, template brain, brain mask) on native axial slices through the template's brain."""
    from .preprocess import template_on_grid

    _, template_brain = template_on_grid(prepared.grid)
    warped = sitk.Resample(template_brain, prepared.native, prepared.transform.GetInverse(),
                           sitk.sitkNearestNeighbor, 0)
    template = sitk.GetArrayFromImage(warped) > 0
    brain = sitk.GetArrayViewFromImage(prepared.native_brain) > 0
    scan = sitk.GetArrayViewFromImage(prepared.native)
    view = View.of(prepared.native)
    covered = np.flatnonzero(_per_slice(template, view.axis, np.any))
    if covered.size == 0:
        covered = np.arange(scan.shape[view.axis])
    indices = sorted({int(covered[round(f * (covered.size - 1))]) for f in REGISTRATION_SLICES})
    return [(i, view.slice(scan, i), view.slice(template, i), view.slice(brain, i)) for i in indices]


def render_registration(prepared, qc: float):
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    view = View.of(prepared.native)
    shown = registration_panels(prepared)
    brain_values = sitk.GetArrayViewFromImage(prepared.native)[sitk.GetArrayViewFromImage(prepared.native_brain) > 0]
    lo, hi = np.percentile(brain_values, SCAN_WINDOW_PERCENTILES) if brain_values.size else (0.0, 1.0)
    fig = Figure(figsize=(PANEL_WIDTH_IN * len(shown) + 1.5, PANEL_WIDTH_IN * view.aspect + 0.9),
                 layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(shown)))
    for ax, (index, scan, template, brain) in zip(axes, shown):
        ax.imshow(view.display(scan), cmap="gray", vmin=lo, vmax=hi, aspect=view.aspect, interpolation="nearest")
        for mask, colour in ((template, TEMPLATE_COLOUR), (brain, BRAIN_MASK_COLOUR)):
            if mask.any():
                ax.contour(view.display(mask.astype(float)), [0.5], colors=colour, linewidths=0.8)
        ax.set_title(f"slice {index}", fontsize=8)
        ax.set_axis_off()
    fig.legend(handles=[Line2D([], [], color=TEMPLATE_COLOUR, label="MNI152 brain, registered"),
                        Line2D([], [], color=BRAIN_MASK_COLOUR, label=f"brain mask ({prepared.mask_source})")],
               loc="outside right upper", fontsize=8, frameon=False)
    fig.suptitle(f"Registration check: {qc:.1%} of the template brain lies on the scan's brain "
                 "(the yellow outline should follow the brain's edge)", fontsize=9)
    return fig


def write_registration(prepared, qc: float, path: Path) -> None:
    """registration.png: the registered template's brain outline over native slices of the scan."""
    render_registration(prepared, qc).savefig(path, dpi=DPI)
