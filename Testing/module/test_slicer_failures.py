"""Failures and cancels of the Slicer logic (NormativeADSlicerLib.logic.Job) on a real MRML scene.

What the command-line corpus (Testing/library/test_hostile_inputs.py) checks for the files, checked
here for the module: hostile volumes and masks in the scene, an output folder that cannot be written,
a process that crashes or is killed, and cancels; each leaves the scene exactly as it was (node count
and names, the layout), reports one line, and removes its work folder. A comparison of two models
cancelled or failed during the second model leaves no half layout and none of the first model's nodes.
A job that has ended, whatever its outcome, is freed as soon as the caller lets it go.

Runs use the real command line in a child process (ProcessRunner) where the failure is the command
line's; the first model of a comparison is replayed from one real run on a 2 mm copy of the sample
case (intensity-t1, registration given), made once for the module.
"""

from __future__ import annotations

import dataclasses
import gc
import shutil
import signal
import sys
import textwrap
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
from slicer_testing import SAMPLE_T1, load_volume, require_slicer_core

require_slicer_core()

import slicer  # noqa: E402

from NormativeADSlicerLib import comparison, scene as scene_logic  # noqa: E402
from NormativeADSlicerLib.logic import Job, RunSettings  # noqa: E402
from NormativeADSlicerLib.process import ProcessRunner, RunOutcome  # noqa: E402
from NormativeADLib.core.options import RestoreOptions  # noqa: E402

FAST_MODEL = "intensity-t1"
SLOW_MODEL = "ae-ixi-t1"
TIMEOUT_S = 300
SAMPLE_TRANSFORM = textwrap.dedent("""\
    #Insight Transform File V1.0
    #Transform 0
    Transform: AffineTransform_double_3_3
    Parameters: 0.80055466 0.00180131 -0.02153159 -0.00435644 0.84522217 -0.01742420 0.01891923 0.00036575 0.69173237 -0.59039769 -2.05869022 -0.46984817
    FixedParameters: 0 21.345462760531795 10.599507162544468
    """)


def scene_state(mrml) -> dict:
    """What a failed or cancelled job must leave as it was: every node (id, class, name), the layout."""
    nodes = [mrml.GetNthNode(i) for i in range(mrml.GetNumberOfNodes())]
    layout = mrml.GetSingletonNode("vtkMRMLLayoutNode", "vtkMRMLLayoutNode")
    return {
        "count": len(nodes),
        "nodes": [(n.GetID(), n.GetClassName(), n.GetName()) for n in nodes],
        "layout": None if layout is None else (layout.GetViewArrangement(),
                                               layout.IsLayoutDescription(comparison.LAYOUT_ID)),
    }


def assert_no_comparison(mrml) -> None:
    for i in range(2):
        assert mrml.GetSingletonNode(comparison.view_tag(i), "vtkMRMLSliceNode") is None, "a half layout is left"
    assert mrml.GetSingletonNode(comparison.TABLE_VIEW_TAG, "vtkMRMLTableViewNode") is None
    assert scene_logic.table_node(mrml, create=False) is None
    assert not scene_logic.results_in_scene(mrml)


@pytest.fixture(scope="module")
def small_files(tmp_path_factory):
    """The sample case at 2 mm (NRRD, as the module writes its inputs) and its registration."""
    import SimpleITK as sitk

    folder = tmp_path_factory.mktemp("small")
    scan = sitk.ReadImage(str(SAMPLE_T1))
    size = [int(round(n * s / 2.0)) for n, s in zip(scan.GetSize(), scan.GetSpacing())]
    small = sitk.Resample(scan, size, sitk.Transform(), sitk.sitkLinear, scan.GetOrigin(), [2.0] * 3,
                          scan.GetDirection(), 0.0, sitk.sitkFloat32)
    sitk.WriteImage(small, str(folder / "small.nrrd"), useCompression=True)
    (folder / "sample.tfm").write_text(SAMPLE_TRANSFORM)
    return folder / "small.nrrd", folder / "sample.tfm"


@pytest.fixture
def volume(scene, small_files):
    return load_volume(scene, small_files[0], "MSLUB26 T1 2mm")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMATIVEAD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="module")
def first_output(small_files, tmp_path_factory):
    """One real run of the fast model on the 2 mm scan, in the module's format (NRRD): replayed as
    the first model of the comparisons below."""
    from NormativeADLib.core.options import RestoreOptions

    scan, transform = small_files
    base = tmp_path_factory.mktemp("first")
    request = RestoreOptions(input_path=scan, out_dir=base / "out", model=FAST_MODEL, device="cpu",
                             transform_path=transform)
    runner = ProcessRunner(request, env={"NORMATIVEAD_HOME": str(base / "home"), "OMP_NUM_THREADS": "2"})
    runner.start()
    outcome = runner.wait(timeout=TIMEOUT_S)
    assert outcome.ok, outcome.message + "\n" + "\n".join(outcome.log[-20:])
    return outcome.out_dir


class ReplayRunner:
    """A finished run: copies a real run's outputs to the requested folder and reports done."""

    def __init__(self, request, on_event, source: Path):
        self.request, self.on_event, self.source = request, on_event, source
        self.outcome = None

    def start(self):
        shutil.copytree(self.source, self.request.out_dir)
        self.on_event({"event": "progress", "stage": "write", "fraction": 0.97, "message": "replayed"})

    def poll(self):
        if self.outcome is None:
            self.outcome = RunOutcome("done", Path(self.request.out_dir), exit_code=0)
        return False

    def cancel(self):
        pass


def factory(*makers):
    """A process factory handing out runners in order: makers[i](request, on_event) for run i."""
    runners = []

    def make(request, on_event):
        runners.append(makers[len(runners)](request, on_event))
        return runners[-1]

    make.runners = runners
    return make


def real(request, on_event):
    return ProcessRunner(request, on_event=on_event)


def wait_job(job: Job):
    state = job.wait(timeout=TIMEOUT_S)
    assert state.status != "running"
    return state


def assert_failed_cleanly(job: Job, state, before: dict, fragment: str) -> None:
    assert state.status == "failed", state.message
    assert fragment.lower() in state.message.lower(), state.message
    assert "\n" not in state.message and "Traceback" not in state.message, state.message
    assert scene_state(job.scene) == before
    assert not job.work_dir.exists()


def volume_node(mrml, array: np.ndarray, like, name: str, label: bool = False):
    node = mrml.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if label else "vtkMRMLScalarVolumeNode", name)
    node.CopyOrientation(like)
    slicer.util.updateVolumeFromArray(node, array)
    return node


# ----------------------------------------------------------------------------------------------
# Hostile volumes in the scene: the command line refuses them, the scene keeps what it had


@pytest.mark.parametrize("kind, fragment", [
    ("NaN voxels", "NaN/Inf voxels"),
    ("the whole field of view", "far more than any brain"),
    ("empty", "is empty"),
])
def test_hostile_brain_mask(scene, volume, home, kind, fragment):
    array = slicer.util.arrayFromVolume(volume)
    mask = {"NaN voxels": np.where(array > 0, 1.0, np.nan).astype(np.float32),
            "the whole field of view": np.ones(array.shape, np.uint8),
            "empty": np.zeros(array.shape, np.uint8)}[kind]
    mask_node = volume_node(scene, mask, volume, f"mask {kind}", label=mask.dtype == np.uint8)
    before = scene_state(scene)
    job = Job(scene, volume, RunSettings(models=[FAST_MODEL], device="cpu"), mask_node=mask_node).start()
    assert_failed_cleanly(job, wait_job(job), before, fragment)


def test_volume_too_small_for_a_brain(scene, home):
    tiny = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "tiny")
    slicer.util.updateVolumeFromArray(tiny, np.random.default_rng(0).normal(100, 10, (8, 8, 8)).astype(np.float32))
    tiny.CreateDefaultDisplayNodes()
    before = scene_state(scene)
    job = Job(scene, tiny, RunSettings(models=[FAST_MODEL], device="cpu")).start()
    assert_failed_cleanly(job, wait_job(job), before, "no brain found")


def test_volume_with_zero_spacing(scene, volume, home):
    flat = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "zero spacing")
    flat.CopyOrientation(volume)
    flat.SetSpacing(0.0, 0.0, 0.0)
    slicer.util.updateVolumeFromArray(flat, slicer.util.arrayFromVolume(volume))
    before = scene_state(scene)
    try:  # refused when the job is made (a ValueError, as for a missing input) or by the command line
        job = Job(scene, flat, RunSettings(models=[FAST_MODEL], device="cpu")).start()
    except ValueError as err:
        assert "spacing" in str(err)
        assert scene_state(scene) == before
        return
    assert_failed_cleanly(job, wait_job(job), before, "spacing must be positive")


# ----------------------------------------------------------------------------------------------
# Faults of the process: an unwritable output folder, a crash, a kill


def test_output_folder_that_cannot_be_written(scene, volume, home):
    def unwritable(request, on_event):
        return ProcessRunner(dataclasses.replace(request, out_dir=Path("/proc/normativead")), on_event=on_event)

    before = scene_state(scene)
    make = factory(unwritable)
    job = Job(scene, volume, RunSettings(models=[FAST_MODEL], device="cpu"), process_factory=make).start()
    state = wait_job(job)
    assert make.runners[0].outcome.exit_code == 4
    assert_failed_cleanly(job, state, before, "cannot write to /proc/normativead")


class CrashingRunner(ProcessRunner):
    """The command line replaced by a Python that dies with a traceback."""

    def command(self):
        return [sys.executable, "-c", "import sys; print('progress'); raise RuntimeError('boom in the child')"]


def test_crashing_process(scene, volume, home):
    before = scene_state(scene)
    job = Job(scene, volume, RunSettings(models=[FAST_MODEL], device="cpu"),
              process_factory=factory(lambda r, e: CrashingRunner(r, on_event=e))).start()
    state = wait_job(job)
    assert state.status == "failed" and "exit code 1" in state.message and "boom in the child" in state.message
    assert scene_state(scene) == before
    assert not job.work_dir.exists()


class UnstartableRunner(ProcessRunner):
    """A process that cannot be launched at all (an interpreter that does not exist)."""

    def command(self):
        return ["/nonexistent/PythonSlicer", "-m", "NormativeADLib.cli"]


def test_a_process_that_cannot_start_fails_and_cancel_ends(scene, volume, home):
    """A runner whose start failed is finished, not running: the job fails with the reason, and cancel
    and poll return at once (before, poll() stayed True and Job.cancel looped forever)."""
    before = scene_state(scene)
    runner = UnstartableRunner(RestoreOptions(input_path=Path("in.nrrd"), out_dir=Path("out")))
    runner.start()
    assert runner.poll() is False and runner.outcome.status == "failed"
    assert "could not start" in runner.outcome.message
    runner.cancel()  # returns at once
    job = Job(scene, volume, RunSettings(models=[FAST_MODEL], device="cpu"),
              process_factory=factory(lambda r, e: UnstartableRunner(r, on_event=e))).start()
    started = time.monotonic()
    state = wait_job(job)
    job.cancel()
    assert time.monotonic() - started < 5
    assert state.status == "failed" and "could not start" in state.message
    assert scene_state(scene) == before
    assert not job.work_dir.exists()


def test_a_device_outside_the_list_is_refused_before_any_process(scene, volume, home):
    with pytest.raises(ValueError, match="is not one of auto, cpu, cuda, mps"):
        Job(scene, volume, RunSettings(models=[FAST_MODEL], device="tpu; rm -rf /"))


def test_process_killed_from_outside(scene, volume, home, small_files):
    """The run's process killed by someone else (the OOM killer, a kill -9): failed, scene as it was."""
    before = scene_state(scene)
    make = factory(real)
    job = Job(scene, volume, RunSettings(models=[SLOW_MODEL], device="cpu"), process_factory=make).start()
    process = make.runners[0]._process
    deadline = time.monotonic() + TIMEOUT_S
    while not job.state.message and job.poll() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    state = wait_job(job)
    assert state.status == "failed" and f"exit code {-signal.SIGKILL}" in state.message, state.message
    assert scene_state(scene) == before
    assert not job.work_dir.exists()


# ----------------------------------------------------------------------------------------------
# Cancels


def test_cancel_at_start_up(scene, volume, home):
    """Cancelled before the process has said anything: it is gone, the scene as it was."""
    before = scene_state(scene)
    make = factory(real)
    job = Job(scene, volume, RunSettings(models=[FAST_MODEL], device="cpu"), process_factory=make).start()
    job.cancel()
    assert job.state.status == "cancelled"
    assert make.runners[0]._process.poll() is not None
    assert scene_state(scene) == before
    assert not job.work_dir.exists()


def test_comparison_cancelled_during_the_second_model(scene, volume, home, first_output, small_files):
    """Two models; the first finished, the second cancelled while it runs: no nodes of the first,
    no comparison views, table or layout: the scene as it was."""
    before = scene_state(scene)
    make = factory(lambda r, e: ReplayRunner(r, e, first_output), real)
    job = Job(scene, volume, RunSettings(models=[FAST_MODEL, SLOW_MODEL], device="cpu"),
              process_factory=make).start()
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        running = job.poll()
        if len(make.runners) == 2 and job.state.message.startswith(SLOW_MODEL):
            break  # the second model's process has reported progress
        assert running and time.monotonic() < deadline, f"the second model never ran: {job.state.message}"
        time.sleep(0.05)
    assert job.state.status == "running" and 0.5 <= job.state.fraction < 1.0
    assert "--transform" in make.runners[1].request.arguments()  # it shares the first run's registration
    job.cancel()
    assert job.state.status == "cancelled"
    assert make.runners[1]._process.poll() is not None
    assert scene_state(scene) == before
    assert_no_comparison(scene)
    assert not job.work_dir.exists()


def test_comparison_failing_at_the_second_model(scene, volume, home, first_output):
    before = scene_state(scene)
    job = Job(scene, volume, RunSettings(models=[FAST_MODEL, "no-such-model"], device="cpu"),
              process_factory=factory(lambda r, e: ReplayRunner(r, e, first_output), real)).start()
    assert_failed_cleanly(job, wait_job(job), before, "unknown model 'no-such-model'")
    assert_no_comparison(scene)


def test_comparison_whose_second_output_cannot_be_loaded(scene, volume, home, first_output, tmp_path):
    """Both runs finish, the second folder is damaged (its heatmap cut short): loading fails, and the
    first model's result must not stay in the scene on its own."""
    broken = tmp_path / "broken"
    shutil.copytree(first_output, broken)
    heatmap = broken / "heatmap.nrrd"
    heatmap.write_bytes(heatmap.read_bytes()[:2000])
    before = scene_state(scene)
    job = Job(scene, volume, RunSettings(models=[FAST_MODEL, SLOW_MODEL], device="cpu"),
              process_factory=factory(lambda r, e: ReplayRunner(r, e, first_output),
                                      lambda r, e: ReplayRunner(r, e, broken))).start()
    state = wait_job(job)
    assert state.status == "failed" and "could not be loaded" in state.message, state.message
    assert scene_state(scene) == before
    assert_no_comparison(scene)


def test_a_first_process_that_cannot_be_made_leaves_no_work_folder(scene, volume, home):
    """The factory raises for the first model: start() raises to the caller (the panel shows it), the scene
    is as it was and the inputs written for the run are gone."""
    def refuse(request, on_event):
        raise OSError("no process for you")

    before = scene_state(scene)
    job = Job(scene, volume, RunSettings(models=[FAST_MODEL], device="cpu"), process_factory=refuse)
    assert job.work_dir.exists()
    with pytest.raises(OSError, match="no process for you"):
        job.start()
    assert not job.work_dir.exists()
    assert scene_state(scene) == before


# ----------------------------------------------------------------------------------------------
# A job that has ended is freed by reference counting


@pytest.mark.parametrize("outcome", ["done", "failed", "cancelled"])
def test_an_ended_job_is_freed_without_the_cycle_collector(scene, volume, home, outcome):
    """A Job and its runner referred to each other (the runner's on_event is a method of the Job), so an
    ended Job, its results' nodes with it, waited for a pass of Python's cycle collector, rare in a process
    that makes few objects (the web session kept +27 MB a run). With the collector off, the Job must go
    as soon as its last reference does; poll() and cancel() after the end stay no-ops."""
    model = "no-such-model" if outcome == "failed" else FAST_MODEL
    gc.collect()
    gc.disable()
    try:
        job = Job(scene, volume, RunSettings(models=[model], device="cpu")).start()
        if outcome == "cancelled":
            job.cancel()
        state = wait_job(job)
        assert state.status == outcome, state.message
        assert job.poll() is False
        job.cancel()
        assert job.state.status == outcome
        freed = weakref.ref(job)
        del job
        assert freed() is None, f"still referred to by {[type(r).__name__ for r in gc.get_referrers(freed())]}"
    finally:
        gc.enable()
