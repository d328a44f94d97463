"""Explanation through the nodule (nodule_stack): its cost beside one slice, idle and under load, and how
consistent the maps of neighbouring slices are.

    python benchmarks/explain_through_nodule.py                  # shipped default bundle, synthetic sample
    python benchmarks/explain_through_nodule.py --voi ../shared/lidc-voi --voi-nodules 30

Cost: one nodule of 15 slices (7 CT slices either side of the seed) and the seed's slice alone, the whole
call (planning, sampling, networks) timed ``--repeats`` times after a warm-up; p50 in ms, and the ratio of
15 slices to one, idle and beside one busy process per core that the script starts (and stops).
Consistency: the Pearson correlation of R = G+(x) - G-(x) between neighbouring slices of each nodule
(+/-10 mm, the default), on the sample CT's documented nodules and, with ``--voi``, on LIDC-IDRI nodule
sub-volumes of TRAIN-split patients (read-only; test patients are never read), beside the correlation of
the same slice positions of two different nodules as the level unrelated maps reach. Compare figures
printed by one run: shared machines are noisy.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List

from CycleGANExplainLib.inference_threads import prefer_passive_openmp

prefer_passive_openmp()  # as every front end starts: before torch loads

import numpy as np  # noqa: E402

from CycleGANExplainLib.model_bundle import default_bundle_dir, load_bundle  # noqa: E402
from CycleGANExplainLib.nodule_stack import (DEFAULT_HALF_EXTENT_MM, NoduleStack,  # noqa: E402
                                             explain_through_nodules, slice_step_mm)
from CycleGANExplainLib.sample_data import SYNTHETIC_SAMPLE, sample_nodules, sample_volume_path  # noqa: E402
from CycleGANExplainLib.volume_io import read_volume  # noqa: E402

SLICES = 15


def _spin() -> None:
    while True:
        pass


@contextmanager
def busy_cores(count: int) -> Iterator[None]:
    """``count`` processes, each spinning one core in pure Python, stopped on leaving."""
    processes = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(count)]
    for process in processes:
        process.start()
    try:
        time.sleep(0.5)  # let them reach full speed
        yield
    finally:
        for process in processes:
            process.terminate()
            process.join()


def p50_ms(call, repeats: int) -> float:
    call()  # warm-up: torch's first pass allocates
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


def neighbour_correlations(stack: NoduleStack) -> List[float]:
    """Pearson r of R between each pair of neighbouring slices (constant maps left out: r undefined)."""
    maps = stack.relevance.reshape(len(stack), -1).astype(np.float64)
    return [float(np.corrcoef(a, b)[0, 1]) for a, b in zip(maps[:-1], maps[1:]) if a.std() > 0 and b.std() > 0]


def unrelated_correlations(stacks: List[NoduleStack]) -> List[float]:
    """Pearson r of R between the seed's slices of different nodules: what unrelated maps reach."""
    maps = [stack.centre.relevance.ravel().astype(np.float64) for stack in stacks]
    return [float(np.corrcoef(maps[i], maps[j])[0, 1]) for i in range(len(maps)) for j in range(i + 1, len(maps))]


def describe(values: List[float]) -> str:
    if not values:
        return "none"
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return f"median {median:.2f} (IQR {q1:.2f} to {q3:.2f}, {len(values)} pairs)"


def voi_stacks(voi_dir: Path, count: int, bundle) -> List[NoduleStack]:
    """Stacks through up to ``count`` nodules of train-split patients (the test split is never read)."""
    from cyclegan_explain_training.lidc_voi import IMAGE_DIR, read_nodules
    from CycleGANExplainLib.patch_sampling import is_seed_inside

    nodules, _ = read_nodules(voi_dir)
    train = sorted((nodule for nodule in nodules if nodule.split == "train"), key=lambda nodule: nodule.nodule_id)
    stacks = []
    for nodule in train[:count]:
        loaded = read_volume(voi_dir / IMAGE_DIR / f"{nodule.nodule_id}.nii.gz", max_voxels=None)
        seed = np.asarray(nodule.centre_lps, dtype=float) * [-1.0, -1.0, 1.0]
        if not is_seed_inside(loaded.volume_kji, loaded.ijk_to_ras, seed):
            continue
        stacks += explain_through_nodules(loaded.volume_kji, loaded.ijk_to_ras, [seed], bundle).stacks
    return stacks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--load", type=int, default=os.cpu_count() or 1, help="busy processes (default: one per core)")
    parser.add_argument("--voi", type=Path, default=None, help="an LIDC-IDRI nodule sub-volume folder (read-only)")
    parser.add_argument("--voi-nodules", type=int, default=30)
    args = parser.parse_args()

    bundle = load_bundle(default_bundle_dir(), "cpu")
    loaded = read_volume(sample_volume_path(SYNTHETIC_SAMPLE))
    nodules = sample_nodules(SYNTHETIC_SAMPLE)
    seed = np.array(next(iter(nodules.values())).centre_ras_mm, dtype=float)
    step = slice_step_mm(loaded.ijk_to_ras)
    half_extent = (SLICES - 1) / 2 * step
    volume, ijk_to_ras = loaded.volume_kji, loaded.ijk_to_ras
    stack = explain_through_nodules(volume, ijk_to_ras, [seed], bundle, half_extent).stacks[0]
    assert len(stack) == SLICES, len(stack)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; bundle {bundle.metadata.name} "
          f"{bundle.metadata.version}; synthetic sample, {SLICES} slices {step:g} mm apart (+/-{half_extent:g} mm)")

    def one() -> None:
        explain_through_nodules(volume, ijk_to_ras, [seed], bundle, 0.0)

    def fifteen() -> None:
        explain_through_nodules(volume, ijk_to_ras, [seed], bundle, half_extent)

    for label, load in (("idle", 0), (f"{args.load} busy processes", args.load)):
        with busy_cores(load) if load else _nothing():
            single, through = p50_ms(one, args.repeats), p50_ms(fifteen, args.repeats)
        print(f"{label:>18}: 1 slice {single:6.0f} ms, {SLICES} slices {through:6.0f} ms (p50 of {args.repeats}); "
              f"ratio {through / single:.1f}; target <= 500 ms: {'met' if through <= 500 else 'MISSED'}")

    sample_stacks = explain_through_nodules(volume, ijk_to_ras, [nodule.centre_ras_mm for nodule in nodules.values()],
                                            bundle, DEFAULT_HALF_EXTENT_MM).stacks
    print(f"R between neighbouring slices (+/-{DEFAULT_HALF_EXTENT_MM:g} mm), sample's {len(sample_stacks)} nodules: "
          f"{describe([r for item in sample_stacks for r in neighbour_correlations(item)])}; different nodules: "
          f"{describe(unrelated_correlations(sample_stacks))}")
    if args.voi is not None:
        stacks = voi_stacks(args.voi, args.voi_nodules, bundle)
        print(f"R between neighbouring slices, {len(stacks)} LIDC-IDRI nodules of train-split patients: "
              f"{describe([r for item in stacks for r in neighbour_correlations(item)])}; different nodules: "
              f"{describe(unrelated_correlations(stacks))}")


@contextmanager
def _nothing() -> Iterator[None]:
    yield


if __name__ == "__main__":
    main()
