"""`normativead anomalies preview`: a PNG grid of what a supervised anomaly model (SADM) trains on.

One row per anomaly generator of synthetic.py (the mask outlined in red), optionally rows of
synthetic contrasts of synth_contrast.py; the columns are axial slices of healthy scans in model
space. Without --data it uses the shipped sample case, so it works on a fresh clone (that case is an
MS patient: its own lesions show in every column; IXI scans from --data are healthy).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

CONTRAST_CHOICES = ("none", "random", "T1", "T1C", "T2", "FLAIR", "all")
# synthetic.KINDS, repeated so that `normativead --help` need not import the generators (scipy)
_KINDS = ("bright_blob", "dark_blob", "foreign_patch", "smoothing", "swelling", "tumour")
_CELL_INCHES = 1.8
_DPI = 80


HELP = "synthetic anomalies and contrasts: preview what SADM trains on"  # the line `normativead --help` shows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["preview"], help="preview: write a PNG grid of the generators")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--data", help="a healthy scan, or a folder of them (IXI); default: the shipped sample case")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (same seed, same picture)")
    parser.add_argument("--columns", type=int, default=6, help="slices per row")
    parser.add_argument("--kinds", nargs="*", metavar="KIND",
                        help="generators to show, of " + ", ".join(_KINDS) + " (default: all; --kinds alone: none, only the contrast rows)")
    parser.add_argument("--contrast", default="none", choices=CONTRAST_CHOICES,
                        help="also rows of synthetic contrasts: one contrast, random order, or all of them")
    parser.add_argument("--cache", help="cache of preprocessed scans (default: NORMATIVEAD_HOME/prepared)")
    parser.add_argument("--overwrite", action="store_true")


def run(args, reporter) -> int:
    from ..core import writes

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        from ..core.errors import OutputError

        raise OutputError(f"{out} already exists; pass --overwrite to replace it.")
    from ..core.errors import InputError

    kinds = _KINDS if args.kinds is None else tuple(args.kinds)
    unknown = [k for k in kinds if k not in _KINDS]
    if unknown:
        raise InputError(f"unknown anomaly kind {unknown[0]!r}; choose of {', '.join(_KINDS)}.")
    if args.columns < 1:
        raise InputError("--columns must be at least 1.")
    if not kinds and args.contrast == "none":
        raise InputError("nothing to show: name --kinds or a --contrast.")
    scans, contrast = _healthy_scans(args)
    rng = np.random.default_rng(args.seed)
    rows = anomaly_rows(scans, args.columns, rng, kinds, contrast)
    if args.contrast != "none":
        rows += contrast_rows(scans, args.columns, args.contrast, rng)
    figure = render(rows)
    writes.write_file_atomic(out, lambda tmp: figure.savefig(tmp, dpi=_DPI, format="png"), overwrite=args.overwrite)
    print(f"wrote {out} ({len(rows)} rows x {args.columns} slices)", file=sys.stderr)
    return 0


def _healthy_scans(args) -> tuple[list[tuple[np.ndarray, np.ndarray]], str | None]:
    """(image, brain) volumes in model space: up to two scans of --data (the second lends its
    patches), or the shipped sample case's T1; and their contrast as their file name says it (a tumour
    looks as it does in that contrast)."""
    from ..training import data
    from .. import io
    from ..core import locations
    from ..core.grid import ModelGrid
    from ..core.options import guess_contrast
    from ..pipeline.preprocess import prepare

    grid = ModelGrid()
    if args.data is None:
        path = locations.sample_case("T1")[0]
        prepared = prepare(io.read_scan(path), grid)
        return [(prepared.image, prepared.brain)], guess_contrast(path.name)
    source = Path(args.data)
    if source.is_file():
        prepared = prepare(io.read_scan(locations.check_input_file(source)), grid)
        return [(prepared.image, prepared.brain)], guess_contrast(source.name)
    cache = Path(args.cache) if args.cache else locations.prepared_cache()
    chosen = list(data.list_scans(source).values())[:2]
    return [data.cached_scan(path, cache, grid, (1.0, 99.0)) for path in chosen], guess_contrast(chosen[0].name)


def preview_slices(brain: np.ndarray, count: int) -> list[int]:
    """Axial slices spread over the middle of the brain (each at least 60 % of the largest's area)."""
    area = brain.reshape(len(brain), -1).sum(1)
    wide = np.flatnonzero(area >= 0.6 * area.max())
    return [int(wide[i]) for i in np.linspace(0, len(wide) - 1, count).round().astype(int)]


Row = tuple[str, list[tuple[np.ndarray, np.ndarray | None]]]


def anomaly_rows(scans, columns: int, rng: np.random.Generator, kinds: tuple[str, ...] = _KINDS,
                 contrast: str | None = None) -> list[Row]:
    """One row per generator: (name, [(slice with the anomaly, its mask)] per column), drawn in the
    scans' `contrast` (None: unknown)."""
    from ..synthesis import synthetic

    image, brain = scans[0]
    other_image, other_brain = scans[-1]
    slices = preview_slices(brain, columns)
    rows = []
    for kind in kinds:
        cells = []
        for z in slices:
            # another subject's slice where there is one; the same scan's slice otherwise (CutPaste)
            other = (other_image[z], other_brain[z]) if len(scans) > 1 else None
            cells.append(synthetic.generate(kind, image[z], brain[z], rng, other, contrast))
        rows.append((kind.replace("_", " "), cells))
    return rows


def contrast_rows(scans, columns: int, contrast: str, rng: np.random.Generator) -> list[Row]:
    """Rows of synthetic contrasts of the first scan (no mask): its tissue classes, then each contrast drawn
    from them (hard labels) and from the scan's own intensities (synth_contrast.from_intensities)."""
    from ..synthesis import synth_contrast

    image, brain = scans[0]
    labels = synth_contrast.labels_for_volume(image, brain)
    slices = preview_slices(brain, columns)
    wanted = {"all": list(synth_contrast.CONTRASTS) + [None], "random": [None]}.get(contrast, [contrast])
    rows = [("tissue classes", [(labels[z] / 3.0, None) for z in slices])]
    for name in wanted:
        rows.append((f"{name or 'random'} (labels)", [(synth_contrast.synthesise(labels[z], rng, name), None)
                                                      for z in slices]))
        rows.append((f"{name or 'random'} (intensities)",
                     [(synth_contrast.from_intensities(image[z], labels[z], rng, name), None) for z in slices]))
    return rows


def _brain_box(brains: list[np.ndarray], margin: int = 2) -> tuple[slice, slice]:
    """The slices' common bounding box of the brain, so the cells show brain rather than background."""
    union = np.logical_or.reduce(brains)
    if not union.any():
        return slice(None), slice(None)
    box = []
    for axis in (1, 0):
        hits = np.flatnonzero(union.any(axis=axis))
        box.append(slice(max(int(hits[0]) - margin, 0), int(hits[-1]) + margin + 1))
    return tuple(box)


def render(rows: list[Row]):
    """The grid as a matplotlib Figure (no pyplot: no global backend)."""
    from matplotlib.figure import Figure

    columns = max(len(cells) for _, cells in rows)
    crop = _brain_box([picture > 0 for _, cells in rows for picture, _ in cells])
    fig = Figure(figsize=(_CELL_INCHES * columns + 1.0, _CELL_INCHES * len(rows)), facecolor="black")
    axes = fig.subplots(len(rows), columns, squeeze=False, gridspec_kw=dict(wspace=0.02, hspace=0.02))
    fig.subplots_adjust(left=1.0 / (_CELL_INCHES * columns + 1.0), right=0.995, top=0.995, bottom=0.005)
    for (name, cells), row_axes in zip(rows, axes):
        for ax, (picture, mask) in zip(row_axes, cells):
            ax.imshow(picture[crop], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            if mask is not None and mask.any():  # a thin, half-transparent outline: the anomaly stays visible
                ax.contour(mask[crop].astype(float), levels=[0.5], colors="red", linewidths=0.6, alpha=0.6)
        row_axes[0].set_ylabel(name, color="white", fontsize=8)
        for ax in row_axes:
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
    return fig
