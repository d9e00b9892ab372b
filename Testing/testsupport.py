"""Helpers shared by the library tests: the repository, the shipped sample case, ../shared/data.

Tests import these from here (`from testsupport import SHARED_DATA`), never from `conftest`: pytest
imports Testing/conftest.py, Testing/slicer/conftest.py and Testing/web/conftest.py each as a module
named `conftest`, so `from conftest import ...` reads whichever was loaded last.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("NORMATIVEAD_SHARED_DATA", REPO.parent / "shared" / "data"))
SAMPLE = REPO / "Resources" / "SampleData"


def needs_shared_data():
    """Skip without the real MRI of ../shared/data; such tests are also `slow` (they register or
    train on whole real scans), so `make check` leaves them out."""
    skip = pytest.mark.skipif(
        not (SHARED_DATA / "healthy" / "ixi_t1").is_dir(),
        reason=f"real MRI of ../shared/data not found at {SHARED_DATA} (set NORMATIVEAD_SHARED_DATA)",
    )

    def mark(test):
        return pytest.mark.slow(skip(test))

    return mark
