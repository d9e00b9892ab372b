"""The options of one restore run, declared once: the command line, the Slicer panel and the
Slicer job all take their choices and their command-line form from here. Standard library only."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

DEVICES = ("auto", "cpu", "cuda", "mps")
FORMATS = {"nifti": ".nii.gz", "nrrd": ".nrrd"}  # image format -> file suffix
FPR_TARGETS = {"fpr1": 0.01, "fpr5": 0.05, "fpr10": 0.10}  # calibrated threshold -> healthy voxel FPR
IMAGE_OUTPUTS = ("pseudo_healthy", "heatmap", "segmentation", "brain_mask")  # on the input's grid
TABLE_OUTPUTS = ("metrics.json", "metrics.csv", "report.png", "registration.png", "transform.tfm")


def output_names(fmt: str) -> list[str]:
    """The files a restore run writes."""
    return [name + FORMATS[fmt] for name in IMAGE_OUTPUTS] + list(TABLE_OUTPUTS)


ADAPTIVE = "adaptive"  # the case-adaptive policy: its value is measured on each case (anomaly.case_thresholds)
COMPONENTS = "comp10"  # component-level calibration: at most 10 % of healthy scans show any flagged component


def resolve_threshold(spec: str | float | None, thresholds: dict, model_id: str = "",
                      default: str = "fpr5") -> tuple[str, float]:
    """(source, value): one of the named thresholds (None: the default), or ('manual', a number).

    thresholds are a card's, with the case-adaptive one added once a case's scores are known (before
    that its name maps to None and only the name is checked). The one resolver of the command line,
    the report and the Slicer slider.
    """
    spec = default if spec is None else spec
    if isinstance(spec, str) and spec in thresholds:
        return spec, None if thresholds[spec] is None else float(thresholds[spec])
    names = ", ".join(thresholds) or "none"
    if isinstance(spec, str) and spec in FPR_TARGETS:
        raise InputError(f"model {model_id} has no calibrated {spec} threshold (it has: {names}); give one of "
                         "those or a number.")
    try:
        value = float(spec)
    except ValueError:
        raise InputError(f"threshold '{spec}' is neither a threshold of model {model_id} ({names}) nor a number.") from None
    if not math.isfinite(value) or value < 0:
        raise InputError(f"threshold {value} must be a finite number >= 0.")
    return "manual", value


@dataclass(frozen=True)
class RestoreOptions:
    """One `normativead restore` run as the Slicer job launches it (arguments() is its command line)."""

    input_path: Path
    out_dir: Path
    model: str | None = None
    device: str = "auto"
    threshold: str | None = None  # None: the card's default threshold
    format: str = "nrrd"
    mask_path: Path | None = None
    reference_path: Path | None = None
    transform_path: Path | None = None  # an earlier run's transform.tfm: same registration, no re-run

    def arguments(self) -> list[str]:
        if self.device not in DEVICES:
            raise InputError(f"device must be one of {', '.join(DEVICES)}")
        if self.format not in FORMATS:
            raise InputError(f"format must be one of {', '.join(FORMATS)}")
        args = ["restore", str(self.input_path), "--out", str(self.out_dir), "--device", self.device,
                "--format", self.format, "--progress", "json"]
        for flag, value in (("--model", self.model), ("--threshold", self.threshold), ("--mask", self.mask_path),
                            ("--reference", self.reference_path), ("--transform", self.transform_path)):
            if value:
                args += [flag, str(value)]
        return args
