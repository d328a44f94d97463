"""Fixtures shared by every suite: a small real model bundle and synthetic CT volumes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

RESCALE_INTERCEPT = -1024


def write_ct_series(
    folder: Path,
    volume_hu: np.ndarray,
    pixel_spacing: float,
    slice_positions_z: Sequence[float],
    origin_xy_lps: Sequence[float],
    slice_thickness: float,
    series_uid: Optional[str] = None,
    study_uid: Optional[str] = None,
    patient_id: str = "SYNTH001",
    reverse_file_order: bool = False,
    slice_origins_xy_lps: Optional[Sequence[Sequence[float]]] = None,
    patient_name: Optional[str] = None,
) -> str:
    """Write a real axial CT series with pydicom: one file per slice, unsigned stored values with
    rescale intercept -1024 (as scanners store them); returns the SeriesInstanceUID.
    ``slice_origins_xy_lps`` gives each slice its own in-plane origin (a gantry-tilted series).
    Every slice carries the series' FrameOfReferenceUID, as a CT's must (DICOM results are placed in it)."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_of_reference_uid = generate_uid()
    order = list(range(len(volume_hu)))
    if reverse_file_order:  # real series often arrive out of order
        order = order[::-1]
    for file_index, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"{file_index:04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID = "CT", patient_id
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = frame_of_reference_uid
        if patient_name is not None:
            ds.PatientName = patient_name
        ds.InstanceNumber = file_index + 1
        origin_xy = slice_origins_xy_lps[k] if slice_origins_xy_lps is not None else origin_xy_lps
        ds.ImagePositionPatient = [float(origin_xy[0]), float(origin_xy[1]), float(slice_positions_z[k])]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [pixel_spacing, pixel_spacing]
        ds.SliceThickness = slice_thickness
        ds.Rows, ds.Columns = volume_hu.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = RESCALE_INTERCEPT, 1
        ds.PixelData = (volume_hu[k].astype(np.int32) - RESCALE_INTERCEPT).astype(np.uint16).tobytes()
        ds.save_as(str(path), enforce_file_format=True)
    return series_uid


@pytest.fixture(scope="session")
def ct_series_writer():
    """write_ct_series, for suites in other folders (test modules are not importable packages)."""
    return write_ct_series


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
