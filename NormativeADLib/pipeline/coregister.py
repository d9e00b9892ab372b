"""The other volumes of a study (T2, FLAIR... of the same subject), brought onto the first one.

Each is registered rigidly to the first scan (SimpleITK: Mattes mutual information, which compares
contrasts, over a pyramid of isotropic copies, inside the first scan's brain; a second pyramid where
the first fails the edge check), resampled onto its native grid, and
then prepared exactly as the first one was: the same brain mask, the same model-space transform, its
own intensity percentiles. The registration is checked by how well the edges of the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import SimpleITK as sitk

from ..core.errors import InputError
from .preprocess import Prepared, _SMOOTHING_MM, prepare

RIGID_SHRINK = (4, 2, 1)
RIGID_SAMPLING = 0.25
RIGID_SEED = 7
# Below this correlation of the two scans' edge maps inside the brain the registration is reported as
# doubtful: aligned T1/T2/FLAIR of one subject measure about 0.4-0.8, a shift of a centimetre about 0.1-0.2.
MIN_EDGE_CORRELATION = 0.25


@dataclass
class OtherVolume:
    """One other volume of the study on the first scan's grid, in model space, and its registration check."""

    contrast: str
    registered: sitk.Image  # on the first scan's native grid, native intensities
    prepared: Prepared  # model space, with the first scan's brain and transform
    transform: sitk.Transform  # first scan's points -> this volume's points
    qc: dict


COARSE_MM = 2.0  # registration and its check work on isotropic 2 mm copies: the model grid's resolution
# Pyramids tried in turn until the edge check passes. Clinical scans of one session need not share a
# frame (TCGA-FG-6692's T2 has the FLAIR's header yet sits 17 degrees and a slice level away), and
# the 8 mm level of the first pyramid can lock onto the wrong fold; starting at 4 mm then finds it.
PYRAMIDS = ((4, 2, 1), (2, 1))


def _coarse(image: sitk.Image) -> sitk.Image:
    """An isotropic COARSE_MM copy over the same extent: thick slices (5 mm clinical axials) would
    otherwise leave a handful of slices at the pyramid's coarse levels."""
    image = sitk.Cast(image, sitk.sitkFloat32)
    spacing = np.asarray(image.GetSpacing())
    size = np.ceil(np.asarray(image.GetSize()) * spacing / COARSE_MM).astype(int)
    return sitk.Resample(image, [int(n) for n in size], sitk.Transform(), sitk.sitkLinear, image.GetOrigin(),
                         [COARSE_MM] * 3, image.GetDirection(), 0.0, sitk.sitkFloat32)


def _initial(fixed: sitk.Image, moving: sitk.Image, fixed_f: sitk.Image, moving_f: sitk.Image) -> sitk.Euler3DTransform:
    """Scans of one session usually share the scanner's frame, so the search starts from no motion where
    the moving scan covers the fixed one's centre, and from aligned centres of mass otherwise."""
    centre = fixed.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in fixed.GetSize()])
    index = moving.TransformPhysicalPointToContinuousIndex(centre)
    if all(-0.5 <= i <= n - 0.5 for i, n in zip(index, moving.GetSize())):
        transform = sitk.Euler3DTransform()
        transform.SetCenter(centre)
        return transform
    return sitk.Euler3DTransform(sitk.CenteredTransformInitializer(
        fixed_f, moving_f, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS))


def register_rigid(fixed: sitk.Image, moving: sitk.Image, fixed_brain: sitk.Image,
                   pyramid: tuple[int, ...] = PYRAMIDS[0]) -> sitk.Euler3DTransform:
    """Euler transform mapping points of `fixed` to points of `moving` (two scans of one subject)."""
    fixed_f, moving_f = _coarse(fixed), _coarse(moving)
    transform = _initial(fixed, moving, fixed_f, moving_f)
    mask = sitk.Resample(sitk.BinaryDilate(sitk.Cast(fixed_brain, sitk.sitkUInt8), [2, 2, 2]), fixed_f,
                         sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(RIGID_SAMPLING, seed=RIGID_SEED)
    reg.SetMetricFixedMask(mask)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4, numberOfIterations=150,
                                                 relaxationFactor=0.6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(pyramid))
    reg.SetSmoothingSigmasPerLevel([_SMOOTHING_MM[f] for f in pyramid])
    reg.SetInitialTransform(transform, inPlace=True)
    reg.Execute(fixed_f, moving_f)
    return transform


def register_checked(fixed: sitk.Image, moving: sitk.Image, fixed_brain: sitk.Image) -> tuple[sitk.Transform, dict]:
    """The first registration of PYRAMIDS whose edges agree with the first scan's (at least
    MIN_EDGE_CORRELATION and at least as well as before registration), else the best tried; and its
    check: edge correlations after and before, and how many pyramids it took."""
    correlation = edge_check(fixed, fixed_brain)
    before = correlation(moving, sitk.Transform())
    best = None
    for tried, pyramid in enumerate(PYRAMIDS, start=1):
        transform = register_rigid(fixed, moving, fixed_brain, pyramid)
        after = correlation(moving, transform)
        if best is None or after > best[1]:
            best = (transform, after)
        if after >= max(MIN_EDGE_CORRELATION, before):
            break
    return best[0], {"edge_correlation": round(best[1], 3), "edge_correlation_before": round(before, 3),
                     "pyramids_tried": tried}


def edge_check(fixed: sitk.Image, brain: sitk.Image) -> Callable[[sitk.Image, sitk.Transform], float]:
    """A function of (moving scan, transform from fixed points to moving points): the correlation of the
    gradient magnitudes of the fixed scan and the moving one mapped onto it, inside the brain, on 2 mm
    copies; contrast-free evidence that their edges lie in the same places. The fixed side is computed once."""
    def edges(image: sitk.Image) -> np.ndarray:
        return sitk.GetArrayFromImage(sitk.GradientMagnitudeRecursiveGaussian(image, 1.5))

    grid = _coarse(fixed)
    inside = sitk.GetArrayFromImage(sitk.Resample(brain, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)) > 0
    x = edges(grid)[inside]

    def correlation(moving: sitk.Image, transform: sitk.Transform) -> float:
        y = edges(sitk.Resample(sitk.Cast(moving, sitk.sitkFloat32), grid, transform, sitk.sitkLinear, 0.0))[inside]
        ok = x.size >= 2 and x.std() > 0 and y.std() > 0
        return float(np.corrcoef(x, y)[0, 1]) if ok else 0.0
    return correlation


def _motion(transform: sitk.Euler3DTransform) -> tuple[float, float]:
    """(largest rotation in degrees, translation in mm at the rotation centre)."""
    angles = np.degrees(np.abs([transform.GetAngleX(), transform.GetAngleY(), transform.GetAngleZ()]))
    return float(angles.max()), float(np.linalg.norm(transform.GetTranslation()))


def bring_onto(first: Prepared, other: sitk.Image, contrast: str, percentiles: tuple[float, float],
               bias_correction: bool = False) -> OtherVolume:
    """An other volume of the study registered to the first scan and prepared like it (module docstring)."""
    scan = first.native
    transform, check = register_checked(scan, other, first.native_brain)
    registered = sitk.Resample(sitk.Cast(other, sitk.sitkFloat32), scan, transform, sitk.sitkLinear, 0.0)
    if not sitk.GetArrayViewFromImage(registered)[sitk.GetArrayViewFromImage(first.native_brain) > 0].any():
        raise InputError(f"the {contrast} volume does not overlap the first scan's brain after registration; "
                         "is it a scan of the same subject?")
    try:
        prepared = prepare(registered, first.grid, first.native_brain, percentiles, first.transform, bias_correction)
    except InputError as err:
        raise InputError(f"the {contrast} volume: {err}") from None
    prepared.image = np.where(first.brain, prepared.image, 0.0).astype(np.float32)
    prepared.brain = first.brain
    rotation, translation = _motion(transform)
    qc = {**check, "rotation_deg": round(rotation, 2), "translation_mm": round(translation, 2), "warning": None}
    if check["edge_correlation"] < MIN_EDGE_CORRELATION:
        qc["warning"] = (f"the {contrast} volume's edges agree poorly with the first scan's after registration "
                         f"(correlation {check['edge_correlation']:.2f}, below {MIN_EDGE_CORRELATION}): check that "
                         "it is the same subject and look at its overlay before trusting the heatmap.")
    return OtherVolume(contrast, registered, prepared, transform, qc)
