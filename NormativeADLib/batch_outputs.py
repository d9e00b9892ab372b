"""Where a batch puts each case's outputs, how it knows they are complete, and how it puts them there.

Two layouts under OUT/<model id>/: one folder per case (the files `normativead restore` writes), or,
for a BIDS input, a BIDS-derivatives tree (sub-*/[ses-*/]anat/<source entities>_desc-heatmap_T1w.nii.gz
..., with a dataset_description.json). A worker writes a case into a staging folder under
OUT/.normativead-staging; only the batch's own process moves it into place (commit), with signals
held, so a case's outputs are either all there or not there. Standard library only.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .batch_inputs import Case
from .errors import InputError
from .options import FORMATS, output_names
from .paths import interrupts_held, is_inside, write_file_atomic

STAGING = ".normativead-staging"
TEMPLATE_SPACE = "MNI152NLin2009aSym"  # ModelGrid's space: the transform maps it to the scan
BIDS_VERSION = "1.9.0"
# restore's output -> BIDS derivative name: (desc label, suffix or None for the source's suffix)
_BIDS_IMAGES = {"pseudo_healthy": ("pseudohealthy", None), "heatmap": ("heatmap", None),
                "segmentation": ("anomaly", "mask"), "brain_mask": ("brain", "mask")}
_BIDS_TABLES = {"metrics.json": ("metrics", ".json"), "metrics.csv": ("metrics", ".csv"),
                "report.png": ("report", ".png"), "registration.png": ("registration", ".png")}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()  # read once, at import, in one thread: os.umask can only be read by setting it


def make_public(path: Path) -> Path:
    """Give a file or folder made through mkstemp/mkdtemp (owner-only) the modes the user's umask gives
    new files, as `restore`'s outputs have: a cohort is often read by others."""
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~UMASK)
    return path


class Layout:
    """The output tree of one batch: OUT/<model>/<case>/... or OUT/<model>/sub-*/... (BIDS)."""

    def __init__(self, out: Path, fmt: str = "nifti", bids_root: Path | None = None):
        if bids_root is not None and fmt != "nifti":
            raise InputError("a BIDS input is written as BIDS derivatives, which are NIfTI: drop --format "
                             f"{fmt} (or list the scans in a CSV manifest to get per-case folders).")
        self.out, self.fmt, self.bids_root = Path(out), fmt, bids_root
        self.names = output_names(fmt)

    @property
    def staging_root(self) -> Path:
        return self.out / STAGING

    def model_dir(self, model_id: str) -> Path:
        return self.out / model_id

    def targets(self, case: Case, model_id: str) -> dict[str, Path]:
        """restore's output name -> where this case's file lies in the tree."""
        if self.bids_root is None:
            folder = self.model_dir(model_id) / case.id
            return {name: folder / name for name in self.names}
        folder = self.model_dir(model_id) / case.bids_dir
        return {name: folder / bids_name(name, case, self.fmt) for name in self.names}

    def metrics_path(self, case: Case, model_id: str) -> Path:
        return self.targets(case, model_id)["metrics.json"]

    def report_path(self, case: Case, model_id: str) -> Path:
        return self.targets(case, model_id)["report.png"]

    def is_complete(self, case: Case, model_id: str) -> bool:
        """Every output of the case is in place (the commit moves metrics.json last)."""
        return all(p.is_file() for p in self.targets(case, model_id).values())

    def start_model(self, model_id: str, card_version: str) -> None:
        """A BIDS derivatives dataset needs its dataset_description.json (written once)."""
        if self.bids_root is None:
            return
        path = self.model_dir(model_id) / "dataset_description.json"
        if path.is_file():
            return
        description = {
            "Name": f"NormativeAD anomaly maps, model {model_id}",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "NormativeAD", "Version": _version(),
                             "Description": f"normativead batch with model {model_id} {card_version}"}],
            "SourceDatasets": [{"URL": self.bids_root.as_uri()}],
        }
        write_file_atomic(path, lambda tmp: make_public(tmp).write_text(json.dumps(description, indent=2) + "\n"),
                          overwrite=True)

    def commit(self, staging: Path, case: Case, model_id: str) -> None:
        """Move a case's finished outputs from staging into the tree (replacing an incomplete or older set)."""
        missing = [n for n in self.names if not (staging / n).is_file()]
        if missing:
            raise RuntimeError(f"internal: staged outputs of {case.id} lack {', '.join(missing)}")
        targets = self.targets(case, model_id)
        if not all(is_inside(t, self.out) for t in targets.values()):  # never replace anything outside --out
            raise InputError(f"case {case.id}: its outputs would lie outside {self.out}; rename the scan or subject.")
        with interrupts_held(reraise=False):  # a Ctrl-C waits for the case to be wholly in place
            if self.bids_root is None:
                _replace_folder(staging, targets["metrics.json"].parent)
            else:
                _move_files(staging, targets)

    def clear_staging(self) -> None:
        """Remove what workers staged and nobody committed (a cancelled or killed run's leftovers)."""
        with interrupts_held():
            shutil.rmtree(self.staging_root, ignore_errors=True)

def bids_name(output: str, case: Case, fmt: str) -> str:
    """A restore output's BIDS-derivative file name for a case (source entities kept)."""
    suffix = case.bids_suffix
    entities, source_desc = _split_desc(case.bids_entities)

    def desc(label: str) -> str:  # a source's own desc (desc-preproc) is kept in front: desc-preprocHeatmap
        return f"desc-{source_desc}{label[0].upper()}{label[1:]}" if source_desc else f"desc-{label}"

    for image, (label, image_suffix) in _BIDS_IMAGES.items():
        if output == image + FORMATS[fmt]:
            return f"{entities}_{desc(label)}_{image_suffix or suffix}{FORMATS[fmt]}"
    if output in _BIDS_TABLES:
        label, extension = _BIDS_TABLES[output]
        return f"{entities}_{desc(label)}_{suffix}{extension}"
    if output == "transform.tfm":
        return f"{case.bids_entities}_from-{TEMPLATE_SPACE}_to-{suffix}_mode-image_xfm.tfm"
    raise ValueError(f"no BIDS name for output {output}")


def _split_desc(entities: str) -> tuple[str, str | None]:
    """('sub-01_ses-1', 'preproc') for 'sub-01_ses-1_desc-preproc': BIDS allows one desc per name."""
    parts = entities.split("_")
    source = [p[5:] for p in parts if p.startswith("desc-")]
    return "_".join(p for p in parts if not p.startswith("desc-")), (source[0] if source else None)

def _replace_folder(staging: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if target.exists():  # an incomplete set, or --overwrite: moved aside, removed once the new one is in
        old = staging.parent / f"{staging.name}.old"
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

def _move_files(staging: Path, targets: dict[str, Path]) -> None:
    metrics = targets["metrics.json"]
    metrics.parent.mkdir(parents=True, exist_ok=True)
    if metrics.exists():  # an older set: it is incomplete until its new metrics.json lands
        metrics.unlink()
    for name, target in targets.items():
        if name != "metrics.json":
            os.replace(staging / name, target)
    os.replace(staging / "metrics.json", metrics)
    shutil.rmtree(staging, ignore_errors=True)

def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("normativead")
    except PackageNotFoundError:
        return "unknown"
