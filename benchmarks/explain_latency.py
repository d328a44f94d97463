"""Latency of the whole explain call (sampling included) beside the networks alone, in one run.

    python benchmarks/explain_latency.py                 # random networks at the paper's width
    python benchmarks/explain_latency.py --bundle DIR    # a given bundle (e.g. the shipped one)
    python benchmarks/explain_latency.py --bundle DIR --load 1   # also beside 1 busy process

Prints p50/p95 in milliseconds for 1 and 16 seeds, and the share of the call spent in the networks.
With ``--load N`` it starts N busy processes of its own (each spins one core in pure Python, as
rendering or another job would) and prints the whole call's p50 beside them, and its ratio to the
idle p50, for the thread policy the core uses (``inference_threads``) and for torch's default.
Timings on shared machines are noisy: compare the ratios printed from one run.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import tempfile
import time
from pathlib import Path

import sys

from CycleGANExplainLib.inference_threads import prefer_passive_openmp

# As the command line and the web viewer start: OpenMP's waits sleep, unless --spinning-waits
# asks for OpenMP's own default (what every front end had before), to compare.
if "--spinning-waits" not in sys.argv:
    prefer_passive_openmp()

import numpy as np  # noqa: E402 - after the OpenMP setting, which torch reads when it loads
import torch  # noqa: E402

from CycleGANExplainLib.explanation import explain
from CycleGANExplainLib.inference import run_networks
from CycleGANExplainLib.intensity import normalise_hu
from CycleGANExplainLib.model_bundle import load_bundle
from CycleGANExplainLib.patch_sampling import extract_patch
from CycleGANExplainLib.sample_data import SYNTHETIC_SAMPLE, sample_volume_path

SAMPLE_CT = sample_volume_path(SYNTHETIC_SAMPLE)


def percentiles(samples_s):
    samples_ms = np.asarray(samples_s) * 1000.0
    return np.percentile(samples_ms, 50), np.percentile(samples_ms, 95)


def time_calls(function, repeats: int, warmup: int = 2):
    for _ in range(warmup):
        function()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return samples


def load_volume():
    if SAMPLE_CT.is_file():
        from CycleGANExplainLib.volume_io import read_volume

        loaded = read_volume(SAMPLE_CT)
        return loaded.volume_kji, loaded.ijk_to_ras, "bundled sample CT " + "x".join(map(str, loaded.volume_kji.shape[::-1]))
    rng = np.random.default_rng(0)
    volume = (rng.normal(-850, 30, (120, 512, 512))).astype(np.int16)
    ijk_to_ras = np.diag([-0.7, -0.7, 2.5, 1.0])
    return volume, ijk_to_ras, "synthetic 512x512x120"


def _spin(stop) -> None:
    while not stop.is_set():
        sum(range(10_000))


@contextlib.contextmanager
def busy_processes(count: int):
    """``count`` processes that each keep one core busy until the block ends."""
    stop = multiprocessing.Event()
    workers = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True) for _ in range(count)]
    for worker in workers:
        worker.start()
    time.sleep(0.5)  # let them reach full speed
    try:
        yield
    finally:
        stop.set()
        for worker in workers:
            worker.join()


@contextlib.contextmanager
def torch_default_threads():
    """The thread count torch picks by itself, instead of the core's policy (for comparison)."""
    from CycleGANExplainLib import explanation

    default = torch.get_num_threads()

    @contextlib.contextmanager
    def fixed(_patches, _device):
        previous = torch.get_num_threads()
        torch.set_num_threads(default)
        try:
            yield default
        finally:
            torch.set_num_threads(previous)

    original = explanation.inference_threads
    explanation.inference_threads = fixed
    try:
        yield
    finally:
        explanation.inference_threads = original


def compare_under_load(volume, ijk_to_ras, centre, bundle, load: int, repeats: int) -> None:
    rng = np.random.default_rng(2)
    print(f"\nwhole call p50 idle and beside {load} busy process(es), {multiprocessing.cpu_count()} CPUs:")
    print(f"{'policy':>22} {'seeds':>5} {'idle p50':>9} {'loaded p50':>11} {'loaded p95':>11} {'ratio':>6}")
    for label, policy in (("core (inference_threads)", contextlib.nullcontext), ("torch default", torch_default_threads)):
        for count in (1, 16):
            seeds = centre + rng.uniform(-20, 20, (count, 3))
            with policy():
                idle = time_calls(lambda: explain(volume, ijk_to_ras, seeds, bundle), repeats)
                with busy_processes(load):
                    loaded = time_calls(lambda: explain(volume, ijk_to_ras, seeds, bundle), repeats)
            idle_50, _ = percentiles(idle)
            loaded_50, loaded_95 = percentiles(loaded)
            print(f"{label:>22} {count:>5} {idle_50:>7.1f}ms {loaded_50:>9.1f}ms {loaded_95:>9.1f}ms "
                  f"{loaded_50 / idle_50:>6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None, help="bundle to time (default: random, paper width)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--load", type=int, default=0, metavar="N",
                        help="also measure beside N busy processes of this benchmark's own")
    parser.add_argument("--spinning-waits", action="store_true",
                        help="leave OpenMP's waits spinning (its default), as before the front ends chose")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        bundle_dir = args.bundle
        if bundle_dir is None:
            from cyclegan_explain_training.export import export_untrained_bundle
            from CycleGANExplainLib.networks import PAPER_CLASSIFIER_WIDTH, PAPER_GENERATOR_WIDTH

            bundle_dir = export_untrained_bundle(Path(scratch) / "paper-width", PAPER_CLASSIFIER_WIDTH,
                                                 PAPER_GENERATOR_WIDTH)
        bundle = load_bundle(bundle_dir, args.device, allow_unknown=True)
        architecture = bundle.metadata.raw.get("architecture", {})
        volume, ijk_to_ras, volume_text = load_volume()
        centre = (ijk_to_ras @ np.array([*(np.array(volume.shape[::-1]) / 2.0), 1.0]))[:3]
        rng = np.random.default_rng(1)

        print(f"bundle: {bundle.metadata.display_name}; generator widths "
              f"{architecture.get('generator', {}).get('stage_widths')}; classifier widths "
              f"{architecture.get('classifier', {}).get('stage_widths')}")
        print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset: spinning waits)')}")
        print(f"device: {bundle.device}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
              f"{platform.processor() or platform.machine()}; volume: {volume_text}")
        print(f"{'seeds':>5} {'whole p50':>10} {'whole p95':>10} {'nets p50':>9} {'nets p95':>9} "
              f"{'sampling p50':>12} {'nets/whole':>10} {'ms/seed':>8}")
        for count in (1, 16):
            seeds = centre + rng.uniform(-20, 20, (count, 3))
            x = np.stack([normalise_hu(extract_patch(volume, ijk_to_ras, s).pixels, bundle.metadata.hu_window)
                          for s in seeds])
            whole = time_calls(lambda: explain(volume, ijk_to_ras, seeds, bundle), args.repeats)
            networks = time_calls(lambda: run_networks(bundle, x), args.repeats)
            sampling = time_calls(lambda: [extract_patch(volume, ijk_to_ras, s) for s in seeds], args.repeats)
            whole_50, whole_95 = percentiles(whole)
            nets_50, nets_95 = percentiles(networks)
            sampling_50, _ = percentiles(sampling)
            print(f"{count:>5} {whole_50:>8.1f}ms {whole_95:>8.1f}ms {nets_50:>7.1f}ms {nets_95:>7.1f}ms "
                  f"{sampling_50:>10.2f}ms {nets_50 / whole_50:>10.2f} {whole_50 / count:>6.1f}ms")
        if args.load:
            compare_under_load(volume, ijk_to_ras, centre, bundle, args.load, args.repeats)


if __name__ == "__main__":
    main()
