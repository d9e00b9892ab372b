"""Images in and out: scans read with their whole geometry (images) after the file and its values are
checked (checks), masks and transforms, images written; DICOM series read and DICOM SEG and Parametric Maps
written (dicom); and the MNI template on the model grid (template)."""

from . import dicom
from .checks import validate_scan
from .images import (check_inputs, check_same_grid, image_like, read_image, read_mask, read_scan, read_transform,
                     write_image)

__all__ = ["check_inputs", "dicom", "check_same_grid", "image_like", "read_image", "read_mask", "read_scan", "read_transform",
           "validate_scan", "write_image"]
