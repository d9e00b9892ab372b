"""NormativeAD in the browser: `normativead web`, a trame-slicer application on Slicer's real MRML scene.

Why a folder of its own at the top of the repository, beside NormativeADLib and not inside the Slicer
module's folder: the Slicer extension packages every .py under NormativeAD/ (its CMake lists them) and
Slicer brings its own user interface, whereas this page is installed with the pip package (it is
listed in pyproject's packages) and started by the `normativead` command. It holds no scene logic of
its own: it drives the Slicer module's NormativeADSlicerLib (Job, scene, comparison, export; a package
of the same wheel, installed from NormativeAD/) on the scene trame-slicer makes, the same code that
serves the Slicer panel.

- command.py: the `normativead web` subcommand (argument parsing only; trame is imported in run()).
- session.py: what one page does to the scene (load a scan, run, threshold, compare, export), no UI.
- app.py: the page (trame + Vuetify widgets bound to the session), no computation.
"""
