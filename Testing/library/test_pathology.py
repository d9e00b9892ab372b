"""On the development lesion cases of ../shared/data the heatmap separates lesion from healthy tissue.

Runs `normativead evaluate` over Resources/Cases/shared_dev.json (BraTS 2013 T1c x2, MSLUB T1).
Floors, from chance (AUROC 0.5) and what the shipped AE measured (docs/results.md): voxels pooled over
the three cases AUROC > 0.6 (measured 0.65), each glioma AUROC > 0.55 (measured 0.73 and 0.58).
The MS case is reported, not asserted: the AE's T1 heatmap does not separate its small T1
lesions from tissue (AUROC 0.52), and a test claiming otherwise would be false.
A model that copies its input, or a misregistered case, scores near 0.5 everywhere.
"""

import json

from testsupport import SHARED_DATA, needs_shared_data
from NormativeADLib.core import catalogue, locations
from NormativeADLib import cli

POOLED_AUROC_FLOOR = 0.6
GLIOMA_AUROC_FLOOR = 0.55


@needs_shared_data()
def test_evaluate_dev_cases(tmp_path, capsys):
    manifest = locations.resources_dir() / "Cases" / "shared_dev.json"
    code = cli.main(["evaluate", "--cases", str(manifest), "--root", str(SHARED_DATA), "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert code == 0, out.err
    print(out.out)
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert report["n_cases"] == 3 and (tmp_path / "evaluation.png").is_file()
    sources = {r["threshold_source"] for r in report["cases"]}
    card = catalogue.get_card(report["model"]["id"])  # the measured default model: no --model given
    assert sources == {*card.offered_thresholds(), "dice_searched_on_these_cases"}
    assert report["pooled"]["auroc"] > POOLED_AUROC_FLOOR
    for row in report["cases"]:
        if row["threshold_source"] == "fpr5" and row["case"].startswith("brats"):
            assert row["auroc"] > GLIOMA_AUROC_FLOOR, row
    searched = report["summary"]["dice_searched_on_these_cases"]["pooled_dice"]
    assert searched >= max(report["summary"][k]["pooled_dice"] for k in ("fpr1", "fpr5", "fpr10")) - 0.01
