"""Fixtures for the Slicer module's tests: a real MRML scene (slicer-core) and one real run of the CLI.

Everything here needs the pip package slicer-core (`pip install -e .[slicer]`); without it the tests
that ask for these fixtures skip and say why. The unrelated PyPI package `slicer` also installs a
top-level `slicer` module: it is detected and reported, not mistaken for slicer-core.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from slicer_testing import load_volume, slicer_core_reason  # noqa: F401  (re-exported for tests)

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "NormativeAD"
SAMPLE = REPO / "Resources" / "SampleData"
SAMPLE_T1 = SAMPLE / "mslub_patient26_t1.nii.gz"
SAMPLE_LESION = SAMPLE / "mslub_patient26_lesion.nii.gz"
CLI_TIMEOUT_S = 900
# To run these tests against another installed model (say, one you trained), point them at its
# cache and id: NORMATIVEAD_SLICER_TEST_HOME=~/.cache/normativead NORMATIVEAD_SLICER_TEST_MODEL=my-model
TEST_HOME = os.environ.get("NORMATIVEAD_SLICER_TEST_HOME")
TEST_MODEL = os.environ.get("NORMATIVEAD_SLICER_TEST_MODEL")

for path in (str(REPO), str(MODULE_DIR)):
    if path not in sys.path:
        sys.path.insert(0, path)




def require_slicer_core():
    reason = slicer_core_reason()
    if reason:
        pytest.skip(reason)


def shipped_model_reason(model_id: str | None = None) -> str | None:
    """None when the shipped model (the library's default) is present in Resources/Models."""
    try:
        from NormativeADLib import catalogue, paths
    except ImportError as err:
        return f"NormativeADLib cannot be imported ({err})"
    model_id = model_id or TEST_MODEL or catalogue.DEFAULT_MODEL
    folder = Path(TEST_HOME) / "models" if TEST_HOME else paths.resources_dir() / "Models"
    for card in sorted(folder.glob("*/card.json")) if folder.is_dir() else []:
        try:
            if json.loads(card.read_text()).get("id") == model_id:
                return None
        except ValueError:
            continue
    return f"the shipped model {model_id} is not in {folder} yet"


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
    from NormativeADLib.options import RestoreOptions
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
