"""Each run parameter is declared once (core/options.py: flag, type, choices, default, help) and every
front end takes it from there: restore's and batch's command lines, the settings objects of the library
and of the Slicer job, and the web page. The Slicer parameter node is checked on Slicer's own Python
(Testing/module/test_slicer_module.py), where parameterNodeWrapper runs."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from NormativeADLib.cli import batch as batch_cli
from NormativeADLib.cli.commands import parser
from NormativeADLib.cohort.batch import BatchSettings
from NormativeADLib.core.catalogue import DEMO_MODEL
from NormativeADLib.core.options import (DEFAULT_OPACITY, DEVICE, FORMAT, MODEL, RESTORE_FORMAT, SEED, THRESHOLD,
                                         RestoreOptions)

# the declared parameters each command offers as declared (demo's --model names the demo's own model,
# batch's takes several ids: both are checked below)
DECLARED = {"restore": (MODEL, DEVICE, THRESHOLD, RESTORE_FORMAT, SEED),
            "demo": (DEVICE, RESTORE_FORMAT, SEED),
            "batch": (DEVICE, THRESHOLD, FORMAT, SEED)}


def _options(command: str) -> dict[str, argparse.Action]:
    """{flag: argparse action} of one subcommand of `normativead`."""
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {flag: action for action in sub.choices[command]._actions for flag in action.option_strings}


def _commands() -> list[str]:
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def _assert_declared(action: argparse.Action, parameter, help_too: bool = True) -> None:
    assert action.default == parameter.default, action.option_strings
    assert (action.type or str) is parameter.type, action.option_strings
    assert action.choices == (None if parameter.choices is None else list(parameter.choices)), action.option_strings
    if help_too:
        assert action.help == parameter.help, action.option_strings


@pytest.mark.parametrize("command", sorted(DECLARED))
def test_each_command_line_takes_its_run_parameters_from_the_declaration(command):
    options = _options(command)
    for parameter in DECLARED[command]:
        action = options[parameter.flag]
        assert action.dest == parameter.name
        _assert_declared(action, parameter)


def test_the_model_option_differs_only_where_a_command_says_why():
    restore, demo, batch = _options("restore"), _options("demo"), _options("batch")
    for options in (restore, demo, batch):
        _assert_declared(options[MODEL.flag], MODEL, help_too=False)
    assert demo[MODEL.flag].help == f"{MODEL.help.split(';')[0]}; default: {DEMO_MODEL}"
    assert batch[MODEL.flag].dest == "models" and batch[MODEL.flag].nargs == "+"


def test_every_device_option_is_the_declared_one():
    with_device = [c for c in _commands() if DEVICE.flag in _options(c)]
    assert {"restore", "demo", "batch", "train", "calibrate", "evaluate", "report", "bench"} <= set(with_device)
    for command in with_device:
        _assert_declared(_options(command)[DEVICE.flag], DEVICE)


def test_restore_and_batch_agree_on_every_option_they_share():
    """A flag both take means the same in both: same default, type and choices, but for the two
    differences the declaration states (restore alone writes DICOM; batch takes several models)."""
    restore, batch = _options("restore"), _options("batch")
    shared = (set(restore) & set(batch)) - {"-h", "--help"}
    assert {DEVICE.flag, THRESHOLD.flag, FORMAT.flag, SEED.flag, MODEL.flag, "--out", "--progress"} <= shared
    for flag in shared - {FORMAT.flag, MODEL.flag}:
        a, b = restore[flag], batch[flag]
        assert (a.default, a.type, a.choices) == (b.default, b.type, b.choices), flag
    assert restore[FORMAT.flag].default == batch[FORMAT.flag].default
    assert set(batch[FORMAT.flag].choices) < set(restore[FORMAT.flag].choices)


def test_restore_options_parse_back_to_themselves(tmp_path):
    """The Slicer job's command line (RestoreOptions.arguments) read by restore's own parser gives back
    every value it was made of: the two spell each flag the same."""
    request = RestoreOptions(
        input_path=tmp_path / "scan.nrrd", out_dir=tmp_path / "out", model="some-model", device="cpu",
        threshold="fpr10", format="nifti", mask_path=tmp_path / "mask.nrrd", reference_path=tmp_path / "ref.nrrd",
        transform_path=tmp_path / "transform.tfm", contrast="FLAIR", figures=False,
        others=((tmp_path / "t1.nrrd", "T1"), (tmp_path / "t2w.nrrd", None)), uncertainty=False)
    args = parser().parse_args(request.arguments())
    assert args.command == "restore" and args.progress == "json"
    assert (args.input, args.out, args.mask, args.reference, args.transform) == tuple(
        str(p) for p in (request.input_path, request.out_dir, request.mask_path, request.reference_path,
                         request.transform_path))
    assert (args.model, args.device, args.threshold, args.format, args.contrast) == (
        request.model, request.device, request.threshold, request.format, request.contrast)
    assert args.others == [f"T1={tmp_path / 't1.nrrd'}", str(tmp_path / "t2w.nrrd")]
    assert (args.figures, args.uncertainty) == (False, False)

    plain = RestoreOptions(input_path=tmp_path / "scan.nrrd", out_dir=tmp_path / "out")
    args = parser().parse_args(plain.arguments())
    assert (args.model, args.threshold, args.seed, args.figures, args.uncertainty) == (None, None, SEED.default,
                                                                                     True, True)
    assert args.device == plain.device == DEVICE.default
    assert plain.format in FORMAT.choices  # the Slicer job reads NRRD back, a format batch and restore share


def test_the_batch_settings_default_to_what_the_command_line_parses(tmp_path):
    args = parser().parse_args(["batch", "scans/", "--out", str(tmp_path)])
    assert batch_cli.settings(args) == BatchSettings(inputs=["scans/"], out=tmp_path)
    assert (BatchSettings.device, BatchSettings.format, BatchSettings.seed) == (DEVICE.default, FORMAT.default,
                                                                                 SEED.default)


def _front_end_values(code: str) -> dict:
    """What `code` prints as JSON, run in a fresh Python: importing slicer-core under pytest would take the
    test folders on sys.path for slicer packages (slicer-core extends its own package path)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent)
    if done.returncode and "ModuleNotFoundError" in done.stderr:
        pytest.skip(f"a front end's packages are not installed: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_slicer_job_defaults_to_the_declaration():
    settings = _front_end_values("import dataclasses, json; from NormativeADSlicerLib.logic import RunSettings; "
                                 "print(json.dumps(dataclasses.asdict(RunSettings(models=['m']))))")
    assert (settings["device"], settings["threshold"], settings["opacity"]) == (DEVICE.default, THRESHOLD.default,
                                                                                DEFAULT_OPACITY)


def test_the_web_page_offers_the_declared_choices():
    state = _front_end_values("import json; from NormativeADWeb.app import run_parameter_state; "
                              "print(json.dumps(run_parameter_state()))")
    assert state == {"devices": list(DEVICE.choices), "device": DEVICE.default, "opacity": DEFAULT_OPACITY}
