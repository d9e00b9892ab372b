"""A written run's restoration figures at another segmentation (a threshold moved after the run).

A run measures SSIM, MAE and CACI of its restoration in model space (analysis.analyse): the scan as
preprocess.prepare scales and resamples it, against the model's restoration, over the eroded brain
outside and inside the flagged region. A front end that moves the threshold (the Slicer module, the
web viewer) holds the run's files only: the scan, the pseudo-healthy image (the scan plus the model's
change brought to the scan's grid), the brain mask and transform.tfm. rebuild() brings these back
into model space with the run's own functions, so that figures() at any segmentation is measured as
the run measures it, on the same normalised intensities.

The scan goes through prepare() again with the run's brain mask and transform, which gives the run's
model-space image exactly. The restoration is the image plus the model's change, recovered from the
pseudo-healthy image: the change was interpolated onto the scan's grid, and resampling it back blurs
it (CACI 0.03 off on the sample case); a few Landweber steps (resample the misfit back, add it) undo
the blur to within 1e-3. Where the scan's grid is coarser than the model's (thick clinical slices)
part of the change is lost for good: agrees() tells, by comparing the figures at the run's own
segmentation with its metrics.json, whether the rebuild can stand for the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..core.card import ModelCard
from ..core.grid import ModelGrid
from ..io.template import grid_image
from ..measures import anomaly, metrics
from .preprocess import Prepared, prepare, to_native

# At most this many Landweber steps; on the sample case (1 mm scan, 2 mm model) the figures stop moving
# (by less than 1e-4) after 5.
MAX_REFINE_STEPS = 6
# How close the figures rebuilt at the run's own segmentation must come to those in its metrics.json
# (absolute, on SSIM, MAE and CACI, all in [0, 1]) for the rebuild to stand for the run.
AGREEMENT = 2e-3
# The per_case keys figures() gives, as metrics.case_metrics names them.
FIGURE_KEYS = ("ssim_outside_anomaly", "mae_outside_anomaly", "psnr_outside_anomaly_db", "ssim_inside_anomaly",
               "caci")
CHECKED_KEYS = ("ssim_outside_anomaly", "mae_outside_anomaly", "ssim_inside_anomaly", "caci")


@dataclass(frozen=True)
class ModelSpace:
    """What the run's restoration figures are measured on: model-space scan and restoration, their SSIM map.
    Model-space arrays and the transform only (13 MB for a 2 mm model): a front end keeps one per result."""

    grid: ModelGrid
    transform: sitk.Transform  # model-space points -> scan points, as Prepared.transform
    image: np.ndarray  # (z, y, x), the scan as prepare() scales and resamples it
    restored: np.ndarray  # (z, y, x), the model's restoration on the scaled intensities
    eroded: np.ndarray  # the eroded brain the run measures over
    similarity: np.ndarray  # metrics.ssim_map(image, restored): the costly part, the same at every threshold


def rebuild(scan: sitk.Image, pseudo_healthy: sitk.Image, native_brain: sitk.Image, transform: sitk.Transform,
            card: ModelCard) -> ModelSpace:
    """Model space of a written run, from its scan (original units), pseudo-healthy image, brain mask and
    transform (all but the transform on the scan's grid); card: the model the run used."""
    scan = sitk.Cast(scan, sitk.sitkFloat32)  # as io.read_scan gives it to the run
    prepared = prepare(scan, card.grid, native_brain, card.percentiles, transform, card.bias_correction)
    low, high = prepared.intensity_range
    change = (sitk.Cast(pseudo_healthy, sitk.sitkFloat32) - scan) / (high - low)  # in the scaled units
    restored = np.where(prepared.brain, prepared.image + _model_change(change, prepared), 0.0).astype(np.float32)
    eroded = anomaly.eroded_brain(prepared.brain, card.postprocess.erode_iterations)
    return ModelSpace(prepared.grid, prepared.transform, prepared.image, restored, eroded,
                      metrics.ssim_map(prepared.image, restored))


def _model_change(change: sitk.Image, prepared: Prepared) -> np.ndarray:
    """The model-space change whose resampling onto the scan's grid (inside the brain) is `change`.

    Landweber steps d += R(change - L d), L: model -> scan grid as the run resampled (to_native), R: scan
    -> model grid; they stop early once the misfit grows (where R is far from L's inverse)."""
    reference = grid_image(prepared.grid)

    def to_model_grid(image: sitk.Image) -> np.ndarray:
        return sitk.GetArrayFromImage(sitk.Resample(image, reference, prepared.transform, sitk.sitkLinear, 0.0))

    target = sitk.GetArrayFromImage(change)
    brain = sitk.GetArrayViewFromImage(prepared.native_brain) > 0
    if not target.any():  # a model without a restorer: the pseudo-healthy image is the scan itself
        return np.zeros(prepared.image.shape, np.float32)
    estimate = to_model_grid(change)
    best, best_misfit = estimate, np.inf
    for _ in range(MAX_REFINE_STEPS):
        misfit = target - brain * sitk.GetArrayViewFromImage(to_native(estimate, prepared))
        size = float(np.sqrt(np.mean(misfit ** 2)))
        if size >= best_misfit:
            break
        best, best_misfit = estimate, size
        misfit_image = sitk.GetImageFromArray(misfit.astype(np.float32))
        misfit_image.CopyInformation(change)
        estimate = estimate + to_model_grid(misfit_image)
    return best


def figures(space: ModelSpace, segmentation: sitk.Image) -> dict:
    """The run's restoration figures (FIGURE_KEYS) with segmentation (on the scan's grid) as the anomaly,
    measured as analysis.analyse measures them. LPIPS is not among them: it needs its network."""
    # as preprocess.to_model brings the run's segmentation into model space (nearest neighbour)
    moved = sitk.Resample(sitk.Cast(segmentation, sitk.sitkUInt8), grid_image(space.grid), space.transform,
                          sitk.sitkNearestNeighbor, 0)
    flagged = space.eroded & (sitk.GetArrayViewFromImage(moved) > 0)
    fidelity = metrics.restoration_fidelity(space.image, space.restored, space.eroded & ~flagged, flagged,
                                            space.similarity)
    return dict(zip(FIGURE_KEYS, (fidelity["ssim"], fidelity["mae"], fidelity["psnr_db"], fidelity["ssim_inside"],
                                  fidelity["caci"])))


def agrees(rebuilt: dict, per_case: dict, tolerance: float = AGREEMENT) -> bool:
    """Whether figures() at the run's own segmentation match the run's per_case figures (CHECKED_KEYS)."""
    for key in CHECKED_KEYS:
        ours, run = rebuilt.get(key), per_case.get(key)
        if (ours is None) != (run is None):
            return False
        if ours is not None and abs(ours - run) > tolerance:
            return False
    return True
