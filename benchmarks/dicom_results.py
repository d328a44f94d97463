"""Time to write one nodule's DICOM results (what `--dicom` adds to a run and "Save as DICOM" costs on
Slicer's main thread), idle and beside busy processes, in one run.

    python benchmarks/dicom_results.py                 # 300-slice 512x512 CT series, a 9-slice stack
    python benchmarks/dicom_results.py --load 1        # also beside 1 busy process

Writes a real CT series with pydicom into a temporary folder, then times, per repeat: reading the
series' headers (dicom_results.read_source_series) and writing the parametric map, segmentation and
SR of one nodule (write_dicom_results). Prints p50/p95 in milliseconds, the p50 of the same nodule
without the SR's per-slice containers, and, with --load, the ratio of the loaded to the idle p50
measured in this run. No network runs: the relevance is random.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent))
from explain_latency import busy_processes  # noqa: E402 - the benchmarks' one load generator

from CycleGANExplainLib.dicom_results import (NoduleResult, SliceNumbers, read_source_series,  # noqa: E402
                                              write_dicom_results)
from CycleGANExplainLib.patch_sampling import patch_to_ras_matrix  # noqa: E402


def write_series(folder: Path, slices: int, size: int) -> list:
    """A CT series as a scanner writes it (0.7 mm pixels, 1.25 mm slices), one file per slice."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    pixels = np.full((size, size), 24, np.uint16).tobytes()
    files = []
    for k in range(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"{k:04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, meta.MediaStorageSOPInstanceUID, "CT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID = "BENCHMARK^PHANTOM", "BENCH"
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [-180.0, -180.0, 1.25 * k], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness, ds.Rows, ds.Columns = [0.7, 0.7], 1.25, size, size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.PixelData = -1024, 1, pixels
        ds.save_as(str(path), enforce_file_format=True)
        files.append(str(path))
    return files


def time_once(files: list, result: NoduleResult, out: Path) -> float:
    started = time.perf_counter()
    source = read_source_series(files)
    write_dicom_results([result], source, out, "cyclegan-am", "benchmark 1.0")
    return time.perf_counter() - started


def measure(files: list, result: NoduleResult, folder: Path, repeats: int) -> np.ndarray:
    return np.array([time_once(files, result, folder / f"run{index}") for index in range(repeats)]) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--stack", type=int, default=9, help="slices of the relevance volume")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--load", type=int, default=0, metavar="N")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {multiprocessing.cpu_count()} CPUs; "
          f"source {args.slices} slices of {args.size}x{args.size}, relevance {args.stack}x64x64")
    relevance = np.random.default_rng(0).normal(0, 0.2, (args.stack, 64, 64)).astype(np.float32)
    stack_to_ras = patch_to_ras_matrix([0.0, 0.0, 150.0])
    stack_to_ras[:3, 2] = [0.0, 0.0, 1.25]
    # Every slice's numbers, as stack_result states them: the SR then holds one container per slice.
    centre = args.stack // 2
    slices = tuple(SliceNumbers(1.25 * (k - centre), (0.0, 0.0, 150.0 + 1.25 * k), 0.7, 0.2, 0.9)
                   for k in range(args.stack))
    result = NoduleResult(relevance, stack_to_ras, np.array([0.0, 0.0, 150.0 + 1.25 * centre]), 0.7, 0.2, 0.9, 0.5,
                          slices=slices)
    with tempfile.TemporaryDirectory(prefix="dicom-results-benchmark-") as temporary:
        folder = Path(temporary)
        (folder / "ct").mkdir()
        files = write_series(folder / "ct", args.slices, args.size)
        time_once(files, result, folder / "warm-up")  # imports highdicom and pydicom's dictionaries
        idle = measure(files, result, folder / "idle", args.repeats)
        print(f"read headers + write map, segmentation, SR: p50 {np.percentile(idle, 50):.0f} ms, "
              f"p95 {np.percentile(idle, 95):.0f} ms (idle, {args.repeats} repeats)")
        # What the SR's per-slice containers cost: the same result stating the seed's slice's numbers only.
        root_only = measure(files, dataclasses.replace(result, slices=()), folder / "root-only", args.repeats)
        print(f"without the {args.stack} per-slice containers: p50 {np.percentile(root_only, 50):.0f} ms; with/without "
              f"p50 {np.percentile(idle, 50) / np.percentile(root_only, 50):.2f} (idle)")
        if args.load:
            with busy_processes(args.load):
                loaded = measure(files, result, folder / "loaded", args.repeats)
            print(f"beside {args.load} busy process(es): p50 {np.percentile(loaded, 50):.0f} ms, "
                  f"p95 {np.percentile(loaded, 95):.0f} ms; loaded/idle p50 "
                  f"{np.percentile(loaded, 50) / np.percentile(idle, 50):.2f}")


if __name__ == "__main__":
    main()
