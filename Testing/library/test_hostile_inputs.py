"""A corpus of hostile, malformed and unusual inputs and faults, each run through `normativead restore`
as a subprocess.

Every kind has its expected exit code (0 ok, 2 bad input, 3 model, 4 output, 130 cancelled) and a
fragment of its one-line message. For each run: the exit code, exactly one line on stderr and no
traceback, no partial output (the output folder is as it was before: absent, empty or with the same
files), and every input file unchanged (sha256). Inputs are generated here from the shipped sample
case (mostly a 2 mm copy of it), read-only, and small; most kinds fail before the heavy imports.
Faults: two runs into one folder, SIGINT/SIGTERM at start-up, during the restoration and while the
outputs are written, a full disk (simulated, and a real 1 MB tmpfs where user namespaces allow).
The existing in-process bad-input tests (test_bad_input.py) are not repeated here.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from NormativeADLib.core.options import output_names

REPO = Path(__file__).resolve().parents[2]
SAMPLE_T1 = REPO / "Resources" / "SampleData" / "mslub_patient26_t1.nii.gz"
FAST_MODEL = "intensity-t1"  # no network: a whole run costs registration and writing only
# The sample's registration (model/MNI points -> scan points), as transform.tfm records it: runs that
# give it with --transform skip the registration (their kinds are about reading and writing).
SAMPLE_TRANSFORM = textwrap.dedent("""\
    #Insight Transform File V1.0
    #Transform 0
    Transform: AffineTransform_double_3_3
    Parameters: 0.80055466 0.00180131 -0.02153159 -0.00435644 0.84522217 -0.01742420 0.01891923 0.00036575 0.69173237 -0.59039769 -2.05869022 -0.46984817
    FixedParameters: 0 21.345462760531795 10.599507162544468
    """)
TIMEOUT_S = 240


# ----------------------------------------------------------------------------------------------
# Running the command line


def cli_command(args: list) -> list[str]:
    return [sys.executable, "-m", "NormativeADLib.cli", "restore", *map(str, args)]


def environment(**extra) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="2", PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_cli(args: list, cwd: Path, env: dict | None = None, command: list | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command or cli_command(args), cwd=cwd, env=env or environment(), capture_output=True,
                          text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, str] | None:
    """Every file under folder (hidden ones too) with its sha256; None when there is no such folder."""
    if not folder.is_dir():
        return None
    return {str(p.relative_to(folder)): sha256(p) if p.is_file() else "dir" for p in sorted(folder.rglob("*"))}


def assert_one_line(stderr: str, start: str, fragment: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert lines[0].startswith(start), lines[0]
    assert fragment.lower() in lines[0].lower(), f"{fragment!r} not in: {lines[0]}"


# ----------------------------------------------------------------------------------------------
# The corpus: each kind builds its files and its command line


@dataclass
class Run:
    args: list
    inputs: list[Path]
    out: Path
    env: dict = field(default_factory=dict)
    command: list | None = None  # a wrapper instead of the plain command line (fault injection)


class Corpus:
    def __init__(self, root: Path):
        self.root = root
        scan = sitk.ReadImage(str(SAMPLE_T1))
        size = [int(round(n * s / 2.0)) for n, s in zip(scan.GetSize(), scan.GetSpacing())]
        self.image = sitk.Resample(scan, size, sitk.Transform(), sitk.sitkLinear, scan.GetOrigin(), [2.0] * 3,
                                   scan.GetDirection(), 0.0, sitk.sitkFloat32)
        self.array = sitk.GetArrayFromImage(self.image)  # (z, y, x)
        self.scan = self.write_image(self.image, "small.nii.gz")  # 91x109x91 at 2 mm, 1.6 MB
        self.raw_nii = self.write_image(self.image, "small.nii", compress=False)
        self.brain = self.like((self.array > 0).astype(np.uint8), "brain.nii.gz")
        self.transform = self.text("sample.tfm", SAMPLE_TRANSFORM)
        self.runs: dict[str, Run] = {}

    def path(self, name: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_image(self, image: sitk.Image, name: str, compress: bool = True) -> Path:
        path = self.path(name)
        sitk.WriteImage(image, str(path), useCompression=compress)
        return path

    def like(self, array: np.ndarray, name: str, compress: bool = True) -> Path:
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(self.image)
        return self.write_image(image, name, compress)

    def text(self, name: str, content: str) -> Path:
        path = self.path(name)
        path.write_text(content)
        return path

    def data(self, name: str, content: bytes) -> Path:
        path = self.path(name)
        path.write_bytes(content)
        return path


CASES: dict[str, tuple[int, str, object]] = {}


def case(kind: str, code: int, fragment: str):
    """Register a kind: expected exit code, message fragment, and build(corpus, out) -> Run."""
    def register(build):
        CASES[kind] = (code, fragment, build)
        return build
    return register


def scan_run(c: Corpus, out: Path, scan: Path, *extra, inputs=()) -> Run:
    return Run([scan, "--out", out, "--progress", "none", "--device", "cpu", *extra], [scan, *inputs], out)


def flip_byte(data: bytes, at: int) -> bytes:
    changed = bytearray(data)
    changed[at] ^= 0x5A
    return bytes(changed)


def nifti_header_bytes(shape, dtype=np.float32, pixdim=(2.0, 2.0, 2.0)) -> bytes:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_zooms(pixdim[: len(shape)])
    header["vox_offset"] = 352
    return header.binaryblock + b"\0" * 4


# -- the command line: files, model, threshold, output folder (checked before any heavy import)

@case("scan is a folder named like a scan", 2, "is a folder")
def _(c, out):
    folder = c.path("dicom.nii.gz")
    folder.mkdir(exist_ok=True)
    return scan_run(c, out, folder)


@case("scan is an empty file", 2, "could not be read")
def _(c, out):
    return scan_run(c, out, c.data("empty.nii.gz", b""))


@case("scan is text named .nii", 2, "could not be read")
def _(c, out):
    return scan_run(c, out, c.data("notes.nii", b"patient notes, not an image\n" * 40))


@case("scan is a dangling symlink", 2, "not found")
def _(c, out):
    link = c.path("dangling.nii.gz")
    if not link.is_symlink():
        link.symlink_to(c.root / "no-such-target.nii.gz")
    return Run([link, "--out", out, "--progress", "none"], [], out)


@case("mask is a folder", 2, "is a folder")
def _(c, out):
    folder = c.path("maskdir.nii.gz")
    folder.mkdir(exist_ok=True)
    return scan_run(c, out, c.scan, "--mask", folder)


@case("reference file missing", 2, "not found")
def _(c, out):
    return scan_run(c, out, c.scan, "--reference", c.root / "no-lesion.nii.gz")


@case("transform file missing", 2, "transform file not found")
def _(c, out):
    return scan_run(c, out, c.scan, "--transform", c.root / "no.tfm")


@case("threshold negative", 2, "must be a finite number of at least")
def _(c, out):
    return scan_run(c, out, c.scan, "--threshold=-1")


@case("threshold NaN", 2, "must be a finite number of at least")
def _(c, out):
    return scan_run(c, out, c.scan, "--threshold", "nan")


@case("threshold the model does not calibrate", 2, "has no calibrated fpr5 threshold")
def _(c, out):
    return scan_run(c, out, c.scan, "--model", FAST_MODEL, "--threshold", "fpr5")


@case("unknown model", 3, "unknown model 'no-such-model'")
def _(c, out):
    return scan_run(c, out, c.scan, "--model", "no-such-model")


@case("out is a file", 4, "is a file")
def _(c, out):
    blocker = c.text("out-is-a-file", "not a folder")
    return Run([c.scan, "--out", blocker, "--progress", "none"], [c.scan, blocker], blocker)


@case("out under /proc", 4, "cannot write to /proc/normativead")
def _(c, out):
    return Run([c.scan, "--out", "/proc/normativead", "--progress", "none"], [c.scan], Path("/proc/normativead"))


@case("out below a file", 4, "cannot write")
def _(c, out):
    blocker = c.text("blocker", "a file")
    return Run([c.scan, "--out", blocker / "sub", "--progress", "none"], [c.scan, blocker], blocker / "sub")


@case("out holds a previous run's outputs", 4, "already exists")
def _(c, out):
    out.mkdir(parents=True)
    for name in output_names("nifti"):
        (out / name).write_text("an earlier result")
    return scan_run(c, out, c.scan)


@case("out claimed by another running process", 4, "another normativead run")
def _(c, out):
    # A process holding the output folder's claim for 60 s (killed when the test ends).
    holder = ("import sys, time; from NormativeADLib.core import writes\n"
              "with writes.claim_output_dir(sys.argv[1]):\n"
              "    print('held', flush=True); time.sleep(60)\n")
    return Run([c.scan, "--out", out, "--progress", "none"], [c.scan], out, env={"holder": holder})


# -- the header: layout, spacing, size, and whether the file holds what it promises

@case("2D image (NRRD)", 2, "is 2d")
def _(c, out):
    return scan_run(c, out, c.write_image(c.image[:, :, 45], "slice.nrrd"))


@case("4D series of 3 volumes (MHA)", 2, "4d (3 volumes)")
def _(c, out):
    series = sitk.JoinSeries([c.image] * 3)
    return scan_run(c, out, c.write_image(series, "series.mha"))


@case("3 slices only", 2, "too thin")
def _(c, out):
    return scan_run(c, out, c.write_image(c.image[:, :, 40:43], "thin.nii.gz"))


@case("RGB voxels", 2, "vector/rgb")
def _(c, out):
    rgb = sitk.Compose([sitk.Cast(c.image, sitk.sitkUInt8)] * 3)
    return scan_run(c, out, c.write_image(rgb, "rgb.nrrd"))


@case("complex voxels", 2, "complex voxels")
def _(c, out):
    path = c.path("complex.nii.gz")
    nib.save(nib.Nifti1Image(c.array.T.astype(np.complex64) * (1 + 1j), np.diag([2.0, 2, 2, 1])), path)
    return scan_run(c, out, path)


@case("zero voxel spacing (NIfTI pixdim 0)", 2, "spacing must be positive")
def _(c, out):
    data = bytearray(c.raw_nii.read_bytes())
    data[80:92] = struct.pack("<3f", 0.0, 0.0, 0.0)
    return scan_run(c, out, c.data("zero_spacing.nii.gz", gzip.compress(bytes(data), 1)))


@case("NaN voxel spacing (NIfTI pixdim NaN)", 2, "spacing must be positive")
def _(c, out):
    data = bytearray(c.raw_nii.read_bytes())
    data[80:84] = struct.pack("<f", float("nan"))
    return scan_run(c, out, c.data("nan_spacing.nii", bytes(data)))


@case("zero voxel spacing (MHA)", 2, "spacing must be positive")
def _(c, out):
    path = c.write_image(c.image, "zero_spacing.mha", compress=False)
    text = path.read_bytes()
    head, _, rest = text.partition(b"ElementSpacing = ")
    path.write_bytes(head + b"ElementSpacing = 0 0 0" + rest[rest.index(b"\n"):])
    return scan_run(c, out, path)


@case("100 mm voxel spacing", 2, "voxel spacing 100 x 100 x 100 mm")
def _(c, out):
    image = sitk.Image(c.image)
    image.SetSpacing([100.0] * 3)
    return scan_run(c, out, c.write_image(image, "coarse.nii.gz"))


@case("8x8x8 volume", 2, "no brain found")
def _(c, out):
    noise = np.random.default_rng(8).normal(100, 20, (8, 8, 8)).astype(np.float32)
    return scan_run(c, out, c.write_image(sitk.GetImageFromArray(noise), "tiny.nii.gz"))


@case("pure noise, 40 mm cube", 2, "no brain found")
def _(c, out):
    noise = np.random.default_rng(40).normal(100, 20, (40, 40, 40)).astype(np.float32)
    return scan_run(c, out, c.write_image(sitk.GetImageFromArray(noise), "noise40.nii.gz"))


@case("header promises 512^3, file holds 3.6 MB", 2, "header promises 512x512x512 voxels")
def _(c, out):
    body = nifti_header_bytes((512, 512, 512)) + c.array.tobytes()
    return scan_run(c, out, c.data("promise.nii.gz", gzip.compress(body, 1)))


@case("header promises 4096^3 voxels", 2, "million")
def _(c, out):
    return scan_run(c, out, c.data("huge.nii", nifti_header_bytes((4096, 4096, 4096)) + b"\0" * 4096))


@case("one byte flipped inside the gzip stream", 2, "corrupt")
def _(c, out):
    data = c.scan.read_bytes()
    return scan_run(c, out, c.data("flipped.nii.gz", flip_byte(data, len(data) // 2)))


@case("gzip CRC damaged", 2, "corrupt")
def _(c, out):
    data = c.scan.read_bytes()
    return scan_run(c, out, c.data("crc.nii.gz", flip_byte(data, len(data) - 6)))


@case("gzip stream cut in half", 2, "truncated")
def _(c, out):
    data = c.scan.read_bytes()
    return scan_run(c, out, c.data("half.nii.gz", data[: len(data) // 2]))


@case("uncompressed NIfTI cut short", 2, "truncated")
def _(c, out):
    data = c.raw_nii.read_bytes()
    return scan_run(c, out, c.data("short.nii", data[: len(data) - 1000]))


@case("uncompressed NRRD cut short", 2, "truncated")
def _(c, out):
    data = c.write_image(c.image, "raw.nrrd", compress=False).read_bytes()
    return scan_run(c, out, c.data("short.nrrd", data[: len(data) * 2 // 3]))


@case("one byte flipped in a gzip NRRD", 2, "corrupt")
def _(c, out):
    data = c.write_image(c.image, "gz.nrrd").read_bytes()
    return scan_run(c, out, c.data("flipped.nrrd", flip_byte(data, len(data) // 2)))


@case("uncompressed MHA cut short", 2, "truncated")
def _(c, out):
    data = c.write_image(c.image, "raw.mha", compress=False).read_bytes()
    return scan_run(c, out, c.data("short.mha", data[: len(data) // 2]))


@case("one byte flipped in a compressed MHA", 2, "corrupt")
def _(c, out):
    data = c.write_image(c.image, "z.mha").read_bytes()
    return scan_run(c, out, c.data("flipped.mha", flip_byte(data, len(data) // 2)))


@case("MHA header of garbage", 2, "could not be read")
def _(c, out):
    return scan_run(c, out, c.data("garbage.mha", b"ObjectType = Banana\nNDims = many\n" + os.urandom(64)))


@case("NRRD header whose data file is missing", 2, "could not be read")
def _(c, out):
    header = ("NRRD0004\ntype: float\ndimension: 3\nsizes: 91 109 91\nspacings: 2 2 2\nencoding: raw\n"
              "endian: little\ndata file: missing.raw\n")
    return scan_run(c, out, c.text("detached.nhdr", header))


# -- the voxels

@case("Inf voxels (NRRD)", 2, "nan/inf voxels")
def _(c, out):
    array = c.array.copy()
    array[45, 50:52, 45] = np.inf
    return scan_run(c, out, c.like(array, "inf.nrrd"))


@case("constant int16 volume (MHA)", 2, "is constant")
def _(c, out):
    return scan_run(c, out, c.like(np.full(c.array.shape, 300, np.int16), "flat.mha"))


@case("brain mask with NaN voxels", 2, "nan/inf voxels")
def _(c, out):
    mask = np.where(c.array > 0, 1.0, np.nan).astype(np.float32)
    path = c.path("nan_mask.nii.gz")
    nib.save(nib.Nifti1Image(mask.T, nib.load(c.scan).affine), path)
    return scan_run(c, out, c.scan, "--mask", path, inputs=[path])


@case("brain mask over the whole field (7 L)", 2, "far more than any brain")
def _(c, out):
    path = c.like(np.ones(c.array.shape, np.uint8), "field_mask.nii.gz")
    return scan_run(c, out, c.scan, "--mask", path, inputs=[path])


@case("brain mask empty", 2, "is empty")
def _(c, out):
    path = c.like(np.zeros(c.array.shape, np.uint8), "empty_mask.nii.gz")
    return scan_run(c, out, c.scan, "--mask", path, inputs=[path])


@case("brain mask of 8 mL", 2, "less than any brain")
def _(c, out):
    mask = np.zeros(c.array.shape, np.uint8)
    mask[40:50, 50:60, 40:50] = 1
    path = c.like(mask, "tiny_mask.nii.gz")
    return scan_run(c, out, c.scan, "--mask", path, inputs=[path])


@case("brain mask with complex voxels", 2, "complex voxels")
def _(c, out):
    path = c.path("complex_mask.nii.gz")
    nib.save(nib.Nifti1Image((c.array.T > 0).astype(np.complex64), nib.load(c.scan).affine), path)
    return scan_run(c, out, c.scan, "--mask", path, inputs=[path])


@case("reference with a NaN voxel", 2, "nan/inf voxels")
def _(c, out):
    lesion = np.zeros(c.array.shape, np.float32)
    lesion[45, 50:53, 40:43] = 1
    lesion[0, 0, 0] = np.nan
    path = c.path("nan_lesion.nii.gz")
    nib.save(nib.Nifti1Image(lesion.T, nib.load(c.scan).affine), path)
    return scan_run(c, out, c.scan, "--reference", path, inputs=[path])


@case("transform file of garbage", 2, "could not be read")
def _(c, out):
    path = c.text("garbage.tfm", "this is no transform\n")
    return scan_run(c, out, c.scan, "--transform", path, inputs=[path])


@case("transform with NaN parameters", 2, "could not be read")
def _(c, out):
    path = c.text("nan.tfm", SAMPLE_TRANSFORM.replace("0.80055466", "NaN"))
    return scan_run(c, out, c.scan, "--transform", path, inputs=[path])


@case("transform collapsing the volume (zero matrix)", 2, "degenerate")
def _(c, out):
    path = c.text("zero.tfm", SAMPLE_TRANSFORM.replace(
        "0.80055466 0.00180131 -0.02153159 -0.00435644 0.84522217 -0.01742420 0.01891923 0.00036575 0.69173237",
        "0 0 0 0 0 0 0 0 0"))
    return scan_run(c, out, c.scan, "--transform", path, inputs=[path])


# -- preprocessing: the whole-head brain search (preprocess.whole_head_brain) and a contrast check

@case("pure noise, brain-sized (91x109x91 at 2 mm)", 2, "no brain found")
def _(c, out):
    noise = np.random.default_rng(91).normal(500, 100, c.array.shape).astype(np.float32)
    return scan_run(c, out, c.like(noise, "noise_full.nii.gz"), "--model", FAST_MODEL)


@case("contrast-inverted scan (-scan)", 2, "contrast")
def _(c, out):
    return scan_run(c, out, c.like(-c.array, "inverted.nii.gz"), "--model", FAST_MODEL)


# -- a full disk, simulated: ITK's NIfTI writer reports it on the C stderr only and goes on

DISK_FULL = textwrap.dedent("""\
    import collections, os, shutil, sys
    import SimpleITK
    real, calls = SimpleITK.WriteImage, [0]

    def full_disk(image, path, *args, **kwargs):  # the first image fits, the second finds the disk full
        calls[0] += 1
        if calls[0] == 1:
            return real(image, path, *args, **kwargs)
        open(path, "wb").close()
        os.write(2, b"** ERROR: NWAD: wrote only 0 of 3610344 bytes to file\\n")

    SimpleITK.WriteImage = full_disk
    shutil.disk_usage = lambda path: collections.namedtuple("usage", "total used free")(10**9, 10**9, 4096)
    from NormativeADLib import cli
    sys.exit(cli.main(sys.argv[1:]))
    """)


@case("disk full while writing (simulated)", 4, "no space left on the device of")
def _(c, out):
    run = scan_run(c, out, c.scan, "--model", FAST_MODEL, "--transform", c.transform, inputs=[c.transform])
    run.command = [sys.executable, "-c", DISK_FULL, "restore", *map(str, run.args)]
    return run


NEEDS_PREPROCESS: dict[str, str] = {}  # kinds the product does not handle yet (xfail with the reason)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Every kind's files, built once, then made read-only (the runs must not change them)."""
    c = Corpus(tmp_path_factory.mktemp("hostile"))
    for kind, (_, _, build) in CASES.items():
        c.runs[kind] = build(c, c.root / "out" / f"{len(c.runs):02d}")
    for path in c.root.rglob("*"):
        if path.is_file() and not path.is_symlink() and "out" not in path.relative_to(c.root).parts:
            path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    return c


def _param(kind):
    marks = [pytest.mark.xfail(reason=NEEDS_PREPROCESS[kind], strict=False)] if kind in NEEDS_PREPROCESS else []
    return pytest.param(kind, id=kind.replace(" ", "-"), marks=marks)


@pytest.mark.parametrize("kind", [_param(kind) for kind in CASES])
def test_hostile_input(corpus, kind, tmp_path):
    code, fragment, _ = CASES[kind]
    run = corpus.runs[kind]
    inputs = {p: sha256(p) for p in run.inputs if p.is_file()}
    before = snapshot(run.out)
    holder = None
    if "holder" in run.env:
        holder = subprocess.Popen([sys.executable, "-c", run.env["holder"], str(run.out)], env=environment(),
                                  stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(run.out)
    try:
        result = run_cli(run.args, tmp_path, command=run.command and [*run.command])
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
    assert result.returncode == code, result.stderr
    assert_one_line(result.stderr, "normativead: error:", fragment)
    if holder is None:
        assert snapshot(run.out) == before, "the failed run left or changed outputs"
    else:  # the refused run touched nothing of the holder's (its claim file included)
        assert snapshot(run.out) == before
    assert {p: sha256(p) for p in inputs} == inputs, "an input file was changed"


def test_corpus_is_large_enough():
    assert len(CASES) + len(FAULTS) >= 40


# ----------------------------------------------------------------------------------------------
# Faults on whole runs: concurrency, signals, a real full disk; and valid unusual variants

FAULTS = {
    "two runs into one folder (the second, plain and --overwrite)": (4, "another normativead run"),
    "SIGINT at start-up": (130, "cancelled"),
    "SIGTERM at start-up": (130, "cancelled"),
    "SIGTERM during the restoration": (130, "cancelled"),
    "SIGINT while the outputs are written": (130, "cancelled"),
    "disk full while writing (1 MB tmpfs)": (4, "no space left on the device of"),
    "valid: NRRD, int16, flipped x axis, unicode folder": (0, ""),
    "valid: MHA, int8, 4D with one volume": (0, ""),
}


def json_events(process: subprocess.Popen):
    for line in process.stdout:
        if line.startswith("{"):
            yield json.loads(line)


def caught_signals(pid: int) -> int:
    """The mask of signals a process has handlers for (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    return 0


def finish(process: subprocess.Popen) -> tuple[int, str]:
    try:
        _, err = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return process.returncode, err


def assert_cancelled(process: subprocess.Popen, out: Path, may_be_complete: bool = False) -> None:
    """Exit 130, one line, and nothing in out: or, for a signal that came as the finished outputs
    were moved into place (a window of milliseconds), all of them."""
    code, err = finish(process)
    assert code == 130, err
    if may_be_complete and "outputs were complete" in err:
        assert_one_line(err, "normativead: cancelled", str(out))
        assert sorted(snapshot(out)) == sorted(output_names("nifti"))
        return
    assert_one_line(err, "normativead: cancelled", "nothing was written")
    assert snapshot(out) is None, f"a cancelled run left {snapshot(out)}"


def test_two_runs_into_one_folder(corpus, tmp_path):
    """The second run to a folder another run is writing refuses at once (exit 4), with and without
    --overwrite; the first finishes with its outputs complete. A whole run with registration."""
    out = tmp_path / "out"
    args = [corpus.scan, "--out", out, "--device", "cpu"]
    inputs = sha256(corpus.scan)
    first = subprocess.Popen(cli_command([*args, "--progress", "json"]), cwd=tmp_path, env=environment(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        next(json_events(first))  # its claim is taken before its first event
        for extra in ([], ["--overwrite"]):
            started = time.monotonic()
            second = run_cli([*args, "--progress", "none", *extra], tmp_path)
            assert second.returncode == 4, second.stderr
            assert_one_line(second.stderr, "normativead: error:", "another normativead run")
            assert f"pid {first.pid}" in second.stderr
            assert time.monotonic() - started < 30, "the second run did work before refusing"
        code, err = finish(first)
    finally:
        first.kill()
    assert code == 0, err
    assert sorted(snapshot(out)) == sorted(output_names("nifti")), "outputs incomplete or with leftovers"
    assert sha256(corpus.scan) == inputs


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc to see the handlers")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_at_start_up(corpus, tmp_path, signum):
    """A signal as soon as the command has its handlers (before the model, the scan or torch)."""
    out = tmp_path / "out"
    process = subprocess.Popen(cli_command([corpus.scan, "--out", out, "--progress", "none", "--device", "cpu"]),
                               cwd=tmp_path, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 60
    while not caught_signals(process.pid) & (1 << (signal.SIGTERM - 1)):
        assert process.poll() is None and time.monotonic() < deadline, "the handlers never came"
        time.sleep(0.001)
    process.send_signal(signum)
    assert_cancelled(process, out)


def test_sigterm_during_the_restoration(corpus, tmp_path):
    out = tmp_path / "out"
    process = subprocess.Popen(
        cli_command([corpus.scan, "--out", out, "--progress", "json", "--device", "cpu", "--transform",
                     corpus.transform]),
        cwd=tmp_path, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for event in json_events(process):
        if event.get("stage") == "restore":
            process.send_signal(signal.SIGTERM)
            break
    assert_cancelled(process, out)


def test_sigint_while_the_outputs_are_written(corpus, tmp_path):
    """The signal comes when the staging folder exists: the outputs are being written."""
    out = tmp_path / "out"
    process = subprocess.Popen(
        cli_command([corpus.scan, "--out", out, "--progress", "none", "--device", "cpu", "--model", FAST_MODEL,
                     "--transform", corpus.transform]),
        cwd=tmp_path, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + TIMEOUT_S
    while not (out.is_dir() and any(p.name.startswith(".normativead-") for p in out.iterdir())):
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.002)
    process.send_signal(signal.SIGINT)
    assert_cancelled(process, out, may_be_complete=True)


def _user_namespaces() -> bool:
    if not shutil.which("unshare") or not sys.platform.startswith("linux"):
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _user_namespaces(), reason="needs unshare and user namespaces for a private 1 MB tmpfs")
@pytest.mark.parametrize("progress", ["none", "json"])  # json: the outputs go in before the figures are drawn
def test_disk_full_on_a_real_file_system(corpus, tmp_path, progress):
    """The output folder on a 1 MB tmpfs (mounted in a private namespace): exit 4, one line naming
    the folder and the space needed, nothing left on it."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    listing = tmp_path / "left.txt"
    script = ('mount -t tmpfs -o size=1m tmpfs "$0" || exit 99; "$@"; code=$?; '
              f'ls -A "$0" > {listing}; exit $code')
    command = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, str(mount),
               *cli_command([corpus.scan, "--out", mount / "out", "--progress", progress, "--device", "cpu",
                             "--model", FAST_MODEL, "--transform", corpus.transform])]
    result = run_cli([], tmp_path, command=command)
    assert result.returncode == 4, result.stderr
    assert_one_line(result.stderr, "normativead: error:", f"no space left on the device of {mount / 'out'}")
    assert "the outputs need" in result.stderr
    assert listing.read_text() == "", f"left on the full disk: {listing.read_text()}"


def test_valid_nrrd_int16_flipped_unicode(corpus, tmp_path):
    """NRRD, int16 voxels, the x axis stored flipped (same physical image), in a folder named with
    accents, CJK and a space: a whole run of the default model succeeds."""
    array = np.clip(corpus.array, 0, None).astype(np.int16)[:, :, ::-1]
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(corpus.image.GetSpacing())
    direction = np.array(corpus.image.GetDirection()).reshape(3, 3)
    image.SetOrigin(corpus.image.TransformIndexToPhysicalPoint([corpus.image.GetSize()[0] - 1, 0, 0]))
    image.SetDirection((direction * [-1, 1, 1]).ravel().tolist())
    folder = tmp_path / "données IRM 扫描"
    folder.mkdir()
    scan = folder / "sujet é 1.nrrd"
    sitk.WriteImage(image, str(scan), useCompression=True)
    digest = sha256(scan)
    out = folder / "résultats"
    result = run_cli([scan, "--out", out, "--progress", "none", "--device", "cpu", "--format", "nrrd",
                      "--transform", corpus.transform, "--json"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(snapshot(out)) == sorted(output_names("nrrd"))
    assert json.loads(result.stdout)["metrics"]["case"] == "sujet é 1"
    heatmap = sitk.ReadImage(str(out / "heatmap.nrrd"))
    assert heatmap.GetSize() == image.GetSize() and np.allclose(heatmap.GetDirection(), image.GetDirection())
    assert sha256(scan) == digest


def test_valid_mha_int8_4d_one_volume(corpus, tmp_path):
    """MHA, int8 voxels (0..127), stored as 4D with one volume: a whole run succeeds on its 3D grid."""
    array = np.round(np.clip(corpus.array, 0, None) / corpus.array.max() * 127).astype(np.int8)
    volume = sitk.GetImageFromArray(array)
    volume.CopyInformation(corpus.image)
    scan = tmp_path / "int8_4d.mha"
    sitk.WriteImage(sitk.JoinSeries([volume]), str(scan), useCompression=True)
    assert sitk.ReadImage(str(scan)).GetDimension() == 4
    digest = sha256(scan)
    out = tmp_path / "out"
    result = run_cli([scan, "--out", out, "--progress", "none", "--device", "cpu", "--model", FAST_MODEL,
                      "--transform", corpus.transform], tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(snapshot(out)) == sorted(output_names("nifti"))
    assert sitk.ReadImage(str(out / "segmentation.nii.gz")).GetSize() == volume.GetSize()
    assert sha256(scan) == digest


# ----------------------------------------------------------------------------------------------
# The header checks accept what real files look like (in-process, no run)


def _valid_layouts(c: Corpus, folder: Path) -> dict[str, Path]:
    """Files that are unusual but sound: each must read as the scan's grid."""
    uint8 = np.round(np.clip(c.array, 0, None) / c.array.max() * 255).astype(np.uint8)
    files = {}
    scaled = nib.Nifti1Image(uint8.T, nib.load(c.scan).affine)
    scaled.header.set_slope_inter(2.0, 0.0)  # IXI: uint8 on disk, float for ITK
    files["scaled uint8 NIfTI"] = folder / "scaled.nii.gz"
    nib.save(scaled, files["scaled uint8 NIfTI"])
    raw = c.raw_nii.read_bytes()
    half = len(raw) // 2
    files["gzip of two members"] = folder / "members.nii.gz"
    files["gzip of two members"].write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]))
    files["gzip with zero padding"] = folder / "padded.nii.gz"
    files["gzip with zero padding"].write_bytes(gzip.compress(raw) + b"\0" * 512)
    for name, suffix, compress in (("gzip NRRD", ".nrrd", True), ("raw NRRD", ".nrrd", False),
                                   ("compressed MHA", ".mha", True), ("raw MHA", ".mha", False)):
        files[name] = folder / f"{name.replace(' ', '_')}{suffix}"
        sitk.WriteImage(c.image, str(files[name]), useCompression=compress)
    detached = folder / "detached.nhdr"
    sitk.WriteImage(c.image, str(detached))
    files["detached NRRD"] = detached
    return files


def test_header_checks_accept_sound_files(corpus, tmp_path):
    from NormativeADLib import io

    for name, path in _valid_layouts(corpus, tmp_path).items():
        image = io.read_image(path, "scan")
        assert image.GetSize() == corpus.image.GetSize(), name
        assert np.allclose(image.GetSpacing(), corpus.image.GetSpacing()), name
