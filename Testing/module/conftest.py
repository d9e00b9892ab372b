"""Fixtures for the Slicer module's tests: a real MRML scene (slicer-core) and one real run of the CLI.

Everything here needs the pip package slicer-core (`pip install -e .[slicer]`); without it the tests
that ask for these fixtures skip and say why. The unrelated PyPI package `slicer` also installs a
top-level `slicer` module: it is detected and reported, not mistaken for slicer-core. The tests'
constants and helpers are in slicer_testing.py.
"""

from __future__ import annotations

import json
import sys

import pytest

from slicer_testing import (CLI_TIMEOUT_S, MODULE_DIR, REPO, SAMPLE_LESION, SAMPLE_T1, TEST_HOME, TEST_MODEL,
                            load_volume, require_slicer_core, shipped_model_reason)


for path in (str(REPO), str(MODULE_DIR)):
    if path not in sys.path:
        sys.path.insert(0, path)


@pytest.fixture
def scene():
    """A bare MRML scene as Slicer starts one: default colour nodes, segmentation converters."""
    require_slicer_core()
    import slicer

    from NormativeADSlicerLib.nodes import ensure_segmentation_support

    ensure_segmentation_support()
    mrml = slicer.vtkMRMLScene()
    colors = slicer.vtkMRMLColorLogic()
    colors.SetMRMLScene(mrml)
    colors.AddDefaultColorNodes()
    colors.SetMRMLScene(None)
    yield mrml
    mrml.Clear(1)


@pytest.fixture
def sample_volume(scene):
    return load_volume(scene, SAMPLE_T1, "MSLUB26 T1")


@pytest.fixture(scope="session")
def cli_run(tmp_path_factory):
    """One real `normativead restore` run on the sample case with the shipped model (via the runner).

    Returns (out_dir, metrics dict, progress events). Skips when slicer-core or the model is missing.
    """
    require_slicer_core()
    reason = shipped_model_reason()
    if reason:
        pytest.skip(reason)
    from NormativeADLib.core.options import RestoreOptions
    from NormativeADSlicerLib.process import ProcessRunner

    base = tmp_path_factory.mktemp("cli_run")
    request = RestoreOptions(input_path=SAMPLE_T1, out_dir=base / "out", model=TEST_MODEL, device="cpu",
                             threshold="fpr5", format="nrrd", reference_path=SAMPLE_LESION)
    events = []
    runner = ProcessRunner(request, on_event=events.append,
                           env={"NORMATIVEAD_HOME": TEST_HOME or str(base / "home"), "OMP_NUM_THREADS": "2"})
    runner.start()
    outcome = runner.wait(timeout=CLI_TIMEOUT_S)
    assert outcome.ok, f"the CLI run failed: {outcome.message}\n" + "\n".join(outcome.log[-20:])
    return outcome.out_dir, json.loads((outcome.out_dir / "metrics.json").read_text()), events


@pytest.fixture
def loaded(scene, sample_volume, cli_run):
    """The CLI run's folder loaded as a result into a fresh scene."""
    from NormativeADSlicerLib.scene import load_result

    out_dir, metrics, _ = cli_run
    return load_result(scene, sample_volume, out_dir, metrics["model"]["id"])
