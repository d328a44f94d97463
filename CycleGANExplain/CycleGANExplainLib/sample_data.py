"""The bundled synthetic chest CT ("SyntheticChestCT") and its documented nodules.

The one place that knows the sample's file names and reads its description
(``SyntheticChestCT.json``, written by ``cyclegan_explain_training.sample_ct``); the module, the
command line, the web viewer and the tests all ask here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple

from .package_resources import sample_data_dir

SAMPLE_NAME = "SyntheticChestCT"
# The nodule the module's self-test, "Load sample CT" and the web viewer open on: the large
# spiculated one.
DEFAULT_NODULE_ID = "N2"


@dataclass(frozen=True)
class SampleNodule:
    """One nodule of the sample as its description documents it."""

    id: str
    kind: str
    centre_ras_mm: Tuple[float, float, float]
    diameter_mm: float


def sample_volume_path() -> Path:
    """The sample CT (gzip NRRD, int16 HU)."""
    return sample_data_dir() / f"{SAMPLE_NAME}.nrrd"


def sample_description_path() -> Path:
    return sample_data_dir() / f"{SAMPLE_NAME}.json"


def sample_description() -> dict:
    """The whole description: checksums, geometry and nodules."""
    return json.loads(sample_description_path().read_text())


def sample_file_sha256() -> str:
    """The SHA-256 of the sample's NRRD file, as recorded when it was rendered."""
    return str(sample_description()["file_sha256"])


def sample_nodules() -> Dict[str, SampleNodule]:
    """The documented nodules by id, in the description's order."""
    return {
        nodule["id"]: SampleNodule(
            id=nodule["id"],
            kind=nodule["kind"],
            centre_ras_mm=tuple(float(value) for value in nodule["centre_ras_mm"]),
            diameter_mm=float(nodule["diameter_mm"]),
        )
        for nodule in sample_description()["nodules"]
    }


def sample_nodule(nodule_id: str = DEFAULT_NODULE_ID) -> SampleNodule:
    """One documented nodule; an unknown id names the ones that exist."""
    nodules = sample_nodules()
    if nodule_id not in nodules:
        raise KeyError(f"Nodule {nodule_id!r} is not documented in {SAMPLE_NAME}.json "
                       f"(documented: {', '.join(nodules)})")
    return nodules[nodule_id]
