"""Shared fixtures: the shipped sample case and model, and ../shared/data when it is present."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("NORMATIVEAD_SHARED_DATA", REPO.parent / "shared" / "data"))
SAMPLE = REPO / "Resources" / "SampleData"


def needs_shared_data():
    return pytest.mark.skipif(
        not (SHARED_DATA / "healthy" / "ixi_t1").is_dir(),
        reason=f"real MRI of ../shared/data not found at {SHARED_DATA} (set NORMATIVEAD_SHARED_DATA)",
    )


@pytest.fixture(scope="session")
def sample_scan() -> Path:
    return SAMPLE / "mslub_patient26_t1.nii.gz"


@pytest.fixture(scope="session")
def sample_lesion() -> Path:
    return SAMPLE / "mslub_patient26_lesion.nii.gz"


# Tests never see or change the user's own model cache; preprocessed training scans may be
# shared through NORMATIVEAD_TEST_CACHE to save registration time.
os.environ["NORMATIVEAD_HOME"] = tempfile.mkdtemp(prefix="normativead-test-home-")


@pytest.fixture(scope="session")
def shipped_model():
    from NormativeADLib import catalogue, registry

    return registry.load_model(catalogue.DEFAULT_MODEL)
