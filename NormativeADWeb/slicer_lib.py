"""Where the one copy of the Slicer module's logic (NormativeADSlicerLib) is.

It lives in the repository's NormativeAD/ folder, beside this package and NormativeADLib, so a clone
(and the editable install `make test` makes) finds it there; a Slicer-side install that already put
it on sys.path is used as it is. No second copy is ever made.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from NormativeADLib.core.errors import NormativeADError

MODULE_FOLDER = Path(__file__).resolve().parent.parent / "NormativeAD"


def ensure_importable() -> Path:
    """Put the module folder on sys.path when needed; returns the folder NormativeADSlicerLib is in."""
    spec = importlib.util.find_spec("NormativeADSlicerLib")
    if spec is not None and spec.origin:
        return Path(spec.origin).resolve().parent.parent
    if not (MODULE_FOLDER / "NormativeADSlicerLib" / "__init__.py").is_file():
        raise NormativeADError(
            f"normativead web needs the Slicer module's logic (NormativeAD/NormativeADSlicerLib), not found at "
            f"{MODULE_FOLDER}; run it from a clone of the repository (pip install -e '.[slicer,web]').")
    sys.path.insert(0, str(MODULE_FOLDER))
    return MODULE_FOLDER
