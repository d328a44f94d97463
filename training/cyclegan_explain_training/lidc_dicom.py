"""Patches from the real LIDC-IDRI images, for those who have downloaded the DICOM files.

pylidc finds each scan's series under the folder named in its configuration file
(``~/.pylidcrc``, section ``[dicom]``, option ``path``). Each scan is read once with pylidc
(``Scan.load_all_dicom_images``: the series' slices sorted by position), its geometry taken from
the DICOM tags (ImagePositionPatient, ImageOrientationPatient, PixelSpacing), and every cohort
nodule's patch cut with the core's ``extract_patch`` at the readers' 50 % consensus centroid.
The mask patch is the consensus volume sampled by the same call.
"""

from __future__ import annotations

import configparser
import sys
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from CycleGANExplainLib.patch_sampling import extract_patch

from .lidc_cohort import NodulePatch, NoduleRecord, consensus_of
from .lidc_phantoms import equivalent_diameter_mm

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def pylidc_config_file() -> Path:
    """Where pylidc looks for its configuration (its own rule: the home folder, by platform)."""
    return Path.home() / ("pylidc.conf" if sys.platform.startswith("win") else ".pylidcrc")


def require_dicom_root() -> Path:
    """The LIDC-IDRI DICOM folder named in pylidc's configuration; ValueError saying how to set it.

    Read here rather than through pylidc, which answers a missing option by writing a template
    configuration file into the home folder and fails only later, on the first scan.
    """
    config_file = pylidc_config_file()
    parser = configparser.ConfigParser()
    parser.read(config_file)
    configured = parser.get("dicom", "path", fallback="").strip()
    how = (f"write the folder holding the LIDC-IDRI-dddd patient folders into {config_file} as\n"
           "  [dicom]\n  path = /path/to/LIDC-IDRI\n"
           "or prepare from nodule sub-volumes instead (--source voi --voi-dir DIR).")
    if not configured:
        raise ValueError(f"prepare --source dicom needs the LIDC-IDRI DICOM images, and pylidc's configuration names "
                         f"no folder: {how}")
    root = Path(configured).expanduser()
    if not root.is_dir():
        raise ValueError(f"pylidc's configuration {config_file} names the DICOM folder {root}, which does not exist: {how}")
    return root


def read_scan(scan) -> Tuple[np.ndarray, np.ndarray]:
    """A pylidc scan's images in Hounsfield units as (slice, row, column) and its IJK-to-RAS."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        images = scan.load_all_dicom_images(verbose=False)
    if len(images) != len(scan.slice_zvals):
        raise ValueError(
            f"Found {len(images)} DICOM slices for scan {scan.id} but pylidc's database lists "
            f"{len(scan.slice_zvals)}; the contours would land on the wrong slices."
        )
    volume = np.stack(
        [ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in images]
    )
    return volume, ijk_to_ras_of_series(images)


def ijk_to_ras_of_series(images: Sequence) -> np.ndarray:
    """Slicer's IJK-to-RAS of a slice-sorted series, from its DICOM geometry tags."""
    orientation = np.array(images[0].ImageOrientationPatient, dtype=float)
    row_spacing, column_spacing = (float(v) for v in images[0].PixelSpacing)
    positions = np.array([ds.ImagePositionPatient for ds in images], dtype=float)
    step = (positions[-1] - positions[0]) / max(len(images) - 1, 1)
    expected = positions[0] + np.arange(len(images))[:, None] * step
    if np.abs(positions - expected).max() > 0.1 * max(np.linalg.norm(step), 1e-6):
        warnings.warn(
            "The series' slices are not evenly spaced; patches between uneven slices are "
            "interpolated as if they were."
        )
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, 0] = orientation[:3] * column_spacing  # i runs along a row, i.e. across columns
    ijk_to_lps[:3, 1] = orientation[3:] * row_spacing
    ijk_to_lps[:3, 2] = step
    ijk_to_lps[:3, 3] = positions[0]
    return LPS_TO_RAS @ ijk_to_lps


def cut_nodule_patch(
    volume_kji: np.ndarray, ijk_to_ras: np.ndarray, record: NoduleRecord, annotations: Sequence
) -> NodulePatch:
    """The nodule's patch and mask patch at its consensus centroid."""
    consensus = consensus_of(annotations)
    row, column, k = consensus.centroid_index
    centroid_ras = (ijk_to_ras @ np.array([column, row, k, 1.0]))[:3]
    image = extract_patch(volume_kji, ijk_to_ras, centroid_ras).pixels
    mask_volume = np.zeros(volume_kji.shape, dtype=np.uint8)
    rows, columns, slices = consensus.bbox
    mask_volume[slices, rows, columns] = np.transpose(consensus.mask, (2, 0, 1))
    mask = extract_patch(mask_volume, ijk_to_ras, centroid_ras).pixels > 0.5
    slice_spacing = abs(ijk_to_ras[2, 2])
    diameter = equivalent_diameter_mm(consensus, record.pixel_spacing_mm, slice_spacing)
    return NodulePatch(image, mask.astype(np.uint8), centroid_ras, 1.0, diameter)


def dicom_patches(
    records: Sequence[NoduleRecord],
    annotations_by_id: Dict[int, object],
    progress: Optional[Callable[[int, int], None]] = None,
) -> List[NodulePatch]:
    """Patches for the records (in their order), reading each scan's series once."""
    by_scan: Dict[int, List[int]] = {}
    for position, record in enumerate(records):
        by_scan.setdefault(record.scan_id, []).append(position)
    patches: List[Optional[NodulePatch]] = [None] * len(records)
    done = 0
    for positions in by_scan.values():
        first = records[positions[0]]
        scan = annotations_by_id[first.annotation_ids[0]].scan
        try:
            volume, ijk_to_ras = read_scan(scan)
        except RuntimeError as error:  # pylidc's way of saying the scan's files are not there
            raise ValueError(f"Cannot read the DICOM images of {scan.patient_id}: {error}") from error
        for position in positions:
            record = records[position]
            annotations = [annotations_by_id[i] for i in record.annotation_ids]
            patches[position] = cut_nodule_patch(volume, ijk_to_ras, record, annotations)
            done += 1
            if progress is not None:
                progress(done, len(records))
    return patches
