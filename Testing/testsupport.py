"""Helpers shared by the library tests: the repository, the shipped sample case, ../shared/data.

Tests import these from here (`from testsupport import SHARED_DATA`), never from `conftest`: pytest
imports Testing/conftest.py, Testing/module/conftest.py and Testing/web/conftest.py each as a module
named `conftest`, so `from conftest import ...` reads whichever was loaded last.
"""

from __future__ import annotations

import locale
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


def write_dicom_series(image, folder: Path, description: str = "AX FLAIR", frame_of_reference: bool = True,
                       study_uid: str | None = None) -> dict:
    """Write a 3D image as a classic MR DICOM series (one int16 file per slice, as scanners do) with
    SimpleITK/GDCM; returns its UIDs: {"series", "study", "frame", "sop": [per slice, in slice order]}."""
    import SimpleITK as sitk
    from pydicom.uid import generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scaled = sitk.Cast(sitk.RescaleIntensity(image, 0, 4000), sitk.sitkInt16)
    uids = {"series": generate_uid(), "study": study_uid or generate_uid(), "frame": generate_uid(), "sop": []}
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    # GDCM's DICOM writer leaves the process in the C locale (Python's default text encoding becomes ASCII
    # for every later test): put the locale back afterwards
    saved = locale.setlocale(locale.LC_ALL)
    try:
        _write_slices(scaled, folder, writer, uids, description, frame_of_reference)
    finally:
        locale.setlocale(locale.LC_ALL, saved)
    return uids


def _write_slices(scaled, folder: Path, writer, uids: dict, description: str, frame_of_reference: bool) -> None:
    from pydicom.uid import generate_uid

    d = scaled.GetDirection()
    for k in range(scaled.GetDepth()):
        plane = scaled[:, :, k]
        sop = generate_uid()
        uids["sop"].append(sop)
        tags = {"0010|0010": "Test^Patient", "0010|0020": "NAD-TEST-1", "0008|0060": "MR",
                "0008|0016": "1.2.840.10008.5.1.4.1.1.4", "0008|0018": sop, "0020|000d": uids["study"],
                "0020|000e": uids["series"], "0020|0011": "3", "0020|0013": str(k + 1), "0008|103e": description,
                "0020|0037": "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
                "0020|0032": "\\".join(f"{v:.4f}" for v in scaled.TransformIndexToPhysicalPoint((0, 0, k))),
                "0018|0050": f"{scaled.GetSpacing()[2]:g}"}
        if frame_of_reference:
            tags["0020|0052"] = uids["frame"]
        for key, value in tags.items():
            plane.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"IM{k:04d}.dcm"))
        writer.Execute(plane)
