"""Fixtures shared by every suite: a small real model bundle and synthetic CT volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A real TorchScript bundle of tiny random networks, made by the production export code."""
    from cyclegan_explain_training.export import export_untrained_bundle

    return export_untrained_bundle(tmp_path_factory.mktemp("bundle") / "tiny", classifier_width=4, generator_width=4)


@pytest.fixture
def lung_volume() -> tuple:
    """An axial CT-like volume (slice, row, column) in HU with a solid nodule, and its IJK-to-RAS.

    1.5 x 1.5 mm pixels, 2.5 mm slices, LPS-aligned like a scanner's axial series.
    """
    rng = np.random.default_rng(7)
    volume = np.full((30, 80, 80), -850.0) + rng.normal(0, 20, (30, 80, 80))
    k, j, i = np.mgrid[0:30, 0:80, 0:80]
    nodule = ((i - 40) * 1.5) ** 2 + ((j - 40) * 1.5) ** 2 + ((k - 15) * 2.5) ** 2 <= 8.0**2
    volume[nodule] = 40.0
    ijk_to_ras = np.array([[-1.5, 0, 0, 60.0], [0, -1.5, 0, 60.0], [0, 0, 2.5, -37.5], [0, 0, 0, 1]])
    return volume.astype(np.int16), ijk_to_ras
