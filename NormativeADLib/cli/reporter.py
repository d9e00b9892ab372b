"""How every command tells its progress: for people (bars and notes on stderr) or for machines (JSON
lines on stdout, what the Slicer module and the web viewer read), chosen once by --progress.

The library below the command line never asks which: it calls these methods on the reporter it is
given (a stage's fraction, a note, an event, one step of a count), and the reporter decides.
"""

from __future__ import annotations

import sys

from ..core import jsontext

MODES = ("bar", "json", "none")


class Reporter:
    """Progress and results, for people (bars on stderr) or machines (JSON lines on stdout)."""

    def __init__(self, mode: str):
        self.mode = mode
        self._bar = None

    @property
    def for_machines(self) -> bool:
        return self.mode == "json"

    def progress(self, stage: str, fraction: float, message: str) -> None:
        """A stage's fraction done: a percentage bar, or a progress event."""
        if self.mode == "json":
            print(jsontext.dumps({"event": "progress", "stage": stage, "fraction": round(fraction, 4),
                                  "message": message}), flush=True)
        elif self.mode == "bar":
            from tqdm import tqdm

            if self._bar is None:
                self._bar = tqdm(total=100, unit="%", file=sys.stderr, bar_format="{l_bar}{bar}| {elapsed}")
            self._bar.set_description(f"{stage:<10} {message[:40]:<40}")
            self._bar.update(round(100 * fraction) - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def event(self, name: str, **fields) -> None:
        """A result for machines (nothing for people: the command prints its own summary)."""
        if self.mode == "json":
            print(jsontext.dumps({"event": name, **fields}), flush=True)

    def note(self, message: str) -> None:
        """Something the user should know that is not an error: a note event, or a line on stderr."""
        if self.mode == "json":
            self.event("note", message=message)
        else:
            print(f"normativead: {message}", file=sys.stderr, flush=True)

    def count(self, total: int, unit: str, stage: str) -> Count:
        """A count of `total` items (cases of a batch): a bar of items, or one event per item."""
        return Count(self, total, unit, stage)


class Count:
    """Items done over items to do: a tqdm bar that shows the failures, or for machines one event named
    after the unit per item (its fields) followed by the stage's progress."""

    def __init__(self, reporter: Reporter, total: int, unit: str, stage: str):
        self.reporter, self.total, self.unit, self.stage = reporter, total, unit, stage
        self.done = self.failed = 0
        self._bar = None
        if reporter.mode == "bar" and total:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit=unit, file=sys.stderr, desc=stage, dynamic_ncols=True)

    def step(self, label: str, failed: bool, **fields) -> None:
        self.done += 1
        self.failed += failed
        if self.reporter.for_machines:
            self.reporter.event(self.unit, **fields)
            self.reporter.progress(self.stage, self.done / self.total, f"{self.done}/{self.total} {self.unit}s")
        elif self._bar is not None:
            self._bar.set_postfix_str(f"failed {self.failed}" if self.failed else label[-30:])
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
