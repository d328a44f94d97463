"""What the web viewer's "Download DICOM results" costs: the memory its kept series headers hold for the
session, and the time of one download against writing the same objects alone, idle and beside busy
processes, in one run.

    python benchmarks/web_dicom_download.py              # 300-slice 512x512 CT series
    python benchmarks/web_dicom_download.py --load 1     # also beside 1 busy process

Writes a real CT series with pydicom (benchmarks/dicom_results.py's writer) into a temporary folder and
reads its headers as the viewer does for an upload (dicom_download.dicom_source), measuring with
tracemalloc what they keep allocated. The explanation is real: the default bundle through the synthetic
sample's nodule N2 (the default half-extent), its stack placed in the series' study as the viewer's would
be. Times, per repeat, mrml_explain.write_explanation_dicom into a folder (the module's "Save as DICOM"
after its header read) and dicom_download.dicom_results_zip (the same, zipped, folder removed), and
prints p50/p95 in milliseconds, the zip/write ratio and, with --load, loaded/idle p50 ratios.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import platform
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dicom_results import write_series  # noqa: E402 - the benchmarks' CT series writer
from explain_latency import busy_processes  # noqa: E402 - the benchmarks' one load generator

from cyclegan_explain_web.dicom_download import dicom_results_zip, dicom_source  # noqa: E402
from CycleGANExplainLib.explain_worker import Job, run_job  # noqa: E402
from CycleGANExplainLib.model_bundle import default_bundle_dir  # noqa: E402
from CycleGANExplainLib.mrml_explain import VolumeExplanation, write_explanation_dicom  # noqa: E402
from CycleGANExplainLib.nodule_stack import plan_stack, stacks_from_batch  # noqa: E402
from CycleGANExplainLib.sample_data import SYNTHETIC_SAMPLE, sample_nodule, sample_volume_path  # noqa: E402
from CycleGANExplainLib.volume_io import LoadedVolume, read_volume  # noqa: E402


def explained_nodule() -> VolumeExplanation:
    """The synthetic sample's nodule N2 explained through its slices (no scene: the writer needs none)."""
    loaded = read_volume(sample_volume_path(SYNTHETIC_SAMPLE))
    plan = plan_stack(loaded.volume_kji, loaded.ijk_to_ras, sample_nodule("N2", SYNTHETIC_SAMPLE).centre_ras_mm)
    batch = run_job(Job(loaded.volume_kji, loaded.ijk_to_ras, plan.seeds_ras, str(default_bundle_dir()), "cpu",
                        "cyclegan-am", False, warn_outside=False))
    return VolumeExplanation(batch, None, plan.centre_index, stacks_from_batch([plan], batch).stacks[0])


def headers_memory(files: list) -> "tuple[object, int]":
    """The viewer's DicomSource of ``files`` and the bytes it keeps allocated."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    source = dicom_source(LoadedVolume(np.zeros((1, 1, 1)), np.eye(4), "DICOM series", (), tuple(files)))
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return source, kept


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return (time.perf_counter() - started) * 1000.0


def measure(result: VolumeExplanation, source, folder: Path, repeats: int) -> "tuple[np.ndarray, np.ndarray]":
    write = np.array([timed(lambda i=i: write_explanation_dicom(result, source.headers, folder / f"w{i}"))
                      for i in range(repeats)])
    download = np.array([timed(lambda: dicom_results_zip(result, source)) for _ in range(repeats)])
    return write, download


def report(label: str, write: np.ndarray, download: np.ndarray) -> None:
    print(f"{label}: write p50 {np.percentile(write, 50):.0f} ms (p95 {np.percentile(write, 95):.0f}); "
          f"download (write + zip) p50 {np.percentile(download, 50):.0f} ms "
          f"(p95 {np.percentile(download, 95):.0f}); download/write p50 "
          f"{np.percentile(download, 50) / np.percentile(write, 50):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--load", type=int, default=0, metavar="N")
    args = parser.parse_args()
    result = explained_nodule()
    print(f"{platform.processor() or platform.machine()}, {multiprocessing.cpu_count()} CPUs; source "
          f"{args.slices} slices of {args.size}x{args.size}, relevance {result.stack.relevance.shape}")
    with tempfile.TemporaryDirectory(prefix="web-dicom-download-benchmark-") as temporary:
        folder = Path(temporary)
        (folder / "ct").mkdir()
        files = write_series(folder / "ct", args.slices, args.size)
        source, kept = headers_memory(files)
        print(f"headers kept in memory: {kept / 1e6:.2f} MB ({kept / args.slices / 1e3:.1f} kB per slice)")
        print(f"zip: {len(dicom_results_zip(result, source)) / 1e3:.0f} kB")  # also the warm-up
        idle_write, idle_download = measure(result, source, folder / "idle", args.repeats)
        report(f"idle, {args.repeats} repeats", idle_write, idle_download)
        if args.load:
            with busy_processes(args.load):
                write, download = measure(result, source, folder / "loaded", args.repeats)
            report(f"beside {args.load} busy process(es)", write, download)
            print(f"loaded/idle p50: write {np.percentile(write, 50) / np.percentile(idle_write, 50):.2f}, "
                  f"download {np.percentile(download, 50) / np.percentile(idle_download, 50):.2f}")


if __name__ == "__main__":
    main()
