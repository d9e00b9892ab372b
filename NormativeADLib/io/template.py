"""The MNI152 2009a T1 template, and the model grid as an image: the space every model works in."""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import SimpleITK as sitk

from ..core.errors import InputError
from ..core.grid import ModelGrid

_TEMPLATE_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


def grid_image(grid: ModelGrid) -> sitk.Image:
    """An empty float image on the model grid: the reference of every resampling into model space."""
    image = sitk.Image([int(s) for s in grid.size_xyz], sitk.sitkFloat32)
    image.SetSpacing([grid.spacing_mm] * 3)
    image.SetOrigin([float(o) for o in grid.origin_lps])
    return image


def template_path() -> Path:
    """The MNI152 2009a T1 template, from NORMATIVEAD_TEMPLATE or the nilearn package."""
    override = os.environ.get("NORMATIVEAD_TEMPLATE")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise InputError("the MNI152 template is needed: pip install nilearn, or set NORMATIVEAD_TEMPLATE.")
    path = Path(spec.origin).parent / "datasets" / "data" / _TEMPLATE_FILE
    if not path.is_file():
        raise InputError(f"MNI152 template not found at {path}; set NORMATIVEAD_TEMPLATE to its file.")
    return path


@functools.lru_cache(maxsize=4)
def template_on_grid(grid: ModelGrid) -> tuple[sitk.Image, sitk.Image]:
    """Template T1 (float) and its brain mask (uint8) resampled onto the model grid."""
    template = sitk.Cast(sitk.ReadImage(str(template_path())), sitk.sitkFloat32)
    t1 = sitk.Resample(template, grid_image(grid), sitk.Transform(), sitk.sitkLinear, 0.0)
    mask = sitk.BinaryFillhole(sitk.Cast(t1 > 10.0, sitk.sitkUInt8))
    return t1, mask
