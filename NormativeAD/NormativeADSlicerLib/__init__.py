"""NormativeAD's Slicer-side library: scene logic, comparison layout, export and the process runner.

Nothing here needs slicer.app, slicer.modules or Qt, so the same code runs inside 3D Slicer and on
the pip package slicer-core (where the tests run it on a real MRML scene). Only dependencies.py
(package installation) and widget.py (the panel) talk to Slicer's application; the module file
alone imports them.
"""
