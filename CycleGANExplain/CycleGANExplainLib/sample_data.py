"""The bundled sample CTs and their documented nodules.

The one place that knows the samples' names and files and reads their descriptions (``<name>.json``
beside ``<name>.nrrd``); the module, the command line, the web viewer and the tests all ask here.

- ``LungPETCTDxChestCT`` (DEFAULT_SAMPLE): a real chest CT from TCIA's Lung-PET-CT-Dx collection
  (CC BY 4.0; its attribution must be shown wherever it is used: ``sample_attribution``), written by
  ``cyclegan_explain_training.sample_tcia_ct``.
- ``SyntheticChestCT``: a synthetic chest CT with four nodules (no patient data), written by
  ``cyclegan_explain_training.sample_ct``; the tests and benchmarks that need known nodules of
  several kinds use it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

from .package_resources import sample_data_dir

TCIA_SAMPLE = "LungPETCTDxChestCT"
SYNTHETIC_SAMPLE = "SyntheticChestCT"
# What "Load sample", `run-sample.sh` and the web viewer open.
DEFAULT_SAMPLE = TCIA_SAMPLE
SAMPLES: Tuple[str, ...] = (TCIA_SAMPLE, SYNTHETIC_SAMPLE)
# The nodule a sample opens on: its first documented one, except in the synthetic CT, whose tests,
# self-test and figures use its large spiculated nodule N2.
_OPENING_NODULE = {SYNTHETIC_SAMPLE: "N2"}


class UnknownSampleError(KeyError):
    """A sample name that is not one of SAMPLES."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


@dataclass(frozen=True)
class SampleNodule:
    """One nodule of a sample as its description documents it (diameter: as the description
    defines it; for the real CT, the mean side of the annotated box)."""

    id: str
    kind: str
    centre_ras_mm: Tuple[float, float, float]
    diameter_mm: float


def _checked(sample: str) -> str:
    if sample not in SAMPLES:
        raise UnknownSampleError(f"No sample CT named {sample!r} (samples: {', '.join(SAMPLES)})")
    return sample


def sample_volume_path(sample: str = DEFAULT_SAMPLE) -> Path:
    """The sample CT (gzip NRRD, int16 HU)."""
    return sample_data_dir() / f"{_checked(sample)}.nrrd"


def sample_description_path(sample: str = DEFAULT_SAMPLE) -> Path:
    return sample_data_dir() / f"{_checked(sample)}.json"


def sample_description(sample: str = DEFAULT_SAMPLE) -> dict:
    """The whole description: source, checksums, geometry and nodules."""
    return json.loads(sample_description_path(sample).read_text())


def sample_file_sha256(sample: str = DEFAULT_SAMPLE) -> str:
    """The SHA-256 of the sample's NRRD file, as recorded when it was written."""
    return str(sample_description(sample)["file_sha256"])


def sample_nodules(sample: str = DEFAULT_SAMPLE) -> Dict[str, SampleNodule]:
    """The documented nodules by id, in the description's order."""
    return {
        nodule["id"]: SampleNodule(
            id=nodule["id"],
            kind=nodule["kind"],
            centre_ras_mm=tuple(float(value) for value in nodule["centre_ras_mm"]),
            diameter_mm=float(nodule["diameter_mm"]),
        )
        for nodule in sample_description(sample)["nodules"]
    }


def opening_nodule_id(sample: str = DEFAULT_SAMPLE) -> str:
    """The nodule the sample opens on (views centred there, the seed placed there)."""
    return _OPENING_NODULE.get(_checked(sample)) or next(iter(sample_nodules(sample)))


def sample_nodule(nodule_id: Optional[str] = None, sample: str = DEFAULT_SAMPLE) -> SampleNodule:
    """One documented nodule (None: the one the sample opens on); an unknown id names the ones
    that exist."""
    nodules = sample_nodules(sample)
    nodule_id = nodule_id or opening_nodule_id(sample)
    if nodule_id not in nodules:
        raise KeyError(f"Nodule {nodule_id!r} is not documented in {sample}.json "
                       f"(documented: {', '.join(nodules)})")
    return nodules[nodule_id]


def sample_attribution(sample: str = DEFAULT_SAMPLE) -> Optional[str]:
    """The sentence to show wherever the sample is used (source and licence), None for the
    synthetic CT, which holds no one's data."""
    return sample_description(sample).get("attribution")


def sample_citations(sample: str = DEFAULT_SAMPLE) -> Tuple[str, ...]:
    """The citations the sample's licence and source ask for (none for the synthetic CT)."""
    return tuple(sample_description(sample).get("citations", ()))


def sample_notice(sample: str = DEFAULT_SAMPLE) -> Optional[str]:
    """Attribution and numbered citations as one text for a front end's message, None if none is
    needed."""
    attribution = sample_attribution(sample)
    if attribution is None:
        return None
    citations = " ".join(f"({number}) {citation}" for number, citation in enumerate(sample_citations(sample), 1))
    return f"{attribution} Please cite: {citations}"


def sample_of_path(path: Union[str, Path]) -> Optional[str]:
    """The sample ``path`` is (the packaged file, or a copy with the same bytes), else None. Only a
    file of a sample's size is hashed, so another CT costs a stat."""
    path = Path(path)
    if not path.is_file():
        return None
    size = path.stat().st_size
    for sample in SAMPLES:
        packaged = sample_volume_path(sample)
        if path.resolve() == packaged.resolve():
            return sample
        if size == packaged.stat().st_size and \
                hashlib.sha256(path.read_bytes()).hexdigest() == sample_file_sha256(sample):
            return sample
    return None
