"""The relevance overlay as data: a symmetric blue-white-red colour table, RGBA rendering, and the
legend that says what the colours mean (one source for every front end).

The Slicer module turns the table into a colour node, the command line and the web viewer into
images; all of them draw R with exactly these colours (docs/architecture.md, contract 4):
red = R > 0 (malignancy-indicating), blue = R < 0 (benign-indicating), near zero transparent
(below TRANSPARENT_BELOW of the range: the only transparency Slicer's slice views can draw).
"""

from __future__ import annotations

import html
from typing import List, Tuple

import numpy as np

from .attribution_methods import INTENSITY_UNITS, method_info
from .translation import tr as _

COLOUR_TABLE_NAME = "CycleGANExplainRelevance"
COLOUR_TABLE_LEVELS = 256
# ColorBrewer RdBu end colours: distinguishable for red-green colour-blind readers.
MALIGNANT_RGB = (0.698, 0.094, 0.169)
BENIGN_RGB = (0.129, 0.400, 0.675)
# |R| below this fraction of the range is transparent; from it on, opaque (drawn at the view's
# overlay opacity). Two values, not a ramp: Slicer's vtkMRMLScalarVolumeDisplayNode ANDs the colour
# table's alpha into 0 or 255 in slice views, and every front end draws what Slicer draws.
TRANSPARENT_BELOW = 0.1
# The colour at that threshold: this share of the end colour over white (pale, not white, so that
# weak relevance is not an opaque white haze over the CT); full colour at the range's end.
FAINTEST_TINT = 0.35
# The smallest symmetric range, in normalised units: keeps noise-level maps from being
# stretched into saturated colour.
MINIMUM_LIMIT = 0.05


def symmetric_limit(relevance: np.ndarray, percentile: float = 99.5, minimum: float = MINIMUM_LIMIT) -> float:
    """Half-width of the symmetric display range [-limit, +limit] for a relevance map.

    ``minimum`` (positive) is the smallest range; the default suits maps in normalised intensity units.
    """
    magnitude = np.abs(np.asarray(relevance, dtype=np.float64))
    if magnitude.size == 0:
        return minimum
    return float(max(np.percentile(magnitude, percentile), minimum))


def colour_table(levels: int = COLOUR_TABLE_LEVELS) -> np.ndarray:
    """RGBA table [levels, 4] in [0, 1]; entry i shows R = -limit + 2 * limit * i / (levels - 1)."""
    t = np.linspace(-1.0, 1.0, levels)
    shown = np.abs(t) >= TRANSPARENT_BELOW
    above = np.clip((np.abs(t) - TRANSPARENT_BELOW) / (1.0 - TRANSPARENT_BELOW), 0.0, 1.0)
    strength = np.where(shown, FAINTEST_TINT + (1.0 - FAINTEST_TINT) * above, 0.0)[:, None]
    end_colour = np.where(t[:, None] > 0, np.array(MALIGNANT_RGB), np.array(BENIGN_RGB))
    rgb = (1.0 - strength) * 1.0 + strength * end_colour
    return np.concatenate([rgb, shown.astype(float)[:, None]], axis=1)


def relevance_to_rgba(relevance: np.ndarray, limit: float, levels: int = COLOUR_TABLE_LEVELS) -> np.ndarray:
    """Colour a relevance map with the table: uint8 RGBA [..., 4]."""
    if not limit > 0:
        raise ValueError(f"Display limit must be positive, got {limit!r}")
    table = colour_table(levels)
    position = (np.clip(np.asarray(relevance, dtype=np.float64) / limit, -1.0, 1.0) + 1.0) / 2.0
    index = np.rint(position * (levels - 1)).astype(np.int64)
    return np.rint(table[index] * 255.0).astype(np.uint8)


def blend_over_grey(grey: np.ndarray, rgba: np.ndarray, opacity: float = 1.0) -> np.ndarray:
    """Alpha-blend an RGBA overlay over a grey image in [0, 1]; returns float RGB [..., 3]."""
    alpha = rgba[..., 3:4].astype(np.float64) / 255.0 * opacity
    base = np.repeat(np.clip(grey, 0.0, 1.0)[..., None], 3, axis=-1)
    return (1.0 - alpha) * base + alpha * rgba[..., :3].astype(np.float64) / 255.0


# A baseline's maps are on its own scale (LRP's are ~100 times smaller than CycleGAN-AM's), so the
# normalised-intensity floor MINIMUM_LIMIT would hide them; only a positive range is needed.
BASELINE_MINIMUM_LIMIT = float(np.finfo(np.float32).tiny)


def legend_entries(method: str) -> List[Tuple[Tuple[float, float, float], str]]:
    """(colour, meaning) of each colour ``method``'s maps use: what every legend (module, CLI,
    figures, web page) says."""
    if method_info(method).signed:
        return [(MALIGNANT_RGB, _("red = malignancy-indicating (R > 0)")),
                (BENIGN_RGB, _("blue = benign-indicating (R < 0)"))]
    # An unsigned map has no blue by construction: say so, lest "no blue" read as "no benign evidence".
    return [(MALIGNANT_RGB, _("unsigned map (magnitude only): red = relevant to the malignancy score in either "
                              "direction; there is never blue"))]


# The lines of a per-slice probability plot (the figure's, the module panel's): (NoduleStack attribute, label,
# colour): x in grey, G-(x) in the benign colour, G+(x) in the malignant colour.
PROBABILITY_LINES = (("p_x", "p(x)", (0.3, 0.3, 0.3)), ("p_neg", "p(G\u207b(x))", BENIGN_RGB),
                     ("p_pos", "p(G\u207a(x))", MALIGNANT_RGB))


def transparency_text() -> str:
    """How weak relevance is drawn (colour_table), in words for the legends."""
    return _("|R| under {share} of the colour range is transparent; above it, the colour is drawn at the overlay's "
             "opacity, pale for weak and full for strong relevance. The range is symmetric, scaled to this "
             "explanation.").format(share=f"{TRANSPARENT_BELOW:.0%}")


def colour_legend(method: str) -> str:
    """What the overlay's colours mean for ``method``'s maps, in one line (summaries, tooltips)."""
    return ", ".join(meaning for _, meaning in legend_entries(method))


def rgb_hex(rgb: Tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(channel * 255):02x}" for channel in rgb)


def legend_html(method: str) -> str:
    """The legend as HTML (the module's panel): the method, how to read it, each colour in its colour."""
    info = method_info(method)
    colours = "<br>".join(f'<span style="color:{rgb_hex(rgb)}"><b>\u25a0</b></span> {html.escape(meaning)}'
                          for rgb, meaning in legend_entries(method))
    return (f"<b>{html.escape(info.label)}</b> ({html.escape(info.library)}). {html.escape(info.reading)}<br>{colours}"
            f"<br>{html.escape(transparency_text())}")


def display_limit(relevance: np.ndarray, method: str) -> float:
    """Half-width of the symmetric colour range for ``method``'s map (overlay, figure, summary)."""
    # MINIMUM_LIMIT is in normalised intensity units: it applies only to maps on that scale.
    in_intensity_units = method_info(method).units == INTENSITY_UNITS
    return symmetric_limit(relevance, minimum=MINIMUM_LIMIT if in_intensity_units else BASELINE_MINIMUM_LIMIT)
