"""A PNG figure of one explanation: x, G-(x), G+(x) and the method's map over x, with the classifier's outputs.

matplotlib is imported inside the functions: the Slicer module never draws these figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from .attribution_methods import DEFAULT_METHOD, method_info
from .caveats import explanation_caveats
from .explanation import PatchExplanation
from .formatting import probability_text
from .notices import RESEARCH_NOTICE
from .overlay import blend_over_grey, display_limit, legend_entries, relevance_to_rgba

CYCLEGAN_AM_TITLE = method_info(DEFAULT_METHOD).map_title
CAVEAT_COLOUR = "#b2182b"  # the module panel's warning red

# The writer's figure, in inches: the panels' row, the margin below it (legend, notice) and above it (titles),
# and one line of caveats, added above the titles per caveat.
FIGURE_WIDTH_IN, FIGURE_HEIGHT_IN, BOTTOM_IN, TOP_IN, CAVEAT_LINE_IN = 10.0, 3.3, 0.396, 0.726, 0.16


def explanation_panels(explanation: PatchExplanation, limit: float, label: Optional[str] = None,
                       map_title: str = CYCLEGAN_AM_TITLE) -> List[Tuple[np.ndarray, str]]:
    """The four panels' images (grey levels in [0, 1], or RGB) and titles."""
    to_grey = lambda image: (np.asarray(image) + 1.0) / 2.0  # noqa: E731 - normalised [-1, 1] to [0, 1]
    item = explanation  # short name: the titles fit on their lines
    return [
        (to_grey(item.x), f"x{f' ({label})' if label else ''}\np(malignant) = {probability_text(item.p_x)}"),
        (to_grey(item.g_neg), f"G\u207b(x), towards benign\np = {probability_text(item.p_neg)}"),
        (to_grey(item.g_pos), f"G\u207a(x), towards malignant\np = {probability_text(item.p_pos)}"),
        (blend_over_grey(to_grey(item.x), relevance_to_rgba(item.relevance, limit)), f"{map_title}\n\u00b1{limit:.2g}"),
    ]


def draw_explanation_row(axes: Sequence["object"], explanation: PatchExplanation, limit: Optional[float] = None,
                         label: Optional[str] = None, fontsize: float = 9, method: str = DEFAULT_METHOD) -> float:
    """Draw the four panels into four matplotlib axes; returns the map's display limit used.

    ``limit`` fixes the symmetric colour range (one range for a whole figure); ``label`` names the
    true class in the first panel's title; ``method`` made the map (its title and colour range).
    """
    limit = display_limit(explanation.relevance, method) if limit is None else limit
    panels = explanation_panels(explanation, limit, label, method_info(method).map_title)
    for axis, (image, title) in zip(axes, panels):
        axis.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        axis.set_title(title, fontsize=fontsize)
        axis.set_xticks([])
        axis.set_yticks([])
    return limit


class ExplanationFigureWriter:
    """Writes four-panel figures (x, G-(x), G+(x), the map over x) with the overlay's colour legend
    and the research-use notice, one PNG per explanation.

    The matplotlib figure is laid out once and only its images and titles change from one
    explanation to the next: laying a figure out costs far more than drawing it, and a call with
    a thousand seeds must not spend minutes on it. An unsigned map (saliency, Grad-CAM) gets the
    one-entry legend saying that red is magnitude only, so that the absence of blue is not read as
    the absence of benign evidence. The explanation's caveats (caveats.explanation_caveats), if any,
    are lines in red under the heading; the figure grows by a line for each.
    """

    def __init__(self, method: str = DEFAULT_METHOD) -> None:
        self.method = method
        self._figure = None
        self._images: list = []
        self._titles: list = []
        self._heading = None
        self._caveats = None

    def _lay_out(self, explanation: PatchExplanation, heading: str, limit: float) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch as LegendPatch

        # A bare Figure (not pyplot): nothing global, so writers in several threads do not meet.
        figure = Figure(figsize=(FIGURE_WIDTH_IN, FIGURE_HEIGHT_IN), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.subplots(1, 4)
        draw_explanation_row(axes, explanation, limit, method=self.method)
        self._images = [axis.images[0] for axis in axes]
        self._titles = [axis.title for axis in axes]
        self._heading = figure.suptitle(heading, fontsize=10)
        self._caveats = figure.text(0.5, 0.0, "", ha="center", va="top", fontsize=8, color=CAVEAT_COLOUR)
        handles = [LegendPatch(color=rgb, label=meaning) for rgb, meaning in legend_entries(self.method)]
        figure.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False)
        figure.text(0.99, 0.01, RESEARCH_NOTICE, ha="right", fontsize=7, color="0.4")
        self._figure = figure

    def _show_caveats(self, lines: Sequence[str]) -> None:
        """The caveats under the heading, the figure's height fitted to their number."""
        height = FIGURE_HEIGHT_IN + CAVEAT_LINE_IN * len(lines)
        self._figure.set_size_inches(FIGURE_WIDTH_IN, height)
        # Fixed margins: tight_layout measures every text and costs more than drawing the figure.
        self._figure.subplots_adjust(left=0.01, right=0.99, bottom=BOTTOM_IN / height, top=1.0 - TOP_IN / height
                                     - CAVEAT_LINE_IN * len(lines) / height, wspace=0.06)
        self._caveats.set_text("\n".join(lines))
        self._caveats.set_y(1.0 - 0.3 / height)  # under the heading

    def write(self, path: Union[str, Path], explanation: PatchExplanation, heading: str,
              limit: Optional[float] = None) -> Path:
        """One figure; ``limit`` fixes the colour range (default: overlay.display_limit of the map)."""
        limit = display_limit(explanation.relevance, self.method) if limit is None else limit
        if self._figure is None:
            self._lay_out(explanation, heading, limit)
        else:
            panels = explanation_panels(explanation, limit, map_title=method_info(self.method).map_title)
            for image, text, (panel, title) in zip(self._images, self._titles, panels):
                image.set_data(panel)
                text.set_text(title)
            self._heading.set_text(heading)
        self._show_caveats([caveat.text for caveat in explanation_caveats(explanation, self.method)])
        from PIL import Image

        path = Path(path)
        canvas = self._figure.canvas
        canvas.draw()
        # PIL straight from the canvas: savefig would draw the figure twice, and zlib's fastest
        # level is a fifth of the cost of its default for these small figures.
        Image.fromarray(np.asarray(canvas.buffer_rgba())).save(path, format="PNG", compress_level=1)
        return path
