"""Build-time test of the built extension (ctest py_NormativeADModuleTest, next to py_NormativeAD).

It checks what a packaging mistake breaks and the self-test cannot see on a factory machine without
torch: the module's resources and the library sit where the module looks for them, and the model
catalogue and the heatmap colour table load. Nothing here needs torch or the other analysis packages.
Testing/module/test_slicer_daily_use.py runs it on the checkout's layout too.
"""

import unittest
from pathlib import Path

import slicer

RESOURCES = (
    "Resources/UI/NormativeAD.ui",
    "Resources/Icons/NormativeAD.png",
    "Resources/ColorTables/NormativeADHeat.ctbl",
    "Resources/requirements.txt",
)


class NormativeADModuleTest(unittest.TestCase):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def test_module_resources_are_in_place(self):
        module_dir = Path(slicer.modules.normativead.path).parent
        for relative in RESOURCES:
            self.assertTrue((module_dir / relative).is_file(), f"{relative} is not beside {module_dir}")

    def test_shipped_models_are_listed_without_torch(self):
        import NormativeAD

        cards = NormativeAD.NormativeADLogic().listModels()
        self.assertTrue(cards, "no model card found: Resources/Models is missing from the package")
        self.assertTrue(all(card.id for card in cards))

    def test_heatmap_colour_table_loads(self):
        import NormativeAD  # noqa: F401  (puts NormativeADLib on sys.path)
        from NormativeADSlicerLib import scene

        node = scene.heatmap_color_node(slicer.mrmlScene)
        self.assertGreater(node.GetNumberOfColors(), 1)
