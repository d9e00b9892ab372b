"""Registration benchmark (not a test): how the pyramid of the similarity stage and the metric's
sampling share trade preparation time for accuracy, on the dev cases with several contrasts and two
healthy IXI scans (needs ../shared/data).

For each setting and seed, `preprocess.prepare` runs on every case; printed per case: the
preparation time, the registration QC, the Mattes MI of the final transform evaluated on every voxel
(lower is better; the optimiser only saw a sample), and how far the transform moves brain points
against the first setting (mean and max mm, over every 50th voxel of the model-space brain). A change
of seed at the first setting shows how much a registration moves by chance alone.

    python Testing/bench/registration_settings.py      # the product (4-2-1) against 4-2, seeds 7, 11
    python Testing/bench/registration_settings.py --settings 4,2,1@0.25 4,2@0.25 4,2,1@0.10 --seeds 7

A setting is SIMILARITY_SHRINK@SAMPLING; the affine stage keeps preprocess.AFFINE_SHRINK.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"
CASES = ["pathology/mslub/patient26/t1.nii.gz", "pathology/mslub/patient26/flair.nii.gz",
         "pathology/brats2013/pat0005/t1c.nii.gz", "pathology/brats2013/pat0002/flair.nii.gz",
         "pathology/tcga-fg-6692/t1c.nii.gz", "pathology/tcga-fg-6692/t2.nii.gz",
         "healthy/ixi_t1/IXI013-HH-1212_T1.nii.gz", "healthy/ixi_t1/IXI014-HH-1236_T1.nii.gz"]


def full_sample_mi(prepared, percentiles) -> float:
    """Mattes MI of the prepared transform between the template and the scan's brain, every voxel."""
    from NormativeADLib.io.template import template_on_grid
    from NormativeADLib.pipeline import preprocess as P

    fixed, _ = template_on_grid(prepared.grid)
    smoothed = P.match_resolution(prepared.native, prepared.grid.spacing_mm)
    moving = P.at_most_resolution(sitk.Cast(P.normalised_brain(smoothed, prepared.native_brain, percentiles),
                                            sitk.sitkFloat32), prepared.grid.spacing_mm)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.NONE)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetInitialTransform(prepared.transform)
    return reg.MetricEvaluate(fixed, moving)


def brain_points(prepared) -> list:
    from NormativeADLib.io.template import grid_image

    ref = grid_image(prepared.grid)
    return [ref.TransformIndexToPhysicalPoint([int(i[2]), int(i[1]), int(i[0])])
            for i in np.argwhere(prepared.brain)[::50]]


def _use(preprocess, similarity_shrink: tuple, sampling: float, seed: int) -> None:
    """Make preprocess register with these settings (the product's code path, its other constants)."""
    preprocess.SIMILARITY_SHRINK = similarity_shrink
    preprocess.REGISTRATION_SAMPLING = sampling
    preprocess.REGISTRATION_SEED = seed


def main() -> int:
    from NormativeADLib import io
    from NormativeADLib.io import template
    from NormativeADLib.pipeline import preprocess
    from NormativeADLib.core.catalogue import get_card

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=["4,2,1@0.25", "4,2@0.25"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 11])
    args = parser.parse_args()
    cases = [DATA / c for c in CASES]
    if not all(c.is_file() for c in cases):
        raise SystemExit(f"needs the dev cases under {DATA}")
    card = get_card("sadm-dae")
    template.template_on_grid(card.grid)  # loaded once, before anything is timed
    reference: dict = {}
    print("| similarity@sampling | seed | case | prepare s | QC | full MI | moved mean mm | moved max mm |\n"
          "|---|---|---|---|---|---|---|---|")
    for setting in args.settings:
        shrink, sampling = setting.split("@")
        for seed in args.seeds:
            _use(preprocess, tuple(int(f) for f in shrink.split(",")), float(sampling), seed)
            seconds = []
            for case in cases:
                scan = io.read_scan(case)
                started = time.perf_counter()
                prepared = preprocess.prepare(scan, card.grid, None, card.percentiles)
                seconds.append(time.perf_counter() - started)
                points = reference.setdefault(case, (brain_points(prepared), None))[0]
                mapped = np.array([prepared.transform.TransformPoint(p) for p in points])
                if reference[case][1] is None:
                    reference[case] = (points, mapped)
                moved = np.linalg.norm(mapped - reference[case][1], axis=1)
                print(f"| {setting} | {seed} | {case.parent.name}/{case.name} | {seconds[-1]:.2f} | "
                      f"{preprocess.registration_qc(prepared):.3f} | {full_sample_mi(prepared, card.percentiles):.4f} | "
                      f"{moved.mean():.2f} | {moved.max():.2f} |", flush=True)
            print(f"| {setting} | {seed} | **median** | {statistics.median(seconds):.2f} | | | | |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
