"""The analysis worker: one long-lived process that runs normativead commands for an interactive front
end, so that an Apply pays neither the imports nor, for a second model on the same scan, the
registration again (warm.py keeps models and prepared scans).

Started as `python -m NormativeADLib.cli.worker`; one JSON object per line each way:
  worker -> {"event": "ready"}                      imports done, waiting for jobs
  front  -> {"argv": ["restore", "scan.nii.gz", ...]} a command line, exactly as `normativead` takes it
  worker -> what the command prints (its --progress json events, its messages on stderr), then
            {"event": "job-end", "exit_code": N}     N as the one-shot command would have exited
Jobs run one at a time. The worker exits when its input closes, and after a job that raised an
unexpected error (its state is then not to be trusted; the front end starts a fresh one). Cancel is
the front end killing the worker: outputs are written atomically, so a killed job leaves none.
"""

from __future__ import annotations

import contextlib
import json
import sys
import traceback

from ..core import jsontext, warm


def main() -> int:
    warm.keep()
    _import_ahead()
    _say("ready")
    for line in sys.stdin:
        if not line.strip():
            continue
        argv = _argv_of(line)
        if argv is None:
            print("normativead worker: error: a job is one JSON object with \"argv\": a list of strings",
                  file=sys.stderr, flush=True)
            _say("job-end", exit_code=2)
            continue
        code, broken = _run(argv)
        _say("job-end", exit_code=code)
        if broken:
            return 1
    return 0


def _run(argv: list[str]) -> tuple[int, bool]:
    """The command's exit code, and whether it raised what the command line does not expect."""
    from . import commands

    try:
        return commands.main(argv), False
    except SystemExit as done:  # argparse: --help, or a usage error (its message is printed already)
        return (done.code if isinstance(done.code, int) else 2), False
    except BaseException:  # noqa: BLE001 - reported as the one-shot command would, then the worker ends
        traceback.print_exc()
        return 1, True
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def _argv_of(line: str) -> list[str] | None:
    try:
        job = json.loads(line)
    except ValueError:
        return None
    argv = job.get("argv") if isinstance(job, dict) else None
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        return None
    return argv


def _import_ahead() -> None:
    """What every restore needs, imported while the user is still choosing (about 5 s of a cold run)."""
    from . import commands  # noqa: F401
    from ..pipeline import analysis, case_figure  # noqa: F401 - case_figure: matplotlib, for the figures
    from ..core.catalogue import default_model, get_card
    from ..models import FAMILIES

    with contextlib.suppress(Exception):  # no usable default model: the first job says what is wrong
        FAMILIES[get_card(default_model()).family]  # the default's family, MONAI with it


def _say(name: str, **fields) -> None:
    print(jsontext.dumps({"event": name, **fields}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
