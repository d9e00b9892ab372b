"""The model card: everything needed to rebuild, run and trust a model, stored as JSON by its weights."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from . import jsontext
from .errors import InputError, ModelError
from .grid import ModelGrid
from .options import ADAPTIVE, DEFAULT_POLICY
from .locations import checked_name
from .writes import write_file_atomic

CARD_FILE = "card.json"
# The card format this version reads and writes. A card without `format` is of format 1 (cards made
# before it was recorded); a later format is refused by name, not misread.
CARD_FORMAT = 3  # 2: contrast_thresholds (a default policy per contrast); 3: postprocess.mirror
# What a restorer must reach on synthetic anomalies in every contrast (synthetic_validation measures it;
# the identity reaches neither): defined here so that listing models needs no torch.
MIN_REMOVAL = 0.3  # share of the anomaly's intensity change that does not reach the restoration
MIN_RESIDUAL_CONTRAST = 1.5  # residual inside the anomaly over the residual elsewhere in the brain
MIN_HEALTHY_SSIM = 0.9  # restoration of a healthy scan: removing by blurring everything does not count


def restorer_problems(per_contrast: dict) -> list[str]:
    """What synthetic-validation figures (per contrast: ssim, removal, residual_contrast) fall short of as
    a restorer; empty when the model keeps healthy tissue, removes anomalies and its residual marks them
    in every contrast."""
    problems = []
    for contrast, f in per_contrast.items():
        removal, ratio, ssim = f.get("removal"), f.get("residual_contrast"), f.get("ssim")
        if ssim is None or ssim < MIN_HEALTHY_SSIM:
            problems.append(f"{contrast}: healthy SSIM {'n/a' if ssim is None else format(ssim, '.2f')} "
                            f"(at least {MIN_HEALTHY_SSIM:g} expected)")
        if removal is None or removal < MIN_REMOVAL:
            problems.append(f"{contrast}: removes {'n/a' if removal is None else format(removal, '.0%')} of the "
                            f"anomalies' change (at least {MIN_REMOVAL:.0%} expected)")
        if ratio is None or ratio < MIN_RESIDUAL_CONTRAST:
            problems.append(f"{contrast}: residual inside anomalies / elsewhere "
                            f"{'n/a' if ratio is None else format(ratio, '.2f')} (at least {MIN_RESIDUAL_CONTRAST:g} expected)")
    return problems


@dataclass(frozen=True)
class PostProcess:
    """How a score map is made and cleaned (cDDPM protocol, plus test-time mirroring for segmenters); sizes in
    model voxels unless named in mL."""

    erode_iterations: int = 3  # in-plane cross erosions of the brain mask
    median_size: int = 5  # 3D median filter; 0 or 1 disables
    min_component_ml: float = 0.056  # 7 voxels of 2 mm: smaller components are dropped
    normalise: str = "none"  # "robust_sd": residual / (1.4826 MAD of the case's brain intensities): a z-score
    # a segmenter's probability averaged with that of the left-right mirrored slices (restore.mirror_averaged);
    # a residual family has no segmenter to mirror and ignores it
    mirror: bool = False


@dataclass(frozen=True)
class ModelCard:
    id: str
    family: str
    version: str
    contrast: str
    description: str
    grid: ModelGrid
    network: dict  # constructor settings of the family's network
    restoration: dict = field(default_factory=dict)  # inference settings (t, steps, ensemble, noise)
    intensity: dict = field(default_factory=lambda: {"method": "percentile", "percentiles": [1.0, 99.0]})
    postprocess: PostProcess = PostProcess()
    thresholds: dict = field(default_factory=dict)  # name (fpr1/fpr5/fpr10, z2...) -> score threshold
    default_threshold: str = DEFAULT_POLICY  # the threshold a run uses unless told otherwise
    # contrast -> the default policy of a scan of that contrast where it differs from default_threshold
    # (chosen per contrast on synthetic anomalies: a level that keeps healthy T2 clean may miss on T1)
    contrast_thresholds: dict = field(default_factory=dict)
    # the case-adaptive policy: {"base": a threshold name, "healthy_median", "healthy_robust_sd"} of
    # the healthy calibration scans' scores (anomaly.case_thresholds); empty when not calibrated
    adaptive: dict = field(default_factory=dict)
    healthy_case_scores: tuple = ()  # case scores of the calibration scans, for percentiles
    training: dict = field(default_factory=dict)  # data, licence, split, command, settings
    figures: dict = field(default_factory=dict)  # what the model reached, with how it was measured
    weights: dict = field(default_factory=dict)  # {"file": ..., "sha256": ...}
    contrasts: tuple = ()  # the scan contrasts the model was trained for (empty: just `contrast`)
    format: int = CARD_FORMAT  # of the card file itself (CARD_FORMAT)
    folder: Path | None = None  # where the card was read from (not stored)

    @property
    def percentiles(self) -> tuple[float, float]:
        low, high = self.intensity["percentiles"]
        return float(low), float(high)

    @property
    def bias_correction(self) -> bool:
        """Whether scans are N4-corrected before scaling (intensity.bias_field "n4"): as the model was trained."""
        return self.intensity.get("bias_field") == "n4"

    @property
    def trained_contrasts(self) -> tuple[str, ...]:
        return tuple(self.contrasts) or (self.contrast,)

    @property
    def evaluated_contrasts(self) -> tuple[str, ...]:
        """The contrasts of the cases behind the card's evaluation figures."""
        cases = (self.figures.get("evaluation") or {}).get("cases") or []
        return tuple(sorted({c["contrast"] for c in cases if c.get("contrast")}))

    def accepts(self, contrast: str) -> bool:
        return contrast.lower() in (c.lower() for c in self.trained_contrasts)

    @property
    def contrast_summary(self) -> str:
        """'T1' or 'T1, T2, FLAIR (evaluated on T2, FLAIR)': the model list's contrast column."""
        trained = ", ".join(self.trained_contrasts)
        evaluated = ", ".join(self.evaluated_contrasts)
        return f"{trained} (evaluated on {evaluated})" if evaluated and evaluated != trained else trained

    @property
    def weights_path(self) -> Path:
        if self.folder is None or not self.weights.get("file"):
            raise ModelError(f"model {self.id}: its card names no weights file.")
        return self.folder / self.weights["file"]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("folder")
        d["grid"] = self.grid.to_dict()
        for name in ("healthy_case_scores", "contrasts"):
            d[name] = list(getattr(self, name))
        d["format"] = CARD_FORMAT  # what this normativead writes, whatever the card was read from
        return d

    @classmethod
    def from_dict(cls, d: dict, folder: Path | None = None) -> "ModelCard":
        d = dict(d)
        d.setdefault("format", 1)  # a card of format 1 need not say so
        d["grid"] = ModelGrid.from_dict(d["grid"])
        d["postprocess"] = PostProcess(**d.get("postprocess", {}))
        for name in ("healthy_case_scores", "contrasts"):
            d[name] = tuple(d.get(name, ()))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known}, folder=folder)

    def figures_summary(self) -> str:
        """What the model reached, in one line: healthy restoration and dev-case detection."""
        parts = [self.restoration_summary()]
        healthy = self.figures.get("healthy_validation") or {}
        if healthy.get("ssim") is not None and self.network.get("restorer") != "none":  # not the scan's own 1.00
            parts.append(f"healthy SSIM {healthy['ssim']:.2f}")
        pooled = (self.figures.get("evaluation") or {}).get("pooled") or {}
        if pooled.get("auroc") is not None:
            n = len(self.figures["evaluation"].get("cases", []))
            parts.append(f"dev AUROC {pooled['auroc']:.2f} ({n} cases)")
        reached = (self.figures.get("calibration") or {}).get("mean_voxel_fpr_at_fpr5")
        if self.thresholds.get("fpr5") == 0.0 and reached is not None:  # the 5 % target was out of reach
            parts.append(f"fpr5 flags {100 * reached:.1f} % of healthy voxels")
        return ", ".join(parts)

    @property
    def restores(self) -> bool:
        """Whether the model's pseudo-healthy image is a restoration: measured on synthetic anomalies in
        every contrast it was trained for, and passing the restorer checks there."""
        per_contrast = (self.figures.get("synthetic_validation") or {}).get("per_contrast") or {}
        return bool(per_contrast) and not restorer_problems(per_contrast)

    def restoration_summary(self) -> str:
        """Whether the pseudo-healthy image is a restoration, in a few words."""
        if self.family == "intensity" or self.network.get("restorer") == "none":
            return "no restorer"
        per_contrast = (self.figures.get("synthetic_validation") or {}).get("per_contrast") or {}
        if not per_contrast:
            return "restoration not checked"
        return "restores" if self.restores else "restoration fails the checks"

    def healthy_flagged_ml(self) -> dict:
        """Policy -> flagged volume on the healthy validation scans ({"median_ml", "per_scan_ml"}), as
        calibrate measured it; empty when it was not measured. A policy offered after calibration (a
        probability level `calibrate --select-only` added) has the median the synthetic validation measured
        on the same subjects' healthy T1 as scanned ({"median_ml"} alone), where it did; for a model not
        measured on T1, the largest median over the contrasts it was measured in (scans redrawn in them)."""
        measured = dict((self.figures.get("healthy_validation") or {}).get("flagged_ml") or {})
        per_contrast = (self.figures.get("synthetic_validation") or {}).get("per_contrast") or {}
        synthetic = [per_contrast["T1"]] if "T1" in per_contrast else list(per_contrast.values())
        for policy in sorted({p for figures in synthetic for p in figures.get("healthy_median_ml") or {}}):
            medians = [figures["healthy_median_ml"][policy] for figures in synthetic
                       if policy in (figures.get("healthy_median_ml") or {})]
            measured.setdefault(policy, {"median_ml": max(medians)})
        return measured

    def default_for(self, contrast: str | None) -> str:
        """The default policy of a scan of `contrast` (None, unknown: default_threshold)."""
        if contrast:
            for name, policy in self.contrast_thresholds.items():
                if name.lower() == contrast.lower():
                    return policy
        return self.default_threshold

    def offered_thresholds(self) -> dict:
        """The named thresholds a run may use: the calibrated values, and the case-adaptive policy
        (None here: its value is measured on each case)."""
        return {**self.thresholds, **({ADAPTIVE: None} if self.adaptive else {})}

    def replace(self, **changes) -> "ModelCard":
        return dataclasses.replace(self, **changes)


def read_card(folder: Path) -> ModelCard:
    path = folder / CARD_FILE
    try:
        d = json.loads(path.read_text())
        problem = card_problem(d)
        if problem:
            raise ValueError(problem)
        return ModelCard.from_dict(d, folder)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelError(f"model card {path} cannot be read ({err}); reinstall or re-import the model.") from None


# --- the card's schema ----------------------------------------------------------------------------
# Checked on every read (import, listing, loading): a bad card is refused with the field it gets wrong,
# before its values can reach a path, an allocation or a table. Bounds are generous for real models
# and far below what exhausts a machine.
_REQUIRED = {"id": str, "family": str, "version": str, "contrast": str, "description": str, "grid": dict,
             "network": dict}
_OPTIONAL = {"restoration": dict, "intensity": dict, "postprocess": dict, "thresholds": dict,
             "default_threshold": str, "adaptive": dict, "healthy_case_scores": list, "training": dict,
             "figures": dict, "weights": dict, "contrasts": list, "format": int, "contrast_thresholds": dict}
MAX_GRID_VOXELS = 512 ** 3
MAX_CHANNELS = 4096  # per layer of a network
_SHA256 = set("0123456789abcdef")


def card_problem(d) -> str | None:
    """What is wrong with a card's JSON, in one phrase naming the field; None for a valid card."""
    if not isinstance(d, dict):
        return "the card is not a JSON object"
    made = d.get("format", 1)
    if _is_int(made) and made > CARD_FORMAT:
        return (f"card format {made} is newer than this normativead reads ({CARD_FORMAT}): upgrade "
                "normativead to use this model")
    unknown = sorted(set(d) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        return f"unknown field(s) {', '.join(unknown)} (a card of a newer normativead, or a typo)"
    for name, kind in {**_REQUIRED, **_OPTIONAL}.items():
        if name not in d:
            if name in _REQUIRED:
                return f"field '{name}' is missing"
            continue
        if not isinstance(d[name], kind):
            return f"field '{name}' must be a {kind.__name__}, not {type(d[name]).__name__}"
    for check in (_id_problem, _grid_problem, _network_problem, _threshold_problem, _weights_problem,
                  _numbers_problem, _postprocess_problem):
        problem = check(d)
        if problem:
            return problem
    return None


def _id_problem(d: dict) -> str | None:
    try:
        checked_name(d["id"], "id")
    except InputError as err:
        return f"field {err}"
    return None


def _grid_problem(d: dict) -> str | None:
    grid = d["grid"]
    size, spacing, origin = grid.get("size_xyz"), grid.get("spacing_mm"), grid.get("origin_lps")
    if not (isinstance(size, list) and len(size) == 3 and all(_is_int(n) and 8 <= n <= 1024 for n in size)):
        return "field 'grid.size_xyz' must be three integers from 8 to 1024"
    if size[0] * size[1] * size[2] > MAX_GRID_VOXELS:
        return f"field 'grid.size_xyz' {size} exceeds {MAX_GRID_VOXELS} voxels"
    if not (_is_number(spacing) and 0.1 <= spacing <= 10):
        return "field 'grid.spacing_mm' must be a number from 0.1 to 10"
    if not (isinstance(origin, list) and len(origin) == 3 and all(_is_number(v) and abs(v) < 1e4 for v in origin)):
        return "field 'grid.origin_lps' must be three numbers (mm)"
    return None


def _network_problem(d: dict) -> str | None:
    for name in ("channels", "strides"):
        values = d["network"].get(name)
        if values is None:
            continue
        if not (isinstance(values, list) and 0 < len(values) <= 12 and all(_is_int(v) and v >= 1 for v in values)):
            return f"field 'network.{name}' must be a list of 1 to 12 positive integers"
        if name == "channels" and max(values) > MAX_CHANNELS:
            return f"field 'network.channels' holds {max(values)}, above the {MAX_CHANNELS} channels a layer may have"
        if name == "strides" and max(values) > 4:
            return "field 'network.strides' must be 1 to 4"
    return None


def _threshold_problem(d: dict) -> str | None:
    for name, value in d.get("thresholds", {}).items():
        if not (_is_number(value) and math.isfinite(value)):
            return f"field 'thresholds.{name}' must be a finite number, not {value!r}"
    for contrast, policy in d.get("contrast_thresholds", {}).items():
        if not isinstance(policy, str) or not policy:
            return f"field 'contrast_thresholds.{contrast}' must name a threshold policy, not {policy!r}"
    return None


def _weights_problem(d: dict) -> str | None:
    weights = d.get("weights", {})
    if not weights:
        return None
    try:
        checked_name(weights.get("file"), "weights file")
    except InputError as err:
        return f"field 'weights.file': {err}"
    digest = weights.get("sha256")
    if not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= _SHA256):
        return "field 'weights.sha256' must be 64 lower-case hex digits"
    return None


def _numbers_problem(d: dict) -> str | None:
    if not all(_is_number(v) for v in d.get("healthy_case_scores", [])):
        return "field 'healthy_case_scores' must hold numbers"
    if not all(isinstance(c, str) for c in d.get("contrasts", [])):
        return "field 'contrasts' must hold names"
    return None


def _postprocess_problem(d: dict) -> str | None:
    post = d.get("postprocess", {})
    known = {f.name for f in dataclasses.fields(PostProcess)}
    unknown = sorted(set(post) - known)
    if unknown:
        return f"unknown field(s) postprocess.{', postprocess.'.join(unknown)} (a card of a newer normativead, or a typo)"
    if not isinstance(post.get("mirror", False), bool):
        return "field 'postprocess.mirror' must be true or false"
    return None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def write_card(card: ModelCard, folder: Path) -> None:
    """card.json through a temporary file: an interrupted write never leaves a broken card."""
    text = jsontext.dumps(card.to_dict(), indent=2) + "\n"
    write_file_atomic(folder / CARD_FILE, lambda tmp: tmp.write_text(text), overwrite=True)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_weights(card: ModelCard) -> Path:
    """The weights file, after checking it exists and matches the card's sha256."""
    path = card.weights_path
    if not path.is_file():
        raise ModelError(f"weights of model {card.id} missing: {path}; re-import the model (normativead models import).")
    actual = sha256(path)
    if actual != card.weights.get("sha256"):
        raise ModelError(
            f"weights of model {card.id} do not match their card (sha256 {actual[:12]}... != "
            f"{str(card.weights.get('sha256'))[:12]}...): the file is corrupt or from another model; re-import it."
        )
    return path
