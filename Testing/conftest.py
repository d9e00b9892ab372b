"""Shared fixtures (the shipped sample case and model) and the test tiers (markers slow, harness, browser).

Helpers for the tests are in testsupport.py, not here: import them from there (see its docstring).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Re-exported only for Testing/library/test_calibration.py, which still imports them from `conftest`.
from testsupport import REPO, SAMPLE, SHARED_DATA, needs_shared_data  # noqa: F401


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
    from NormativeADLib.core import catalogue
    from NormativeADLib.models import registry

    return registry.load_model(catalogue.DEFAULT_MODEL)


# -- Test tiers ------------------------------------------------------------------------------------
# `make check` runs `-m "not slow and not harness and not browser"`; `make test` runs everything.
# harness: Slicer's own Python with the stand-in application (slicer_harness.py): every test using the
# `harness` fixture of Testing/module/test_slicer_module.py, and the one there marked by hand.
# browser: a real headless Chromium (Testing/web/test_web_page.py, marked in its file).
# slow: a test that registers or analyses a whole scan, runs the command line on whole scans in a
# child process, trains a network, runs a diffusion model's chain or the Inception network, or needs
# ../shared/data (needs_shared_data() marks those). The rest are marked here, by file and test name,
# from the durations of a run (`pytest --durations=0`): on 2 CPU cores shared with a training job,
# each took about 5 s or more (or its module fixture did, and no fast test shares it).
SLOW_FILES = {
    "test_autoencoders.py": "trains two small networks",
    "test_batch.py": "normativead batch on a local Dask cluster, in child processes",
    "test_geometry.py": "whole-scan registrations and analyses",
    "test_hostile_inputs.py": "the command line in a child process for each of 40 inputs, signals, a full disk",
    "test_registration_qc.py": "whole-scan registrations",
}
SLOW_TESTS = {
    "test_case_figure.py": {"test_report_of_the_shipped_sample"},  # analyses the sample case
    "test_cli.py": {"test_manual_threshold_and_nrrd", "test_bench_times_engine_baseline_and_whole_case",
                    "test_bench_times_an_untrained_config_of_the_same_network"},  # whole-case runs
    "test_contrast.py": {"test_a_model_outside_its_contrasts_runs_and_warns",  # whole-case runs
                         "test_a_stated_contrast_wins_and_a_wrong_one_is_refused",
                         "test_restore_without_a_model_takes_the_default_for_the_scan_contrast",
                         "test_an_inverted_scan_is_refused_and_weak_evidence_only_warns"},
    "test_diffusion.py": {"test_loss_is_finite_and_decreases",  # training steps
                          "test_full_ddpm_chain_and_the_restoration_engine"},
    "test_perceptual.py": {"test_standard_indices_run_through_both_networks",  # Inception on many slices
                           "test_inception_features_pool3_deterministic_and_batched",
                           "test_inception_features_are_computed_once_per_content"},
    "test_restore.py": {"test_restoration_is_deterministic_and_batch_independent",  # the `prepared`
                        "test_progress_reaches_every_brain_slice",  # fixture registers the sample
                        "test_cancel_stops_between_batches", "test_cpu_batches_follow_the_family"},
    "test_sadm.py": {"test_shipped_sadm_restores_the_sample_case", "test_training_loss_falls_on_real_slices",
                     "test_fit_checkpoints_and_resumes_with_fixed_validation_batches"},
    "test_shipped_models.py": {"test_shipped_model_restores_real_slices"},  # diffusion chains: 9-14 s each
    "test_synthetic.py": {"test_preview_command_writes_a_png_grid"},
}
# Fixtures that run the command line on the sample case: every test using one is slow.
SLOW_FIXTURES = {
    "demo_run",  # test_cli.py: `normativead demo`
    "cli_run",  # Testing/module/conftest.py (and the harness's and the browser's own): one real restore
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "harness" in fixtures:
            item.add_marker(pytest.mark.harness)
        file = item.path.name
        tests = SLOW_TESTS.get(file, ())
        if (file in SLOW_FILES or getattr(item, "originalname", None) in tests or item.name in tests
                or SLOW_FIXTURES.intersection(fixtures)):
            item.add_marker(pytest.mark.slow)
