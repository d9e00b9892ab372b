"""The cases of a batch: scans found in a folder, a glob, a CSV manifest or a BIDS dataset.

Standard library only, except pybids for a BIDS dataset (imported when one is given). Nothing here
reads an image: a cohort of thousands is listed in well under a second, and a missing file becomes
that case's error, not the batch's.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..core.errors import InputError
from ..core.options import CONTRASTS, canonical_contrast, guess_contrast
from ..core.locations import READABLE_SUFFIXES, case_name, checked_name, file_suffix

# BIDS suffixes and their spellings in a manifest -> the product's contrast (options.CONTRASTS)
CONTRAST_ALIASES = {"t1w": "T1", "t2w": "T2", "t1ce": "T1c", "t1gd": "T1c"}
BIDS_SUFFIXES = ("T1w", "T2w", "FLAIR")
MANIFEST_COLUMNS = ("scan", "mask", "reference", "contrast", "subject")


@dataclass(frozen=True)
class Case:
    """One scan to restore: its files, what is known about it, and (BIDS) where its outputs belong."""

    id: str  # unique in the batch: the case's folder name, or the BIDS source stem
    scan: Path
    mask: Path | None = None
    reference: Path | None = None
    contrast: str | None = None  # options.CONTRASTS (T1, T1c, T2, FLAIR); None when unknown
    subject: str | None = None
    session: str | None = None
    bids_dir: str | None = None  # BIDS: the source's folder relative to the dataset (sub-01/ses-1/anat)
    bids_entities: str | None = None  # BIDS: the source name before its suffix (sub-01_ses-1_run-1)
    bids_suffix: str | None = None  # BIDS: T1w, T2w or FLAIR
    extra: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Cohort:
    cases: list[Case]
    bids_root: Path | None = None  # set when the input is a BIDS dataset: outputs become derivatives


def read_inputs(inputs: list[str], exclude: Path | None = None) -> Cohort:
    """Every case of INPUTS: files, folders of scans, globs, CSV manifests, or one BIDS dataset.

    Scans inside `exclude` (the batch's own output folder) are left out: a rerun must not take the
    outputs of the last one (a heatmap named ..._desc-heatmap_T1w.nii.gz) for new scans."""
    if not inputs:
        raise InputError("no INPUTS given: name a folder of scans, a glob, a CSV manifest or a BIDS dataset.")
    bids = [i for i in inputs if is_bids_dataset(Path(i))]
    if bids:
        if len(inputs) > 1:
            raise InputError(f"{bids[0]} is a BIDS dataset: give it alone (its outputs form one derivatives tree).")
        cases = _outside(read_bids(Path(bids[0])), exclude)
        if not cases:
            raise InputError(f"the BIDS dataset {bids[0]} holds no scans outside --out {exclude}.")
        return Cohort(cases, Path(bids[0]).resolve())
    cases: list[Case] = []
    for item in inputs:
        cases += _read_one(item)
    cases = _outside(cases, exclude)
    if not cases:
        raise InputError(f"no scans found in {' '.join(inputs)} (looked for {', '.join(READABLE_SUFFIXES)} files).")
    return Cohort(_unique_ids(cases))


def _outside(cases: list[Case], folder: Path | None) -> list[Case]:
    """The cases not inside folder, with absolute paths (a remote worker has another working folder)."""
    cases = [replace(c, scan=c.scan.absolute(), mask=c.mask and c.mask.absolute(),
                     reference=c.reference and c.reference.absolute()) for c in cases]
    if folder is None:
        return cases
    folder = Path(folder).resolve()
    return [c for c in cases if folder not in c.scan.resolve().parents]


def _read_one(item: str) -> list[Case]:
    path = Path(item)
    if path.is_file() and path.suffix.lower() == ".csv":
        return read_manifest(path)
    if path.is_file():
        if file_suffix(path) not in READABLE_SUFFIXES:
            raise InputError(f"{item} is neither a scan ({', '.join(READABLE_SUFFIXES)}) nor a CSV manifest.")
        return [scan_case(path)]
    if path.is_dir():
        return read_folder(path)
    if glob.has_magic(item):
        matches = [Path(p) for p in sorted(glob.glob(item, recursive=True))]
        scans = [p for p in matches if p.is_file() and file_suffix(p) in READABLE_SUFFIXES]
        if not scans:
            raise InputError(f"the pattern {item} matches no scan ({', '.join(READABLE_SUFFIXES)}); check it "
                             "(quote it so that the shell does not expand it).")
        return [scan_case(p) for p in scans]
    raise InputError(f"input not found: {item}. Give a folder of scans, a glob, a CSV manifest or a BIDS dataset.")


def read_folder(folder: Path) -> list[Case]:
    """The scans directly inside a folder (sorted); nested ones are reached with a glob or a manifest."""
    scans = sorted(p for p in folder.iterdir() if p.is_file() and file_suffix(p) in READABLE_SUFFIXES
                   and not p.name.startswith("."))
    if not scans:
        nested = any(p.is_file() and file_suffix(p) in READABLE_SUFFIXES for p in folder.rglob("*"))
        hint = (f"; its subfolders hold scans: give a glob such as '{folder}/**/*.nii.gz' or a CSV manifest"
                if nested else "")
        raise InputError(f"no scans directly inside {folder} ({', '.join(READABLE_SUFFIXES)}){hint}.")
    return [scan_case(p) for p in scans]


def read_manifest(path: Path) -> list[Case]:
    """A CSV with a header: scan (required), mask, reference, contrast, subject (optional); relative
    paths are relative to the manifest's folder. Other columns travel into the cohort table."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        if "scan" not in columns:
            raise InputError(f"manifest {path} has no 'scan' column (its columns: {', '.join(columns) or 'none'}); "
                             f"its header must name scan and optionally {', '.join(MANIFEST_COLUMNS[1:])}.")
        rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    cases = []
    for line, row in enumerate(rows, start=2):
        if not row.get("scan"):
            raise InputError(f"manifest {path}, line {line}: the scan cell is empty.")
        scan = _relative_to(path.parent, row["scan"])
        cases.append(Case(
            id=case_name(scan), scan=scan,
            mask=_relative_to(path.parent, row["mask"]) if row.get("mask") else None,
            reference=_relative_to(path.parent, row["reference"]) if row.get("reference") else None,
            contrast=_contrast(row.get("contrast"), f"manifest {path}, line {line}") or guess_contrast(scan.name),
            subject=checked_name(row["subject"], f"manifest {path}, line {line}: subject") if row.get("subject") else None,
            extra={k: v for k, v in row.items() if k not in MANIFEST_COLUMNS},
        ))
    if not cases:
        raise InputError(f"manifest {path} lists no scans.")
    return cases


def _relative_to(folder: Path, value: str) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else folder / path


def _contrast(value: str | None, where: str) -> str | None:
    if not value:
        return None
    key = value.strip().lower()
    try:
        return CONTRAST_ALIASES.get(key) or canonical_contrast(key)
    except ValueError:
        raise InputError(f"{where}: unknown contrast '{value}'; use one of {', '.join(CONTRASTS)} "
                         "(or T1w, T2w).") from None


def scan_case(path: Path) -> Case:
    """A scan given as a file, in a folder or by a glob: its contrast as `restore` reads it from the
    file name (T1w, t1c, flair...), else unknown."""
    return Case(case_name(path), path, contrast=guess_contrast(path.name))


def _unique_ids(cases: list[Case]) -> list[Case]:
    """Case ids must name distinct output folders: the same scan twice is dropped, a name shared by
    different scans takes its subject (manifest) or its parent folders as a prefix."""
    seen: dict[Path, Case] = {}
    for case in cases:
        seen.setdefault(case.scan.resolve(), case)
    cases = list(seen.values())
    by_id: dict[str, list[Case]] = {}
    for case in cases:
        by_id.setdefault(case.id, []).append(case)
    renamed = []
    for case in cases:
        if len(by_id[case.id]) == 1:
            renamed.append(case)
            continue
        prefix = case.subject or "_".join(case.scan.resolve().parent.parts[-2:]).strip("/_")
        renamed.append(replace(case, id=f"{prefix}_{case.id}"))
    ids = [c.id for c in renamed]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise InputError(f"several scans would share the case name {duplicates[0]}; give them distinct file names "
                         "or distinct subjects in a CSV manifest.")
    return renamed


# ----------------------------------------------------------------------------------------------
# BIDS

def is_bids_dataset(path: Path) -> bool:
    return path.is_dir() and (path / "dataset_description.json").is_file()


def _check_description(path: Path) -> None:
    """A BIDS dataset_description.json must be a JSON object naming the dataset's BIDSVersion."""
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"{path} is not valid JSON ({str(err).splitlines()[0] if str(err) else 'empty'}); fix it "
                         "(BIDS needs at least Name and BIDSVersion) or list the scans in a CSV manifest.") from None
    if not isinstance(description, dict) or "BIDSVersion" not in description:
        raise InputError(f"{path} names no BIDSVersion; a BIDS dataset_description.json needs Name and BIDSVersion.")


def read_bids(root: Path) -> list[Case]:
    """The anatomical T1w, T2w and FLAIR scans of a BIDS dataset (pybids), one case each."""
    try:
        from bids import BIDSLayout
    except ImportError:
        raise InputError("reading a BIDS dataset needs pybids: pip install 'normativead[batch]'.") from None
    _check_description(root / "dataset_description.json")
    try:
        layout = BIDSLayout(str(root), validate=False)
    except Exception as err:  # pybids raises its own types for a broken dataset_description.json
        raise InputError(f"{root} could not be read as a BIDS dataset: {str(err).splitlines()[0]}") from None
    files = layout.get(datatype="anat", suffix=list(BIDS_SUFFIXES), extension=[".nii", ".nii.gz"])
    if not files:
        raise InputError(f"the BIDS dataset {root} holds no anatomical {', '.join(BIDS_SUFFIXES)} NIfTI scans.")
    cases = []
    for f in sorted(files, key=lambda f: f.path):
        scan = Path(f.path)
        suffix = f.entities["suffix"]
        stem = case_name(scan)
        cases.append(Case(
            id=stem, scan=scan, contrast=_contrast(suffix, str(scan)),
            subject=f.entities.get("subject"), session=f.entities.get("session"),
            bids_dir=str(scan.parent.resolve().relative_to(root.resolve())),
            bids_entities=stem[: -len(suffix) - 1], bids_suffix=suffix,
        ))
    return cases
