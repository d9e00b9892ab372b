"""The options of one restore run, declared once: the command line (restore and batch), the Slicer panel
and job and the web page all take their flags, choices, defaults and help from here. Standard library only."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

DEVICES = ("auto", "cpu", "cuda", "mps")
FORMATS = {"nifti": ".nii.gz", "nrrd": ".nrrd"}  # image format -> file suffix
# restore also writes each image as one DICOM object referencing the scan's series (io/dicom.py): masks as
# DICOM SEG, maps as Parametric Maps; only for a scan read from a DICOM series.
DICOM_FORMAT = "dicom"
OUTPUT_FORMATS = {**FORMATS, DICOM_FORMAT: ".dcm"}  # restore's --format -> file suffix
FPR_TARGETS = {"fpr1": 0.01, "fpr5": 0.05, "fpr10": 0.10}  # calibrated threshold -> healthy voxel FPR
DEFAULT_POLICY = "fpr5"  # the threshold of a card (or an older run's metrics) that names no default
IMAGE_OUTPUTS = ("pseudo_healthy", "heatmap", "segmentation", "brain_mask", "uncertainty")  # on the input's grid
# per other volume of a study (restore --with): the volume registered onto the first scan, and its restoration
STUDY_OUTPUTS = ("registered", "pseudo_healthy")
TABLE_OUTPUTS = ("metrics.json", "metrics.csv", "transform.tfm")
FIGURE_OUTPUTS = ("report.png", "registration.png")  # drawn last: an interactive run shows its overlay first
# The heatmap is drawn from this fraction of the threshold up, below it the scan alone, in the case figure,
# the Slicer views and the web page alike (0.5 coloured most of a healthy-looking brain).
DISPLAY_FLOOR = 0.8
DEFAULT_OPACITY = 0.5  # the heatmap over the scan, as the Slicer panel and the web page start


@dataclass(frozen=True)
class RunParameter:
    """One setting of a run as every front end offers it: the command line's flag (cli builds restore's and
    batch's parsers from argument()), the Slicer parameter node's and the web page's choices and default."""

    name: str  # the attribute of the parsed command line and of the settings objects (RestoreOptions...)
    flag: str
    help: str
    type: type = str
    default: object = None
    choices: tuple | None = None

    def argument(self, **changes) -> tuple[str, dict]:
        """(flag, keywords of argparse's add_argument); changes: what one command adds (batch's several models)."""
        keywords = {"dest": self.name, "default": self.default, "help": self.help}
        if self.type is not str:
            keywords["type"] = self.type
        if self.choices is not None:
            keywords["choices"] = list(self.choices)
        return self.flag, {**keywords, **changes}


MODEL = RunParameter("model", "--model", "model id (see `normativead models`); default: the default model for the "
                                         "scan's contrast")
DEVICE = RunParameter("device", "--device", "where to run (auto: cuda, then mps, else cpu)", default="auto",
                      choices=DEVICES)
THRESHOLD = RunParameter("threshold", "--threshold",
                         "a threshold the model's card names (fpr1 | fpr5 | fpr10 for the healthy-calibrated ones; see "
                         "`normativead models`) or a number; default: the card's default")
# the image files a run writes; restore alone can also write DICOM objects referencing a DICOM scan
FORMAT = RunParameter("format", "--format", "image output format (BIDS inputs: nifti)", default="nifti",
                      choices=tuple(FORMATS))
RESTORE_FORMAT = RunParameter("format", "--format", "image output format (dicom: DICOM SEG and Parametric Maps "
                                                    "referencing the scan's DICOM series; a DICOM scan only)",
                              default=FORMAT.default, choices=tuple(OUTPUT_FORMATS))
SEED = RunParameter("seed", "--seed", "seed of the noise a stochastic model draws (the same seed restores the "
                                      "same)", type=int, default=0)


def study_image_names(others=()) -> list[str]:
    """The images of a study's other volumes, by contrast: registered_FLAIR, pseudo_healthy_FLAIR..."""
    return [f"{name}_{contrast}" for contrast in others for name in STUDY_OUTPUTS]


def image_names(others=(), uncertainty: bool = True) -> list[str]:
    """The images a restore run writes (without suffix); others: the contrasts of a study's other volumes."""
    return [n for n in IMAGE_OUTPUTS if uncertainty or n != "uncertainty"] + study_image_names(others)


def analysis_names(fmt: str, others=(), uncertainty: bool = True) -> list[str]:
    """The files a restore run writes before its figures."""
    return [name + OUTPUT_FORMATS[fmt] for name in image_names(others, uncertainty)] + list(TABLE_OUTPUTS)


def output_names(fmt: str, others=(), uncertainty: bool = True) -> list[str]:
    """The files a restore run writes."""
    return analysis_names(fmt, others, uncertainty) + list(FIGURE_OUTPUTS)


CONTRASTS = ("T1", "T1c", "T2", "FLAIR")
# The synthetic-anomaly validation a default is chosen on (training/synthetic_validation.py): T1 is the
# healthy scan as it is, other contrasts are redrawn (synthesis/synth_contrast.py). Version 2 draws them
# with realistic tissue contrast; version 3 measures on 15 scans instead of 5 (train.SELECTION_SCANS), every
# shipped model again on one draw; version 4 plants the anomalies on T2 and FLAIR as lesions look there
# (mostly bright: synthetic.CONTRAST_PROBABILITIES), where earlier versions drew them as on T1; version 5
# redraws them from tissue labels that put the ventricles in CSF (synth_contrast.tissue_labels: before, CSF
# held under 1 % of an IXI brain and the ventricles were grey matter, bright on a synthetic FLAIR). Figures
# recorded under another version do not compare, in any contrast. Version 6 plants glioma-sized tumours too
# (synthetic.py's "tumour" kind, 15 % of the anomalies, in every contrast): before, no synthetic anomaly
# was larger than 20 mm in radius, a fifth of a glioma's volume, so that no default was chosen for finding
# tumours of the size a clinician loads. Version 7 redraws T1c, T2 and FLAIR from the T1's own intensities
# (synth_contrast.from_intensities) instead of from its hard tissue labels: at 2 mm, hard labels fill the sulci
# with grey matter and make the cortex a smooth band, and the T1c default, whose healthy scans flagged 1-4 mL
# drawn so, flagged 99-291 mL on the same four healthy scans drawn from their intensities (as on real T1c). It
# also normalises each scan after its anomalies are planted (unclipped), as preprocessing normalises a real scan
# with its lesion in it: a large bright lesion (a glioma's oedema on FLAIR) takes the brain's top percentile and
# darkens every healthy tissue (the healthy median of the development glioma FLAIRs lies at 0.34-0.59, of the MS
# FLAIR at 0.73); planted in an already normalised scan and clipped to it, it never did. Version 8 draws those
# contrasts with the pure-tissue band (synth_contrast.PURE_TISSUE) chosen on healthy training scans, 25-75 (15-85
# before, chosen on the sample case's T1, an image of a development subject).
SYNTHETIC_VALIDATION_VERSION = 8
# File-name words that name a contrast, checked in this order (t1c before t1, flair before t2)
_CONTRAST_WORDS = (("FLAIR", ("flair",)), ("T1c", ("t1c", "t1ce", "t1gd", "t1post", "t1_post", "ce-gd", "gad")),
                   ("T2", ("t2",)), ("T1", ("t1",)))


def canonical_contrast(name: str) -> str:
    """'t1c', 'FLAIR', 'T1C' -> the spelling of CONTRASTS; ValueError for anything else."""
    for contrast in CONTRASTS:
        if name.strip().lower() == contrast.lower():
            return contrast
    raise ValueError(f"unknown contrast {name!r}: choose one of {', '.join(CONTRASTS)}")


def guess_contrast(file_name: str) -> str | None:
    """The contrast a scan's file name states (BIDS T1w/T2w/FLAIR, t1c, t1post...), or None."""
    words = re.split(r"[^a-z0-9]+", file_name.lower().replace("-", "_"))
    joined = "_".join(words)
    for contrast, names in _CONTRAST_WORDS:
        for name in names:
            key = name.replace("-", "_")
            if any(w == key or w == key + "w" for w in words) or ("_" in key and key in joined):
                return contrast
    return None


ADAPTIVE = "adaptive"  # the case-adaptive policy: its value is measured on each case (anomaly.case_thresholds)
COMPONENTS = "comp10"  # component-level calibration: at most 10 % of healthy scans show any flagged component
# a segmenter's own decision boundary: probability 0.5, the point its Dice + cross-entropy training aims at
# (offered by models whose heatmap is a probability, next to the calibrated policies)
PROBABILITY_HALF = "p50"
# ... and stricter probability levels, for a contrast where 0.5 flags more than the healthy limit: the
# synthetic-anomaly selection then chooses among them, each leaving the slider the range above it
PROBABILITY_LEVELS = {PROBABILITY_HALF: 0.5, "p80": 0.8, "p95": 0.95}


MIN_MANUAL_THRESHOLD = 1e-6  # below this a manual threshold flags every brain voxel with any residual


def resolve_threshold(spec: str | float | None, thresholds: dict, model_id: str = "",
                      default: str = DEFAULT_POLICY) -> tuple[str, float]:
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
    if not math.isfinite(value) or value < MIN_MANUAL_THRESHOLD:
        raise InputError(f"threshold {spec} must be a finite number of at least {MIN_MANUAL_THRESHOLD:g} (scores are "
                         ">= 0, so 0 or less would flag the whole brain).")
    return "manual", value


STUDY_FAMILY = "study"  # the family of models that read several contrasts of one subject together


def study_contrasts(card, scan_contrast: str, others) -> list[str]:
    """The contrasts of a study's other volumes ((path, contrast or None) pairs), checked: the model reads
    several contrasts together (a study model), each volume's contrast is known, one volume per contrast."""
    if not others:
        return []
    if card.family != STUDY_FAMILY:
        raise InputError(f"model {card.id} reads one volume; the other volumes of a study (--with) need a study "
                         "model, which reads several contrasts together (normativead models: family study).")
    contrasts = []
    for path, given in others:
        named = given or guess_contrast(Path(path).name)
        if not named:
            raise InputError(f"the contrast of {Path(path).name} is not in its file name; name it: --with "
                             f"FLAIR={path} (one of {', '.join(CONTRASTS)}).")
        try:
            contrasts.append(canonical_contrast(named))
        except ValueError as err:
            raise InputError(str(err)) from None
    every = [scan_contrast, *contrasts]
    twice = sorted({c for c in every if every.count(c) > 1})
    if twice:
        raise InputError(f"the study holds more than one {', '.join(twice)} volume; give one volume per contrast.")
    unread = [c for c in every if not card.accepts(c)]
    if unread:
        raise InputError(f"model {card.id} does not read {', '.join(unread)}; it reads {', '.join(card.trained_contrasts)}.")
    return contrasts


@dataclass(frozen=True)
class RestoreOptions:
    """One `normativead restore` run as the Slicer job launches it (arguments() is its command line)."""

    input_path: Path
    out_dir: Path
    model: str | None = None
    device: str = DEVICE.default
    threshold: str | None = None  # None: the card's default threshold
    format: str = "nrrd"  # what the Slicer module reads back (the command line's default is FORMAT's)
    mask_path: Path | None = None
    reference_path: Path | None = None
    transform_path: Path | None = None  # an earlier run's transform.tfm: same registration, no re-run
    contrast: str | None = None  # the scan's contrast (CONTRASTS); None: from its file name
    figures: bool = True  # report.png and registration.png, drawn after the "done" event
    others: tuple = ()  # the study's other volumes: (path, contrast or None for the file name's) pairs
    uncertainty: bool = True  # the uncertainty map (a mirrored second pass)

    def arguments(self) -> list[str]:
        if self.device not in DEVICE.choices:
            raise InputError(f"device must be one of {', '.join(DEVICE.choices)}")
        if self.format not in FORMAT.choices:
            raise InputError(f"format must be one of {', '.join(FORMAT.choices)}")
        args = ["restore", str(self.input_path), "--out", str(self.out_dir), DEVICE.flag, self.device,
                FORMAT.flag, self.format, "--progress", "json"]
        for flag, value in ((MODEL.flag, self.model), (THRESHOLD.flag, self.threshold), ("--mask", self.mask_path),
                            ("--reference", self.reference_path), ("--transform", self.transform_path),
                            ("--contrast", self.contrast)):
            if value:
                args += [flag, str(value)]
        if self.others:
            args += ["--with", *(f"{contrast}={path}" if contrast else str(path) for path, contrast in self.others)]
        if not self.figures:
            args.append("--no-figures")
        if not self.uncertainty:
            args.append("--no-uncertainty")
        return args
