"""JSON as strict parsers read it: a non-finite number (NaN, Infinity) is written as null.

Python's json writes NaN and Infinity, which JavaScript, jq and most other readers refuse; a metric
that is infinite (the PSNR of an exact restoration) or undefined is null in every file and line
NormativeAD writes. Standard library only.
"""

from __future__ import annotations

import json
import math


def finite(value):
    """value with every non-finite float inside it (dicts, lists, tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value, default=None, **kwargs) -> str:
    """json.dumps with every non-finite number as null; `default` converts other types first (numpy)."""
    if default is not None:
        value = json.loads(json.dumps(value, default=default))
    return json.dumps(finite(value), allow_nan=False, **kwargs)
