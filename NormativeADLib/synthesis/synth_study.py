"""Synthetic studies: one healthy anatomy seen in several contrasts, carrying the same anomalies in each.

A radiologist reads T1, T1c, T2 and FLAIR of one subject together; a lesion that is faint or invisible
in one contrast (an MS plaque on T1) is plain in another (FLAIR). A model that reads any subset of a
study learns from studies drawn here from a healthy T1's tissue labels (synth_contrast.py):

1. each contrast of the study is drawn from the same labels (or from the T1's own intensities through
   them, from_intensities) with its own random appearance (the T1 may be the scan itself), so the
   anatomy is identical across contrasts, as after co-registration;
2. each anomaly is one region (synthetic.py's Perlin-roughened ellipse) with one appearance per
   contrast, drawn from a lesion type (LESION_TYPES): an MS plaque or oedema is bright on T2 and FLAIR
   and dark or invisible on T1, an enhancing tumour core is also bright on T1c, a cavity is dark on
   T1 and FLAIR and bright on T2; a last type draws each contrast's change at random, so that the
   model does not learn one textbook only;
3. contrasts are dropped at random (at least one kept): the model meets every subset in training.

The target is the union of the anomalies visible in at least one kept contrast: an anomaly that no
kept contrast shows cannot be found, and asking for it would teach the model to guess.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import synth_contrast, synthetic

# The study's contrasts in channel order (options.CONTRASTS spelling)
STUDY_CONTRASTS = ("T1", "T1c", "T2", "FLAIR")
# Per lesion type and contrast: (probability the lesion shows, sign of its change when it shows).
# Signs of +1/-1 are bright/dark; 0 draws the sign at random.
LESION_TYPES = {
    "plaque": {"T1": (0.5, -1), "T1c": (0.5, -1), "T2": (1.0, +1), "FLAIR": (1.0, +1)},
    "enhancing": {"T1": (0.7, -1), "T1c": (1.0, +1), "T2": (1.0, +1), "FLAIR": (1.0, +1)},
    "cavity": {"T1": (1.0, -1), "T1c": (1.0, -1), "T2": (1.0, +1), "FLAIR": (0.8, -1)},
    "random": {c: (0.7, 0) for c in STUDY_CONTRASTS},
}
TYPE_PROBABILITIES = {"plaque": 0.4, "enhancing": 0.2, "cavity": 0.15, "random": 0.25}
REAL_T1_PROB = 0.5  # how often the study's T1 is the scan itself rather than a redrawn T1


@dataclass(frozen=True)
class Study:
    """One synthetic study: per contrast its healthy and anomalous image (None where dropped), the brain,
    and the mask of the anomalies visible in at least one kept contrast."""

    healthy: dict
    anomalous: dict
    brain: np.ndarray
    mask: np.ndarray

    @property
    def present(self) -> tuple[str, ...]:
        return tuple(c for c in STUDY_CONTRASTS if self.anomalous.get(c) is not None)


def healthy_study(image: np.ndarray, brain: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                  contrasts=STUDY_CONTRASTS, real_t1_prob: float = REAL_T1_PROB, from_intensities: bool = False,
                  pure_tissue: tuple[float, float] = synth_contrast.PURE_TISSUE) -> dict:
    """{contrast: image} of one anatomy (2D slice or 3D volume): T1 the scan itself with real_t1_prob,
    every other contrast redrawn from the tissue labels (from_intensities: from the T1's own intensities
    through them, synth_contrast.from_intensities with that pure_tissue band, as the synthetic validation
    draws a contrast)."""
    out = {}
    for contrast in contrasts:
        if contrast == "T1" and rng.random() < real_t1_prob:
            out[contrast] = image.astype(np.float32)
        elif from_intensities:
            out[contrast] = synth_contrast.from_intensities(image, labels, rng, contrast.upper(), pure_tissue=pure_tissue)
        else:
            out[contrast] = synth_contrast.synthesise(labels, rng, contrast.upper())
    return out


def add_anomaly(images: dict, brain: np.ndarray, rng: np.random.Generator,
                types: dict[str, float] | None = None, clip: bool = True) -> tuple[dict, np.ndarray, set]:
    """The images with one anomaly of a drawn lesion type, its mask, and the contrasts it shows in;
    clip as synthetic.generate's."""
    types = types or TYPE_PROBABILITIES
    kind = str(rng.choice(list(types), p=np.array(list(types.values())) / sum(types.values())))
    weight = synthetic.region_weight(brain, rng)
    texture = synthetic.TEXTURE_AMPLITUDE * np.clip(synthetic.fractal_perlin(weight.shape, 2.0, rng), -1.0, 1.0)
    out, shows = {}, set()
    for contrast, image in images.items():
        probability, sign = LESION_TYPES[kind][contrast]
        if rng.random() >= probability:
            out[contrast] = image
            continue
        sign = sign or (1.0 if rng.random() < 0.5 else -1.0)
        delta = rng.uniform(*synthetic.SHIFT_RANGE)
        changed = image + sign * weight * delta * (1.0 + texture)
        out[contrast] = (np.clip(changed, 0.0, 1.0) if clip else changed).astype(np.float32)
        shows.add(contrast)
    return out, weight > 0, shows


def draw(image: np.ndarray, brain: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
         anomaly_prob: float = 0.7, max_anomalies: int = 3, keep_prob: float = 0.5,
         contrasts=STUDY_CONTRASTS, intensity_prob: float = 0.0,
         pure_tissue: tuple[float, float] = synth_contrast.PURE_TISSUE) -> Study:
    """A training study of one slice (or volume): the healthy study (its contrasts drawn from the T1's own
    intensities with intensity_prob, else from its labels), anomalies with anomaly_prob (1 to max_anomalies),
    then each contrast kept with keep_prob (at least one)."""
    by_intensity = intensity_prob > 0 and rng.random() < intensity_prob  # no draw without: older configs reproduce
    healthy = healthy_study(image, brain, labels, rng, contrasts, from_intensities=by_intensity,
                            pure_tissue=pure_tissue)
    kept = [c for c in contrasts if rng.random() < keep_prob] or [contrasts[rng.integers(len(contrasts))]]
    anomalous, mask = dict(healthy), np.zeros(brain.shape, bool)
    if rng.random() < anomaly_prob and brain.sum() >= synthetic.MIN_VOXELS:
        for _ in range(rng.integers(1, max_anomalies + 1)):
            anomalous, added, shows = add_anomaly(anomalous, brain, rng)
            if shows & set(kept):
                mask |= added
    keep = lambda images: {c: (images[c] if c in kept else None) for c in contrasts}  # noqa: E731
    return Study(keep(healthy), keep(anomalous), brain, mask)
