"""`normativead web` as a command: its options are checked before anything heavy, and binding beyond this
machine is said out loud. No browser needed."""

from __future__ import annotations

import subprocess
import sys

import pytest
from web_server import REPO


def test_only_loopback_addresses_count_as_this_machine():
    from NormativeADWeb.command import is_loopback

    assert all(is_loopback(host) for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
    assert not any(is_loopback(host) for host in ("0.0.0.0", "192.168.1.10", "::", "example.org"))


def test_binding_beyond_this_machine_is_said_at_start_up():
    from NormativeADWeb.command import binding_notice

    assert binding_notice("127.0.0.1", 8080) is None
    assert "listening on 0.0.0.0, not only on this machine" in binding_notice("0.0.0.0", 8080)
    assert "--token asks visitors for a token" in binding_notice("0.0.0.0", 8080)
    assert "anyone with the access token" in binding_notice("0.0.0.0", 8080, token=True)


def test_a_missing_data_folder_is_a_clear_input_error(tmp_path, capsys):
    from NormativeADLib.cli import main

    assert main(["web", "--data", str(tmp_path / "absent")]) == 2
    assert f"--data {tmp_path / 'absent'} is not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("limit", ["0", "-5"])
def test_the_upload_limit_must_be_positive(limit, capsys):
    from NormativeADLib.cli import main

    assert main(["web", "--max-upload-mb", limit]) == 2
    assert "--max-upload-mb must be a positive number" in capsys.readouterr().err


def test_the_command_line_lists_web_without_importing_trame():
    code = ("import sys; from NormativeADLib.cli import parser; parser(); "
            "print([m for m in ('trame', 'trame_slicer', 'slicer', 'vtk') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_slicer_scene_package_is_installed_and_the_web_imports_it_normally(tmp_path):
    """NormativeADSlicerLib is a package of the wheel (from NormativeAD/): outside the clone it imports
    without any sys.path edit, and the web package makes none."""
    code = "import NormativeADSlicerLib.scene, NormativeADWeb.session; print(NormativeADSlicerLib.scene.__name__)"
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "NormativeADSlicerLib.scene", out.stderr
    for path in (REPO / "NormativeADWeb").glob("*.py"):
        assert "sys.path" not in path.read_text(), path


def test_a_token_comes_from_the_option_the_environment_or_is_made():
    from NormativeADWeb.command import access_token

    given = "a-token-of-20-chars"
    assert access_token(None, {}) == (None, False)  # no --token: no token asked
    assert access_token(given, {}) == (given, False)
    assert access_token(None, {"NORMATIVEAD_WEB_TOKEN": given}) == (given, False)  # out of `ps`
    assert access_token("", {"NORMATIVEAD_WEB_TOKEN": given}) == (given, False)
    made, printed = access_token("", {})
    assert printed and len(made) >= 16 and made != access_token("", {})[0]


@pytest.mark.parametrize("token", ["short", "has spaces in the token", "semicolon;in-a-cookie-value"])
def test_a_token_that_is_short_or_unquotable_is_refused(token, capsys):
    from NormativeADLib.cli import main

    assert main(["web", "--token", token]) == 2
    assert "--token: a token is at least 16 characters" in capsys.readouterr().err
