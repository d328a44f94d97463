"""The module's first click with and without starting the explanation process when the module is entered.

    python benchmarks/module_first_click.py [--repeats 3] [--wait-s 5]

Each repeat starts fresh WorkerClients (the module's way: a persistent explanation process) and
times one explanation of the synthetic sample's nodule N2 from the request until its result is
delivered by polling every 50 ms: "cold" submits at once into a process not yet started; "warm"
calls WorkerClient.start() (what the widget's enter() does), waits --wait-s seconds (a user loading
a CT and finding the nodule), then submits. Cold and warm alternate. The bundle's loading is in
both: the process imports torch ahead of the first job, not the bundle. Timings on shared machines
are noisy: compare the figures of one run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from CycleGANExplainLib.explain_worker import Job
from CycleGANExplainLib.model_bundle import default_bundle_dir
from CycleGANExplainLib.patch_sampling import patch_region
from CycleGANExplainLib.sample_data import SYNTHETIC_SAMPLE, sample_nodule, sample_volume_path
from CycleGANExplainLib.volume_io import read_volume
from CycleGANExplainLib.worker_client import WorkerClient

POLL_S = 0.05


def first_click(job: Job, warm_wait_s: float) -> float:
    """Seconds from the request to the delivered result of a new client's first job."""
    answers = []
    client = WorkerClient(lambda tag, batch: answers.append(batch), lambda tag, error: answers.append(error))
    try:
        if warm_wait_s > 0:
            client.start()
            time.sleep(warm_wait_s)
        started = time.perf_counter()
        client.submit(job, "first")
        while client.busy:
            time.sleep(POLL_S)
            client.poll()
        if isinstance(answers[0], Exception):
            raise answers[0]
        return time.perf_counter() - started
    finally:
        client.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--wait-s", type=float, default=5.0)
    args = parser.parse_args()
    volume = read_volume(sample_volume_path(SYNTHETIC_SAMPLE))
    seeds = np.array([sample_nodule("N2", SYNTHETIC_SAMPLE).centre_ras_mm], dtype=float)
    voxels, ijk_to_ras = patch_region(volume.volume_kji, volume.ijk_to_ras, seeds)
    job = Job(voxels, ijk_to_ras, seeds, str(default_bundle_dir()), "cpu", "cyclegan-am", False)
    cold, warm = [], []
    for _ in range(args.repeats):
        cold.append(first_click(job, 0.0))
        warm.append(first_click(job, args.wait_s))
    print(f"first click, process started at the click:        median {statistics.median(cold):.2f} s  "
          f"({', '.join(f'{value:.2f}' for value in cold)})")
    print(f"first click, process started {args.wait_s:g} s before (enter()): median {statistics.median(warm):.2f} s  "
          f"({', '.join(f'{value:.2f}' for value in warm)})")
    print(f"ratio warm / cold: {statistics.median(warm) / statistics.median(cold):.2f}")


if __name__ == "__main__":
    main()
