"""The NormativeAD page end to end in a real headless Chromium, against a real `normativead web`.

One server and one browser serve the module's tests, in file order, as one person's session: the
full path (open the sample case, run, threshold, compare, download, look), then a cancel that must
leave those results in place, then bad uploads that must be refused with the command line's words.
The downloaded segmentation is checked against the command line's own run with the same settings,
and the screenshot pixel by pixel: heatmap colour must lie over the reference lesion's outline.
With NORMATIVEAD_UPDATE_SCREENSHOT=1 the screenshots are kept as docs/images/web_*.png.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from web_server import (COMPARE_MODEL, DEMO_MODEL, MAX_UPLOAD_MB, REPO, SAMPLE_FLAIR, SAMPLE_LESION,
                        browser_reason)

pytestmark = pytest.mark.browser  # a real headless Chromium: `make check` leaves these out

if browser_reason():
    pytest.skip(browser_reason(), allow_module_level=True)

from selenium.webdriver.common.keys import Keys  # noqa: E402
from web_page import Page  # noqa: E402

DOCS_IMAGES = REPO / "docs" / "images"
WRITE_AS_SLICER = """if True:
    import sys, slicer
    from NormativeADSlicerLib import nodes
    node, storage = slicer.vtkMRMLScalarVolumeNode(), slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(sys.argv[1])
    assert storage.ReadData(node)
    nodes.write_volume(node, sys.argv[2])
"""
SATURATION = 60  # max - min of RGB above which a pixel is overlay colour (the scan's grey is 0)


@pytest.fixture(scope="module")
def page(server, browser):
    page = Page(browser, server.url)
    page.open()
    return page


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """The command line with the page's settings (the demo model, its default threshold) on the scan as the
    page hands it to the command line: read into the scene and written out by Slicer's storage node.

    Slicer stores this NIfTI with its slices in the reverse order (same voxels, same places); the
    library's registration is not exactly invariant to that order (Dice 0.99 between the two runs), so
    the page must match the run on the file it really sent.
    """
    folder = tmp_path_factory.mktemp("cli")
    scan = folder / "input.nrrd"
    env = dict(os.environ, NORMATIVEAD_HOME=str(folder / "home"), OMP_NUM_THREADS="2",
               PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "NormativeAD")]))
    # In a process of its own: slicer-core's `slicer` package imports every module of any `slicer` folder
    # on sys.path, and a pytest process's sys.path holds the tests' folders; this one holds the checkout alone.
    subprocess.run([sys.executable, "-c", WRITE_AS_SLICER, str(SAMPLE_FLAIR), str(scan)], env=env, cwd=folder,
                   check=True, capture_output=True, timeout=120)
    done = subprocess.run([sys.executable, "-m", "NormativeADLib.cli", "restore", str(scan), "--model",
                           DEMO_MODEL, "--out", str(folder / "out"), "--progress", "none"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return folder / "out"


def oriented(path):
    """An image with its axes put in LPS order (no resampling): two files on one grid then match
    voxel for voxel even when one stores the slices in the other order."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    if image.GetDimension() == 4:  # a .seg.nrrd: one segment layer
        image = image[:, :, :, 0]
    return sitk.DICOMOrient(image, "LPS")


def assert_same_grid(image, reference, what: str) -> None:
    assert image.GetSize() == reference.GetSize(), f"{what}: size {image.GetSize()} != {reference.GetSize()}"
    for name, ours, theirs in (("spacing", image.GetSpacing(), reference.GetSpacing()),
                               ("origin", image.GetOrigin(), reference.GetOrigin()),
                               ("direction", image.GetDirection(), reference.GetDirection())):
        assert np.allclose(ours, theirs, atol=1e-3), f"{what}: {name} {ours} != {theirs}"


def colour_masks(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(heatmap colour, magenta reference outline) pixels of a view."""
    rgb = pixels.astype(np.int16)
    magenta = (rgb[..., 0] > 170) & (rgb[..., 2] > 170) & (rgb[..., 1] < 110)
    saturated = (rgb.max(axis=2) - rgb.min(axis=2)) > SATURATION
    return saturated & ~magenta, magenta


def grey_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two views' pixels where both show the scan's grey (no overlay colour)."""
    rows, columns = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    a, b = a[:rows, :columns].astype(np.int16), b[:rows, :columns].astype(np.int16)
    grey = ((a.max(axis=2) - a.min(axis=2)) < 20) & ((b.max(axis=2) - b.min(axis=2)) < 20)
    return float(np.abs(a - b)[grey].mean())


def keep_screenshot(path, name: str) -> None:
    if os.environ.get("NORMATIVEAD_UPDATE_SCREENSHOT") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMAGES / name)


def test_sample_case_run_threshold_compare_download(page, cli_run, tmp_path, server):
    import SimpleITK as sitk
    from scipy import ndimage

    # Open the shipped sample case with its reference lesion, run the default model.
    loaded = time.monotonic()
    page.choose("na-scan-source", "FLAIR")
    page.wait(lambda: "opened" in page.text("na-status"), 60, "the scan did not open")
    page.choose("na-reference-source", "lesion")
    from NormativeADLib.core.catalogue import default_model

    suggested = default_model("FLAIR")  # what `normativead restore` takes for this scan without --model
    assert suggested in page.text("na-status") and suggested in page.text("na-card")
    if suggested != DEMO_MODEL:  # a better FLAIR model was installed: the test keeps its cheap one
        page.choose("na-model", DEMO_MODEL)
    assert DEMO_MODEL in page.text("na-card") and "FLAIR" in page.text("na-card")
    status = page.run_and_wait()
    print(f"page load to first heatmap: {time.monotonic() - loaded:.1f} s")
    assert status.startswith("finished"), f"{status} / {page.error()}\n{server.log()}"
    rows = page.table()
    assert len(rows) == 1 and rows[0]["Model"] == DEMO_MODEL and rows[0]["Threshold source"] == "z2"
    assert rows[0]["Dice"], "the reference was given: the table scores against it"
    keep_screenshot_path = tmp_path / "result.png"
    page.screenshot(keep_screenshot_path)
    keep_screenshot(keep_screenshot_path, "web_result.png")

    # Move the threshold: a policy, then the slider by hand; the table follows without a new run.
    volume_z2 = float(rows[0]["Anomaly volume (mL)"])
    page.choose("na-threshold-policy", "z3")
    page.wait(lambda: page.table()[0]["Threshold source"] == "z3", 30, "the z3 policy was not applied")
    assert float(page.table()[0]["Anomaly volume (mL)"]) < volume_z2
    assert page.table()[0]["Dice"], "the Dice follows the threshold against the reference"
    page.press_on_slider("na-threshold", Keys.ARROW_RIGHT, 3)
    page.wait(lambda: page.table()[0]["Threshold"] == "3.03", 30, "three steps of the slider did not re-segment")
    assert page.table()[0]["Threshold source"] == "manual"

    # The restoration beside the scan: two linked axial views, the scan under the heatmap and the
    # pseudo-healthy volume without it (only the outlines).
    page.click("na-layout-restoration")
    page.wait(lambda: len(page.views()) == 2, 30, "the restoration layout did not show two views")
    time.sleep(2)  # the views' first frames
    shot = page.screenshot(tmp_path / "restoration.png")
    keep_screenshot(tmp_path / "restoration.png", "web_restoration.png")
    scan_view, restored_view = page.view_pixels(shot, 0), page.view_pixels(shot, 1)
    assert restored_view.mean() > 10, "the pseudo-healthy view is empty"
    heat = lambda view: ((view[..., 2].astype(int) - view[..., 0]) > 60).sum()  # noqa: E731 - the colour bar's blue-green
    assert heat(scan_view) > 20 and heat(restored_view) < 5, (heat(scan_view), heat(restored_view))
    page.move_slice(0, Keys.ARROW_RIGHT, 5)

    def restored_follows() -> bool:
        moved = page.view_pixels(page.screenshot(tmp_path / "restoration_moved.png"), 1)
        return grey_difference(moved, restored_view) > 5
    page.wait(restored_follows, 30, "the pseudo-healthy view did not follow the scan's slice slider")

    # Compare with a second model: one linked view per model, one table.
    page.choose("na-compare-models", COMPARE_MODEL, close=True)
    status = page.run_and_wait("na-compare")
    assert status.startswith("finished"), f"{status} / {page.error()}\n{server.log()}"
    page.wait(lambda: len(page.views()) == 2, 30, "the comparison layout did not show two views")
    assert [row["Model"] for row in page.table()] == [DEMO_MODEL, COMPARE_MODEL]

    # Download the segmentation (both forms): the input's grid, the command line's voxels.
    scan = oriented(SAMPLE_FLAIR)
    cli_mask = sitk.GetArrayFromImage(oriented(next(cli_run.glob("segmentation.*")))) > 0
    for kind in ("labelmap", "segmentation"):
        path = page.download(kind)
        image = oriented(path)
        assert_same_grid(image, scan, path.name)
        assert np.array_equal(sitk.GetArrayFromImage(image) > 0, cli_mask), f"{path.name} differs from the CLI's"
    for kind, suffix in (("heatmap", ".nii.gz"), ("pseudo_healthy", ".nii.gz"), ("uncertainty", ".nii.gz"),
                         ("metrics", ".csv")):
        assert page.download(kind).name.endswith(suffix)

    # The picture: heatmap colour over the reference lesion, in the first model's view.
    time.sleep(2)  # the views' last frames
    shot = tmp_path / "compare.png"
    pixels = page.view_pixels(page.screenshot(shot), 0)
    keep_screenshot(shot, "web_compare.png")
    heat, outline = colour_masks(pixels)
    lesion = ndimage.binary_dilation(ndimage.binary_fill_holes(outline), iterations=2)
    assert outline.sum() > 50, "the reference outline is not on the shown slice"
    inside, outside = heat[lesion].mean(), heat[~lesion].mean()
    print(f"heatmap colour covers {inside:.0%} of the lesion's pixels and {outside:.1%} of the rest of the view")
    assert inside > 0.2 and inside > 5 * outside, "the heatmap colour does not lie over the lesion"

    # The comparison views are linked: stepping the first view's slice slider moves the second one along.
    first_before = page.view_pixels(page.screenshot(tmp_path / "before.png"), 0)
    page.move_slice(0, Keys.ARROW_RIGHT, 5)

    def linked() -> bool:
        shot = page.screenshot(tmp_path / "after.png")
        first, second = page.view_pixels(shot, 0), page.view_pixels(shot, 1)
        return grey_difference(first, first_before) > 5 and grey_difference(first, second) < 3
    page.wait(linked, 30, "the second view did not follow the first one's slice slider")


def test_cancel_leaves_the_previous_results(page):
    before = page.table()
    assert len(before) == 2, "runs after the comparison of the first test"
    page.choose("na-model", COMPARE_MODEL)
    page.click("na-run")
    page.wait(lambda: page.exists("na-cancel") and not page.text("na-status").startswith("running"), 60,
              "no progress event arrived")
    page.click("na-cancel")
    page.wait(lambda: not page.exists("na-cancel"), 30, "the cancel did not end the run")
    assert page.text("na-status").startswith("cancelled")
    assert page.table() == before
    assert len(page.views()) == 2
    page.choose("na-model", DEMO_MODEL)


@pytest.mark.skipif(sys.platform == "darwin", reason="needs a device this machine lacks: Apple's MPS is one off macOS")
def test_a_failed_run_shows_why_and_leaves_the_previous_results(page):
    before = page.table()
    page.choose("na-device", "mps")
    status = page.run_and_wait()
    assert "device mps is not available on this machine" in page.error(), f"{status} / {page.error()}"
    assert page.table() == before
    assert len(page.views()) == 2
    page.choose("na-device", "auto")


def test_bad_uploads_are_refused_in_the_page_with_the_command_lines_words(page, tmp_path, server):
    before = page.table()
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"not an image")
    cli = subprocess.run([sys.executable, "-m", "NormativeADLib.cli", "restore", str(garbage), "--model", DEMO_MODEL,
                          "--out", str(tmp_path / "out"), "--progress", "none"],
                         cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True)
    assert cli.returncode == 2
    expected = re.search(r"normativead: error: (.*)", cli.stderr).group(1).replace(str(tmp_path) + "/", "")

    page.upload("na-scan-upload", garbage)
    page.wait(lambda: "garbage.nii.gz" in page.error(), 30, "no error shown for a file that is no image")
    assert page.error() == expected
    private = next(server.tmp.glob("normativead-web-*"))
    assert not list(private.rglob("garbage.nii.gz")), "a refused upload must not stay on the server"

    oversized = tmp_path / "big.nii.gz"
    with oversized.open("wb") as handle:
        handle.truncate((MAX_UPLOAD_MB + 5) * 2**20)
    page.upload("na-scan-upload", oversized)
    page.wait(lambda: "big.nii.gz" in page.error(), 30, "no error shown for an oversized file")
    assert f"limit of this server is {MAX_UPLOAD_MB} MB" in page.error()
    assert page.table() == before, "a refused upload must leave the results in place"


def test_two_visitors_have_a_session_each(page, server, tmp_path):
    """A second browser gets its own session (process, scene, state): its scan is not the first's,
    the first keeps its scan and results; past --max-sessions the next visitor reads a busy page."""
    import urllib.error
    import urllib.request

    from web_server import MAX_SESSIONS, new_browser

    first_status, first_table = page.text("na-status"), page.table()
    assert first_table, "the first visitor's results (earlier tests) are in place"
    other = new_browser(tmp_path)
    try:
        second = Page(other, server.url)
        second.open()
        assert second.driver.current_url != page.driver.current_url  # another session's address
        assert second.table() == [] and "opened" not in second.text("na-status")
        second.choose("na-scan-source", "T1")
        second.wait(lambda: "opened" in second.text("na-status"), 60, "the second visitor's scan did not open")
        assert "T1" in second.text("na-status")
        time.sleep(1)
        assert page.text("na-status") == first_status and page.table() == first_table
        visits = 2
        while visits < MAX_SESSIONS:  # sessions nobody uses still count until they time out
            urllib.request.urlopen(server.url, timeout=180).read(1)
            visits += 1
        with pytest.raises(urllib.error.HTTPError) as busy:
            urllib.request.urlopen(server.url, timeout=60)
        assert busy.value.code == 503 and "busy" in busy.value.read().decode()
    finally:
        other.quit()


def test_an_uploaded_scan_and_its_reference_open(page, server, tmp_path):
    """Files chosen in the page are posted to the session and streamed into its private folder: a scan whose
    name holds spaces and brackets opens under a safe name that still says its contrast, then its reference."""
    scan, lesion = tmp_path / "patient 26 (copy)_FLAIR.nii.gz", tmp_path / "lesion mask.nii.gz"
    shutil.copyfile(SAMPLE_FLAIR, scan)
    shutil.copyfile(SAMPLE_LESION, lesion)
    page.upload("na-scan-upload", scan)
    page.wait(lambda: "patient_26__copy__FLAIR opened (FLAIR)" in page.text("na-status"), 60,
              f"the uploaded scan did not open: {page.text('na-status')!r} / {page.error()!r}")
    kept = list(server.tmp.glob("normativead-web-*/upload-*/patient_26__copy__FLAIR.nii.gz"))
    assert len(kept) == 1 and kept[0].read_bytes() == SAMPLE_FLAIR.read_bytes()
    page.upload("na-reference-upload", lesion)
    page.wait(lambda: list(server.tmp.glob("normativead-web-*/upload-*/lesion_mask.nii.gz")), 30,
              "the uploaded reference did not arrive")
    time.sleep(2)  # a refused reference would be removed now, with a message
    assert page.error() == "" and list(server.tmp.glob("normativead-web-*/upload-*/lesion_mask.nii.gz"))


def test_the_server_removes_its_private_folders_on_exit(server):
    folders = list(server.tmp.glob("normativead-web-*"))  # one per session, and the one started ahead
    assert folders and all(oct(f.stat().st_mode)[-3:] == "700" for f in folders)
    assert server.stop() is not None
    assert not [f for f in folders if f.exists()], "an upload folder outlived the server"
