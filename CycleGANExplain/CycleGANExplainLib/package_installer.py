"""Installing a method's Python packages into Slicer's Python without replacing what Slicer runs on.

Left alone, pip may downgrade Slicer's numpy (a package's numpy<2 pin) or replace the torch that the
PyTorch extension installed (a package's torch floor), which breaks Slicer or the PyTorch extension
until it is reinstalled. Every install here pins both to the installed versions with a constraints
file, so pip either finds versions that fit them or fails, leaving the application as it was.
"""

from __future__ import annotations

import importlib.metadata
import tempfile
from pathlib import Path
from typing import Callable, List, Optional, Sequence

PINNED_DISTRIBUTIONS = ("numpy", "torch")


def installed_constraints(distributions: Sequence[str] = PINNED_DISTRIBUTIONS) -> List[str]:
    """``name==version`` for each of ``distributions`` that is installed (pip's constraints syntax)."""
    lines = []
    for name in distributions:
        try:
            lines.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return lines


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
