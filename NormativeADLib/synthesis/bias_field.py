"""A smooth multiplicative bias field in a scan's own physical space: how robustness to the intensity
inhomogeneity of a scanner is checked (tools/bias_field_check.py, the N4 test of test_geometry.py).
The synthetic contrasts draw their own field in model space (synth_contrast.py)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def superior_ramp(scan: sitk.Image, bottom: float, top: float, region: sitk.Image | None = None) -> sitk.Image:
    """The scan (as float32) times a linear ramp along the physical superior axis: `bottom` at the lowest
    point of `region` (a mask on the scan's grid; default the whole image), `top` at its highest,
    constant beyond."""
    points = sitk.PhysicalPointSource(sitk.sitkVectorFloat64, scan.GetSize(), scan.GetOrigin(),
                                      scan.GetSpacing(), scan.GetDirection())
    height = sitk.GetArrayFromImage(points)[..., 2]
    inside = height if region is None else height[sitk.GetArrayViewFromImage(region) > 0]
    share = np.clip((height - inside.min()) / (inside.max() - inside.min()), 0.0, 1.0)
    field = (bottom + (top - bottom) * share).astype(np.float32)
    out = sitk.GetImageFromArray(sitk.GetArrayFromImage(sitk.Cast(scan, sitk.sitkFloat32)) * field)
    out.CopyInformation(scan)
    return out
