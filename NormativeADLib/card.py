"""The model card: everything needed to rebuild, run and trust a model, stored as JSON by its weights."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelError
from .options import ADAPTIVE
from .paths import write_file_atomic
from .grid import ModelGrid

CARD_FILE = "card.json"


@dataclass(frozen=True)
class PostProcess:
    """Residual post-processing (cDDPM protocol); sizes in model voxels unless named in mL."""

    erode_iterations: int = 3  # in-plane cross erosions of the brain mask
    median_size: int = 5  # 3D median filter; 0 or 1 disables
    min_component_ml: float = 0.056  # 7 voxels of 2 mm: smaller components are dropped
    normalise: str = "none"  # "robust_sd": residual / (1.4826 MAD of the case's brain intensities): a z-score


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
    default_threshold: str = "fpr5"  # the threshold a run uses unless told otherwise
    # the case-adaptive policy: {"base": a threshold name, "healthy_median", "healthy_robust_sd"} of
    # the healthy calibration scans' scores (anomaly.case_thresholds); empty when not calibrated
    adaptive: dict = field(default_factory=dict)
    healthy_case_scores: tuple = ()  # case scores of the calibration scans, for percentiles
    training: dict = field(default_factory=dict)  # data, licence, split, command, settings
    figures: dict = field(default_factory=dict)  # what the model reached, with how it was measured
    weights: dict = field(default_factory=dict)  # {"file": ..., "sha256": ...}
    contrasts: tuple = ()  # the scan contrasts the model was trained for (empty: just `contrast`)
    folder: Path | None = None  # where the card was read from (not stored)

    @property
    def percentiles(self) -> tuple[float, float]:
        low, high = self.intensity["percentiles"]
        return float(low), float(high)

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
        return d

    @classmethod
    def from_dict(cls, d: dict, folder: Path | None = None) -> "ModelCard":
        d = dict(d)
        d["grid"] = ModelGrid.from_dict(d["grid"])
        d["postprocess"] = PostProcess(**d.get("postprocess", {}))
        for name in ("healthy_case_scores", "contrasts"):
            d[name] = tuple(d.get(name, ()))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known}, folder=folder)

    def figures_summary(self) -> str:
        """What the model reached, in one line: healthy restoration and dev-case detection."""
        parts = []
        healthy = self.figures.get("healthy_validation") or {}
        if healthy.get("ssim") is not None:
            parts.append(f"healthy SSIM {healthy['ssim']:.2f}")
        pooled = (self.figures.get("evaluation") or {}).get("pooled") or {}
        if pooled.get("auroc") is not None:
            n = len(self.figures["evaluation"].get("cases", []))
            parts.append(f"dev AUROC {pooled['auroc']:.2f} ({n} cases)")
        reached = (self.figures.get("calibration") or {}).get("mean_voxel_fpr_at_fpr5")
        if self.thresholds.get("fpr5") == 0.0 and reached is not None:  # the 5 % target was out of reach
            parts.append(f"fpr5 flags {100 * reached:.1f} % of healthy voxels")
        return ", ".join(parts) or "no figures recorded"

    def healthy_flagged_ml(self) -> dict:
        """Policy -> flagged volume on the healthy validation scans ({"median_ml", "per_scan_ml"}), as
        calibrate measured it; empty when it was not measured."""
        return (self.figures.get("healthy_validation") or {}).get("flagged_ml") or {}

    def offered_thresholds(self) -> dict:
        """The named thresholds a run may use: the calibrated values, and the case-adaptive policy
        (None here: its value is measured on each case)."""
        return {**self.thresholds, **({ADAPTIVE: None} if self.adaptive else {})}

    def replace(self, **changes) -> "ModelCard":
        return dataclasses.replace(self, **changes)


def read_card(folder: Path) -> ModelCard:
    path = folder / CARD_FILE
    try:
        return ModelCard.from_dict(json.loads(path.read_text()), folder)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelError(f"model card {path} cannot be read ({err}); reinstall or re-import the model.") from None


def write_card(card: ModelCard, folder: Path) -> None:
    """card.json through a temporary file: an interrupted write never leaves a broken card."""
    text = json.dumps(card.to_dict(), indent=2) + "\n"
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
