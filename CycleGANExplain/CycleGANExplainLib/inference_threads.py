"""How many CPU threads inference uses: chosen for the work, not left to torch's default.

torch's default is one OpenMP thread per core, and OpenMP workers spin while they wait for each
other. A click's batch (one to a few 64x64 patches) is too small to share out: on a workstation
where anything else runs (Slicer's rendering, a browser, a second job), the spinning workers
fight that process for the cores and a 20 ms explanation takes seconds. One thread has nothing
to wait for. Larger batches (many seeds, the neighbouring slices of a few) do gain from more
threads, up to the cores this process may use. And where a front end starts before torch is
imported, it asks OpenMP to let waiting workers sleep rather than spin (``OMP_WAIT_POLICY``),
which OpenMP reads once, when torch loads it. ``benchmarks/explain_latency.py --load N``
measures both, idle and beside N busy processes.

torch is imported inside the function only (inside Slicer it comes from the PyTorch extension).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

# Patches per thread below which another thread costs more in synchronisation than it saves.
PATCHES_PER_THREAD = 8


def prefer_passive_openmp() -> bool:
    """Ask OpenMP for sleeping, not spinning, waits, unless the user chose otherwise; True when it
    takes effect (only before torch is first imported in this process)."""
    if "torch" in sys.modules:
        return False
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return True


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def threads_for(patches: int) -> int:
    """Threads for a batch of ``patches``: 1 for a click's batch, more for large ones."""
    return max(1, min(usable_cores(), patches // PATCHES_PER_THREAD))


@contextlib.contextmanager
def inference_threads(patches: int, device: str) -> Iterator[int]:
    """torch's intra-op threads set for a batch of ``patches`` on ``device``, restored afterwards
    (torch's setting is process-wide: inside Slicer other modules use torch too)."""
    import torch

    if device != "cpu":
        yield torch.get_num_threads()  # the GPU does the work; the CPU threads only feed it
        return
    previous = torch.get_num_threads()
    chosen = threads_for(patches)
    if chosen != previous:
        torch.set_num_threads(chosen)
    try:
        yield chosen
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
