"""The web session's upload files, without a browser or a server: a WebSession on a real MRML scene
(slicer-core), fed uploads through its own streaming receive_upload, as the page's POST route feeds it.

An upload the session holds no more (a scan or reference replaced by another, a reference dropped) is
removed at once, not when the session ends (issue 26); files outside the private upload folder (the
sample case, --data) are never removed.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData"
SAMPLE_T1 = SAMPLE / "mslub_patient26_t1.nii.gz"
SAMPLE_FLAIR = SAMPLE / "mslub_patient26_flair.nii.gz"
SAMPLE_LESION = SAMPLE / "mslub_patient26_lesion.nii.gz"


@pytest.fixture
def session(tmp_path):
    try:
        import slicer
    except ImportError as err:
        pytest.skip(f"slicer-core is not installed ({err}); pip install -e '.[slicer]'")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the `slicer` module found is not slicer-core")
    from NormativeADWeb.session import WebSession

    scene = slicer.vtkMRMLScene()
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    web = WebSession(scene, uploads)
    yield web
    web.close()
    scene.Clear(1)


def upload(session, source: Path) -> Path:
    """source streamed into the session's upload folder in chunks, as the page's POST hands it over."""
    async def chunks():
        data = source.read_bytes()
        for start in range(0, len(data), 1 << 16):
            yield data[start:start + (1 << 16)]

    return asyncio.run(session.receive_upload(source.name, chunks(), source.stat().st_size))


def uploads_on_disk(session) -> set[Path]:
    return set(session.upload_dir.glob("upload-*/*"))


def test_a_replaced_reference_upload_is_removed_at_once(session):
    session.load_scan(upload(session, SAMPLE_T1))
    first = upload(session, SAMPLE_LESION)
    session.load_reference(first)
    second = upload(session, SAMPLE_LESION)
    session.load_reference(second)
    assert not first.exists() and not first.parent.exists()  # its private folder went with it
    assert second.is_file() and session.reference is not None
    session.clear_reference()  # "no reference" picked in the page
    assert not second.exists()
    assert uploads_on_disk(session) == {Path(session.scan.GetStorageNode().GetFileName())}


def test_a_replaced_scan_upload_goes_with_its_reference_upload(session):
    first_scan = upload(session, SAMPLE_T1)
    session.load_scan(first_scan)
    reference = upload(session, SAMPLE_LESION)
    session.load_reference(reference)
    second_scan = upload(session, SAMPLE_FLAIR)
    session.load_scan(second_scan)
    assert not first_scan.exists() and not reference.exists()
    assert uploads_on_disk(session) == {second_scan}


def test_files_outside_the_upload_folder_are_never_removed(session, tmp_path):
    """Files picked from the list (a --data folder, here copies of the sample case: a broken guard removes
    nothing of the repository), then replaced: they stay where they are."""
    data = tmp_path / "data"
    data.mkdir()
    t1, flair, lesion = (Path(shutil.copy(f, data)) for f in (SAMPLE_T1, SAMPLE_FLAIR, SAMPLE_LESION))
    session.load_scan(t1)
    session.load_reference(lesion)
    session.load_reference(upload(session, SAMPLE_LESION))  # replaces the picked reference
    session.clear_reference()
    session.load_scan(flair)  # replaces the picked scan
    session.discard_upload(t1)  # asked outright: refused, the file is not in an upload folder
    assert t1.is_file() and lesion.is_file() and flair.is_file()
    assert not uploads_on_disk(session)
