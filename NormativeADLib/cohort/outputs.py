"""Where a batch puts each case's outputs, how it knows they are complete, and how it puts them there.

Two layouts. Not BIDS: one folder per case under OUT/<model id>/ (the files `normativead restore`
writes). BIDS input: OUT is one BIDS-Derivatives dataset (its dataset_description.json names the
pipeline run for each model; pybids finds it with BIDSLayout(source, derivatives=True) when OUT is
source/derivatives/<name>), the images and their JSON sidecars in sub-*/[ses-*/]anat/, one `desc`
label per output and model (desc-heatmapIntensityT1), and what BIDS has no name for (metrics, the
report figures, the registration) in sub-*/metrics, sub-*/figures and sub-*/xfm, listed in
.bidsignore. A worker writes a case into a staging folder under OUT/.normativead-staging; only the
batch's own process moves it into place (commit), with signals held, so a case's outputs are either
all there or not there. Standard library only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from .inputs import Case
from ..core.errors import InputError
from ..core.options import FORMATS, IMAGE_OUTPUTS, output_names
from ..core.locations import checked_name, is_inside
from ..core.interrupts import interrupts_held
from ..core.writes import write_file_atomic

STAGING = ".normativead-staging"
TEMPLATE_SPACE = "MNI152NLin2009aSym"  # ModelGrid's space: the transform maps it to the scan
BIDS_VERSION = "1.9.0"
DESCRIPTION = "dataset_description.json"
PIPELINE = "NormativeAD"
# restore's image -> (desc label, suffix or None for the source's, sidecar Description, mask Type)
_BIDS_IMAGES = {
    "pseudo_healthy": ("pseudohealthy", None, "pseudo-healthy restoration of the scan by the model", None),
    "heatmap": ("heatmap", None, "anomaly heatmap (the model's per-voxel anomaly score) on the scan's grid", None),
    "segmentation": ("anomaly", "mask", "anomalies flagged: the heatmap above the threshold", "Lesion"),
    "brain_mask": ("brain", "mask", "brain mask the analysis used", "Brain"),
    "uncertainty": ("uncertainty", None, "how much the heatmap moves when the scan is mirrored left-right "
                    "(half the difference of the two passes, in heatmap units)", None),
}
# restore's other outputs, which BIDS has no name for -> (folder beside anat/, desc label, extension)
_BIDS_EXTRAS = {"metrics.json": ("metrics", "metrics", ".json"), "metrics.csv": ("metrics", "metrics", ".csv"),
                "report.png": ("figures", "report", ".png"), "registration.png": ("figures", "registration", ".png"),
                "transform.tfm": ("xfm", None, ".tfm")}
SIDECAR = ".sidecar.json"  # staging name of an image's sidecar: heatmap.sidecar.json
BIDSIGNORE = ["cohort.csv", "cohort.parquet", "summary.html", "summary_distributions.png", "batch.json",
              "registrations/", *(f"sub-*/{folder}/" for folder in sorted({f for f, _, _ in _BIDS_EXTRAS.values()}))]


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
    """The output tree of one batch: OUT/<model>/<case>/..., or (BIDS) OUT/sub-*/... for every model."""

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
        """Not BIDS: the folder of a model's cases."""
        return self.out / checked_name(model_id, "model id")

    def check_models(self, model_ids) -> None:
        """BIDS: each model's files carry its label in their desc; two models must not share one."""
        if self.bids_root is None:
            return
        seen: dict[str, str] = {}
        for model_id in model_ids:
            label = model_label(model_id)
            if label in seen:
                raise InputError(f"models {seen[label]} and {model_id} would share the BIDS desc label {label}; "
                                 "run them into separate output folders.")
            seen[label] = model_id

    def targets(self, case: Case, model_id: str) -> dict[str, Path]:
        """restore's output name (and, BIDS, each image's sidecar: heatmap.sidecar.json) -> where this
        case's file lies in the tree."""
        if self.bids_root is None:
            folder = self.model_dir(model_id) / case.id
            return {name: folder / name for name in self.names}
        subject = self.out / checked_name(f"sub-{case.subject}", "BIDS subject")
        anat = subject / checked_name(f"ses-{case.session}", "BIDS session") if case.session else subject
        anat = anat / "anat"
        targets = {}
        for name in self.names:
            file_name = bids_name(name, case, self.fmt, model_id)  # entities pybids read: letters, digits, '+'
            if name in _BIDS_EXTRAS:
                targets[name] = subject / _BIDS_EXTRAS[name][0] / file_name
            else:
                targets[name] = anat / file_name
                stem = file_name[: -len(FORMATS[self.fmt])]
                targets[name[: -len(FORMATS[self.fmt])] + SIDECAR] = anat / f"{stem}.json"
        return targets

    def metrics_path(self, case: Case, model_id: str) -> Path:
        return self.targets(case, model_id)["metrics.json"]

    def report_path(self, case: Case, model_id: str) -> Path:
        return self.targets(case, model_id)["report.png"]

    def outputs_dir(self, case: Case, model_id: str) -> Path:
        """The folder of the case's images (its own folder, or BIDS its anat/ folder)."""
        return self.targets(case, model_id)["heatmap" + FORMATS[self.fmt]].parent

    def is_complete(self, case: Case, model_id: str) -> bool:
        """Every output of the case is in place (the commit moves metrics.json last)."""
        return all(p.is_file() for p in self.targets(case, model_id).values())

    def start(self, cards: dict) -> None:
        """BIDS: the derivatives dataset's dataset_description.json and .bidsignore, naming the pipeline
        run for each model of this batch that has scans (cards: model id -> card) and keeping those of
        earlier runs into the same folder. Nothing for per-case folders."""
        if self.bids_root is None:
            return
        path = self.out / DESCRIPTION
        entries = {model_id: _generated_by(model_id, card.version) for model_id, card in cards.items()}
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
            earlier = [g for g in previous.get("GeneratedBy", []) if _entry_model(g) not in entries]
        except (OSError, ValueError, AttributeError):
            earlier = []
        description = {
            "Name": "NormativeAD anomaly maps",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": earlier + [entries[m] for m in sorted(entries)],
            "SourceDatasets": [{"URL": self.bids_root.as_uri()}],
            "DatasetLinks": {"raw": self.bids_root.as_uri()},
        }
        write_file_atomic(path, lambda tmp: make_public(tmp).write_text(json.dumps(description, indent=2) + "\n"),
                          overwrite=True)
        write_file_atomic(self.out / ".bidsignore", lambda tmp: make_public(tmp).write_text("\n".join(BIDSIGNORE) + "\n"),
                          overwrite=True)

    def commit(self, staging: Path, case: Case, model_id: str) -> None:
        """Move a case's finished outputs from staging into the tree (replacing an incomplete or older set)."""
        missing = [n for n in self.names if not (staging / n).is_file()]
        if missing:
            raise RuntimeError(f"internal: staged outputs of {case.id} lack {', '.join(missing)}")
        targets = self.targets(case, model_id)
        if not all(is_inside(t, self.out) for t in targets.values()):  # never replace anything outside --out
            raise InputError(f"case {case.id}: its outputs would lie outside {self.out}; rename the scan or subject.")
        if self.bids_root is not None:
            self._write_sidecars(staging, case, model_id, targets)
        with interrupts_held(reraise=False):  # a Ctrl-C waits for the case to be wholly in place
            if self.bids_root is None:
                _replace_folder(staging, targets["metrics.json"].parent)
            else:
                _move_files(staging, targets)

    def _write_sidecars(self, staging: Path, case: Case, model_id: str, targets: dict[str, Path]) -> None:
        """Each image's BIDS sidecar, into staging: what it is, its source scan, the model, the threshold."""
        try:
            metrics = json.loads((staging / "metrics.json").read_text())
        except (OSError, ValueError):
            metrics = {}
        threshold = metrics.get("threshold") if isinstance(metrics.get("threshold"), dict) else {}
        model = metrics.get("model") if isinstance(metrics.get("model"), dict) else {}
        scan = Path(case.bids_dir) / case.scan.name if case.bids_dir else Path(case.scan.name)
        source = f"bids:raw:{scan.as_posix()}"  # a BIDS URI: "raw" is the source dataset (DatasetLinks)
        for image in IMAGE_OUTPUTS:
            _label, _suffix, what, mask_type = _BIDS_IMAGES[image]
            sidecar = {"Description": f"NormativeAD {what}, model {model_id}",
                       "Sources": [source],  # on the source scan's grid, so no space entity
                       "NormativeAD": {"Model": model_id, "ModelVersion": model.get("version"),
                                       "Metrics": Path(os.path.relpath(targets["metrics.json"],
                                                                       targets[image + SIDECAR].parent)).as_posix()}}
            if mask_type:
                sidecar["Type"] = mask_type
            if image == "segmentation":
                sidecar["NormativeAD"].update(Threshold=threshold.get("value"), ThresholdSource=threshold.get("source"))
            (staging / (image + SIDECAR)).write_text(json.dumps(sidecar, indent=2) + "\n")

    def clear_staging(self) -> None:
        """Remove what workers staged and nobody committed (a cancelled or killed run's leftovers)."""
        with interrupts_held():
            shutil.rmtree(self.staging_root, ignore_errors=True)


def model_label(model_id: str) -> str:
    """A model id as a BIDS label (letters and digits): intensity-t1 -> intensityT1, ae-ixi-t1 -> aeIxiT1."""
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", model_id) if p]
    if not parts:
        raise InputError(f"model id {model_id!r} has no letter or digit to name its BIDS files with.")
    return parts[0] + "".join(p[0].upper() + p[1:] for p in parts[1:])


def _camel(*words: str | None) -> str:
    words = [w for w in words if w]
    return words[0] + "".join(w[0].upper() + w[1:] for w in words[1:])


def bids_name(output: str, case: Case, fmt: str, model_id: str) -> str:
    """A restore output's BIDS-derivative file name for a case and model: the source's entities kept,
    a desc of the output and the model (desc-heatmapIntensityT1); a source's own desc first
    (desc-preprocHeatmapIntensityT1), as BIDS allows one desc per name."""
    suffix = case.bids_suffix
    entities, source_desc = _split_desc(case.bids_entities)
    model = model_label(model_id)

    def desc(label: str | None) -> str:
        return f"desc-{_camel(source_desc, label, model)}"

    for image, (label, image_suffix, _, _) in _BIDS_IMAGES.items():
        if output == image + FORMATS[fmt]:
            return f"{entities}_{desc(label)}_{image_suffix or suffix}{FORMATS[fmt]}"
    if output == "transform.tfm":
        return f"{entities}_{desc(None)}_from-{TEMPLATE_SPACE}_to-{suffix}_mode-image_xfm.tfm"
    if output in _BIDS_EXTRAS:
        _, label, extension = _BIDS_EXTRAS[output]
        return f"{entities}_{desc(label)}_{suffix}{extension}"
    raise ValueError(f"no BIDS name for output {output}")


def _split_desc(entities: str) -> tuple[str, str | None]:
    """('sub-01_ses-1', 'preproc') for 'sub-01_ses-1_desc-preproc': BIDS allows one desc per name."""
    parts = entities.split("_")
    source = [p[5:] for p in parts if p.startswith("desc-")]
    return "_".join(p for p in parts if not p.startswith("desc-")), (source[0] if source else None)


def _generated_by(model_id: str, card_version: str) -> dict:
    return {"Name": PIPELINE, "Version": _version(),
            "Description": f"normativead batch, model {model_id} (version {card_version}): the files whose desc "
                           f"label ends in {model_label(model_id)[0].upper() + model_label(model_id)[1:]}"}


def _entry_model(entry) -> str | None:
    """The model a GeneratedBy entry of ours names (None for another's)."""
    found = re.match(r"normativead batch, model (\S+) \(", str(entry.get("Description", ""))) \
        if entry.get("Name") == PIPELINE else None
    return found.group(1) if found else None


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
    if metrics.exists():  # an older set: it is incomplete until its new metrics.json lands
        metrics.unlink()
    for name, target in targets.items():
        if name != "metrics.json":
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, target)
    metrics.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging / "metrics.json", metrics)
    shutil.rmtree(staging, ignore_errors=True)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("normativead")
    except PackageNotFoundError:
        return "unknown"
