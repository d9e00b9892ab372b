"""Images in and out: scans read with their whole geometry and checked before anything trusts them,
masks and transforms, images written; and the MNI template on the model grid."""

from .images import (check_inputs, check_same_grid, image_like, read_image, read_mask, read_scan, read_transform,
                     validate_scan, write_image)

__all__ = ["check_inputs", "check_same_grid", "image_like", "read_image", "read_mask", "read_scan", "read_transform",
           "validate_scan", "write_image"]
