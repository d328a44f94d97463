"""Cold start of `cyclegan-explain explain` on the sample CT (one seed) beside importing torch and
SimpleITK alone, in one run: the ratio shows what the command adds to the libraries it must load.

    python benchmarks/cold_start.py [--repeats 5] [--bundle NAME]

Each run is a fresh interpreter, as a user's command is. Timings on shared machines are noisy:
compare the ratio printed by one run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from CycleGANExplainLib.sample_data import SYNTHETIC_SAMPLE, sample_nodule, sample_volume_path


def wall_time(command: list) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bundle", default="")
    args = parser.parse_args()
    seed = ",".join(str(value) for value in sample_nodule("N2", SYNTHETIC_SAMPLE).centre_ras_mm)
    imports = [sys.executable, "-c", "import torch, SimpleITK"]
    with tempfile.TemporaryDirectory() as folder:
        explain = [sys.executable, "-m", "CycleGANExplainLib.cli", "explain", str(sample_volume_path(SYNTHETIC_SAMPLE)),
                   f"--seed={seed}", "--out", str(Path(folder) / "out"), "--device", "cpu"]
        if args.bundle:
            explain += ["--bundle", args.bundle]
        wall_time(imports)  # file-system cache warm for both
        import_times, explain_times = [], []
        for _ in range(args.repeats):  # interleaved, so that a change of load hits both alike
            import_times.append(wall_time(imports))
            explain_times.append(wall_time(explain))
    imported, explained = statistics.median(import_times), statistics.median(explain_times)
    print(f"import torch, SimpleITK:            median {imported:6.2f} s over {args.repeats}")
    print(f"cyclegan-explain explain, 1 seed:   median {explained:6.2f} s over {args.repeats}")
    print(f"ratio: {explained / imported:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
