"""Where the package's own files are: the shipped model bundles and the sample CT.

They are package data (``CycleGANExplainLib/resources``), found with ``importlib.resources`` so
that a wheel, an editable install and Slicer's module folder all find the same files.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def resources_dir() -> Path:
    """The package's ``resources`` folder on disk.

    Loaders need real files (TorchScript and SimpleITK read paths), so a package imported from a
    zip archive is refused with a clear message rather than half-working.
    """
    folder = Path(str(resources.files(__package__) / "resources"))
    if not folder.is_dir():
        raise FileNotFoundError(
            f"The package's resources folder {folder} is missing: install CycleGANExplain from a "
            "folder or a wheel (not a zip archive), or reinstall it.")
    return folder


def models_dir() -> Path:
    """The folder holding one sub-folder per shipped model bundle."""
    return resources_dir() / "models"


def sample_data_dir() -> Path:
    """The folder holding the synthetic sample CT and its description."""
    return resources_dir() / "sample_data"
