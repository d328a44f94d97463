"""The web viewer's "Download DICOM results": the shown explanation as DICOM objects, zipped for the browser.

The objects are the module's and the command line's (``mrml_explain.write_explanation_dicom`` on
``dicom_results``: a Parametric Map, a Segmentation and a Comprehensive 3D SR of the shown nodule, in the
CT's study; docs/architecture.md, contract 5). They reference the CT series' instances, so they need its
headers. An upload is read in a temporary folder that is deleted once the volume is read: the headers (no
pixels) are read then and kept in memory with the volume (``DicomSource``); nothing of the user's stays on
disk. The zip is made in another temporary folder, removed once its bytes are read; its members are named
by kind and nodule number only, never after the patient.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Tuple

from CycleGANExplainLib.dicom_results import DicomResultsError, read_source_series, require_highdicom
from CycleGANExplainLib.mrml_explain import VolumeExplanation, write_explanation_dicom
from CycleGANExplainLib.volume_io import LoadedVolume

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

# The name the browser saves the zip under: the same for every CT (a name from the upload could be the patient's).
ZIP_NAME = "cyclegan-explain-dicom-results.zip"


@dataclass(frozen=True)
class DicomSource:
    """What DICOM results of a CT can reference: its series' headers, or why there are none (``note``,
    a sentence the page shows instead of the download button)."""

    headers: Tuple["Dataset", ...] = ()
    note: str = "No CT is open."

    @property
    def available(self) -> bool:
        return bool(self.headers)


def not_dicom_note(description: str) -> str:
    """What the page says instead of the download when the CT is not a DICOM series (a sample, NRRD, NIfTI)."""
    # Short: it stands where the button would, under the result, which must stay in view at 1400 x 900.
    return (f"No DICOM download: this CT is a {description}, not a DICOM series (DICOM results belong to its "
            "study). Open the series here, or give it to cyclegan-explain explain --dicom.")


def dicom_source(loaded: LoadedVolume) -> DicomSource:
    """The headers of ``loaded``'s DICOM series, read now (its files may be deleted next), checked to be
    a series DICOM results can reference; else the page's sentence saying why not."""
    if not loaded.source_files:
        return DicomSource(note=not_dicom_note(loaded.description))
    try:
        require_highdicom()  # said when the CT opens, not after an explanation
        return DicomSource(tuple(read_source_series(loaded.source_files)), note="")
    except DicomResultsError as error:
        return DicomSource(note=f"No DICOM results for this series: {error}")


def dicom_results_zip(result: VolumeExplanation, source: DicomSource) -> bytes:
    """The shown nodule's DICOM objects (dicom_results' file names) as the bytes of a zip;
    DicomResultsError with ``source``'s note when the CT has no DICOM series to reference."""
    if not source.available:
        raise DicomResultsError(source.note)
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="cyclegan-explain-dicom-") as folder:
        written = write_explanation_dicom(result, source.headers, Path(folder))
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in written:
                archive.write(path, path.name)
    return buffer.getvalue()
