"""`normativead batch`: the command line of a cohort run (cohort/batch.py does the work).

    normativead batch INPUTS --out DIR [--model ID ...] [--workers N] [--scheduler tcp://HOST:8786]
"""

from __future__ import annotations

from pathlib import Path

from ..core.options import DEVICE, FORMAT, MODEL, SEED, THRESHOLD
from ..cohort.batch import REGISTRATIONS, BatchSettings
from .commands import add_parameter
from .reporter import MODES

HELP = "restore many scans on a Dask cluster: resumable, cohort table"  # the line `normativead --help` shows


def add_arguments(p) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUTS",
                   help="scans, a folder of scans, a glob ('data/**/*_T1w.nii.gz'), a CSV manifest (columns scan, "
                        "mask, reference, contrast, subject) or a BIDS dataset")
    p.add_argument("--out", required=True,
                   help="output folder: OUT/<model>/... (a BIDS input: OUT is a BIDS-Derivatives dataset, e.g. "
                        "BIDS/derivatives/normativead), cohort.csv, cohort.parquet, summary.html")
    add_parameter(p, MODEL, dest="models", nargs="+", action="extend", metavar="ID",
                  help="model ids (default: the default model); each scan runs with the models of its contrast "
                       "when the contrast is known (manifest column, BIDS suffix)")
    p.add_argument("--workers", type=int, help="local Dask workers (default: one per 2 cores); each gets "
                                               "cores/workers library threads")
    p.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler (tcp://host:8786) instead of a "
                                                          "local cluster; its workers must see INPUTS and OUT at the same paths")
    add_parameter(p, THRESHOLD)  # with several models, every model's card must name it
    add_parameter(p, DEVICE)
    add_parameter(p, FORMAT)
    add_parameter(p, SEED)
    p.add_argument("--registration-cache", metavar="DIR",
                   help=f"folder of cached registrations (default: OUT/{REGISTRATIONS}); share it between output "
                        "folders to register each scan once")
    p.add_argument("--no-registration-cache", action="store_true", help="register every scan for every run")
    p.add_argument("--overwrite", action="store_true", help="redo complete cases too")
    p.add_argument("--progress", default="bar", choices=MODES)


def run(args, reporter) -> int:
    from ..cohort import batch

    return batch.run(settings(args), reporter)


def settings(args) -> BatchSettings:
    """The parsed command line as the library's settings (the cancel event main() attached included)."""
    return BatchSettings(
        inputs=list(args.inputs), out=Path(args.out), models=args.models, workers=args.workers,
        scheduler=args.scheduler, threshold=args.threshold, device=args.device, format=args.format, seed=args.seed,
        registration_cache=args.registration_cache, no_registration_cache=args.no_registration_cache,
        overwrite=args.overwrite, cancel=getattr(args, "cancel", None))
