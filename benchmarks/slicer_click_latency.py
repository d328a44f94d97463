"""Click-to-result latency in Slicer's conditions: the explanation process beside the old worker thread, in one run.

    python benchmarks/slicer_click_latency.py [--clicks 10] [--method cyclegan-am] [--poll-ms 50]

Inside Slicer, PythonQt keeps the GIL while the main thread idles in Qt's event loop; Python
threads advance only while the main thread runs Python, i.e. at the module's 50 ms poll. Here the
main thread does the same: between polls it waits in a C call that keeps the GIL (libc's usleep
through ctypes.PyDLL, which does not release it; where there is no usleep, a pure-Python loop with
a long switch interval). Each click is timed from the request until its result is delivered by
the poll, on the bundled sample CT around its documented nodule, after one warm-up click per path
(the bundle loaded). Paths:

- thread: the old module's way, ``run_job`` in a worker thread of this process;
- process: the module's way now, ``worker_client.WorkerClient`` (the voxels the patches need
  cut here, the job sent to the persistent explanation process);
- direct: ``run_job`` on the main thread, no polling (what the click costs with no GIL contention).

Prints p50 and p95 in milliseconds and the thread/process ratio of p50s. Timings on shared machines
are noisy: compare the figures of one run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ctypes
import os
import platform
import sys
import time

from CycleGANExplainLib.inference_threads import prefer_passive_openmp

prefer_passive_openmp()  # as the module did in Slicer's process before the explanation process

import numpy as np  # noqa: E402

from CycleGANExplainLib.attribution_methods import DEFAULT_METHOD  # noqa: E402
from CycleGANExplainLib.explain_worker import Job, run_job  # noqa: E402
from CycleGANExplainLib.model_bundle import default_bundle_dir, read_metadata  # noqa: E402
from CycleGANExplainLib.patch_sampling import patch_region  # noqa: E402
from CycleGANExplainLib.sample_data import SYNTHETIC_SAMPLE, sample_nodule, sample_volume_path  # noqa: E402
from CycleGANExplainLib.volume_io import read_volume  # noqa: E402
from CycleGANExplainLib.worker_client import WorkerClient  # noqa: E402


def gil_holding_wait():
    """A function that waits ``seconds`` without letting other Python threads run (PythonQt's idle)."""
    try:
        usleep = ctypes.PyDLL(None).usleep  # PyDLL: the GIL stays held during the call
        usleep.argtypes = [ctypes.c_uint]
        return lambda seconds: usleep(int(seconds * 1e6)), "usleep through ctypes.PyDLL (GIL held)"
    except (AttributeError, OSError, TypeError):
        sys.setswitchinterval(1.0)  # other threads get the GIL only when this loop reaches the poll

        def spin(seconds: float) -> None:
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                pass

        return spin, "pure-Python loop, switch interval 1 s"


def percentiles(samples_s) -> str:
    samples_ms = np.asarray(samples_s) * 1000.0
    return f"p50 {np.percentile(samples_ms, 50):8.1f} ms   p95 {np.percentile(samples_ms, 95):8.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument("--method", default=DEFAULT_METHOD)
    parser.add_argument("--poll-ms", type=float, default=50.0, help="the module's poll interval")
    options = parser.parse_args()

    wait, how = gil_holding_wait()
    poll_s = options.poll_ms / 1000.0
    loaded = read_volume(sample_volume_path(SYNTHETIC_SAMPLE))
    metadata = read_metadata(default_bundle_dir())
    centre = np.array(sample_nodule("N2", SYNTHETIC_SAMPLE).centre_ras_mm, dtype=float)
    rng = np.random.default_rng(0)
    seeds = [centre + rng.uniform(-2.0, 2.0, 3) for _ in range(options.clicks + 1)]

    def whole_volume_job(seed) -> Job:
        return Job(loaded.volume_kji, loaded.ijk_to_ras, seed[None], str(default_bundle_dir()), "cpu",
                   options.method, False)

    def region_job(seed) -> Job:
        voxels, ijk_to_ras = patch_region(loaded.volume_kji, loaded.ijk_to_ras, seed[None], metadata.patch_size_px,
                                          metadata.patch_extent_mm)
        return Job(voxels, ijk_to_ras, seed[None], str(default_bundle_dir()), "cpu", options.method, False)

    executor = concurrent.futures.ThreadPoolExecutor(1)

    def thread_click(seed) -> float:
        started = time.perf_counter()
        future = executor.submit(run_job, whole_volume_job(seed))
        while True:
            wait(poll_s)
            if future.done():  # the poll
                future.result()
                return time.perf_counter() - started

    delivered = []
    client = WorkerClient(lambda tag, batch: delivered.append(tag), lambda tag, error: delivered.append(error))

    def process_click(seed) -> float:
        started = time.perf_counter()
        delivered.clear()
        client.submit(region_job(seed), "click")
        while not delivered:
            wait(poll_s)
            client.poll()
        if delivered != ["click"]:
            raise RuntimeError(f"the explanation process failed: {delivered[0]}")
        return time.perf_counter() - started

    def direct_click(seed) -> float:
        started = time.perf_counter()
        run_job(whole_volume_job(seed))
        return time.perf_counter() - started

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; {options.method}; "
          f"poll every {options.poll_ms:.0f} ms; main thread between polls: {how}")
    results = {}
    try:
        for name, click in (("direct", direct_click), ("thread", thread_click), ("process", process_click)):
            first = click(seeds[0])  # loads the bundle (and, for the process, starts it)
            results[name] = [click(seed) for seed in seeds[1:]]
            print(f"{name:8s} {percentiles(results[name])}   (first click {first:.1f} s)", flush=True)
    finally:
        client.shutdown()
        executor.shutdown()
    ratio = np.median(results["thread"]) / np.median(results["process"])
    print(f"thread / process p50: {ratio:.1f}x")


if __name__ == "__main__":
    main()
