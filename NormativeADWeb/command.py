"""`normativead web`: the browser viewer, as a subcommand of the normativead command line.

add_arguments() runs whenever the command line builds its parser, so it imports nothing beyond the
standard library; run() imports trame, slicer-core and the app only when the page is wanted.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


HELP = "browser viewer (trame-slicer) on Slicer's real scene"  # the line `normativead --help` shows


def add_arguments(parser) -> None:
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: this machine only; anything else opens the page to "
                             "the network, which the server says at start-up)")
    parser.add_argument("--data", help="folder of scans (and masks) the page offers to open")
    parser.add_argument("--max-upload-mb", type=float, default=200.0, help="largest file the page accepts")
    parser.add_argument("--open", action="store_true", help="open the page in this machine's browser")
    parser.add_argument("--max-sessions", type=int, default=4,
                        help="browser sessions at a time, each with its own scan, results and files (about "
                             "1.5 GB each); the next visitor gets a 'busy' page")
    parser.add_argument("--idle-minutes", type=float, default=10.0,
                        help="a session ends this long after its page was closed, and removes its files")
    parser.add_argument("--token", nargs="?", const="", metavar="TOKEN",
                        help="ask every visitor for this access token (in the address the server prints, then "
                             "a cookie); without a value, the environment variable NORMATIVEAD_WEB_TOKEN's, "
                             "else a random one. That variable alone turns it on too, and keeps the token out "
                             "of the process list")
    parser.add_argument("--session", action="store_true", help=argparse.SUPPRESS)  # one session (the launcher's)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def binding_notice(host: str, port: int, token: bool = False) -> str | None:
    """What the server says at start-up when it listens beyond this machine (None when it does not)."""
    if is_loopback(host):
        return None
    who = "anyone with the access token" if token else "anyone"
    advice = "" if token else " --token asks visitors for a token."
    return (f"normativead web: listening on {host}, not only on this machine: {who} who can reach {host}:{port} "
            f"can open scans and run models here.{advice} Research software, not for diagnosis.")


def access_token(given: str | None, environ=os.environ) -> tuple[str | None, bool]:
    """(the token every request must bring, or None; whether it was made here and so must be printed).
    given is --token's value: None without the flag, "" with the flag alone."""
    from . import access

    token = given or environ.get(access.TOKEN_ENV) or None
    if token is not None:
        return access.check_token(token), False
    if given == "":
        return access.new_token(), True
    return None, False


def run(args, reporter) -> int:
    """The launcher (one session process per visitor, launcher.py), or with --session one session."""
    from NormativeADLib.core.errors import InputError

    from . import access

    data = Path(args.data) if args.data else None
    if data is not None and not data.is_dir():
        raise InputError(f"--data {data} is not a folder; give the folder holding the scans.")
    if args.max_upload_mb <= 0:
        raise InputError("--max-upload-mb must be a positive number of megabytes.")
    if args.max_sessions < 1 or args.idle_minutes <= 0:
        raise InputError("--max-sessions must be 1 or more and --idle-minutes a positive number.")
    try:
        token, made = access_token(args.token)
    except ValueError as err:
        raise InputError(f"--token: {err}.") from None
    if args.session:
        return _run_session(args, data, token)
    if token is not None:
        os.environ[access.TOKEN_ENV] = token  # the sessions inherit it: never on their command lines
    notice = binding_notice(args.host, args.port, token is not None)
    if notice:
        print(notice, file=sys.stderr, flush=True)
    from .launcher import Launcher, serve

    def session_command(port: int) -> list[str]:
        return [sys.executable, "-m", "NormativeADLib.cli", "web", "--session", "--host", args.host,
                "--port", str(port), "--max-upload-mb", str(args.max_upload_mb),
                "--idle-minutes", str(args.idle_minutes), *(["--data", str(data)] if data else [])]

    address = f"http://{args.host}:{args.port}/"
    if token is not None:  # a token the user gave is theirs to pass on: not printed into logs
        address += f"?token={token}" if made else "?token=<the token of --token or NORMATIVEAD_WEB_TOKEN>"
    print(f"normativead web: {address} (one session per visitor, at most {args.max_sessions}"
          f"{'; the token is asked for' if token else ''})", file=sys.stderr, flush=True)
    if args.open:
        import webbrowser

        opened = f"http://{args.host}:{args.port}/" + (f"?token={token}" if token else "")
        threading.Timer(1.0, webbrowser.open, [opened]).start()
    serve(Launcher(session_command, args.host, args.max_sessions, token), args.host, args.port)
    return 0


def _run_session(args, data: Path | None, token: str | None) -> int:
    """One visitor's page: its own trame server, scene, upload folder and analysis worker."""
    from . import access

    os.environ.pop(access.TOKEN_ENV, None)  # read: the analysis workers need not hold it
    if not os.environ.get("DISPLAY"):  # no X server: render the slice views through EGL straight away
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    upload_dir = Path(tempfile.mkdtemp(prefix="normativead-web-"))  # private (0700); removed on exit
    app = None
    try:
        from NormativeADSlicerLib.process import prewarm

        from .app import NormativeADWebApp

        prewarm()  # the analysis worker imports while the page loads: the first Run finds it ready

        app = NormativeADWebApp(upload_dir=upload_dir, data_dir=data,
                                max_upload_bytes=int(args.max_upload_mb * 2**20), token=token)
        sys.argv = sys.argv[:1]  # trame reads sys.argv too: our options are already applied
        # trame ends the server when no page has been connected for this long (also before the first);
        # SIGTERM and SIGINT end it too (aiohttp's handlers; trame returns from start() after them)
        app.server.start(port=args.port, host=args.host, open_browser=False, timeout=round(args.idle_minutes * 60))
    finally:
        if app is not None:
            from NormativeADSlicerLib.process import shut_down

            shut_down()  # first: the cancel below starts no fresh worker on the way out
            app.close()  # a run going on is cancelled: its worker killed, its work folder removed
        shutil.rmtree(upload_dir, ignore_errors=True)
    return 0
