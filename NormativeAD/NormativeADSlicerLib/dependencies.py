"""Python packages the library needs inside 3D Slicer: checked on first use, installed after asking.

- torch comes from the PyTorch extension's installer (PyTorchUtils), which picks the right CUDA build.
- The other packages (Resources/requirements.txt) are pip-installed into Slicer's Python after the
  user agrees, constrained so that pip never replaces the torch build the PyTorch extension chose,
  nor Slicer's own numpy or SimpleITK (monai, for one, would otherwise pull a torch of its choice).
- Nothing is installed at import time; only ensure() installs, and only after a confirmation.

This file is the one part of the library that needs the Slicer application (slicer.util dialogs and
pip_install); it is imported by the module file only.
"""

from __future__ import annotations

import importlib.metadata
import re
import tempfile
from pathlib import Path

REQUIREMENTS_FILE = Path(__file__).resolve().parent.parent / "Resources" / "requirements.txt"
PROTECTED = ("torch", "numpy", "SimpleITK")  # builds chosen by Slicer or its PyTorch extension: never replaced
TORCH_REQUIREMENT = ">=2.2"


def requirements(path: Path = REQUIREMENTS_FILE) -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line]


def _distribution(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]


def missing(reqs: list[str] | None = None) -> list[str]:
    """Requirements whose distribution is not installed (versions are lower bounds only; not checked)."""
    absent = []
    for requirement in reqs if reqs is not None else requirements():
        try:
            importlib.metadata.version(_distribution(requirement))
        except importlib.metadata.PackageNotFoundError:
            absent.append(requirement)
    return absent


def missing_all() -> list[str]:
    """Everything the library needs that is not installed yet, torch first (standard library only)."""
    return ([] if torch_installed() else ["torch"]) + missing()


def torch_installed() -> bool:
    try:
        importlib.metadata.version("torch")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def constraints_file() -> Path:
    """A pip constraints file pinning the installed torch, numpy and SimpleITK to their current versions."""
    pins = []
    for name in PROTECTED:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    handle = tempfile.NamedTemporaryFile("w", suffix="-constraints.txt", delete=False)
    handle.write("\n".join(pins) + "\n")
    handle.close()
    return Path(handle.name)


def ensure(ask: bool = True) -> bool:
    """Make torch and the other packages importable in Slicer's Python; False if the user declined.

    Raises RuntimeError with a readable reason when an installation fails.
    """
    import slicer

    if not torch_installed():
        try:
            import PyTorchUtils
        except ImportError:
            raise RuntimeError("NormativeAD needs PyTorch: install the PyTorch extension from the Extensions "
                               "Manager, restart Slicer, and try again.") from None
        torch_logic = PyTorchUtils.PyTorchUtilsLogic()
        if torch_logic.installTorch(askConfirmation=ask, torchVersionRequirement=TORCH_REQUIREMENT) is None:
            return False
    absent = missing()
    if not absent:
        return True
    if ask and not slicer.util.confirmOkCancelDisplay(
            "NormativeAD needs these Python packages, which are not installed yet:\n\n  "
            + "\n  ".join(absent)
            + "\n\nInstall them now? (This downloads them with pip; the torch, numpy and SimpleITK in place stay as they are.)",
            windowTitle="NormativeAD: install Python packages"):
        return False
    constraints = constraints_file()
    try:
        with slicer.util.WaitCursor():
            slicer.util.pip_install(["-c", str(constraints), *absent])
    except Exception as err:
        raise RuntimeError(f"installing {', '.join(absent)} failed: {err}") from None
    finally:
        constraints.unlink(missing_ok=True)
    still = missing(absent)
    if still:
        raise RuntimeError(f"these packages are still missing after installation: {', '.join(still)}")
    return True
