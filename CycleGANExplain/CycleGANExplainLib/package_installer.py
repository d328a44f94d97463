"""Installing what explaining needs into Slicer's Python (torch, a method's packages) without
replacing what Slicer runs on.

Left alone, pip may downgrade Slicer's numpy (a package's numpy<2 pin) or replace the torch that the
PyTorch extension installed (a package's torch floor), which breaks Slicer or the PyTorch extension
until it is reinstalled. Every install here pins both to the installed versions with a constraints
file (attribution_methods.installed_constraints, which also holds them in the command line's pip
command), so pip either finds versions that fit them or fails, leaving the application as it was.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

from .attribution_methods import DEFAULT_METHOD, METHODS, installed_constraints, missing_packages
from .dicom_results import HIGHDICOM_REQUIREMENT
from .translation import tr as _


def install_requirements(requirements: Sequence[str], pip_install: Callable,
                         pip_ensure: Optional[Callable] = None) -> None:
    """Install ``requirements`` with numpy and torch held at their installed versions.

    ``pip_ensure``: ``slicer.packaging.pip_ensure`` where the Slicer release has it (it installs only
    what is missing and says when a restart is needed); else ``slicer.util.pip_install``, which every
    release has. The caller has asked the user already.
    """
    with tempfile.TemporaryDirectory(prefix="cyclegan-explain-pip-") as folder:
        constraints = Path(folder) / "constraints.txt"
        constraints.write_text("".join(f"{line}\n" for line in installed_constraints()), encoding="utf-8")
        if pip_ensure is not None:
            pip_ensure(list(requirements), constraints=str(constraints), prompt_install=False,
                       requester="CycleGAN Explain")
        else:
            pip_install(["-c", str(constraints), *requirements])


# The oldest torch checked to load the shipped bundles and compute their outputs (to 4e-6):
# 2.2.2, the newest for Intel macOS (scripts/check-older-torch.sh). Their generators are traced;
# scripted ones held aten::_upsample_lanczos2d_aa, which needed torch 2.13. pyproject's floor is the same.
TORCH_MINIMUM_VERSION = "2.2"


def torch_version_problem(installed: str, minimum: str = TORCH_MINIMUM_VERSION) -> Optional[str]:
    """Why an installed torch cannot load the bundles, or None when it can (local tags ignored)."""
    def release(version: str) -> tuple:
        return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:2])

    if release(installed) >= release(minimum):
        return None
    return _("The model bundles need PyTorch {minimum} or newer; this Slicer has {installed}. Install a newer "
             "torch in the PyTorch Utils module.").format(minimum=minimum, installed=installed)


def require_torch_version() -> None:
    """RuntimeError when the installed torch is older than the bundles need."""
    problem = torch_version_problem(importlib.metadata.version("torch"))
    if problem:
        raise RuntimeError(problem)


def install_torch() -> None:
    """Install torch through the PyTorch extension (PyTorchUtils), which asks nothing here (the
    caller has asked); RuntimeError naming the extension when it is not installed."""
    try:
        import PyTorchUtils
    except ModuleNotFoundError as error:
        raise RuntimeError(_(
            "CycleGAN Explain needs the 'PyTorch' extension. Install it from the Extensions Manager "
            "(search for PyTorch), restart Slicer, then explain again.")) from error
    torch_logic = PyTorchUtils.PyTorchUtilsLogic()
    if not torch_logic.torchInstalled():
        not_installed = _("PyTorch was not installed; see the Python console for the reason.")
        try:
            installed = torch_logic.installTorch(askConfirmation=False,
                                                 torchVersionRequirement=f">={TORCH_MINIMUM_VERSION}")
        # What PyTorchUtils raises: pip/light-the-torch exiting with an error, torch not importable
        # afterwards, or its own RuntimeError/ValueError (no compatible computation backend).
        except (subprocess.CalledProcessError, RuntimeError, ValueError, ImportError) as error:
            raise RuntimeError(f"{not_installed}\n\n{error}") from error
        if installed is None:
            raise RuntimeError(not_installed)


class DependencyInstaller:
    """What explaining needs beyond the module itself, installed at use time after asking once.

    ``ask(question, title) -> bool`` and ``tell(message, title)`` are the application's dialogs,
    ``status(message)`` its status bar; ``pip_install``/``pip_ensure`` as for ``install_requirements``.
    """

    def __init__(self, ask: Callable[[str, str], bool], tell: Callable[[str, str], None],
                 status: Callable[[str], None], pip_install: Callable, pip_ensure: Optional[Callable] = None) -> None:
        self._ask, self._tell, self._status = ask, tell, status
        self._pip_install, self._pip_ensure = pip_install, pip_ensure
        self._torch_ready = False

    def ensure_torch(self) -> bool:
        """Make a recent enough torch importable, installing it through the PyTorch extension after one
        confirmation; False when the user declines, RuntimeError when torch is too old or cannot be had."""
        if not self._torch_ready and importlib.util.find_spec("torch") is None:
            if not self._ask(_("CycleGAN Explain needs PyTorch, which is not installed yet.\n\n"
                               "Install it now? The download is large (up to a few GB with GPU support) and can "
                               "take several minutes; Slicer is busy meanwhile."), _("Install PyTorch")):
                return False
            self._status(_("Installing PyTorch (this can take several minutes)..."))
            install_torch()
        require_torch_version()
        self._torch_ready = True
        return True

    def ensure_method_packages(self, method: str) -> bool:
        """Make ``method``'s packages importable, installing them with pip (bounded, numpy and torch held)
        after one confirmation; False when the user declines (and was told what that means)."""
        missing = missing_packages(method)
        if not missing:
            return True
        label, names = METHODS[method].label, ", ".join(missing)
        if not self._ask(_("The {label} map needs the Python package(s) {names}, which are not installed.\n\n"
                           "Install them now with pip? Slicer is busy for a minute or so meanwhile.")
                         .format(label=label, names=names), _("Install packages for {label}").format(label=label)):
            self._tell(_("{label} was not computed because {names} is not installed. The method is back to {default}; "
                         "choose {label} again to install it.").format(label=label, names=names,
                                                                       default=METHODS[DEFAULT_METHOD].label),
                       _("Method not available"))
            return False
        self._status(_("Installing {names}...").format(names=names))
        install_requirements(METHODS[method].requirements, self._pip_install, self._pip_ensure)
        importlib.invalidate_caches()
        still_missing = missing_packages(method)
        if still_missing:
            raise RuntimeError(_("Could not install {names}; see the Python console for pip's output.")
                               .format(names=", ".join(still_missing)))
        return True

    def ensure_dicom_writer(self) -> bool:
        """Make highdicom importable (Slicer does not bundle it), installing it with pip (numpy and torch
        held) after one confirmation; False when the user declines."""
        if importlib.util.find_spec("highdicom") is not None:
            return True
        if not self._ask(_("Saving as DICOM needs the Python package highdicom, which is not installed.\n\n"
                           "Install it now with pip? Slicer is busy for a minute or so meanwhile."),
                         _("Install highdicom")):
            return False
        self._status(_("Installing highdicom..."))
        install_requirements([HIGHDICOM_REQUIREMENT], self._pip_install, self._pip_ensure)
        importlib.invalidate_caches()
        if importlib.util.find_spec("highdicom") is None:
            raise RuntimeError(_("Could not install highdicom; see the Python console for pip's output."))
        return True
