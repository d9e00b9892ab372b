"""The command line: `normativead` and its subcommands (commands), `anomalies`, and the worker that
Slicer keeps warm (`python -m NormativeADLib.cli.worker`)."""

from .commands import main, parser

__all__ = ["main", "parser"]
