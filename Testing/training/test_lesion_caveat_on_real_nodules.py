"""The "lesion fills the patch" caveat never fires on a real LIDC-IDRI nodule (all at most 30 mm across)."""

from __future__ import annotations

import numpy as np

from CycleGANExplainLib.caveats import LESION_DIRECTION_SHARE, LESION_FILL_FRACTION, solid_direction_share


def test_no_lidc_voi_nodule_fills_the_patch(lidc_voi_dir):
    data = np.load(lidc_voi_dir / "data" / "patches.npz")
    patches, pixel_mm = data["patches"], float(np.ravel(data["pixel_spacing_mm"])[0])
    assert len(patches) == 994 and patches.shape[1:] == (64, 64)
    reach_mm = LESION_FILL_FRACTION * 64 * pixel_mm / 2.0
    shares = np.array([solid_direction_share(patch, pixel_mm, reach_mm) for patch in patches])
    assert shares.max() < LESION_DIRECTION_SHARE
    assert shares.max() > 0.3  # large nodules do reach part of the way: the measure is not blind
