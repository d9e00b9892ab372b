"""Every kind of bad input gets a one-line error naming the problem, a non-zero exit code and no outputs."""

import gzip
import shutil

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from NormativeADLib import cli


def _write(array, path, like=None, spacing=(2.0, 2.0, 2.0)):
    image = sitk.GetImageFromArray(array)
    if like is not None:
        image.CopyInformation(like)
    else:
        image.SetSpacing(spacing[: image.GetDimension()] if image.GetDimension() <= 3 else (*spacing, 1.0))
    sitk.WriteImage(image, str(path))
    return path


def _run(capsys, *args):
    code = cli.main(["restore", *map(str, args), "--progress", "none"])
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.fixture
def out(tmp_path):
    return tmp_path / "out"


def _assert_failed_cleanly(code, err, out, expected_code, words):
    assert code == expected_code, err
    assert err.startswith("normativead: error:") and len(err.splitlines()) == 1, err
    for word in words:
        assert word in err.lower(), err
    assert not out.exists() or not any(out.iterdir()), "a failed run left outputs behind"


def test_2d_image(tmp_path, out, capsys):
    path = _write(np.random.rand(64, 64).astype(np.float32), tmp_path / "slice.nii.gz")
    _assert_failed_cleanly(*_run(capsys, path, "--out", out), out, 2, ["2d", "3d"])


def test_4d_image(tmp_path, out, capsys):
    path = tmp_path / "series.nii.gz"  # a time series as scanners write it: (x, y, z, t)
    nib.save(nib.Nifti1Image(np.random.rand(20, 20, 20, 3).astype(np.float32), np.diag([2.0, 2, 2, 1])), path)
    _assert_failed_cleanly(*_run(capsys, path, "--out", out), out, 2, ["4d", "3 volumes"])


@pytest.mark.parametrize("value", [0.0, 7.5])
def test_empty_or_constant_volume(tmp_path, out, capsys, value):
    path = _write(np.full((40, 40, 40), value, np.float32), tmp_path / "flat.nii.gz")
    _assert_failed_cleanly(*_run(capsys, path, "--out", out), out, 2, ["constant"])


def test_nan_voxels(tmp_path, out, capsys, sample_scan):
    scan = sitk.ReadImage(str(sample_scan))
    array = sitk.GetArrayFromImage(scan)
    array[50, 100, 90] = np.nan
    array[60, 100, 90] = np.inf
    path = _write(array, tmp_path / "nan.nii.gz", like=scan)
    _assert_failed_cleanly(*_run(capsys, path, "--out", out), out, 2, ["2 nan/inf"])


def test_truncated_file(tmp_path, out, capsys, sample_scan):
    data = sample_scan.read_bytes()
    path = tmp_path / "truncated.nii.gz"
    path.write_bytes(data[: len(data) // 3])
    _assert_failed_cleanly(*_run(capsys, path, "--out", out), out, 2, ["could not be read"])


def test_corrupt_file(tmp_path, out, capsys):
    path = tmp_path / "garbage.nii.gz"
    path.write_bytes(gzip.compress(b"this is not an image" * 100))
    _assert_failed_cleanly(*_run(capsys, path, "--out", out), out, 2, ["could not be read"])


def test_missing_file_and_unknown_format(tmp_path, out, capsys):
    _assert_failed_cleanly(*_run(capsys, tmp_path / "nope.nii.gz", "--out", out), out, 2, ["not found"])
    other = tmp_path / "scan.png"
    other.write_bytes(b"x")
    _assert_failed_cleanly(*_run(capsys, other, "--out", out), out, 2, ["unsupported format"])


def test_label_map_given_as_scan(tmp_path, out, capsys, sample_lesion):
    _assert_failed_cleanly(*_run(capsys, sample_lesion, "--out", out), out, 2, ["label map"])


def test_mask_on_a_different_grid(tmp_path, out, capsys, sample_scan):
    scan = sitk.ReadImage(str(sample_scan))
    half = sitk.Resample(scan > 0, [s // 2 for s in scan.GetSize()], sitk.Transform(), sitk.sitkNearestNeighbor,
                         scan.GetOrigin(), [s * 2 for s in scan.GetSpacing()], scan.GetDirection())
    path = _write(sitk.GetArrayFromImage(half), tmp_path / "mask.nii.gz", like=half)
    _assert_failed_cleanly(*_run(capsys, sample_scan, "--mask", path, "--out", out), out, 2, ["resample"])
    shifted = sitk.Image(scan)
    shifted.SetOrigin([o + 5 for o in scan.GetOrigin()])
    path = _write(sitk.GetArrayFromImage(scan > 0), tmp_path / "shifted.nii.gz", like=shifted)
    _assert_failed_cleanly(*_run(capsys, sample_scan, "--reference", path, "--out", out), out, 2,
                           ["spacing/origin/direction"])


def test_bad_threshold_and_device(out, capsys, sample_scan):
    _assert_failed_cleanly(*_run(capsys, sample_scan, "--threshold", "fpr7", "--out", out), out, 2, ["threshold"])


def test_unknown_model(out, capsys, sample_scan):
    _assert_failed_cleanly(*_run(capsys, sample_scan, "--model", "nope", "--out", out), out, 3, ["unknown model"])


def _copy_shipped_model(tmp_path):
    from NormativeADLib.core import catalogue

    card = catalogue.get_card(catalogue.DEFAULT_MODEL)
    folder = tmp_path / "model"
    shutil.copytree(card.folder, folder)
    return card, folder


def test_missing_weights_file(tmp_path, out, capsys, sample_scan, monkeypatch):
    card, folder = _copy_shipped_model(tmp_path)
    (folder / card.weights["file"]).unlink()
    monkeypatch.setenv("NORMATIVEAD_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "models").mkdir(parents=True)
    shutil.copytree(folder, tmp_path / "home" / "models" / card.id)
    _assert_failed_cleanly(*_run(capsys, sample_scan, "--model", card.id, "--out", out), out, 3,
                           ["missing", "re-import"])


def test_weights_not_matching_card(tmp_path, out, capsys, sample_scan, monkeypatch):
    card, folder = _copy_shipped_model(tmp_path)
    weights = folder / card.weights["file"]
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    monkeypatch.setenv("NORMATIVEAD_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "models").mkdir(parents=True)
    shutil.copytree(folder, tmp_path / "home" / "models" / card.id)
    _assert_failed_cleanly(*_run(capsys, sample_scan, "--model", card.id, "--out", out), out, 3, ["sha256"])


def test_output_folder_not_writable(tmp_path, capsys, sample_scan):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, err = _run(capsys, sample_scan, "--out", blocker / "sub")
    assert code == 4 and "cannot write" in err and len(err.splitlines()) == 1, err
    code, err = _run(capsys, sample_scan, "--out", blocker)
    assert code == 4 and "is a file" in err, err
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("extra, code, fragment", [
    (["--model", "no-such-model"], 3, "unknown model 'no-such-model'"),
    (["--model", "ae-ixi-t1", "--threshold", "often"], 2, "threshold 'often' is neither a threshold of model ae-ixi-t1"),
    (["--out", "/proc/normativead"], 4, "cannot write to /proc/normativead"),
])
def test_command_line_mistakes_answer_before_the_heavy_imports(sample_scan, extra, code, fragment):
    """A wrong model, threshold or output folder is reported without importing torch or SimpleITK."""
    import subprocess
    import sys

    script = ("import sys; from NormativeADLib import cli; code = cli.main(sys.argv[1:]); "
              "heavy = [m for m in ('torch', 'SimpleITK', 'nibabel', 'monai') if m in sys.modules]; "
              "print('heavy', heavy); sys.exit(code)")
    run = subprocess.run([sys.executable, "-c", script, "restore", str(sample_scan), *extra],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == code, run.stderr
    assert fragment in run.stderr and "Traceback" not in run.stderr
    assert "heavy []" in run.stdout
