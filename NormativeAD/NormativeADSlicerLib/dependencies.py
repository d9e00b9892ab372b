"""Python packages the library needs inside 3D Slicer: checked on first use, installed after asking.

- torch comes from the PyTorch extension's installer (PyTorchUtils), which picks the right CUDA build;
  a torch older than TORCH_REQUIREMENT is upgraded the same way.
- The other packages (Resources/requirements.txt, lower bounds) are pip-installed into Slicer's Python
  after the user agrees, constrained so that pip replaces nothing already installed (Slicer's numpy,
  SimpleITK and scipy, the torch build the PyTorch extension chose: monai, for one, would otherwise
  pull a torch of its choice), except a package below the bound the library needs, which is upgraded.
- A package upgraded while Slicer had it imported takes effect after a restart, which is offered.
- Nothing is installed at import time; only ensure() installs, and only after a confirmation.

This file is the one part of the library that needs the Slicer application (slicer.util dialogs and
pip_install); it is imported by the module file only.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
import tempfile
from pathlib import Path

REQUIREMENTS_FILE = Path(__file__).resolve().parent.parent / "Resources" / "requirements.txt"
TORCH_REQUIREMENT = ">=2.2"


class InstallError(RuntimeError):
    """The packages could not be installed; shown: Slicer has shown the failure (with pip's log) already."""

    def __init__(self, message: str, shown: bool = False):
        super().__init__(message)
        self.shown = shown


def requirements(path: Path = REQUIREMENTS_FILE) -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line]


def _distribution(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]


def _packaging():
    """pip's own requirement and name rules (`packaging`; Slicer's Python always has pip, which carries it)."""
    try:
        from packaging import requirements, utils
    except ImportError:
        from pip._vendor.packaging import requirements, utils
    return requirements.Requirement, utils.canonicalize_name


def _installed(requirement: str) -> str | None:
    """The installed version of the requirement's distribution, or None."""
    try:
        return importlib.metadata.version(_distribution(requirement))
    except importlib.metadata.PackageNotFoundError:
        return None


def missing(reqs: list[str] | None = None) -> list[str]:
    """Requirements not installed, or installed below their bounds (listed as the requirement)."""
    requirement_of, _ = _packaging()
    unmet = []
    for requirement in reqs if reqs is not None else requirements():
        version = _installed(requirement)
        if version is None or not requirement_of(requirement).specifier.contains(version, prereleases=True):
            unmet.append(requirement)
    return unmet


def outdated(reqs: list[str]) -> list[str]:
    """The distributions of reqs that are installed (below their bounds, if in missing())."""
    return [_distribution(r) for r in reqs if _installed(r) is not None]


def missing_all() -> list[str]:
    """Everything the library needs that is not installed yet (or too old), torch first."""
    torch = [] if torch_installed() else [f"torch{TORCH_REQUIREMENT}" if outdated(["torch"]) else "torch"]
    return torch + missing()


def torch_installed() -> bool:
    """torch is installed at a version the library works with."""
    return not missing([f"torch{TORCH_REQUIREMENT}"])


def constraints_file(upgrade: list[str] = ()) -> Path:
    """A pip constraints file pinning every installed distribution to its version, but those in upgrade."""
    _, canonical = _packaging()
    keep = {canonical(n) for n in upgrade}
    pins = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name and canonical(name) not in keep and canonical(name) not in pins:
            pins[canonical(name)] = f"{name}=={dist.version}"
    handle = tempfile.NamedTemporaryFile("w", suffix="-constraints.txt", delete=False)
    handle.write("\n".join(sorted(pins.values())) + "\n")
    handle.close()
    return Path(handle.name)


def imported(distributions: list[str]) -> list[str]:
    """Those of the distributions whose modules this Python process has imported already."""
    _, canonical = _packaging()
    modules = importlib.metadata.packages_distributions()
    wanted = {canonical(d) for d in distributions}
    loaded = {canonical(dist) for module, dists in modules.items() if module in sys.modules for dist in dists}
    return sorted(wanted & loaded)


def ensure(ask: bool = True) -> bool:
    """Make torch and the other packages importable in Slicer's Python; False if the user declined or
    Slicer must restart first (an upgraded package was imported already: the restart is offered).

    Raises InstallError with a readable reason when an installation fails.
    """
    import slicer

    upgraded = []
    if not torch_installed():
        try:
            import PyTorchUtils
        except ImportError:
            raise InstallError("NormativeAD needs PyTorch: install the PyTorch extension from the Extensions "
                               "Manager, restart Slicer, and try again.") from None
        upgraded += outdated(["torch"])
        torch_logic = PyTorchUtils.PyTorchUtilsLogic()
        if torch_logic.installTorch(askConfirmation=ask, torchVersionRequirement=TORCH_REQUIREMENT) is None:
            return False
    absent = missing()
    if absent:
        old = outdated(absent)
        if ask and not slicer.util.confirmOkCancelDisplay(
                "NormativeAD needs these Python packages, which are not installed yet"
                + (f" or older than it needs ({', '.join(old)})" if old else "") + ":\n\n  "
                + "\n  ".join(absent)
                + "\n\nInstall them now? (This downloads them with pip; nothing else already installed is "
                  "replaced.)",
                windowTitle="NormativeAD: install Python packages"):
            return False
        _pip_install(absent, old)
        upgraded += old
    if upgraded:
        from .process import close_idle_workers

        close_idle_workers()  # a waiting analysis worker has the old versions imported
    return _restarted_if_needed(imported(upgraded), ask)


def _pip_install(absent: list[str], upgrade: list[str]) -> None:
    constraints = constraints_file(upgrade)
    try:
        _run_pip(absent, constraints)
    finally:
        constraints.unlink(missing_ok=True)
    still = missing(absent)
    if still:
        raise InstallError(f"these packages are still missing after installation: {', '.join(still)}")


def _run_pip(absent: list[str], constraints: Path) -> None:
    """pip through Slicer: 5.12's slicer.packaging shows its progress and, when pip fails, an error dialog
    with pip's log before raising; 5.10's slicer.util.pip_install shows nothing."""
    import slicer

    try:
        from slicer import packaging
    except ImportError:  # Slicer 5.10
        packaging = None
    try:
        if packaging is not None:
            packaging.pip_install(absent, constraints=str(constraints), requester="NormativeAD")
        else:
            with slicer.util.WaitCursor():
                slicer.util.pip_install(["-c", str(constraints), *absent])
    except Exception as err:
        raise InstallError(f"installing {', '.join(absent)} failed: {err}", shown=packaging is not None) from None


def _restarted_if_needed(stale: list[str], ask: bool) -> bool:
    """True when nothing upgraded was in use; otherwise offer the restart the new versions need."""
    if not stale:
        return True
    import slicer

    message = (f"{', '.join(stale)} {'was' if len(stale) == 1 else 'were'} upgraded while Slicer had "
               "the old version loaded: restart Slicer to use the new one. Restart now?")
    if ask and slicer.util.confirmYesNoDisplay(message, windowTitle="NormativeAD: restart Slicer"):
        slicer.util.restart()
    return False
