"""Does the scan look like the contrast it is said to be? The check that refuses an inverted scan or a
T2 given as T1, and warns, rather than refuses, where the evidence is weak (docs/preprocessing.md)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..core.errors import InputError
from ..io.template import template_on_grid
from .preprocess import Prepared
from ..synthesis.synth_contrast import CSF, WM, tissue_priors

CONTRAST_SIGN = {"T1": 1.0, "T1C": 1.0, "FLAIR": 1.0, "T2": -1.0}  # of the scan's correlation with the T1 template
_CONTRAST_LOOK = {"T1": "dark CSF, white matter brighter than grey", "T1C": "dark CSF", "FLAIR": "dark CSF",
                  "T2": "bright CSF"}
_MIN_CONTRAST_R = 0.1  # the template correlation's margin, where tissue priors are missing (T1/T1c +0.24..+0.60)


def template_correlation(prepared: Prepared) -> float:
    """Correlation of the scan with the MNI152 T1 template inside the brain (model space)."""
    t1, template_brain = template_on_grid(prepared.grid)
    region = prepared.brain & (sitk.GetArrayViewFromImage(template_brain) > 0)
    if region.sum() < 1000:
        return float("nan")
    scan, template = prepared.image[region], sitk.GetArrayViewFromImage(t1)[region]
    if scan.std() == 0 or template.std() == 0:
        return float("nan")
    return float(np.corrcoef(scan, template)[0, 1])


def tissue_contrast(prepared: Prepared, contrast: str) -> float:
    """How clearly the scan shows the CSF of `contrast` (dark for T1, T1c and FLAIR, bright for T2),
    from (WM - CSF) / (WM + CSF) of its median intensities in the template's white matter (prior > 0.9)
    and CSF (prior > 0.7): in [-1, 1], positive when the scan agrees, negative when it shows the
    opposite. Measured in each hemisphere, the clearer one counts: a lesion, even a tumour of a quarter
    of the brain, fills at most one hemisphere's ventricle and white matter and leaves the other to
    decide (a whole-brain correlation with the template dropped from +0.3 to +0.09 on a large T1c
    tumour). A ratio, so that a lesion brighter than any tissue, which compresses the healthy
    intensities when the scan is scaled to its percentiles, does not shrink it. NaN where the tissue
    priors are not installed or too little of either tissue is seen.
    """
    priors = tissue_priors(prepared.grid)
    sign = CONTRAST_SIGN.get(contrast.upper(), 1.0)
    if priors is None or priors.shape[1:] != prepared.image.shape:
        return float("nan")
    values = []
    midline = prepared.image.shape[2] // 2  # the model grid is MNI space: x = 0 mm is its middle column
    for side in (slice(0, midline), slice(midline, None)):
        white = prepared.brain[..., side] & (priors[WM][..., side] > 0.9)
        csf = prepared.brain[..., side] & (priors[CSF][..., side] > 0.7)
        if white.sum() < MIN_TISSUE_VOXELS or csf.sum() < MIN_TISSUE_VOXELS:
            continue
        image = prepared.image[..., side]
        wm, fluid = float(np.median(image[white])), float(np.median(image[csf]))
        values.append(sign * (wm - fluid) / (wm + fluid + 1e-6))
    return max(values) if values else float("nan")


MIN_TISSUE_VOXELS = 200
# tissue_contrast in the stated contrast's direction (measured in docs/preprocessing.md: +0.17..+0.74 on real
# scans, -0.14 or beyond negated): below -margin the scan is refused, within +-margin it runs with a warning.
_MIN_TISSUE_CONTRAST = 0.1


def check_contrast(prepared: Prepared, contrast: str) -> dict:
    """The contrast evidence: {"template_correlation", "tissue_contrast", "warning"}; InputError when it
    says clearly that the scan is not of the stated contrast (an inverted scan, a T2 said to be a T1).

    The decision rests on tissue_contrast, which a lesion cannot move far; the whole-brain correlation
    with the T1 template decides only where the tissue priors are missing, and is reported either way.
    Weak evidence (a value within the margin of 0) is a warning in the metrics, not a refusal: a refusal
    would fall on the unusual scans the product is for.
    """
    r = template_correlation(prepared)
    sign = CONTRAST_SIGN.get(contrast.upper())
    tissue = tissue_contrast(prepared, contrast) if sign is not None else float("nan")
    evidence = {"template_correlation": r, "tissue_contrast": tissue, "warning": None}
    if sign is None:
        return evidence
    agreement, margin, what = ((tissue, _MIN_TISSUE_CONTRAST, "tissue contrast (WM - CSF) / (WM + CSF)")
                               if np.isfinite(tissue) else (sign * r, _MIN_CONTRAST_R, "template correlation"))
    if not np.isfinite(agreement):
        return evidence
    look = _CONTRAST_LOOK[contrast.upper()]
    if agreement < -margin:
        raise InputError(
            f"the scan's intensity profile does not look like {contrast} ({look}): its {what} is {agreement:+.2f} "
            f"in {contrast}'s direction, a {contrast} scan's is {margin:+.1f} or beyond. Is the contrast inverted, "
            "or the scan of another contrast? State its contrast with --contrast and choose a model for it "
            "(normativead models).")
    if agreement < margin:
        evidence["warning"] = (f"the scan's contrast is unclear ({look} expected; {what} {agreement:+.2f} in "
                               f"{contrast}'s direction, a {contrast} scan's is {margin:+.1f} or beyond): check that "
                               f"it is {contrast}.")
    return evidence
