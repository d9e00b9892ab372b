"""The case's one-page PNG (report.png): the written outputs on chosen axial slices of the scan's own grid.

Built for a clinician: every image is shown at native resolution (no resampling; the scan's axes are only
flipped/transposed into a radiological axial view, pixels drawn with their true aspect ratio). The slices go
through the largest components of the written segmentation, the highest flagged scores and the reference
lesion, never closer than MIN_SLICE_DISTANCE_MM, and each panel says why it was chosen. While anything is
flagged, no panel goes to a slice with nothing flagged (the reference lesion excepted: a missed lesion is a
finding); only a case with nothing flagged is shown on its highest-score slices.

The same figure serves every model family: a probability (SADM, thresholds up to 0.99999), a residual
(0.03-0.4) or a z-score (2-10). `score_scale` puts the threshold in the middle of the colour bar, keeps the bar
within the scores present and the family's ceiling, and prints every score with the digits that tell it from
the threshold. The restoration row shows the pseudo-healthy image, or says that the model has none.

`panels(result)` is pure: it returns, per panel, the slice index and the very 2D arrays that are drawn
(the segmentation outline is the written segmentation.* on that slice); `write_report` only draws them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..measures import anomaly
from ..core.options import DISPLAY_FLOOR, FPR_TARGETS

N_PANELS = 5
MIN_SLICE_DISTANCE_MM = 10.0
N_COMPONENTS = 3  # components that are candidates of their own panel, largest first
# A finding already visible on a chosen panel with at least this share of its best cross-section is named
# on that panel instead of taking a panel of its own.
VISIBLE_FRACTION = 0.5
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
ROWS = ("scan + outlines", "anomaly score", "restoration\n(pseudo-healthy)")
NO_RESTORATION = "no restoration\n(the model has no restorer)"
MIN_DIGITS, MAX_DIGITS = 3, 10  # significant digits of printed scores (float32 needs at most 9)


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


def _ranked_slices(heat: np.ndarray, seg: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(slices best first, their highest score): over flagged voxels only when anything is flagged, so a
    score panel never lands on a slice where nothing is flagged; over all scores otherwise."""
    if seg.any():
        slice_max = _per_slice(np.where(seg, heat, -np.inf), axis, np.max)
        eligible = _per_slice(seg, axis, np.any)
    else:
        slice_max = _per_slice(heat, axis, np.max)
        eligible = slice_max > 0
    order = np.argsort(-slice_max, kind="stable")
    order = order[eligible[order]]
    return order, slice_max[order]


def _candidates(result, view: View, text) -> list[_Candidate]:
    """Findings in order of importance: highest (flagged) score, largest component, reference lesion, next
    components, next highest (flagged) scores. `text` prints a score (ScoreScale.text)."""
    axis = view.axis
    heat = _array(result.heatmap)
    seg = _array(result.segmentation) > 0
    by_score, scores = _ranked_slices(heat, seg, axis)
    out = []
    if len(by_score):
        # "flagged" when a hotter voxel exists outside the segmentation (a component too small to keep)
        name = "highest score" if scores[0] >= heat.max() else "highest flagged score"
        out.append(_Candidate(f"{name} {text(scores[0])}", by_score[:1], None))
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
    out += [_Candidate(f"next highest score {text(v)}", np.array([z]), None)
            for z, v in zip(by_score[1:], scores[1:])]
    if not out:  # nothing scored or flagged: the middle of the brain
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


def panels(result, n: int = N_PANELS, scale: "ScoreScale | None" = None) -> list[Panel]:
    """The figure's panels, inferior to superior: slice index, why, and the native 2D arrays drawn."""
    native = result.prepared.native
    view = View.of(native)
    scale = scale or score_scale(result)
    chosen = choose_slices(_candidates(result, view, scale.text), view.min_distance_slices, n)
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


@dataclass(frozen=True)
class ScoreScale:
    """The score row's colour bar (floor -> threshold -> top) and the digits every score is printed with."""

    floor: float  # scores below are not drawn (the scan alone)
    threshold: float
    top: float
    digits: int
    ceiling: float | None = None  # the family's highest possible score (a probability's 1)

    def text(self, value: float) -> str:
        """The value with the scale's digits; more where a score below the ceiling would print as it (a
        probability of 0.9999999 is not a certainty)."""
        digits = self.digits
        if self.ceiling is not None and value < self.ceiling:
            while digits < MAX_DIGITS and f"{value:.{digits}g}" == f"{self.ceiling:.{digits}g}":
                digits += 1
        return f"{value:.{digits}g}"


def score_ceiling(family: str | None) -> float | None:
    """The highest score the family can give: 1 for a probability (a family that `segments`, SADM);
    None for residuals and z-scores, whose top is the case's own."""
    if not family:
        return None
    from ..models import FAMILIES  # only here: the families import torch, the figure otherwise does not

    return 1.0 if family in FAMILIES and FAMILIES[family].segments else None


def colour_limits(scores: np.ndarray, threshold: float, ceiling: float | None) -> tuple[float, float]:
    """(floor, top) of the colour bar: from DISPLAY_FLOOR of the threshold up to the highest score present.

    With nothing above the threshold, a band above it as wide as the one below still shows the flagged
    colours. The top never passes the family's ceiling (a probability's 1) unless the threshold itself does.
    """
    floor = threshold - (1 - DISPLAY_FLOOR) * abs(threshold)
    highest = float(scores.max()) if scores.size else threshold
    top = highest if highest > threshold else threshold + ((threshold - floor) or 1.0)
    if ceiling is not None:
        top = min(top, max(ceiling, threshold))
    return floor, top


def score_digits(threshold: float, others) -> int:
    """Fewest significant digits (at least MIN_DIGITS) that print the threshold unlike every other value:
    a 0.99999 threshold next to a ceiling of 1 needs 5 digits, a z-score of 2 next to 9.3 needs 3."""
    others = [v for v in others if v != threshold]
    for digits in range(MIN_DIGITS, MAX_DIGITS):
        shown = f"{threshold:.{digits}g}"
        if all(f"{v:.{digits}g}" != shown for v in others):
            return digits
    return MAX_DIGITS


def score_scale(result) -> ScoreScale:
    """The colour bar and digits of a result: its threshold, the scores in its brain and its family's ceiling."""
    threshold = float(result.metrics["threshold"]["value"])
    heat, brain = _array(result.heatmap), _array(result.prepared.native_brain) > 0
    ceiling = score_ceiling(result.metrics["model"].get("family"))
    floor, top = colour_limits(heat[brain] if brain.any() else heat.ravel(), threshold, ceiling)
    marks = (floor, top) if ceiling is None else (floor, top, ceiling)
    return ScoreScale(floor, threshold, top, score_digits(threshold, marks), ceiling)


def threshold_text(metrics: dict, scale: ScoreScale) -> str:
    t = metrics["threshold"]
    source = t["source"]
    policy = (f"{source} ({FPR_TARGETS[source] * 100:g} % of healthy voxels)" if source in FPR_TARGETS
              else source)
    return f"threshold {policy} = {scale.text(t['value'])}"


def has_restoration(result) -> bool:
    """False when the model changed nothing: its pseudo-healthy image is the scan itself (no restorer).
    Exact: the scan is read as float32 and the pipeline adds the model's change to it, so no change, no bit."""
    return not np.array_equal(_array(result.pseudo_healthy), _array(result.prepared.native))


def row_labels(result, scale: ScoreScale) -> tuple[str, str, str]:
    """The rows' names; the score row carries the threshold, the last row says when nothing was restored."""
    return (ROWS[0], f"{ROWS[1]}\n(flagged above {scale.text(scale.threshold)})",
            ROWS[2] if has_restoration(result) else NO_RESTORATION)


def header(result, scale: ScoreScale | None = None) -> str:
    """The figure's one-line header: case, model, contrast, threshold, flagged volume, components, Dice."""
    m = result.metrics
    per_case = m["per_case"]
    n = per_case["n_components"]
    scale = scale or score_scale(result)
    text = (f"{m['case']} | model {m['model']['id']} ({m['model'].get('contrast', '?')}) | "
            f"{threshold_text(m, scale)} | "
            f"flagged {per_case['anomaly_volume_ml']:.1f} mL in {n} component{'s' if n != 1 else ''}")
    if m.get("reference"):
        text += f" | Dice {m['reference']['dice']:.3f} vs reference"
    return text


def colour_norm(scale: ScoreScale):
    """Floor -> 0, threshold -> 0.5, top -> 1: the threshold in the middle of the bar for every family, so
    0.99999 below a probability's 1 shows as plainly as 2 below a z-score's 9 (the ticks give the values)."""
    from matplotlib.colors import Normalize, TwoSlopeNorm

    if scale.floor < scale.threshold < scale.top:
        return TwoSlopeNorm(scale.threshold, scale.floor, scale.top)
    return Normalize(scale.floor, scale.top)


def _colour_map(t: float):
    """Blue below t (the threshold's place on the bar, in [0, 1]), red -> orange -> gold above it."""
    from matplotlib.colors import LinearSegmentedColormap

    stops = []
    if t > 0:
        stops += [(0.0, BELOW_THRESHOLD_COLOURS[0]), (t, BELOW_THRESHOLD_COLOURS[1])]
    if t < 1:
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

    scale = score_scale(result)
    shown = panels(result, scale=scale)
    view = View.of(result.prepared.native)
    crop = _crop(view, shown)
    brain = _array(result.prepared.native_brain) > 0
    scan = _array(result.prepared.native)
    lo, hi = np.percentile(scan[brain] if brain.any() else scan, SCAN_WINDOW_PERCENTILES)
    grey = dict(cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1.0, aspect=view.aspect, interpolation="nearest")
    norm = colour_norm(scale)
    heat_style = dict(cmap=_colour_map(float(np.clip(norm(scale.threshold), 0, 1))), norm=norm,
                      aspect=view.aspect, interpolation="nearest")
    labels = row_labels(result, scale)
    restored = labels[2] != NO_RESTORATION

    fig = Figure(figsize=figure_size(view, crop, len(shown)), layout="constrained", dpi=DPI)
    axes = fig.subplots(len(ROWS), max(len(shown), 2), squeeze=False)
    image = None
    for ax_column, p in zip(axes.T, shown):
        _draw_outlines(ax_column[0], view, p, grey)
        image = _draw_score(ax_column[1], view, p, grey, heat_style, scale.floor)
        _draw_restoration(ax_column[2], view, p, grey, restored)
        for ax in ax_column:
            ax.set_xlim(crop[1].start - 0.5, crop[1].stop - 0.5)
            ax.set_ylim(crop[0].stop - 0.5, crop[0].start - 0.5)
            ax.set_xticks([])
            ax.set_yticks([])
    for ax_column in axes.T[len(shown):]:
        for ax in ax_column:
            ax.axis("off")
    for ax, label in zip(axes[:, 0], labels):
        ax.set_ylabel(label, fontsize=9)
    _colour_bar(fig, image, axes[1, :], scale)
    _legend(fig, shown)
    fig.suptitle(header(result, scale), fontsize=9)
    fig.supxlabel(
        f"Axial slices of the scan's own grid ({view.col_mm:.2g} x {view.row_mm:.2g} mm pixels, slices "
        f"{view.slice_mm:.2g} mm; at least {MIN_SLICE_DISTANCE_MM:g} mm apart), image left = patient right. "
        f"Score shown from {scale.text(scale.floor)} inside the brain"
        + ("; blue: below threshold." if scale.floor < scale.threshold else ".")
        + " Colour bar: the threshold in its middle (each half linear).",
        fontsize=7)
    return fig


def _draw_outlines(ax, view: View, p: Panel, grey: dict) -> None:
    ax.imshow(view.display(p.scan), **grey)
    if p.segmentation.any():
        ax.contour(view.display(p.segmentation), levels=[0.5], colors=SEGMENTATION_COLOUR, linewidths=0.9)
    if p.reference is not None and p.reference.any():
        ax.contour(view.display(p.reference), levels=[0.5], colors=REFERENCE_COLOUR, linewidths=0.9)
    ax.set_title(f"{p.title}\nslice {p.index} (z {p.position_mm:+.0f} mm)", fontsize=8)
    ax.text(0.02, 0.02, "R", color="white", fontsize=8, transform=ax.transAxes, va="bottom")
    ax.text(0.98, 0.02, "L", color="white", fontsize=8, transform=ax.transAxes, va="bottom", ha="right")


def _draw_score(ax, view: View, p: Panel, grey: dict, heat_style: dict, floor: float):
    ax.imshow(view.display(p.scan), **grey)
    hm = view.display(p.heatmap)
    return ax.imshow(np.ma.masked_where(~(view.display(p.brain) & (hm > floor)), hm), **heat_style)


def _draw_restoration(ax, view: View, p: Panel, grey: dict, restored: bool) -> None:
    """The pseudo-healthy image; without a restorer a plain statement, not the scan shown a second time."""
    if restored:
        ax.imshow(view.display(p.pseudo_healthy), **grey)
        return
    ax.set_facecolor("0.93")
    ax.text(0.5, 0.5, "no restorer:\nthe pseudo-healthy image\nis the scan unchanged", ha="center",
            va="center", fontsize=7, transform=ax.transAxes)


def _colour_bar(fig, image, axes, scale: ScoreScale) -> None:
    """Ticks at the floor, the threshold (a white-on-black line) and the top, printed with the scale's digits."""
    bar = fig.colorbar(image, ax=axes, shrink=0.95, aspect=15, pad=0.01)
    bar.set_label("anomaly score", fontsize=9)
    bar.ax.axhline(scale.threshold, color="black", linewidth=2.5)
    bar.ax.axhline(scale.threshold, color="white", linewidth=1)
    ticks = sorted({scale.floor, scale.threshold, scale.top})
    bar.set_ticks(ticks)
    bar.set_ticklabels([f"threshold {scale.text(t)}" if t == scale.threshold else scale.text(t) for t in ticks],
                       fontsize=7)


def _legend(fig, shown: list[Panel]) -> None:
    from matplotlib.lines import Line2D

    flagged = any(p.segmentation.any() for p in shown)
    handles = [Line2D([], [], color=SEGMENTATION_COLOUR,
                      label="segmentation\n(as written)" if flagged else "segmentation\n(none on these slices)")]
    if any(p.reference is not None for p in shown):
        handles.append(Line2D([], [], color=REFERENCE_COLOUR, label="reference lesion"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)


def write_report(result, path: Path) -> None:
    """report.png of a run: see the module docstring."""
    render(result).savefig(path, dpi=DPI)


TEMPLATE_COLOUR = "#ffd400"
BRAIN_MASK_COLOUR = "#00d8ff"
REGISTRATION_SLICES = (0.25, 0.45, 0.65, 0.85)  # of the template brain's extent along the slice axis


def registration_panels(prepared) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """(slice index, scan, template brain, brain mask) on native axial slices through the template's brain."""
    from ..io.template import template_on_grid

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
