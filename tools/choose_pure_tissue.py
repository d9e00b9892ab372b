"""Choose synth_contrast.PURE_TISSUE on healthy scans: the percentile band of each tissue class's T1
intensities that from_intensities maps to the class's drawn mean (the rest is partial volume).

    .venv/bin/python tools/choose_pure_tissue.py --data ../shared/data/healthy/ixi_t1

Rule (written before the run): on the first SUBJECTS training subjects of the shipped split (never the
validation or calibration subjects, never a pathology case), DRAWS draws per contrast and subject with the
same seeds for every candidate band, a draw keeps its contrast's class order (CONTRAST_ORDER) when the
medians of the synthetic image inside each class, eroded by one voxel (away from partial volume), rise in
that order. The chosen band is the one whose draws keep the order most often over T1c, T2 and FLAIR
together; a tie goes to the wider band (more of each class drawn as pure tissue). Prints one line per band.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from NormativeADLib.core.grid import ModelGrid
from NormativeADLib.core.locations import prepared_cache
from NormativeADLib.synthesis import synth_contrast
from NormativeADLib.training import data
from NormativeADLib.training.train import default_split_path

SUBJECTS, DRAWS = 10, 5
CANDIDATES = [(float(lo), float(100 - lo)) for lo in range(5, 50, 5)]
CONTRASTS = ("T1C", "T2", "FLAIR")


def order_kept(image: np.ndarray, cores: dict, contrast: str) -> bool:
    """cores: each class's mask eroded by a voxel (away from partial volume)."""
    medians = [np.median(image[cores[c]]) for c in synth_contrast.CONTRAST_ORDER[contrast]]
    return bool(np.all(np.diff(medians) > 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of healthy IXI T1 scans")
    args = parser.parse_args()
    split = data.load_split(default_split_path())
    scans = data.list_scans(args.data)
    paths = [scans[s] for s in split.train[:SUBJECTS]]
    grid = ModelGrid()
    images, brains = data.load_cohort(paths, prepared_cache(), grid, (1.0, 99.0))
    labels = [synth_contrast.labels_for_volume(image, brain, grid) for image, brain in zip(images, brains)]
    cores = [{c: ndimage.binary_erosion(label == c) for c in (synth_contrast.CSF, synth_contrast.GM, synth_contrast.WM)}
             for label in labels]  # once a subject, not once a draw
    results = {}
    for band in CANDIDATES:
        kept = {c: 0 for c in CONTRASTS}
        for s, (image, label, core) in enumerate(zip(images, labels, cores)):
            for c_index, contrast in enumerate(CONTRASTS):
                for d in range(DRAWS):
                    rng = np.random.default_rng([s, c_index, d])
                    drawn = synth_contrast.from_intensities(image, label, rng, contrast, pure_tissue=band)
                    kept[contrast] += order_kept(drawn, core, contrast)
        n = SUBJECTS * DRAWS
        results[band] = sum(kept.values()) / (n * len(CONTRASTS))
        print(f"{band[0]:4.0f}-{band[1]:3.0f}: all {results[band]:.2f}  "
              + "  ".join(f"{c} {kept[c] / n:.2f}" for c in CONTRASTS), flush=True)
    best = max(results.values())
    chosen = min((band for band, share in results.items() if share == best), key=lambda b: b[0])
    print(f"chosen: {chosen[0]:.0f}-{chosen[1]:.0f} (order kept in {best:.0%} of draws)")


if __name__ == "__main__":
    main()
