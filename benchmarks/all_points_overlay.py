"""The overlay of "Explain all points": what putting every point's stack on one grid costs on Slicer's main thread.

    python benchmarks/all_points_overlay.py                 # the synthetic sample's four documented nodules
    python benchmarks/all_points_overlay.py --half-extent-mm 20 --repeats 30

The nodules' stacks are explained once (shipped default bundle, the panel's default half-extent). Then, timed
``--repeats`` times: ``nodule_stack.combine_stacks`` alone, and the whole main-thread step of the module
(``mrml_case``'s combine, one colour range, the overlay volume node written on a real slicer-core scene), for
every nodule together and for the last nodule's stack alone (what "Explain" shows): p50 in ms and the ratio of
all to one, idle and beside one busy process per core that the script starts (and stops). Memory: the combined
volume's voxels and MB (float32, and the int16 owner map alongside while combining) beside the stacks' own,
because the grid spans the box around all nodules, and the same for two points at opposite corners of the CT
(the bound). Compare figures printed by one run: shared machines are noisy.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Callable

from CycleGANExplainLib.inference_threads import prefer_passive_openmp

prefer_passive_openmp()  # as every front end starts: before torch loads

import numpy as np  # noqa: E402
from explain_through_nodule import busy_cores  # noqa: E402  (benchmarks/: one way to load the cores)

from CycleGANExplainLib.attribution_methods import DEFAULT_METHOD  # noqa: E402
from CycleGANExplainLib.model_bundle import default_bundle_dir, load_bundle  # noqa: E402
from CycleGANExplainLib.mrml_overlay import update_overlay_node  # noqa: E402
from CycleGANExplainLib.nodule_stack import DEFAULT_HALF_EXTENT_MM, combine_stacks, explain_through_nodules  # noqa: E402
from CycleGANExplainLib.overlay import display_limit  # noqa: E402
from CycleGANExplainLib.sample_data import SYNTHETIC_SAMPLE, sample_nodules, sample_volume_path  # noqa: E402
from CycleGANExplainLib.volume_io import read_volume  # noqa: E402


def p50_ms(call: Callable[[], object], repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--half-extent-mm", type=float, default=DEFAULT_HALF_EXTENT_MM)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    import slicer  # slicer-core: a real MRML scene, as the module's tests use

    loaded = read_volume(sample_volume_path(SYNTHETIC_SAMPLE))
    nodules = sample_nodules(SYNTHETIC_SAMPLE)
    seeds = [nodule.centre_ras_mm for nodule in nodules.values()]
    bundle = load_bundle(default_bundle_dir(), "cpu")
    stacks = explain_through_nodules(loaded.volume_kji, loaded.ijk_to_ras, seeds, bundle, args.half_extent_mm).stacks
    scene = slicer.vtkMRMLScene()

    def show(shown) -> None:  # mrml_case.show's overlay step
        combined = combine_stacks(shown)
        limit = display_limit(np.concatenate([stack.relevance.ravel() for stack in shown]), DEFAULT_METHOD)
        update_overlay_node(scene, combined.relevance, combined.ijk_to_ras, limit=limit)

    combined = combine_stacks(stacks)
    own = sum(stack.relevance.size for stack in stacks)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; synthetic sample, nodules "
          f"{', '.join(nodules)} at +/-{args.half_extent_mm:g} mm ({', '.join(str(len(s)) for s in stacks)} slices)")
    print(f"combined grid {combined.relevance.shape[::-1]} (I, J, K): {combined.relevance.size:,} voxels, "
          f"{combined.relevance.nbytes / 2**20:.1f} MB float32 (+{combined.owner.nbytes / 2**20:.1f} MB owner map "
          f"while combining); the stacks' own {own:,} voxels, {own * 4 / 2**20:.1f} MB "
          f"({combined.relevance.size / own:.1f}x)")
    # The bound: two points at opposite corners of the CT's box, 25 mm inside its edges (30 mm along S).
    corners_ijk = np.array([[0, 0, 0], loaded.volume_kji.shape[::-1]], dtype=float) - 0.5
    corners = (np.c_[corners_ijk, np.ones(2)] @ np.asarray(loaded.ijk_to_ras).T)[:, :3]
    inward = np.sign(corners[1] - corners[0]) * [25.0, 25.0, 30.0]
    far = explain_through_nodules(loaded.volume_kji, loaded.ijk_to_ras, [corners[0] + inward, corners[1] - inward],
                                  bundle, args.half_extent_mm).stacks
    spread = combine_stacks(far)
    apart = np.abs(corners[1] - corners[0]) - 2 * np.abs(inward)
    print(f"two points at opposite corners of the CT ({' x '.join(f'{v:.0f}' for v in apart)} mm apart in R, A, S): grid {spread.relevance.shape[::-1]}, {spread.relevance.nbytes / 2**20:.1f} MB float32; "
          f"combine_stacks {p50_ms(lambda: combine_stacks(far), args.repeats):.1f} ms idle")
    for label, load in (("idle", 0), (f"{os.cpu_count()} busy cores", os.cpu_count() or 1)):
        with busy_cores(load):
            combine_all = p50_ms(lambda: combine_stacks(stacks), args.repeats)
            show_all = p50_ms(lambda: show(stacks), args.repeats)
            show_one = p50_ms(lambda: show(stacks[-1:]), args.repeats)
        print(f"{label}: combine_stacks {combine_all:.1f} ms; overlay step all {len(stacks)} nodules "
              f"{show_all:.1f} ms, the last alone {show_one:.1f} ms (ratio {show_all / show_one:.1f})")


if __name__ == "__main__":
    main()
