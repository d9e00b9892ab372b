"""On the development lesion cases of ../shared/data the heatmap separates lesion from healthy tissue.

Floor: AUROC > 0.6 on every case. Chance is 0.5; a heatmap that tracks lesions at all clears
0.6 by a margin on these cases (the figures measured are in the README), while a model that
only copies its input or is misregistered scores near 0.5.
"""

import pytest

from conftest import SHARED_DATA, needs_shared_data
from NormativeADLib import pipeline

AUROC_FLOOR = 0.6
CASES = {
    "brats2013/pat0005 T1c": ("pathology/brats2013/pat0005/t1c.nii.gz", "pathology/brats2013/pat0005/seg.nii.gz",
                              "pathology/brats2013/pat0005/brainmask.nii.gz"),
    "brats2013/pat0002 T1c": ("pathology/brats2013/pat0002/t1c.nii.gz", "pathology/brats2013/pat0002/seg.nii.gz",
                              "pathology/brats2013/pat0002/brainmask.nii.gz"),
    "mslub/patient26 T1": ("pathology/mslub/patient26/t1.nii.gz", "pathology/mslub/patient26/lesion.nii.gz", None),
}


@needs_shared_data()
@pytest.mark.parametrize("case", list(CASES))
def test_heatmap_separates_lesions_better_than_chance(case, shipped_model):
    scan, reference, mask = (SHARED_DATA / p if p else None for p in CASES[case])
    result = pipeline.analyse(scan, shipped_model, mask_path=mask, reference_path=reference)
    ref = result.metrics["reference"]
    print(f"{case}: Dice {ref['dice']:.3f} AUPRC {ref['auprc']:.3f} AUROC {ref['auroc']:.3f} "
          f"({result.metrics['seconds']} s)")
    assert ref["auroc"] > AUROC_FLOOR
