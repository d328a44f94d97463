"""How numbers are written for people: one source for the module, the web page, the CLI and figures."""

from __future__ import annotations

from typing import Sequence

# Three decimals: probabilities near 0 or 1 (0.995 against 0.999) stay distinguishable.
PROBABILITY_DECIMALS = 3


def probability_text(probability: float) -> str:
    return f"{probability:.{PROBABILITY_DECIMALS}f}"


def ras_text(ras: Sequence[float]) -> str:
    """A point in RAS millimetres, to a tenth of a millimetre (finer than any CT voxel)."""
    return "{:.1f}, {:.1f}, {:.1f}".format(*ras)


def seconds_text(seconds: float) -> str:
    return f"{seconds:.2f} s"
