"""What a restorer must do, and which threshold it should use, measured without lesion labels.

On healthy validation scans (never trained on), in each contrast a model accepts (T1 as scanned; T1c,
T2 and FLAIR redrawn from the scan's own intensities through its tissue classes, synth_contrast.py's
from_intensities), each scan once as it is and
once carrying synthetic anomalies (synthetic.py, in 3D: 4-20 mm, several kinds, and glioma-sized tumours of
12-36 mm; drawn as lesions look in that contrast: mostly bright on T2 and FLAIR; planted unclipped and
the scan normalised after, with the model's percentiles, as a real scan is normalised with its lesion in it):
- restoration of the healthy scan: SSIM and MAE inside the brain (it should keep healthy tissue);
- removal: the share of the anomaly's intensity change that does not reach the restoration,
  1 - mean|R(anomalous) - R(healthy)| / mean|anomalous - healthy| inside the anomaly (1: the anomaly
  leaves the restoration as it was on the healthy scan, 0: the anomaly copied, as the identity does).
  Counterfactual, against the restoration of the same healthy scan, so that the restorer's ordinary
  error on healthy tissue (the SSIM and MAE above) is not charged to it a second time; a restorer that
  removes everything by blurring scores high here and fails the SSIM floor instead (card.restorer_problems);
- contrast of the residual: its mean inside the anomaly over its mean in the rest of the brain
  (above 1 where the heatmap can find the anomaly; about 1 for the identity, whose residual is 0);
- detection: per threshold policy of the card, the Dice of the segmentation with the anomaly's mask,
  the flagged volume on the healthy scans, and the flagged volume over the planted one on the scans with
  anomalies (median; also over the scans carrying a glioma-sized tumour alone): whether a policy's
  volume can be read as the anomaly's, which Dice alone does not say (Dice 0.4 is reached both by a
  segmentation twice the anomaly and by one half of it).
choose_policy() then picks a card's default policy from these figures: the best Dice on synthetic
anomalies among the policies that find some and whose healthy flagged volume stays within a limit (or,
when none does, the one that exceeds it least, by at most the limit again). No lesion label of a real case
is read here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..measures import anomaly, metrics
from ..synthesis import synth_contrast, synth_study, synthetic
from ..core.grid import ModelGrid
from ..core.options import ADAPTIVE
from ..models.registry import LoadedModel
from ..pipeline.restore import restore_volume, score_volume

HEALTHY_LIMIT_ML = 5.0  # the median healthy flagged volume a default policy may reach
PROBABILITY_CEILING = 0.99  # a segmenter's threshold at or above it sits at its ceiling (ceiling_policies)
ANOMALIES_PER_SCAN = 3
# The contrast sets a study model is measured on: each contrast alone, and the usual clinical sets
STUDY_SETS = ("T1", "T1c", "T2", "FLAIR", "T1c+FLAIR", "T1+T2+FLAIR", "T1+T1c+T2+FLAIR")


@dataclass(frozen=True)
class ScanFigures:
    ssim: float
    mae: float
    removal: float | None
    residual_contrast: float | None
    dice: dict  # policy -> Dice on the synthetic anomalies
    healthy_ml: dict  # policy -> flagged mL on the healthy scan
    anomaly_ml: float
    flagged_ml: dict  # policy -> flagged mL on the scan with anomalies
    tumour: bool = False  # one of its anomalies is a glioma-sized tumour


def in_contrast(image: np.ndarray, brain: np.ndarray, contrast: str, rng: np.random.Generator,
                grid: ModelGrid = ModelGrid(), labels: np.ndarray | None = None) -> np.ndarray:
    """A healthy model-space T1 (on grid) as a scan of `contrast`: itself for T1, else redrawn from its own
    intensities through its tissue classes (synth_contrast.from_intensities: partial volume as scanned);
    labels: the scan's tissue labels where already computed."""
    if contrast.upper() == "T1":
        return image
    if labels is None:
        labels = synth_contrast.labels_for_volume(image, brain, grid)
    return synth_contrast.from_intensities(image, labels, rng, contrast.upper())


def with_anomalies(image: np.ndarray, brain: np.ndarray, rng: np.random.Generator, count: int = ANOMALIES_PER_SCAN,
                   contrast: str | None = None, percentiles: tuple[float, float] | None = None
                   ) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """(the volume carrying `count` synthetic 3D anomalies, drawn as lesions look in `contrast`
    (synthetic.contrast_probabilities: tumours in every contrast, mostly bright on T2 and FLAIR), their joint
    mask, their kinds, the healthy volume as the anomalous one is scaled). With percentiles (the model's),
    the anomalies are planted unclipped and the scan normalised after, as preprocessing normalises a real scan
    with its lesion in it (SYNTHETIC_VALIDATION_VERSION 7); the healthy volume is then scaled alike, so that
    the anomaly alone tells them apart."""
    mask = np.zeros(brain.shape, bool)
    probabilities = synthetic.contrast_probabilities(contrast)
    kinds, anomalous = [], image
    for _ in range(count):
        anomalous, added, kind = synthetic.sample(anomalous, brain, rng, probabilities=probabilities,
                                                  contrast=contrast, clip=percentiles is None)
        mask |= added
        kinds.append(kind)
    if percentiles is None:
        return anomalous, mask, kinds, image
    anomalous, healthy = normalised_pair(anomalous, image, brain, percentiles)
    return anomalous, mask, kinds, healthy


def normalised_pair(anomalous: np.ndarray, healthy: np.ndarray, brain: np.ndarray,
                    percentiles: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """A scan carrying unclipped anomalies normalised as preprocessing normalises a scan with its lesion in it,
    and its healthy twin scaled by the same map (so that only the anomaly tells them apart)."""
    return (synth_contrast.normalise(anomalous, brain, percentiles),
            synth_contrast.normalise(healthy, brain, percentiles, reference=anomalous))


def removed_share(healthy: np.ndarray, anomalous: np.ndarray, restored_healthy: np.ndarray,
                  restored_anomalous: np.ndarray, mask: np.ndarray) -> float | None:
    """The share of the anomaly's change (inside mask) that does not reach the restoration; None when
    the anomaly changed nothing."""
    change = np.abs(anomalous - healthy)[mask].mean()
    if not change > 0:
        return None
    return 1.0 - float(np.abs(restored_anomalous - restored_healthy)[mask].mean() / change)


def measure_scan(model: LoadedModel, healthy: np.ndarray, brain: np.ndarray, rng: np.random.Generator,
                 device: torch.device = torch.device("cpu"), contrast: str | None = None) -> ScanFigures:
    """The figures of the module docstring for one healthy scan (already in `contrast`, the one to measure)."""
    card = model.card
    voxel_ml = card.grid.spacing_mm ** 3 / 1000.0
    restored = restore_volume(model, healthy, brain, device)
    fidelity = metrics.restoration_fidelity(healthy, restored, brain)
    healthy_score = score_volume(model, healthy, restored, brain, device, contrast=contrast)
    anomalous, mask, kinds, scaled = with_anomalies(healthy, brain, rng, contrast=contrast, percentiles=card.percentiles)
    fixed = restore_volume(model, anomalous, brain, device)
    score = score_volume(model, anomalous, fixed, brain, device, contrast=contrast)
    # against the healthy scan scaled as the anomalous one is: the change is then the anomaly's alone
    removal = removed_share(scaled, anomalous, restore_volume(model, scaled, brain, device), fixed, mask)
    residual = np.abs(anomalous - fixed)
    outside = residual[brain & ~mask].mean()
    contrast = float(residual[mask].mean() / outside) if outside > 0 else None
    dice, flagged_ml = _detection(card, score, brain, mask)
    _, healthy_ml = _detection(card, healthy_score, brain)
    return ScanFigures(fidelity["ssim"], fidelity["mae"], removal, contrast, dice, healthy_ml,
                       float(mask.sum() * voxel_ml), flagged_ml, synthetic.TUMOUR in kinds)


def _detection(card, score: np.ndarray, brain: np.ndarray, mask: np.ndarray | None = None) -> tuple[dict, dict]:
    """({policy: Dice with mask}, {policy: flagged mL}) of a score volume at each of the card's policies (no
    Dice for a healthy scan, mask None)."""
    voxel_mm = (card.grid.spacing_mm,) * 3
    voxel_ml = card.grid.spacing_mm ** 3 / 1000.0
    dice, flagged_ml = {}, {}
    for name, value in anomaly.case_thresholds(card, score, brain).items():
        found = anomaly.segment(score, value, voxel_mm, card.postprocess.min_component_ml)
        if mask is not None:
            dice[name] = anomaly.dice(found, mask)
        flagged_ml[name] = float(found.sum() * voxel_ml)
    return dice, flagged_ml


def measure_study_scan(model: LoadedModel, t1: np.ndarray, brain: np.ndarray, contrasts: list[str],
                       rng: np.random.Generator, device: torch.device = torch.device("cpu"),
                       labels: np.ndarray | None = None) -> ScanFigures:
    """measure_scan for a study model on a synthetic study of one healthy T1 (synth_study.py): the T1 as
    scanned, the other contrasts redrawn from its own intensities (as in_contrast), the same anomalies in each;
    the restoration figures are the means over the study's contrasts."""
    card = model.card
    voxel_ml = card.grid.spacing_mm ** 3 / 1000.0
    if labels is None:
        labels = synth_contrast.labels_for_volume(t1, brain, card.grid)
    healthy = synth_study.healthy_study(t1, brain, labels, rng, contrasts, real_t1_prob=1.0, from_intensities=True)
    anomalous, mask = dict(healthy), np.zeros(brain.shape, bool)
    for _ in range(ANOMALIES_PER_SCAN):
        anomalous, added, shows = synth_study.add_anomaly(anomalous, brain, rng, clip=False)
        if shows:
            mask |= added
    pairs = {c: normalised_pair(anomalous[c], healthy[c], brain, card.percentiles) for c in contrasts}  # as with_anomalies
    anomalous, scaled = {c: a for c, (a, _) in pairs.items()}, {c: h for c, (_, h) in pairs.items()}

    def restored_and_score(images: dict) -> tuple[dict, np.ndarray]:
        restored = {c: restore_volume(model, img, brain, device) for c, img in images.items()}
        first, *others = contrasts
        score = score_volume(model, images[first], restored[first], brain, device, contrast=first,
                             others={c: (images[c], restored[c]) for c in others})
        return restored, score

    clean, healthy_score = restored_and_score(healthy)
    fixed, score = restored_and_score(anomalous)
    clean_scaled = {c: restore_volume(model, scaled[c], brain, device) for c in contrasts}
    fidelity = [metrics.restoration_fidelity(healthy[c], clean[c], brain) for c in contrasts]
    removal = [removed_share(scaled[c], anomalous[c], clean_scaled[c], fixed[c], mask) for c in contrasts]
    residual = np.mean([np.abs(anomalous[c] - fixed[c]) for c in contrasts], axis=0)
    outside = residual[brain & ~mask].mean()
    dice, flagged_ml = _detection(card, score, brain, mask)
    _, healthy_ml = _detection(card, healthy_score, brain)
    return ScanFigures(_mean(f["ssim"] for f in fidelity), _mean(f["mae"] for f in fidelity), _mean(removal),
                       float(residual[mask].mean() / outside) if outside > 0 and mask.any() else None, dice, healthy_ml,
                       float(mask.sum() * voxel_ml), flagged_ml)


def measure(model: LoadedModel, images, brains, contrasts, seed: int = 0,
            device: torch.device = torch.device("cpu")) -> dict:
    """Per contrast, or for a study model also per contrast set ("T1+T2+FLAIR"): the mean figures over the
    scans, and per policy the mean Dice and median healthy mL. A single contrast is measured the same way
    for every model (synthetic.py's anomalies), so that models compare on the same scans; a set, on
    synthetic studies (synth_study.py's anomalies, the same in each contrast)."""
    out, labels = {}, {}

    def labels_of(i: int) -> np.ndarray:  # each scan's tissue labels once, for every contrast redrawn from them
        if i not in labels:
            labels[i] = synth_contrast.labels_for_volume(images[i], brains[i], model.card.grid)
        return labels[i]

    for contrast in contrasts:
        rng = np.random.default_rng(seed)
        if "+" in contrast:
            rows = [measure_study_scan(model, img, b, contrast.split("+"), rng, device, labels_of(i))
                    for i, (img, b) in enumerate(zip(images, brains))]
        else:
            rows = [measure_scan(model, in_contrast(img, b, contrast, rng, model.card.grid,
                                                    None if contrast.upper() == "T1" else labels_of(i)),
                                 b, rng, device, contrast)
                    for i, (img, b) in enumerate(zip(images, brains))]
        policies = sorted({p for r in rows for p in r.dice})
        out[contrast] = {
            "n_scans": len(rows),
            "ssim": _mean(r.ssim for r in rows), "mae": _mean(r.mae for r in rows),
            "removal": _mean(r.removal for r in rows), "residual_contrast": _mean(r.residual_contrast for r in rows),
            "anomaly_ml": _mean(r.anomaly_ml for r in rows),
            "dice": {p: _mean(r.dice.get(p) for r in rows) for p in policies},
            "healthy_median_ml": {p: float(np.median([r.healthy_ml.get(p, 0.0) for r in rows])) for p in policies},
            "flagged_ratio": _flagged_ratio(rows, policies),
            "tumour_flagged_ratio": _flagged_ratio([r for r in rows if r.tumour], policies),
        }
    return out


def _flagged_ratio(rows: list[ScanFigures], policies) -> dict:
    """{policy: median over the scans of flagged mL / planted mL}; empty without a planted anomaly."""
    rows = [r for r in rows if r.anomaly_ml > 0]
    if not rows:
        return {}
    return {p: float(np.median([r.flagged_ml.get(p, 0.0) / r.anomaly_ml for r in rows])) for p in policies}


def ceiling_policies(model: LoadedModel) -> set[str]:
    """A segmenter's policies whose threshold sits at the probability's ceiling (PROBABILITY_CEILING or more;
    the adaptive policy when it moves about one): a default there prints every score as 1 and leaves the
    slider no range, so none of them is a default."""
    card = model.card
    if not model.family.segments:
        return set()
    high = {name for name, value in card.thresholds.items() if float(value) >= PROBABILITY_CEILING}
    if card.adaptive and card.adaptive.get("base") in high:
        high.add(ADAPTIVE)
    return high


def choose_policy(figures: dict, limit_ml: float = HEALTHY_LIMIT_ML, exclude=frozenset(),
                  must_choose: bool = False) -> tuple[str | None, str]:
    """(policy, why): among the policies that find synthetic anomalies (mean Dice above 0: a policy that
    flags nothing is no default, however clean it keeps healthy scans), the best mean Dice over the contrasts
    among those whose median healthy flagged volume stays within limit_ml in every contrast; when none does,
    the one that exceeds it least, if by no more than limit_ml (the miss is stated); failing both, None: no
    policy finds anything within the limit, which says nothing for one over another, so the card keeps its
    default (an intensity rule's stated z2 on synthetic FLAIR, where no z-score level finds the anomalies).
    Policies in `exclude` (ceiling_policies) are never chosen; must_choose (the card's default is one of
    them, so it cannot be kept) takes the finding policy that exceeds the limit least, however far."""
    policies = set.intersection(*(set(f["dice"]) for f in figures.values())) if figures else set()
    policies -= set(exclude)
    dice = {p: float(np.mean([f["dice"][p] for f in figures.values()])) for p in policies}
    worst = {p: max(figures, key=lambda c: figures[c]["healthy_median_ml"][p]) for p in policies}
    worst_ml = {p: figures[worst[p]]["healthy_median_ml"][p] for p in policies}
    within = sorted(p for p in policies if worst_ml[p] <= limit_ml)
    finding = [p for p in within if dice[p] > 0]
    near = sorted((p for p in policies if dice[p] > 0 and worst_ml[p] <= 2 * limit_ml), key=lambda p: (worst_ml[p], -dice[p]))
    if finding:
        best = max(finding, key=dice.get)
        return best, (f"{best}: best mean Dice on synthetic anomalies ({dice[best]:.3f}) over {', '.join(figures)} "
                      f"among the policies flagging at most {limit_ml:g} mL (median) on healthy validation scans "
                      f"({', '.join(f'{p} {dice[p]:.3f}' for p in finding)})")
    if near:
        least = near[0]
        return least, (f"{least}: no policy that finds synthetic anomalies flags at most {limit_ml:g} mL (median) "
                       f"on healthy validation scans in every contrast; {least} exceeds it least "
                       f"({worst_ml[least]:.1f} mL in {worst[least]}; mean Dice {dice[least]:.3f})")
    finding_any = sorted((p for p in policies if dice[p] > 0), key=lambda p: (worst_ml[p], -dice[p]))
    if must_choose and finding_any:
        least = finding_any[0]
        return least, (f"{least}: no policy below the probability's ceiling that finds synthetic anomalies flags at "
                       f"most {2 * limit_ml:g} mL (median) on healthy validation scans in every contrast; {least} "
                       f"exceeds {limit_ml:g} mL least ({worst_ml[least]:.1f} mL in {worst[least]}; mean Dice "
                       f"{dice[least]:.3f})")
    if within:  # no evidence for any of them: the card keeps the default it has (the caller's None)
        return None, (f"no policy finds synthetic anomalies within {2 * limit_ml:g} mL (median) on healthy "
                      f"validation scans ({', '.join(within)} stay within {limit_ml:g} mL and find none)")
    return None, f"no policy flags at most {limit_ml:g} mL on healthy scans in every contrast"


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None
