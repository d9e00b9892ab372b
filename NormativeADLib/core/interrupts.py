"""Cancelling at any moment without half-written files: steps that a signal must not cut in half."""

from __future__ import annotations

import threading
from contextlib import contextmanager


# ----------------------------------------------------------------------------------------------
# Cancelling at any moment without half-written files
#
# The command line turns SIGINT/SIGTERM into KeyboardInterrupt wherever the run is (cli._cancel_on_signals).
# Its handler first asks hold_interrupt(): inside an interrupts_held() block (making a folder and its
# lock, moving finished outputs into place, cleaning up) the signal is only noted, and acted on when
# the block ends, so a cancel can never leave half of such a step behind.

_held = {"depth": 0, "pending": False}


@contextmanager
def interrupts_held(reraise: bool = True):
    """Run a block that a Ctrl-C or SIGTERM must not cut in half; a signal noted inside it is raised
    as KeyboardInterrupt when the outermost block ends (reraise: the cancel wins over an error of the
    block), or left to the caller, which sees its cancel event set (reraise=False: the commit of
    finished outputs, which a cancel must neither interrupt nor undo). Python runs signal handlers in
    the main thread, so only its blocks count."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _held["depth"] += 1
    try:
        yield
    finally:
        _held["depth"] -= 1
        if _held["depth"] == 0 and _held["pending"]:
            _held["pending"] = False
            if reraise:  # the cancel wins over an error the block may have raised meanwhile
                raise KeyboardInterrupt


def hold_interrupt() -> bool:
    """For a signal handler: True, and the signal noted, while an interrupts_held() block runs."""
    if _held["depth"] > 0:
        _held["pending"] = True
        return True
    return False
