"""One case from file to results: the steps of ARCHITECTURE.md in order, each a function of its own module.

The command line, the Slicer module's worker and the tests all call `analyse` and `write_outputs`.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..measures import anomaly, metrics
from . import coregister
from .. import io
from ..core import jsontext, locations, writes, warm
from ..core.card import ModelCard
from ..core.errors import Cancelled, InputError
from ..core.options import (DEVICE, DICOM_FORMAT, FIGURE_OUTPUTS, FORMAT, FORMATS, IMAGE_OUTPUTS, OUTPUT_FORMATS,
                            SEED, STUDY_OUTPUTS, analysis_names, canonical_contrast, guess_contrast, output_names,
                            resolve_threshold, study_contrasts)
from .contrast_check import check_contrast
from .preprocess import Prepared, check_registration, prepare, to_model, to_native
from ..core.catalogue import DEFAULT_MODEL, get_card
from ..models.registry import LoadedModel, load_model
from .restore import restore_volume, score_volume, select_device

# progress(stage, fraction of the whole run in [0, 1], message)
StageProgress = Callable[[str, float, str], None]


@dataclass
class CaseResult:
    case: str
    card: ModelCard
    prepared: Prepared
    restored: np.ndarray  # model space (z, y, x), [0, 1]
    score: np.ndarray  # model space anomaly score
    pseudo_healthy: sitk.Image  # native grid, native intensity units
    heatmap: sitk.Image  # native grid anomaly score, 0 outside the brain
    segmentation: sitk.Image  # native grid uint8 0/1
    reference: sitk.Image | None
    metrics: dict
    uncertainty: sitk.Image | None = None  # native grid: how much the heatmap moves under a left-right mirror
    others: dict = field(default_factory=dict)  # contrast -> OtherResult, the study's other volumes
    source: Path | None = None  # the scan as given: a file, or a DICOM series (folder or file) the outputs reference


@dataclass
class OtherResult:
    """One other volume of a study (restore --with), on the first scan's native grid."""

    registered: sitk.Image
    pseudo_healthy: sitk.Image

    def images(self) -> tuple[sitk.Image, ...]:  # in options.STUDY_OUTPUTS order
        return self.registered, self.pseudo_healthy


def analyse(scan_path: str | Path, model: str | LoadedModel = DEFAULT_MODEL,
            mask_path: str | Path | None = None, reference_path: str | Path | None = None,
            threshold: str | float | None = None, device: str = DEVICE.default, seed: int = SEED.default,
            transform_path: str | Path | sitk.Transform | None = None,
            progress: StageProgress | None = None, cancel: threading.Event | None = None,
            contrast: str | None = None, others: Sequence[tuple[str | Path, str | None]] = (),
            uncertainty: bool = True) -> CaseResult:
    """Restore one scan and derive its heatmap, segmentation and metrics (nothing is written).

    transform_path: a registration from an earlier run's transform.tfm (or a transform), to skip
    registration and make runs of several models on one scan see exactly the same alignment.
    contrast: the scan's contrast (options.CONTRASTS); None: from its file name, else the model's.
    others: the study's other volumes of the same subject, (path, contrast or None for its file name's),
    for a study model: each registered to the scan, restored, and read with it (coregister.py).
    uncertainty: also run the scan mirrored left-right; the uncertainty map is how much the heatmap moves.
    """
    started = time.perf_counter()
    report = progress or (lambda stage, fraction, message: None)

    def checkpoint(stage: str, fraction: float, message: str) -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled("run cancelled")
        report(stage, fraction, message)

    checkpoint("read", 0.0, f"reading {Path(scan_path).name}")
    scan = io.read_scan(scan_path)
    mask = io.read_mask(mask_path, scan, "mask") if mask_path else None
    transform = io.read_transform(transform_path) if isinstance(transform_path, (str, Path)) else transform_path
    reference = io.read_mask(reference_path, scan, "reference") if reference_path else None
    loaded = model if isinstance(model, LoadedModel) else _model(model)
    card = loaded.card
    scan_contrast = scan_contrast_of(scan_path, contrast, card)
    # the default policy of the scan's contrast when it is known (a guess from the model is not)
    default_policy = card.default_for(None if scan_contrast["source"] == ASSUMED_CONTRAST else scan_contrast["scan"])
    resolve_threshold(threshold, card.offered_thresholds(), card.id, default_policy)  # fail before the work
    other_contrasts = study_contrasts(card, scan_contrast["scan"], others)
    choice = select_device(device)

    checkpoint("preprocess", 0.05, "brain mask and registration to MNI152")

    def make() -> tuple[Prepared, float]:
        prepared = prepare(scan, card.grid, mask, card.percentiles, transform, card.bias_correction)
        return prepared, check_registration(prepared)

    prepared, registration_qc = make() if isinstance(transform_path, sitk.Transform) else warm.prepared(
        (scan_path, mask_path, transform_path), (card.grid, tuple(card.percentiles), card.bias_correction), make)
    contrast_evidence = check_contrast(prepared, scan_contrast["scan"])

    study = {}
    for (path, _), other_contrast in zip(others, other_contrasts):
        checkpoint("preprocess", 0.2, f"registering the {other_contrast} volume to the scan")
        study[other_contrast] = coregister.bring_onto(prepared, io.read_scan(path), other_contrast, card.percentiles,
                                                      card.bias_correction)

    checkpoint("restore", 0.4, f"restoring on {choice.note}")
    passes = 2 if uncertainty else 1
    step = 0.45 / passes / (1 + len(study))

    def restore_one(image: np.ndarray, brain: np.ndarray, at: float) -> np.ndarray:
        return restore_volume(loaded, image, brain, choice.device, seed=seed, cancel=cancel,
                              progress=lambda done, total: report("restore", at + step * done / total,
                                                                  f"slice {done}/{total}"))

    def restore_and_score(mirror: bool, at: float) -> tuple[np.ndarray, np.ndarray, dict]:
        flip = (lambda a: a[..., ::-1].copy()) if mirror else (lambda a: a)  # x is left-right in model space
        brain = flip(prepared.brain)
        restored = restore_one(flip(prepared.image), brain, at)
        restored_others = {c: (flip(o.prepared.image), restore_one(flip(o.prepared.image), brain, at + step * (i + 1)))
                           for i, (c, o) in enumerate(study.items())}
        checkpoint("anomaly", at + step * (1 + len(study)), "anomaly map")
        score = score_volume(loaded, flip(prepared.image), restored, brain, choice.device, cancel=cancel,
                             contrast=scan_contrast["scan"], others=restored_others)
        return flip(restored), flip(score), {c: flip(r) for c, (_, r) in restored_others.items()}

    restored, score, restored_others = restore_and_score(False, 0.4)
    mirrored_score = restore_and_score(True, 0.4 + 0.45 / passes)[1] if uncertainty else None

    checkpoint("anomaly", 0.86, "anomaly map, segmentation and metrics")
    thresholds = anomaly.case_thresholds(card, score, prepared.brain)
    threshold_source, threshold_value = resolve_threshold(threshold, thresholds, card.id, default_policy)
    native_brain = sitk.GetArrayFromImage(prepared.native_brain) > 0
    heatmap = sitk.GetArrayFromImage(to_native(score, prepared)) * native_brain
    spacing = scan.GetSpacing()
    segmentation = anomaly.segment(heatmap, threshold_value, spacing, card.postprocess.min_component_ml)
    pseudo = _pseudo_healthy(scan, prepared, restored, native_brain)
    other_results = {c: OtherResult(o.registered, io.image_like(_pseudo_healthy(o.registered, o.prepared,
                                                                                 restored_others[c], native_brain), scan))
                     for c, o in study.items()}
    mirrored = None if mirrored_score is None else sitk.GetArrayFromImage(to_native(mirrored_score, prepared)) * native_brain

    eroded = anomaly.eroded_brain(prepared.brain, card.postprocess.erode_iterations)
    # one segmentation per run: the written (native) one, seen in model space for the restoration figures
    flagged = eroded & to_model(io.image_like(segmentation.astype(np.uint8), scan), prepared)
    similarity = metrics.ssim_map(prepared.image, restored)
    result_metrics = {
        "case": locations.case_name(scan_path),
        "model": {"id": card.id, "family": card.family, "version": card.version, "contrast": card.contrast,
                  "default_threshold": default_policy},
        "device": choice.note,
        "mask_source": prepared.mask_source,
        "registration_qc": registration_qc,  # share of the registered template brain on the scan's brain
        "contrast": {**scan_contrast, "evidence": contrast_evidence},
        "template_correlation": contrast_evidence["template_correlation"],  # a T1-like scan is positive
        "threshold": {"source": threshold_source, "value": threshold_value},
        "thresholds": thresholds,  # the card's, and this case's adaptive one
        "min_component_ml": card.postprocess.min_component_ml,
        "per_case": metrics.case_metrics(
            segmentation, spacing, heatmap, native_brain,
            {**metrics.restoration_fidelity(prepared.image, restored, eroded & ~flagged, flagged, similarity),
             "lpips": _lpips_outside(prepared.image, restored, eroded & ~flagged)},
            anomaly.case_score(score, prepared.brain), card.healthy_case_scores),
        "components": metrics.component_table(segmentation, heatmap, lambda ijk: _lps_to_ras(
            scan.TransformContinuousIndexToPhysicalPoint([float(v) for v in ijk])), spacing),
        "reference": None,
        "seed": seed,
        "study": _study_metrics(scan_contrast["scan"], study),
        "uncertainty": _uncertainty_metrics(heatmap, mirrored, segmentation, threshold_value),
    }
    if reference is not None:
        result_metrics["reference"] = metrics.detection_metrics(
            heatmap, segmentation, sitk.GetArrayFromImage(reference) > 0, native_brain, spacing)
        lesion = eroded & to_model(reference, prepared)
        fidelity = metrics.restoration_fidelity(prepared.image, restored, eroded & ~lesion, lesion, similarity)
        result_metrics["reference"].update(ssim_outside_reference=fidelity["ssim"],
                                           ssim_inside_reference=fidelity["ssim_inside"],
                                           caci_reference=fidelity["caci"])
    result_metrics["seconds"] = round(time.perf_counter() - started, 2)
    report("metrics", 0.95, "analysis complete")
    return CaseResult(
        case=result_metrics["case"], card=card, prepared=prepared, restored=restored, score=score,
        pseudo_healthy=io.image_like(pseudo.astype(np.float32), scan),
        heatmap=io.image_like(heatmap.astype(np.float32), scan),
        segmentation=io.image_like(segmentation.astype(np.uint8), scan),
        reference=reference, metrics=result_metrics,
        uncertainty=None if mirrored is None else io.image_like((np.abs(heatmap - mirrored) / 2).astype(np.float32), scan),
        others=other_results, source=Path(scan_path),
    )


def _pseudo_healthy(scan: sitk.Image, prepared: Prepared, restored: np.ndarray, native_brain: np.ndarray) -> np.ndarray:
    """The scan plus the model's change, in scan units: no dark rim where the brain edge is resampled."""
    native_change = sitk.GetArrayFromImage(to_native(restored - prepared.image, prepared))
    scale = np.subtract(*prepared.intensity_range[::-1])
    return (sitk.GetArrayViewFromImage(scan) + native_brain * native_change * scale).astype(np.float32)


def _study_metrics(first: str, study: dict) -> dict | None:
    if not study:
        return None
    return {"contrasts": [first, *study], "registration": {c: o.qc for c, o in study.items()}}


def _uncertainty_metrics(heatmap: np.ndarray, mirrored: np.ndarray | None, segmentation: np.ndarray,
                         threshold: float) -> dict | None:
    """How far the flagged region holds when the scan is mirrored: the share of the flagged volume that the
    mirrored pass does not flag (uncertain voxels), and the mean uncertainty inside and outside it."""
    if mirrored is None:
        return None
    spread = np.abs(heatmap - mirrored) / 2
    flagged = segmentation > 0
    brain = heatmap > 0
    return {"method": "left-right mirror: half the difference of the heatmaps of the scan and of its mirror image",
            "flagged_uncertain_share": float((flagged & (mirrored < threshold)).sum() / flagged.sum()) if flagged.any() else None,
            "mean_inside_flagged": float(spread[flagged].mean()) if flagged.any() else None,
            "mean_outside_flagged": float(spread[brain & ~flagged].mean()) if (brain & ~flagged).any() else None}


def _model(model_id: str) -> LoadedModel:
    """The model, loaded again only when its files changed if this process keeps models (warm.py)."""
    card = get_card(model_id)
    weights = card.weights_path if card.weights else None
    return warm.model(card.id, card.folder, weights, lambda: load_model(card))


ASSUMED_CONTRAST = "assumed the model's: give --contrast"  # the source of a contrast nothing named


def scan_contrast_of(scan_path: str | Path, given: str | None, card) -> dict:
    """The scan's contrast, where it came from, and a warning when the model was not trained for it."""
    named, named_from = guess_contrast(Path(scan_path).name), "from the file name"
    if not named and not given and locations.is_dicom_input(scan_path):
        named = io.dicom.described_contrast(io.dicom.find_series(scan_path))
        named_from = "from the DICOM series description"
    if given:
        try:
            scan, source = canonical_contrast(given), "as given"
        except ValueError as err:  # a manifest's or a caller's spelling, not argparse's
            raise InputError(str(err)) from None
    elif named:
        scan, source = named, named_from
    else:
        scan, source = card.trained_contrasts[0], ASSUMED_CONTRAST
    warning = None
    if not card.accepts(scan):
        warning = (f"model {card.id} was trained for {', '.join(card.trained_contrasts)}, not {scan}: its figures "
                   f"and thresholds do not hold for this scan. Choose a model for {scan} (normativead models).")
    return {"scan": scan, "source": source, "model_contrasts": list(card.trained_contrasts), "warning": warning}


@functools.lru_cache(maxsize=1)
def _standard_lpips():
    """LPIPS-AlexNet when its standard weights are on this machine (never downloaded), else None."""
    from ..measures import perceptual

    return perceptual.load_lpips() if perceptual.lpips_available() else None


def _lpips_outside(image: np.ndarray, restored: np.ndarray, region: np.ndarray) -> float | None:
    net = _standard_lpips()
    return None if net is None else metrics.lpips_in_region(net, image, restored, region)


def _lps_to_ras(point) -> list[float]:
    return [-point[0], -point[1], point[2]]


def write_outputs(result: CaseResult, out_dir: str | Path, fmt: str = FORMAT.default, overwrite: bool = False,
                  before_figures: Callable[[], None] | None = None, figures: bool = True) -> Path:
    """Write every output into out_dir, all or nothing.

    before_figures: called once the images, tables and transform are in place, before report.png and
    registration.png are drawn (about 2 s): the interactive front ends show the overlay then. The
    figures then follow one by one, each whole or absent: a cancel meanwhile leaves the rest complete,
    a failure (a full disk) takes back what this call wrote, so that a failed run leaves nothing.
    figures: False writes no figures (a front end that shows the results and does not keep the files).
    """
    out_dir = Path(out_dir)
    staged = figures and before_figures is None  # the figures go in with everything else
    kept = (result.others, result.uncertainty is not None)
    names, later = (output_names(fmt, *kept), ()) if staged else (analysis_names(fmt, *kept), FIGURE_OUTPUTS)
    with writes.atomic_output_dir(out_dir, names, overwrite, later=later) as staging:
        _write_analysis(result, staging, fmt)
        if staged:
            write_figures(result, staging)
    if before_figures is not None:
        before_figures()
    if figures and not staged:
        try:
            write_figures(result, out_dir, atomic=True)
        except Exception:
            for name in names:
                (out_dir / name).unlink(missing_ok=True)
            raise
    return out_dir


def _write_analysis(result: CaseResult, folder: Path, fmt: str) -> None:
    if fmt == DICOM_FORMAT:  # each image one DICOM object referencing the scan's series
        threshold = result.metrics["threshold"]
        model = result.metrics["model"]
        producer = io.dicom.Producer(model["id"], str(model["version"]),
                                     f"{threshold['source']} = {threshold['value']:.6g}", float(threshold["value"]))
        io.dicom.write_outputs(result_images(result), result.source, folder, producer, OUTPUT_FORMATS[fmt])
    else:
        for name, image in result_images(result).items():
            io.write_image(image, folder / (name + FORMATS[fmt]))
    (folder / "metrics.json").write_text(jsontext.dumps(result.metrics, indent=2) + "\n")
    writes.write_csv([metrics.flat_metrics(result.metrics)], folder / "metrics.csv")
    # model (MNI) -> scan points: --transform reuses it, so runs of several models share one registration
    sitk.WriteTransform(result.prepared.transform, str(folder / "transform.tfm"))


def result_images(result: CaseResult) -> dict[str, sitk.Image]:
    """Every image of a run by output name (options.image_names), all on the scan's native grid."""
    images = dict(zip(IMAGE_OUTPUTS, (result.pseudo_healthy, result.heatmap, result.segmentation,
                                      sitk.Cast(result.prepared.native_brain, sitk.sitkUInt8), result.uncertainty)))
    images = {name: image for name, image in images.items() if image is not None}
    for contrast, other in result.others.items():
        images.update({f"{name}_{contrast}": image for name, image in zip(STUDY_OUTPUTS, other.images())})
    return images


def write_figures(result: CaseResult, folder: Path, atomic: bool = False) -> None:
    """report.png and registration.png (FIGURE_OUTPUTS); atomic: each through a temporary file."""
    from .case_figure import write_registration, write_report  # matplotlib is imported only when a report is written

    draw = {"report.png": lambda path: write_report(result, path),
            "registration.png": lambda path: write_registration(result.prepared, result.metrics["registration_qc"], path)}
    for name in FIGURE_OUTPUTS:
        if atomic and not folder.is_dir():
            return  # the front end has taken the outputs and removed the folder: nobody will look
        if atomic:
            writes.write_file_atomic(folder / name, draw[name], overwrite=True)
        else:
            draw[name](folder / name)
