"""Throughput of `cyclegan-explain explain` with many seeds, with and without figures, in one run.

    python benchmarks/explain_many_seeds.py               # 1000 seeds on the sample CT, default bundle
    python benchmarks/explain_many_seeds.py --seeds 200 --bundle lidc-phantoms

Runs the real command line (a subprocess each, as a user would) on seeds spread over the sample
CT's lungs, and prints the wall time, seeds per second and the share spent writing figures, the
same seeds given as a --seeds-file CSV (with labels; the case's table is written either way), and
one slice per seed (--half-extent-mm 0) against the default explanation through the nodule.
Timings on shared machines are noisy: compare the figures printed by one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from CycleGANExplainLib.sample_data import SYNTHETIC_SAMPLE, sample_volume_path
from CycleGANExplainLib.volume_io import read_volume


def seeds_inside(count: int, rng: np.random.Generator) -> list:
    """``count`` RAS points at random voxel centres of the sample CT's middle half."""
    loaded = read_volume(sample_volume_path(SYNTHETIC_SAMPLE))
    shape = np.array(loaded.volume_kji.shape[::-1])
    ijk = rng.uniform(shape * 0.25, shape * 0.75, size=(count, 3))
    ras = np.c_[ijk, np.ones(count)] @ loaded.ijk_to_ras.T
    return [f"--seed={r:.2f},{a:.2f},{s:.2f}" for r, a, s in ras[:, :3]]


def seeds_csv(seeds: list, folder: Path) -> Path:
    """The --seed arguments as a labelled RAS seeds file."""
    path = folder / "seeds.csv"
    rows = [f"N{number},{seed.removeprefix('--seed=')}" for number, seed in enumerate(seeds, start=1)]
    path.write_text("id,R,A,S\n" + "\n".join(rows) + "\n")
    return path


def run_once(seeds: list, bundle: str, extra: list, as_file: bool = False) -> float:
    """One run's wall time; ``as_file``: the seeds go in a CSV file (written before the clock starts)."""
    with tempfile.TemporaryDirectory() as folder:
        if as_file:
            seeds = ["--seeds-file", str(seeds_csv(seeds, Path(folder)))]
        command = [sys.executable, "-m", "CycleGANExplainLib.cli", "explain", str(sample_volume_path(SYNTHETIC_SAMPLE)),
                   *seeds, "--out", str(Path(folder) / "out"), "--device", "cpu", *extra]
        if bundle:
            command += ["--bundle", bundle]
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--bundle", default="")
    args = parser.parse_args()
    seeds = seeds_inside(args.seeds, np.random.default_rng(0))
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {args.seeds} seeds on the sample CT")
    with_figures = run_once(seeds, args.bundle, [])
    without = run_once(seeds, args.bundle, ["--no-figures"])
    from_file = run_once(seeds, args.bundle, ["--no-figures"], as_file=True)
    one_slice = run_once(seeds, args.bundle, ["--no-figures", "--half-extent-mm", "0"])
    print(f"with figures:    {with_figures:7.1f} s  ({args.seeds / with_figures:6.1f} seeds/s)")
    print(f"--no-figures:    {without:7.1f} s  ({args.seeds / without:6.1f} seeds/s)")
    print(f"figures' share of the call: {(with_figures - without) / with_figures:.2f}; "
          f"{(with_figures - without) / args.seeds * 1000:.0f} ms per figure")
    print(f"--seeds-file, --no-figures: {from_file:7.1f} s  (ratio to --seed: {from_file / without:.2f})")
    print(f"one slice per seed (--half-extent-mm 0), --no-figures: {one_slice:7.1f} s  "
          f"({args.seeds / one_slice:6.1f} seeds/s; the default through the nodule costs {without / one_slice:.1f}x)")


if __name__ == "__main__":
    main()
